//! The commands.

pub mod anonymize;
pub mod args;
pub mod attest;
pub mod bench;
pub mod broker;
pub mod privacy;
pub mod text;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use confidant::client::Client;
use confidant::engine::ModelConfig;
use confidant::guard::{KeyStore, NewKey, RevokeSelector, Scope};
use confidant::sealed::{
    self, DataKey, PublisherKey, PublisherSigningKey, SealOptions, SealedFile,
};
use confidant::server::{self, ModelSource, ServeConfig, ServeFile, TlsFiles};
use confidant::storage::Database;
use confidant::unix_now;
use zeroize::Zeroizing;

use args::{Command, LogFormat};

/// Sets up `tracing` on stderr. `RUST_LOG` overrides the default level (info).
pub fn init_logging(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The log format chosen at start.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Runs one command.
pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Keygen(a) => keygen(&a),
        Command::Seal(a) => seal(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Serve(a) => serve(a).await,
        Command::Predict(a) => predict(a).await,
        Command::Explain(a) => explain(a).await,
        Command::Models(a) => models(a).await,
        Command::Keys(a) => keys(a).await,
        Command::Audit(a) => audit(a).await,
        Command::Broker(a) => broker::run(a, shutdown_signal()).await,
        Command::Anonymize(a) => anonymize::anonymize(a),
        Command::Attest(a) => match a.command {
            attest::AttestCommand::Fetch(f) => attest::fetch(f).await,
            _ => attest::run(a),
        },
        Command::Privacy(a) => match a.command {
            privacy::PrivacyCommand::Budget(b) => privacy_budget(b).await,
            privacy::PrivacyCommand::Consent(c) => privacy_consent(c).await,
            privacy::PrivacyCommand::Forget(f) => privacy_forget(f).await,
            _ => privacy::run(&a),
        },
        Command::Bench(a) => bench::run(a).await,
        Command::Train(a) => train::train(&a),
        Command::Evaluate(a) => train::evaluate(&a),
    }
}

async fn audit(a: args::AuditArgs) -> Result<()> {
    match a.command {
        args::AuditCommand::Verify(v) => audit_verify(&v),
        args::AuditCommand::Export(e) => audit_export(e).await,
    }
}

fn audit_verify(v: &args::AuditVerifyArgs) -> Result<()> {
    if !v.dir.is_dir() {
        bail!("{}: not a directory", v.dir.display());
    }
    let trusted = pubkeys(&v.pubkeys)?;
    let report = confidant::audit::verify_dir(&v.dir, &trusted);
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(f) = &report.first_failure {
        bail!(
            "audit log broken at {} line {}: {}",
            f.segment,
            f.line,
            f.problem
        );
    }
    if report.records == 0 {
        bail!("{}: no audit records", v.dir.display());
    }
    if report.uncovered > 0 && !v.allow_uncovered_tail {
        bail!(
            "{}: the last {} records are not covered by a signed checkpoint (a running \
             server's log: pass --allow-uncovered-tail; otherwise they may have been rewritten)",
            v.dir.display(),
            report.uncovered
        );
    }
    Ok(())
}

async fn audit_export(e: args::AuditExportArgs) -> Result<()> {
    if !e.dir.is_dir() {
        bail!("{}: not a directory", e.dir.display());
    }
    let trusted = pubkeys(&e.pubkeys)?;
    let state_key = match &e.state_key_file {
        Some(f) => confidant::state::StateKey::from_file(f)?,
        None => {
            let data = e
                .data_dir
                .clone()
                .or_else(|| e.dir.parent().map(Path::to_path_buf))
                .context("--data-dir: the audit directory has no parent")?;
            resolve_state_key(&data, &e.state, false).await?
        }
    };
    let mut opener = confidant::audit::seal::Opener::new(
        state_key.subkey(confidant::state::Subkey::AuditRecords),
    );
    drop(state_key);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = confidant::audit::export_dir(&e.dir, &trusted, &mut opener, &mut out)?;
    std::io::Write::flush(&mut out)?;
    if report.uncovered > 0 {
        tracing::warn!(
            records = report.uncovered,
            "the last records are not covered by a signed checkpoint"
        );
    }
    Ok(())
}

