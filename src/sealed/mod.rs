//! The sealed-model format: a signed manifest and AES-256-GCM STREAM ciphertext in one file.
//!
//! A publisher seals safetensors weights and a [`ModelConfig`](crate::engine::ModelConfig)
//! with [`seal`], or a Hugging Face model directory (weights, tokenizer and configs, as one
//! bundle of named entries, format 2) with [`bundle::seal_encoder`]. The server reads the file with [`SealedFile`], checks the publisher's
//! signature ([`SealedFile::verify`]) and only then can decrypt
//! ([`VerifiedSealedFile::decrypt`]) into locked, zeroizing memory. The layout is in
//! [`file`]; the chunking in [`stream`].
//!
//! ```
//! # use confidant::sealed::*;
//! # use confidant::engine::ModelConfig;
//! # fn demo(config: &ModelConfig, weights: &[u8]) -> Result<(), SealedError> {
//! let publisher = PublisherSigningKey::generate()?;
//! let sealed = seal(config, weights, &publisher, &SealOptions::default())?;
//! let verified = SealedFile::parse(sealed.file)?.verify(&[publisher.public_key()])?;
//! let plaintext = verified.decrypt(&sealed.data_key)?;
//! assert_eq!(plaintext.secret_bytes(), weights);
//! # Ok(()) }
//! ```

pub mod bundle;
pub(crate) mod error;
pub(crate) mod file;
pub mod manifest;
pub(crate) mod publisher;
mod sealing;
pub mod stream;

pub use error::{KeyError, NameError, SealedError};
pub use file::{
    FORMAT_VERSION, MAGIC, Plaintext, SUPPORTED_VERSIONS, SealedFile, Unsealed, VerifiedSealedFile,
    peek_format, unseal, unseal_as, unseal_file, unseal_file_as,
};
pub use manifest::{BUNDLE_VERSION, EntryInfo, Manifest, SealedModel};
pub use publisher::{PublisherKey, PublisherSigningKey};
pub use sealing::{SealOptions, Sealed, seal, seal_bundle};
pub use stream::DataKey;

#[cfg(test)]
pub(crate) mod tests;
