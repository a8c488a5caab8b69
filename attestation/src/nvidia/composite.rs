//! Composite evidence: a CPU TEE's evidence together with the evidence of every GPU it serves
//! on, judged as one.
//!
//! A GPU's report proves what the GPU is and that it answered a nonce; it says nothing about
//! which CPU TEE asked. Two bindings tie the two together, so that GPU evidence cannot be
//! swapped in from another machine or another session:
//!
//! 1. **The GPU nonce is derived from the verifier's nonce**:
//!    `gpu_nonce = SHA-256("confidant/v1/nvidia-gpu-nonce" ‖ 0x00 ‖ verifier_nonce)`, where
//!    `verifier_nonce` is the challenge exactly as the verifier sent it (for RCAR, the
//!    base64 text of the broker's 32 random bytes). The domain tag keeps the GPU nonce from
//!    being equal to any other use of the same challenge. Every GPU of one attestation
//!    answers the same GPU nonce. See [`gpu_nonce`].
//! 2. **The CPU report binds the GPU evidence**: the attester hashes the canonical GPU
//!    evidence (with SHA-384, alongside its TEE key and the verifier's nonce) into the CPU
//!    report's `report_data`. That encoding belongs to the protocol that carries the
//!    evidence (for RCAR, `confidant::keys::protocol`); this crate only checks the
//!    `report_data` it is given.
//!
//! Binding 2 alone would let a TEE bind evidence recorded from someone else's GPU; binding 1
//! alone would let a man in the middle pair a genuine GPU's fresh evidence with another CPU
//! TEE. Both together leave one pairing: this CPU TEE, in this session, with GPUs that
//! answered this session.
//!
//! A verifier first checks each GPU's *integrity* ([`integrity_failures`]: the report parses,
//! the chain reaches the pinned root, the nonce, the signature), then judges the set under a
//! policy ([`judge_gpus`]): **fail closed**, a policy with a `[gpu]` section needs passing
//! evidence from the required number of distinct GPUs, and a policy without one accepts only
//! a CPU TEE that presented no GPU evidence at all. [`verify_gpus`] is the first step for a
//! whole set, with the verifier's own RIMs and OCSP responses ([`HeldReferences`]); the key
//! broker and the client's attested channel both use it, then [`judge_gpus`].
//!
//! The evidence of a set travels as one canonical JSON text ([`GpuEvidenceSet`]), whose
//! SHA-384 ([`GpuEvidenceSet::digest`]) is what a CPU report binds.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha384};

use super::error::SpdmError;
use super::{
    GpuCheck, GpuEvidence, GpuFailure, GpuReferences, GpuVerdict, Outcome, RimContent, RimError,
    RimKind, SpdmReport,
};
use crate::policy::Policy;
use crate::timestamp::Timestamp;
use crate::verdict::{Check, Failure, Failures};

/// The domain tag of [`gpu_nonce`].
pub const GPU_NONCE_DOMAIN: &[u8] = b"confidant/v1/nvidia-gpu-nonce";

/// The nonce a GPU must answer for a verifier's challenge `verifier_nonce` (the challenge's
/// bytes as sent: for RCAR, the base64 text): `SHA-256(GPU_NONCE_DOMAIN ‖ 0x00 ‖
/// verifier_nonce)`.
pub fn gpu_nonce(verifier_nonce: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(GPU_NONCE_DOMAIN);
    hash.update([0u8]);
    hash.update(verifier_nonce);
    hash.finalize().into()
}

/// The checks that make GPU evidence authentic and fresh, whatever a policy then asks of it.
/// [`GpuCheck::FwidMatchesLeafCert`] may be skipped (reports without a FWID field); none may
/// fail.
pub const INTEGRITY_CHECKS: [GpuCheck; 5] = [
    GpuCheck::ReportParsed,
    GpuCheck::FwidMatchesLeafCert,
    GpuCheck::CertChain,
    GpuCheck::Nonce,
    GpuCheck::ReportSignature,
];

