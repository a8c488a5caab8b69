//! `confidant attest`: produce evidence on this platform, verify evidence, print the simulated
//! measurement. Flags are parsed here (clap, with typed value parsers), then turned into a
//! policy and evidence before anything is verified.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{ArgGroup, Args, Subcommand};
use confidant::client::attested::ChannelPolicy;
use confidant::tee;
use confidant_attestation::nvidia::{self, GpuEvidence, GpuReferences};
use confidant_attestation::{
    Evidence, Policy, SnpEvidence, TdxCollateral, TdxEvidence, Timestamp, Verdict, verify,
    verify_json,
};

/// `confidant attest`.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AttestCommand,
}

/// The `attest` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Write evidence JSON from this platform's TEE (configfs-tsm, /dev/sev-guest, or, with a
    /// warning, the simulated TEE).
    Report(ReportArgs),
    /// Verify evidence against a policy; print the verdict as JSON. Exit code 0 only on
    /// accept.
    Verify(Box<VerifyArgs>),
    /// Print this binary's simulated-TEE measurement (SHA-384 of the binary).
    Measurement,
    /// Fetch a running server's evidence over an attested channel, verify it against a
    /// client policy and its binding to the TLS connection, and print the verified claims.
    Fetch(FetchArgs),
    /// Collect one GPU's evidence through NVML (builds with the `cuda` feature) for a nonce,
    /// and write it where `attest verify --gpu-evidence` reads it: report.bin, report.hex and
    /// chain.pem.
    GpuEvidence(GpuEvidenceArgs),
}

/// `confidant attest gpu-evidence`.
#[derive(Debug, Args)]
pub struct GpuEvidenceArgs {
    /// The CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: u32,
    /// The nonce the GPU signs (32 bytes, hex).
    #[arg(long, value_name = "HEX", value_parser = parse_nonce)]
    pub nonce: [u8; 32],
    /// The directory to write report.bin, report.hex and chain.pem into (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `confidant attest fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Server URL, https://HOST:PORT.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// Client attestation policy (the attestation crate's TOML: measurement, TCB floor,
    /// debug, allow_simulated, and `[gpu]` for a server on GPUs).
    #[arg(long)]
    pub policy: PathBuf,
    /// NVIDIA references for a server on GPUs.
    #[command(flatten)]
    pub gpu: GpuReferenceArgs,
}

/// The NVIDIA references a client holds for a server on GPUs, next to `--policy`: the
/// policy's `[gpu]` section judges the GPUs' evidence with them (never with what the server
/// sends).
#[derive(Debug, Clone, Default, Args)]
pub struct GpuReferenceArgs {
    /// A directory of NVIDIA RIMs (`*.swidtag`, `*.xml`: the driver and VBIOS RIMs of the
    /// server's GPUs). Without the RIMs for a GPU its measurements are not compared, and a
    /// policy with `[gpu] cc_mode = "on"` refuses it.
    #[arg(long, value_name = "DIR", requires = "policy")]
    pub gpu_rims: Option<PathBuf>,
    /// A directory of DER OCSP responses (`*.der`, `*.ocsp`) for the GPUs' device and RIM
    /// certificates (for `[gpu] require_ocsp = true`).
    #[arg(long, value_name = "DIR", requires = "policy")]
    pub gpu_ocsp: Option<PathBuf>,
}

