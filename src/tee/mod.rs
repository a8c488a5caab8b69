//! Attesters: evidence about this machine, from whichever TEE interface it has.
//!
//! Three sit side by side behind [`Attester`]:
//! - [`ConfigfsTsm`]: Linux configfs-tsm (`/sys/kernel/config/tsm/report`), for SEV-SNP and
//!   TDX guests; SNP evidence carries the host's certificate table (`auxblob`), TDX evidence
//!   carries no collateral (the verifier supplies it).
//! - [`SevGuest`]: `/dev/sev-guest` through `sev`'s guest API, an extended report with the
//!   host's certificates.
//! - [`Simulated`]: no hardware at all; reports signed by an in-process chain
//!   ([`SimulatedTee`](confidant_attestation::SimulatedTee)), whose measurement is the
//!   SHA-384 of the running binary. Verifiers reject it unless their policy sets
//!   `allow_simulated = true`.
//!
//! [`detect`] tries them in that order and warns loudly when it falls back to the simulated
//! TEE. Every attester checks that what the platform returned decodes and carries the
//! report_data asked for, so a racing writer or a confused driver is an error, not evidence.
//!
//! ```no_run
//! use confidant::tee::{self, Attester as _};
//! # fn main() -> Result<(), confidant::tee::TeeError> {
//! let attester = tee::detect()?;
//! let evidence = attester.evidence(&[0u8; 64])?;
//! println!("{}: {}", attester.kind(), evidence.to_json()?);
//! # Ok(()) }
//! ```

mod cert_table;
mod configfs;
pub mod error;
pub mod gpu;
mod nvml;
mod sample;
mod sev_guest;
mod simulated;

#[cfg(test)]
pub(crate) mod recorded_gpu;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use confidant_attestation::evidence::{SNP_REPORT_LEN, parse_snp_report, parse_tdx_quote};
use confidant_attestation::{CertTableEntry, SnpEvidence, TdxEvidence, TeeKind, Timestamp};

pub use confidant_attestation::{Evidence, GpuEvidence};
pub use configfs::{ConfigfsTsm, Provider, TSM_REPORT_ROOT};
pub use error::TeeError;
pub use sample::{NOT_CONFIDENTIAL as SAMPLE_NOT_CONFIDENTIAL, Sample};
pub use sev_guest::{SEV_GUEST_DEVICE, SevGuest};
pub use simulated::{SELF_EXE, Simulated, binary_measurement};

/// A source of attestation evidence about this machine.
pub trait Attester: Send + Sync + fmt::Debug {
    /// Which interface this is.
    fn kind(&self) -> AttesterKind;

    /// Evidence binding `report_data` (typically a hash of a verifier nonce and a public key).
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError>;

    /// Evidence binding a KBS runtime-data digest (SHA-384 of the canonical runtime data):
    /// by default the digest then 16 zero bytes as report_data, as SNP and TDX bind it;
    /// Trustee's sample evidence binds the 48 bytes alone.
    fn evidence_for_runtime_digest(&self, digest: &[u8; 48]) -> Result<Evidence, TeeError> {
        let mut report_data = [0u8; 64];
        report_data[..48].copy_from_slice(digest);
        self.evidence(&report_data)
    }

    /// The CUDA devices this server serves on, whose evidence [`Attester::gpu_evidence`]
    /// collects; empty for a server on CPU (every CPU attester), which sends no GPU evidence.
    fn gpus(&self) -> &[u32] {
        &[]
    }

    /// The evidence of every GPU in [`Attester::gpus`], each answering `nonce` (the GPU nonce
    /// derived from the verifier's, [`confidant_attestation::nvidia::gpu_nonce`]). A CPU
    /// attester has none; one that serves on GPUs and cannot collect is an error, never an
    /// empty list (see [`gpu`]).
    fn gpu_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, TeeError> {
        let _ = nonce;
        Ok(Vec::new())
    }
}

/// Which attester, and so which TEE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttesterKind {
    /// configfs-tsm, served by the given guest driver.
    ConfigfsTsm(Provider),
    /// `/dev/sev-guest`.
    SevGuest,
    /// The simulated TEE: no hardware trust.
    Simulated,
    /// Trustee's sample TEE (`--tee sample`): no hardware, no signature.
    Sample,
}

impl AttesterKind {
    /// The kind of TEE the evidence will come from.
    pub fn tee(self) -> TeeKind {
        match self {
            Self::ConfigfsTsm(p) => p.tee(),
            Self::SevGuest => TeeKind::Snp,
            Self::Simulated => TeeKind::Simulated,
            Self::Sample => TeeKind::Sample,
        }
    }
}

impl fmt::Display for AttesterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigfsTsm(Provider::SevGuest) => f.write_str("configfs-tsm (sev_guest)"),
            Self::ConfigfsTsm(Provider::TdxGuest) => f.write_str("configfs-tsm (tdx_guest)"),
            Self::SevGuest => f.write_str("sev-guest"),
            Self::Simulated => f.write_str("simulated"),
            Self::Sample => f.write_str("sample"),
        }
    }
}

/// Where [`detect_with`] looks. [`DetectPaths::system`] gives the real ones; tests inject
/// others.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DetectPaths {
    /// The configfs-tsm report directory.
    pub tsm_report: PathBuf,
    /// The SEV-SNP guest device (only its existence is checked here; `sev` opens
    /// [`SEV_GUEST_DEVICE`]).
    pub sev_guest: PathBuf,
    /// The binary the simulated TEE measures.
    pub binary: PathBuf,
}