/// The deployment's state key for a command beside the server (see
/// [`args::StateSourceArgs`]). `create`: make the development key file when no source
/// exists yet (only `keys create` may start a data directory).
async fn resolve_state_key(
    data_dir: &Path,
    source: &args::StateSourceArgs,
    create: bool,
) -> Result<confidant::state::StateKey> {
    use confidant::state::{DEV_KEY_FILE, StateKey};
    let deployment = source
        .deployment
        .as_deref()
        .unwrap_or(confidant::state::DEFAULT_DEPLOYMENT);
    let resource = confidant::state::resource_path(deployment)?;
    if let Some(url) = &source.broker {
        let ca = source
            .broker_ca
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("--broker-ca {}", p.display())))
            .transpose()?;
        let endpoint = confidant::keys::BrokerEndpoint::new(url, ca.as_deref())?;
        let attester: std::sync::Arc<dyn confidant::tee::Attester> =
            std::sync::Arc::from(confidant::tee::detect()?);
        let bytes = confidant::keys::fetch_resource(&endpoint, attester, &resource).await?;
        return Ok(StateKey::from_bytes(
            &bytes,
            confidant::state::Source::Broker,
            &format!("broker resource {resource}"),
        )?);
    }
    if data_dir.join(DEV_KEY_FILE).exists() {
        return Ok(StateKey::dev_file(data_dir)?);
    }
    if data_dir.join("broker").is_dir() {
        return Ok(confidant::demo::obtain_state_key(data_dir, &resource).await?);
    }
    if create {
        eprintln!(
            "note: {} has no state key yet; created the development key file {DEV_KEY_FILE} \
             (a demo server adopts it; a server with --broker needs --broker here too)",
            data_dir.display()
        );
        return Ok(StateKey::dev_file(data_dir)?);
    }
    bail!(
        "{}: no state key: no {DEV_KEY_FILE} and no demo broker; the database and audit log \
         are encrypted under the deployment's state key (pass --broker URL --broker-ca CA to \
         obtain it by attestation, inside the attested VM)",
        data_dir.display()
    )
}

fn pubkeys(args: &[String]) -> Result<Vec<[u8; 32]>> {
    let mut trusted = Vec::new();
    for k in args {
        let text = if Path::new(k).is_file() {
            std::fs::read_to_string(k).with_context(|| format!("--pubkey {k}"))?
        } else {
            k.clone()
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
            anyhow::anyhow!("--pubkey {k}: expected 64 hex digits (a raw Ed25519 key)")
        })?;
        trusted.push(key);
    }
    Ok(trusted)
}

async fn open_keys(
    data_dir: Option<PathBuf>,
    state: &args::StateSourceArgs,
    create: bool,
) -> Result<KeyStore> {
    let dir = resolve_data_dir(data_dir, None);
    if create && !dir.exists() {
        confidant::files::create_private_dir(&dir)?;
    }
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist (pass --data-dir, or start the server once)",
            dir.display()
        );
    }
    let key = resolve_state_key(&dir, state, create).await?;
    let db = Database::open_encrypted_in(&dir, &key.subkey(confidant::state::Subkey::Database))?;
    Ok(KeyStore::new(std::sync::Arc::new(db)))
}

