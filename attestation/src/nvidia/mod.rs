//! NVIDIA GPU attestation (Hopper and Blackwell in confidential-computing mode), verified
//! offline.
//!
//! The evidence is what NVML returns: `nvmlDeviceGetConfComputeGpuAttestationReport` (an SPDM
//! 1.1 GET_MEASUREMENTS request followed by the signed MEASUREMENTS response, see [`spdm`])
//! and `nvmlDeviceGetConfComputeGpuCertificate` (the device chain, PEM, leaf first). Optional
//! inputs are NVIDIA's signed Reference Integrity Manifests (the driver and VBIOS `.swidtag`
//! files, see [`rim`]) and OCSP responses for the certificates (see [`ocsp`]).
//!
//! [`verify_gpu`] runs the checks of NVIDIA's local verifier, in its order, and names each
//! as NVIDIA's test vectors do:
//!
//! | check | passes when |
//! | --- | --- |
//! | `report_parsed` | the report is exactly request ‖ response, every offset in bounds, no byte after the signature |
//! | `fwid_matches_leaf_cert` | the report's FWID equals the leaf certificate's (skipped when the report has none) |
//! | `cert_chain` | leaf ← BROM ← Provisioner ICA ← chip Identity ← the pinned NVIDIA Device Identity CA, valid at `now` |
//! | `nonce` | the request's nonce is the verifier's |
//! | `report_signature` | ECDSA P-384 over request ‖ response-without-signature, by the leaf key |
//! | `rim_<kind>_signature` | the RIM's enveloped XML-DSig verifies (digest and signature) |
//! | `rim_<kind>_cert_chain` | the RIM signer chain reaches the pinned NVIDIA CoRIM root, valid at `now` |
//! | `rim_<kind>_version_match` | the RIM is for the report's driver (VBIOS) version |
//! | `rim_<kind>_product_match` | the RIM is for the report's chip |
//! | `rim_index_conflict_free` | no index is active in both RIMs |
//! | `measurements_match` | every active golden index matches one of its alternatives |
//! | `ocsp` | only with OCSP responses: each verifies and no certificate is revoked |
//!
//! Without RIMs only the first five run, and the verdict says the measurements were not
//! compared. Without OCSP responses revocation is `not_checked`: the caller's policy decides.

mod asn1;
mod c14n;
pub mod certs;
pub mod error;
pub mod ocsp;
pub mod policy;
pub mod rim;
pub mod spdm;

use std::fmt;

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq as _;

pub use certs::{DEVICE_ROOT_SHA256, NvidiaRoot, RIM_ROOT_SHA256};
pub use error::{CertError, RimError, SpdmError};
pub use ocsp::{CertRevocation, OcspStatus, Revocation};
pub use rim::{GoldenMeasurement, RimContent, RimKind};
pub use spdm::{MeasurementBlock, OpaqueData, SpdmReport, report_from_file};

use crate::timestamp::Timestamp;
use crate::verdict::Decision;
use certs::Cert;

/// RIM index of the NVDEC0 measurement, not compared when NVDEC0 is disabled.
const NVDEC0_RIM_INDEX: u32 = 35;
/// Number of certificates in a GPU device chain (nvtrust requires exactly this).
const DEVICE_CHAIN_LEN: usize = 5;

/// GPU evidence as NVML returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvidence {
    /// The attestation report (SPDM request ‖ response), hex in JSON.
    #[serde(with = "hex::serde")]
    pub report: Vec<u8>,
    /// The device certificate chain, PEM, leaf first.
    pub certificate_chain: String,
}

impl GpuEvidence {
    /// Evidence from a report (raw bytes) and the PEM chain.
    pub fn new(report: Vec<u8>, certificate_chain: String) -> Self {
        Self {
            report,
            certificate_chain,
        }
    }
}

/// One check of [`verify_gpu`], named as in NVIDIA's verifier and the test vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GpuCheck {
    /// `report_parsed`.
    ReportParsed,
    /// `fwid_matches_leaf_cert`.
    FwidMatchesLeafCert,
    /// `cert_chain`.
    CertChain,
    /// `nonce`.
    Nonce,
    /// `report_signature`.
    ReportSignature,
    /// `rim_<kind>_signature`.
    RimSignature(RimKind),
    /// `rim_<kind>_cert_chain`.
    RimCertChain(RimKind),
    /// `rim_<kind>_version_match`.
    RimVersionMatch(RimKind),
    /// `rim_<kind>_product_match`.
    RimProductMatch(RimKind),
    /// `rim_index_conflict_free`.
    RimIndexConflictFree,
    /// `measurements_match`.
    MeasurementsMatch,
    /// `ocsp`.
    Ocsp,
}

