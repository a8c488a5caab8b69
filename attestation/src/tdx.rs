//! Intel TDX verification through dcap-qvl, offline, anchored in the pinned Intel SGX root.
//!
//! dcap-qvl checks the quote signature, the QE report and its binding to the attestation key,
//! the PCK chain, the CRLs, the TCB info and QE identity (signatures and validity at `now`),
//! matches the TCB level, and checks the TD attributes. It returns success for any matched
//! level, OutOfDate included, so the status is judged by policy here.
//!
//! dcap-qvl's attribute check stays on: it refuses the DEBUG and profiling (TUD) bits unless
//! the policy sets `allow_debug`, and always refuses reserved bits, a migratable TD, a TD
//! without SEPT_VE_DISABLE and service-TD binding. The policy judges the TUD bits as well, so
//! that a debug TD's verdict also names the debug rule.
//!
//! Collateral is the verifier's: [`TdxCollateralSet`] holds what a verifier keeps (one
//! collateral per FMSPC, as Intel PCS serves it) and picks the one for a quote. Collateral
//! that an attester carries in its evidence is Intel-signed but may be stale (an older TCB
//! info under which an unpatched platform was still `UpToDate`); a verifier that must not
//! take the attester's word strips it ([`crate::Evidence::without_tdx_collateral`]), and a
//! policy may require `min_tcb_evaluation_data_number`.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use crate::claims::TdxClaims;
use crate::error::Error;
use crate::evidence::{TdxCollateral, TdxEvidence};
use crate::timestamp::Timestamp;
use crate::verdict::{Check, Failures};

/// The Intel SGX Root CA (DER), which anchors every PCK chain.
const INTEL_ROOT_DER: &[u8] = include_bytes!("../roots/intel/TrustedRootCA.der");

/// DER SHA-256 of the Intel SGX Root CA, as Intel publishes it.
pub const INTEL_ROOT_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

fn intel_root() -> Result<&'static [u8], String> {
    static CHECKED: OnceLock<bool> = OnceLock::new();
    let pinned =
        *CHECKED.get_or_init(|| hex::encode(Sha256::digest(INTEL_ROOT_DER)) == INTEL_ROOT_SHA256);
    if pinned {
        Ok(INTEL_ROOT_DER)
    } else {
        Err("the built-in Intel root does not match its pinned fingerprint".to_owned())
    }
}

/// Appraises TDX evidence with `collateral` (or the collateral the evidence carries).
pub(crate) fn appraise(
    evidence: &TdxEvidence,
    collateral: Option<&TdxCollateral>,
    allow_debug: bool,
    now: Timestamp,
    failures: &mut Failures,
) -> Option<TdxClaims> {
    let raw = evidence.quote();
    let quote = match dcap_qvl::quote::Quote::parse(raw) {
        Ok(quote) => quote,
        Err(e) => {
            failures.push(
                Check::EvidenceFormat,
                format!("TDX quote does not parse: {e}"),
            );
            return None;
        }
    };
    let mut claims = match TdxClaims::from_quote(&quote) {
        Ok(claims) => claims,
        Err(e) => {
            failures.push(Check::EvidenceFormat, e.to_string());
            return None;
        }
    };
    failures.require(
        matches!(quote.header.version, 4 | 5),
        Check::ReportVersion,
        || format!("TDX quote version {} is not 4 or 5", quote.header.version),
    );
    let Some(collateral) = collateral.or(evidence.collateral()) else {
        failures.push(
            Check::Collateral,
            "no TDX collateral: offline verification needs the PCS collateral for this quote",
        );
        return Some(claims);
    };
    let root = match intel_root() {
        Ok(root) => root,
        Err(e) => {
            failures.push(Check::QuoteVerification, e);
            return Some(claims);
        }
    };
    let verifier =
        dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RingConfig>::new_with_config(
            root.to_vec(),
        )
        .allow_debug(allow_debug);
    match verifier.verify(raw, &collateral.0, now.unix_seconds()) {
        Ok(report) => {
            claims.tcb_status = Some(report.status);
            claims.advisory_ids = report.advisory_ids;
            // dcap-qvl verified the signatures over these documents, so their numbers hold.
            match collateral.tcb_evaluation_data_number() {
                Ok(n) => claims.tcb_evaluation_data_number = Some(n),
                Err(e) => failures.push(Check::Collateral, e.to_string()),
            }
        }
        Err(e) => failures.push(Check::QuoteVerification, format!("{e:#}")),
    }
    Some(claims)
}

/// The 6-byte FMSPC (family-model-stepping-platform-customSKU) of a quote's PCK certificate,
/// which selects its TCB info.
pub fn quote_fmspc(quote: &[u8]) -> Result<[u8; 6], Error> {
    let parsed = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| Error::evidence(format!("TDX quote does not parse: {e}")))?;
    dcap_qvl::intel::quote_fmspc_with::<dcap_qvl::configs::RingConfig>(&parsed)
        .map_err(|e| Error::evidence(format!("TDX quote: no FMSPC in its PCK certificate: {e:#}")))
}

/// The TDX collateral a verifier holds: at most one per FMSPC.
///
/// Loading it is the caller's (files refreshed from Intel PCS or a PCCS by the operator);
/// this type only indexes and selects, so that verification stays pure.
#[derive(Debug, Clone, Default)]
pub struct TdxCollateralSet {
    entries: Vec<([u8; 6], TdxCollateral)>,
}

impl TdxCollateralSet {
    /// Indexes `collaterals` by the FMSPC of their TCB info. Two for the same FMSPC are an
    /// error (which one is current would be a guess).
    pub fn new(collaterals: Vec<TdxCollateral>) -> Result<Self, Error> {
        let mut entries: Vec<([u8; 6], TdxCollateral)> = Vec::with_capacity(collaterals.len());
        for collateral in collaterals {
            let fmspc = collateral.fmspc()?;
            if entries.iter().any(|(f, _)| *f == fmspc) {
                return Err(Error::Collateral {
                    reason: format!(
                        "two collaterals for FMSPC {}; keep one per platform",
                        hex::encode(fmspc)
                    ),
                });
            }
            entries.push((fmspc, collateral));
        }
        Ok(Self { entries })
    }

    /// How many collaterals the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The collateral for `quote`'s FMSPC, if the set has it.
    pub fn for_quote(&self, quote: &[u8]) -> Result<Option<&TdxCollateral>, Error> {
        let fmspc = quote_fmspc(quote)?;
        Ok(self
            .entries
            .iter()
            .find(|(f, _)| *f == fmspc)
            .map(|(_, c)| c))
    }
}
