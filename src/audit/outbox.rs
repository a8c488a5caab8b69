//! The audit outbox: admin events recorded by processes other than the server.
//!
//! `confidant keys create` and its siblings run beside a live server, which alone appends to
//! the hash chain (it holds the chain head and the checkpoint key). They write their event
//! into the `audit_outbox` table in the same SQLite transaction as the change itself, so a
//! change is never committed without its event. The server moves outbox rows into the chain
//! at start, every second, and at shutdown, deleting each row only once its record is
//! durable. A crash between the two steps can repeat an event (at-least-once); the record
//! carries the outbox id so a reader can tell.

use rusqlite::{Transaction, params};

use super::{AuditError, AuditLog, Event};
use crate::storage::{Database, StorageError};

/// Queues an admin event inside the caller's transaction.
pub fn enqueue(
    tx: &Transaction<'_>,
    at_ms: u64,
    actor: &str,
    action: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit_outbox (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at_ms as i64, actor, action, detail],
    )?;
    Ok(())
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrainError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Moves every queued event into `log`, oldest first. Returns how many moved.
pub fn drain(db: &Database, log: &AuditLog) -> Result<usize, DrainError> {
    let rows: Vec<(i64, i64, String, String, String)> = db.read(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, at_ms, actor, action, detail FROM audit_outbox ORDER BY id LIMIT 1000",
        )?;
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect()
    })?;
    for (id, at_ms, actor, action, detail) in &rows {
        log.append_durable(Event::Admin {
            actor: actor.clone(),
            action: action.clone(),
            detail: format!("{detail} (outbox {id}, at_ms {at_ms})"),
        })?;
        db.transaction(|tx| tx.execute("DELETE FROM audit_outbox WHERE id = ?1", params![id]))?;
    }
    Ok(rows.len())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
