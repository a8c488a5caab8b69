//! Publisher keys: Ed25519, stored as PKCS#8 (private) and SPKI (public) PEM, so that
//! OpenSSL and other tools can read them.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::{KeyError, SealedError};

/// A publisher's signing key. No `Debug` or `Clone`; zeroized on drop by ed25519-dalek.
pub struct PublisherSigningKey {
    key: SigningKey,
}

impl PublisherSigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, SealedError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| SealedError::Random(e.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, SealedError> {
        let pem =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| SealedError::io(path, e))?);
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| SealedError::KeyFile {
            path: path.display().to_string(),
            problem: KeyError::NotEd25519Pkcs8(e.to_string()),
        })?;
        Ok(Self { key })
    }

    /// The PKCS#8 PEM encoding (zeroized when dropped).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, SealedError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map_err(|e| SealedError::Random(format!("PKCS#8 encoding failed: {e}")))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublisherKey {
        PublisherKey {
            key: self.key.verifying_key(),
        }
    }

    /// Signs a message (the sealed format signs a domain-separated manifest digest).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A publisher's public key, trusted by the server to sign manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherKey {
    key: VerifyingKey,
}

impl PublisherKey {
    /// Reads an SPKI PEM public key.
    pub fn from_pem_file(path: &Path) -> Result<Self, SealedError> {
        let pem = std::fs::read_to_string(path).map_err(|e| SealedError::io(path, e))?;
        Self::from_pem(&pem).map_err(|problem| SealedError::KeyFile {
            path: path.display().to_string(),
            problem,
        })
    }

    /// Parses an SPKI PEM public key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| KeyError::NotEd25519Pem(e.to_string()))?;
        if key.is_weak() {
            return Err(KeyError::WeakPublicKey);
        }
        Ok(Self { key })
    }

    /// The SPKI PEM encoding.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// The key id: hex of the first 16 bytes of SHA-256 of the raw 32-byte key.
    pub fn key_id(&self) -> String {
        let d = Sha256::digest(self.key.as_bytes());
        hex::encode(&d[..16])
    }

    /// Verifies a signature strictly (rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}