async fn keys(a: args::KeysArgs) -> Result<()> {
    match a.command {
        args::KeysCommand::Create(c) => {
            let scopes = c
                .scopes
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(Scope::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let purposes = c
                .purposes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let store = open_keys(c.data_dir, &c.state, true).await?;
            let new = NewKey {
                principal: c.principal,
                scopes,
                purposes,
                rpm: c.rpm,
                rpd: c.rpd,
            };
            if let Some(path) = &c.client_cert {
                let der = read_leaf_cert_der(path)?;
                let record = store.create_client_cert(&new, &der, unix_now(), "cli")?;
                println!(
                    "{}",
                    serde_json::json!({
                        "principal": record.principal,
                        "key_id": record.key_id,
                        "kind": record.kind,
                        "scopes": record.scopes,
                        "purposes": record.purposes,
                        "rpm": record.rpm,
                        "rpd": record.rpd,
                    })
                );
                return Ok(());
            }
            let (record, secret) = store.create(&new, unix_now())?;
            println!(
                "{}",
                serde_json::json!({
                    "principal": record.principal,
                    "api_key": secret.secret_str(),
                    "key_id": record.key_id,
                    "scopes": record.scopes,
                    "purposes": record.purposes,
                    "rpm": record.rpm,
                    "rpd": record.rpd,
                })
            );
        }
        args::KeysCommand::List(c) => {
            let list = open_keys(c.data_dir, &c.state, false).await?.list()?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        args::KeysCommand::Revoke(c) => {
            let selector = match (c.key_id, c.principal) {
                (Some(id), _) => RevokeSelector::KeyId(id),
                (None, Some(p)) => RevokeSelector::Principal(p),
                (None, None) => bail!("give --key-id or --principal"),
            };
            let ids = open_keys(c.data_dir, &c.state, false)
                .await?
                .revoke(&selector, unix_now())?;
            println!("{}", serde_json::json!({ "revoked": ids }));
        }
    }
    Ok(())
}

fn keygen(a: &args::KeygenArgs) -> Result<()> {
    confidant::files::create_private_dir(&a.out)?;
    let key_path = a.out.join("publisher.key");
    let pub_path = a.out.join("publisher.pub");
    for p in [&key_path, &pub_path] {
        refuse_overwrite(p, a.force)?;
    }
    let key = PublisherSigningKey::generate()?;
    confidant::files::write_file(&key_path, key.to_pem()?.as_bytes(), 0o600)?;
    confidant::files::write_file(&pub_path, key.public_key().to_pem().as_bytes(), 0o644)?;
    println!(
        "{}",
        serde_json::json!({
            "private_key": key_path,
            "public_key": pub_path,
            "key_id": key.public_key().key_id(),
        })
    );
    Ok(())
}

fn seal(a: &args::SealArgs) -> Result<()> {
    let config_bytes =
        std::fs::read(&a.config).with_context(|| format!("{}", a.config.display()))?;
    let weights_path = match (&a.weights, &a.hf_dir) {
        (Some(w), None) => w,
        (None, Some(dir)) => return text::seal_hf_dir(a, dir, &config_bytes),
        _ => bail!("give exactly one of --weights and --hf-dir"),
    };
    let config =
        ModelConfig::from_json(&config_bytes).with_context(|| format!("{}", a.config.display()))?;
    let weights = Zeroizing::new(
        std::fs::read(weights_path).with_context(|| format!("{}", weights_path.display()))?,
    );
    let summary = seal_model(
        &config,
        &weights,
        &SealTarget {
            signing_key: &a.signing_key,
            out: &a.out,
            key_out: &a.key_out,
            resource_path: a.resource_path.clone(),
            chunk_size: a.chunk_size,
            force: a.force,
        },
    )
    .with_context(|| {
        format!(
            "sealing {} with {}",
            weights_path.display(),
            a.config.display()
        )
    })?;
    println!("{summary}");
    Ok(())
}

/// Where and how [`seal_model`] writes a sealed model.
pub(crate) struct SealTarget<'a> {
    /// The publisher's private key (PEM).
    pub signing_key: &'a Path,
    /// The sealed file.
    pub out: &'a Path,
    /// The fresh data key (mode 0600).
    pub key_out: &'a Path,
    /// The key broker resource path, if not the default.
    pub resource_path: Option<String>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Overwrite existing files.
    pub force: bool,
}

/// Seals `weights` with `config` (the `confidant seal` path, shared with `train --seal`) and
/// returns the JSON summary that `seal` prints.
pub(crate) fn seal_model(
    config: &ModelConfig,
    weights: &[u8],
    target: &SealTarget<'_>,
) -> Result<serde_json::Value> {
    refuse_overwrite(target.out, target.force)?;
    refuse_overwrite(target.key_out, target.force)?;
    let signing = PublisherSigningKey::from_pem_file(target.signing_key)?;
    let options = SealOptions {
        chunk_size: target.chunk_size,
        key_resource: target.resource_path.clone(),
        ..SealOptions::default()
    };
    let sealed = sealed::seal(config, weights, &signing, &options)?;
    confidant::files::write_file(target.key_out, sealed.data_key.secret_bytes(), 0o600)?;
    confidant::files::write_file(target.out, &sealed.file, 0o644)?;
    Ok(serde_json::json!({
        "model": sealed.manifest.model.id,
        "version": sealed.manifest.model.version,
        "sealed": target.out,
        "key_out": target.key_out,
        "key_resource": sealed.manifest.encryption.key_resource,
        "weights_sha256": sealed.manifest.weights.sha256,
        "publisher_key_id": sealed.manifest.publisher.key_id,
    }))
}

fn inspect(a: &args::InspectArgs) -> Result<()> {
    // Any kind of model: an MLP (format 1) or a bundle such as a text encoder (format 2).
    let file = SealedFile::<confidant::engine::ModelSpec>::read_as(&a.sealed)
        .with_context(|| format!("{}", a.sealed.display()))?;
    let manifest: serde_json::Value = serde_json::from_slice(file.manifest_bytes())?;
    file.verify_ciphertext_digest()
        .with_context(|| format!("{}", a.sealed.display()))?;
    let mut checks = vec!["format", "manifest", "ciphertext_sha256"];
    let mut verdict = "signature not checked (pass --publisher-key)";
    if let Some(pk) = &a.publisher_key {
        let key = PublisherKey::from_pem_file(pk)?;
        let verified = file
            .verify(std::slice::from_ref(&key))
            .with_context(|| format!("{}", a.sealed.display()))?;
        checks.push("signature");
        verdict = "ok";
        if let Some(kf) = &a.key_file {
            let dek = DataKey::from_file(kf)?;
            let plain = verified
                .decrypt(&dek)
                .with_context(|| format!("{}", a.sealed.display()))?;
            verified
                .verify_plaintext_digest(&plain)
                .with_context(|| format!("{}", a.sealed.display()))?;
            checks.extend(["chunks_aead", "plaintext_sha256"]);
        }
    } else if a.key_file.is_some() {
        bail!(
            "--key-file needs --publisher-key: never decrypt a model whose signature is unchecked"
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "manifest": manifest,
            "checks_passed": checks,
            "verdict": verdict,
        }))?
    );
    Ok(())
}

