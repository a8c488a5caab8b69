//! The gRPC server: configuration, model loading, TLS, services and graceful shutdown.
//!
//! Start-up order matters for confidentiality: the process is hardened (no core dumps) before
//! any key or plaintext exists; the listener comes up with health NOT_SERVING; models are
//! verified, decrypted and loaded; only then does health turn SERVING and Predict answer.

pub mod attestation;
pub mod error;
pub mod inference;
pub mod pipeline;
pub mod privacy;
pub mod request_id;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};

pub use error::{ApiError, ServerError};
use inference::InferenceService;
use pipeline::Pipeline;
use tls::TlsIdentity;

use crate::engine::{BatchConfig, Mlp, Provenance, Registry, ScreeningSpec, ServingOptions};
use crate::guard::{ApiKeySecret, Guard, NewKey, RateDefaults, Scope};
use crate::oip::OipService;
use crate::privacy::budget::BudgetConfig;
use crate::privacy::policy::PrivacyPolicy;
use crate::proto::confidant::v1::inference_server::InferenceServer;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::sealed::{self, DataKey, PublisherKey, PublisherSigningKey, SealOptions};
use crate::storage::Database;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory (relative to the working directory), unless `CONFIDANT_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "confidant-data";
/// Default largest gRPC message, in bytes (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Default Prometheus endpoint (Triton's metrics port), loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:8002";
/// Default most rows per Predict request.
pub const DEFAULT_MAX_ROWS: usize = 4096;

/// A sealed model, and where its data key comes from: the key broker (attested key
/// release, the manifest's resource path), or a key file (the development path).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// The sealed file.
    pub sealed: PathBuf,
    /// The data-key file (32 raw bytes): a development path that bypasses attestation;
    /// absent means the key broker releases the key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[broker]`: the key broker (ours or a Trustee KBS) that releases data keys after
/// attestation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// `https://HOST:PORT` (or `http://` for a development KBS).
    pub url: String,
    /// The CA or self-signed certificate (PEM) the broker's TLS certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// First and longest wait between attempts to obtain a data key from the broker.
const BROKER_RETRY: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(30),
);

/// A configured TLS identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The serve config file (TOML). Every key is optional; command-line flags override it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Listen address, `host:port`.
    pub listen: Option<String>,
    /// Prometheus `/metrics` listen address, `host:port`, or `off`.
    pub metrics_listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// TLS certificate and key; absent means self-signed at start.
    pub tls: Option<TlsFiles>,
    /// CA (PEM) for mutual TLS: clients may authenticate with a certificate it issued and
    /// that is registered to a principal.
    pub client_ca: Option<PathBuf>,
    /// Sealed models to load.
    #[serde(default)]
    pub models: Vec<ModelSource>,
    /// The key broker that releases the models' data keys.
    pub broker: Option<BrokerSettings>,
    /// Trusted publisher public keys (PEM files).
    #[serde(default)]
    pub publisher_keys: Vec<PathBuf>,
    /// Batching.
    pub batch: Option<BatchConfig>,
    /// Largest gRPC message in bytes.
    pub max_message_bytes: Option<usize>,
    /// Most rows per request.
    pub max_rows_per_request: Option<usize>,
    /// Recompute both SHA-256 digests of every model at load (on by default).
    pub verify_digests: Option<bool>,
    /// Default per-principal rate limits (keys may override them).
    pub rate: Option<RateDefaults>,
    /// Adversarial-sensitivity screening by model id (`[screening.<model-id>]`). Applies
    /// where the signed manifest declares none; otherwise it can only tighten the manifest's.
    #[serde(default)]
    pub screening: BTreeMap<String, ScreeningSpec>,
    /// Differential privacy: budgets, and output policies by model id.
    #[serde(default)]
    pub privacy: PrivacySettings,
    /// The audit log: segment size and retention.
    #[serde(default)]
    pub audit: AuditSettings,
}

