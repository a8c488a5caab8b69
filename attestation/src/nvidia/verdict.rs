//! What [`super::verify_gpu`] reports: the evidence, each check by NVIDIA's name with its
//! outcome, the claims a policy reads, and the verdict in the TEE-wide form.

use super::*;

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
    pub(super) fn of(cert: &Cert) -> Self {
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