/// `confidant attest report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// report_data to bind, hex, 1 to 64 bytes (right-padded with zeros to 64).
    #[arg(long, value_name = "HEX", value_parser = parse_report_data)]
    pub report_data: [u8; 64],
    /// Write the evidence here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `confidant attest verify`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("input")
        .required(true)
        .args(["evidence", "snp_report", "tdx_quote", "gpu_evidence"])
))]
pub struct VerifyArgs {
    /// Evidence JSON (`{"tee": "snp" | "tdx" | "simulated", ...}`).
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// A raw 1184-byte SEV-SNP report.
    #[arg(long, value_name = "FILE", requires = "vek")]
    pub snp_report: Option<PathBuf>,
    /// The VCEK or VLEK certificate (DER) for --snp-report.
    #[arg(long, value_name = "FILE", requires = "snp_report")]
    pub vek: Option<PathBuf>,
    /// The ASK (or ASVK) and ARK, PEM, as AMD KDS serves them; compared with the pinned
    /// roots, never trusted.
    #[arg(long, value_name = "FILE", requires = "snp_report")]
    pub chain: Option<PathBuf>,
    /// A raw TDX quote (v4 or v5).
    #[arg(long, value_name = "FILE", requires = "collateral")]
    pub tdx_quote: Option<PathBuf>,
    /// Intel PCS collateral (QuoteCollateralV3 JSON) for --tdx-quote, or for TDX --evidence
    /// that carries none.
    #[arg(long, value_name = "FILE", conflicts_with = "snp_report")]
    pub collateral: Option<PathBuf>,
    /// An NVIDIA GPU attestation report as NVML returns it (SPDM GET_MEASUREMENTS request
    /// followed by the response), raw (`report.bin`) or hex text (`report.hex`).
    #[arg(long, value_name = "FILE", requires_all = ["gpu_chain", "nonce"])]
    pub gpu_evidence: Option<PathBuf>,
    /// The GPU's device certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE", requires = "gpu_evidence")]
    pub gpu_chain: Option<PathBuf>,
    /// An NVIDIA RIM (`.swidtag`) for --gpu-evidence: give the driver's and the VBIOS's.
    /// Without any, only authenticity is checked and the measurements are not compared.
    #[arg(long = "rim", value_name = "FILE", requires = "gpu_evidence")]
    pub rims: Vec<PathBuf>,
    /// A DER OCSP response for a device or RIM certificate (repeatable). Without any,
    /// revocation is reported as not checked.
    #[arg(long = "ocsp", value_name = "FILE", requires = "gpu_evidence")]
    pub ocsp: Vec<PathBuf>,
    /// The nonce the GPU report must carry (32 bytes, hex).
    #[arg(long, value_name = "HEX", value_parser = parse_nonce, requires = "gpu_evidence")]
    pub nonce: Option<[u8; 32]>,
    /// Policy TOML; it must pin `measurements` (or say `"any"` in words). Without one only
    /// authenticity is checked (and the flags below), and the verdict says
    /// `"policy_applied": false`. For --gpu-evidence, its `[gpu]` section applies;
    /// without --policy every GPU check must pass.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Require this measurement (SNP measurement or TDX MRTD, 48 bytes hex); replaces the
    /// policy's list.
    #[arg(long, value_name = "HEX", value_parser = parse_measurement)]
    pub measurement: Option<[u8; 48]>,
    /// Require this report_data (hex, 1 to 64 bytes, right-padded with zeros).
    #[arg(long, value_name = "HEX", value_parser = parse_report_data)]
    pub report_data: Option<[u8; 64]>,
    /// Accept debuggable guests.
    #[arg(long)]
    pub allow_debug: bool,
    /// The time to judge certificate and collateral validity at (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
    pub at: Timestamp,
}

fn parse_report_data(text: &str) -> Result<[u8; 64], String> {
    Policy::report_data_from_hex(text).map_err(|e| e.to_string())
}

fn parse_measurement(text: &str) -> Result<[u8; 48], String> {
    Policy::measurement_from_hex(text).map_err(|e| e.to_string())
}

fn parse_nonce(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes, expected 32", bytes.len()))
}

