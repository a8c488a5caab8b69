//! `confidant broker`: run the key broker, and administer it over its HTTPS admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use confidant::keys::{BrokerConfig, BrokerEndpoint, broker};
use zeroize::Zeroizing;

/// `confidant broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BrokerCommand,
}

/// The `broker` subcommands.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Serve the broker over HTTPS. Writes DIR/tls/cert.pem (clients trust it) and
    /// DIR/admin.key (the admin API's credential) on first start.
    Serve(BrokerServeArgs),
    /// Store a resource (e.g. a model's data key from `confidant seal --key-out`).
    PutResource(PutResourceArgs),
    /// Set a resource's release policy (the attestation crate's TOML: measurements, TCB
    /// floor, allow_debug, allow_simulated). Without one a resource is never released; one
    /// that does not pin `measurements` is refused.
    SetPolicy(SetPolicyArgs),
    /// Print a deployment's freshness anchor as JSON: the latest audit checkpoint and
    /// database state version the server anchored, signed by its checkpoint key, with the
    /// lease and every authorized reset. `audit verify --anchor FILE` checks a log with it.
    Anchor(AnchorArgs),
}

/// `confidant broker anchor`.
#[derive(Debug, Args)]
pub struct AnchorArgs {
    /// The broker and its admin key.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The deployment.
    #[arg(long, value_name = "NAME", default_value = confidant::state::DEFAULT_DEPLOYMENT)]
    pub deployment: String,
}

/// `confidant state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// The `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Authorize the deployment's next server start to accept its local state as the new
    /// freshness anchor, after the server refused to serve an older (restored) state. The
    /// broker records the reset, its reason and the anchor it replaces; the server records
    /// it in the audit log. Privacy budgets and quotas spent since the restored copy are
    /// forgotten: use only after deciding that is acceptable.
    Reset(StateResetArgs),
}

/// `confidant state reset`.
#[derive(Debug, Args)]
pub struct StateResetArgs {
    /// The broker and its admin key.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The deployment.
    #[arg(long, value_name = "NAME", default_value = confidant::state::DEFAULT_DEPLOYMENT)]
    pub deployment: String,
    /// Why (kept in the anchor and the audit log).
    #[arg(long)]
    pub reason: String,
}

/// The deployment's audit-records key and checkpoint public key, from the broker's admin
/// API (`audit export --key-from-broker`).
pub async fn audit_key(
    e: &super::args::AuditExportArgs,
) -> Result<(Zeroizing<[u8; 32]>, [u8; 32])> {
    let deployment = e
        .state
        .deployment
        .clone()
        .unwrap_or_else(|| confidant::state::DEFAULT_DEPLOYMENT.to_owned());
    confidant::state::check_deployment(&deployment).context("--deployment")?;
    let admin = AdminArgs {
        broker: e.state.broker.clone().context("--broker")?,
        broker_ca: e.state.broker_ca.clone(),
        admin_key: e.admin_key.clone().context("--admin-key")?,
    };
    let answer = Zeroizing::new(
        admin_call(
            &admin,
            hyper::Method::GET,
            &format!("/kbs/v0/audit-key/{deployment}"),
            Vec::new(),
        )
        .await?
        .to_vec(),
    );
    // Borrowed from the zeroized answer: the key's hex is not copied.
    #[derive(serde::Deserialize)]
    struct AuditKey<'a> {
        records_key: &'a str,
        checkpoint_public_key: &'a str,
    }
    let k: AuditKey<'_> =
        serde_json::from_slice(&answer).context("the broker's answer is not an audit key")?;
    let mut records = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(k.records_key, records.as_mut())
        .context("records_key is not 64 hex digits")?;
    let mut checkpoint = [0u8; 32];
    hex::decode_to_slice(k.checkpoint_public_key, &mut checkpoint)
        .context("checkpoint_public_key is not 64 hex digits")?;
    Ok((records, checkpoint))
}

/// Runs a `state` subcommand.
pub async fn state(args: StateArgs) -> Result<()> {
    match args.command {
        StateCommand::Reset(a) => {
            confidant::state::check_deployment(&a.deployment).context("--deployment")?;
            let body = serde_json::to_vec(&serde_json::json!({"reason": a.reason}))?;
            let answer = admin_call(
                &a.admin,
                hyper::Method::POST,
                &format!("/kbs/v0/anchor-reset/{}", a.deployment),
                body,
            )
            .await?;
            let anchor: confidant::state::anchor::Anchor =
                serde_json::from_slice(&answer).context("the broker's answer is not an anchor")?;
            println!(
                "{}",
                serde_json::json!({
                    "deployment": anchor.deployment,
                    "reset_authorized": true,
                    "epoch": anchor.epoch,
                    "previous": anchor.position,
                })
            );
            eprintln!(
                "the next start of deployment {} accepts its local state as the anchor",
                anchor.deployment
            );
            Ok(())
        }
    }
}

