//! Sealing: a model's weights (or a bundle of files) encrypted under a fresh data key, with
//! a signed manifest, into the file format that `file.rs` reads.

use sha2::{Digest, Sha256};

use super::error::SealedError;
use super::file::{HEADER_LEN, MAGIC};
use super::manifest::{
    ALGORITHM, BUNDLE_VERSION, DEFAULT_CHUNK_SIZE, EncryptionInfo, EntryInfo, MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE, Manifest, NONCE_PREFIX_LEN, PublisherInfo, SealedModel, WeightsInfo,
    chunk_count, validate_entry_name, validate_resource_path,
};
use super::publisher::PublisherSigningKey;
use super::stream::{self, DataKey};
use crate::engine::{Mlp, ModelConfig};

/// Options for [`seal`].
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The broker resource path; default `default/models/<model id>`.
    pub key_resource: Option<String>,
    /// The seal time, seconds since the epoch.
    pub sealed_at: u64,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            key_resource: None,
            sealed_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// A freshly sealed model: the file bytes and the data key to register with the broker.
pub struct Sealed<M = ModelConfig> {
    /// The complete sealed file.
    pub file: Vec<u8>,
    /// The fresh data key. Never store it beside the model.
    pub data_key: DataKey,
    /// The manifest written.
    pub manifest: Manifest<M>,
}

/// Seals `weights` (safetensors) under a fresh data key, signed by `signing`.
///
/// The config is validated against the weights first (every tensor present, shapes chained,
/// values finite), so a model that cannot be served is never sealed.
pub fn seal(
    config: &ModelConfig,
    weights: &[u8],
    signing: &PublisherSigningKey,
    options: &SealOptions,
) -> Result<Sealed, SealedError> {
    drop(Mlp::from_safetensors(
        config,
        weights,
        &candle_core::Device::Cpu,
    )?);
    seal_plaintext(config, Vec::new(), weights, signing, options)
}

/// Seals a bundle of named files (a model directory) as format [`BUNDLE_VERSION`]: the
/// files laid end to end are the plaintext, and the manifest lists each with its size and
/// digest. The caller has validated that the files make the model `model` describes
/// (see [`crate::sealed::bundle::seal_encoder`]).
pub fn seal_bundle<M: SealedModel>(
    model: &M,
    files: &[(&str, &[u8])],
    signing: &PublisherSigningKey,
    options: &SealOptions,
) -> Result<Sealed<M>, SealedError> {
    if model.sealed_format() != BUNDLE_VERSION {
        return Err(SealedError::ManifestInvalid(format!(
            "model {} is sealed as format {}, not as a bundle",
            model.model_id(),
            model.sealed_format()
        )));
    }
    let mut entries = Vec::with_capacity(files.len());
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(total));
    for (name, bytes) in files {
        validate_entry_name(name).map_err(|e| SealedError::ManifestInvalid(e.to_string()))?;
        entries.push(EntryInfo {
            name: (*name).to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
        plaintext.extend_from_slice(bytes);
    }
    seal_plaintext(model, entries, &plaintext, signing, options)
}

fn seal_plaintext<M: SealedModel>(
    config: &M,
    entries: Vec<EntryInfo>,
    weights: &[u8],
    signing: &PublisherSigningKey,
    options: &SealOptions,
) -> Result<Sealed<M>, SealedError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&options.chunk_size) {
        return Err(SealedError::ManifestInvalid(format!(
            "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
            options.chunk_size
        )));
    }
    let chunks = chunk_count(weights.len() as u64, options.chunk_size);
    if chunks > u64::from(u32::MAX) {
        return Err(SealedError::ManifestInvalid(
            "weights need more than 2^32 chunks; use a larger chunk size".into(),
        ));
    }
    let key_resource = options
        .key_resource
        .clone()
        .unwrap_or_else(|| format!("default/models/{}", config.model_id()));
    validate_resource_path(&key_resource)
        .map_err(|e| SealedError::ManifestInvalid(e.to_string()))?;
    let data_key = DataKey::generate()?;
    let mut prefix = [0u8; NONCE_PREFIX_LEN];
    getrandom::fill(&mut prefix).map_err(|e| SealedError::Random(e.to_string()))?;
    let format = config.sealed_format();
    let mut manifest = Manifest {
        format,
        model: config.clone(),
        entries,
        weights: WeightsInfo {
            format: if format == BUNDLE_VERSION {
                "bundle"
            } else {
                "safetensors"
            }
            .into(),
            size: weights.len() as u64,
            sha256: hex::encode(Sha256::digest(weights)),
        },
        encryption: EncryptionInfo {
            algorithm: ALGORITHM.into(),
            chunk_size: options.chunk_size,
            nonce_prefix: hex::encode(prefix),
            chunks,
            ciphertext_size: weights.len() as u64 + chunks * super::manifest::TAG_LEN,
            ciphertext_sha256: String::new(),
            key_resource,
        },
        publisher: PublisherInfo {
            key_id: signing.public_key().key_id(),
        },
        sealed_at: options.sealed_at,
    };
    let aad = manifest.aad_digest()?;
    let ciphertext = stream::encrypt(
        &data_key,
        &prefix,
        &aad,
        options.chunk_size as usize,
        weights,
    )?;
    manifest.encryption.ciphertext_sha256 = hex::encode(Sha256::digest(&ciphertext));
    manifest.validate()?;
    let manifest_bytes = manifest.to_canonical_json()?;
    let signature = signing.sign(&manifest.signing_message()?);
    let mut file = Vec::with_capacity(HEADER_LEN + manifest_bytes.len() + 64 + ciphertext.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&format.to_be_bytes());
    file.extend_from_slice(&(manifest_bytes.len() as u32).to_be_bytes());
    file.extend_from_slice(&manifest_bytes);
    file.extend_from_slice(&signature);
    file.extend_from_slice(&ciphertext);
    Ok(Sealed {
        file,
        data_key,
        manifest,
    })
}