fn resolve_data_dir(flag: Option<PathBuf>, file: Option<PathBuf>) -> PathBuf {
    flag.or(file)
        .unwrap_or_else(|| PathBuf::from(server::DEFAULT_DATA_DIR))
}

fn build_serve_config(a: ServeArgs) -> Result<ServeConfig> {
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
    let config = ServeConfig {
        listen,
        metrics_listen,
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
        unguarded_benchmark_baseline: false,
        device: a.device,
        gpu_load: a.gpu_load,
    };
    config.validate()?;
    Ok(config)
}

use args::ServeArgs;

async fn serve(a: ServeArgs) -> Result<()> {
    let config = build_serve_config(a)?;
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
        println!(
            "confidant: serving on https://{} (TLS certificate: {})",
            running.addr,
            cert_path.display()
        );
    })
    .await?;
    Ok(())
}

const DEMO_WARNING: &str = "\
╔══════════════════════════════════════════════════════════════════════════╗
║  WARNING: DEMO MODE. NOTHING HERE IS CONFIDENTIAL.                       ║
║  The demo model's data key is held by an in-process key broker and is    ║
║  released to a SIMULATED TEE after attestation: the whole chain runs,    ║
║  but the broker's master key sits in the data dir and the operator of    ║
║  this machine can read weights, inputs and outputs. For real use, run    ║
║  `confidant broker` apart and `serve --broker` inside a confidential VM. ║
╚══════════════════════════════════════════════════════════════════════════╝";