/// `confidant broker serve`.
#[derive(Debug, Args)]
pub struct BrokerServeArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Data directory: TLS identity, admin key, master key, the resource database.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Seconds an attested session lasts (tests shorten it).
    #[arg(long, hide = true, default_value_t = broker::DEFAULT_SESSION_TTL.as_secs())]
    pub session_ttl_secs: u64,
    /// Seconds a challenge (nonce) lasts before attest must answer it.
    #[arg(long, hide = true, default_value_t = broker::DEFAULT_CHALLENGE_TTL.as_secs())]
    pub challenge_ttl_secs: u64,
    /// The broker's own TDX collateral (Intel PCS QuoteCollateralV3 JSON): a file, or a
    /// directory with one file per platform FMSPC. Re-read at each TDX verification; keep it
    /// current (docs/broker.md). Without it TDX evidence is refused; collateral an attester
    /// sends is never used.
    #[arg(long, value_name = "PATH")]
    pub tdx_collateral: Option<PathBuf>,
    /// A directory of NVIDIA's signed RIMs (`*.swidtag`: driver and VBIOS) for the GPUs the
    /// broker's servers run on. Re-read at each attestation carrying GPU evidence. Without a
    /// RIM for a GPU's driver and VBIOS, its measurements are not compared and a release
    /// policy with `[gpu] cc_mode = "on"` refuses it.
    #[arg(long, value_name = "DIR")]
    pub gpu_rims: Option<PathBuf>,
    /// A directory of OCSP responses (`*.der`) for GPU device and RIM certificates, for
    /// release policies with `[gpu] require_ocsp = true`. Re-read like --gpu-rims.
    #[arg(long, value_name = "DIR")]
    pub gpu_ocsp: Option<PathBuf>,
    /// Seconds a server holds its deployment after its last freshness-anchor advance:
    /// another instance's claim is refused meanwhile, and the holder stops serving after
    /// half of it without an advance (2 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = confidant::state::anchor::DEFAULT_LEASE_SECS)]
    pub anchor_lease_secs: u64,
}

/// How to reach the admin API.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Broker URL, https://HOST:PORT.
    #[arg(long)]
    pub broker: String,
    /// The broker's certificate or CA (PEM), e.g. <broker-data>/tls/cert.pem.
    #[arg(long)]
    pub broker_ca: Option<PathBuf>,
    /// The admin key: a path to the broker's admin.key, or the key itself (64 hex digits).
    #[arg(long, env = "CONFIDANT_BROKER_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
}

/// `confidant broker put-resource`.
#[derive(Debug, Args)]
pub struct PutResourceArgs {
    /// The broker and its admin key.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Resource path repository/type/tag, e.g. default/models/<model id>.
    #[arg(long)]
    pub path: String,
    /// The file holding the resource (e.g. the data key).
    #[arg(
        long,
        required_unless_present = "generate",
        conflicts_with = "generate"
    )]
    pub file: Option<PathBuf>,
    /// Have the broker make the resource: 32 random bytes that never leave it except to an
    /// attested server (a deployment's state key, `--path default/state/<NAME>`). Refused
    /// if the resource exists.
    #[arg(long)]
    pub generate: bool,
}

/// `confidant broker set-policy`.
#[derive(Debug, Args)]
pub struct SetPolicyArgs {
    /// The broker and its admin key.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Resource path repository/type/tag.
    #[arg(long)]
    pub path: String,
    /// The release policy (TOML).
    #[arg(long)]
    pub policy: PathBuf,
}

