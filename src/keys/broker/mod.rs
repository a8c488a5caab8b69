//! The key broker: a KBS (RCAR 0.4.0) over HTTPS, with an authenticated admin API.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /kbs/v0/auth` | TEE | a session cookie and a single-use nonce |
//! | `POST /kbs/v0/attest` | TEE | evidence binding the nonce and the TEE key; verified |
//! | `GET /kbs/v0/resource/<repo>/<type>/<tag>` | TEE | the resource as a JWE to the TEE key, if the resource's release policy accepts the evidence |
//! | `POST /kbs/v0/resource/<repo>/<type>/<tag>` | admin | store a resource (the raw bytes) |
//! | `POST /kbs/v0/resource-policy/<repo>/<type>/<tag>` | admin | set its release policy (attestation-policy TOML) |
//! | `POST /kbs/v0/resource-generate/<repo>/<type>/<tag>` | admin | store 32 random bytes the broker makes (a deployment's state key); refused if the resource exists |
//! | `POST /kbs/v0/anchor/<deployment>` | server | a freshness-anchor request signed by the deployment's checkpoint key ([`anchors`]) |
//! | `GET /kbs/v0/anchor/<deployment>` | admin | the deployment's freshness anchor |
//! | `POST /kbs/v0/anchor-reset/<deployment>` | admin | authorize a state reset |
//! | `GET /kbs/v0/audit-key/<deployment>` | admin | the deployment's audit-records subkey, for an auditor's `audit export --key-from-broker` |
//!
//! At attest the evidence is verified for integrity (signatures, chain, report_data binding
//! the runtime data) under a permissive base policy, and the session keeps only the verified
//! claims; at each resource request the claims are judged under that resource's release
//! policy (measurement, TCB floor, debug, allow_simulated) before the resource is decrypted.
//! A resource without a policy is never released, and a caller the policy does not admit
//! gets the same answer whether or not the resource exists. A policy that does not pin what
//! it accepts is refused when it is set (and at start, if one was stored before), and every
//! release under a deliberately open policy logs a warning. Every release and every refusal
//! is logged with its reason.
//!
//! TDX quotes are judged with the broker's own collateral ([`BrokerConfig::tdx_collateral`],
//! see [`super::collateral`]); collateral carried in the evidence is dropped unread.
//!
//! Nonces are single-use: a session attests once, and a challenge expires after
//! [`BrokerConfig::challenge_ttl`]; an attested session expires after
//! [`BrokerConfig::session_ttl`]. What anonymous callers can make the broker hold is bounded
//! per peer and in all ([`PeerLimits`], [`sessions`]). The admin API takes
//! `Authorization: Bearer <admin key>`, the key being the contents of
//! `<data-dir>/admin.key`.
//!
//! The files: this one starts the broker (`tls::serve_https` accepts its connections); [`http`] has the HTTP
//! helpers, [`rcar`] the TEE-facing handlers, [`admin`] the admin API and [`sessions`] the
//! session table with its limits.

mod admin;
mod anchors;
mod gpu;
mod http;
mod rcar;
pub mod sessions;

#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use axum::routing::{get, post};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::collateral::CollateralSource;
use super::error::{BrokerError, BrokerStartError};
use super::store::ResourceStore;
use crate::storage::Database;
#[cfg(test)]
pub(crate) use rcar::verify_integrity;
use sessions::Sessions;
pub use sessions::{MAX_SESSIONS, PeerLimits};

/// Default lifetime of an unanswered challenge (nonce).
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Default lifetime of an attested session.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(300);
/// Default largest admin request body (a resource or a release policy).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest `attest` body: SNP evidence with its certificate chain is about 15 KiB in
/// JSON, a TDX quote without collateral under 10 KiB (the broker holds TDX collateral itself),
/// and each GPU's evidence about 20 KiB (a hex report and a PEM chain), for up to
/// [`MAX_GPUS`](crate::keys::protocol::MAX_GPUS) GPUs.
pub const DEFAULT_MAX_EVIDENCE_BYTES: usize = 384 << 10;
/// Largest `auth` body (`{"version","tee","extra-params"}`).
pub const MAX_AUTH_BODY_BYTES: usize = 4 << 10;
/// Most certificate-table entries accepted in SNP evidence (ARK, ASK or ASVK, VCEK or VLEK,
/// and room for one more, such as a CRL).
pub const MAX_CERT_ENTRIES: usize = 4;

