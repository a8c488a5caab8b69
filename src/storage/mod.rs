//! The embedded SQLite database: one file, `<data-dir>/confidant.db`, shared by the server
//! and the admin commands (`confidant keys …`) that run beside it.
//!
//! Each domain module owns its tables and SQL; this module owns the connection, the pragmas
//! and the schema migrations. Writes go through [`Database::transaction`], so a refused or
//! failed operation never leaves half its changes behind.
//!
//! The server's database is encrypted: SQLCipher (rusqlite's `bundled-sqlcipher-vendored-
//! openssl`, AES-256-CBC pages with an HMAC-SHA512 per page, under a raw 256-bit key that is
//! a subkey of the deployment's state key; see [`Database::open_encrypted`]). The file, its
//! WAL and its shared-memory index are created 0600. The key broker's own database
//! ([`Database::open_in`]) holds only resources already sealed under its master key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

mod wal_index;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// SQLite failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// The key does not open the database (another state key, or a plaintext database from
    /// before encryption).
    #[error(
        "database {path} does not open under this deployment's state key: it was written \
         under another state key, or before the database was encrypted (not a database: \
         {source})"
    )]
    WrongKey {
        /// The database file.
        path: String,
        /// SQLCipher's error.
        source: rusqlite::Error,
    },
    /// The file could not be created with mode 0600.
    #[error("database {path}: {source}")]
    Io {
        /// The database file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The database was written by a newer Confidant.
    #[error("database {path} has schema version {found}; this build knows up to {known}")]
    NewerSchema {
        /// The database file.
        path: String,
        /// The version found.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: API keys and per-day request quotas.
    "CREATE TABLE api_keys (
         key_id      TEXT PRIMARY KEY,
         principal   TEXT NOT NULL,
         hash        BLOB NOT NULL UNIQUE,
         scopes      TEXT NOT NULL,
         purposes    TEXT NOT NULL,
         rpm         INTEGER,
         rpd         INTEGER,
         created_at  INTEGER NOT NULL,
         revoked_at  INTEGER
     );
     CREATE INDEX api_keys_principal ON api_keys(principal);
     CREATE TABLE daily_usage (
         principal   TEXT NOT NULL,
         day         INTEGER NOT NULL,
         count       INTEGER NOT NULL,
         PRIMARY KEY (principal, day)
     );",
    // 2: credentials bound to client certificates (mTLS), and the audit outbox: admin
    // events written by commands running beside the server, in the same transaction as
    // the change they record, for the server to move into the hash-chained log.
    "ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'api_key';
     CREATE TABLE audit_outbox (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         at_ms       INTEGER NOT NULL,
         actor       TEXT NOT NULL,
         action      TEXT NOT NULL,
         detail      TEXT NOT NULL
     );",
    // 3: differential-privacy odometers: what each principal has spent per window.
    "CREATE TABLE privacy_spend (
         scope       TEXT NOT NULL,
         name        TEXT NOT NULL,
         window      INTEGER NOT NULL,
         epsilon     REAL NOT NULL,
         rho         REAL NOT NULL,
         PRIMARY KEY (scope, name, window)
     );",
    // 4: data subjects (GDPR): a per-subject pseudonym key, found by a keyed index of the
    // subject id (the raw id is never stored), and consent per purpose.
    "CREATE TABLE subjects (
         idx         BLOB PRIMARY KEY,
         pkey        BLOB NOT NULL,
         created_at  INTEGER NOT NULL
     );
     CREATE TABLE consents (
         idx         BLOB NOT NULL REFERENCES subjects(idx) ON DELETE CASCADE,
         purpose     TEXT NOT NULL,
         granted     INTEGER NOT NULL,
         at          INTEGER NOT NULL,
         source      TEXT NOT NULL,
         PRIMARY KEY (idx, purpose)
     );",
    // 5: the key broker: resources sealed under the broker's master key (AES-256-GCM, the
    // resource path as AAD) and their release policies (attestation-policy TOML).
    "CREATE TABLE broker_resources (
         path        TEXT PRIMARY KEY,
         nonce       BLOB NOT NULL,
         ciphertext  BLOB NOT NULL,
         updated_at  INTEGER NOT NULL
     );
     CREATE TABLE broker_policies (
         path        TEXT PRIMARY KEY,
         policy      TEXT NOT NULL,
         updated_at  INTEGER NOT NULL
     );",
    // 6: the state version, stepped by every write transaction (the freshness anchor
    // compares it, see `crate::state::anchor`), and the key broker's anchors per deployment.
    "CREATE TABLE state_version (
         id          INTEGER PRIMARY KEY CHECK (id = 1),
         version     INTEGER NOT NULL
     );
     INSERT INTO state_version (id, version) VALUES (1, 0);
     CREATE TABLE broker_anchors (
         deployment  TEXT PRIMARY KEY,
         anchor      TEXT NOT NULL,
         updated_at  INTEGER NOT NULL
     );",
];

/// The statement that steps the state version in every write transaction.
const STEP_VERSION: &str = "UPDATE state_version SET version = version + 1 WHERE id = 1";

/// A handle to the database. Cheap to share behind an `Arc`.
pub struct Database {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The WAL index (`<db>-shm`), mapped read-only, for [`Database::commit_marker`].
    shm: Option<wal_index::WalIndexView>,
}

/// The two copies of the WAL-index header at the start of `<db>-shm` (SQLite's "WAL-index
/// format": `WalIndexHdr`, 48 bytes, stored twice). See [`Database::commit_marker`].
pub type CommitMarker = [u8; wal_index::HEADER];