impl GpuCheck {
    /// The check's name.
    pub fn name(self) -> String {
        match self {
            Self::ReportParsed => "report_parsed".to_owned(),
            Self::FwidMatchesLeafCert => "fwid_matches_leaf_cert".to_owned(),
            Self::CertChain => "cert_chain".to_owned(),
            Self::Nonce => "nonce".to_owned(),
            Self::ReportSignature => "report_signature".to_owned(),
            Self::RimSignature(k) => format!("rim_{}_signature", k.name()),
            Self::RimCertChain(k) => format!("rim_{}_cert_chain", k.name()),
            Self::RimVersionMatch(k) => format!("rim_{}_version_match", k.name()),
            Self::RimProductMatch(k) => format!("rim_{}_product_match", k.name()),
            Self::RimIndexConflictFree => "rim_index_conflict_free".to_owned(),
            Self::MeasurementsMatch => "measurements_match".to_owned(),
            Self::Ocsp => "ocsp".to_owned(),
        }
    }
}

impl fmt::Display for GpuCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for GpuCheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl GpuCheck {
    /// Every check, in the order they run.
    pub const ALL: [GpuCheck; 16] = [
        Self::ReportParsed,
        Self::FwidMatchesLeafCert,
        Self::CertChain,
        Self::Nonce,
        Self::ReportSignature,
        Self::RimSignature(RimKind::Driver),
        Self::RimCertChain(RimKind::Driver),
        Self::RimVersionMatch(RimKind::Driver),
        Self::RimProductMatch(RimKind::Driver),
        Self::RimSignature(RimKind::Vbios),
        Self::RimCertChain(RimKind::Vbios),
        Self::RimVersionMatch(RimKind::Vbios),
        Self::RimProductMatch(RimKind::Vbios),
        Self::RimIndexConflictFree,
        Self::MeasurementsMatch,
        Self::Ocsp,
    ];

    /// The check named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The same check in the TEE-wide [`Check`](crate::Check) list.
    pub fn as_check(self) -> crate::Check {
        use crate::Check as C;
        match self {
            Self::ReportParsed => C::ReportParsed,
            Self::FwidMatchesLeafCert => C::FwidMatchesLeafCert,
            Self::CertChain => C::CertChain,
            Self::Nonce => C::Nonce,
            Self::ReportSignature => C::ReportSignature,
            Self::RimSignature(RimKind::Driver) => C::RimDriverSignature,
            Self::RimCertChain(RimKind::Driver) => C::RimDriverCertChain,
            Self::RimVersionMatch(RimKind::Driver) => C::RimDriverVersionMatch,
            Self::RimProductMatch(RimKind::Driver) => C::RimDriverProductMatch,
            Self::RimSignature(RimKind::Vbios) => C::RimVbiosSignature,
            Self::RimCertChain(RimKind::Vbios) => C::RimVbiosCertChain,
            Self::RimVersionMatch(RimKind::Vbios) => C::RimVbiosVersionMatch,
            Self::RimProductMatch(RimKind::Vbios) => C::RimVbiosProductMatch,
            Self::RimIndexConflictFree => C::RimIndexConflictFree,
            Self::MeasurementsMatch => C::MeasurementsMatch,
            Self::Ocsp => C::Ocsp,
        }
    }
}

impl<'de> Deserialize<'de> for GpuCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown GPU check {name:?}")))
    }
}

/// The result of one check: serialized as `true`, `false` or `"skipped: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check ran and passed.
    Passed,
    /// The check ran and failed; the reason is in [`GpuVerdict::failures`].
    Failed,
    /// The check did not apply.
    Skipped(String),
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Passed => s.serialize_bool(true),
            Self::Failed => s.serialize_bool(false),
            Self::Skipped(reason) => s.serialize_str(&format!("skipped: {reason}")),
        }
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ran(bool),
            Skipped(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ran(true) => Ok(Self::Passed),
            Raw::Ran(false) => Ok(Self::Failed),
            Raw::Skipped(text) => text
                .strip_prefix("skipped: ")
                .map(|r| Self::Skipped(r.to_owned()))
                .ok_or_else(|| serde::de::Error::custom("expected true, false or \"skipped: …\"")),
        }
    }
}

