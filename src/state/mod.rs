//! The deployment's state key and the subkeys derived from it.
//!
//! Everything the server persists (the SQLite database, the audit log's event bodies, the
//! audit input HMAC, the pseudonym index, the checkpoint signing key) is keyed from one
//! 256-bit **state key**. In production the key broker releases it after attestation as the
//! resource `default/state/<deployment>` ([`resource_path`]); in demo mode the embedded
//! broker does; only in development (models with `--key-file`) may it come from a local file,
//! `<data-dir>/state.key` ([`DEV_KEY_FILE`]), which is not confidential.
//!
//! The state key itself is never used directly: each use gets its own subkey by
//! HKDF-SHA256 (RFC 5869) with the salt `confidant.state.v1` and a distinct `info` label
//! ([`Subkey`]), so that no two uses ever share a key.
//!
//! [`anchor`] has the freshness anchors the key broker keeps per deployment.
//!
//! A leaf module: `ring`'s HKDF and Ed25519, no other crate module.

use std::path::{Path, PathBuf};

use ring::hkdf;
use zeroize::Zeroizing;

pub mod anchor;
#[cfg(test)]
mod tests;

/// The development state key file in the data directory.
pub const DEV_KEY_FILE: &str = "state.key";

/// The deployment used when none is named (`serve --deployment`).
pub const DEFAULT_DEPLOYMENT: &str = "default";

const SALT: &[u8] = b"confidant.state.v1";

/// Why a state key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A state key is exactly 32 bytes.
    #[error("{what}: a state key is 32 bytes, found {found}")]
    Length {
        /// Where the key came from.
        what: String,
        /// How many bytes it had.
        found: usize,
    },
    /// The key file could not be read or created.
    #[error("state key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is readable by others than its owner.
    #[error(
        "state key file {} has mode {mode:o}: it must be readable by its owner only (0600)",
        path.display()
    )]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A deployment name outside `[A-Za-z0-9._-]{1,128}`.
    #[error("deployment name {0:?}: use 1 to 128 characters of [A-Za-z0-9._-]")]
    Deployment(String),
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
}

/// The broker resource that holds `deployment`'s state key.
pub fn resource_path(deployment: &str) -> Result<String, StateError> {
    check_deployment(deployment)?;
    Ok(format!("default/state/{deployment}"))
}

/// Checks a deployment name: 1 to 128 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_deployment(deployment: &str) -> Result<(), StateError> {
    let ok = !deployment.is_empty()
        && deployment.len() <= 128
        && deployment != "."
        && deployment != ".."
        && deployment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::Deployment(deployment.to_string()))
    }
}

/// Where a state key came from, for the logs and for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Released by the key broker after attestation.
    Broker,
    /// Released by the demo's embedded broker (simulated attestation: not confidential).
    Demo,
    /// Read from `<data-dir>/state.key` (development: not confidential).
    DevFile,
}

impl Source {
    /// Whether the host can read the key (everything but a real broker release).
    pub fn confidential(self) -> bool {
        matches!(self, Self::Broker)
    }

    /// A word for the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Demo => "demo",
            Self::DevFile => "development key file",
        }
    }
}

/// The uses of the state key, each with its own HKDF `info` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subkey {
    /// The SQLCipher key of `confidant.db`.
    Database,
    /// The AES-256-GCM key from which each audit writer's record key is derived.
    AuditRecords,
    /// The HMAC-SHA256 key of the audit log's `input_hmac` (was `audit.key`).
    AuditInputHmac,
    /// The key that wraps the pseudonym index (was `subjects.key`).
    Pseudonyms,
    /// The Ed25519 seed of the checkpoint signing key (stable per deployment).
    CheckpointSeed,
}

impl Subkey {
    /// The HKDF `info` label.
    pub fn label(self) -> &'static [u8] {
        match self {
            Self::Database => b"confidant.state.database.v1",
            Self::AuditRecords => b"confidant.state.audit-records.v1",
            Self::AuditInputHmac => b"confidant.state.audit-input-hmac.v1",
            Self::Pseudonyms => b"confidant.state.pseudonyms.v1",
            Self::CheckpointSeed => b"confidant.state.checkpoint-seed.v1",
        }
    }
}

/// The 256-bit state key, zeroized on drop. Never written anywhere except the development
/// key file.
pub struct StateKey {
    key: Zeroizing<[u8; 32]>,
    source: Source,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl StateKey {
    /// A state key from exactly 32 bytes (a broker resource, a key file).
    pub fn from_bytes(bytes: &[u8], source: Source, what: &str) -> Result<Self, StateError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| StateError::Length {
            what: what.to_string(),
            found: bytes.len(),
        })?;
        Ok(Self {
            key: Zeroizing::new(key),
            source,
        })
    }

    /// 32 fresh random bytes (for a broker to provision, or a new development file).
    pub fn random_bytes() -> Result<Zeroizing<[u8; 32]>, StateError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| StateError::Random(e.to_string()))?;
        Ok(key)
    }

    /// Where the key came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The subkey for `use_`: HKDF-SHA256(salt `confidant.state.v1`, the state key, its label).
    pub fn subkey(&self, use_: Subkey) -> Zeroizing<[u8; 32]> {
        derive(self.key.as_ref(), SALT, use_.label())
    }

    /// The deployment's checkpoint signing key (Ed25519, seeded by [`Subkey::CheckpointSeed`]):
    /// it signs the audit log's checkpoints and the freshness anchor's requests.
    pub fn checkpoint_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.subkey(Subkey::CheckpointSeed))
    }

    /// The development key file `<data-dir>/state.key`: read it, or create it (32 random
    /// bytes, mode 0600, never replaced) on the first start. Refused when others can read it.
    pub fn dev_file(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join(DEV_KEY_FILE);
        Self::read_or_create(&path)
    }

    /// The bytes of the development key file, if there is one (for the demo's embedded
    /// broker to adopt when `confidant keys` ran before the demo's first start).
    pub fn dev_file_bytes(data_dir: &Path) -> Result<Option<Zeroizing<[u8; 32]>>, StateError> {
        let path = data_dir.join(DEV_KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let key = Self::read_or_create(&path)?;
        Ok(Some(key.key))
    }

    fn read_or_create(path: &Path) -> Result<Self, StateError> {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                let mode = meta.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StateError::Mode {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
                Self::from_bytes(&bytes, Source::DevFile, &path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random_bytes()?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(key.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io)?;
                }
                Ok(Self {
                    key,
                    source: Source::DevFile,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A state key file given on the command line (`audit export --state-key-file`): 32 raw
    /// bytes, or 64 hex digits.
    pub fn from_file(path: &Path) -> Result<Self, StateError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let what = path.display().to_string();
        if bytes.len() == 32 {
            return Self::from_bytes(&bytes, Source::DevFile, &what);
        }
        let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
        let mut key = Zeroizing::new([0u8; 32]);
        if text.len() == 64 && hex::decode_to_slice(text, key.as_mut()).is_ok() {
            return Ok(Self {
                key,
                source: Source::DevFile,
            });
        }
        Err(StateError::Length {
            what,
            found: bytes.len(),
        })
    }
}

/// HKDF-SHA256 of `ikm` with `salt` and `info`, 32 bytes.
pub fn derive(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [info];
    // 32 bytes is the length `HKDF_SHA256` names as its output, far below HKDF's limit of
    // 255 blocks: neither step can fail.
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .unwrap_or_else(|_| unreachable!("HKDF-SHA256 yields 32 bytes"));
    out
}
