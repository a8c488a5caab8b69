//! The gRPC server: configuration, model loading, TLS, services and graceful shutdown.
//!
//! Start-up order matters for confidentiality: the process is hardened (no core dumps) before
//! any key or plaintext exists; the listener comes up with health NOT_SERVING; models are
//! verified, decrypted and loaded; only then does health turn SERVING and Predict answer.

pub mod attestation;
pub mod config;
pub mod error;
mod freshness;
pub mod inference;
mod models;
pub mod privacy;
mod state;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::files::{create_private_dir, write_file};
use crate::pipeline::Pipeline;
use crate::tls::{self, TlsIdentity};
pub use config::{
    AuditSettings, BrokerSettings, DEFAULT_DATA_DIR, DEFAULT_DRAIN_SECS, DEFAULT_HTTP_LISTEN,
    DEFAULT_LISTEN, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_ROWS, DEFAULT_METRICS_LISTEN,
    ModelSource, PrivacySettings, ReceiptSettings, ServeConfig, ServeFile, TlsFiles,
};
pub use error::ServerError;
use inference::InferenceService;

use crate::engine::Registry;
use crate::guard::{ApiKeySecret, Guard};
use crate::oip::OipService;
use crate::proto::confidant::v1::inference_server::InferenceServer;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::storage::Database;

