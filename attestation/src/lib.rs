//! Verify AMD SEV-SNP and Intel TDX attestation evidence against a policy.
//!
//! Clients, the key broker and the server's CLI decide whom to trust with this crate, so it
//! is small, pure and strict:
//!
//! - **Pure.** [`verify`] is a function of the evidence, the collateral, the [`Policy`] and a
//!   caller-supplied [`Timestamp`]. It does no I/O and never reads the clock.
//! - **Pinned.** SNP chains are anchored only in built-in AMD roots for Milan, Genoa and
//!   Turin, pinned by SHA-256; an ARK or ASK in the evidence is compared with them, never
//!   trusted. TDX quotes are anchored in the pinned Intel SGX Root CA.
//! - **Complete.** The [`Verdict`] lists every failed check, not the first, with the
//!   normalized [`Claims`].
//! - **Policies pin what they accept.** [`Policy::from_toml`] refuses a policy without
//!   `measurements`; accepting any guest, any SNP TCB or any TDX OS must be said in words, and
//!   [`Policy::default`] accepts nothing until it is told what to accept.
//! - **No simulated trust by default.** Evidence from the [`SimulatedTee`] verifies only under
//!   a policy that sets `allow_simulated = true`.
//!
//! # Example
//!
//! ```
//! use confidant_attestation::{verify, Evidence, Policy, Timestamp, Check};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let report = include_bytes!("../tests/data/snp/virtee-milan-v2/report.bin");
//! let vcek = include_bytes!("../tests/data/snp/virtee-milan-v2/vcek.der");
//! let evidence = Evidence::Snp(confidant_attestation::SnpEvidence::from_parts(report, vcek, None)?);
//!
//! let policy = Policy::from_toml(r#"
//!     measurements = ["7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"]
//!     [min_tcb]
//!     snp = 8
//! "#)?;
//! let now = Timestamp::parse_rfc3339("2025-06-01T00:00:00Z")?;
//!
//! let verdict = verify(&evidence, None, &policy, now);
//! assert!(verdict.is_accept(), "{:?}", verdict.failures);
//!
//! // Five years later the VCEK has expired.
//! let later = Timestamp::parse_rfc3339("2030-06-01T00:00:00Z")?;
//! assert!(verify(&evidence, None, &policy, later).failed(Check::CertificateValidity));
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! None. The crate always builds the pure-Rust SNP path (`sev` with `crypto_nossl`) and the
//! offline TDX path (dcap-qvl without its PCCS client).

#![forbid(unsafe_code)]

pub mod claims;
pub mod error;
pub mod evidence;
pub mod nvidia;
pub mod policy;
pub mod simulated;
pub mod snp;
pub mod tdx;
pub mod timestamp;
pub mod verdict;

pub use claims::{Claims, Product, SampleClaims, SnpClaims, TdxClaims};
pub use error::Error;
pub use evidence::{
    CertTableEntry, CertType, Evidence, SampleEvidence, SnpEvidence, TdxCollateral, TdxEvidence,
    TeeKind,
};
pub use nvidia::{GpuCheck, GpuClaims, GpuEvidence, GpuReferences, GpuVerdict, verify_gpu};
pub use policy::{MinTcb, Policy};
pub use simulated::SimulatedTee;
pub use tdx::TdxCollateralSet;
pub use timestamp::Timestamp;
pub use verdict::{Check, Decision, Failure, Verdict};

use verdict::Failures;

/// Verifies `evidence` against `policy` at time `now`.
///
/// `collateral` is the Intel PCS collateral for a TDX quote; when `None`, the collateral the
/// evidence carries is used (a verifier that holds its own collateral strips the attester's
/// with [`Evidence::without_tdx_collateral`]). It is ignored for SNP and simulated evidence.
///
/// Never fails: every problem, from an unparsable report to a policy violation, is a
/// [`Failure`] in the returned [`Verdict`], which accepts only if there is none.
pub fn verify(
    evidence: &Evidence,
    collateral: Option<&TdxCollateral>,
    policy: &Policy,
    now: Timestamp,
) -> Verdict {
    verify_and_keep(evidence, collateral, policy, now).0
}

/// What verification established about accepted evidence: its TEE and decoded claims, and
/// what policy evaluation needs besides them. It holds none of the evidence itself (report,
/// certificates, quote, collateral), so a verifier can keep it, instead of the evidence, to
/// judge the same evidence against further policies later ([`Appraised::judge`]).
///
/// Only [`verify_and_keep`] makes one, and only for evidence it accepted, so holding one
/// means the evidence's authenticity checks (chain, signatures, dates) passed at
/// [`Appraised::verified_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appraised {
    tee: TeeKind,
    claims: Claims,
    generated_at: Option<Timestamp>,
    simulated_ark_sha256: Option<[u8; 32]>,
    verified_at: Timestamp,
}

