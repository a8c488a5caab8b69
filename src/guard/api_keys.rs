//! API keys: high-entropy bearer tokens, shown once, stored only as SHA-256 hashes.
//!
//! A key is `cfd_` followed by 43 base64url characters (32 random bytes). With 256 bits of
//! entropy a plain SHA-256 is a safe verifier (no password hashing needed), and lookups are
//! one indexed read.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::GuardError;
use crate::audit::outbox;
use crate::storage::{Database, StorageError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Predict and ListModels.
    Predict,
    /// Explain.
    Explain,
    /// Administrative RPCs (consent, erasure, budgets of others).
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Explain => "explain",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Result<Self, UnknownScope> {
        match s.trim() {
            "predict" => Ok(Self::Predict),
            "explain" => Ok(Self::Explain),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownScope(other.chars().take(64).collect())),
        }
    }
}

/// A scope name that is not `predict`, `explain` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (expected predict, explain or admin)")]
pub struct UnknownScope(String);

/// A stored key's public facts (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Public identifier of the key (the first 16 hex digits of its hash).
    pub key_id: String,
    /// Who the key belongs to.
    pub principal: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// The purposes it may declare. Empty means the key declares none (and can only call
    /// models whose manifest lists no purposes).
    pub purposes: BTreeSet<String>,
    /// Requests per minute, if this key overrides the server default.
    pub rpm: Option<u32>,
    /// Requests per day, if this key overrides the server default.
    pub rpd: Option<u32>,
    /// Creation time, seconds since the epoch.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// `api_key` (a bearer token) or `client_cert` (a TLS client certificate).
    pub kind: CredentialKind,
}

/// How a credential is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A `cfd_…` bearer token in `x-api-key` or `authorization: Bearer`.
    ApiKey,
    /// A client certificate presented over mutual TLS.
    ClientCert,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::ClientCert => "client_cert",
        }
    }
}

/// The verifier stored for a client certificate: SHA-256 over a domain tag and the DER.
pub fn client_cert_hash(der: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"confidant.client-cert.v1\0");
    h.update(der);
    h.finalize().into()
}

/// A freshly created key. Shown once; no `Debug`, `Clone` or `Serialize`.
pub struct ApiKeySecret(Zeroizing<String>);

impl ApiKeySecret {
    /// The key text, to hand to its owner once.
    pub fn secret_str(&self) -> &str {
        &self.0
    }
}

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Who the key belongs to: 1 to 128 characters of `[A-Za-z0-9._@-]`.
    pub principal: String,
    /// What it may do (at least one).
    pub scopes: BTreeSet<Scope>,
    /// Purposes it may declare.
    pub purposes: BTreeSet<String>,
    /// Per-minute override.
    pub rpm: Option<u32>,
    /// Per-day override.
    pub rpd: Option<u32>,
}

/// The key store, over the shared database.
#[derive(Clone)]
pub struct KeyStore {
    db: Arc<Database>,
    /// Live keys already looked up, valid while SQLite's `data_version` (which changes when
    /// another connection, such as `confidant keys revoke`, commits) stays the same.
    cache: Arc<std::sync::Mutex<KeyCache>>,
}

#[derive(Default)]
struct KeyCache {
    data_version: i64,
    /// The commit marker taken before the last read that validated `live` (`None`: none).
    marker: Option<crate::storage::CommitMarker>,
    /// Steps at every explicit `clear`, so that a lookup that read the database before a
    /// revocation by this connection cannot put its (now revoked) key back afterwards.
    epoch: u64,
    live: foldhash::HashMap<[u8; 32], Arc<KeyRecord>>,
}

impl KeyCache {
    fn clear(&mut self) {
        self.live.clear();
        self.marker = None;
        self.epoch += 1;
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Checks a principal or purpose name (the rule is [`crate::names::validate_name`]).
pub fn validate_name(kind: &'static str, s: &str) -> Result<(), GuardError> {
    crate::names::validate_name(kind, s).map_err(|e| GuardError::InvalidConfig(e.to_string()))
}

impl KeyStore {
    /// A store over `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self {
            db,
            cache: Arc::default(),
        }
    }

    /// Creates a key and returns it once; the audit event names the actor `cli`.
    pub fn create(&self, new: &NewKey, now: i64) -> Result<(KeyRecord, ApiKeySecret), GuardError> {
        self.create_as(new, now, "cli")
    }

