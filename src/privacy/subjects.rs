//! Data subjects (GDPR): consent per purpose, pseudonyms, and erasure by crypto-shredding.
//!
//! A subject id (sent by a client in `x-subject-id`) is never stored. The database finds a
//! subject by a keyed index, `HMAC(index key, id)`, under a subkey of the deployment's state
//! key (see [`crate::state`]; the server passes it in), and holds for each subject a random
//! 256-bit **pseudonym key**. The database itself is encrypted under another subkey.
//! A subject appears in the audit log only as `HMAC(pseudonym key, id)`.
//!
//! Forgetting a subject deletes its pseudonym key and its consent records (SQLite's
//! `secure_delete` overwrites them, and the WAL is checkpointed). The audit records that
//! carry its pseudonym still verify, but nobody, the server included, can recompute the
//! pseudonym from the id any more: the link to the person is gone. A later request naming
//! the subject fails for lack of consent.
//!
//! The ε already spent on a subject is not erased with it: otherwise `forget` followed by a
//! new consent would hand the subject a fresh privacy budget in the same window. The
//! per-subject budget is kept under [`Subjects::budget_key`], `HMAC(index key,
//! "confidant-subject-budget-v1" ‖ 0 ‖ id)`: a keyed hash under the server's index key, which
//! is not erased, so a new consent for the same id finds the same spend, and which says
//! nothing about the subject to whoever lacks that key. It holds two numbers per window, and
//! [`crate::privacy::budget::Budgets`] deletes per-subject rows once their window has ended.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::storage::{Database, StorageError};

