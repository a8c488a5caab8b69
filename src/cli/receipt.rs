//! `confidant receipt`: fetch the evidence that binds a server's receipt key, and verify a
//! receipt offline. `confidant predict --receipt-out FILE` asks for one (see [`save`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use confidant::receipt::digest::{RequestFile, response_from_json};
use confidant::receipt::verify::{Against, verify};
use confidant_attestation::Timestamp;

use super::calls::{ConnectOpts, connect};

/// `confidant receipt`.
#[derive(Debug, Args)]
pub struct ReceiptArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ReceiptCommand,
}

/// The `receipt` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt offline: its signature and inclusion proof, the evidence that binds
    /// its key against a policy, and (given) the request and response it states. Prints the
    /// verdict as JSON; exit code 0 only on accept.
    Verify(VerifyArgs),
    /// Fetch the evidence that binds a server's receipt key (Attestation.GetReceiptEvidence)
    /// and write it, byte for byte, to --out.
    Evidence(EvidenceArgs),
}

/// `confidant receipt verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt (a tagged COSE_Sign1, as `predict --receipt-out` writes it; raw bytes or
    /// base64 text).
    pub receipt: PathBuf,
    /// The evidence that binds the server's receipt key (`confidant receipt evidence`).
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// The attestation policy the evidence must meet (pin the server's measurement).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// The request: JSON with its salt and its inputs or texts (`FILE.request.json` from
    /// `predict --receipt-out FILE`).
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// The response: the JSON `confidant predict` printed (`FILE.response.json`).
    #[arg(long, value_name = "FILE")]
    pub response: Option<PathBuf>,
    /// Judge certificates and evidence at this time (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
    pub at: Option<Timestamp>,
}

fn parse_at(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

/// `confidant receipt evidence`.
#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// Server URL, https://HOST:PORT.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// CA or server certificate (PEM) to trust [default: <data-dir>/tls/cert.pem].
    #[arg(long, conflicts_with = "policy")]
    pub tls_ca: Option<PathBuf>,
    /// A client attestation policy (TOML): connect over the attested channel instead.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The GPU references that go with --policy.
    #[command(flatten)]
    pub gpu: super::attest::GpuReferenceArgs,
    /// Data directory, used to find the default --tls-ca.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to write the evidence JSON.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs a `receipt` subcommand.
pub async fn run(a: ReceiptArgs) -> Result<()> {
    match a.command {
        ReceiptCommand::Verify(v) => verify_command(&v),
        ReceiptCommand::Evidence(e) => evidence(e).await,
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}: cannot read", path.display()))
}

/// A receipt file: the COSE bytes, or their base64 (as HTTP headers carry them).
fn receipt_bytes(raw: Vec<u8>) -> Vec<u8> {
    use base64::Engine as _;
    // A tagged COSE_Sign1 starts with tag 18 (0xd2); base64 text never does.
    if raw.first() == Some(&0xd2) {
        return raw;
    }
    let text = String::from_utf8_lossy(&raw);
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or(raw)
}

fn verify_command(a: &VerifyArgs) -> Result<()> {
    let receipt = receipt_bytes(read(&a.receipt, "the receipt")?);
    let evidence = read(&a.evidence, "--evidence")?;
    let policy = super::attest::read_policy(&a.policy)?;
    let request = match &a.request {
        Some(path) => {
            let file: RequestFile = serde_json::from_slice(&read(path, "--request")?)
                .with_context(|| format!("--request {}", path.display()))?;
            Some(
                file.digest()
                    .with_context(|| format!("--request {}", path.display()))?,
            )
        }
        None => None,
    };
    let response = match &a.response {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_slice(&read(path, "--response")?)
                .with_context(|| format!("--response {}: not JSON", path.display()))?;
            Some(response_from_json(&v).with_context(|| format!("--response {}", path.display()))?)
        }
        None => None,
    };
    let now =
        a.at.unwrap_or_else(|| Timestamp::from_unix_seconds(confidant::unix_now().max(0) as u64));
    let verdict = verify(
        &receipt,
        &Against {
            evidence_json: &evidence,
            policy: &policy,
            now,
            request,
            response,
        },
    );
    let mut out = serde_json::to_value(&verdict)?;
    if let Some(o) = out.as_object_mut() {
        o.insert("request_checked".into(), request.is_some().into());
        o.insert("response_checked".into(), response.is_some().into());
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !verdict.accepted() {
        std::process::exit(1);
    }
    Ok(())
}

async fn evidence(a: EvidenceArgs) -> Result<()> {
    let mut client = connect(ConnectOpts {
        addr: &a.addr,
        policy: a.policy,
        gpu: a.gpu,
        tls_ca: a.tls_ca,
        tls_identity: None,
        data_dir: a.data_dir,
        api_key: None,
        purpose: None,
    })
    .await?;
    let r = client.receipt_evidence().await?;
    confidant::files::write_file(&a.out, r.evidence_json.as_bytes(), 0o644)
        .with_context(|| format!("--out {}", a.out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "public_key": r.public_key,
            "evidence": a.out.display().to_string(),
            "evidence_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(r.evidence_json.as_bytes())),
        })
    );
    Ok(())
}

/// What `predict --receipt-out FILE` (and `explain --receipt-out FILE`) writes: FILE (the receipt), FILE.request.json (the salt
/// and the inputs) and FILE.response.json (the printed answer).
pub(super) fn save(
    path: &Path,
    receipt: Option<&[u8]>,
    request: RequestFile,
    printed: &serde_json::Value,
) -> Result<()> {
    let Some(receipt) = receipt else {
        bail!("the server answered without the receipt that was asked for");
    };
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let write = |p: &Path, bytes: &[u8]| {
        confidant::files::write_file(p, bytes, 0o600)
            .with_context(|| format!("--receipt-out: writing {}", p.display()))
    };
    write(path, receipt)?;
    write(
        &with(".request.json"),
        &serde_json::to_vec_pretty(&request)?,
    )?;
    write(
        &with(".response.json"),
        &serde_json::to_vec_pretty(printed)?,
    )?;
    Ok(())
}