/// `[audit]`: segment size and retention.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Delete audit segments whose newest record is older than this many days (fractions
    /// allowed, at least one second); absent: keep everything. A signed retention record
    /// keeps the rest of the chain verifiable.
    pub retention_days: Option<f64>,
    /// Records per segment file (10 to 10,000,000).
    pub segment_records: u64,
    /// How long the writer gathers records before it writes and fsyncs them as one group,
    /// in milliseconds (1 to 1000). Records reach disk within about this long plus one
    /// fsync; a longer group costs fewer fsyncs per record (see BENCHMARKS.md, guards).
    pub group_commit_ms: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: None,
            segment_records: crate::audit::SEGMENT_RECORDS,
            group_commit_ms: crate::audit::DEFAULT_GROUP_COMMIT_MS,
        }
    }
}

impl AuditSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ServerError> {
        if let Some(d) = self.retention_days
            && !(d.is_finite() && d * 86_400.0 >= 1.0 && d <= 36_600.0)
        {
            return Err(ServerError::Config(format!(
                "audit.retention_days must be between one second (1.16e-5) and 36600 days, got {d}"
            )));
        }
        if !(10..=10_000_000).contains(&self.segment_records) {
            return Err(ServerError::Config(format!(
                "audit.segment_records must be 10 to 10000000, got {}",
                self.segment_records
            )));
        }
        if !(1..=1000).contains(&self.group_commit_ms) {
            return Err(ServerError::Config(format!(
                "audit.group_commit_ms must be 1 to 1000, got {}",
                self.group_commit_ms
            )));
        }
        Ok(())
    }
}

/// `[privacy]`: per-principal budgets and per-model output policies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    /// `[privacy.budget]`: ε per principal per window, δ, window length.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// `[privacy.models.<model-id>]`: a policy that tightens (never weakens) the manifest's.
    #[serde(default)]
    pub models: BTreeMap<String, PrivacyPolicy>,
}

