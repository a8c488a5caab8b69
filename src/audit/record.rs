//! The audit log's records and events: the schema a verifier reads, and the chain hash
//! and signed messages that cover them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    /// What happened.
    pub event: Event,
    /// Hex SHA-256 of the previous record (64 zeros for the first).
    pub prev: String,
    /// Hex SHA-256 of this record (see the module docs).
    #[serde(default)]
    pub hash: String,
}

/// The events the log records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
// Predict dominates the traffic: boxing it would add an allocation per request for an event
// that is only serialized (onto the writer's queue) and dropped.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A Predict call, allowed or refused.
    Predict {
        /// The request id returned to the caller ("" when refused before one was made).
        request_id: String,
        /// The authenticated principal ("" when authentication failed).
        principal: String,
        /// `model@version`.
        model: String,
        /// The declared purpose.
        purpose: Option<String>,
        /// The data subject's pseudonym, if the request named one.
        subject: Option<String>,
        /// Hex HMAC-SHA256 of the input under the audit key.
        input_hmac: Option<String>,
        /// The argmax class per row (no scores).
        output_argmax: Vec<u32>,
        /// Rows flagged by adversarial-sensitivity screening.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flagged_rows: Vec<u32>,
        /// Rows in the request.
        rows: u64,
        /// Server-side latency in microseconds.
        latency_us: u64,
        /// `allow` or `refuse`.
        decision: Cow<'static, str>,
        /// Why (the gRPC status name for refusals).
        reason: Cow<'static, str>,
        /// Privacy budget spent.
        epsilon: f64,
        /// The RPC, when not Predict (`explain`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rpc: Option<Cow<'static, str>>,
    },
    /// An administrative or data-access event (key creation, consent, erasure, start).
    Admin {
        /// Who acted.
        actor: String,
        /// What was done.
        action: String,
        /// Details (ids, never secrets).
        detail: String,
    },
    /// A signed statement that the segments up to `removed_through_segment` were deleted
    /// under the retention policy, and that the chain now legitimately starts at the record
    /// `first_kept_seq`, whose `prev` is `first_kept_prev`.
    Retention {
        /// The last deleted segment.
        removed_through_segment: u64,
        /// The sequence number of the first record kept.
        first_kept_seq: u64,
        /// That record's `prev` (the hash of the last deleted record).
        first_kept_prev: String,
        /// Hex of the signer's raw Ed25519 public key.
        public_key: String,
        /// Hex Ed25519 signature over [`retention_message`].
        signature: String,
    },
    /// A signed statement of the chain head.
    Checkpoint {
        /// The hash of the record just before this checkpoint.
        head: String,
        /// Hex of the signer's raw Ed25519 public key.
        public_key: String,
        /// Hex Ed25519 signature over `"confidant.audit.checkpoint.v1\0" ‖ seq ‖ head`.
        signature: String,
    },
}

/// A Predict event by reference, for [`AuditLog::append_predict`]: the request path writes
/// its canonical JSON itself, so the record crosses to the writer thread as one buffer
/// rather than as a dozen strings allocated on one thread and freed on another.
#[derive(Debug, Clone, Copy)]
pub struct PredictEvent<'a> {
    /// As in [`Event::Predict`].
    pub request_id: &'a str,
    /// As in [`Event::Predict`].
    pub principal: &'a str,
    /// As in [`Event::Predict`].
    pub model: &'a str,
    /// As in [`Event::Predict`].
    pub purpose: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub subject: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub input_hmac: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub output_argmax: &'a [u32],
    /// As in [`Event::Predict`].
    pub flagged_rows: &'a [u32],
    /// As in [`Event::Predict`].
    pub rows: u64,
    /// As in [`Event::Predict`].
    pub latency_us: u64,
    /// As in [`Event::Predict`].
    pub decision: &'a str,
    /// As in [`Event::Predict`].
    pub reason: &'a str,
    /// As in [`Event::Predict`].
    pub epsilon: f64,
    /// As in [`Event::Predict`].
    pub rpc: Option<&'a str>,
}

impl<'a> PredictEvent<'a> {
    /// The borrowed view of an owned Predict event (`None` for any other event).
    pub fn of(event: &'a Event) -> Option<Self> {
        let Event::Predict {
            request_id,
            principal,
            model,
            purpose,
            subject,
            input_hmac,
            output_argmax,
            flagged_rows,
            rows,
            latency_us,
            decision,
            reason,
            epsilon,
            rpc,
        } = event
        else {
            return None;
        };
        Some(Self {
            request_id,
            principal,
            model,
            purpose: purpose.as_deref(),
            subject: subject.as_deref(),
            input_hmac: input_hmac.as_deref(),
            output_argmax,
            flagged_rows,
            rows: *rows,
            latency_us: *latency_us,
            decision,
            reason,
            epsilon: *epsilon,
            rpc: rpc.as_deref(),
        })
    }

    /// The owned event (tests, and callers that want one).
    pub fn to_event(&self) -> Event {
        Event::Predict {
            request_id: self.request_id.to_string(),
            principal: self.principal.to_string(),
            model: self.model.to_string(),
            purpose: self.purpose.map(str::to_string),
            subject: self.subject.map(str::to_string),
            input_hmac: self.input_hmac.map(str::to_string),
            output_argmax: self.output_argmax.to_vec(),
            flagged_rows: self.flagged_rows.to_vec(),
            rows: self.rows,
            latency_us: self.latency_us,
            decision: Cow::Owned(self.decision.to_string()),
            reason: Cow::Owned(self.reason.to_string()),
            epsilon: self.epsilon,
            rpc: self.rpc.map(|r| Cow::Owned(r.to_string())),
        }
    }
}

impl Record {
    /// The chain hash of this record given its `prev`.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let body = crate::canonical::to_vec(&unhashed).unwrap_or_default();
        String::from_utf8_lossy(&hash_body(&self.prev, &body)).into_owned()
    }
}

/// The chain hash over a record's canonical body (with an empty `hash`), as lower-case hex.
pub(super) fn hash_body(prev: &str, body: &[u8]) -> [u8; 64] {
    let mut h = chain_hasher(prev);
    h.update(body);
    hex32(&h.finalize().into())
}

/// A record's chain hash, before its canonical body: the domain, then the previous hash.
pub(super) fn chain_hasher(prev: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev.as_bytes());
    h
}

/// Lower-case hex of a 32-byte digest as 64 ASCII bytes, with no allocation.
pub(super) fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [b'0'; 64];
    // 64 is exactly twice 32, the only length `encode_to_slice` checks.
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

/// The message a checkpoint signs.
pub fn checkpoint_message(seq: u64, head: &str) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head.as_bytes());
    m
}

/// The message a retention checkpoint signs.
pub fn retention_message(
    first_kept_seq: u64,
    first_kept_prev: &str,
    removed_through: u64,
) -> Vec<u8> {
    let mut m = RETENTION_DOMAIN.to_vec();
    m.extend_from_slice(&first_kept_seq.to_be_bytes());
    m.extend_from_slice(first_kept_prev.as_bytes());
    m.extend_from_slice(&removed_through.to_be_bytes());
    m
}