/// What a server reports once it is ready.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound `/metrics` address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound embeddings API (HTTPS) address, if enabled.
    pub http_addr: Option<SocketAddr>,
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
    crate::files::restrict_dir(&config.data_dir)?;
    // The state key first: nothing persisted is opened without it.
    // On CUDA every attestation also carries the GPUs' evidence (fail closed, tee::gpu).
    let attester: Arc<dyn crate::tee::Attester> = crate::tee::gpu::for_devices(
        Arc::from(crate::tee::select(config.tee)?),
        crate::gpu::serving_ordinals(config.device),
    );
    let state_key = state::obtain(&config, Arc::clone(&attester)).await?;
    let db = Arc::new(Database::open_encrypted_in(
        &config.data_dir,
        &state_key.subkey(crate::state::Subkey::Database),
    )?);
    // Read before anything of this start writes the database: the freshness anchor compares
    // the state as found.
    let db_version = db.state_version()?;
    let guard = Arc::new(Guard::new(Arc::clone(&db), config.rate));
    let audit = Arc::new(open_audit(&config.data_dir, &config.audit, &state_key)?);
    // Receipts' records are written on this runtime: no thread switch per group.
    audit.write_receipts_on_runtime(config.idle_workers.as_ref());
    let pseudonym_key = state_key.subkey(crate::state::Subkey::Pseudonyms);
    let checkpoint_key = state_key.checkpoint_key();
    let key_source = state_key.source();
    drop(state_key);
    let gate = Arc::new(crate::state::anchor::Gate::default());
    watch_integrity(&audit, &gate);

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
    let http_listener = match config.http_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|source| ServerError::Io {
                    what: format!(
                        "listen for the embeddings API on {at} (set --http-listen, or off)"
                    ),
                    source,
                })?,
        ),
        None => None,
    };
    let http_addr = match &http_listener {
        Some(l) => Some(l.local_addr().map_err(|source| ServerError::Io {
            what: "embeddings API local address".into(),
            source,
        })?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| ServerError::Io {
            what: "metrics local address".into(),
            source,
        })?),
        None => None,
    };

    let identity = match &config.tls {
        Some(files) => TlsIdentity::from_files(&files.cert, &files.key)?,
        None => {
            let id = TlsIdentity::self_signed(&tls::default_names(&addr))?;
            let cert_path = config.cert_path();
            create_private_dir(cert_path.parent().unwrap_or(&config.data_dir))?;
            write_file(&cert_path, id.cert_pem.as_bytes(), 0o600)?;
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
            .ok_or_else(|| tls::TlsError::Certificate("no certificate in the TLS identity".into()))?
            .map_err(|e| tls::TlsError::Certificate(format!("PEM: {e}")))?
    };
    let spki = tls::spki_sha256(&leaf_der)?;
    if identity.origin() == tls::KeyOrigin::InProcess {
        tracing::info!(
            attester = %attester.kind(),
            tls_spki_sha256 = %hex::encode(spki),
            "attestation: GetEvidence binds the TLS key"
        );
    } else {
        tracing::warn!(
            "attestation: GetEvidence is refused, since the TLS key was given by the operator \
             (--tls-cert/--tls-key or [tls]) rather than made inside the TEE"
        );
    }
    // The receipt key: made here, bound by evidence made now (whatever the TLS key's origin:
    // this key never leaves the process).
    let receipt_signer = match crate::receipt::ReceiptSigner::new(attester.as_ref()) {
        Ok(s) => {
            tracing::info!(
                attester = %attester.kind(),
                receipt_key = %hex::encode(s.public_key()),
                evidence_sha256 = %hex::encode(s.evidence_sha256()),
                required = config.receipts.require,
                "receipts: signed by a key made at start, bound by its evidence \
                 (Attestation.GetReceiptEvidence)"
            );
            let s = Arc::new(s);
            s.sign_on_runtime();
            if s.make_nonces_ahead() {
                tracing::debug!(
                    "receipts: signing nonces are made ahead, while a CPU is idle (SCHED_IDLE)"
                );
            }
            let counted = Arc::clone(&s);
            metrics.receipts_from(move || {
                let c = counted.counts();
                crate::metrics::ReceiptSeries {
                    receipts: c.receipts,
                    signatures_nonce_ahead: c.groups_nonce_ahead,
                    signatures_whole: c.groups_whole,
                }
            });
            Ok(s)
        }
        Err(e) if config.receipts.require => {
            return Err(ServerError::Config(format!(
                "[receipts] require is set, but no receipt key could be made: {e}"
            )));
        }
        Err(e) => {
            tracing::warn!(error = %e, "receipts: none can be signed; requests asking for one are refused");
            Err(e.to_string())
        }
    };
    let attestation_service =
        crate::proto::confidant::v1::attestation_server::AttestationServer::new(
            attestation::AttestationService::new(Arc::clone(&attester), spki, identity.origin())
                .with_receipts(receipt_signer.clone()),
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
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    // The pre-v1 name too, which grpcurl before 1.8.8 and other older tools ask for.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let pipeline = Pipeline::new(
        registry.clone(),
        Arc::clone(&guard),
        Some(Arc::clone(&audit)),
        Arc::clone(&ready),
        config.max_rows_per_request,
    )
    .with_metrics(Arc::clone(&metrics))
    .with_freshness_gate(Arc::clone(&gate))
    .with_explain_limits(config.explain)
    .with_text_limits(config.text)
    .with_receipts(receipt_signer, config.receipts.require)
    .with_privacy(crate::privacy::budget::Budgets::new(
        Arc::clone(&db),
        config.privacy.budget,
    ))?
    .with_subjects(crate::privacy::subjects::Subjects::new(
        Arc::clone(&db),
        pseudonym_key,
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

    let client_ca = match &config.client_ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|source| ServerError::Io {
                what: format!("client CA {}", ca.display()),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(tls::TlsError::NotPem {
                    path: ca.clone(),
                    expected: "certificate (client CA)",
                }
                .into());
            }
            // Optional: clients without a certificate still authenticate by API key.
            tracing::info!(client_ca = %ca.display(), "mutual TLS enabled");
            Some(pem)
        }
        None => None,
    };
    let grpc_tls = Arc::new(tls::grpc::server_config(&identity, client_ca.as_deref())?);
    // Both ports' connections: their tasks are not calls (see `receipts_serving` below).
    let open_connections = tls::OpenConnections::default();
    // The OpenAI-compatible door: the same pipeline, on the same TLS identity.
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = http_listener {
        let tls = crate::openai::tls_config(&identity.cert_pem, &identity.key_pem)?;
        // A body holds the texts JSON-escaped: room for the largest request at 6 bytes a
        // byte (`\u00XX`) and the fields around it.
        let limit = config.text.max_request_bytes.saturating_mul(6) + (64 << 10);
        let app = crate::openai::router(pipeline.clone(), limit);
        tokio::spawn(crate::openai::serve(
            listener,
            tls,
            app,
            http_stop_rx,
            open_connections.clone(),
        ));
    }
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        .add_service(privacy_service)
        .add_service(attestation_service)
        .add_service(oip);
    drop(identity);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = tls::grpc::incoming(listener, grpc_tls, &open_connections);
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
    // Freshness first, before anything of this start writes the database.
    let boot = tokio::select! {
        r = freshness::boot(&config, checkpoint_key, key_source, &audit, db_version, &gate) => Some(r),
        _ = shutdown_seen.wait_for(|s| *s) => None,
    };
    let (anchor_stop_tx, anchor_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut anchor_task = None;
    let mut outbox: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )> = None;
    let mut demo_api_key = None;
    let loaded = match boot {
        None => None,
        Some(Err(e)) => Some(Err(e)),
        Some(Ok(freshness::Boot::RolledBack)) => {
            // Listening, NOT_SERVING, every request refused naming the rollback.
            let _ = shutdown_seen.wait_for(|s| *s).await;
            None
        }
        Some(Ok(boot)) => {
            if let freshness::Boot::Fresh(anchorer) = boot {
                anchor_task = Some(anchorer.spawn(
                    Arc::clone(&audit),
                    Arc::clone(&db),
                    Arc::clone(&gate),
                    anchor_stop_rx,
                ));
            }
            match start_writers(&config, &guard, &db, &audit) {
                Ok((key, o)) => {
                    demo_api_key = key;
                    outbox = Some(o);
                    let load = models::load_models(&config, &registry, Arc::clone(&attester));
                    tokio::select! {
                        r = load => Some(r),
                        _ = shutdown_seen.wait_for(|s| *s) => None,
                    }
                }
                Err(e) => Some(Err(e)),
            }
        }
    };
    let stop_outbox = |outbox: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>| async move {
        if let Some((tx, task)) = outbox {
            let _ = tx.send(());
            let _ = task.await;
        }
    };
    match loaded {
        Some(Ok(())) => {
            // Every task of the server's own runs now: what the runtime runs beyond them and
            // the connections' are calls, for which receipts' groups are gathered.
            let open = open_connections.clone();
            audit.receipts_serving(move || open.count());
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
                    model = %m.id(),
                    version = %m.version(),
                    weights_sha256 = %m.provenance().weights_sha256,
                    screening = m.screening().map_or("off", |s| s.action.as_str()),
                    "model ready"
                );
            }
            on_ready(&Running {
                addr,
                metrics_addr,
                http_addr,
                demo_api_key,
            });
            let _ = shutdown_seen.wait_for(|s| *s).await;
        }
        Some(Err(e)) => {
            let _ = stop_tx.send(());
            let _ = http_stop_tx.send(());
            let _ = metrics_stop_tx.send(());
            stop_outbox(outbox).await;
            let _ = drain(serve, config.drain_secs).await;
            audit.close();
            let _ = anchor_stop_tx.send(());
            if let Some(t) = anchor_task {
                let _ = t.await;
            }
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
    let _ = http_stop_tx.send(());
    let _ = metrics_stop_tx.send(());
    stop_outbox(outbox).await;
    let result = drain(serve, config.drain_secs)
        .await
        .map_err(|e| ServerError::Task {
            what: "server",
            reason: e.to_string(),
        })?;
    registry.clear();
    guard.limiter().release_leases();
    audit.append(crate::audit::Event::Admin {
        actor: "server".into(),
        action: "stop".into(),
        detail: String::new(),
    });
    audit.close();
    // The final checkpoint is on disk: anchor it and give the deployment back.
    let _ = anchor_stop_tx.send(());
    if let Some(t) = anchor_task {
        let _ = t.await;
    }
    tracing::info!("stopped; model memory zeroized, audit log checkpointed");
    result.map_err(ServerError::from)
}