/// The failures among [`INTEGRITY_CHECKS`]; empty when the evidence is authentic and answered
/// the nonce. RIM and OCSP failures are not integrity failures: a policy judges them.
pub fn integrity_failures(verdict: &GpuVerdict) -> Vec<&GpuFailure> {
    let mut out: Vec<&GpuFailure> = verdict
        .failures
        .iter()
        .filter(|f| INTEGRITY_CHECKS.contains(&f.check))
        .collect();
    // A check that should have run and did not (never the case with `verify_gpu`, which runs
    // or skips each) would leave `out` empty; refuse it all the same.
    if out.is_empty()
        && INTEGRITY_CHECKS
            .iter()
            .filter(|c| **c != GpuCheck::FwidMatchesLeafCert)
            .any(|c| verdict.check(*c) != Some(&Outcome::Passed))
    {
        out.extend(verdict.failures.first());
    }
    out
}

/// Whether [`integrity_failures`] is empty and every integrity check that must run passed.
pub fn is_intact(verdict: &GpuVerdict) -> bool {
    INTEGRITY_CHECKS.iter().all(|c| match verdict.check(*c) {
        Some(Outcome::Passed) => true,
        Some(Outcome::Skipped(_)) => *c == GpuCheck::FwidMatchesLeafCert,
        Some(Outcome::Failed) | None => false,
    })
}

/// The device a verdict is about: the subject of its BROM certificate (the second of the
/// chain, which carries the chip's unique serial number). `None` without one.
pub fn device_identity(verdict: &GpuVerdict) -> Option<&str> {
    verdict
        .claims
        .device_certificates
        .get(1)
        .map(|c| c.subject.as_str())
}

