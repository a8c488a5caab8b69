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
    #[arg(long)]
    pub file: PathBuf,
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
            let bytes = Zeroizing::new(
                std::fs::read(&a.file)
                    .with_context(|| format!("--file {}: cannot read", a.file.display()))?,
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
    let key = admin_key(&a.admin_key)?;
    let ca = a
        .broker_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("--broker-ca {}", p.display())))
        .transpose()?;
    let broker = BrokerEndpoint::new(&a.broker, ca.as_deref())?;
    let mut conn = broker.connect().await?;
    conn.admin_post(endpoint, &key, body).await?;
    Ok(())
}
