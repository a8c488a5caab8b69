//! Freshness anchors: what the key broker keeps per deployment so that a data directory the
//! host restored from an older copy (a rollback) or cut short (a truncation) is detected.
//!
//! The server's persisted state is summed up by a [`Position`]: the sequence number and
//! chain hash of the audit log's latest durable checkpoint, and the database's state
//! version (a counter every write transaction steps). The broker keeps the latest position
//! the server reported, signed by the deployment's checkpoint key (a subkey of the state key:
//! only an attested server, and the broker that holds the state key, can make it). The
//! broker accepts a new position only if it covers the old one, so the anchor never moves
//! back and never forks; at boot the server refuses to serve if its local state does not
//! cover the anchor.
//!
//! One live server per deployment: a server **claims** the deployment at boot and holds it
//! by **advancing** the anchor (at every checkpoint, and at least once a second while idle).
//! The broker refuses a claim while another instance has advanced within the lease, and the
//! server stops serving by itself once it has not advanced for half the lease, so two
//! servers never serve the same deployment at once.
//!
//! A leaf module: Ed25519 signatures over a fixed binary message, no other crate module.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The domain of anchor signatures.
pub const DOMAIN: &[u8] = b"confidant.state.anchor.v1\0";

/// Default lease: a claim by another instance is refused while the holder has advanced the
/// anchor within this many seconds.
pub const DEFAULT_LEASE_SECS: u64 = 10;

/// Largest clock difference accepted between a request's signed time and the broker's.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What a signed anchor request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Take the deployment (at boot); returns the current anchor.
    Claim,
    /// Move the anchor to a position that covers it (and renew the lease).
    Advance,
    /// Move the anchor to the local position after an authorized `state reset`.
    Reset,
    /// Give the deployment up (graceful shutdown).
    Release,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Advance => "advance",
            Self::Reset => "reset",
            Self::Release => "release",
        }
    }
}

/// Persisted state as of a durable audit checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The sequence number of the audit checkpoint (0: an empty log).
    pub audit_seq: u64,
    /// That record's chain hash (64 hex digits; zeros for an empty log).
    pub audit_head: String,
    /// The database's state version when the checkpoint was anchored.
    pub db_version: u64,
}

/// Why a position does not cover the anchor, or a request is malformed or unsigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The local state is older than the anchor, or is another history.
    #[error("rollback: {0}")]
    Rollback(String),
    /// A field is malformed.
    #[error("malformed anchor request: {0}")]
    Malformed(String),
    /// The signature does not verify under the deployment's checkpoint key.
    #[error("the anchor signature does not verify under the deployment's checkpoint key")]
    Signature,
}

impl Position {
    /// The position of an empty state.
    pub fn empty() -> Self {
        Self {
            audit_seq: 0,
            audit_head: "0".repeat(64),
            db_version: 0,
        }
    }

    fn check(&self) -> Result<(), AnchorError> {
        if self.audit_head.len() != 64
            || !self
                .audit_head
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(AnchorError::Malformed(
                "audit_head: 64 lower-case hex digits".into(),
            ));
        }
        Ok(())
    }

    /// Whether this position covers `anchor`: the log reaches the anchored checkpoint and
    /// holds the same record there (`head_at_anchor`: this log's hash of the record at the
    /// anchor's sequence number, `None` if it has no such record), and the database is at
    /// least as new.
    pub fn covers(
        &self,
        anchor: &Position,
        head_at_anchor: Option<&str>,
    ) -> Result<(), AnchorError> {
        if self.audit_seq < anchor.audit_seq {
            return Err(AnchorError::Rollback(format!(
                "the audit log ends at record {}, but the broker's anchor says record {} was \
                 written (records were cut off, or the log was restored from an older copy)",
                self.audit_seq, anchor.audit_seq
            )));
        }
        match head_at_anchor {
            Some(h) if h == anchor.audit_head => {}
            Some(_) => {
                return Err(AnchorError::Rollback(format!(
                    "the audit log's record {} is not the one the broker anchored (another \
                     history: a copy that was served elsewhere, or a rewritten log)",
                    anchor.audit_seq
                )));
            }
            None if anchor.audit_seq == 0 => {}
            None => {
                return Err(AnchorError::Rollback(format!(
                    "the audit log has no record {} that the broker anchored",
                    anchor.audit_seq
                )));
            }
        }
        if self.db_version < anchor.db_version {
            return Err(AnchorError::Rollback(format!(
                "the database is at state version {}, but the broker's anchor says version {} \
                 was committed (the database was restored from an older copy: budgets, \
                 quotas, consent and erasures would be undone)",
                self.db_version, anchor.db_version
            )));
        }
        Ok(())
    }
}

