//! The signed manifest: what the publisher vouches for.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{NameError, SealedError};
use crate::engine::{ModelConfig, ModelSpec};

/// The manifest schema version of a single-file model (the weights alone, an MLP); it
/// equals the file format version in the header, so a header edited to another version
/// fails the signature check.
pub const MANIFEST_VERSION: u16 = 1;
/// The manifest schema version of a bundle: the plaintext is several named files (a Hugging
/// Face model directory: weights, tokenizer, configs), each listed in `entries` with its
/// size and digest, laid end to end in that order.
pub const BUNDLE_VERSION: u16 = 2;
/// Most entries in a bundle.
pub const MAX_ENTRIES: usize = 64;
/// Longest entry name, in bytes.
pub const MAX_ENTRY_NAME_LEN: usize = 256;
/// The only algorithm this version writes and reads.
pub const ALGORITHM: &str = "AES-256-GCM-STREAM";
/// Default plaintext chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest accepted chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
/// Largest accepted chunk size.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Length of the STREAM nonce prefix: 7 bytes, then a 4-byte counter and a 1-byte last flag.
pub const NONCE_PREFIX_LEN: usize = 7;
/// The AES-GCM tag length.
pub const TAG_LEN: u64 = 16;

const MANIFEST_DOMAIN: &[u8] = b"confidant.sealed.manifest.v1\0";
const AAD_DOMAIN: &[u8] = b"confidant.sealed.aad.v1\0";
const SIGNATURE_DOMAIN: &[u8] = b"confidant.sealed.signature.v1\0";

/// What a manifest's `model` may be: a config that knows its id and which format seals it.
pub trait SealedModel: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug {
    /// The model id (the default key resource is `default/models/<id>`).
    fn model_id(&self) -> &str;
    /// The format version that seals this kind of model: [`MANIFEST_VERSION`] for a single
    /// safetensors file, [`BUNDLE_VERSION`] for a model directory.
    fn sealed_format(&self) -> u16;
    /// Checks the config on its own (without the weights).
    fn validate_model(&self) -> Result<(), crate::engine::ConfigError>;
    /// Whether a reader of this config type reads files of format `version` at all.
    fn reads_format(version: u16) -> bool;
}

impl SealedModel for ModelConfig {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn sealed_format(&self) -> u16 {
        MANIFEST_VERSION
    }
    fn validate_model(&self) -> Result<(), crate::engine::ConfigError> {
        self.validate()
    }
    fn reads_format(version: u16) -> bool {
        version == MANIFEST_VERSION
    }
}

impl SealedModel for ModelSpec {
    fn model_id(&self) -> &str {
        self.id()
    }
    fn sealed_format(&self) -> u16 {
        match self {
            Self::Mlp(_) => MANIFEST_VERSION,
            Self::Bert(_) => BUNDLE_VERSION,
        }
    }
    fn validate_model(&self) -> Result<(), crate::engine::ConfigError> {
        self.validate()
    }
    fn reads_format(version: u16) -> bool {
        version == MANIFEST_VERSION || version == BUNDLE_VERSION
    }
}

/// The manifest of a sealed model. `M` is the model config: [`ModelConfig`] (MLPs, the
/// server's load path today) or [`ModelSpec`] (any kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest<M = ModelConfig> {
    /// [`MANIFEST_VERSION`], or [`BUNDLE_VERSION`] for a bundle.
    pub format: u16,
    /// The model: id, version, architecture, input schema, labels, DP-training guarantee.
    pub model: M,
    /// The plaintext: the weights (format 1) or the whole bundle (format 2).
    pub weights: WeightsInfo,
    /// The files of a bundle, in plaintext order (format 2 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryInfo>,
    /// How the weights are encrypted.
    pub encryption: EncryptionInfo,
    /// Who signed.
    pub publisher: PublisherInfo,
    /// When it was sealed, in seconds since the Unix epoch.
    pub sealed_at: u64,
}

/// The plaintext weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsInfo {
    /// Always `safetensors`.
    pub format: String,
    /// Plaintext length in bytes.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInfo {
    /// The file's path in the model directory, for example `tokenizer.json` or
    /// `1_Pooling/config.json`.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
}