/// Every check in the order it ran; serialized as an ordered JSON map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks(pub Vec<(GpuCheck, Outcome)>);

impl Checks {
    /// The outcome of `check`, if it ran.
    pub fn get(&self, check: GpuCheck) -> Option<&Outcome> {
        self.0.iter().find(|(c, _)| *c == check).map(|(_, o)| o)
    }
}

impl<'de> Deserialize<'de> for Checks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Checks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of GPU check names to outcomes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Checks, A::Error> {
                let mut checks = Vec::new();
                while let Some((check, outcome)) = map.next_entry::<GpuCheck, Outcome>()? {
                    checks.push((check, outcome));
                }
                Ok(Checks(checks))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Serialize for Checks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (check, outcome) in &self.0 {
            map.serialize_entry(&check.name(), outcome)?;
        }
        map.end()
    }
}

/// One failed check and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFailure {
    /// The check.
    pub check: GpuCheck,
    /// Why, for people; may quote evidence fields.
    pub detail: String,
}

/// A golden measurement the report does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementMismatch {
    /// RIM index (SPDM index − 1).
    pub index: u32,
    /// The RIM it comes from.
    pub rim: RimKind,
    /// The accepted values, hex.
    pub expected: Vec<String>,
    /// The report's value, hex (`None` if the report has no block at that index).
    pub actual: Option<String>,
}

/// A RIM as the verdict reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RimSummary {
    /// Driver or VBIOS.
    pub kind: RimKind,
    /// `colloquialVersion`.
    pub colloquial_version: String,
    /// `product`.
    pub product: String,
    /// `tagId`.
    pub tag_id: String,
    /// Active golden indices.
    pub active_indices: Vec<u32>,
    /// Subject of the signer certificate.
    pub signer: Option<String>,
}

/// What the GPU evidence says, for policies. Trustworthy only in an accepting verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuClaims {
    /// `HOPPER` or `BLACKWELL`, from the chip.
    pub architecture: Option<String>,
    /// The chip (`GH100`, `GB100`): CHIP_INFO, else the leaf certificate's subject.
    pub chip: Option<String>,
    /// The BROM certificate's common name (`GH100 A01 GSP BROM`).
    pub hwmodel: Option<String>,
    /// Driver version (`545.00`).
    pub driver_version: Option<String>,
    /// VBIOS version, lower case (`96.00.5e.00.01`).
    pub vbios_version: Option<String>,
    /// Board project, project SKU, chip SKU.
    pub project: Option<String>,
    /// Board project SKU.
    pub project_sku: Option<String>,
    /// Chip SKU.
    pub chip_sku: Option<String>,
    /// The driver RIM's identifier at NVIDIA's RIM service.
    pub driver_rim_id: Option<String>,
    /// The VBIOS RIM's identifier at NVIDIA's RIM service.
    pub vbios_rim_id: Option<String>,
    /// The request nonce (the verifier's challenge), hex.
    pub request_nonce: Option<String>,
    /// The GPU's responder nonce, hex.
    pub responder_nonce: Option<String>,
    /// The report's FWID, hex.
    pub fwid: Option<String>,
    /// The leaf certificate's FWID, hex.
    pub leaf_cert_fwid: Option<String>,
    /// GPU mode from FEATURE_FLAG (`SPT`, `MPT`, `PPCIE`), opaque data version 1 and later.
    pub gpu_mode: Option<String>,
    /// NVDEC0 status, hex byte (`55` disabled, `aa` enabled).
    pub nvdec0_status: Option<String>,
    /// Secure boot: `Some(true)` only when every golden measurement matched (NVIDIA's
    /// `secboot` claim); `None` when the measurements were not compared or did not match.
    pub secure_boot: Option<bool>,
    /// `disabled` only when every golden measurement matched (NVIDIA's `dbgstat`): a GPU in
    /// a debug or DevTools configuration does not measure as its RIMs say. `None` otherwise.
    pub debug_status: Option<String>,
    /// Whether RIMs were supplied and the measurements compared.
    pub measurements_compared: bool,
    /// Golden values the report does not match.
    pub measurement_mismatches: Vec<MeasurementMismatch>,
    /// The RIMs read.
    pub rims: Vec<RimSummary>,
    /// All decoded opaque data.
    pub opaque: Option<OpaqueData>,
    /// The measurement blocks.
    pub measurements: Vec<MeasurementBlock>,
    /// The device chain's subjects and validity, leaf first.
    pub device_certificates: Vec<CertSummary>,
    /// Whether the last certificate the GPU supplied is the pinned root (it is replaced by
    /// the pinned root either way).
    pub carried_root_is_pinned: Option<bool>,
    /// OCSP results, or `not_checked`.
    pub revocation: Revocation,
}

