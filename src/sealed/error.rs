//! Sealed-model errors. Each variant names the check that failed, so an operator can tell a
//! corrupted download from a wrong key from a forged manifest.

/// Why a sealed model (or a key file) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The file does not start with the sealed-model magic.
    #[error("not a sealed model: bad magic (expected \"CNFDSEAL\")")]
    BadMagic,
    /// The header declares a format version we do not read.
    #[error(
        "unsupported sealed-model format version {found} (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The file is a bundle (a model directory such as a text encoder) and this load path
    /// reads single-file (MLP) models only.
    #[error(
        "this is a sealed bundle (format {found}, a model directory such as a text encoder); \
         this load path reads single-file MLP models (format 1) only"
    )]
    BundleNotReadHere {
        /// The version in the file.
        found: u16,
    },
    /// The file ends before a part that the header or manifest promises.
    #[error("truncated: the file ends inside the {part}")]
    Truncated {
        /// Which part.
        part: &'static str,
    },
    /// The declared manifest length is out of range.
    #[error("manifest length {len} is out of range (1..={max} bytes)")]
    ManifestLength {
        /// The declared length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// The manifest is not valid JSON for the schema.
    #[error("manifest is malformed: {0}")]
    ManifestSyntax(String),
    /// The manifest is valid JSON but not in canonical form (sorted keys, no whitespace).
    #[error("manifest is not in canonical JSON form")]
    ManifestNotCanonical,
    /// A manifest field breaks a rule.
    #[error("manifest is invalid: {0}")]
    ManifestInvalid(String),
    /// The signature does not verify under the publisher key.
    #[error("manifest signature check failed: not signed by publisher key {key_id}")]
    BadSignature {
        /// The key id tried.
        key_id: String,
    },
    /// The manifest names a publisher key that is not among the trusted keys.
    #[error("manifest signature check failed: publisher key {key_id} is not trusted")]
    UntrustedPublisher {
        /// The key id named by the manifest.
        key_id: String,
    },
    /// The file is longer or shorter than the manifest says.
    #[error(
        "ciphertext length check failed: file holds {found} ciphertext bytes, manifest says {expected}"
    )]
    CiphertextLength {
        /// Bytes present.
        found: u64,
        /// Bytes the manifest declares.
        expected: u64,
    },
    /// The ciphertext does not hash to the manifest's value.
    #[error("ciphertext SHA-256 check failed: the encrypted weights were modified")]
    CiphertextDigest,
    /// A chunk failed AEAD authentication.
    #[error(
        "chunk {index} of {count} failed AES-256-GCM authentication: wrong data key, or the chunk was modified, reordered or taken from another model"
    )]
    ChunkAuthentication {
        /// The chunk index.
        index: u64,
        /// The number of chunks.
        count: u64,
    },
    /// The decrypted weights do not hash to the manifest's value.
    #[error(
        "plaintext SHA-256 check failed: the decrypted weights differ from what the publisher signed"
    )]
    PlaintextDigest,
    /// A key file is malformed.
    #[error("{path}: {problem}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        problem: KeyError,
    },
    /// An I/O error, with the file it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The model config or weights are unusable (at seal time).
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// The OS random source failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

impl SealedError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Why key material was refused ([`crate::sealed::DataKey::from_bytes`],
/// [`crate::sealed::PublisherKey::from_pem`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A data key of the wrong length.
    #[error("a data key is exactly {expected} bytes, found {found}")]
    DataKeyLength {
        /// The length a data key has.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// Not an Ed25519 public key in SPKI PEM form.
    #[error("not an Ed25519 SPKI PEM public key ({0})")]
    NotEd25519Pem(String),
    /// Not an Ed25519 private key in PKCS#8 PEM form.
    #[error("not an Ed25519 PKCS#8 PEM private key ({0})")]
    NotEd25519Pkcs8(String),
    /// An Ed25519 public key that is a small-order point (it would verify forgeries).
    #[error("Ed25519 public key is a weak (small-order) point")]
    WeakPublicKey,
}

/// Why an entry name or a key resource path was refused
/// ([`crate::sealed::manifest::validate_entry_name`],
/// [`crate::sealed::manifest::validate_resource_path`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// An entry name that is not 1 to 4 `[A-Za-z0-9._-]` segments (none `.` or `..`).
    #[error("entry name {0:?} must be a relative path of [A-Za-z0-9._-] segments")]
    EntryName(String),
    /// A key resource path that is not `repository/type/tag` of `[A-Za-z0-9._-]` segments.
    #[error("key resource path {0:?} must be repository/type/tag, each of [A-Za-z0-9._-]")]
    ResourcePath(String),
}
