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
//! a CPU TEE that presented no GPU evidence at all.

use sha2::{Digest as _, Sha256};

use super::error::SpdmError;
use super::{
    GpuCheck, GpuEvidence, GpuFailure, GpuVerdict, Outcome, RimContent, RimError, RimKind,
    SpdmReport,
};
use crate::policy::Policy;
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
