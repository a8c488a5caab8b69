//! From a sealed file to a model the engine serves: verify the publisher's signature,
//! decrypt (on the CPU into locked memory, or straight into CUDA memory), and build the
//! engine's model on the serving device.
//!
//! This is the glue between the sealed format ([`crate::sealed`]), the kernel layer
//! ([`crate::gpu`]) and the engine ([`crate::engine`]); none of those three knows the others'
//! types beyond what it needs, so each stays a leaf of the ones below it.

use std::path::Path;

use zeroize::Zeroizing;

use crate::engine::bert::BertEncoder;
use crate::engine::{EngineError, Mlp, ModelSpec};
use crate::gpu::aes_gcm::StreamLayout;
use crate::gpu::{GpuError, LoadPath};
use crate::sealed::{self, DataKey, Manifest, PublisherKey, SealedError, Unsealed};

/// The CUDA loaders (feature `cuda`).
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
pub mod cuda;

/// Why a sealed model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The sealed file is unusable (format, signature, digest, key).
    #[error("model {path}: {source}")]
    Sealed {
        /// The sealed file.
        path: String,
        /// Why.
        source: SealedError,
    },
    /// The engine refused the weights.
    #[error("model {path}: {source}")]
    Engine {
        /// The sealed file.
        path: String,
        /// Why.
        source: EngineError,
    },
    /// The device could not take the weights.
    #[error("model {path}: loading onto the GPU: {source}")]
    Gpu {
        /// The sealed file.
        path: String,
        /// Why.
        source: GpuError,
    },
}

/// How to load: the serving device, the CUDA load path and whether to check the plaintext
/// digest on CPU loads.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the model runs.
    pub device: candle_core::Device,
    /// How weights reach a CUDA device.
    pub gpu_load: LoadPath,
    /// Also check the signed plaintext digest (CPU loads) or ciphertext digest (CUDA loads).
    pub verify_digests: bool,
}

/// A model ready for the registry: its verified manifest, the publisher key id that signed
/// it, and the engine's model on the serving device.
pub struct LoadedSealed {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The id of the publisher key that signed it.
    pub publisher_key_id: String,
    /// The model.
    pub mlp: Mlp,
}

/// A sealed model of any kind, ready for the registry.
pub enum LoadedAny {
    /// An MLP (format 1).
    Mlp(Box<LoadedSealed>),
    /// A text encoder (a format-2 bundle).
    Text(Box<LoadedText>),
}

/// A text encoder ready for the registry: its verified manifest, the publisher key id that
/// signed it, and the encoder on the serving device.
pub struct LoadedText {
    /// The verified manifest.
    pub manifest: Manifest<ModelSpec>,
    /// The id of the publisher key that signed it.
    pub publisher_key_id: String,
    /// The encoder (its config is the manifest's).
    pub encoder: BertEncoder,
}

/// Verifies `sealed_path` against `trusted`, decrypts it with `key` and builds its model,
/// whatever its kind: the header's format picks the path (a single safetensors file is an
/// MLP, a bundle a text encoder), and everything is then verified as for that kind.
///
/// A text encoder is decrypted on the host into locked memory and its tensors copied to
/// the serving device (CUDA included); the plaintext is zeroized once the encoder is built.
pub fn load_sealed_any(
    sealed_path: &Path,
    key: &DataKey,
    trusted: &[PublisherKey],
    options: &LoadOptions,
) -> Result<LoadedAny, LoadError> {
    let path = sealed_path.display().to_string();
    let sealed_err = |source| LoadError::Sealed {
        path: path.clone(),
        source,
    };
    let format = sealed::peek_format(sealed_path).map_err(sealed_err)?;
    if format != sealed::BUNDLE_VERSION {
        return load_sealed_model(sealed_path, key, trusted, options)
            .map(|m| LoadedAny::Mlp(Box::new(m)));
    }
    let unsealed =
        sealed::unseal_file_as::<ModelSpec>(sealed_path, trusted, key, options.verify_digests)
            .map_err(sealed_err)?;
    let encoder = sealed::bundle::load_encoder(&unsealed, &options.device).map_err(sealed_err)?;
    let Unsealed {
        manifest,
        publisher_key_id,
        weights,
    } = unsealed;
    drop(weights);
    Ok(LoadedAny::Text(Box::new(LoadedText {
        manifest,
        publisher_key_id,
        encoder,
    })))
}