/// The signed message of an anchor request.
pub fn message(
    step: Step,
    deployment: &str,
    instance: &str,
    at: u64,
    position: &Position,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 200);
    m.extend_from_slice(DOMAIN);
    for part in [step.as_str(), deployment, instance] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(&at.to_be_bytes());
    m.extend_from_slice(&position.audit_seq.to_be_bytes());
    m.extend_from_slice(position.audit_head.as_bytes());
    m.extend_from_slice(&position.db_version.to_be_bytes());
    m
}

/// A request from the server to the broker, signed by the deployment's checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorRequest {
    /// What it asks for.
    pub step: Step,
    /// The deployment.
    pub deployment: String,
    /// The server instance (32 hex digits, random per start).
    pub instance: String,
    /// When it was signed (Unix seconds).
    pub at: u64,
    /// The server's position.
    pub position: Position,
    /// Ed25519 over [`message`] (hex).
    pub signature: String,
}

impl AnchorRequest {
    /// Signs a request with the deployment's checkpoint key.
    pub fn sign(
        key: &SigningKey,
        step: Step,
        deployment: &str,
        instance: &str,
        at: u64,
        position: Position,
    ) -> Self {
        let signature = hex::encode(
            key.sign(&message(step, deployment, instance, at, &position))
                .to_bytes(),
        );
        Self {
            step,
            deployment: deployment.to_owned(),
            instance: instance.to_owned(),
            at,
            position,
            signature,
        }
    }

    /// Checks the fields and the signature under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), AnchorError> {
        if self.instance.len() != 32 || !self.instance.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AnchorError::Malformed("instance: 32 hex digits".into()));
        }
        if self.deployment.is_empty() || self.deployment.bytes().any(|b| b == 0) {
            return Err(AnchorError::Malformed("deployment".into()));
        }
        self.position.check()?;
        verify_signature(
            key,
            &message(
                self.step,
                &self.deployment,
                &self.instance,
                self.at,
                &self.position,
            ),
            &self.signature,
        )
    }
}

fn verify_signature(key: &VerifyingKey, message: &[u8], hex_sig: &str) -> Result<(), AnchorError> {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(hex_sig, &mut sig).map_err(|_| AnchorError::Signature)?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| AnchorError::Signature)
}

/// An authorized reset, as the broker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRecord {
    /// When the broker's admin authorized it (Unix seconds).
    pub authorized_at: u64,
    /// Why, as the admin said.
    pub reason: String,
    /// The anchor's position before the reset.
    pub previous: Position,
    /// The position the server accepted after it (once it did).
    pub accepted: Option<Position>,
}

/// A deployment's anchor, as the broker keeps and exports it (`confidant broker anchor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The deployment.
    pub deployment: String,
    /// The deployment's checkpoint key (hex), which signed [`Anchor::signature`].
    pub public_key: String,
    /// The anchored position.
    pub position: Position,
    /// The step of the signed request that set it (claim, advance or reset).
    pub step: Step,
    /// The instance that set it.
    pub instance: String,
    /// The signed time of that request.
    pub at: u64,
    /// The server's signature over that request ([`message`]).
    pub signature: String,
    /// Resets authorized so far.
    pub epoch: u64,
    /// A reset authorized by the admin and not yet taken up by a server.
    pub reset_pending: bool,
    /// Every authorized reset, oldest first.
    pub resets: Vec<ResetRecord>,
    /// The instance holding the deployment, if any.
    pub lease_holder: Option<String>,
    /// When the holder last claimed or advanced (the broker's clock, Unix milliseconds).
    pub lease_renewed_ms: u64,
}

impl Anchor {
    /// Checks that the anchored position was signed by `key` (an auditor's `--pubkey`, or
    /// the key the log names).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), AnchorError> {
        if hex::encode(key.as_bytes()) != self.public_key {
            return Err(AnchorError::Signature);
        }
        verify_signature(
            key,
            &message(
                self.step,
                &self.deployment,
                &self.instance,
                self.at,
                &self.position,
            ),
            &self.signature,
        )
    }
}

/// What the broker answers a claim, an advance or a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorAnswer {
    /// The anchor after the request.
    pub anchor: Anchor,
    /// The lease in seconds: the server stops serving after half of it without an advance.
    pub lease_secs: u64,
}

/// Why requests are refused while the server's state cannot be trusted to be fresh. The
/// pipeline checks [`Gate::refusal`] before every request: one atomic load while open.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    reasons: Mutex<[Option<String>; 3]>,
}