    /// Creates a key and returns it once. The `key.create` audit event (naming `actor`) is
    /// queued in the same transaction.
    pub fn create_as(
        &self,
        new: &NewKey,
        now: i64,
        actor: &str,
    ) -> Result<(KeyRecord, ApiKeySecret), GuardError> {
        check_new(new)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut()).map_err(|e| GuardError::Internal(e.to_string()))?;
        let secret = ApiKeySecret(Zeroizing::new(format!(
            "cfd_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref())
        )));
        let record = self.insert(
            new,
            hash(secret.secret_str()),
            CredentialKind::ApiKey,
            now,
            actor,
        )?;
        Ok((record, secret))
    }

    /// Registers a client certificate (DER) as a credential of `new.principal`, with the
    /// same scopes, purposes and limits an API key would have.
    pub fn create_client_cert(
        &self,
        new: &NewKey,
        cert_der: &[u8],
        now: i64,
        actor: &str,
    ) -> Result<KeyRecord, GuardError> {
        check_new(new)?;
        if cert_der.is_empty() {
            return Err(GuardError::InvalidConfig(
                "the client certificate is empty".into(),
            ));
        }
        self.insert(
            new,
            client_cert_hash(cert_der),
            CredentialKind::ClientCert,
            now,
            actor,
        )
    }

    fn insert(
        &self,
        new: &NewKey,
        h: [u8; 32],
        kind: CredentialKind,
        now: i64,
        actor: &str,
    ) -> Result<KeyRecord, GuardError> {
        let key_id = hex::encode(&h[..8]);
        let record = KeyRecord {
            key_id: key_id.clone(),
            principal: new.principal.clone(),
            scopes: new.scopes.clone(),
            purposes: new.purposes.clone(),
            rpm: new.rpm,
            rpd: new.rpd,
            created_at: now,
            revoked_at: None,
            kind,
        };
        let detail = format!(
            "key {key_id} ({}) for principal {}: scopes {}; purposes {}; rpm {}; rpd {}",
            kind.as_str(),
            record.principal,
            join(record.scopes.iter().map(|s| s.as_str())),
            join(record.purposes.iter().map(String::as_str)),
            record.rpm.map_or("default".into(), |v| v.to_string()),
            record.rpd.map_or("default".into(), |v| v.to_string()),
        );
        self.db.transaction(|tx| {
            tx.execute(
                "INSERT INTO api_keys (key_id, principal, hash, scopes, purposes, rpm, rpd, created_at, kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    key_id,
                    record.principal,
                    h.as_slice(),
                    join(record.scopes.iter().map(|s| s.as_str())),
                    join(record.purposes.iter().map(String::as_str)),
                    record.rpm,
                    record.rpd,
                    now,
                    kind.as_str()
                ],
            )?;
            outbox::enqueue(tx, outbox::now_ms(), actor, "key.create", &detail)
        }).map_err(|e| match e {
            StorageError::Sqlite { source, .. } if is_unique_violation(&source) => {
                GuardError::InvalidConfig("this credential is already registered".into())
            }
            other => other.into(),
        })?;
        Ok(record)
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn check_new(new: &NewKey) -> Result<(), GuardError> {
    validate_name("principal", &new.principal)?;
    for p in &new.purposes {
        validate_name("purpose", p)?;
    }
    if new.scopes.is_empty() {
        return Err(GuardError::InvalidConfig(
            "a key needs at least one scope".into(),
        ));
    }
    if new.rpm == Some(0) || new.rpd == Some(0) {
        return Err(GuardError::InvalidConfig(
            "--rpm and --rpd must be at least 1".into(),
        ));
    }
    Ok(())
}

