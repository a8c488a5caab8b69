//! The outcome of verification: accept or reject, every failed check, and the claims.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::claims::{Claims, Product, SnpTcb};
use crate::evidence::TeeKind;
use crate::timestamp::Timestamp;

/// Accept or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Decision {
    /// Every check passed.
    Accept,
    /// At least one check failed.
    Reject,
}

/// A check that verification or policy evaluation performs. Serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Check {
    /// The evidence could be decoded at all.
    EvidenceFormat,
    /// The SNP report is in canonical form (reserved bytes zero, trailing bytes zero).
    ReportEncoding,
    /// The SNP report version is one this crate understands (2, 3, 4 or 5).
    ReportVersion,
    /// The SNP signature algorithm is ECDSA P-384 with SHA-384.
    SignatureAlgorithm,
    /// A VCEK or VLEK is present, parses, and matches the key the report names.
    EndorsementKey,
    /// The product is known and consistent across the VEK, the CPUID and the chain.
    Product,
    /// Any ARK or ASK/ASVK carried in the evidence equals the built-in pinned one.
    RootPinning,
    /// ARK → ASK/ASVK → VCEK/VLEK signatures verify.
    CertificateChain,
    /// Every certificate is valid at the verification time.
    CertificateValidity,
    /// The report signature verifies under the VEK.
    ReportSignature,
    /// The VEK's TCB extensions equal the report's reported_tcb.
    TcbExtensions,
    /// The VCEK's hwID equals the report's chip_id.
    ChipId,
    /// TDX collateral is available.
    Collateral,
    /// The TDX quote verifies with its collateral under the pinned Intel root.
    QuoteVerification,
    /// Simulated evidence is accepted only when the policy opts in.
    Simulated,
    /// The simulated chain's root is one the policy pins.
    SimulatedRoot,
    /// The guest is not debuggable unless the policy allows it.
    Debug,
    /// The SNP guest may not be associated with a migration agent unless allowed.
    MigrationAgent,
    /// The VMPL is one the policy allows.
    Vmpl,
    /// The measurement (SNP measurement, TDX MRTD) is on the allowlist.
    Measurement,
    /// The TDX runtime measurement registers are on their allowlists.
    Rtmr,
    /// report_data equals the value the policy requires.
    ReportData,
    /// host_data equals the value the policy requires.
    HostData,
    /// The product is one the policy allows.
    AllowedProduct,
    /// The reported TCB meets the policy's minimum.
    MinTcb,
    /// The TDX TCB status is one the policy accepts.
    TdxTcbStatus,
    /// The TDX collateral is at least as recent as the policy's minimum
    /// `tcbEvaluationDataNumber`.
    TcbEvaluationDataNumber,
    /// The evidence is not older than the policy's maximum age.
    EvidenceAge,
    /// GPU: the SPDM report parses exactly (no byte after the signature).
    ReportParsed,
    /// GPU: the report's FWID equals the leaf certificate's.
    FwidMatchesLeafCert,
    /// GPU: the device chain reaches the pinned NVIDIA Device Identity CA.
    CertChain,
    /// GPU: the report's nonce is the verifier's.
    Nonce,
    /// GPU: the driver RIM's XML signature verifies.
    RimDriverSignature,
    /// GPU: the driver RIM's signer chain reaches the pinned NVIDIA RIM root.
    RimDriverCertChain,
    /// GPU: the driver RIM is for the report's driver version.
    RimDriverVersionMatch,
    /// GPU: the driver RIM is for the report's chip.
    RimDriverProductMatch,
    /// GPU: the VBIOS RIM's XML signature verifies.
    RimVbiosSignature,
    /// GPU: the VBIOS RIM's signer chain reaches the pinned NVIDIA RIM root.
    RimVbiosCertChain,
    /// GPU: the VBIOS RIM is for the report's VBIOS version.
    RimVbiosVersionMatch,
    /// GPU: the VBIOS RIM is for the report's chip.
    RimVbiosProductMatch,
    /// GPU: no index is active in both RIMs.
    RimIndexConflictFree,
    /// GPU: every active golden measurement matches.
    MeasurementsMatch,
    /// GPU: supplied OCSP responses verify and revoke nothing (and, when the policy
    /// requires OCSP, every certificate has a good status).
    Ocsp,
    /// GPU policy: a `[gpu]` section exists to judge GPU evidence at all.
    GpuPolicy,
    /// GPU policy `cc_mode = "on"`: RIMs compared and every golden measurement matched.
    GpuCcMode,
    /// GPU policy: the driver version is allowed.
    GpuDriverVersion,
    /// GPU policy: the VBIOS version is allowed.
    GpuVbiosVersion,
    /// GPU policy: the GPU mode (SPT, MPT, PPCIE) is allowed.
    GpuMode,
    /// GPU policy: the number of distinct GPUs that presented evidence is the policy's, and
    /// a policy without `[gpu]` saw none.
    GpuCount,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name is the stable one; reuse it.
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// One failed check and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The check that failed.
    pub check: Check,
    /// A human-readable reason. It may quote evidence fields, never secrets.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

