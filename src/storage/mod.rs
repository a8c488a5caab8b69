//! The embedded SQLite database: one file, `<data-dir>/confidant.db`, shared by the server
//! and the admin commands (`confidant keys …`) that run beside it.
//!
//! Each domain module owns its tables and SQL; this module owns the connection, the pragmas
//! and the schema migrations. Writes go through [`Database::transaction`], so a refused or
//! failed operation never leaves half its changes behind.

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
];

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
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let err = |source| StorageError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
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
        #[cfg(unix)]
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
        self.transaction(|tx| {
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
    /// writers serialize instead of failing), committing if it returns `Ok`.
    pub fn transaction<T>(
        &self,
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
        tx.commit().map_err(err)?;
        Ok(out)
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