fn parse_at(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

/// Runs an `attest` subcommand.
pub fn run(args: AttestArgs) -> Result<()> {
    match args.command {
        AttestCommand::Report(a) => report(&a),
        AttestCommand::Verify(a) => verify_command(&a),
        AttestCommand::Measurement => measurement(),
        AttestCommand::Fetch(_) => bail!("attest fetch runs through the async path"),
        AttestCommand::GpuEvidence(a) => gpu_evidence(&a),
    }
}

/// Reads a client attestation policy file.
pub fn read_policy(path: &std::path::Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--policy {}: cannot read", path.display()))?;
    Policy::from_toml(&text).with_context(|| format!("--policy {}", path.display()))
}

/// A client attestation policy with the GPU references given next to it.
pub fn read_channel_policy(path: &Path, gpu: &GpuReferenceArgs) -> Result<ChannelPolicy> {
    let policy = read_policy(path)?;
    let references = confidant::keys::gpu_references::GpuReferenceSource::new(
        gpu.gpu_rims.clone(),
        gpu.gpu_ocsp.clone(),
    )
    .load()
    .context("--gpu-rims/--gpu-ocsp")?;
    Ok(ChannelPolicy::new(policy).with_gpu_references(references))
}

/// `confidant attest fetch`: the verified claims, the CPU TEE's at the top level and each
/// GPU's under `gpus`.
pub async fn fetch(a: FetchArgs) -> Result<()> {
    let policy = read_channel_policy(&a.policy, &a.gpu)?;
    let (_, verdict) = confidant::client::attested::connect_attested(&a.addr, &policy).await?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    Ok(())
}

fn report(a: &ReportArgs) -> Result<()> {
    let attester = tee::detect().context("no attester available")?;
    let evidence = attester
        .evidence(&a.report_data)
        .with_context(|| format!("producing evidence with {}", attester.kind()))?;
    let json = serde_json::to_string_pretty(&evidence).context("encoding the evidence")?;
    match &a.out {
        Some(path) => {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("--out {}: cannot write", path.display()))?;
            println!(
                "{}",
                serde_json::json!({
                    "evidence": path,
                    "tee": evidence.tee(),
                    "attester": attester.kind().to_string(),
                })
            );
        }
        None => println!("{json}"),
    }
    Ok(())
}

fn gpu_evidence(a: &GpuEvidenceArgs) -> Result<()> {
    let evidence = tee::gpu::collect_device(a.device, &a.nonce)
        .with_context(|| format!("collecting the evidence of cuda:{}", a.device))?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("--out {}: cannot create", a.out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = a.out.join(name);
        std::fs::write(&path, bytes)
            .with_context(|| format!("--out {}: cannot write", path.display()))
    };
    write("report.bin", &evidence.report)?;
    write(
        "report.hex",
        format!("{}\n", hex::encode(&evidence.report)).as_bytes(),
    )?;
    write("chain.pem", evidence.certificate_chain.as_bytes())?;
    println!(
        "{}",
        serde_json::json!({
            "device": a.device,
            "nonce": hex::encode(a.nonce),
            "report_bytes": evidence.report.len(),
            "out": a.out,
        })
    );
    Ok(())
}

fn measurement() -> Result<()> {
    let simulated = tee::Simulated::new()?;
    println!(
        "{}",
        serde_json::json!({ "measurement": hex::encode(simulated.measurement()) })
    );
    Ok(())
}

/// The validated inputs of `attest verify`.
struct VerifyConfig {
    input: Input,
    collateral: Option<TdxCollateral>,
    policy: Policy,
    at: Timestamp,
}

enum Input {
    /// Evidence JSON, verified as given (a malformed file is a rejecting verdict).
    Json(Vec<u8>),
    Evidence(Evidence),
    Gpu(Box<GpuInput>),
}

/// The validated inputs for GPU evidence.
struct GpuInput {
    evidence: GpuEvidence,
    nonce: [u8; 32],
    rims: Vec<Vec<u8>>,
    ocsp: Vec<Vec<u8>>,
    /// Judge with the policy's `[gpu]` section (only when --policy was given).
    judge: bool,
}

