//! The fixed keys that `make_seeds` signs and seals the made seeds with, and that the targets'
//! oracles check against: one definition, so that the two cannot drift apart.
#![allow(dead_code)]

use confidant::audit::AuditKeys;
use zeroize::Zeroizing;

/// The receipt key of the `receipt` seeds.
pub fn receipt_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
}

/// The publisher key of the `sealed` seed.
pub fn publisher_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
}

/// The audit keys of the `audit_segment` and `audit_journal` seeds.
pub fn audit_keys() -> AuditKeys {
    AuditKeys {
        signing: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        input_hmac: Zeroizing::new([1u8; 32]),
        records: Zeroizing::new([3u8; 32]),
    }
}
