//! The demo's key-release chain, run in process: an embedded key broker (the same code as
//! `confidant broker`, over HTTPS on 127.0.0.1:0) holds the demo model's data key and
//! releases it to the simulated TEE only after attestation (RCAR: nonce, evidence binding an
//! ephemeral key, policy check, JWE). Nothing in it is confidential: the evidence is
//! simulated and the broker's master key sits in the data directory.
//!
//! The inference server calls [`obtain_demo_model`] and [`create_demo_api_key`] and never
//! sees the broker itself: it only uses the key-release client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::files::{FileError, create_private_dir, write_file};
use crate::guard::{ApiKeySecret, Guard, NewKey, Scope};
use crate::keys::{BrokerConfig, BrokerEndpoint, RunningBroker};
use crate::sealed::{self, DataKey, PublisherKey, PublisherSigningKey, SealOptions, SealedError};

/// The demo model's resource path at the embedded broker.
pub const DEMO_RESOURCE: &str = "default/models/demo";

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The embedded broker failed.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// The simulated TEE could not start.
    #[error("simulated TEE: {0}")]
    Tee(#[from] crate::tee::TeeError),
    /// Sealing or reading the demo model failed.
    #[error("demo model in {dir}: {source}")]
    Sealed {
        /// The demo directory.
        dir: String,
        /// Why.
        source: SealedError,
    },
    /// The embedded config does not parse (a build defect).
    #[error("demo model config: {0}")]
    Config(#[from] crate::engine::ConfigError),
    /// A file in the demo directory could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The demo API key could not be created.
    #[error("demo API key: {0}")]
    ApiKey(String),
    /// A blocking task failed.
    #[error("demo setup task failed: {0}")]
    Task(String),
}

/// The demo model as the server loads it: the sealed file, the publisher key it must be
/// signed by, and the data key the embedded broker released after attestation.
pub struct DemoModel {
    /// `<data-dir>/demo/demo.sealed`.
    pub sealed: PathBuf,
    /// The demo publisher's public key.
    pub publisher: PublisherKey,
    /// The data key, released by the embedded broker.
    pub key: DataKey,
}

/// Runs the demo's key-release chain: starts the embedded broker in `<data-dir>/broker`,
/// seals the demo model on first start, pins the simulated TEE's measurement in the release
/// policy, obtains the data key by RCAR, and stops the broker.
pub async fn obtain_demo_model(data_dir: &Path) -> Result<DemoModel, DemoError> {
    let broker_err = |e: &dyn std::fmt::Display| DemoError::Broker(e.to_string());
    let broker = crate::keys::broker::start(BrokerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir.join("broker"),
    ))
    .await
    .map_err(|e| broker_err(&e))?;
    let broker = Arc::new(broker);
    let (sealed_path, publisher) = {
        let (dir, b) = (data_dir.to_path_buf(), Arc::clone(&broker));
        tokio::task::spawn_blocking(move || prepare(&dir, &b))
            .await
            .map_err(|e| DemoError::Task(e.to_string()))??
    };
    let broker = Arc::try_unwrap(broker).map_err(|_| broker_err(&"still shared"))?;
    let simulated = tokio::task::spawn_blocking(crate::tee::Simulated::new)
        .await
        .map_err(|e| DemoError::Task(e.to_string()))??;
    // The release policy pins this binary's simulated measurement, as a publisher pins a
    // build's launch measurement.
    broker
        .set_policy(
            DEMO_RESOURCE,
            &format!(
                "measurements = [\"{}\"]\nallow_simulated = true\n",
                hex::encode(simulated.measurement())
            ),
        )
        .map_err(|e| broker_err(&e))?;
    let endpoint = BrokerEndpoint::new(&broker.url, Some(broker.cert_pem.as_bytes()))
        .map_err(|e| broker_err(&e))?;
    let what = sealed_path.display().to_string();
    let bytes =
        crate::keys::fetch_resource_retrying(&endpoint, Arc::new(simulated), DEMO_RESOURCE, &what)
            .await;
    tracing::info!(
        model = %what,
        resource = DEMO_RESOURCE,
        broker = endpoint.url(),
        "data key released by the broker after attestation"
    );
    broker.shutdown().await;
    let key = DataKey::from_bytes(&bytes).map_err(|problem| DemoError::Sealed {
        dir: what,
        source: SealedError::KeyFile {
            path: format!("broker resource {DEMO_RESOURCE}"),
            problem,
        },
    })?;
    Ok(DemoModel {
        sealed: sealed_path,
        publisher,
        key,
    })
}

/// Seals the embedded demo model into `<data-dir>/demo/` on first start (with its own
/// publisher key) and registers its data key with the embedded broker (never on disk in
/// the clear); returns the sealed file and the publisher's public key.
fn prepare(data_dir: &Path, broker: &RunningBroker) -> Result<(PathBuf, PublisherKey), DemoError> {
    let dir = data_dir.join("demo");
    create_private_dir(&dir)?;
    let sealed_path = dir.join("demo.sealed");
    let key_path = dir.join("publisher.key");
    let demo_err = |source| DemoError::Sealed {
        dir: dir.display().to_string(),
        source,
    };
    let registered = broker
        .has_resource(DEMO_RESOURCE)
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    if sealed_path.exists() && key_path.exists() && registered {
        let signing = PublisherSigningKey::from_pem_file(&key_path).map_err(demo_err)?;
        return Ok((sealed_path, signing.public_key()));
    }
    let config = super::config()?;
    let signing = PublisherSigningKey::generate().map_err(demo_err)?;
    let sealed = sealed::seal(
        &config,
        super::WEIGHTS,
        &signing,
        &SealOptions {
            key_resource: Some(DEMO_RESOURCE.to_owned()),
            ..SealOptions::default()
        },
    )
    .map_err(demo_err)?;
    broker
        .put_resource(DEMO_RESOURCE, sealed.data_key.secret_bytes())
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    write_file(
        &key_path,
        signing.to_pem().map_err(demo_err)?.as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join("publisher.pub"),
        signing.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    write_file(&sealed_path, &sealed.file, 0o644)?;
    tracing::info!(
        dir = %dir.display(),
        resource = DEMO_RESOURCE,
        "sealed the embedded demo model; its data key is held by the embedded broker"
    );
    Ok((sealed_path, signing.public_key()))
}

/// On the first start in demo mode (no key exists yet), creates the `demo` principal's key.
///
/// In demo mode only, the key is also written to `<data-dir>/demo/api-key` (0600, in a 0700
/// directory), as Jupyter keeps its token in a runtime file, so that `confidant predict` on
/// the same machine works with no flags. Outside demo mode keys exist only as hashes.
pub fn create_demo_api_key(
    guard: &Guard,
    data_dir: &Path,
) -> Result<Option<ApiKeySecret>, DemoError> {
    let api = |e: &dyn std::fmt::Display| DemoError::ApiKey(e.to_string());
    if !guard.keys().is_empty().map_err(|e| api(&e))? {
        return Ok(None);
    }
    let now = crate::unix_now();
    let new = NewKey {
        principal: "demo".into(),
        scopes: [Scope::Predict, Scope::Explain].into(),
        purposes: ["demonstration".to_string()].into(),
        rpm: None,
        rpd: None,
    };
    let (_, secret) = guard
        .keys()
        .create_as(&new, now, "server")
        .map_err(|e| api(&e))?;
    let dir = data_dir.join("demo");
    create_private_dir(&dir)?;
    write_file(&dir.join("api-key"), secret.secret_str().as_bytes(), 0o600)?;
    tracing::info!("created the demo principal's API key (shown once on stdout)");
    Ok(Some(secret))
}