impl DetectPaths {
    /// The system paths: [`TSM_REPORT_ROOT`], [`SEV_GUEST_DEVICE`], [`SELF_EXE`].
    pub fn system() -> Self {
        Self {
            tsm_report: PathBuf::from(TSM_REPORT_ROOT),
            sev_guest: PathBuf::from(SEV_GUEST_DEVICE),
            binary: PathBuf::from(SELF_EXE),
        }
    }
}

impl Default for DetectPaths {
    fn default() -> Self {
        Self::system()
    }
}

/// Which evidence a server sends (`serve --tee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeChoice {
    /// This machine's TEE ([`detect`]): configfs-tsm, `/dev/sev-guest`, else the simulated
    /// TEE.
    #[default]
    Auto,
    /// Trustee's development sample evidence ([`Sample`]): not confidential.
    Sample,
}

impl std::str::FromStr for TeeChoice {
    type Err = TeeError;

    fn from_str(s: &str) -> Result<Self, TeeError> {
        match s {
            "auto" => Ok(Self::Auto),
            "sample" => Ok(Self::Sample),
            other => Err(TeeError::UnknownChoice(other.to_owned())),
        }
    }
}

impl fmt::Display for TeeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Sample => "sample",
        })
    }
}

/// The attester `choice` names: [`detect`] for [`TeeChoice::Auto`]; for
/// [`TeeChoice::Sample`], [`Sample`] after the loud [`SAMPLE_NOT_CONFIDENTIAL`] warning
/// (logged at every call, so at every start of a server).
pub fn select(choice: TeeChoice) -> Result<Box<dyn Attester>, TeeError> {
    match choice {
        TeeChoice::Auto => detect(),
        TeeChoice::Sample => {
            tracing::warn!("{SAMPLE_NOT_CONFIDENTIAL}");
            Ok(Box::new(Sample))
        }
    }
}

/// Picks this machine's attester: configfs-tsm, then `/dev/sev-guest`, then (with a loud
/// warning) the simulated TEE.
pub fn detect() -> Result<Box<dyn Attester>, TeeError> {
    detect_with(&DetectPaths::system())
}

/// [`detect`] with other paths.
pub fn detect_with(paths: &DetectPaths) -> Result<Box<dyn Attester>, TeeError> {
    detect_inner(paths, None)
}

pub(crate) fn detect_inner(
    paths: &DetectPaths,
    kernel: Option<std::sync::Arc<dyn configfs::FakeKernel>>,
) -> Result<Box<dyn Attester>, TeeError> {
    if paths.tsm_report.is_dir() {
        match ConfigfsTsm::probe_with(&paths.tsm_report, kernel) {
            Ok(tsm) => {
                tracing::info!(provider = ?tsm.provider(), "attester: configfs-tsm");
                return Ok(Box::new(tsm));
            }
            Err(e) => tracing::info!(error = %e, "configfs-tsm present but unusable"),
        }
    }
    if paths.sev_guest.exists() {
        tracing::info!(device = %paths.sev_guest.display(), "attester: /dev/sev-guest");
        return Ok(Box::new(SevGuest::new()));
    }
    let simulated = Simulated::measuring(&paths.binary)?;
    tracing::warn!(
        measurement = %hex::encode(simulated.measurement()),
        "NO TEE FOUND: falling back to the SIMULATED TEE. Its evidence proves nothing and \
         every default verifier policy rejects it (allow_simulated = true accepts it, for \
         development only)"
    );
    Ok(Box::new(simulated))
}

/// SNP evidence from a platform's raw report, after checking it decodes and binds
/// `report_data`.
fn snp_evidence(
    interface: &'static str,
    report: Vec<u8>,
    certs: Vec<CertTableEntry>,
    report_data: &[u8; 64],
) -> Result<SnpEvidence, TeeError> {
    let malformed = |reason: String| TeeError::Malformed {
        interface,
        what: "SNP report",
        reason,
    };
    if report.len() != SNP_REPORT_LEN {
        return Err(malformed(format!(
            "{} bytes, expected {SNP_REPORT_LEN}",
            report.len()
        )));
    }
    let claims = parse_snp_report(&report).map_err(|e| malformed(e.to_string()))?;
    if &claims.report_data != report_data {
        return Err(TeeError::ReportDataMismatch { interface });
    }
    if certs.is_empty() {
        tracing::warn!(
            interface,
            "the host supplied no certificates: verifiers need the VCEK (AMD KDS) to verify"
        );
    }
    let evidence = SnpEvidence::new(report, certs);
    Ok(match generated_now() {
        Some(now) => evidence.with_generated_at(now),
        None => evidence,
    })
}

/// TDX evidence from a platform's quote, after checking it decodes and binds `report_data`.
fn tdx_evidence(
    interface: &'static str,
    quote: Vec<u8>,
    report_data: &[u8; 64],
) -> Result<TdxEvidence, TeeError> {
    let claims = parse_tdx_quote(&quote).map_err(|e| TeeError::Malformed {
        interface,
        what: "TDX quote",
        reason: e.to_string(),
    })?;
    if &claims.report_data != report_data {
        return Err(TeeError::ReportDataMismatch { interface });
    }
    let evidence = TdxEvidence::new(quote);
    Ok(match generated_now() {
        Some(now) => evidence.with_generated_at(now),
        None => evidence,
    })
}

/// The attester's unsigned statement of when it made evidence (see the attestation crate's
/// `max_evidence_age_secs`); `None` if the clock is before 1970.
fn generated_now() -> Option<Timestamp> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| Timestamp::from_unix_seconds(d.as_secs()))
}