/// Waits up to `secs` for the gRPC server's graceful stop (signalled already), then drops the
/// connections still open. The graceful stop waits for every connection to end, and an HTTP/2
/// connection ends only once its client acknowledges the GOAWAY: a client that stops reading
/// would otherwise hold the stop, and with it the final audit checkpoint and the broker's
/// lease, for as long as it likes. A request still in flight on a dropped connection gets no
/// answer; one that reaches the audit log after it closes is refused there.
async fn drain<E>(
    mut serve: tokio::task::JoinHandle<Result<(), E>>,
    secs: u64,
) -> Result<Result<(), E>, tokio::task::JoinError> {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), &mut serve).await {
        Ok(joined) => joined,
        Err(_) => {
            tracing::warn!(
                drain_secs = secs,
                "connections still open at the drain deadline are dropped (their clients did not \
                 end them); any request in flight on them gets no answer"
            );
            // The connections are tasks of their own: aborting the server's accept loop
            // leaves them to the runtime's end, and whatever they still do meets a cleared
            // registry and a closed audit log.
            serve.abort();
            let _ = serve.await;
            Ok(Ok(()))
        }
    }
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

/// Opens `<data-dir>/audit/` with the audit keys of the state key: the checkpoint signing
/// key (stable per deployment), the input-HMAC key and the record encryption key.
fn open_audit(
    data_dir: &Path,
    settings: &AuditSettings,
    state_key: &crate::state::StateKey,
) -> Result<crate::audit::AuditLog, ServerError> {
    let log = crate::audit::AuditLog::open(
        &data_dir.join("audit"),
        crate::audit::AuditKeys::from_state(state_key),
        crate::audit::AuditConfig {
            segment_records: settings.segment_records,
            group_linger: std::time::Duration::from_millis(settings.group_commit_ms),
            checkpoint_every: settings.checkpoint_records,
            checkpoint_interval: std::time::Duration::from_millis(settings.checkpoint_ms),
            retention: settings
                .retention_days
                .map(|d| std::time::Duration::from_secs_f64(d * 86_400.0)),
            max_bytes: Some(settings.max_bytes),
            journal_bytes: (settings.journal_mib as usize) << 20,
            ..crate::audit::AuditConfig::default()
        },
    )?;
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

/// A start verifies the audit log's tail and the rest in the background: if that check
/// finds damage, every request is refused, naming it (as a damaged log refused to open).
fn watch_integrity(audit: &crate::audit::AuditLog, gate: &Arc<crate::state::anchor::Gate>) {
    let mut rx = audit.integrity();
    let gate = Arc::clone(gate);
    tokio::spawn(async move {
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                crate::audit::Integrity::Damaged(problem) => {
                    gate.close(
                        crate::state::anchor::GateReason::Damaged,
                        format!("{problem}; requests are refused until it is repaired"),
                    );
                    return;
                }
                crate::audit::Integrity::Verified => return,
                crate::audit::Integrity::Verifying => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The first writes of a start, once the state is known to be fresh: the demo's API key (on
/// its first start; only once the port is ours, so that a key shown once is not lost to a
/// failed start), and the outbox of admin events that `confidant keys …` queued while no
/// server ran, drained now and every second (and once more at shutdown).
#[allow(clippy::type_complexity)]
fn start_writers(
    config: &ServeConfig,
    guard: &Arc<Guard>,
    db: &Arc<Database>,
    audit: &Arc<crate::audit::AuditLog>,
) -> Result<
    (
        Option<ApiKeySecret>,
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    ),
    ServerError,
> {
    let demo_api_key = if config.models.is_empty() {
        crate::demo::create_demo_api_key(guard, &config.data_dir)?
    } else {
        None
    };
    drain_outbox(db, audit);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (db, audit) = (Arc::clone(db), Arc::clone(audit));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stop_rx => true,
                };
                let (db, audit) = (Arc::clone(&db), Arc::clone(&audit));
                let _ = tokio::task::spawn_blocking(move || drain_outbox(&db, &audit)).await;
                if stop {
                    return;
                }
            }
        })
    };
    Ok((demo_api_key, (stop_tx, task)))
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