/// A short view of the TCB for the verdict's top level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum TcbSummary {
    /// The SNP reported_tcb (the one the VEK endorses).
    Snp(SnpTcb),
    /// The TDX TCB status and advisories.
    Tdx {
        /// TCB status, or `None` when the quote did not verify.
        status: Option<String>,
        /// Applicable Intel advisories.
        advisory_ids: Vec<String>,
        /// TEE TCB SVN, hex.
        tee_tcb_svn: String,
    },
}

/// The verdict on one piece of evidence.
///
/// Serializes to the JSON that `confidant attest verify` prints: `verdict`, `failures`, `tee`,
/// `product`, `measurement`, `report_data`, `debug`, `tcb`, then the full `claims`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Verdict {
    /// Accept only if `failures` is empty.
    pub verdict: Decision,
    /// Every failed check, in the order they ran.
    pub failures: Vec<Failure>,
    /// The TEE the evidence claims to come from.
    pub tee: TeeKind,
    /// The SNP product, when known.
    pub product: Option<Product>,
    /// SNP measurement or TDX MRTD, hex.
    pub measurement: Option<String>,
    /// report_data, hex (GPU evidence: the request nonce).
    pub report_data: Option<String>,
    /// Whether the guest is debuggable (GPU evidence: `false` only when every golden
    /// measurement matched, else unknown).
    pub debug: Option<bool>,
    /// The TCB, summarized.
    pub tcb: Option<TcbSummary>,
    /// The time verification was judged at.
    pub verified_at: Timestamp,
    /// Whether a policy that pins the guest was applied: `false` under
    /// [`Policy::dangerous_authenticity_only`](crate::Policy::dangerous_authenticity_only),
    /// whose accept says only that the evidence is authentic.
    #[serde(default = "applied_by_default")]
    pub policy_applied: bool,
    /// All decoded claims (`None` if the evidence could not be decoded).
    pub claims: Option<Claims>,
}

fn applied_by_default() -> bool {
    true
}

impl Verdict {
    pub(crate) fn new(
        tee: TeeKind,
        claims: Option<Claims>,
        failures: Vec<Failure>,
        verified_at: Timestamp,
        policy_applied: bool,
    ) -> Self {
        let verdict = if failures.is_empty() {
            Decision::Accept
        } else {
            Decision::Reject
        };
        let (product, measurement, report_data, debug, tcb) = match &claims {
            Some(Claims::Snp(c)) => (
                c.product,
                Some(hex::encode(c.measurement)),
                Some(hex::encode(c.report_data)),
                Some(c.policy.debug),
                Some(TcbSummary::Snp(c.reported_tcb.clone())),
            ),
            Some(Claims::Tdx(c)) => (
                None,
                Some(hex::encode(c.mr_td)),
                Some(hex::encode(c.report_data)),
                Some(c.debug),
                Some(TcbSummary::Tdx {
                    status: c.tcb_status.clone(),
                    advisory_ids: c.advisory_ids.clone(),
                    tee_tcb_svn: hex::encode(c.tee_tcb_svn),
                }),
            ),
            Some(Claims::NvidiaGpu(c)) => (
                None,
                None,
                c.gpu.request_nonce.clone(),
                c.gpu.debug_status.as_deref().map(|s| s != "disabled"),
                None,
            ),
            Some(Claims::Sample(c)) => (
                None,
                Some(hex::encode(c.measurement)),
                Some(hex::encode(c.report_data)),
                None,
                None,
            ),
            None => (None, None, None, None, None),
        };
        Self {
            verdict,
            failures,
            tee,
            product,
            measurement,
            report_data,
            debug,
            tcb,
            verified_at,
            policy_applied,
            claims,
        }
    }

    /// True only when every check passed.
    pub fn is_accept(&self) -> bool {
        self.verdict == Decision::Accept
    }

    /// Whether `check` is among the failures.
    pub fn failed(&self, check: Check) -> bool {
        self.failures.iter().any(|f| f.check == check)
    }

    /// The verdict as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        // Every field is plain data (strings, numbers, hex), so serialization cannot fail;
        // fall back to a minimal reject rather than panic if that ever changes.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|_| {
                r#"{"verdict":"reject","failures":[{"check":"evidence_format","detail":"verdict serialization failed"}]}"#
                    .to_owned()
            })
    }
}

/// Collects failures as checks run, so that none is lost to an early return.
#[derive(Debug, Default)]
pub(crate) struct Failures(Vec<Failure>);

impl Failures {
    pub(crate) fn push(&mut self, check: Check, detail: impl Into<String>) {
        self.0.push(Failure {
            check,
            detail: detail.into(),
        });
    }

    /// Records a failure unless `ok`.
    pub(crate) fn require(&mut self, ok: bool, check: Check, detail: impl FnOnce() -> String) {
        if !ok {
            self.push(check, detail());
        }
    }

    pub(crate) fn into_vec(self) -> Vec<Failure> {
        self.0
    }
}