/// Runs a `broker` subcommand.
pub async fn run(args: BrokerArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    match args.command {
        BrokerCommand::Serve(a) => serve(a, shutdown).await,
        BrokerCommand::PutResource(a) => {
            confidant::sealed::manifest::validate_resource_path(&a.path)
                .map_err(anyhow::Error::msg)
                .context("--path")?;
            let Some(file) = a.file.as_ref().filter(|_| !a.generate) else {
                admin_post(
                    &a.admin,
                    &format!("/kbs/v0/resource-generate/{}", a.path),
                    Vec::new(),
                )
                .await?;
                println!(
                    "{}",
                    serde_json::json!({"stored": a.path, "bytes": 32, "generated": true})
                );
                return Ok(());
            };
            let bytes = Zeroizing::new(
                std::fs::read(file)
                    .with_context(|| format!("--file {}: cannot read", file.display()))?,
            );
            admin_post(
                &a.admin,
                &format!("/kbs/v0/resource/{}", a.path),
                bytes.to_vec(),
            )
            .await?;
            println!(
                "{}",
                serde_json::json!({"stored": a.path, "bytes": bytes.len()})
            );
            Ok(())
        }
        BrokerCommand::Anchor(a) => {
            confidant::state::check_deployment(&a.deployment).context("--deployment")?;
            let answer = admin_call(
                &a.admin,
                hyper::Method::GET,
                &format!("/kbs/v0/anchor/{}", a.deployment),
                Vec::new(),
            )
            .await?;
            let anchor: confidant::state::anchor::Anchor =
                serde_json::from_slice(&answer).context("the broker's answer is not an anchor")?;
            println!("{}", serde_json::to_string_pretty(&anchor)?);
            Ok(())
        }
        BrokerCommand::SetPolicy(a) => {
            confidant::sealed::manifest::validate_resource_path(&a.path)
                .map_err(anyhow::Error::msg)
                .context("--path")?;
            let text = std::fs::read_to_string(&a.policy)
                .with_context(|| format!("--policy {}: cannot read", a.policy.display()))?;
            // Checked here too, so that a typo or a missing key is reported before anything
            // is sent.
            let policy = confidant_attestation::Policy::from_toml(&text)
                .with_context(|| format!("--policy {}", a.policy.display()))?;
            let open = policy.deliberately_open();
            if !open.is_empty() {
                eprintln!(
                    "warning: --policy {} deliberately accepts {}; the broker logs a warning at \
                     every release under it",
                    a.policy.display(),
                    open.join(", ")
                );
            }
            admin_post(
                &a.admin,
                &format!("/kbs/v0/resource-policy/{}", a.path),
                text.into_bytes(),
            )
            .await?;
            println!("{}", serde_json::json!({"policy_set": a.path}));
            Ok(())
        }
    }
}

async fn serve(a: BrokerServeArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let listen = a
        .listen
        .parse()
        .with_context(|| format!("--listen {:?}: expected HOST:PORT", a.listen))?;
    if a.session_ttl_secs == 0 || a.challenge_ttl_secs == 0 {
        bail!("session and challenge lifetimes must be at least one second");
    }
    let mut config = BrokerConfig::new(listen, a.data_dir);
    config.session_ttl = Duration::from_secs(a.session_ttl_secs);
    config.challenge_ttl = Duration::from_secs(a.challenge_ttl_secs);
    config.tdx_collateral = a.tdx_collateral;
    config.gpu_references =
        confidant::keys::gpu_references::GpuReferenceSource::new(a.gpu_rims, a.gpu_ocsp);
    if !(2..=3600).contains(&a.anchor_lease_secs) {
        bail!(
            "--anchor-lease-secs must be 2 to 3600, got {}",
            a.anchor_lease_secs
        );
    }
    config.anchor_lease = Duration::from_secs(a.anchor_lease_secs);
    let running = broker::start(config.clone()).await?;
    println!(
        "confidant broker: listening on {} (TLS certificate: {}; admin key: {})",
        running.url,
        config.cert_path().display(),
        config.admin_key_path().display()
    );
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

/// The admin key from `--admin-key`: a file's contents, or the key itself.
fn admin_key(value: &str) -> Result<Zeroizing<String>> {
    let path = Path::new(value);
    if path.is_file() {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("--admin-key {}: cannot read", path.display()))?,
        );
        return Ok(Zeroizing::new(text.trim().to_owned()));
    }
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Zeroizing::new(value.to_owned()));
    }
    bail!("--admin-key: {value:?} is neither a readable file nor a 64-hex-digit key")
}

async fn admin_post(a: &AdminArgs, endpoint: &str, body: Vec<u8>) -> Result<()> {
    admin_call(a, hyper::Method::POST, endpoint, body)
        .await
        .map(|_| ())
}

async fn admin_call(
    a: &AdminArgs,
    method: hyper::Method,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<hyper::body::Bytes> {
    let key = admin_key(&a.admin_key)?;
    let ca = a
        .broker_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("--broker-ca {}", p.display())))
        .transpose()?;
    let broker = BrokerEndpoint::new(&a.broker, ca.as_deref())?;
    let mut conn = broker.connect().await?;
    Ok(conn.admin_call(method, endpoint, &key, body).await?)
}