impl Appraised {
    /// The TEE the evidence came from.
    pub fn tee(&self) -> TeeKind {
        self.tee
    }

    /// The decoded claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// When the evidence was verified.
    pub fn verified_at(&self) -> Timestamp {
        self.verified_at
    }

    /// Judges the claims against `policy` at `now`: the same policy checks [`verify`] runs
    /// after the authenticity checks, which are not repeated (they passed at
    /// [`Appraised::verified_at`]).
    pub fn judge(&self, policy: &Policy, now: Timestamp) -> Verdict {
        let mut failures = Failures::default();
        let context = policy::Context {
            now,
            generated_at: self.generated_at,
            simulated_ark_sha256: self.simulated_ark_sha256,
        };
        policy.evaluate(self.tee, &self.claims, &context, &mut failures);
        Verdict::new(
            self.tee,
            Some(self.claims.clone()),
            failures.into_vec(),
            now,
            policy.is_applied(),
        )
    }
}

/// [`verify`], also returning the [`Appraised`] claims when the verdict accepts.
pub fn verify_and_keep(
    evidence: &Evidence,
    collateral: Option<&TdxCollateral>,
    policy: &Policy,
    now: Timestamp,
) -> (Verdict, Option<Appraised>) {
    let mut failures = Failures::default();
    let tee = evidence.tee();
    let mut simulated_ark_sha256 = None;
    let claims = match evidence {
        Evidence::Snp(e) => snp::appraise(e, snp::Anchor::Pinned, now, &mut failures)
            .claims
            .map(|c| Claims::Snp(Box::new(c))),
        Evidence::Simulated(e) => {
            let appraisal = snp::appraise(e, snp::Anchor::Carried, now, &mut failures);
            simulated_ark_sha256 = appraisal.carried_ark_sha256;
            appraisal.claims.map(|c| Claims::Snp(Box::new(c)))
        }
        Evidence::Tdx(e) => tdx::appraise(e, collateral, policy.allow_debug, now, &mut failures)
            .map(|c| Claims::Tdx(Box::new(c))),
        Evidence::Sample(e) => match e.report_data_bytes() {
            Ok(report_data) => Some(Claims::Sample(Box::new(claims::SampleClaims {
                svn: e.svn.clone(),
                report_data,
                measurement: [0u8; 48],
            }))),
            Err(err) => {
                failures.push(Check::EvidenceFormat, err.to_string());
                None
            }
        },
    };
    if let Some(claims) = &claims {
        let context = policy::Context {
            now,
            generated_at: evidence.generated_at(),
            simulated_ark_sha256,
        };
        policy.evaluate(tee, claims, &context, &mut failures);
    } else if matches!(tee, TeeKind::Simulated | TeeKind::Sample)
        && !policy.dangerous_allow_simulated
    {
        // Undecodable simulated evidence is still simulated: say so.
        failures.push(
            Check::Simulated,
            "simulated evidence and allow_simulated is not set",
        );
    }
    let verdict = Verdict::new(tee, claims, failures.into_vec(), now, policy.is_applied());
    let kept = match (&verdict.claims, verdict.is_accept()) {
        (Some(claims), true) => Some(Appraised {
            tee,
            claims: claims.clone(),
            generated_at: evidence.generated_at(),
            simulated_ark_sha256,
            verified_at: now,
        }),
        _ => None,
    };
    (verdict, kept)
}

/// Parses evidence JSON and verifies it; JSON that does not parse yields a rejecting verdict
/// with an [`Check::EvidenceFormat`] failure (its `tee` is then reported as `snp` if the tag
/// is unreadable).
pub fn verify_json(
    evidence_json: &[u8],
    collateral: Option<&TdxCollateral>,
    policy: &Policy,
    now: Timestamp,
) -> Verdict {
    match Evidence::from_json(evidence_json) {
        Ok(evidence) => verify(&evidence, collateral, policy, now),
        Err(e) => {
            let tee = serde_json::from_slice::<serde_json::Value>(evidence_json)
                .ok()
                .and_then(|v| serde_json::from_value::<TeeKind>(v.get("tee")?.clone()).ok())
                .unwrap_or(TeeKind::Snp);
            Verdict::new(
                tee,
                None,
                vec![Failure {
                    check: Check::EvidenceFormat,
                    detail: e.to_string(),
                }],
                now,
                policy.is_applied(),
            )
        }
    }
}
