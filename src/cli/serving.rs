//! `confidant serve`: flags and config file to a validated `ServeConfig`, then the server.

use super::*;

pub(super) fn build_serve_config(a: ServeArgs) -> Result<ServeConfig> {
    let file = match &a.config {
        Some(p) => ServeFile::read(p)?,
        None => ServeFile::default(),
    };
    let listen_text = a
        .listen
        .or(file.listen)
        .unwrap_or_else(|| server::DEFAULT_LISTEN.to_string());
    let listen = listen_text.parse().with_context(|| {
        format!("--listen {listen_text:?}: expected HOST:PORT, e.g. 127.0.0.1:50051")
    })?;
    let broker = match a.broker {
        Some(url) => Some(server::BrokerSettings {
            url,
            ca: a.broker_ca,
        }),
        None => file.broker,
    };
    let keys_from_broker = broker.is_some() && a.key_files.is_empty();
    if a.models.len() != a.key_files.len() && !keys_from_broker {
        bail!(
            "each --model needs a --key-file, or none with --broker (got {} --model and {} \
             --key-file)",
            a.models.len(),
            a.key_files.len()
        );
    }
    let mut models = file.models;
    let mut key_files = a.key_files.into_iter();
    models.extend(a.models.into_iter().map(|sealed| ModelSource {
        sealed,
        key_file: key_files.next(),
    }));
    let mut publisher_keys = file.publisher_keys;
    publisher_keys.extend(a.publisher_keys);
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => file.tls,
    };
    let mut batch = file.batch.unwrap_or_default();
    if let Some(v) = a.max_batch {
        batch.max_batch = v;
    }
    if let Some(v) = a.max_wait_us {
        batch.max_wait_us = v;
    }
    if let Some(v) = a.queue_capacity {
        batch.queue_capacity = v;
    }
    let metrics_text = a
        .metrics_listen
        .or(file.metrics_listen)
        .unwrap_or_else(|| server::DEFAULT_METRICS_LISTEN.to_string());
    let metrics_listen = if metrics_text == "off" {
        None
    } else {
        Some(metrics_text.parse().with_context(|| {
            format!(
                "--metrics-listen {metrics_text:?}: expected HOST:PORT (e.g. 127.0.0.1:8002) or off"
            )
        })?)
    };
    let http_text = a
        .http_listen
        .or(file.http_listen)
        .unwrap_or_else(|| server::DEFAULT_HTTP_LISTEN.to_string());
    let http_listen = if http_text == "off" {
        None
    } else {
        Some(http_text.parse().with_context(|| {
            format!("--http-listen {http_text:?}: expected HOST:PORT (e.g. 127.0.0.1:50052) or off")
        })?)
    };
    let config = ServeConfig {
        listen,
        metrics_listen,
        http_listen,
        client_ca: a.client_ca.or(file.client_ca),
        data_dir: resolve_data_dir(a.data_dir, file.data_dir),
        tls,
        models,
        broker,
        publisher_keys,
        batch,
        max_message_bytes: a
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(server::DEFAULT_MAX_MESSAGE_BYTES),
        max_rows_per_request: a
            .max_rows
            .or(file.max_rows_per_request)
            .unwrap_or(server::DEFAULT_MAX_ROWS),
        drain_secs: a
            .drain_secs
            .or(file.drain_secs)
            .unwrap_or(server::DEFAULT_DRAIN_SECS),
        verify_digests: !a.skip_digest_check && file.verify_digests.unwrap_or(true),
        rate: {
            let mut rate = file.rate.unwrap_or_default();
            rate.rpm = a.rpm.or(rate.rpm);
            rate.rpd = a.rpd.or(rate.rpd);
            if rate.rpm == Some(0) || rate.rpd == Some(0) {
                bail!("--rpm and --rpd must be at least 1 (omit them for no limit)");
            }
            rate
        },
        screening: file.screening,
        privacy: file.privacy,
        audit: file.audit,
        deployment: a
            .deployment
            .or(file.deployment)
            .unwrap_or_else(|| confidant::state::DEFAULT_DEPLOYMENT.to_string()),
        explain: file.explain,
        without_freshness_anchor: a.without_freshness_anchor
            || file.without_freshness_anchor.unwrap_or(false),
        tee: a.tee,
        text: file.text,
        receipts: server::ReceiptSettings {
            require: a.require_receipts || file.receipts.require,
        },
        unguarded_benchmark_baseline: false,
        device: a.device,
        gpu_load: a.gpu_load,
        idle_workers: None,
    };
    config.validate()?;
    Ok(config)
}

use args::ServeArgs;

pub(super) async fn serve(
    a: ServeArgs,
    idle_workers: Option<std::sync::Arc<confidant::audit::IdleWorkers>>,
) -> Result<()> {
    let config = ServeConfig {
        idle_workers,
        ..build_serve_config(a)?
    };
    if config.models.is_empty() {
        // In JSON mode stderr carries only JSON lines; the warning below still goes out.
        if LOG_FORMAT.get() != Some(&LogFormat::Json) {
            eprintln!("{}", DEMO_WARNING);
        }
        tracing::warn!(
            "demo mode: NOT CONFIDENTIAL (simulated TEE, embedded key broker whose master key \
             is on local disk)"
        );
    }
    let cert_path = match &config.tls {
        Some(t) => t.cert.clone(),
        None => config.cert_path(),
    };
    server::run(config, shutdown_signal(), move |running| {
        if let Some(key) = &running.demo_api_key {
            println!(
                "confidant: demo API key (shown once; only its hash is stored): {}",
                key.secret_str()
            );
            println!(
                "confidant: try: confidant predict --api-key {} --model demo --input-csv \
                 tests/fixtures/breast_cancer_test.csv",
                key.secret_str()
            );
        }
        if let Some(m) = running.metrics_addr {
            println!("confidant: metrics on http://{m}/metrics");
        }
        if let Some(h) = running.http_addr {
            println!("confidant: embeddings API on https://{h}/v1");
        }
        println!(
            "confidant: serving on https://{} (TLS certificate: {})",
            running.addr,
            cert_path.display()
        );
    })
    .await?;
    Ok(())
}

pub(super) const DEMO_WARNING: &str = "\
╔══════════════════════════════════════════════════════════════════════════╗
║  WARNING: DEMO MODE. NOTHING HERE IS CONFIDENTIAL.                       ║
║  The demo model's data key is held by an in-process key broker and is    ║
║  released to a SIMULATED TEE after attestation: the whole chain runs,    ║
║  but the broker's master key sits in the data dir and the operator of    ║
║  this machine can read weights, inputs and outputs. For real use, run    ║
║  `confidant broker` apart and `serve --broker` inside a confidential VM. ║
╚══════════════════════════════════════════════════════════════════════════╝";

pub(super) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