/// Judges the GPU evidence a CPU TEE presented (one verdict per GPU, each from
/// [`super::verify_gpu`] against [`gpu_nonce`] of the session's challenge) under `policy`'s
/// `[gpu]` section. Empty when it passes. Fail closed:
///
/// - without `[gpu]`: passes only when `gpus` is empty (the TEE serves on CPU);
/// - with `[gpu]`: needs at least one GPU (exactly `count` when set), each a distinct device
///   ([`device_identity`]), and each verdict passing every check and the section's rules
///   ([`GpuVerdict::judge`]).
pub fn judge_gpus(policy: &Policy, gpus: &[GpuVerdict]) -> Vec<Failure> {
    let mut failures = Failures::default();
    let Some(gpu) = &policy.gpu else {
        failures.require(gpus.is_empty(), Check::GpuCount, || {
            format!(
                "the policy has no [gpu] section, so it releases only to a TEE that serves on \
                 CPU; {} GPU(s) presented evidence",
                gpus.len()
            )
        });
        return failures.into_vec();
    };
    if gpus.is_empty() {
        failures.push(
            Check::GpuCount,
            "the policy's [gpu] section needs GPU evidence and none was presented (a server on \
             CPU, or one that did not collect it)",
        );
    }
    if let Some(count) = gpu.count {
        failures.require(gpus.len() == count as usize, Check::GpuCount, || {
            format!(
                "the policy needs {count} GPU(s); {} presented evidence",
                gpus.len()
            )
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, verdict) in gpus.iter().enumerate() {
        match device_identity(verdict) {
            None => failures.push(
                Check::GpuCount,
                format!("GPU {i}: its chain names no device (no BROM certificate)"),
            ),
            Some(id) if seen.contains(&id) => failures.push(
                Check::GpuCount,
                format!("GPU {i} is the same device as an earlier one ({id})"),
            ),
            Some(id) => seen.push(id),
        }
        for f in verdict.judge(policy).failures {
            failures.push(f.check, format!("GPU {i}: {}", f.detail));
        }
    }
    failures.into_vec()
}

/// A RIM a verifier holds (its operator supplies NVIDIA's `.swidtag` files): what it says and
/// its bytes, for [`rims_for`].
#[derive(Debug, Clone)]
pub struct HeldRim {
    /// What it says (read, signature not yet checked: [`super::verify_gpu`] checks it).
    pub content: RimContent,
    /// The file.
    pub bytes: Vec<u8>,
}

impl HeldRim {
    /// Reads a RIM file.
    pub fn read(bytes: Vec<u8>) -> Result<Self, RimError> {
        let (content, _signature) = super::rim::read(&bytes)?;
        Ok(Self { content, bytes })
    }
}

/// The driver and VBIOS RIMs among `held` for one GPU's evidence: the RIMs whose version is
/// the report's and whose product is the GPU's chip (CHIP_INFO, else the leaf certificate's
/// name). Both or neither: `Err` says which is missing, and the caller then verifies without
/// RIMs, so that a policy needing them (`cc_mode = "on"`) refuses with that reason.
pub fn rims_for<'a>(
    evidence: &GpuEvidence,
    held: &'a [HeldRim],
) -> Result<[&'a [u8]; 2], RimsForError> {
    let report = SpdmReport::parse(&evidence.report)?;
    let chip = report.opaque.chip_info.clone().or_else(|| {
        super::certs::parse_pem_chain(evidence.certificate_chain.as_bytes())
            .ok()
            .and_then(|c| c.first().and_then(super::chip_from_cert))
    });
    let pick = |kind: RimKind, version: Option<&str>| -> Result<&'a [u8], RimsForError> {
        let version = version.ok_or(RimsForError::NoVersion(kind))?;
        let chip = chip.as_deref().ok_or(RimsForError::UnknownChip)?;
        let mut found = held.iter().filter(|r| {
            r.content.kind == kind
                && r.content.colloquial_version.eq_ignore_ascii_case(version)
                && r.content.product.eq_ignore_ascii_case(chip)
        });
        let which = || (kind, version.to_owned(), chip.to_owned());
        match (found.next(), found.next()) {
            (Some(one), None) => Ok(one.bytes.as_slice()),
            (None, _) => {
                let (kind, version, chip) = which();
                Err(RimsForError::NotHeld {
                    kind,
                    version,
                    chip,
                })
            }
            (Some(_), Some(_)) => {
                let (kind, version, chip) = which();
                Err(RimsForError::Ambiguous {
                    kind,
                    version,
                    chip,
                })
            }
        }
    };
    let driver = pick(RimKind::Driver, report.opaque.driver_version.as_deref());
    let vbios = pick(RimKind::Vbios, report.opaque.vbios_version.as_deref());
    match (driver, vbios) {
        (Ok(d), Ok(v)) => Ok([d, v]),
        (Err(a), Err(b)) => Err(RimsForError::Both(Box::new(a), Box::new(b))),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Why [`rims_for`] found no RIM pair for a GPU's evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RimsForError {
    /// The attestation report does not parse.
    #[error(transparent)]
    Report(#[from] SpdmError),
    /// The report names no version for this kind of RIM.
    #[error("the report has no {} version", .0.name())]
    NoVersion(RimKind),
    /// Neither CHIP_INFO nor the leaf certificate names the GPU's chip.
    #[error("the GPU's chip is unknown")]
    UnknownChip,
    /// No held RIM matches.
    #[error("no {} RIM for version {version} on {chip} is held", .kind.name())]
    NotHeld {
        /// Driver or VBIOS.
        kind: RimKind,
        /// The report's version.
        version: String,
        /// The GPU's chip.
        chip: String,
    },
    /// More than one held RIM matches.
    #[error("more than one {} RIM for version {version} on {chip} is held", .kind.name())]
    Ambiguous {
        /// Driver or VBIOS.
        kind: RimKind,
        /// The report's version.
        version: String,
        /// The GPU's chip.
        chip: String,
    },
    /// Neither the driver nor the VBIOS RIM was found (the driver's reason first).
    #[error("{0}; {1}")]
    Both(Box<RimsForError>, Box<RimsForError>),
}

/// The most GPUs whose evidence one attestation carries.
pub const MAX_GPUS: usize = 16;

/// The evidence of every GPU a CPU TEE serves on, as it travels: the canonical (RFC 8785)
/// JSON `{"nvidia_gpus":[{"certificate_chain":PEM,"report":HEX},...]}`, 1 to [`MAX_GPUS`]
/// entries. Its bytes are the one encoding whose SHA-384 a CPU report binds, so a text in
/// any other form (whitespace, key order, unknown members) is refused rather than
/// re-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidenceSet {
    /// One entry per GPU: the report as NVML returns it (SPDM request ‖ response) and the
    /// device chain, PEM, leaf first.
    pub nvidia_gpus: Vec<GpuEvidence>,
}

impl GpuEvidenceSet {
    /// The canonical JSON text. Every value is a string and the member names are fixed, so the
    /// RFC 8785 form is written directly: members in code-unit order (`certificate_chain`
    /// before `report`), no whitespace, strings escaped as ECMAScript's `JSON.stringify` does
    /// (which is serde_json's escaping).
    pub fn to_canonical_json(&self) -> Result<String, GpuEvidenceError> {
        self.check_count()?;
        let string =
            |s: &str| serde_json::to_string(s).map_err(|e| GpuEvidenceError::Parse(e.to_string()));
        let mut out = String::from("{\"nvidia_gpus\":[");
        for (i, gpu) in self.nvidia_gpus.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"certificate_chain\":");
            out.push_str(&string(&gpu.certificate_chain)?);
            out.push_str(",\"report\":");
            out.push_str(&string(&hex::encode(&gpu.report))?);
            out.push('}');
        }
        out.push_str("]}");
        Ok(out)
    }

    /// Reads the text a CPU TEE sent: `""` is no GPU evidence (a TEE that serves on CPU);
    /// anything else must be a set of 1 to [`MAX_GPUS`] entries in canonical form, so that the
    /// bytes the CPU report binds have one meaning.
    pub fn from_canonical_json(text: &str) -> Result<Option<Self>, GpuEvidenceError> {
        if text.is_empty() {
            return Ok(None);
        }
        let set: Self =
            serde_json::from_str(text).map_err(|e| GpuEvidenceError::Parse(e.to_string()))?;
        set.check_count()?;
        if set.to_canonical_json()? != text {
            return Err(GpuEvidenceError::NotCanonical);
        }
        Ok(Some(set))
    }

    /// SHA-384 of the canonical text: what a CPU report binds.
    pub fn digest(&self) -> Result<[u8; 48], GpuEvidenceError> {
        Ok(Sha384::digest(self.to_canonical_json()?.as_bytes()).into())
    }

    fn check_count(&self) -> Result<(), GpuEvidenceError> {
        let count = self.nvidia_gpus.len();
        if count == 0 || count > MAX_GPUS {
            return Err(GpuEvidenceError::Count {
                count,
                max: MAX_GPUS,
            });
        }
        Ok(())
    }
}

