//! Loading the served models: key release (a key file in development, the broker after
//! attestation, or the demo's embedded chain) and then [`crate::loading`].

use std::path::Path;
use std::sync::Arc;

use super::{BrokerSettings, ServeConfig, ServerError};
use crate::engine::{Provenance, Registry, ServingOptions};
use crate::sealed::{self, DataKey, PublisherKey};

/// Loads every configured model, or the embedded demo when none is configured.
///
/// A model without a key file gets its data key from the broker: its signature is verified
/// first (so the resource path asked for is the publisher's), then RCAR runs with evidence
/// from `attester`, retrying with backoff for as long as the broker is unreachable or
/// refuses; health stays NOT_SERVING meanwhile.
pub(super) async fn load_models(
    config: &ServeConfig,
    registry: &Registry,
    attester: Arc<dyn crate::tee::Attester>,
) -> Result<(), ServerError> {
    let spec = config.device;
    let device = blocking(move || {
        crate::gpu::open(spec).map_err(|source| ServerError::Device {
            spec: spec.to_string(),
            source,
        })
    })
    .await?;
    tracing::info!(device = ?device, requested = %spec, "model device");
    if config.models.is_empty() {
        return load_demo(config, registry, device).await;
    }
    let trusted = Arc::new(
        config
            .publisher_keys
            .iter()
            .map(|p| {
                PublisherKey::from_pem_file(p).map_err(|source| ServerError::Model {
                    path: p.display().to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    );
    let endpoint = config.broker.as_ref().map(broker_endpoint).transpose()?;
    for source in &config.models {
        let key = match (&source.key_file, &endpoint) {
            (Some(key_file), _) => {
                tracing::warn!(
                    model = %source.sealed.display(),
                    key_file = %key_file.display(),
                    "loading a data key from a file: a development path, not attested key release"
                );
                DataKey::from_file(key_file).map_err(|e| ServerError::Model {
                    path: source.sealed.display().to_string(),
                    source: e,
                })?
            }
            (None, Some(endpoint)) => {
                let verified = blocking({
                    let (path, trusted) = (source.sealed.clone(), Arc::clone(&trusted));
                    move || {
                        // Any kind: the key resource is read from the verified manifest.
                        sealed::SealedFile::<crate::engine::ModelSpec>::read_as(&path)
                            .and_then(|f| f.verify(&trusted))
                            .map_err(|e| ServerError::Model {
                                path: path.display().to_string(),
                                source: e,
                            })
                    }
                })
                .await?;
                let resource = verified.manifest().encryption.key_resource.clone();
                release_key(endpoint, Arc::clone(&attester), &resource, &source.sealed).await?
            }
            (None, None) => {
                return Err(ServerError::NoKeySource {
                    model: source.sealed.display().to_string(),
                });
            }
        };
        let (source, trusted, config, registry, device) = (
            source.clone(),
            Arc::clone(&trusted),
            config.clone(),
            registry.clone(),
            device.clone(),
        );
        blocking(move || load_one(&source.sealed, &key, &trusted, &config, &registry, &device))
            .await?;
    }
    Ok(())
}

/// Runs CPU-bound or blocking work (decryption, weight loading, file reads) off the async
/// workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Task {
            what: "model loading",
            reason: e.to_string(),
        })?
}

/// The broker endpoint of the settings (reads the CA file).
pub(super) fn broker_endpoint(
    b: &BrokerSettings,
) -> Result<crate::keys::BrokerEndpoint, ServerError> {
    let ca =
        b.ca.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|source| ServerError::Io {
                    what: format!("broker CA {}", p.display()),
                    source,
                })
            })
            .transpose()?;
    if b.url.starts_with("http://") {
        tracing::warn!(broker = %b.url, "the key broker is plain HTTP: development only");
    }
    Ok(crate::keys::BrokerEndpoint::new(&b.url, ca.as_deref())?)
}