impl VerifyConfig {
    fn from_args(a: &VerifyArgs) -> Result<Self> {
        let mut policy = match &a.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--policy {}: cannot read", path.display()))?;
                Policy::from_toml(&text).with_context(|| format!("--policy {}", path.display()))?
            }
            None => Policy::dangerous_authenticity_only(),
        };
        if let Some(m) = a.measurement {
            policy.measurements = vec![m];
        }
        if let Some(rd) = a.report_data {
            policy.report_data = Some(rd);
        }
        if a.allow_debug {
            policy.allow_debug = true;
        }
        let collateral = match &a.collateral {
            Some(path) => Some(
                TdxCollateral::from_json(&read(path, "--collateral")?)
                    .with_context(|| format!("--collateral {}", path.display()))?,
            ),
            None => None,
        };
        if let Some(report) = &a.gpu_evidence {
            if a.evidence.is_some() || a.snp_report.is_some() || a.tdx_quote.is_some() {
                bail!(
                    "give exactly one of --evidence, --snp-report, --tdx-quote or --gpu-evidence"
                );
            }
            if a.collateral.is_some()
                || a.measurement.is_some()
                || a.report_data.is_some()
                || a.allow_debug
            {
                bail!(
                    "--collateral, --measurement, --report-data and --allow-debug apply to CPU \
                     evidence, not --gpu-evidence"
                );
            }
            let (Some(chain), Some(nonce)) = (&a.gpu_chain, a.nonce) else {
                bail!("--gpu-evidence needs --gpu-chain and --nonce");
            };
            let report = nvidia::report_from_file(&read(report, "--gpu-evidence")?)
                .with_context(|| format!("--gpu-evidence {}", report.display()))?;
            let chain = String::from_utf8(read(chain, "--gpu-chain")?)
                .with_context(|| format!("--gpu-chain {}: not PEM text", chain.display()))?;
            let rims = a
                .rims
                .iter()
                .map(|path| read(path, "--rim"))
                .collect::<Result<_>>()?;
            let ocsp = a
                .ocsp
                .iter()
                .map(|path| read(path, "--ocsp"))
                .collect::<Result<_>>()?;
            return Ok(Self {
                input: Input::Gpu(Box::new(GpuInput {
                    evidence: GpuEvidence::new(report, chain),
                    nonce,
                    rims,
                    ocsp,
                    judge: a.policy.is_some(),
                })),
                collateral: None,
                policy,
                at: a.at,
            });
        }
        let input = match (&a.evidence, &a.snp_report, &a.tdx_quote) {
            (Some(path), None, None) => Input::Json(read(path, "--evidence")?),
            (None, Some(report), None) => {
                let Some(vek) = &a.vek else {
                    bail!("--snp-report needs --vek");
                };
                let report = read(report, "--snp-report")?;
                let vek = read(vek, "--vek")?;
                let chain = a
                    .chain
                    .as_deref()
                    .map(|path| read(path, "--chain"))
                    .transpose()?;
                let evidence = SnpEvidence::from_parts(&report, &vek, chain.as_deref())
                    .with_context(|| match &a.chain {
                        Some(path) => format!("--chain {}", path.display()),
                        None => "--snp-report".to_owned(),
                    })?;
                Input::Evidence(Evidence::Snp(evidence))
            }
            (None, None, Some(quote)) => {
                let quote = read(quote, "--tdx-quote")?;
                Input::Evidence(Evidence::Tdx(TdxEvidence::new(quote)))
            }
            _ => bail!("give exactly one of --evidence, --snp-report or --tdx-quote"),
        };
        Ok(Self {
            input,
            collateral,
            policy,
            at: a.at,
        })
    }

    fn verify(&self) -> Verdict {
        let collateral = self.collateral.as_ref();
        match &self.input {
            Input::Json(bytes) => verify_json(bytes, collateral, &self.policy, self.at),
            Input::Evidence(e) => verify(e, collateral, &self.policy, self.at),
            Input::Gpu(g) => {
                let rims: Vec<&[u8]> = g.rims.iter().map(Vec::as_slice).collect();
                let ocsp: Vec<&[u8]> = g.ocsp.iter().map(Vec::as_slice).collect();
                let references = GpuReferences {
                    rims: &rims,
                    ocsp: &ocsp,
                };
                let verdict = nvidia::verify_gpu(&g.evidence, &g.nonce, references, self.at);
                if g.judge {
                    verdict.judge(&self.policy)
                } else {
                    verdict.to_verdict()
                }
            }
        }
    }
}

fn verify_command(a: &VerifyArgs) -> Result<()> {
    let config = VerifyConfig::from_args(a)?;
    let verdict = config.verify();
    println!("{}", verdict.to_json_pretty());
    if verdict.is_accept() {
        return Ok(());
    }
    let checks: Vec<String> = verdict
        .failures
        .iter()
        .map(|f| f.check.to_string())
        .collect();
    bail!(
        "attestation rejected: {} failed check(s): {}",
        checks.len(),
        checks.join(", ")
    )
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}