impl ServeFile {
    /// Reads and parses a TOML config file.
    pub fn read(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            what: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory (created 0700 if absent).
    pub data_dir: PathBuf,
    /// Configured TLS identity, else self-signed.
    pub tls: Option<TlsFiles>,
    /// CA for client certificates (mutual TLS), if enabled.
    pub client_ca: Option<PathBuf>,
    /// Models to load; empty (and no broker) means the embedded demo.
    pub models: Vec<ModelSource>,
    /// The key broker, for models without a key file.
    pub broker: Option<BrokerSettings>,
    /// Trusted publisher keys.
    pub publisher_keys: Vec<PathBuf>,
    /// Batching.
    pub batch: BatchConfig,
    /// Largest gRPC message in bytes.
    pub max_message_bytes: usize,
    /// Most rows per request.
    pub max_rows_per_request: usize,
    /// Recompute both SHA-256 digests at load.
    pub verify_digests: bool,
    /// Default per-principal rate limits.
    pub rate: RateDefaults,
    /// Server-side screening by model id.
    pub screening: BTreeMap<String, ScreeningSpec>,
    /// Privacy budgets and server-side output policies.
    pub privacy: PrivacySettings,
    /// Audit segment size and retention.
    pub audit: AuditSettings,
    /// Benchmarks only: serve with every guard off (no authentication, purposes, input
    /// validation, rate limits, screening or audit records), as the baseline that the
    /// guard-overhead benchmark compares against. Reachable from no flag and no config
    /// file; `run` refuses to start with it unless the models are the embedded demo.
    #[doc(hidden)]
    pub unguarded_benchmark_baseline: bool,
    /// Where models run (`--device auto|cpu|cuda:N`).
    pub device: crate::gpu::DeviceSpec,
    /// How sealed weights reach a CUDA device (`--gpu-load staged|device-decrypt`).
    pub gpu_load: crate::gpu::LoadPath,
}

impl ServeConfig {
    /// Validates the ranges and combinations.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.batch.validate().map_err(ServerError::Config)?;
        if !(4096..=1 << 30).contains(&self.max_message_bytes) {
            return Err(ServerError::Config(format!(
                "max_message_bytes must be 4096..=1073741824, got {}",
                self.max_message_bytes
            )));
        }
        if !(1..=1 << 20).contains(&self.max_rows_per_request) {
            return Err(ServerError::Config(format!(
                "max_rows_per_request must be 1..=1048576, got {}",
                self.max_rows_per_request
            )));
        }
        self.privacy
            .budget
            .validate()
            .map_err(ServerError::Config)?;
        self.audit.validate()?;
        for (id, spec) in &self.screening {
            spec.validate()
                .map_err(|e| ServerError::Config(format!("screening.{id}: {e}")))?;
        }
        if self.broker.is_some() && self.models.is_empty() {
            return Err(ServerError::Config(
                "--broker releases the keys of sealed models: give at least one --model".into(),
            ));
        }
        if self.broker.is_none()
            && let Some(m) = self.models.iter().find(|m| m.key_file.is_none())
        {
            return Err(ServerError::Config(format!(
                "model {} has no key file and no key broker is configured (--broker URL)",
                m.sealed.display()
            )));
        }
        if let Some(b) = &self.broker {
            broker_endpoint(b)?;
        }
        if !self.models.is_empty() && self.publisher_keys.is_empty() {
            return Err(ServerError::Config(
                "sealed models need at least one trusted publisher key (--publisher-key P.pub)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The data directory's TLS certificate path.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }
}

/// What a server reports once it is ready.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound `/metrics` address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// On the first start in demo mode: the demo API key, to show once.
    pub demo_api_key: Option<ApiKeySecret>,
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests and zeroizes
/// the models. `on_ready` is called once the models are loaded and health says SERVING.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Running) + Send,
) -> Result<(), ServerError> {
    config.validate()?;
    let hardening = crate::secure::harden_process();
    if !hardening.no_core_dumps || !hardening.not_dumpable {
        tracing::warn!(
            ?hardening,
            "could not fully disable core dumps; secrets could reach a crash dump"
        );
    }
    create_private_dir(&config.data_dir)?;
    let db = Arc::new(
        Database::open_in(&config.data_dir).map_err(|e| ServerError::Config(e.to_string()))?,
    );
    let guard = Arc::new(Guard::new(Arc::clone(&db), config.rate));
    let audit = Arc::new(open_audit(&config.data_dir, &config.audit)?);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("listen on {}", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        what: "local address".into(),
        source,
    })?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let registry = Registry::new();
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|source| ServerError::Io {
                    what: format!("listen for /metrics on {at} (set --metrics-listen, or off)"),
                    source,
                })?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| ServerError::Io {
            what: "metrics local address".into(),
            source,
        })?),
        None => None,
    };
    // Only once the port is ours: a key shown once must not be lost to a failed start.
    let demo_api_key = if config.models.is_empty() {
        demo_key(&guard, &config.data_dir)?
    } else {
        None
    };
    // Admin events that `confidant keys …` queued while no server ran, and from now on
    // every second (and once more at shutdown).
    drain_outbox(&db, &audit);
    let (outbox_stop_tx, mut outbox_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let outbox_task = {
        let (db, audit) = (Arc::clone(&db), Arc::clone(&audit));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut outbox_stop_rx => true,
                };
                let (db, audit) = (Arc::clone(&db), Arc::clone(&audit));
                let _ = tokio::task::spawn_blocking(move || drain_outbox(&db, &audit)).await;
                if stop {
                    return;
                }
            }
        })
    };

    let identity = match &config.tls {
        Some(files) => TlsIdentity::from_files(&files.cert, &files.key)?,
        None => {
            let id = TlsIdentity::self_signed(&tls::default_names(&addr))?;
            let cert_path = config.cert_path();
            create_private_dir(cert_path.parent().unwrap_or(&config.data_dir))?;
            write_file(&cert_path, id.cert_pem.as_bytes(), 0o644)?;
            tracing::info!(cert = %cert_path.display(), "self-signed TLS certificate written");
            id
        }
    };

    // The channel binding: evidence will name the SPKI of this certificate.
    let leaf_der = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .next()
            .ok_or_else(|| ServerError::Tls("no certificate in the TLS identity".into()))?
            .map_err(|e| ServerError::Tls(format!("TLS certificate PEM: {e}")))?
    };
    let spki = attestation::spki_sha256(&leaf_der).map_err(ServerError::Tls)?;
    let attester: Arc<dyn crate::tee::Attester> = Arc::from(
        crate::tee::detect().map_err(|e| ServerError::Config(format!("attestation: {e}")))?,
    );
    tracing::info!(
        attester = %attester.kind(),
        tls_spki_sha256 = %hex::encode(spki),
        "attestation: GetEvidence binds the TLS key"
    );
    let attestation_service =
        crate::proto::confidant::v1::attestation_server::AttestationServer::new(
            attestation::AttestationService::new(Arc::clone(&attester), spki),
        );

    let ready = Arc::new(AtomicBool::new(false));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health_reporter
        .set_not_serving::<InferenceServer<InferenceService>>()
        .await;
    health_reporter
        .set_not_serving::<GrpcInferenceServiceServer<OipService>>()
        .await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;

    let pipeline = Pipeline::new(
        registry.clone(),
        Arc::clone(&guard),
        Some(Arc::clone(&audit)),
        Arc::clone(&ready),
        config.max_rows_per_request,
    )
    .with_metrics(Arc::clone(&metrics))
    .with_privacy(crate::privacy::budget::Budgets::new(
        Arc::clone(&db),
        config.privacy.budget,
    ))
    .map_err(|e| ServerError::Config(e.to_string()))?
    .with_subjects(crate::privacy::subjects::Subjects::new(
        Arc::clone(&db),
        crate::audit::load_or_create_key(&config.data_dir.join("subjects.key"))
            .map_err(|e| ServerError::Config(e.to_string()))?,
    ));
    let pipeline = if config.unguarded_benchmark_baseline {
        if !config.models.is_empty() {
            return Err(ServerError::Config(
                "the unguarded benchmark baseline serves only the embedded demo model".into(),
            ));
        }
        tracing::warn!("BENCHMARK BASELINE: every guard is off; never serve real traffic");
        pipeline.unguarded_benchmark_baseline()
    } else {
        pipeline
    };
    let (metrics_stop_tx, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = metrics_listener {
        let app = metrics_router(Arc::clone(&metrics), registry.clone());
        tokio::spawn(async move {
            let stop = async move {
                let _ = metrics_stop_rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "the /metrics endpoint failed");
            }
        });
    }
    let privacy_service = crate::proto::confidant::v1::privacy_server::PrivacyServer::new(
        privacy::PrivacyService::new(pipeline.clone()),
    );
    let inference = InferenceServer::new(InferenceService::new(pipeline.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    // The Open Inference Protocol on the same port, TLS and pipeline (Triton's clients).
    let oip = GrpcInferenceServiceServer::new(OipService::new(pipeline.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let mut tls_config = ServerTlsConfig::new().identity(identity.to_tonic());
    if let Some(ca) = &config.client_ca {
        let pem = std::fs::read(ca).map_err(|source| ServerError::Io {
            what: format!("client CA {}", ca.display()),
            source,
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ServerError::Tls(format!(
                "client CA {}: no PEM certificate in the file",
                ca.display()
            )));
        }
        // Optional: clients without a certificate still authenticate by API key.
        tls_config = tls_config
            .client_ca_root(tonic::transport::Certificate::from_pem(pem))
            .client_auth_optional(true);
        tracing::info!(client_ca = %ca.display(), "mutual TLS enabled");
    }
    let server = Server::builder()
        .tls_config(tls_config)?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(inference)
        .add_service(privacy_service)
        .add_service(attestation_service)
        .add_service(oip);
    drop(identity);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // TCP_NODELAY on every accepted socket: `Server::tcp_nodelay` applies only to listeners
    // tonic binds itself, and without it Nagle holds back the second of two small TLS
    // records (headers, then data) until the peer's delayed ACK: +40 ms per response.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tokio::spawn(server.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop_rx.await;
    }));
    // Forward the caller's shutdown signal; loading may still be under way when it fires.
    let (shutdown_seen_tx, mut shutdown_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_seen_tx.send(true);
    });

    tracing::info!(
        %addr,
        "listening; health is NOT_SERVING until every model's key is released and it loads"
    );
    let load = load_models(&config, &registry, Arc::clone(&attester));
    let loaded = tokio::select! {
        r = load => Some(r),
        _ = shutdown_seen.wait_for(|s| *s) => None,
    };
    match loaded {
        Some(Ok(())) => {
            ready.store(true, Ordering::Release);
            health_reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            health_reporter
                .set_serving::<InferenceServer<InferenceService>>()
                .await;
            health_reporter
                .set_serving::<GrpcInferenceServiceServer<OipService>>()
                .await;
            for m in registry.list() {
                tracing::info!(
                    model = %m.config().id,
                    version = %m.config().version,
                    weights_sha256 = %m.provenance().weights_sha256,
                    screening = m.screening().map_or("off", |s| s.action.as_str()),
                    "model ready"
                );
            }
            on_ready(&Running {
                addr,
                metrics_addr,
                demo_api_key,
            });
            let _ = shutdown_seen.wait_for(|s| *s).await;
        }
        Some(Err(e)) => {
            let _ = stop_tx.send(());
            let _ = metrics_stop_tx.send(());
            let _ = outbox_stop_tx.send(());
            let _ = outbox_task.await;
            let _ = serve.await;
            return Err(e);
        }
        None => {}
    }

    tracing::info!("shutting down: draining requests in flight");
    ready.store(false, Ordering::Release);
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(());
    let _ = metrics_stop_tx.send(());
    let _ = outbox_stop_tx.send(());
    let _ = outbox_task.await;
    let result = serve
        .await
        .map_err(|e| ServerError::Config(format!("server task failed: {e}")))?;
    registry.clear();
    guard.limiter().release_leases();
    audit.append(crate::audit::Event::Admin {
        actor: "server".into(),
        action: "stop".into(),
        detail: String::new(),
    });
    audit.close();
    tracing::info!("stopped; model memory zeroized, audit log checkpointed");
    result.map_err(ServerError::from)
}

