//! Intel TDX verification through dcap-qvl, offline, anchored in the pinned Intel SGX root.
//!
//! dcap-qvl checks the quote signature, the QE report and its binding to the attestation key,
//! the PCK chain, the CRLs, the TCB info and QE identity (signatures and validity at `now`),
//! and matches the TCB level. It returns success for any matched level, OutOfDate included, so
//! the status is judged by policy here. Debug TDs are let through dcap-qvl and judged by
//! policy too, so that a debug TD's verdict lists the debug rule rather than a generic error.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use crate::claims::TdxClaims;
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
        .allow_debug(true);
    match verifier.verify(raw, &collateral.0, now.unix_seconds()) {
        Ok(report) => {
            claims.tcb_status = Some(report.status);
            claims.advisory_ids = report.advisory_ids;
        }
        Err(e) => failures.push(Check::QuoteVerification, format!("{e:#}")),
    }
    Some(claims)
}
