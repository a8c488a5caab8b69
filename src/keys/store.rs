//! The broker's resources, encrypted at rest in the SQLite database under its master key,
//! and their release policies.
//!
//! Each resource is AES-256-GCM ciphertext with a fresh random nonce and AAD
//! `confidant-broker-resource-v1 ‖ 0 ‖ path`, so a row copied to another path does not
//! decrypt. The master key is `<data-dir>/master.key` (32 bytes, 0600): whoever reads the
//! broker's disk with it reads the resources, as with any KMS's root key.

use std::sync::Arc;

use confidant_attestation::Policy;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::OptionalExtension as _;
use zeroize::Zeroizing;

use super::error::BrokerError;
use crate::storage::Database;

/// The AAD domain of stored resources.
const AAD_DOMAIN: &[u8] = b"confidant-broker-resource-v1\0";
/// The largest resource the broker stores (a data key is 32 bytes; KBS resources are
/// small secrets, not files).
pub const MAX_RESOURCE_BYTES: usize = 64 << 10;

/// A resource's release policy: the policy itself and its TOML, as set.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// The parsed policy.
    pub policy: Policy,
    /// The TOML it was parsed from.
    pub toml: String,
}

/// Resources and policies in the database.
pub struct ResourceStore {
    db: Arc<Database>,
    master: LessSafeKey,
}

impl ResourceStore {
    /// A store over `db`, sealing with `master_key`.
    pub fn new(db: Arc<Database>, master_key: &Zeroizing<[u8; 32]>) -> Result<Self, BrokerError> {
        let master = UnboundKey::new(&AES_256_GCM, master_key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| BrokerError::Internal("master key".into()))?;
        Ok(Self { db, master })
    }

    fn aad(path: &str) -> Vec<u8> {
        [AAD_DOMAIN, path.as_bytes()].concat()
    }

    /// The database (the broker's anchors live beside the resources).
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Stores (or replaces) the resource at `path`.
    pub fn put(&self, path: &str, plaintext: &[u8]) -> Result<(), BrokerError> {
        if plaintext.len() > MAX_RESOURCE_BYTES {
            return Err(BrokerError::TooLarge {
                limit: MAX_RESOURCE_BYTES,
            });
        }
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| BrokerError::Internal("random nonce".into()))?;
        let mut buf = plaintext.to_vec();
        self.master
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(path)),
                &mut buf,
            )
            .map_err(|_| BrokerError::Internal("resource encryption".into()))?;
        let now = crate::unix_now();
        self.db
            .transaction(|tx| {
                tx.execute(
                    "INSERT INTO broker_resources (path, nonce, ciphertext, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(path) DO UPDATE SET nonce = ?2, ciphertext = ?3, updated_at = ?4",
                    rusqlite::params![path, &nonce[..], buf, now],
                )
            })
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        Ok(())
    }

    /// The plaintext of the resource at `path`, if there is one.
    pub fn get(&self, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BrokerError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .db
            .read(|c| {
                c.query_row(
                    "SELECT nonce, ciphertext FROM broker_resources WHERE path = ?1",
                    [path],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| BrokerError::Internal(format!("resource {path}: damaged nonce")))?;
        let mut buf = Zeroizing::new(ciphertext);
        let len = self
            .master
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(path)),
                buf.as_mut_slice(),
            )
            .map_err(|_| {
                BrokerError::Internal(format!(
                    "resource {path} does not decrypt under the master key (damaged or moved)"
                ))
            })?
            .len();
        buf.truncate(len);
        Ok(Some(buf))
    }

    /// Deletes the resource at `path` (its release policy stays, as Trustee keeps its
    /// resource policy when a resource is deleted). Returns whether there was one.
    pub fn delete(&self, path: &str) -> Result<bool, BrokerError> {
        self.db
            .transaction(|tx| tx.execute("DELETE FROM broker_resources WHERE path = ?1", [path]))
            .map(|rows| rows > 0)
            .map_err(|e| BrokerError::Internal(e.to_string()))
    }

    /// Whether a resource exists at `path`.
    pub fn contains(&self, path: &str) -> Result<bool, BrokerError> {
        self.db
            .read(|c| {
                c.query_row(
                    "SELECT 1 FROM broker_resources WHERE path = ?1",
                    [path],
                    |_| Ok(()),
                )
                .optional()
            })
            .map(|r| r.is_some())
            .map_err(|e| BrokerError::Internal(e.to_string()))
    }

    /// Sets the release policy of `path` from TOML (validated first).
    pub fn set_policy(&self, path: &str, toml: &str) -> Result<ReleasePolicy, BrokerError> {
        let policy = Policy::from_toml(toml)
            .map_err(|e| BrokerError::BadRequest(format!("release policy: {e}")))?;
        let now = crate::unix_now();
        self.db
            .transaction(|tx| {
                tx.execute(
                    "INSERT INTO broker_policies (path, policy, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(path) DO UPDATE SET policy = ?2, updated_at = ?3",
                    rusqlite::params![path, toml, now],
                )
            })
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        Ok(ReleasePolicy {
            policy,
            toml: toml.to_owned(),
        })
    }

    /// Loads every stored release policy, returning the first that no longer loads (one
    /// stored before policies had to pin what they accept) as `(path, reason)`.
    pub fn first_refused_policy(&self) -> Result<Option<(String, String)>, BrokerError> {
        let rows: Vec<(String, String)> = self
            .db
            .read(|c| {
                let mut stmt =
                    c.prepare("SELECT path, policy FROM broker_policies ORDER BY path")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        Ok(rows.into_iter().find_map(|(path, toml)| {
            Policy::from_toml(&toml)
                .err()
                .map(|e| (path, e.to_string()))
        }))
    }

    /// The release policy of `path`, if one is set.
    pub fn policy(&self, path: &str) -> Result<Option<ReleasePolicy>, BrokerError> {
        let toml: Option<String> = self
            .db
            .read(|c| {
                c.query_row(
                    "SELECT policy FROM broker_policies WHERE path = ?1",
                    [path],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        toml.map(|toml| {
            Policy::from_toml(&toml)
                .map(|policy| ReleasePolicy { policy, toml })
                .map_err(|e| BrokerError::Internal(format!("stored policy of {path}: {e}")))
        })
        .transpose()
    }
}