/// The broker's configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory: `tls/`, `admin.key`, `master.key`, `confidant.db`.
    pub data_dir: PathBuf,
    /// Lifetime of a challenge's nonce.
    pub challenge_ttl: Duration,
    /// Lifetime of an attested session.
    pub session_ttl: Duration,
    /// Largest admin request body.
    pub max_body_bytes: usize,
    /// Largest `attest` body (the evidence and the runtime data).
    pub max_evidence_bytes: usize,
    /// What one peer, and all peers, may make the broker hold.
    pub limits: PeerLimits,
    /// The broker's TDX collateral: a QuoteCollateralV3 JSON file or a directory of them,
    /// re-read at each TDX verification. Without it TDX evidence is refused.
    pub tdx_collateral: Option<PathBuf>,
    /// The broker's GPU references: a directory of NVIDIA RIMs (`.swidtag`) and one of OCSP
    /// responses (`.der`), re-read at each attestation that carries GPU evidence. Without
    /// RIMs a GPU's measurements are not compared (a `cc_mode = "on"` policy refuses it).
    pub gpu_references: super::gpu_references::GpuReferenceSource,
    /// How long a server instance holds its deployment after its last anchor advance
    /// (another instance's claim is refused meanwhile; the holder stops serving after half).
    pub anchor_lease: Duration,
}

impl BrokerConfig {
    /// The defaults, listening on `listen` with data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            challenge_ttl: DEFAULT_CHALLENGE_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_evidence_bytes: DEFAULT_MAX_EVIDENCE_BYTES,
            limits: PeerLimits::default(),
            tdx_collateral: None,
            gpu_references: Default::default(),
            anchor_lease: Duration::from_secs(crate::state::anchor::DEFAULT_LEASE_SECS),
        }
    }

    /// `<data-dir>/tls/cert.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// `<data-dir>/admin.key`.
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}

struct Shared {
    store: ResourceStore,
    sessions: Sessions,
    admin_key_sha256: [u8; 32],
    token_key: EcdsaKeyPair,
    config: BrokerConfig,
    rng: SystemRandom,
    /// Tests only: see [`gpu::TestSeam`]. Absent from every non-test build.
    #[cfg(test)]
    gpu_test_seam: gpu::TestSeam,
}

/// A running broker.
pub struct RunningBroker {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (or the bound IP).
    pub url: String,
    /// The TLS certificate (PEM) clients must trust.
    pub cert_pem: String,
    state: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Stores a resource directly (the in-process path of the embedded demo).
    pub fn put_resource(&self, path: &str, bytes: &[u8]) -> Result<(), BrokerError> {
        http::check_path(path)?;
        self.state.store.put(path, bytes)
    }

    /// Sets a release policy directly (the in-process path of the embedded demo).
    pub fn set_policy(&self, path: &str, toml: &str) -> Result<(), BrokerError> {
        http::check_path(path)?;
        self.state.store.set_policy(path, toml).map(|_| ())
    }

    /// Tests only: the GPU nonce and time the broker expects for the session whose challenge
    /// is `challenge` (recorded GPU evidence answers a fixed nonce, and its RIMs' signer
    /// certificates have expired). See [`gpu::TestSeam`].
    #[cfg(test)]
    pub(crate) fn dangerous_test_expect_gpu(
        &self,
        challenge: &str,
        gpu_nonce: [u8; 32],
        at: confidant_attestation::Timestamp,
    ) {
        self.state.gpu_test_seam.expect(challenge, gpu_nonce, at);
    }

    /// Whether a resource exists at `path`.
    pub fn has_resource(&self, path: &str) -> Result<bool, BrokerError> {
        self.state.store.contains(path)
    }

    /// Stops accepting connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerStartError {
    let what = what.into();
    move |source| BrokerStartError::Io { what, source }
}

/// Reads `<data-dir>/admin.key` (64 hex digits), creating it on first start.
fn load_or_create_admin_key(path: &Path) -> Result<Zeroizing<String>, BrokerStartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = Zeroizing::new(text.trim().to_owned());
            if key.len() < 32 {
                return Err(BrokerStartError::Key(format!(
                    "{}: the admin key is shorter than 32 characters",
                    path.display()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = Zeroizing::new([0u8; 32]);
            getrandom::fill(raw.as_mut()).map_err(|e| BrokerStartError::Key(e.to_string()))?;
            let key = Zeroizing::new(hex::encode(raw.as_ref()));
            crate::files::write_file(path, format!("{}\n", key.as_str()).as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), "broker: admin key created");
            Ok(key)
        }
        Err(e) => Err(io(path.display().to_string())(e)),
    }
}

/// Reads `<data-dir>/tls/{cert,key}.pem`, or makes a self-signed pair on first start.
fn load_or_create_tls(
    dir: &Path,
    listen: &SocketAddr,
) -> Result<(String, Zeroizing<String>), BrokerStartError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert =
            std::fs::read_to_string(&cert_path).map_err(io(cert_path.display().to_string()))?;
        let key = Zeroizing::new(
            std::fs::read_to_string(&key_path).map_err(io(key_path.display().to_string()))?,
        );
        return Ok((cert, key));
    }
    crate::files::create_private_dir(dir)?;
    let id = crate::tls::TlsIdentity::self_signed(&crate::tls::default_names(listen))?;
    crate::files::write_file(&key_path, id.key_pem.as_bytes(), 0o600)?;
    crate::files::write_file(&cert_path, id.cert_pem.as_bytes(), 0o600)?;
    tracing::info!(cert = %cert_path.display(), "broker: self-signed TLS certificate written");
    Ok((id.cert_pem, id.key_pem))
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, BrokerStartError> {
    crate::tls::server_config(cert_pem, key_pem, None, b"http/1.1")
        .map_err(|e| BrokerStartError::Key(format!("broker TLS: {e}")))
}