/// A certificate's subject and validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// notBefore.
    pub not_before: Timestamp,
    /// notAfter.
    pub not_after: Timestamp,
}

impl CertSummary {
    fn of(cert: &Cert) -> Self {
        let (not_before, not_after) = cert.validity();
        Self {
            subject: cert.subject(),
            not_before: Timestamp::from_unix_seconds(not_before),
            not_after: Timestamp::from_unix_seconds(not_after),
        }
    }
}

/// The verdict on one GPU's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GpuVerdict {
    /// Accept only if no check failed.
    pub verdict: Decision,
    /// Every check, in order.
    pub checks: Checks,
    /// The first check that failed.
    pub first_failure: Option<GpuCheck>,
    /// Every failed check with its reason.
    pub failures: Vec<GpuFailure>,
    /// What the evidence says.
    pub claims: GpuClaims,
    /// The time the verdict was judged at.
    pub verified_at: Timestamp,
}

impl GpuVerdict {
    /// True only when every check passed.
    pub fn is_accept(&self) -> bool {
        self.verdict == Decision::Accept
    }

    /// The outcome of `check`, if it ran.
    pub fn check(&self, check: GpuCheck) -> Option<&Outcome> {
        self.checks.get(check)
    }

    /// Whether `check` ran and failed.
    pub fn failed(&self, check: GpuCheck) -> bool {
        self.check(check) == Some(&Outcome::Failed)
    }
}

/// The claims of a GPU verdict as [`Claims::NvidiaGpu`](crate::Claims::NvidiaGpu) carries them
/// in a TEE-wide [`Verdict`](crate::Verdict): every check, the first failure, what was not
/// compared, and the GPU's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuVerdictClaims {
    /// Every check in order: `true`, `false` or `"skipped: reason"`.
    pub checks: Checks,
    /// The first check that failed.
    pub first_failure: Option<GpuCheck>,
    /// What the verdict does not cover (measurements not compared, revocation not checked).
    pub notes: Vec<String>,
    /// The GPU's claims.
    pub gpu: GpuClaims,
}

impl GpuVerdict {
    /// The verdict judged by `policy`'s `[gpu]` section, in the TEE-wide form: every failed
    /// check of the evidence, then the policy's. A policy without `[gpu]` accepts no GPU
    /// evidence.
    pub fn judge(&self, policy: &crate::Policy) -> crate::Verdict {
        let mut verdict = self.to_verdict();
        let mut failures = crate::verdict::Failures::default();
        match &policy.gpu {
            None => failures.push(
                crate::Check::GpuPolicy,
                "the policy has no [gpu] section, so it accepts no GPU evidence",
            ),
            Some(gpu) => gpu.evaluate(self, &mut failures),
        }
        verdict.failures.extend(failures.into_vec());
        if !verdict.failures.is_empty() {
            verdict.verdict = Decision::Reject;
        }
        verdict.policy_applied = policy.gpu.is_some();
        verdict
    }

    /// The verdict in the TEE-wide form that SNP and TDX verdicts have (what `confidant
    /// attest verify` prints): `tee` is `nvidia_gpu`, each failed check is named, and the
    /// claims carry every check. No policy is applied (`policy_applied` is false).
    pub fn to_verdict(&self) -> crate::Verdict {
        let mut notes = Vec::new();
        if !self.claims.measurements_compared {
            notes.push(
                "measurements not compared: no RIM was given, so only the evidence's authenticity was checked"
                    .to_owned(),
            );
        }
        if self.claims.revocation.summary != "good" {
            notes.push(format!(
                "certificate revocation (OCSP): {}",
                self.claims.revocation.summary
            ));
        }
        let failures = self
            .failures
            .iter()
            .map(|f| crate::Failure {
                check: f.check.as_check(),
                detail: f.detail.clone(),
            })
            .collect();
        crate::Verdict::new(
            crate::TeeKind::NvidiaGpu,
            Some(crate::Claims::NvidiaGpu(Box::new(GpuVerdictClaims {
                checks: self.checks.clone(),
                first_failure: self.first_failure,
                notes,
                gpu: self.claims.clone(),
            }))),
            failures,
            self.verified_at,
            // No `[gpu]` policy judged it: the accept says the evidence is authentic (and,
            // with RIMs, that it matches them), nothing more.
            false,
        )
    }
}