/// `GET /metrics` in the Prometheus text format. Plain HTTP on its own (loopback by default)
/// port: the series hold counts and timings per model, never request data.
fn metrics_router(metrics: Arc<crate::metrics::Metrics>, registry: Registry) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&registry);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    )
}

/// Loads every configured model, or the embedded demo when none is configured.
///
/// A model without a key file gets its data key from the broker: its signature is verified
/// first (so the resource path asked for is the publisher's), then RCAR runs with evidence
/// from `attester`, retrying with backoff for as long as the broker is unreachable or
/// refuses; health stays NOT_SERVING meanwhile.
async fn load_models(
    config: &ServeConfig,
    registry: &Registry,
    attester: Arc<dyn crate::tee::Attester>,
) -> Result<(), ServerError> {
    let spec = config.device;
    let device = blocking(move || {
        crate::gpu::open(spec).map_err(|e| ServerError::Config(format!("--device {spec}: {e}")))
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
                        sealed::SealedFile::read(&path)
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
                return Err(ServerError::Config(format!(
                    "model {} has no key file and no key broker",
                    source.sealed.display()
                )));
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
        .map_err(|e| ServerError::Config(format!("model loading task failed: {e}")))?
}

/// The broker endpoint of the settings (reads the CA file).
fn broker_endpoint(b: &BrokerSettings) -> Result<crate::keys::BrokerEndpoint, ServerError> {
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
    crate::keys::BrokerEndpoint::new(&b.url, ca.as_deref())
        .map_err(|e| ServerError::Config(e.to_string()))
}

/// Obtains a data key by RCAR, retrying with exponential backoff until the broker releases
/// it. Each refusal is logged with the broker's reason; the key never touches disk.
async fn release_key(
    endpoint: &crate::keys::BrokerEndpoint,
    attester: Arc<dyn crate::tee::Attester>,
    resource: &str,
    model: &Path,
) -> Result<DataKey, ServerError> {
    let (mut wait, longest) = BROKER_RETRY;
    loop {
        match crate::keys::fetch_resource(endpoint, Arc::clone(&attester), resource).await {
            Ok(bytes) => {
                let key = DataKey::from_bytes(&bytes).map_err(|problem| ServerError::Model {
                    path: model.display().to_string(),
                    source: sealed::SealedError::KeyFile {
                        path: format!("broker resource {resource}"),
                        problem,
                    },
                })?;
                tracing::info!(
                    model = %model.display(),
                    resource,
                    broker = endpoint.url(),
                    "data key released by the broker after attestation"
                );
                return Ok(key);
            }
            Err(e) => {
                tracing::warn!(
                    model = %model.display(),
                    resource,
                    broker = endpoint.url(),
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "no data key from the broker; not serving this model; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(longest);
            }
        }
    }
}

/// The embedded default: an in-process broker (HTTPS on 127.0.0.1:0) holds the demo
/// model's data key and releases it to the simulated TEE after attestation, the same chain
/// as production with nothing confidential in it.
async fn load_demo(
    config: &ServeConfig,
    registry: &Registry,
    device: candle_core::Device,
) -> Result<(), ServerError> {
    let cfg = |e: &dyn std::fmt::Display| ServerError::Config(format!("embedded broker: {e}"));
    let broker = crate::keys::broker::start(crate::keys::BrokerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.data_dir.join("broker"),
    ))
    .await
    .map_err(|e| cfg(&e))?;
    let data_dir = config.data_dir.clone();
    let (source, publisher, broker) = {
        let broker = Arc::new(broker);
        let b = Arc::clone(&broker);
        let (source, publisher) = blocking(move || prepare_demo(&data_dir, &b)).await?;
        let broker = Arc::try_unwrap(broker).map_err(|_| cfg(&"still shared"))?;
        (source, publisher, broker)
    };
    let simulated = blocking(|| {
        crate::tee::Simulated::new().map_err(|e| ServerError::Config(format!("simulated TEE: {e}")))
    })
    .await?;
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
        .map_err(|e| cfg(&e))?;
    let endpoint = crate::keys::BrokerEndpoint::new(&broker.url, Some(broker.cert_pem.as_bytes()))
        .map_err(|e| cfg(&e))?;
    let key = release_key(&endpoint, Arc::new(simulated), DEMO_RESOURCE, &source).await?;
    broker.shutdown().await;
    let (config, registry) = (config.clone(), registry.clone());
    blocking(move || load_one(&source, &key, &[publisher], &config, &registry, &device)).await
}

/// The demo model's resource path at the embedded broker.
const DEMO_RESOURCE: &str = "default/models/demo";

fn load_one(
    sealed_path: &Path,
    key: &DataKey,
    trusted: &[PublisherKey],
    config: &ServeConfig,
    registry: &Registry,
    device: &candle_core::Device,
) -> Result<(), ServerError> {
    let path = sealed_path.display().to_string();
    let model_err = |e| ServerError::Model {
        path: path.clone(),
        source: e,
    };
    let engine_err = |e| ServerError::Engine {
        path: path.clone(),
        source: e,
    };
    let (manifest, publisher_key_id, mlp) = if device.is_cuda() {
        load_to_cuda(sealed_path, trusted, config, key, device)?
    } else {
        let unsealed = sealed::unseal_file(sealed_path, trusted, key, config.verify_digests)
            .map_err(model_err)?;
        let mlp = Mlp::from_safetensors(
            &unsealed.manifest.model,
            unsealed.weights.secret_bytes(),
            device,
        )
        .map_err(engine_err)?;
        drop(unsealed.weights);
        (unsealed.manifest, unsealed.publisher_key_id, mlp)
    };
    let provenance = Provenance {
        weights_sha256: manifest.weights.sha256.clone(),
        publisher_key_id,
    };
    let id = manifest.model.id.clone();
    let mut model_config = manifest.model;
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
        .insert_with(model_config, provenance, mlp, config.batch, options)
        .map_err(|e| ServerError::Engine { path, source: e })?;
    Ok(())
}

/// Verifies a sealed model and decrypts it straight into CUDA memory (`config.gpu_load`):
/// no plaintext copy of the weights is made in ordinary host memory.
#[cfg(feature = "cuda")]
fn load_to_cuda(
    sealed_path: &Path,
    trusted: &[PublisherKey],
    config: &ServeConfig,
    key: &DataKey,
    device: &candle_core::Device,
) -> Result<(sealed::Manifest, String, Mlp), ServerError> {
    let path = sealed_path.display().to_string();
    let model_err = |e| ServerError::Model {
        path: path.clone(),
        source: e,
    };
    let candle_core::Device::Cuda(cuda) = device else {
        return Err(ServerError::Config(
            "load_to_cuda needs a CUDA device".into(),
        ));
    };
    let verified = sealed::SealedFile::read(sealed_path)
        .and_then(|f| f.verify(trusted))
        .map_err(model_err)?;
    if config.verify_digests {
        // The plaintext digest would need the plaintext on the host; on the device paths the
        // signed ciphertext digest and every chunk's GCM tag authenticate the weights.
        verified
            .file()
            .verify_ciphertext_digest()
            .map_err(model_err)?;
    }
    let plain = crate::gpu::loader::load_sealed(&verified, key, cuda, config.gpu_load)
        .map_err(|e| ServerError::Config(format!("{path}: loading onto {device:?}: {e}")))?;
    let manifest = verified.manifest().clone();
    let mlp =
        crate::gpu::loader::mlp_from_device(&manifest.model, &plain, device).map_err(|e| {
            ServerError::Engine {
                path: path.clone(),
                source: e,
            }
        })?;
    drop(plain);
    tracing::info!(model = %manifest.model.id, path = ?config.gpu_load, fused = mlp.uses_fused_kernel(), "model decrypted into CUDA memory");
    Ok((manifest, verified.publisher().key_id(), mlp))
}

#[cfg(not(feature = "cuda"))]
fn load_to_cuda(
    _sealed_path: &Path,
    _trusted: &[PublisherKey],
    _config: &ServeConfig,
    _key: &DataKey,
    _device: &candle_core::Device,
) -> Result<(sealed::Manifest, String, Mlp), ServerError> {
    Err(ServerError::Config(
        "a CUDA device needs a binary built with --features cuda".into(),
    ))
}

/// Opens `<data-dir>/audit/` with a fresh checkpoint-signing key made in memory (the
/// attested key, once evidence binds it) and the persistent input-HMAC key.
fn open_audit(
    data_dir: &Path,
    settings: &AuditSettings,
) -> Result<crate::audit::AuditLog, ServerError> {
    let cfg = |e: crate::audit::AuditError| ServerError::Config(e.to_string());
    let hmac_key = crate::audit::load_or_create_key(&data_dir.join("audit.key")).map_err(cfg)?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| ServerError::Config(e.to_string()))?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let log = crate::audit::AuditLog::open(
        &data_dir.join("audit"),
        signing,
        *hmac_key,
        crate::audit::AuditConfig {
            segment_records: settings.segment_records,
            group_linger: std::time::Duration::from_millis(settings.group_commit_ms),
            retention: settings
                .retention_days
                .map(|d| std::time::Duration::from_secs_f64(d * 86_400.0)),
            ..crate::audit::AuditConfig::default()
        },
    )
    .map_err(cfg)?;
    tracing::info!(
        public_key = log.public_key_hex(),
        "audit log open; checkpoints signed by this key"
    );
    log.append(crate::audit::Event::Admin {
        actor: "server".into(),
        action: "start".into(),
        detail: format!("checkpoint key {}", log.public_key_hex()),
    });
    Ok(log)
}

/// On the first start in demo mode (no key exists yet), creates the `demo` principal's key.
///
/// In demo mode only, the key is also written to `<data-dir>/demo/api-key` (0600, in a 0700
/// directory), as Jupyter keeps its token in a runtime file, so that `confidant predict` on
/// the same machine works with no flags. Outside demo mode keys exist only as hashes.
fn demo_key(guard: &Guard, data_dir: &Path) -> Result<Option<ApiKeySecret>, ServerError> {
    let storage = |e: crate::storage::StorageError| ServerError::Config(e.to_string());
    if !guard.keys().is_empty().map_err(storage)? {
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
        .map_err(|e| ServerError::Config(format!("demo key: {e}")))?;
    let dir = data_dir.join("demo");
    create_private_dir(&dir)?;
    write_file(&dir.join("api-key"), secret.secret_str().as_bytes(), 0o600)?;
    tracing::info!("created the demo principal's API key (shown once on stdout)");
    Ok(Some(secret))
}

/// Moves admin events queued by commands running beside the server into the audit chain.
fn drain_outbox(db: &Database, audit: &crate::audit::AuditLog) {
    match crate::audit::outbox::drain(db, audit) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            events = n,
            "admin events moved from the outbox to the audit log"
        ),
        Err(e) => tracing::error!(error = %e, "cannot move admin events into the audit log"),
    }
}