/// Which of the gate's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateReason {
    /// The local state is older than the anchor: only `confidant state reset` lifts it.
    Rollback,
    /// The anchor could not be advanced for half the lease (broker unreachable, or the
    /// deployment claimed by another instance).
    Unanchored,
    /// The audit log's background check found a broken chain or signature.
    Damaged,
}

impl Gate {
    /// Refuses requests for `why`, saying `text`.
    pub fn close(&self, why: GateReason, text: String) {
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        r[why as usize] = Some(text);
        self.closed.store(true, Ordering::Release);
    }

    /// Lifts `why`; requests flow again once no reason is left.
    pub fn open(&self, why: GateReason) {
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        r[why as usize] = None;
        self.closed
            .store(r.iter().any(Option::is_some), Ordering::Release);
    }

    /// Whether `why` holds.
    pub fn is_closed_for(&self, why: GateReason) -> bool {
        self.reasons.lock().unwrap_or_else(|p| p.into_inner())[why as usize].is_some()
    }

    /// The reasons requests are refused, or `None` while the gate is open.
    pub fn refusal(&self) -> Option<String> {
        if !self.closed.load(Ordering::Acquire) {
            return None;
        }
        let r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let text: Vec<&str> = r.iter().flatten().map(String::as_str).collect();
        (!text.is_empty()).then(|| text.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64, head: char, db: u64) -> Position {
        Position {
            audit_seq: seq,
            audit_head: head.to_string().repeat(64),
            db_version: db,
        }
    }

    #[test]
    fn a_position_covers_the_anchor_only_if_nothing_is_older_or_different() {
        let anchor = pos(100, 'a', 50);
        let aaa = "a".repeat(64);
        pos(100, 'a', 50).covers(&anchor, Some(&aaa)).unwrap();
        pos(250, 'b', 60).covers(&anchor, Some(&aaa)).unwrap();
        let e = pos(99, 'a', 50).covers(&anchor, None).unwrap_err();
        assert!(e.to_string().contains("ends at record 99"), "{e}");
        let e = pos(250, 'b', 60)
            .covers(&anchor, Some(&"c".repeat(64)))
            .unwrap_err();
        assert!(e.to_string().contains("another history"), "{e}");
        let e = pos(250, 'b', 60).covers(&anchor, None).unwrap_err();
        assert!(e.to_string().contains("no record 100"), "{e}");
        let e = pos(250, 'b', 49).covers(&anchor, Some(&aaa)).unwrap_err();
        assert!(e.to_string().contains("state version 49"), "{e}");
        // An empty anchor (a fresh deployment) is covered by anything.
        pos(0, '0', 0).covers(&Position::empty(), None).unwrap();
    }

    #[test]
    fn a_request_verifies_only_as_signed_by_the_deployment_key() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let other = SigningKey::from_bytes(&[4u8; 32]);
        let r = AnchorRequest::sign(
            &key,
            Step::Advance,
            "prod",
            &"1f".repeat(16),
            1_700_000_000,
            pos(7, 'e', 3),
        );
        r.verify(&key.verifying_key()).unwrap();
        assert_eq!(
            r.verify(&other.verifying_key()),
            Err(AnchorError::Signature)
        );
        // Every signed field matters.
        let mut t = r.clone();
        t.position.db_version += 1;
        assert_eq!(t.verify(&key.verifying_key()), Err(AnchorError::Signature));
        let mut t = r.clone();
        t.step = Step::Reset;
        assert_eq!(t.verify(&key.verifying_key()), Err(AnchorError::Signature));
        let mut t = r.clone();
        t.deployment = "prod2".into();
        assert_eq!(t.verify(&key.verifying_key()), Err(AnchorError::Signature));
        let mut t = r.clone();
        t.at += 1;
        assert_eq!(t.verify(&key.verifying_key()), Err(AnchorError::Signature));
        let mut t = r;
        t.position.audit_head = "E".repeat(64);
        assert!(matches!(
            t.verify(&key.verifying_key()),
            Err(AnchorError::Malformed(_))
        ));
    }

    #[test]
    fn the_gate_stays_closed_while_any_reason_holds() {
        let g = Gate::default();
        assert_eq!(g.refusal(), None);
        g.close(GateReason::Rollback, "rolled back".into());
        g.close(GateReason::Unanchored, "no anchor".into());
        g.open(GateReason::Unanchored);
        assert_eq!(g.refusal().as_deref(), Some("rolled back"));
        g.open(GateReason::Rollback);
        assert_eq!(g.refusal(), None);
    }
}