/// Optional inputs to [`verify_gpu`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuReferences<'a> {
    /// RIM files (driver and VBIOS; the kind is read from each).
    pub rims: &'a [&'a [u8]],
    /// DER OCSP responses for certificates of the device and RIM chains.
    pub ocsp: &'a [&'a [u8]],
}

/// Collects outcomes and failures as checks run.
#[derive(Default)]
struct Recorder {
    checks: Vec<(GpuCheck, Outcome)>,
    failures: Vec<GpuFailure>,
}

impl Recorder {
    fn record(&mut self, check: GpuCheck, result: Result<(), String>) {
        match result {
            Ok(()) => self.checks.push((check, Outcome::Passed)),
            Err(detail) => {
                self.checks.push((check, Outcome::Failed));
                self.failures.push(GpuFailure { check, detail });
            }
        }
    }

    fn skip(&mut self, check: GpuCheck, reason: &str) {
        self.checks
            .push((check, Outcome::Skipped(reason.to_owned())));
    }
}

const NOT_PARSED: &str = "report not parsed";

/// The chip a leaf certificate names (`GH100 A01 GSP FMC LF` → `GH100`).
fn chip_from_cert(cert: &Cert) -> Option<String> {
    cert.common_name()?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn architecture(chip: &str) -> Option<String> {
    if chip.starts_with("GH") {
        Some("HOPPER".to_owned())
    } else if chip.starts_with("GB") {
        Some("BLACKWELL".to_owned())
    } else {
        None
    }
}

/// Verifies one GPU's evidence at `now` against the verifier's `nonce`, with optional RIMs
/// and OCSP responses. Never fails: every problem is a failed check in the verdict.
pub fn verify_gpu(
    evidence: &GpuEvidence,
    nonce: &[u8; 32],
    references: GpuReferences<'_>,
    now: Timestamp,
) -> GpuVerdict {
    let mut rec = Recorder::default();
    let mut claims = GpuClaims::default();

    // report_parsed
    let report = SpdmReport::parse(&evidence.report);
    rec.record(
        GpuCheck::ReportParsed,
        report.as_ref().map(|_| ()).map_err(ToString::to_string),
    );
    let report = report.ok();
    let chain = certs::parse_pem_chain(evidence.certificate_chain.as_bytes());
    let leaf = chain.as_ref().ok().and_then(|c| c.first());
    claims.device_certificates = chain
        .as_ref()
        .map(|c| c.iter().map(CertSummary::of).collect())
        .unwrap_or_default();
    claims.hwmodel = chain
        .as_ref()
        .ok()
        .and_then(|c| c.get(1))
        .and_then(Cert::common_name);
    let chip = report
        .as_ref()
        .and_then(|r| r.opaque.chip_info.clone())
        .or_else(|| leaf.and_then(chip_from_cert));
    claims.architecture = chip.as_deref().and_then(architecture);
    claims.chip = chip.clone();
    if let Some(r) = &report {
        fill_report_claims(&mut claims, r, chip.as_deref());
    }

    // fwid_matches_leaf_cert
    match report.as_ref().map(|r| r.opaque.fwid.as_ref()) {
        None => rec.skip(GpuCheck::FwidMatchesLeafCert, NOT_PARSED),
        Some(None) => rec.skip(GpuCheck::FwidMatchesLeafCert, "no FWID opaque field"),
        Some(Some(fwid)) => {
            let result = match leaf.map(Cert::fwid) {
                None => Err("no readable leaf certificate".to_owned()),
                Some(Err(e)) => Err(format!("leaf certificate FWID: {e}")),
                Some(Ok(None)) => Err("the leaf certificate has no FWID extension".to_owned()),
                Some(Ok(Some(cert_fwid))) => {
                    claims.leaf_cert_fwid = Some(hex::encode(&cert_fwid));
                    if bool::from(cert_fwid.ct_eq(fwid)) {
                        Ok(())
                    } else {
                        Err(format!(
                            "report FWID {} is not the leaf certificate's {}",
                            hex::encode(fwid),
                            hex::encode(&cert_fwid)
                        ))
                    }
                }
            };
            rec.record(GpuCheck::FwidMatchesLeafCert, result);
        }
    }

    // cert_chain
    let device_root = certs::pinned(NvidiaRoot::DeviceIdentity);
    let chain_result = match (&chain, device_root) {
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
        (Ok(chain), Ok(root)) => {
            certs::verify_chain(chain, root, now, Some(DEVICE_CHAIN_LEN)).map(|path| {
                claims.carried_root_is_pinned = Some(path.carried_root_is_pinned);
            })
        }
    };
    rec.record(GpuCheck::CertChain, chain_result);

    // nonce
    match &report {
        None => rec.skip(GpuCheck::Nonce, NOT_PARSED),
        Some(r) => rec.record(
            GpuCheck::Nonce,
            if bool::from(r.request_nonce.ct_eq(nonce)) {
                Ok(())
            } else {
                Err(format!(
                    "the report's nonce {} is not the expected {}",
                    hex::encode(r.request_nonce),
                    hex::encode(nonce)
                ))
            },
        ),
    }

    // report_signature
    match &report {
        None => rec.skip(GpuCheck::ReportSignature, NOT_PARSED),
        Some(r) => {
            let result = match leaf.map(Cert::p384_key) {
                None => Err("no readable leaf certificate".to_owned()),
                Some(Err(e)) => Err(e),
                Some(Ok(key)) => {
                    let signed = evidence.report.get(..r.signed_len).unwrap_or_default();
                    if certs::verify_fixed_signature(key, signed, &r.signature) {
                        Ok(())
                    } else {
                        Err(
                            "the report signature does not verify under the leaf certificate's key"
                                .to_owned(),
                        )
                    }
                }
            };
            rec.record(GpuCheck::ReportSignature, result);
        }
    }

    // RIMs
    let mut rim_chains: Vec<Vec<Cert>> = Vec::new();
    if !references.rims.is_empty() {
        appraise_rims(
            &mut rec,
            &mut claims,
            report.as_ref(),
            chip.as_deref(),
            references.rims,
            now,
            &mut rim_chains,
        );
    }

    // OCSP
    let device_chain: &[Cert] = chain.as_deref().unwrap_or_default();
    claims.revocation = ocsp::assess(device_chain, &rim_chains, references.ocsp, now);
    if !references.ocsp.is_empty() {
        rec.record(GpuCheck::Ocsp, claims.revocation.problems());
    }

    let first_failure = rec
        .checks
        .iter()
        .find(|(_, o)| *o == Outcome::Failed)
        .map(|(c, _)| *c);
    GpuVerdict {
        verdict: if first_failure.is_none() {
            Decision::Accept
        } else {
            Decision::Reject
        },
        checks: Checks(rec.checks),
        first_failure,
        failures: rec.failures,
        claims,
        verified_at: now,
    }
}

fn fill_report_claims(claims: &mut GpuClaims, r: &SpdmReport, chip: Option<&str>) {
    let o = &r.opaque;
    claims.driver_version = o.driver_version.clone();
    claims.vbios_version = o.vbios_version.clone();
    claims.project = o.project.clone();
    claims.project_sku = o.project_sku.clone();
    claims.chip_sku = o.chip_sku.clone();
    claims.request_nonce = Some(hex::encode(r.request_nonce));
    claims.responder_nonce = Some(hex::encode(r.responder_nonce));
    claims.fwid = o.fwid.as_ref().map(hex::encode);
    claims.nvdec0_status = o.nvdec0_status.map(|b| format!("{b:02x}"));
    claims.gpu_mode = o
        .feature_flag
        .filter(|_| o.opaque_data_version.unwrap_or(0) >= 1)
        .map(|f| match f {
            0 => "SPT".to_owned(),
            1 => "MPT".to_owned(),
            2 => "PPCIE".to_owned(),
            other => format!("unknown({other})"),
        });
    if let (Some(project), Some(sku), Some(chip_sku), Some(vbios)) =
        (&o.project, &o.project_sku, &o.chip_sku, &o.vbios_version)
    {
        claims.vbios_rim_id = Some(format!(
            "NV_GPU_VBIOS_{project}_{sku}_{chip_sku}_{}",
            vbios.replace('.', "").to_ascii_uppercase()
        ));
    }
    if let (Some(chip), Some(driver)) = (chip, &o.driver_version) {
        claims.driver_rim_id = Some(if chip.starts_with("GH") {
            format!("NV_GPU_DRIVER_GH100_{driver}")
        } else {
            format!("NV_GPU_CC_DRIVER_{chip}_{driver}")
        });
    }
    claims.opaque = Some(o.clone());
    claims.measurements = r.measurements.clone();
}

/// One supplied RIM after reading.
struct ReadRim {
    kind: RimKind,
    appraisal: Result<rim::RimAppraisal, RimError>,
}

fn appraise_rims(
    rec: &mut Recorder,
    claims: &mut GpuClaims,
    report: Option<&SpdmReport>,
    chip: Option<&str>,
    rims: &[&[u8]],
    now: Timestamp,
    rim_chains: &mut Vec<Vec<Cert>>,
) {
    // Read each RIM; one that cannot be read takes the first kind not yet supplied.
    let appraisals: Vec<Result<rim::RimAppraisal, RimError>> =
        rims.iter().map(|bytes| rim::appraise(bytes)).collect();
    let mut read: Vec<ReadRim> = Vec::new();
    let known: Vec<RimKind> = appraisals
        .iter()
        .filter_map(|a| a.as_ref().ok().map(|a| a.content.kind))
        .collect();
    let mut free = [RimKind::Driver, RimKind::Vbios]
        .into_iter()
        .filter(|k| !known.contains(k));
    for appraisal in appraisals {
        let kind = match &appraisal {
            Ok(a) => a.content.kind,
            Err(_) => free.next().unwrap_or(RimKind::Driver),
        };
        read.push(ReadRim { kind, appraisal });
    }
    let rim_root = certs::pinned(NvidiaRoot::RimSigning);

    for kind in [RimKind::Driver, RimKind::Vbios] {
        let of_kind: Vec<&ReadRim> = read.iter().filter(|r| r.kind == kind).collect();
        let checks = [
            GpuCheck::RimSignature(kind),
            GpuCheck::RimCertChain(kind),
            GpuCheck::RimVersionMatch(kind),
            GpuCheck::RimProductMatch(kind),
        ];
        let one = match of_kind.as_slice() {
            [one] => one,
            [] => {
                for check in checks {
                    rec.record(check, Err(format!("no {} RIM was supplied", kind.name())));
                }
                continue;
            }
            _ => {
                for check in checks {
                    rec.record(
                        check,
                        Err(format!(
                            "{} {} RIMs were supplied, expected one",
                            of_kind.len(),
                            kind.name()
                        )),
                    );
                }
                continue;
            }
        };
        let appraisal = match &one.appraisal {
            Ok(a) => a,
            Err(e) => {
                rec.record(checks[0], Err(e.to_string()));
                for check in &checks[1..] {
                    rec.record(
                        *check,
                        Err(format!("the {} RIM could not be read", kind.name())),
                    );
                }
                continue;
            }
        };
        rec.record(GpuCheck::RimSignature(kind), appraisal.signature.clone());
        let chain_result = match (&appraisal.certs, &rim_root) {
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e.clone()),
            (Ok(certs), Ok(root)) => certs::verify_chain(certs, root, now, None).map(|_| ()),
        };
        if let Ok(certs) = &appraisal.certs {
            rim_chains.push(certs.clone());
        }
        rec.record(GpuCheck::RimCertChain(kind), chain_result);
        let content = &appraisal.content;
        claims.rims.push(RimSummary {
            kind,
            colloquial_version: content.colloquial_version.clone(),
            product: content.product.clone(),
            tag_id: content.tag_id.clone(),
            active_indices: content.active().map(|(i, _, _)| i).collect(),
            signer: appraisal
                .certs
                .as_ref()
                .ok()
                .and_then(|c| c.first())
                .map(Cert::subject),
        });
        match report {
            None => rec.skip(GpuCheck::RimVersionMatch(kind), NOT_PARSED),
            Some(r) => {
                let reported = match kind {
                    RimKind::Driver => r.opaque.driver_version.as_deref(),
                    RimKind::Vbios => r.opaque.vbios_version.as_deref(),
                };
                rec.record(
                    GpuCheck::RimVersionMatch(kind),
                    match reported {
                        None => Err(format!("the report has no {} version", kind.name())),
                        Some(v) if v.eq_ignore_ascii_case(&content.colloquial_version) => Ok(()),
                        Some(v) => Err(format!(
                            "the {} RIM is for version {}, the report says {v}",
                            kind.name(),
                            content.colloquial_version
                        )),
                    },
                );
            }
        }
        match (report, chip) {
            (None, _) => rec.skip(GpuCheck::RimProductMatch(kind), NOT_PARSED),
            (Some(_), None) => rec.record(
                GpuCheck::RimProductMatch(kind),
                Err("the GPU's chip is unknown (no CHIP_INFO, no readable leaf)".to_owned()),
            ),
            (Some(_), Some(chip)) => rec.record(
                GpuCheck::RimProductMatch(kind),
                if content.product.eq_ignore_ascii_case(chip) {
                    Ok(())
                } else {
                    Err(format!(
                        "the {} RIM is for {}, the GPU is {chip}",
                        kind.name(),
                        content.product
                    ))
                },
            ),
        }
    }

    // rim_index_conflict_free
    let contents: Vec<(RimKind, &RimContent)> = read
        .iter()
        .filter_map(|r| r.appraisal.as_ref().ok().map(|a| (r.kind, &a.content)))
        .collect();
    let mut conflicts: Vec<u32> = Vec::new();
    for (i, (_, a)) in contents.iter().enumerate() {
        for (_, b) in contents.iter().skip(i + 1) {
            for (index, _, _) in a.active() {
                if b.active().any(|(j, _, _)| j == index) && !conflicts.contains(&index) {
                    conflicts.push(index);
                }
            }
        }
    }
    rec.record(
        GpuCheck::RimIndexConflictFree,
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "indices active in more than one RIM: {conflicts:?}"
            ))
        },
    );

    // measurements_match
    let Some(r) = report else {
        rec.skip(GpuCheck::MeasurementsMatch, NOT_PARSED);
        return;
    };
    let result = compare_measurements(r, &contents, claims);
    if result.is_ok() {
        claims.secure_boot = Some(true);
        claims.debug_status = Some("disabled".to_owned());
    }
    claims.measurements_compared = true;
    rec.record(GpuCheck::MeasurementsMatch, result);
}