async fn shutdown_signal() {
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

/// The demo key that a server in demo mode keeps in `<data-dir>/demo/api-key`, if present.
pub(crate) fn demo_api_key(data_dir: Option<&Path>) -> Option<String> {
    let dir = data_dir.map_or_else(
        || PathBuf::from(server::DEFAULT_DATA_DIR),
        Path::to_path_buf,
    );
    let path = dir.join("demo").join("api-key");
    let key = std::fs::read_to_string(&path).ok()?.trim().to_string();
    if key.is_empty() {
        return None;
    }
    eprintln!(
        "note: no --api-key given; using the demo key from {}",
        path.display()
    );
    Some(key)
}

/// The first certificate of a PEM file, as DER.
fn read_leaf_cert_der(path: &Path) -> Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--client-cert {}: cannot read", path.display()))?
        .next()
        .with_context(|| {
            format!(
                "--client-cert {}: no PEM certificate in the file",
                path.display()
            )
        })?
        .with_context(|| format!("--client-cert {}: malformed PEM", path.display()))?;
    Ok(first.to_vec())
}

struct ConnectOpts<'a> {
    addr: &'a str,
    /// A client attestation policy: trust from evidence instead of a CA.
    policy: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_identity: Option<(PathBuf, PathBuf)>,
    data_dir: Option<PathBuf>,
    api_key: Option<&'a str>,
    purpose: Option<&'a str>,
}

async fn connect(o: ConnectOpts<'_>) -> Result<Client> {
    let ConnectOpts {
        addr,
        policy,
        tls_ca,
        tls_identity,
        data_dir,
        api_key,
        purpose,
    } = o;
    let data_dir_for_demo = data_dir.clone();
    if let Some(path) = policy {
        let policy = attest::read_policy(&path)?;
        let (mut client, verdict) =
            confidant::client::attested::connect_attested(addr, &policy).await?;
        eprintln!(
            "note: server attested ({:?}, measurement {}); the TLS key is bound to the evidence",
            verdict.tee,
            verdict.measurement.as_deref().unwrap_or("-")
        );
        if let Some(k) = api_key {
            client = client.with_api_key(k)?;
        } else if let Some(k) = demo_api_key(data_dir_for_demo.as_deref()) {
            client = client.with_api_key(&k)?;
        }
        if let Some(p) = purpose {
            client = client.with_purpose(p)?;
        }
        return Ok(client);
    }
    let ca_path = tls_ca.unwrap_or_else(|| {
        resolve_data_dir(data_dir, None)
            .join("tls")
            .join("cert.pem")
    });
    let ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "--tls-ca {}: cannot read the CA certificate",
            ca_path.display()
        )
    })?;
    if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "--tls-ca {}: no PEM certificate in the file",
            ca_path.display()
        );
    }
    let identity = match &tls_identity {
        Some((cert, key)) => Some((
            std::fs::read(cert)
                .with_context(|| format!("--tls-cert {}: cannot read", cert.display()))?,
            zeroize::Zeroizing::new(
                std::fs::read(key)
                    .with_context(|| format!("--tls-key {}: cannot read", key.display()))?,
            ),
        )),
        None => None,
    };
    let mut client = Client::connect_with_identity(
        addr,
        &ca,
        identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .await?;
    if let Some(k) = api_key {
        client = client.with_api_key(k)?;
    } else if identity.is_some() {
        // The certificate is the credential.
    } else if let Some(k) = demo_api_key(data_dir_for_demo.as_deref()) {
        client = client.with_api_key(&k)?;
    }
    if let Some(p) = purpose {
        client = client.with_purpose(p)?;
    }
    Ok(client)
}