/// Why a subject-related request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// The subject id or purpose is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No consent for this purpose.
    #[error("no consent for purpose {purpose}")]
    NoConsent {
        /// The purpose.
        purpose: String,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a consent change recorded.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentRecord {
    /// The subject's pseudonym (what the audit log shows).
    pub subject_pseudonym: String,
    /// The purpose.
    pub purpose: String,
    /// Granted or withdrawn.
    pub granted: bool,
    /// When, seconds since the epoch.
    pub at: i64,
    /// Where the consent came from (a form id, a system name).
    pub source: String,
}

/// What an erasure did.
#[derive(Debug, Clone, Serialize)]
pub struct Erasure {
    /// Whether the server held anything about the subject.
    pub existed: bool,
    /// The pseudonym the subject had (it can no longer be recomputed), when it existed.
    pub subject_pseudonym: Option<String>,
    /// Consent records deleted.
    pub consents_deleted: u64,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// The subject store.
#[derive(Clone)]
pub struct Subjects {
    db: Arc<Database>,
    index_key: Arc<Zeroizing<[u8; 32]>>,
}

/// The domain of [`Subjects::budget_key`].
const BUDGET_DOMAIN: &[u8] = b"confidant-subject-budget-v1\0";

/// Longest subject id, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    // A 32-byte key is always a valid HMAC key.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Checks a subject id: 1 to 256 bytes of printable ASCII.
pub fn validate_subject(id: &str) -> Result<(), SubjectError> {
    if id.is_empty() || id.len() > MAX_SUBJECT_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SubjectError::Invalid(format!(
            "a subject id must be 1 to {MAX_SUBJECT_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

impl Subjects {
    /// The store over `db`, with the index key.
    pub fn new(db: Arc<Database>, index_key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            db,
            index_key: Arc::new(index_key),
        }
    }

    fn index(&self, id: &str) -> [u8; 32] {
        hmac(&self.index_key, id.as_bytes())
    }

    /// The name the subject's privacy budget is kept under: a keyed hash of the id under the
    /// server's index key (domain-separated from the consent index), hex. It survives
    /// [`Subjects::forget`], so that erasure cannot reset the ε spent on a subject.
    pub fn budget_key(&self, id: &str) -> Result<String, SubjectError> {
        validate_subject(id)?;
        let message = [BUDGET_DOMAIN, id.as_bytes()].concat();
        Ok(hex::encode(hmac(&self.index_key, &message)))
    }

    fn pseudonym_key(&self, idx: &[u8; 32]) -> Result<Option<Zeroizing<[u8; 32]>>, StorageError> {
        self.db.read(|conn| {
            conn.prepare_cached("SELECT pkey FROM subjects WHERE idx = ?1")?
                .query_row(params![idx.as_slice()], |r| {
                    let v: Vec<u8> = r.get(0)?;
                    let mut k = Zeroizing::new([0u8; 32]);
                    if v.len() == 32 {
                        k.copy_from_slice(&v);
                    }
                    Ok(k)
                })
                .optional()
        })
    }

    /// The subject's pseudonym, if the server holds a key for it.
    pub fn pseudonym(&self, id: &str) -> Result<Option<String>, SubjectError> {
        validate_subject(id)?;
        let idx = self.index(id);
        Ok(self
            .pseudonym_key(&idx)?
            .map(|k| hex::encode(hmac(&k, id.as_bytes()))))
    }

    /// Checks that `id` has granted consent for `purpose`; returns its pseudonym.
    pub fn check_consent(&self, id: &str, purpose: &str) -> Result<String, SubjectError> {
        validate_subject(id)?;
        let idx = self.index(id);
        let granted: Option<bool> = self.db.read(|conn| {
            conn.prepare_cached("SELECT granted FROM consents WHERE idx = ?1 AND purpose = ?2")?
                .query_row(params![idx.as_slice(), purpose], |r| r.get(0))
                .optional()
        })?;
        if granted != Some(true) {
            return Err(SubjectError::NoConsent {
                purpose: purpose.to_string(),
            });
        }
        let key = self
            .pseudonym_key(&idx)?
            .ok_or_else(|| SubjectError::NoConsent {
                purpose: purpose.to_string(),
            })?;
        Ok(hex::encode(hmac(&key, id.as_bytes())))
    }

    /// Grants or withdraws consent (creating the subject's pseudonym key on first use).
    pub fn set_consent(
        &self,
        id: &str,
        purpose: &str,
        granted: bool,
        source: &str,
        now: i64,
    ) -> Result<ConsentRecord, SubjectError> {
        validate_subject(id)?;
        crate::names::validate_name("purpose", purpose)
            .map_err(|e| SubjectError::Invalid(e.to_string()))?;
        if source.len() > 256 || source.chars().any(char::is_control) {
            return Err(SubjectError::Invalid(
                "the consent source must be at most 256 characters with no control characters"
                    .into(),
            ));
        }
        let idx = self.index(id);
        let mut fresh = Zeroizing::new([0u8; 32]);
        getrandom::fill(fresh.as_mut())
            .map_err(|e| SubjectError::Invalid(format!("no OS randomness: {e}")))?;
        let key: Vec<u8> = self.db.transaction(|tx| {
            tx.prepare_cached(
                "INSERT INTO subjects (idx, pkey, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (idx) DO NOTHING",
            )?
            .execute(params![idx.as_slice(), fresh.as_slice(), now])?;
            tx.prepare_cached(
                "INSERT INTO consents (idx, purpose, granted, at, source) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (idx, purpose)
                 DO UPDATE SET granted = excluded.granted, at = excluded.at, source = excluded.source",
            )?
            .execute(params![idx.as_slice(), purpose, granted, now, source])?;
            tx.prepare_cached("SELECT pkey FROM subjects WHERE idx = ?1")?
                .query_row(params![idx.as_slice()], |r| r.get(0))
        })?;
        let key = Zeroizing::new(key);
        let mut k = [0u8; 32];
        if key.len() == 32 {
            k.copy_from_slice(&key);
        }
        let pseudonym = hex::encode(hmac(&k, id.as_bytes()));
        zeroize::Zeroize::zeroize(&mut k);
        Ok(ConsentRecord {
            subject_pseudonym: pseudonym,
            purpose: purpose.to_string(),
            granted,
            at: now,
            source: source.to_string(),
        })
    }

    /// Forgets a subject: deletes its pseudonym key and consents; the ε spent on it in the
    /// current window still counts ([`Subjects::budget_key`]). Idempotent.
    pub fn forget(&self, id: &str, now: i64) -> Result<Erasure, SubjectError> {
        validate_subject(id)?;
        let pseudonym = self.pseudonym(id)?;
        let idx = self.index(id);
        let consents = self.db.transaction(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM consents WHERE idx = ?1")?
                .execute(params![idx.as_slice()])?;
            tx.prepare_cached("DELETE FROM subjects WHERE idx = ?1")?
                .execute(params![idx.as_slice()])?;
            // The ε spent on the subject stays, under its budget key, until its window ends
            // (see the module's documentation). Rows kept under the pseudonym by earlier
            // versions go with the pseudonym.
            if let Some(p) = &pseudonym {
                tx.prepare_cached(
                    "DELETE FROM privacy_spend WHERE scope = 'subject' AND name = ?1",
                )?
                .execute(params![p])?;
            }
            Ok(n as u64)
        })?;
        // Push the overwritten pages out of the WAL too.
        let _ = self
            .db
            .read(|conn| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
        Ok(Erasure {
            existed: pseudonym.is_some(),
            subject_pseudonym: pseudonym,
            consents_deleted: consents,
            at: now,
        })
    }
}

#[cfg(test)]
mod tests;
