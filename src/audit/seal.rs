//! Encrypted event bodies: every event but checkpoints and retention records is written as a
//! `sealed` event, AES-256-GCM under a record key, with the record's sequence number as
//! associated data (and as the nonce).
//!
//! Each writer (each opening of the log) draws a fresh random 128-bit `key_salt` and derives
//! its record key as HKDF-SHA256(salt `key_salt`, the audit-records subkey of the state key,
//! `confidant.audit.record-key.v1`). Within one writer the sequence numbers strictly
//! increase, so a (key, nonce) pair is never used twice, however long the deployment lives
//! and even if a log is reset and its numbers start again.
//!
//! The sealed event is `{"ciphertext":"<base64 of ciphertext‖tag>","key_salt":"<hex>",
//! "kind":"sealed"}`; the chain hash covers it like any event, so `audit verify` needs no key.
//! The plaintext is a Predict event's compact body ([`super::compact`]) or an event's
//! canonical JSON.

use std::collections::HashMap;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{AuditError, Event};

const RECORD_KEY_INFO: &[u8] = b"confidant.audit.record-key.v1";
const AAD_DOMAIN: &[u8] = b"confidant.audit.sealed.v1\0";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The writer's sealing state: its record key and scratch space reused for every record.
pub(super) struct Sealer {
    key: LessSafeKey,
    salt_hex: [u8; 32],
    scratch: Vec<u8>,
}

fn record_key(records_key: &[u8; 32], salt: &[u8; 16]) -> LessSafeKey {
    let k = crate::state::derive(records_key, salt, RECORD_KEY_INFO);
    // 32 bytes is AES-256's key length.
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, k.as_ref())
            .unwrap_or_else(|_| unreachable!("a 32-byte AES-256 key")),
    )
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(seq: u64) -> [u8; AAD_DOMAIN.len() + 8] {
    let mut a = [0u8; AAD_DOMAIN.len() + 8];
    a[..AAD_DOMAIN.len()].copy_from_slice(AAD_DOMAIN);
    a[AAD_DOMAIN.len()..].copy_from_slice(&seq.to_be_bytes());
    a
}

impl Sealer {
    /// A sealer with a fresh random salt.
    pub(super) fn new(records_key: &[u8; 32]) -> Result<Self, AuditError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| AuditError::Random(e.to_string()))?;
        let mut salt_hex = [0u8; 32];
        // 32 is exactly twice 16, the only length `encode_to_slice` checks.
        let _ = hex::encode_to_slice(salt, &mut salt_hex);
        Ok(Self {
            key: record_key(records_key, &salt),
            salt_hex,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// Writes the canonical JSON of the sealed form of `event_json` (record `seq`) to `out`.
    pub(super) fn seal(&mut self, seq: u64, event_json: &[u8], out: &mut Vec<u8>) {
        self.scratch.clear();
        self.scratch.extend_from_slice(event_json);
        let tag = match self.key.seal_in_place_separate_tag(
            nonce(seq),
            Aad::from(aad(seq)),
            &mut self.scratch,
        ) {
            Ok(tag) => tag,
            // ring refuses only inputs over GCM's 64 GiB limit; the queue holds no such event.
            Err(_) => unreachable!("an audit event below AES-GCM's length limit"),
        };
        self.scratch.extend_from_slice(tag.as_ref());
        out.extend_from_slice(b"{\"ciphertext\":\"");
        let at = out.len();
        out.resize(
            at + base64::encoded_len(self.scratch.len(), true).unwrap_or(0),
            0,
        );
        let written = B64
            .encode_slice(&self.scratch, &mut out[at..])
            .unwrap_or_else(|_| unreachable!("the buffer is sized by encoded_len"));
        out.truncate(at + written);
        out.extend_from_slice(b"\",\"key_salt\":\"");
        out.extend_from_slice(&self.salt_hex);
        out.extend_from_slice(b"\",\"kind\":\"sealed\"}");
        // The plaintext copy does not outlive the record.
        zeroize::Zeroize::zeroize(&mut self.scratch[..]);
    }
}

/// Why a sealed event could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The salt is not 32 hex digits.
    #[error("key_salt is not 32 hex digits")]
    Salt,
    /// The ciphertext is not base64.
    #[error("ciphertext is not base64")]
    Base64,
    /// Authentication failed: the wrong state key, or the record was altered or moved.
    #[error("the event does not decrypt under this state key at this sequence number")]
    Authentication,
    /// The plaintext is not an event.
    #[error("the decrypted event does not parse: {0}")]
    Event(String),
}

/// Opens sealed events with the audit-records subkey, caching each writer's record key.
pub struct Opener {
    records_key: Zeroizing<[u8; 32]>,
    keys: HashMap<[u8; 16], LessSafeKey>,
}

impl Opener {
    /// An opener for the audit-records subkey of a state key.
    pub fn new(records_key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            records_key,
            keys: HashMap::new(),
        }
    }

    /// Decrypts the sealed event of record `seq`.
    pub fn open(&mut self, seq: u64, key_salt: &str, ciphertext: &str) -> Result<Event, OpenError> {
        let mut salt = [0u8; 16];
        hex::decode_to_slice(key_salt, &mut salt).map_err(|_| OpenError::Salt)?;
        let key = self
            .keys
            .entry(salt)
            .or_insert_with(|| record_key(&self.records_key, &salt));
        let mut bytes = Zeroizing::new(B64.decode(ciphertext).map_err(|_| OpenError::Base64)?);
        let plain = key
            .open_in_place(nonce(seq), Aad::from(aad(seq)), &mut bytes)
            .map_err(|_| OpenError::Authentication)?;
        let event: Event = match plain.split_first() {
            Some((&super::compact::FORMAT, body)) => {
                super::compact::read(body).map_err(OpenError::Event)?
            }
            _ => serde_json::from_slice(plain).map_err(|e| OpenError::Event(e.to_string()))?,
        };
        if matches!(event, Event::Sealed { .. }) {
            return Err(OpenError::Event(
                "a sealed event inside a sealed event".into(),
            ));
        }
        Ok(event)
    }
}