/// Why a text is not GPU evidence ([`GpuEvidenceSet`]) a verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuEvidenceError {
    /// It is not the JSON object `{"nvidia_gpus": [...]}`.
    #[error("the GPU evidence is not {{\"nvidia_gpus\":[...]}}: {0}")]
    Parse(String),
    /// The list is empty (a TEE on CPU sends no GPU evidence at all) or longer than the limit.
    #[error(
        "the GPU evidence holds {count} GPU(s); 1 to {max} are accepted (a server on CPU sends none)"
    )]
    Count {
        /// How many it holds.
        count: usize,
        /// The most accepted.
        max: usize,
    },
    /// It is not in RFC 8785 canonical form, so its hash would not be the one bound.
    #[error("the GPU evidence is not in canonical (RFC 8785) form")]
    NotCanonical,
}

/// The references a verifier holds for GPU evidence (never what the GPUs sent): NVIDIA's RIMs
/// and OCSP responses, which its operator keeps current.
#[derive(Debug, Clone, Default)]
pub struct HeldReferences {
    /// RIMs (`.swidtag`), for [`rims_for`].
    pub rims: Vec<HeldRim>,
    /// DER OCSP responses for device and RIM certificates.
    pub ocsp: Vec<Vec<u8>>,
}

/// What [`verify_gpus`] found: a verdict per GPU, every one authentic and answering the nonce.
#[derive(Debug, Clone)]
pub struct VerifiedGpus {
    /// One verdict per GPU, in order (RIM and OCSP results included, for [`judge_gpus`]).
    pub verdicts: Vec<GpuVerdict>,
    /// The GPUs for which no RIM pair was held, with the reason: their measurements were not
    /// compared, so a `cc_mode = "on"` policy refuses them (verifiers log this).
    pub without_rims: Vec<(usize, RimsForError)>,
}