impl Database {
    /// Opens (creating if needed) the database file, unencrypted, and applies pending
    /// migrations. For the key broker's database, whose resources are sealed under its
    /// master key; the server's database is [`Database::open_encrypted`].
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, None)
    }

    /// Opens (creating if needed) `path` encrypted by SQLCipher under the raw 256-bit `key`
    /// (a subkey of the state key), and applies pending migrations. A wrong key, or a
    /// plaintext file, is refused with [`StorageError::WrongKey`].
    pub fn open_encrypted(path: &Path, key: &[u8; 32]) -> Result<Self, StorageError> {
        Self::open_with(path, Some(key))
    }

    /// [`Database::open_encrypted`] on `<data-dir>/confidant.db`.
    pub fn open_encrypted_in(data_dir: &Path, key: &[u8; 32]) -> Result<Self, StorageError> {
        Self::open_encrypted(&data_dir.join("confidant.db"), key)
    }

    fn open_with(path: &Path, key: Option<&[u8; 32]>) -> Result<Self, StorageError> {
        let err = |source| StorageError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        // Created 0600 before SQLite opens it: SQLite gives the WAL and the shared-memory
        // index the database file's mode.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|source| StorageError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        if let Some(key) = key {
            // SQLCipher's raw-key form, x'<64 hex>': no passphrase derivation. The statement
            // text holds the key, so it is zeroized after use.
            let mut hex = zeroize::Zeroizing::new([0u8; 64]);
            let _ = hex::encode_to_slice(key, hex.as_mut());
            let mut sql = zeroize::Zeroizing::new(String::with_capacity(80));
            sql.push_str("PRAGMA key = \"x'");
            sql.push_str(std::str::from_utf8(hex.as_ref()).unwrap_or_default());
            sql.push_str("'\";");
            conn.execute_batch(&sql).map_err(err)?;
            // The first read of the schema is where a wrong key shows.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|source| StorageError::WrongKey {
                path: path.display().to_string(),
                source,
            })?;
        }
        // WAL lets `confidant keys` write while the server reads; NORMAL sync is durable
        // across process crashes (the WAL is fsync'd at checkpoints).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Deleted rows (a forgotten subject's key) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let mut db = Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            shm: None,
        };
        db.migrate()?;
        // The migration ran a transaction, so the WAL index exists now; this connection
        // keeps it (SQLite removes it only when the last connection closes).
        let mut shm_path = path.as_os_str().to_owned();
        shm_path.push("-shm");
        db.shm = std::fs::File::open(shm_path)
            .ok()
            .and_then(|f| wal_index::WalIndexView::map(&f));
        Ok(db)
    }

    /// The database in `<data-dir>/confidant.db`.
    pub fn open_in(data_dir: &Path) -> Result<Self, StorageError> {
        Self::open(&data_dir.join("confidant.db"))
    }

    fn migrate(&self) -> Result<(), StorageError> {
        let known = MIGRATIONS.len() as i64;
        self.transaction_with(false, |tx| {
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > known {
                return Ok(Some(version));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            }
            Ok(None)
        })?
        .map_or(Ok(()), |found| {
            Err(StorageError::NewerSchema {
                path: self.path.display().to_string(),
                found,
                known,
            })
        })
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock is taken up front, so concurrent
    /// writers serialize instead of failing), committing if it returns `Ok`. Each committed
    /// transaction steps the state version ([`Database::state_version`]) in the same commit.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        self.transaction_with(true, f)
    }

    fn transaction_with<T>(
        &self,
        step_version: bool,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let err = |source| StorageError::Sqlite {
            path: self.path.display().to_string(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        if step_version {
            tx.prepare_cached(STEP_VERSION)
                .and_then(|mut s| s.execute([]))
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// The state version: how many write transactions have committed (by this process or
    /// any other on the same file). A copy restored from earlier has a lower version.
    pub fn state_version(&self) -> Result<u64, StorageError> {
        self.read(|c| {
            c.query_row("SELECT version FROM state_version WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|v| v.max(0) as u64)
    }

    /// A snapshot of the WAL-index header, which every committed write transaction, by any
    /// connection or process, changes before its commit returns (`mxFrame` grows, or the WAL
    /// restarts with new salts, and the `iChange` counter steps). Two equal markers therefore
    /// mean that nothing was committed between the two reads, and a cache validated by a
    /// read of the database after marker `m` was taken is still valid while the marker is
    /// `m`. A read of the mapped shared-memory file, instead of a read transaction (several
    /// `fcntl` locks). `None` (no WAL index, or the two header copies caught mid-update)
    /// means "unknown": take the slow path.
    pub fn commit_marker(&self) -> Option<CommitMarker> {
        self.shm.as_ref()?.header()
    }

    /// Runs a read-only `f` on the connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StorageError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_database_reads_back_only_under_its_key_and_holds_no_plaintext() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let key = [5u8; 32];
        let secret = "principal-visible-in-clear";
        {
            let db = Database::open_encrypted_in(d.path(), &key).unwrap();
            db.transaction(|tx| {
                tx.execute(
                    "INSERT INTO audit_outbox (at_ms, actor, action, detail) VALUES (1, ?1, 'a', 'd')",
                    [secret],
                )
            })
            .unwrap();
        }
        let db = Database::open_encrypted_in(d.path(), &key).unwrap();
        let actor: String = db
            .read(|c| c.query_row("SELECT actor FROM audit_outbox", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(actor, secret);
        drop(db);
        for entry in std::fs::read_dir(d.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the plaintext",
                path.display()
            );
            assert!(!bytes.starts_with(b"SQLite format 3"), "{}", path.display());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let err = Database::open_encrypted_in(d.path(), &[6u8; 32])
            .err()
            .unwrap();
        assert!(matches!(err, StorageError::WrongKey { .. }), "{err}");
        let err = Database::open_in(d.path()).err().unwrap();
        assert!(err.to_string().contains("not a database"), "{err}");
    }
}