/// Connects as `predict` and `explain` do, and reads their input rows (inline JSON, parsed
/// before connecting so a typo costs no round trip, or CSV matched to the model's features).
async fn connect_with_rows(a: args::PredictArgs) -> Result<(Client, Vec<Vec<f32>>, String)> {
    let inline = a.input.as_deref().map(parse_json_rows).transpose()?;
    let mut client = connect(ConnectOpts {
        addr: &a.addr,
        policy: a.policy.clone(),
        tls_ca: a.tls_ca,
        tls_identity: a.tls_cert.zip(a.tls_key),
        data_dir: a.data_dir,
        api_key: a.api_key.as_deref(),
        purpose: a.purpose.as_deref(),
    })
    .await?;
    if let Some(subject) = &a.subject_id {
        client = client.with_subject(subject)?;
    }
    let rows = match (inline, &a.input_csv) {
        (Some(rows), _) => rows,
        (None, Some(path)) => {
            let features = client
                .list_models()
                .await?
                .into_iter()
                .find(|m| m.id == a.model)
                .map(|m| m.features);
            read_csv_rows(path, features.as_deref())?
        }
        (None, None) => bail!("give --input or --input-csv"),
    };
    Ok((client, rows, a.model))
}

async fn predict(a: args::PredictArgs) -> Result<()> {
    let (mut client, rows, model) = connect_with_rows(a).await?;
    let p = client.predict(&model, &rows).await?;
    println!(
        "{}",
        serde_json::json!({
            "model": p.model,
            "model_version": p.model_version,
            "request_id": p.request_id,
            "outputs": p.outputs,
            "labels": p.labels,
            "flagged_rows": p.flagged_rows,
            "privacy": p.privacy.map(|r| serde_json::json!({
                "mechanism": r.mechanism,
                "epsilon_charged": r.epsilon_charged,
                "rho_charged": r.rho_charged,
                "epsilon_spent": r.epsilon_spent,
                "epsilon_remaining": r.epsilon_remaining,
                "epsilon_budget": r.epsilon_budget,
                "delta": r.delta,
                "window_end": r.window_end,
            })),
        })
    );
    Ok(())
}

async fn privacy_budget(a: privacy::BudgetArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let b = client.get_budget(&a.principal).await?;
    println!(
        "{}",
        serde_json::json!({
            "principal": b.principal,
            "epsilon_budget": b.epsilon_budget,
            "epsilon_spent": b.epsilon_spent,
            "epsilon_remaining": b.epsilon_remaining,
            "delta": b.delta,
            "window_start": b.window_start,
            "window_end": b.window_end,
        })
    );
    Ok(())
}

async fn connect_args(c: privacy::ConnArgs) -> Result<Client> {
    connect(ConnectOpts {
        addr: &c.addr,
        policy: None,
        tls_ca: c.tls_ca,
        tls_identity: c.tls_cert.zip(c.tls_key),
        data_dir: c.data_dir,
        api_key: c.api_key.as_deref(),
        purpose: None,
    })
    .await
}

async fn privacy_consent(a: privacy::ConsentArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let r = client
        .set_consent(&a.subject, &a.purpose, a.grant && !a.withdraw, &a.source)
        .await?;
    println!(
        "{}",
        serde_json::json!({
            "subject_pseudonym": r.subject_pseudonym,
            "purpose": r.purpose,
            "granted": r.granted,
            "at": r.at,
            "source": r.source,
        })
    );
    Ok(())
}

async fn privacy_forget(a: privacy::ForgetArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let r = client.forget(&a.subject).await?;
    println!(
        "{}",
        serde_json::json!({
            "existed": r.existed,
            "subject_pseudonym": r.subject_pseudonym,
            "consents_deleted": r.consents_deleted,
            "at": r.at,
            "statement": r.statement,
            "signature": r.signature,
            "public_key": r.public_key,
        })
    );
    Ok(())
}