/// Verifies `sealed_path` (an MLP) against `trusted`, decrypts it with `key` and builds its
/// model.
pub fn load_sealed_model(
    sealed_path: &Path,
    key: &DataKey,
    trusted: &[PublisherKey],
    options: &LoadOptions,
) -> Result<LoadedSealed, LoadError> {
    let path = sealed_path.display().to_string();
    if options.device.is_cuda() {
        return load_to_cuda(sealed_path, key, trusted, options);
    }
    let unsealed = sealed::unseal_file(sealed_path, trusted, key, options.verify_digests).map_err(
        |source| LoadError::Sealed {
            path: path.clone(),
            source,
        },
    )?;
    let mlp = Mlp::from_safetensors(
        &unsealed.manifest.model,
        unsealed.weights.secret_bytes(),
        &options.device,
    )
    .map_err(|source| LoadError::Engine { path, source })?;
    drop(unsealed.weights);
    Ok(LoadedSealed {
        manifest: unsealed.manifest,
        publisher_key_id: unsealed.publisher_key_id,
        mlp,
    })
}

/// Verifies a sealed model and decrypts it straight into CUDA memory (`options.gpu_load`):
/// no plaintext copy of the weights is made in ordinary host memory.
#[cfg(feature = "cuda")]
fn load_to_cuda(
    sealed_path: &Path,
    key: &DataKey,
    trusted: &[PublisherKey],
    options: &LoadOptions,
) -> Result<LoadedSealed, LoadError> {
    let path = sealed_path.display().to_string();
    let sealed_err = |source| LoadError::Sealed {
        path: path.clone(),
        source,
    };
    let device = &options.device;
    let candle_core::Device::Cuda(cuda) = device else {
        return Err(LoadError::Gpu {
            path,
            source: GpuError::Driver("load_to_cuda needs a CUDA device".into()),
        });
    };
    let verified = sealed::SealedFile::read(sealed_path)
        .and_then(|f| f.verify(trusted))
        .map_err(sealed_err)?;
    if options.verify_digests {
        // The plaintext digest would need the plaintext on the host; on the device paths the
        // signed ciphertext digest and every chunk's GCM tag authenticate the weights.
        verified
            .file()
            .verify_ciphertext_digest()
            .map_err(sealed_err)?;
    }
    let plain = cuda::load_sealed(&verified, key, cuda, options.gpu_load).map_err(|source| {
        LoadError::Gpu {
            path: path.clone(),
            source,
        }
    })?;
    let manifest = verified.manifest().clone();
    let mlp = cuda::mlp_from_device(&manifest.model, &plain, device).map_err(|source| {
        LoadError::Engine {
            path: path.clone(),
            source,
        }
    })?;
    drop(plain);
    tracing::info!(model = %manifest.model.id, path = ?options.gpu_load, fused = mlp.uses_fused_kernel(), "model decrypted into CUDA memory");
    Ok(LoadedSealed {
        manifest,
        publisher_key_id: verified.publisher().key_id(),
        mlp,
    })
}

#[cfg(not(feature = "cuda"))]
fn load_to_cuda(
    sealed_path: &Path,
    _key: &DataKey,
    _trusted: &[PublisherKey],
    _options: &LoadOptions,
) -> Result<LoadedSealed, LoadError> {
    Err(LoadError::Gpu {
        path: sealed_path.display().to_string(),
        source: GpuError::NotBuilt {
            what: "a CUDA device".into(),
        },
    })
}

/// What the device decryption kernel needs to know about a (verified) manifest's region.
pub fn stream_layout(m: &Manifest) -> Result<StreamLayout, GpuError> {
    const _: () =
        assert!(crate::gpu::aes_gcm::NONCE_PREFIX_LEN == sealed::manifest::NONCE_PREFIX_LEN);
    const _: () = assert!(crate::gpu::aes_gcm::TAG_LEN == sealed::manifest::TAG_LEN);
    let bad = |e: SealedError| GpuError::Arguments {
        kernel: "aes_gcm_stream_decrypt",
        reason: e.to_string(),
    };
    Ok(StreamLayout {
        plaintext_len: m.weights.size,
        chunk_size: m.encryption.chunk_size,
        nonce_prefix: m.nonce_prefix().map_err(bad)?,
        aad: m.aad_digest().map_err(bad)?,
    })
}

/// The key bytes of a data key as an array.
pub fn data_key_bytes(key: &DataKey) -> Result<Zeroizing<[u8; 32]>, GpuError> {
    let mut k = Zeroizing::new([0u8; 32]);
    let bytes = key.secret_bytes();
    if bytes.len() != 32 {
        return Err(GpuError::Arguments {
            kernel: "aes_gcm_stream_decrypt",
            reason: "the data key is not 32 bytes".into(),
        });
    }
    k.copy_from_slice(bytes);
    Ok(k)
}