/// The encryption parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionInfo {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// Hex of the 7-byte STREAM nonce prefix.
    pub nonce_prefix: String,
    /// Number of chunks.
    pub chunks: u64,
    /// Ciphertext length in bytes (plaintext plus one 16-byte tag per chunk).
    pub ciphertext_size: u64,
    /// Hex SHA-256 of the ciphertext. Blank while computing the AAD (see
    /// [`Manifest::aad_digest`]).
    pub ciphertext_sha256: String,
    /// The key broker resource path of the data key, for example `default/models/credit`.
    pub key_resource: String,
}

/// The publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherInfo {
    /// Hex of the first 16 bytes of SHA-256 of the raw Ed25519 public key.
    pub key_id: String,
}

impl<M: SealedModel> Manifest<M> {
    /// The canonical encoding: JSON with keys sorted and no insignificant whitespace.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, SealedError> {
        crate::canonical::to_vec(self).map_err(|e| SealedError::ManifestSyntax(e.to_string()))
    }

    /// Parses a manifest and insists that the bytes are exactly its canonical encoding, so
    /// that two parsers can never disagree about what was signed (duplicate keys, odd
    /// number forms, whitespace).
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Self, SealedError> {
        let manifest: Self = serde_json::from_slice(bytes)
            .map_err(|e| SealedError::ManifestSyntax(e.to_string()))?;
        if manifest.to_canonical_json()? != bytes {
            return Err(SealedError::ManifestNotCanonical);
        }
        Ok(manifest)
    }

    /// Checks every field's range and the consistency of the sizes.
    pub fn validate(&self) -> Result<(), SealedError> {
        let bad = |m: String| Err(SealedError::ManifestInvalid(m));
        let expected = self.model.sealed_format();
        if self.format != expected {
            return bad(format!(
                "manifest format {} does not match the format {expected} of its model kind",
                self.format
            ));
        }
        self.model
            .validate_model()
            .map_err(|e| SealedError::ManifestInvalid(e.to_string()))?;
        let weights_format = if self.format == BUNDLE_VERSION {
            "bundle"
        } else {
            "safetensors"
        };
        if self.weights.format != weights_format {
            return bad(format!(
                "weights.format {:?} is not {weights_format:?}",
                self.weights.format
            ));
        }
        self.validate_entries()?;
        if !is_hex_of_len(&self.weights.sha256, 32) {
            return bad("weights.sha256 is not 64 hex digits".into());
        }
        let e = &self.encryption;
        if e.algorithm != ALGORITHM {
            return bad(format!(
                "encryption.algorithm {:?} is not {ALGORITHM:?}",
                e.algorithm
            ));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&e.chunk_size) {
            return bad(format!(
                "encryption.chunk_size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                e.chunk_size
            ));
        }
        if !is_hex_of_len(&e.nonce_prefix, NONCE_PREFIX_LEN) {
            return bad(format!(
                "encryption.nonce_prefix is not {} hex digits",
                NONCE_PREFIX_LEN * 2
            ));
        }
        if !is_hex_of_len(&e.ciphertext_sha256, 32) {
            return bad("encryption.ciphertext_sha256 is not 64 hex digits".into());
        }
        let expected_chunks = chunk_count(self.weights.size, e.chunk_size);
        if e.chunks != expected_chunks || e.chunks > u64::from(u32::MAX) {
            return bad(format!(
                "encryption.chunks is {} but {} plaintext bytes in chunks of {} make {expected_chunks}",
                e.chunks, self.weights.size, e.chunk_size
            ));
        }
        let expected_ct = self
            .weights
            .size
            .checked_add(e.chunks.saturating_mul(TAG_LEN))
            .filter(|n| *n == e.ciphertext_size);
        if expected_ct.is_none() {
            return bad(format!(
                "encryption.ciphertext_size {} does not equal plaintext size plus {} tags",
                e.ciphertext_size, e.chunks
            ));
        }
        validate_resource_path(&e.key_resource)
            .map_err(|e| SealedError::ManifestInvalid(e.to_string()))?;
        if !is_hex_of_len(&self.publisher.key_id, 16) {
            return bad("publisher.key_id is not 32 hex digits".into());
        }
        Ok(())
    }

    /// A bundle's entries: 1 to [`MAX_ENTRIES`], names unique relative paths, sizes adding
    /// up to the plaintext. A format 1 manifest has none.
    fn validate_entries(&self) -> Result<(), SealedError> {
        let bad = |m: String| Err(SealedError::ManifestInvalid(m));
        if self.format != BUNDLE_VERSION {
            if !self.entries.is_empty() {
                return bad(format!("a format {} manifest has no entries", self.format));
            }
            return Ok(());
        }
        if self.entries.is_empty() || self.entries.len() > MAX_ENTRIES {
            return bad(format!(
                "a bundle lists 1 to {MAX_ENTRIES} entries, found {}",
                self.entries.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut total: u64 = 0;
        for e in &self.entries {
            validate_entry_name(&e.name)
                .map_err(|e| SealedError::ManifestInvalid(e.to_string()))?;
            if !names.insert(e.name.as_str()) {
                return bad(format!("entry {:?} appears twice", e.name));
            }
            if !is_hex_of_len(&e.sha256, 32) {
                return bad(format!("entry {:?}: sha256 is not 64 hex digits", e.name));
            }
            total = total
                .checked_add(e.size)
                .ok_or_else(|| SealedError::ManifestInvalid("entry sizes overflow".into()))?;
        }
        if total != self.weights.size {
            return bad(format!(
                "entries add up to {total} bytes but the plaintext is {}",
                self.weights.size
            ));
        }
        Ok(())
    }

    /// The byte range of entry `name` within the plaintext.
    pub fn entry_range(&self, name: &str) -> Option<std::ops::Range<usize>> {
        let mut offset = 0usize;
        for e in &self.entries {
            let size = usize::try_from(e.size).ok()?;
            let end = offset.checked_add(size)?;
            if e.name == name {
                return Some(offset..end);
            }
            offset = end;
        }
        None
    }

    /// The manifest digest: SHA-256 over a domain tag and the canonical manifest.
    pub fn digest(&self) -> Result<[u8; 32], SealedError> {
        Ok(tagged_sha256(MANIFEST_DOMAIN, &self.to_canonical_json()?))
    }

    /// The digest used as AEAD associated data for every chunk: the manifest digest computed
    /// with `ciphertext_sha256` blanked. The ciphertext hash cannot be known before the
    /// ciphertext exists; every other field (model, schema, sizes, nonce prefix, key path,
    /// publisher) is bound into each chunk's tag, so chunks cannot move to another model.
    pub fn aad_digest(&self) -> Result<[u8; 32], SealedError> {
        let mut m = self.clone();
        m.encryption.ciphertext_sha256 = String::new();
        Ok(tagged_sha256(AAD_DOMAIN, &m.to_canonical_json()?))
    }

    /// The message the publisher signs: a domain tag and the manifest digest.
    pub fn signing_message(&self) -> Result<Vec<u8>, SealedError> {
        let mut msg = SIGNATURE_DOMAIN.to_vec();
        msg.extend_from_slice(&self.digest()?);
        Ok(msg)
    }

    /// The 7-byte nonce prefix.
    pub fn nonce_prefix(&self) -> Result<[u8; NONCE_PREFIX_LEN], SealedError> {
        let mut out = [0u8; NONCE_PREFIX_LEN];
        hex::decode_to_slice(&self.encryption.nonce_prefix, &mut out).map_err(|_| {
            SealedError::ManifestInvalid("encryption.nonce_prefix is not hex".into())
        })?;
        Ok(out)
    }
}

/// Checks an entry name: a relative path of 1 to 4 segments, each `[A-Za-z0-9._-]+` and not
/// `.` or `..`.
pub fn validate_entry_name(name: &str) -> Result<(), NameError> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = !name.is_empty()
        && name.len() <= MAX_ENTRY_NAME_LEN
        && parts.len() <= 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(NameError::EntryName(name.to_string()))
    }
}

/// Chunks needed for `size` plaintext bytes: at least one, so an empty plaintext still has
/// an authenticated final chunk.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1))).max(1)
}

/// Checks a KBS resource path: `repository/type/tag`, each segment `[A-Za-z0-9._-]+` and
/// not `.` or `..`.
pub fn validate_resource_path(path: &str) -> Result<(), NameError> {
    let parts: Vec<&str> = path.split('/').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 128
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(NameError::ResourcePath(path.to_string()))
    }
}

fn tagged_sha256(domain: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(data);
    h.finalize().into()
}

fn is_hex_of_len(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