impl KeyStore {
    /// Finds the live key matching a presented token.
    /// A hit shares the cached record (no copy of its strings and sets per request).
    pub fn authenticate(&self, presented: &str) -> Result<Option<Arc<KeyRecord>>, StorageError> {
        let h = hash(presented);
        // Taken before anything is read, so that whatever the reads below see is at least
        // as new as the marker (see `Database::commit_marker`).
        let marker = self.db.commit_marker();
        if let Some(m) = marker {
            // Nothing was committed, by any connection, since a read validated the cache.
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.marker == Some(m)
                && let Some(rec) = cache.live.get(&h)
            {
                return Ok(Some(Arc::clone(rec)));
            }
        }
        // One read decides whether the cache still holds: any commit by another connection
        // (a revocation by the CLI) bumps `data_version` and empties it.
        let (version, epoch, found) = self.db.read(|conn| {
            let version: i64 =
                conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
            let epoch = {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.data_version != version {
                    cache.data_version = version;
                    cache.live.clear();
                }
                // The cache is valid as of this read, which is no older than `marker`.
                cache.marker = marker;
                if let Some(rec) = cache.live.get(&h) {
                    return Ok((version, cache.epoch, Some(Some(Arc::clone(rec)))));
                }
                cache.epoch
            };
            let rec = conn
                .prepare_cached(
                    "SELECT key_id, principal, scopes, purposes, rpm, rpd, created_at, revoked_at, kind
                     FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL AND kind = 'api_key'",
                )?
                .query_row(params![h.as_slice()], row_to_record)
                .optional()?
                .map(Arc::new);
            Ok((version, epoch, Some(rec)))
        })?;
        let rec = found.flatten();
        if let Some(r) = &rec {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            // Unknown tokens are never cached, so the cache grows only with live keys.
            if cache.data_version == version && cache.epoch == epoch && cache.live.len() < 100_000 {
                cache.live.insert(h, Arc::clone(r));
            }
        }
        Ok(rec)
    }

    /// Finds the live credential registered for a client certificate (DER).
    pub fn authenticate_cert(&self, cert_der: &[u8]) -> Result<Option<KeyRecord>, StorageError> {
        let h = client_cert_hash(cert_der);
        self.db.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key_id, principal, scopes, purposes, rpm, rpd, created_at, revoked_at, kind
                 FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL AND kind = 'client_cert'",
            )?;
            stmt.query_row(params![h.as_slice()], row_to_record)
                .optional()
        })
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.db.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT key_id, principal, scopes, purposes, rpm, rpd, created_at, revoked_at, kind
                 FROM api_keys ORDER BY created_at, key_id",
            )?;
            stmt.query_map([], row_to_record)?.collect()
        })
    }

    /// Whether any key exists.
    pub fn is_empty(&self) -> Result<bool, StorageError> {
        self.db
            .read(|conn| {
                conn.query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get::<_, i64>(0))
            })
            .map(|n| n == 0)
    }

    /// Revokes a key by id, or every live key of a principal. Returns the ids revoked.
    pub fn revoke(&self, selector: &RevokeSelector, now: i64) -> Result<Vec<String>, GuardError> {
        let ids = self.db.transaction(|tx| {
            let (sql, arg) = match selector {
                RevokeSelector::KeyId(id) => (
                    "SELECT key_id FROM api_keys WHERE key_id = ?1 AND revoked_at IS NULL",
                    id,
                ),
                RevokeSelector::Principal(p) => (
                    "SELECT key_id FROM api_keys WHERE principal = ?1 AND revoked_at IS NULL",
                    p,
                ),
            };
            let ids: Vec<String> = tx
                .prepare(sql)?
                .query_map(params![arg], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                tx.execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE key_id = ?2",
                    params![now, id],
                )?;
                outbox::enqueue(
                    tx,
                    outbox::now_ms(),
                    "cli",
                    "key.revoke",
                    &format!("key {id}"),
                )?;
            }
            Ok(ids)
        })?;
        // This connection's own commits do not bump data_version: empty the cache here.
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if ids.is_empty() {
            return Err(GuardError::InvalidConfig(match selector {
                RevokeSelector::KeyId(id) => format!("no live key with id {id}"),
                RevokeSelector::Principal(p) => format!("principal {p} has no live keys"),
            }));
        }
        Ok(ids)
    }
}

/// Which keys `revoke` targets.
#[derive(Debug, Clone)]
pub enum RevokeSelector {
    /// One key.
    KeyId(String),
    /// Every live key of a principal.
    Principal(String),
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(",")
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').filter(|x| !x.is_empty())
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let scopes: String = r.get(2)?;
    let purposes: String = r.get(3)?;
    Ok(KeyRecord {
        key_id: r.get(0)?,
        principal: r.get(1)?,
        // Unknown scope names (written by a newer build) grant nothing.
        scopes: split(&scopes)
            .filter_map(|s| Scope::parse(s).ok())
            .collect(),
        purposes: split(&purposes).map(str::to_string).collect(),
        rpm: r.get(4)?,
        rpd: r.get(5)?,
        created_at: r.get(6)?,
        revoked_at: r.get(7)?,
        kind: match r.get::<_, String>(8)?.as_str() {
            "client_cert" => CredentialKind::ClientCert,
            _ => CredentialKind::ApiKey,
        },
    })
}