fn compare_measurements(
    r: &SpdmReport,
    contents: &[(RimKind, &RimContent)],
    claims: &mut GpuClaims,
) -> Result<(), String> {
    for kind in [RimKind::Driver, RimKind::Vbios] {
        if !contents.iter().any(|(k, _)| *k == kind) {
            return Err(format!(
                "no readable {} RIM: its golden values cannot be compared",
                kind.name()
            ));
        }
    }
    let skip_nvdec0 = match r.opaque.nvdec0_status {
        Some(spdm::NVDEC0_DISABLED) => true,
        Some(spdm::NVDEC0_ENABLED) => false,
        Some(other) => return Err(format!("unknown NVDEC0 status {other:#04x}")),
        None => return Err("the report has no NVDEC0 status".to_owned()),
    };
    let mut mismatches = Vec::new();
    for (kind, content) in contents {
        for (index, size, alternatives) in content.active() {
            if index == NVDEC0_RIM_INDEX && skip_nvdec0 {
                continue;
            }
            let block = u8::try_from(index)
                .ok()
                .and_then(|i| i.checked_add(1))
                .and_then(|spdm_index| r.measurement(spdm_index));
            let matched = block.is_some_and(|b| {
                b.value.len() == size && alternatives.iter().any(|a| a.as_slice() == b.value)
            });
            if !matched {
                mismatches.push(MeasurementMismatch {
                    index,
                    rim: *kind,
                    expected: alternatives.iter().map(hex::encode).collect(),
                    actual: block.map(|b| hex::encode(&b.value)),
                });
            }
        }
    }
    let result = if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} golden measurement(s) do not match, at RIM indices {:?}",
            mismatches.len(),
            mismatches.iter().map(|m| m.index).collect::<Vec<_>>()
        ))
    };
    claims.measurement_mismatches = mismatches;
    result
}
