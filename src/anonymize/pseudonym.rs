//! Keyed pseudonyms: HMAC-SHA256 of the value under a secret key, hex-encoded. The same key
//! gives the same pseudonym for the same value in any table, so joins still work; without the
//! key a pseudonym can be neither reversed nor recomputed from a guessed value.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::AnonymizeError;

/// Shortest key accepted: 256 bits, the HMAC-SHA256 security level.
pub const MIN_KEY_BYTES: usize = 32;

/// Separates our pseudonyms from any other HMAC use of the same key.
const DOMAIN: &[u8] = b"confidant-pseudonym-v1\0";

/// A pseudonymization key. No `Debug`, `Clone` or `Serialize`; zeroized on drop.
pub struct PseudonymKey {
    key: Zeroizing<Vec<u8>>,
}

impl PseudonymKey {
    /// Uses these bytes as the key (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AnonymizeError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(AnonymizeError::KeyTooShort {
                path: "<memory>".into(),
                len: bytes.len(),
                min: MIN_KEY_BYTES,
            });
        }
        Ok(Self {
            key: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Reads a key file; its whole content, byte for byte, is the key. The error names the
    /// file, never its content.
    pub fn from_file(path: &Path) -> Result<Self, AnonymizeError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| AnonymizeError::io(path, e))?);
        Self::from_bytes(&bytes).map_err(|e| match e {
            AnonymizeError::KeyTooShort { len, min, .. } => AnonymizeError::KeyTooShort {
                path: path.to_path_buf(),
                len,
                min,
            },
            other => other,
        })
    }

    /// The key bytes.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The pseudonym of `value`: 64 lowercase hex digits.
    pub fn pseudonym(&self, value: &str) -> String {
        // HMAC accepts keys of any length, so construction cannot fail; fall back to an empty
        // string rather than panic should that ever change.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(DOMAIN);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}