async fn explain(e: args::ExplainArgs) -> Result<()> {
    let (mut client, rows, model) = connect_with_rows(e.predict).await?;
    let r = client.explain(&model, &rows, e.target).await?;
    let features = rows.first().map_or(0, Vec::len);
    let attributions: Vec<Vec<f32>> = r
        .attributions
        .map(|t| {
            t.values
                .chunks(features.max(1))
                .map(<[f32]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "model": r.model,
            "model_version": r.model_version,
            "request_id": r.request_id,
            "attributions": attributions,
            "targets": r.targets,
            "output_at_input": r.output_at_input,
            "output_at_baseline": r.output_at_baseline,
            "completeness_error": r.completeness_error,
            "baseline": r.baseline,
            "steps": r.steps,
            "flagged_rows": r.flagged_rows,
        })
    );
    Ok(())
}

async fn models(a: args::ModelsArgs) -> Result<()> {
    let mut client = connect(ConnectOpts {
        addr: &a.addr,
        policy: a.policy.clone(),
        tls_ca: a.tls_ca,
        tls_identity: a.tls_cert.zip(a.tls_key),
        data_dir: a.data_dir,
        api_key: a.api_key.as_deref(),
        purpose: a.purpose.as_deref(),
    })
    .await?;
    let list: Vec<serde_json::Value> = client
        .list_models()
        .await?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "version": m.version, "features": m.features,
                "feature_min": m.feature_min, "feature_max": m.feature_max,
                "labels": m.labels, "output": m.output,
                "weights_sha256": m.weights_sha256, "publisher_key_id": m.publisher_key_id,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(())
}

/// Parses `[[f, ...], ...]` or a single row `[f, ...]`.
fn parse_json_rows(text: &str) -> Result<Vec<Vec<f32>>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .context("--input: not valid JSON (expected [[f, f, ...], ...])")?;
    let serde_json::Value::Array(items) = value else {
        bail!("--input: expected a JSON array of rows");
    };
    let to_row = |r: usize, v: &serde_json::Value| -> Result<Vec<f32>> {
        let serde_json::Value::Array(cells) = v else {
            bail!("--input: row {r} is not an array");
        };
        cells
            .iter()
            .enumerate()
            .map(|(c, x)| {
                x.as_f64()
                    .map(|f| f as f32)
                    .with_context(|| format!("--input: row {r}, column {c} is not a number"))
            })
            .collect()
    };
    if items.iter().all(serde_json::Value::is_number) && !items.is_empty() {
        return Ok(vec![to_row(0, &serde_json::Value::Array(items))?]);
    }
    items
        .iter()
        .enumerate()
        .map(|(r, v)| to_row(r, v))
        .collect()
}

/// Reads CSV rows. A first line that does not parse as numbers is a header: its columns are
/// matched to `features` by name when known.
fn read_csv_rows(path: &Path, features: Option<&[String]>) -> Result<Vec<Vec<f32>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let split = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut columns: Option<Vec<usize>> = None;
    if let Some((_, first)) = lines.peek() {
        let cells = split(first);
        if cells.iter().any(|c| c.parse::<f32>().is_err()) {
            if let Some(features) = features {
                let idx = features
                    .iter()
                    .map(|f| {
                        cells.iter().position(|c| c == f).with_context(|| {
                            format!(
                                "{}: header has no column {f:?} (a model feature)",
                                path.display()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                columns = Some(idx);
            }
            lines.next();
        }
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let cells = split(line);
        let pick: Vec<&String> = match &columns {
            Some(idx) => idx.iter().filter_map(|&i| cells.get(i)).collect(),
            None => cells.iter().collect(),
        };
        if let Some(idx) = &columns
            && pick.len() != idx.len()
        {
            bail!(
                "{}:{}: row has {} columns, fewer than the header",
                path.display(),
                n + 1,
                cells.len()
            );
        }
        let row = pick
            .iter()
            .enumerate()
            .map(|(c, s)| {
                s.parse::<f32>().with_context(|| {
                    format!(
                        "{}:{}: column {} ({s:?}) is not a number",
                        path.display(),
                        n + 1,
                        c + 1
                    )
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no data rows", path.display());
    }
    Ok(rows)
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists (pass --force to overwrite)",
            path.display()
        );
    }
    Ok(())
}