/// Why [`verify_gpus`] refused a set of GPU evidence outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuSetError {
    /// A GPU's evidence is not authentic or does not answer the nonce
    /// ([`integrity_failures`]); each failure as `check: reason`.
    #[error("GPU {gpu} evidence rejected: {reasons}")]
    Integrity {
        /// Which GPU (its index in the set).
        gpu: usize,
        /// The failed integrity checks.
        reasons: String,
    },
    /// The same device's evidence twice.
    #[error("GPU {gpu} is the same device as an earlier one ({device})")]
    SameDevice {
        /// Which GPU.
        gpu: usize,
        /// The device (its BROM certificate's subject).
        device: String,
    },
}

/// Verifies the integrity of every GPU's evidence of one attestation at `now`, against the GPU
/// nonce `nonce` (the verifier derives it: [`gpu_nonce`]), comparing measurements with the
/// RIMs among `held` for each GPU's driver, VBIOS and chip ([`rims_for`]) and checking
/// revocation with `held`'s OCSP responses. Refuses the set if any GPU's evidence is not
/// authentic, does not answer `nonce`, or is a device already in the set; otherwise the
/// verdicts, for a policy to judge ([`judge_gpus`]). Pure: no I/O, time as an argument.
pub fn verify_gpus(
    set: &[GpuEvidence],
    nonce: &[u8; 32],
    held: &HeldReferences,
    now: Timestamp,
) -> Result<VerifiedGpus, GpuSetError> {
    let ocsp: Vec<&[u8]> = held.ocsp.iter().map(Vec::as_slice).collect();
    let mut out = VerifiedGpus {
        verdicts: Vec::with_capacity(set.len()),
        without_rims: Vec::new(),
    };
    for (gpu, evidence) in set.iter().enumerate() {
        let rims: Vec<&[u8]> = match rims_for(evidence, &held.rims) {
            Ok(rims) => rims.to_vec(),
            Err(reason) => {
                out.without_rims.push((gpu, reason));
                Vec::new()
            }
        };
        let verdict = super::verify_gpu(
            evidence,
            nonce,
            GpuReferences {
                rims: &rims,
                ocsp: &ocsp,
            },
            now,
        );
        let broken = integrity_failures(&verdict);
        if !broken.is_empty() {
            let reasons = broken
                .iter()
                .map(|f| format!("{}: {}", f.check, f.detail))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(GpuSetError::Integrity { gpu, reasons });
        }
        // One GPU's evidence twice is never needed: refuse it here ([`judge_gpus`] refuses it
        // too).
        let id = device_identity(&verdict).unwrap_or_default();
        if out.verdicts.iter().any(|v| device_identity(v) == Some(id)) {
            return Err(GpuSetError::SameDevice {
                gpu,
                device: id.to_owned(),
            });
        }
        out.verdicts.push(verdict);
    }
    Ok(out)
}