/// Obtains a data key by RCAR, retrying with exponential backoff until the broker releases
/// it. Each refusal is logged with the broker's reason; the key never touches disk.
async fn release_key(
    endpoint: &crate::keys::BrokerEndpoint,
    attester: Arc<dyn crate::tee::Attester>,
    resource: &str,
    model: &Path,
) -> Result<DataKey, ServerError> {
    let what = model.display().to_string();
    let bytes = crate::keys::fetch_resource_retrying(endpoint, attester, resource, &what).await;
    let key = DataKey::from_bytes(&bytes).map_err(|problem| ServerError::Model {
        path: what.clone(),
        source: sealed::SealedError::KeyFile {
            path: format!("broker resource {resource}"),
            problem,
        },
    })?;
    tracing::info!(
        model = %what,
        resource,
        broker = endpoint.url(),
        "data key released by the broker after attestation"
    );
    Ok(key)
}

/// The embedded default: the demo's in-process key-release chain ([`crate::demo`]) yields
/// the demo model's data key after (simulated) attestation.
async fn load_demo(
    config: &ServeConfig,
    registry: &Registry,
    device: candle_core::Device,
) -> Result<(), ServerError> {
    let demo = crate::demo::obtain_demo_model(&config.data_dir).await?;
    let (config, registry) = (config.clone(), registry.clone());
    blocking(move || {
        load_one(
            &demo.sealed,
            &demo.key,
            &[demo.publisher],
            &config,
            &registry,
            &device,
        )
    })
    .await
}

fn load_one(
    sealed_path: &Path,
    key: &DataKey,
    trusted: &[PublisherKey],
    config: &ServeConfig,
    registry: &Registry,
    device: &candle_core::Device,
) -> Result<(), ServerError> {
    let loaded = crate::loading::load_sealed_any(
        sealed_path,
        key,
        trusted,
        &crate::loading::LoadOptions {
            device: device.clone(),
            gpu_load: config.gpu_load,
            verify_digests: config.verify_digests,
        },
    )?;
    let loaded = match loaded {
        crate::loading::LoadedAny::Mlp(m) => *m,
        crate::loading::LoadedAny::Text(t) => {
            return insert_text(sealed_path, *t, config, registry);
        }
    };
    let provenance = provenance(sealed_path, &loaded.manifest, loaded.publisher_key_id)?;
    let id = loaded.manifest.model.id.clone();
    let mut model_config = loaded.manifest.model;
    let mut options = ServingOptions {
        screening: config.screening.get(&id).copied(),
        privacy: config.privacy.models.get(&id).copied(),
    };
    if config.unguarded_benchmark_baseline {
        model_config.screening = None;
        model_config.privacy = None;
        options = ServingOptions::default();
    }
    registry
        .insert_with(model_config, provenance, loaded.mlp, config.batch, options)
        .map_err(|e| ServerError::Engine {
            path: sealed_path.display().to_string(),
            source: e,
        })?;
    Ok(())
}

/// What the registry records of a sealed model's origin: its signed weight digest, its
/// publisher and its manifest digest (which receipts state).
fn provenance<M: crate::sealed::SealedModel>(
    sealed_path: &Path,
    manifest: &crate::sealed::Manifest<M>,
    publisher_key_id: String,
) -> Result<Provenance, ServerError> {
    Ok(Provenance {
        weights_sha256: manifest.weights.sha256.clone(),
        publisher_key_id,
        manifest_sha256: manifest.digest().map_err(|source| ServerError::Model {
            path: sealed_path.display().to_string(),
            source,
        })?,
    })
}

/// Serves a loaded text encoder. Screening and output privacy from the server config apply
/// as the registry allows them for text models (see [`Registry::insert_text`]).
fn insert_text(
    sealed_path: &Path,
    loaded: crate::loading::LoadedText,
    config: &ServeConfig,
    registry: &Registry,
) -> Result<(), ServerError> {
    let provenance = provenance(sealed_path, &loaded.manifest, loaded.publisher_key_id)?;
    let id = loaded.manifest.model.id().to_string();
    let options = if config.unguarded_benchmark_baseline {
        ServingOptions::default()
    } else {
        ServingOptions {
            screening: config.screening.get(&id).copied(),
            privacy: config.privacy.models.get(&id).copied(),
        }
    };
    let model = registry
        .insert_text(Arc::new(loaded.encoder), provenance, config.batch, options)
        .map_err(|e| ServerError::Engine {
            path: sealed_path.display().to_string(),
            source: e,
        })?;
    tracing::info!(model = %model.label(), kind = "bert", "text model loaded");
    Ok(())
}
