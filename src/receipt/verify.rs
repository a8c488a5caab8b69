//! Offline verification of a receipt: every check runs and is named in the verdict.
//!
//! 1. `envelope`: a tagged COSE_Sign1 of the receipt layout, its inclusion proof leading from
//!    the statement to the signed root, and the Ed25519 signature under the key it names.
//! 2. `statement`: the statement parses (version 2, or 1 from earlier servers; every field,
//!    nothing else).
//! 3. `evidence_digest`: the statement names exactly these evidence bytes (SHA-256).
//! 4. `evidence`: the evidence verifies against the caller's policy at the given time.
//! 5. `key_binding`: the evidence's report_data binds the receipt's key
//!    (`SHA-512("confidant-receipt-v1" ‖ key)`).
//! 6. `request` and `response` (when given): their digests equal the statement's.

use confidant_attestation::{Evidence, Policy, Timestamp, Verdict};
use sha2::{Digest as _, Sha256};

use super::{Statement, envelope, report_data};

/// One check and its outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What it found.
    pub detail: String,
}

/// The verdict on a receipt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceiptVerdict {
    /// `accept` only if every check passed.
    pub verdict: &'static str,
    /// The checks that failed, as `name: detail`.
    pub failures: Vec<String>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The statement, when it could be read.
    pub statement: Option<serde_json::Value>,
    /// The receipt key, hex.
    pub public_key: Option<String>,
    /// The evidence's own verdict.
    pub evidence: Option<Verdict>,
}

impl ReceiptVerdict {
    /// Whether every check passed.
    pub fn accepted(&self) -> bool {
        self.verdict == "accept"
    }
}

/// What to check a receipt against.
pub struct Against<'a> {
    /// The evidence that binds the server's receipt key (its JSON, as the server gave it).
    pub evidence_json: &'a [u8],
    /// The policy the evidence must meet.
    pub policy: &'a Policy,
    /// The time to judge certificates and evidence at.
    pub now: Timestamp,
    /// The request's keyed digest, to compare.
    pub request: Option<[u8; 32]>,
    /// The response's digest, to compare.
    pub response: Option<[u8; 32]>,
}

/// Verifies `receipt` against `with`.
pub fn verify(receipt: &[u8], with: &Against<'_>) -> ReceiptVerdict {
    let mut checks = Vec::new();
    let mut check = |name: &'static str, ok: bool, detail: String| {
        checks.push(Check { name, ok, detail });
        ok
    };
    let opened = match envelope::open(receipt) {
        Ok(o) => {
            check(
                "envelope",
                true,
                format!(
                    "COSE_Sign1, Ed25519; statement {} of a group of {}, in the signed tree",
                    o.leaf_index, o.tree_size
                ),
            );
            Some(o)
        }
        Err(e) => {
            check("envelope", false, e.to_string());
            None
        }
    };
    let statement = opened.as_ref().map(|o| Statement::from_cbor(&o.statement));
    let statement = match statement {
        Some(Ok(s)) if matches!(s.v, 1 | super::STATEMENT_VERSION) => {
            check("statement", true, format!("version {}", s.v));
            Some(s)
        }
        Some(Ok(s)) => {
            check("statement", false, format!("unknown version {}", s.v));
            None
        }
        Some(Err(e)) => {
            check("statement", false, e.to_string());
            None
        }
        None => {
            check("statement", false, "no envelope to read it from".into());
            None
        }
    };
    let evidence_sha256: [u8; 32] = Sha256::digest(with.evidence_json).into();
    match &statement {
        Some(s) if s.evidence == evidence_sha256 => {
            check("evidence_digest", true, hex::encode(evidence_sha256))
        }
        Some(s) => check(
            "evidence_digest",
            false,
            format!(
                "the receipt names evidence {}, these bytes are {}",
                hex::encode(&s.evidence),
                hex::encode(evidence_sha256)
            ),
        ),
        None => check("evidence_digest", false, "no statement".into()),
    };
    let evidence_verdict = match Evidence::from_json(with.evidence_json) {
        Ok(evidence) => {
            let v = confidant_attestation::verify(&evidence, None, with.policy, with.now);
            let reasons: Vec<String> = v.failures.iter().map(|f| f.to_string()).collect();
            check(
                "evidence",
                reasons.is_empty(),
                if reasons.is_empty() {
                    format!("{} evidence meets the policy", v.tee)
                } else {
                    reasons.join("; ")
                },
            );
            Some(v)
        }
        Err(e) => {
            check("evidence", false, format!("does not parse: {e}"));
            None
        }
    };
    match (&opened, &evidence_verdict) {
        (Some(o), Some(v)) => {
            let expected = hex::encode(report_data(&o.public_key));
            let bound = v.report_data.as_deref() == Some(expected.as_str());
            check(
                "key_binding",
                bound,
                if bound {
                    "the evidence binds the receipt's key".into()
                } else {
                    "the evidence does not bind the receipt's key (a receipt of another \
                     server, or of another start of this one)"
                        .into()
                },
            )
        }
        _ => check(
            "key_binding",
            false,
            "needs both the envelope and the evidence".into(),
        ),
    };
    for (name, given, stated) in [
        (
            "request",
            with.request,
            statement.as_ref().map(|s| s.request.as_slice()),
        ),
        (
            "response",
            with.response,
            statement.as_ref().map(|s| s.response.as_slice()),
        ),
    ] {
        if let Some(digest) = given {
            match stated {
                Some(s) if s == digest => check(name, true, "digest matches".into()),
                Some(_) => check(
                    name,
                    false,
                    format!("this {name} is not the one the receipt states"),
                ),
                None => check(name, false, "no statement".into()),
            };
        }
    }
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    ReceiptVerdict {
        verdict: if failures.is_empty() {
            "accept"
        } else {
            "reject"
        },
        failures,
        checks,
        statement: statement.as_ref().map(statement_json),
        public_key: opened.as_ref().map(|o| hex::encode(o.public_key)),
        evidence: evidence_verdict,
    }
}

/// The statement as JSON, digests in hex.
pub fn statement_json(s: &Statement) -> serde_json::Value {
    serde_json::json!({
        "v": s.v,
        "rpc": s.rpc,
        "request_id": s.request_id,
        "request_digest": hex::encode(&s.request),
        "response_digest": hex::encode(&s.response),
        "model": s.model,
        "version": s.version,
        "manifest_sha256": hex::encode(&s.manifest),
        "epsilon": s.epsilon,
        "audit_seq": s.audit_seq,
        "audit_hash": s.audit_hash,
        "time_ms": s.time_ms,
        "evidence_sha256": hex::encode(&s.evidence),
    })
}