/// Starts the broker: opens (or initializes) its data directory, binds, and serves until
/// the returned handle is shut down or dropped.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerStartError> {
    crate::files::create_private_dir(&config.data_dir)?;
    let admin_key = load_or_create_admin_key(&config.admin_key_path())?;
    let master = crate::files::load_or_create_key(&config.data_dir.join("master.key"))?;
    let db = Arc::new(Database::open_in(&config.data_dir)?);
    let store =
        ResourceStore::new(db, &master).map_err(|e| BrokerStartError::Key(e.to_string()))?;
    drop(master);
    // A policy stored before policies had to pin what they accept is refused here, at load,
    // rather than at the first release.
    if let Some((path, reason)) = store
        .first_refused_policy()
        .map_err(|e| BrokerStartError::Key(e.to_string()))?
    {
        return Err(BrokerStartError::StoredPolicy { path, reason });
    }
    if config.gpu_references.is_configured() {
        let set = config.gpu_references.load()?;
        tracing::info!(
            rims = set.rims.len(),
            ocsp_responses = set.ocsp.len(),
            "broker: GPU references loaded (re-read at each attestation with GPU evidence)"
        );
    }
    if let Some(path) = &config.tdx_collateral {
        let set = CollateralSource::new(path).load()?;
        tracing::info!(
            path = %path.display(),
            platforms = set.len(),
            "broker: TDX collateral loaded (re-read at each TDX verification)"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listen on {}", config.listen)))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let (cert_pem, key_pem) = load_or_create_tls(&config.data_dir.join("tls"), &addr)?;
    let tls = tls_config(&cert_pem, &key_pem)?;
    drop(key_pem);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| BrokerStartError::Key("token signing key".into()))?;
    let token_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| BrokerStartError::Key("token signing key".into()))?;
    let state = Arc::new(Shared {
        store,
        sessions: Sessions::new(config.limits, config.challenge_ttl, config.session_ttl),
        admin_key_sha256: Sha256::digest(admin_key.as_bytes()).into(),
        token_key,
        config: config.clone(),
        rng,
        #[cfg(test)]
        gpu_test_seam: gpu::TestSeam::default(),
    });
    drop(admin_key);
    let router = router(Arc::clone(&state));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(crate::tls::serve_https(
        listener,
        Arc::new(tls),
        router,
        stop_rx,
        "broker",
        crate::tls::OpenConnections::default(),
    ));
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        "broker: listening (KBS RCAR 0.4.0 over HTTPS)"
    );
    Ok(RunningBroker {
        addr,
        url: format!("https://{host}:{}", addr.port()),
        cert_pem,
        state,
        stop: Some(stop_tx),
        task,
    })
}

/// The answer to a path this broker does not serve: 404 `PluginNotFound`, as Trustee answers
/// a plugin it does not have, saying what this broker does instead of Trustee's
/// attestation-service endpoints.
fn no_endpoint(path: &str) -> BrokerError {
    let plugin = path
        .strip_prefix("/kbs/v0/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let instead = match plugin {
        "attestation-policy" | "reference-value" => {
            "; this broker has no separate attestation service to configure: evidence is \
             appraised against each resource's release policy (POST \
             /kbs/v0/resource-policy/<repository>/<type>/<tag>, TOML), which pins the \
             reference measurements itself"
        }
        _ => "",
    };
    BrokerError::NoEndpoint(format!("no endpoint {path} on this broker{instead}"))
}

fn router(state: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/kbs/v0/auth", post(rcar::auth))
        .route("/kbs/v0/attest", post(rcar::attest))
        .route(
            "/kbs/v0/resource/{*path}",
            get(rcar::resource)
                .post(admin::put_resource)
                .delete(admin::delete_resource),
        )
        .route(
            "/kbs/v0/resource-policy",
            post(admin::trustee_resource_policy),
        )
        .route("/kbs/v0/resource-policy/{*path}", post(admin::put_policy))
        .route(
            "/kbs/v0/resource-generate/{*path}",
            post(admin::generate_resource),
        )
        .route(
            "/kbs/v0/anchor/{deployment}",
            get(anchors::get_anchor).post(anchors::server_request),
        )
        .route("/kbs/v0/anchor-reset/{deployment}", post(anchors::reset))
        .route("/kbs/v0/audit-key/{deployment}", get(anchors::audit_key))
        .fallback(|uri: Uri| async move { http::error_response(&no_endpoint(uri.path())) })
        .with_state(state)
}