/// Seals the embedded demo model into `<data-dir>/demo/` on first start (with its own
/// publisher key) and registers its data key with the embedded broker (never on disk in
/// the clear); returns the sealed file and the publisher's public key.
fn prepare_demo(
    data_dir: &Path,
    broker: &crate::keys::RunningBroker,
) -> Result<(PathBuf, PublisherKey), ServerError> {
    let dir = data_dir.join("demo");
    create_private_dir(&dir)?;
    let sealed_path = dir.join("demo.sealed");
    let key_path = dir.join("publisher.key");
    let demo_err = |e| ServerError::Model {
        path: dir.display().to_string(),
        source: e,
    };
    let registered = broker
        .has_resource(DEMO_RESOURCE)
        .map_err(|e| ServerError::Config(format!("embedded broker: {e}")))?;
    if sealed_path.exists() && key_path.exists() && registered {
        let signing = PublisherSigningKey::from_pem_file(&key_path).map_err(demo_err)?;
        return Ok((sealed_path, signing.public_key()));
    }
    let config =
        crate::demo::config().map_err(|e| ServerError::Config(format!("demo model: {e}")))?;
    let signing = PublisherSigningKey::generate().map_err(demo_err)?;
    let sealed = sealed::seal(
        &config,
        crate::demo::WEIGHTS,
        &signing,
        &SealOptions {
            key_resource: Some(DEMO_RESOURCE.to_owned()),
            ..SealOptions::default()
        },
    )
    .map_err(demo_err)?;
    broker
        .put_resource(DEMO_RESOURCE, sealed.data_key.secret_bytes())
        .map_err(|e| ServerError::Config(format!("embedded broker: {e}")))?;
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

/// Creates a directory (and parents) readable only by its owner.
pub fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::Io {
            what: dir.display().to_string(),
            source,
        })
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ServerError::Io {
        what: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
