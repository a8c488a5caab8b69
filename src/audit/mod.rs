//! The tamper-evident audit log: append-only JSON-lines segments with a SHA-256 hash chain
//! and periodic checkpoints signed by the server's Ed25519 key.
//!
//! Every line is one [`Record`]. Its `hash` is SHA-256 over `"confidant.audit.v1\0"`, the
//! previous record's hash and the record's canonical JSON without the `hash` field, so editing,
//! deleting, inserting or reordering any line breaks the chain at that line. Every
//! `checkpoint_every` records (and at shutdown) a `checkpoint` record signs the chain head.
//!
//! Records hold ids, digests and decisions, never inputs or outputs: the input appears only as
//! an HMAC-SHA256 under the audit input key, and the output only as its argmax class. Even
//! those are encrypted: every event but checkpoints and retention records is written sealed
//! (AES-256-GCM under a subkey of the deployment's state key, the sequence number as
//! associated data; see [`seal`]), and the chain hash covers the ciphertext, so anyone can
//! verify the chain and signatures while only the state key's holder reads the events.
//!
//! Writes go through one writer thread that appends in groups and fsyncs once per group, so a
//! burst of requests costs one fsync. On start, a torn final line (a crash mid-write) is cut
//! with a warning; every line that was fsync'd survives.
//!
//! A group that fails to write or fsync is cut back out of the file and kept; the writer
//! retries it (reopening the segment) until it is on disk, and meanwhile
//! [`AuditLog::is_writable`] is false, so that the server refuses requests rather than
//! serve them with records it cannot keep. The chain stays whole: no record is skipped.

mod compact;
mod encode;
mod file;
mod idle;
mod journal;
pub mod outbox;
mod queue;
mod receipt_task;
mod record;
pub mod seal;
mod segments;
pub mod verify;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use encode::*;
use file::*;
pub use idle::IdleWorkers;
pub use journal::{DEFAULT_JOURNAL_BYTES, JOURNAL_FILE};
use queue::*;
pub use queue::{Durable, RECEIPT_LINGER, ReceiptExpected};
use receipt_task::*;
use record::*;
pub use record::{Event, PredictEvent, Record, checkpoint_message, retention_message};
use segments::*;
pub use segments::{record_at, segment_path, segments};
pub use verify::{VerifyReport, export_dir, verify_dir};
use writer::*;

const DOMAIN: &[u8] = b"confidant.audit.v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"confidant.audit.checkpoint.v1\0";
const RETENTION_DOMAIN: &[u8] = b"confidant.audit.retention.v1\0";
/// Records per segment file before rotating.
pub const SEGMENT_RECORDS: u64 = 100_000;

/// Audit errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// File I/O failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The existing log is not a valid chain, so appending to it would hide the damage.
    #[error("audit log {path} is damaged at line {line}: {problem}")]
    Damaged {
        /// The segment.
        path: String,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// The writer thread is gone.
    #[error("audit writer stopped")]
    Stopped,
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
    /// The existing log is signed by another key than this deployment's checkpoint key.
    #[error(
        "audit log {path} is signed by another key than this deployment's checkpoint key \
         {expected} ({problem}): it was written under another state key, or forged"
    )]
    ForeignKey {
        /// The segment.
        path: String,
        /// This deployment's key (hex).
        expected: String,
        /// What the verifier found.
        problem: String,
    },
    /// The last group failed to reach disk and the retry has not succeeded yet.
    #[error("the audit log cannot be written at the moment")]
    Unwritable,
    /// The event has no JSON form (not reached: every event serializes). It is refused
    /// rather than written as a line that would break the chain.
    #[error("audit event could not be serialized: {0}")]
    Unserializable(String),
}

/// Creates `dir` (and parents) as 0700, and tightens an existing one to 0700.
fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Opens a segment for appending, creating it 0600.
fn open_segment(path: &Path) -> Result<File, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How long the writer gathers a group of records before one write and one fsync, by
/// default (`[audit] group_commit_ms`).
pub const DEFAULT_GROUP_COMMIT_MS: u64 = 10;

/// Default records between checkpoints (`[audit] checkpoint_records`).
pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 1000;
/// Default longest time between checkpoints while records arrive (`[audit] checkpoint_ms`):
/// the freshness anchor advances at every checkpoint, so this bounds the window of loss.
pub const DEFAULT_CHECKPOINT_MS: u64 = 1000;

/// A checkpoint that is on disk: its sequence number and its record's chain hash (what the
/// freshness anchor holds, see [`crate::state::anchor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpointed {
    /// The checkpoint record's sequence number (0: an empty log).
    pub seq: u64,
    /// Its chain hash (hex).
    pub head: String,
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Sign a checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// How long the writer gathers records after the first of a group before it writes and
    /// fsyncs them. While it waits, appends cost no wake-up; records reach disk within
    /// about this long (callers of `append_durable` wait for it).
    pub group_linger: Duration,
    /// Records per segment file.
    pub segment_records: u64,
    /// Delete segments whose newest record is older than this (never the current one).
    pub retention: Option<Duration>,
    /// Delete the oldest segments (never the current one) while the log is larger than this
    /// many bytes, behind a signed retention record as for age.
    pub max_bytes: Option<u64>,
    /// The journal's ring, in bytes (see [`journal`]): an answer leaves once its event is
    /// journaled. 0: no journal, and an answer waits until the writer has written its record.
    pub journal_bytes: usize,
    /// How long the writer gathers a group whose only waiters want receipts while more calls
    /// that will carry one are under way ([`AuditLog::expect_receipt`]).
    pub receipt_linger: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: DEFAULT_CHECKPOINT_RECORDS,
            checkpoint_interval: Duration::from_millis(DEFAULT_CHECKPOINT_MS),
            group_linger: Duration::from_millis(DEFAULT_GROUP_COMMIT_MS),
            segment_records: SEGMENT_RECORDS,
            retention: None,
            max_bytes: None,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
            receipt_linger: RECEIPT_LINGER,
        }
    }
}

/// The keys of an audit log, all derived from the deployment's state key
/// ([`crate::state::Subkey`]).
pub struct AuditKeys {
    /// Signs checkpoints and retention records (stable per deployment, so that `audit verify
    /// --pubkey` has one key to check against).
    pub signing: SigningKey,
    /// Keys the `input_hmac` of Predict records.
    pub input_hmac: Zeroizing<[u8; 32]>,
    /// Encrypts event bodies (see [`seal`]).
    pub records: Zeroizing<[u8; 32]>,
}

impl AuditKeys {
    /// The audit keys of a deployment's state key.
    pub fn from_state(state: &crate::state::StateKey) -> Self {
        use crate::state::Subkey;
        Self {
            signing: state.checkpoint_key(),
            input_hmac: state.subkey(Subkey::AuditInputHmac),
            records: state.subkey(Subkey::AuditRecords),
        }
    }
}

struct State {
    dir: PathBuf,
    /// Encrypts each event body in the writer thread.
    sealer: seal::Sealer,
    /// Scratch space for one sealed event.
    sealed: Vec<u8>,
    /// Records after the last checkpoint when the log was opened (a crash's uncovered tail).
    uncovered_at_open: u64,
    file: File,
    segment: u64,
    seq: u64,
    head: String,
    /// `head`'s 32 bytes (a receipt states them).
    head_raw: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: std::time::Instant,
    in_segment: u64,
    segment_records: u64,
    /// Scratch space for the tail of one record's line (see [`write_record`]).
    tail: Vec<u8>,
    /// False from a failed write or fsync until a retry succeeds (shared with the log).
    writable: Arc<AtomicBool>,
    /// The segment file must be opened again before the next write (a failed write, or a
    /// segment that could not be opened).
    reopen: bool,
    /// The last checkpoint pushed and not yet on disk.
    unflushed_checkpoint: Option<Checkpointed>,
    /// How many bytes at the start of the writer's buffer are already written to the file
    /// (not yet fsync'd); the buffer holds everything since the last fsync, so that a failed
    /// fsync can cut the file back and write it all again.
    written: usize,
    /// The file's length at the last fsync.
    synced_len: u64,
    /// How many times the file was cut back to `synced_len` (a failed write or fsync): an
    /// fsync that began before a cut covers nothing.
    cuts: u64,
    /// When the last fsync was.
    last_sync: std::time::Instant,
    /// Told of each checkpoint once it is on disk.
    checkpointed: Arc<tokio::sync::watch::Sender<Option<Checkpointed>>>,
    /// The background check; retention deletes nothing until it has passed.
    integrity: tokio::sync::watch::Receiver<Integrity>,
    /// The queue number of the last event pushed, and where the journal's next entry starts
    /// after the last journaled event pushed.
    pushed_q: u64,
    journal_tail: usize,
    /// Set by each fsync: what the journal's header may now say (see [`journal::Mark`]).
    synced_mark: Option<journal::Mark>,
    /// The time written into the last record pushed (ms since the Unix epoch); at open, the
    /// current segment's last record's.
    last_ts_ms: u64,
    /// The current segment's length as this server knows it: found at open, then what it
    /// pushed into it (counted at the push, whatever the fsyncs in flight).
    segment_bytes: u64,
    /// The segments before the current one, as verified at open or as written when closed:
    /// what retention decides from (see [`apply_retention`]).
    closed: std::collections::BTreeMap<u64, verify::SegmentFacts>,
    /// What the background check verified, handed over when it passes.
    verified_earlier: Arc<Mutex<Vec<verify::SegmentFacts>>>,
}

/// The audit log writer. Appends are queued to one writer thread that writes in groups with
/// one fsync per group.
pub struct AuditLog {
    queue: Arc<Queue>,
    /// What the writer owns (see [`writer`]).
    writer: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// HMAC-SHA256 keyed with the audit key: the key schedule runs once, and each input
    /// clones the keyed state. The state is as secret as the key; it is zeroized on drop
    /// (the `zeroize` features of `hmac` and `sha2`), as each per-request copy is.
    input_mac: Hmac<Sha256>,
    public_key: String,
    /// The checkpoint key, also used to sign receipts (erasure) the server hands out.
    signing: SigningKey,
    /// Whether the last group reached disk (see [`AuditLog::is_writable`]).
    writable: Arc<AtomicBool>,
    /// The latest checkpoint on disk.
    checkpointed: Arc<tokio::sync::watch::Sender<Option<Checkpointed>>>,
    /// The last record when the log was opened: (sequence number, chain hash).
    opened_at: (u64, String),
    /// The log's directory.
    dir: PathBuf,
    /// The background check of the records before the tail.
    integrity: Arc<tokio::sync::watch::Sender<Integrity>>,
}

/// The state of the check of a log's records before its tail (see [`AuditLog::integrity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// The background check runs.
    Verifying,
    /// Every record verified.
    Verified,
    /// The chain or a signature is broken (what and where).
    Damaged(String),
}

/// The canonical JSON object of an event: Predict events by [`write_predict_event`], others
/// through [`crate::canonical`]. Events other than the server's Predicts (which go through
/// [`AuditLog::append_predict`]) are encoded with this before they reach the queue, so that
/// the queue's lock is never held over a `serde_json::Value` tree, and an event that fails
/// to serialize never reaches it.
/// The 32 bytes of the chain hash a log was opened at (recovery checked the chain, so this
/// refuses only a head that no verified log has).
fn head_bytes(head: &str, path: &Path, line: u64) -> Result<[u8; 32], AuditError> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(head, &mut raw).map_err(|e| AuditError::Damaged {
        path: path.display().to_string(),
        line,
        problem: format!("its last hash is not a SHA-256 in hex: {e}"),
    })?;
    Ok(raw)
}

fn event_json(event: &Event) -> Result<Vec<u8>, AuditError> {
    match PredictEvent::of(event) {
        Some(e) => {
            let mut out = Vec::with_capacity(448);
            write_predict_event(&mut out, &e);
            Ok(out)
        }
        None => {
            crate::canonical::to_vec(event).map_err(|e| AuditError::Unserializable(e.to_string()))
        }
    }
}

impl AuditLog {
    /// Opens `<dir>` (creating it, 0700), checks that the existing chain verifies under
    /// `keys.signing`, cuts a torn final line, and starts the writer. `keys.signing` signs
    /// checkpoints, `keys.input_hmac` keys input digests, `keys.records` encrypts events.
    pub fn open(dir: &Path, keys: AuditKeys, config: AuditConfig) -> Result<Self, AuditError> {
        let AuditKeys {
            signing,
            input_hmac,
            records,
        } = keys;
        create_private_dir(dir)?;
        let public = *signing.verifying_key().as_bytes();
        let Recovered {
            segment,
            seq,
            head,
            in_segment,
            uncovered,
            verify_until,
            facts,
        } = recover(dir, &public)?;
        let last_ts_ms = facts
            .iter()
            .find(|f| f.segment == segment)
            .map_or(0, |f| f.last_ts_ms);
        let closed = facts
            .into_iter()
            .filter(|f| f.segment < segment)
            .map(|f| (f.segment, f))
            .collect();
        let verified_earlier = Arc::new(Mutex::new(Vec::new()));
        let path = segment_path(dir, segment);
        let file = open_segment(&path)?;
        let synced_len = file.metadata().map_err(io_err(&path))?.len();
        let head_raw = head_bytes(&head, &path, in_segment)?;
        let public_key = hex::encode(public);
        let writable = Arc::new(AtomicBool::new(true));
        // A log that ends with a checkpoint (or is empty) is covered as found; otherwise the
        // writer checkpoints the uncovered tail first thing.
        let (checkpointed, _) =
            tokio::sync::watch::channel((uncovered == 0).then(|| Checkpointed {
                seq,
                head: head.clone(),
            }));
        let checkpointed = Arc::new(checkpointed);
        let opened_at = (seq, head.clone());
        let (integrity, _) = tokio::sync::watch::channel(if verify_until.is_some() {
            Integrity::Verifying
        } else {
            Integrity::Verified
        });
        let integrity = Arc::new(integrity);
        let state = State {
            integrity: integrity.subscribe(),
            unflushed_checkpoint: None,
            written: 0,
            synced_len,
            cuts: 0,
            last_sync: std::time::Instant::now(),
            checkpointed: Arc::clone(&checkpointed),
            sealer: seal::Sealer::new(&records)?,
            sealed: Vec::with_capacity(1024),
            uncovered_at_open: uncovered,
            dir: dir.to_path_buf(),
            file,
            segment,
            seq,
            head_raw,
            head,
            since_checkpoint: 0,
            last_checkpoint: std::time::Instant::now(),
            in_segment,
            segment_records: config.segment_records.max(1),
            tail: Vec::with_capacity(256),
            writable: Arc::clone(&writable),
            reopen: false,
            pushed_q: 0,
            journal_tail: 0,
            synced_mark: None,
            last_ts_ms,
            segment_bytes: synced_len,
            closed,
            verified_earlier: Arc::clone(&verified_earlier),
        };
        let mut state = state;
        // What a crash left only in the journal goes into the log first, on disk before the
        // journal starts afresh (a crash here replays it again: the counts skip what the log
        // already holds).
        let replay = journal::replay(dir, &records, |seq| sealed_after(dir, seq))?;
        if let Some(problem) = &replay.problem {
            tracing::error!(problem = %problem, "audit journal: events may be lost");
        }
        if !replay.events.is_empty() {
            let mut buf = Vec::new();
            for event in &replay.events {
                push(&mut state, &mut buf, event, Kind::Sealed);
            }
            if !flush(&mut state, &mut buf) {
                return Err(AuditError::Unwritable);
            }
            state.synced_mark = None;
            state.uncovered_at_open += replay.events.len() as u64;
            tracing::warn!(
                events = replay.events.len(),
                "audit log: events a crash left only in the journal were written to the log"
            );
        }
        let journal = if config.journal_bytes > 0 {
            Some(journal::Journal::create(
                dir,
                &records,
                config.journal_bytes,
                state.seq,
            )?)
        } else {
            let path = dir.join(JOURNAL_FILE);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path)(e));
                }
                _ => None,
            }
        };
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending {
                journal,
                ..Pending::default()
            }),
            ready: std::sync::Condvar::new(),
            expected_receipts: std::sync::atomic::AtomicUsize::new(0),
            receipt_task: std::sync::OnceLock::new(),
            load: std::sync::OnceLock::new(),
        });
        let shared = Arc::new(Mutex::new(Writer::new(state, signing.clone(), config)));
        let worker = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                let queue = Arc::clone(&queue);
                move || {
                    // However the writer ends, appends stop being accepted (and are
                    // reported lost) rather than piling up unseen.
                    struct CloseOnExit<'a>(&'a Queue);
                    impl Drop for CloseOnExit<'_> {
                        fn drop(&mut self) {
                            self.0.close();
                        }
                    }
                    let _close = CloseOnExit(&queue);
                    writer(&shared, &queue);
                }
            })
            .map_err(io_err(dir))?;
        Ok(Self {
            queue,
            writer: shared,
            worker: Mutex::new(Some(worker)),
            input_mac: <Hmac<Sha256> as KeyInit>::new_from_slice(input_hmac.as_ref())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
            public_key,
            signing,
            writable,
            checkpointed,
            opened_at,
            dir: dir.to_path_buf(),
            integrity,
        })
        .inspect(|log| {
            if let Some(until) = verify_until {
                log.verify_in_background(public, until, verified_earlier);
            }
        })
    }

    /// Verifies the segments up to `until` in a thread, and leaves what it verified of each
    /// in `verified_earlier` (the writer's, for retention) before it says the log verified.
    fn verify_in_background(
        &self,
        key: [u8; 32],
        until: u64,
        verified_earlier: Arc<Mutex<Vec<verify::SegmentFacts>>>,
    ) {
        let (dir, integrity) = (self.dir.clone(), Arc::clone(&self.integrity));
        let spawned = std::thread::Builder::new()
            .name("audit-verify".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match verify_before_tail(&dir, &key, until) {
                    Ok(facts) => {
                        // Handed over before retention may run.
                        *verified_earlier.lock().unwrap_or_else(|p| p.into_inner()) = facts;
                        tracing::info!(
                            through_segment = until,
                            ms = started.elapsed().as_millis() as u64,
                            "audit log: the records before the tail verified in the background"
                        );
                        integrity.send_replace(Integrity::Verified);
                    }
                    Err(problem) => {
                        tracing::error!(problem, "audit log: the background check failed");
                        integrity.send_replace(Integrity::Damaged(problem));
                    }
                }
            });
        if let Err(e) = spawned {
            self.integrity
                .send_replace(Integrity::Damaged(format!("cannot start the check: {e}")));
        }
    }

    /// The state of the whole log's check: a start verifies the tail only and the rest in
    /// the background (retention waits for it).
    pub fn integrity(&self) -> tokio::sync::watch::Receiver<Integrity> {
        self.integrity.subscribe()
    }

    /// The latest checkpoint on disk, and every later one as it reaches disk.
    pub fn checkpoints(&self) -> tokio::sync::watch::Receiver<Option<Checkpointed>> {
        self.checkpointed.subscribe()
    }

    /// The last record when the log was opened: (sequence number, chain hash; zeros for an
    /// empty log).
    pub fn opened_at(&self) -> (u64, &str) {
        (self.opened_at.0, &self.opened_at.1)
    }

    /// The chain hash of record `seq`, read from the segments (`None`: no such record, or it
    /// was removed by retention).
    pub fn hash_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        record_at(&self.dir, seq).map(|r| r.map(|r| r.hash))
    }

    /// Whether records reach disk: false from a failed write or fsync until the writer's
    /// retry succeeds. The pipeline refuses requests (UNAVAILABLE) while it is false.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Signs `message` under a domain tag with the server's checkpoint key (whose public key
    /// is in the log and, once attestation binds it, in the evidence). Returns hex.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> String {
        let mut m = domain.to_vec();
        m.extend_from_slice(message);
        hex::encode(self.signing.sign(&m).to_bytes())
    }

    /// Hex of the checkpoint signing key.
    pub fn public_key_hex(&self) -> &str {
        &self.public_key
    }

    /// HMAC-SHA256 of `values` (little-endian f32) under the audit key, in hex.
    pub fn input_hmac(&self, values: &[f32]) -> String {
        let hex = self.input_hmac_hex(values);
        String::from_utf8_lossy(&hex).into_owned()
    }

    /// [`input_hmac`](Self::input_hmac) as 64 lower-case hex bytes, with no allocation.
    pub fn input_hmac_hex(&self, values: &[f32]) -> [u8; 64] {
        let mut mac = self.input_mac.clone();
        // In blocks of 64 values, so that the MAC sees few, large updates.
        let mut block = [0u8; 256];
        for chunk in values.chunks(64) {
            for (out, v) in block.chunks_exact_mut(4).zip(chunk) {
                out.copy_from_slice(&v.to_le_bytes());
            }
            mac.update(&block[..chunk.len() * 4]);
        }
        hex32(&mac.finalize().into_bytes().into())
    }

    /// The keyed digest of a text model's input, as 64 lower-case hex bytes: HMAC-SHA256
    /// under the same key as [`input_hmac`](Self::input_hmac), over a domain tag and then
    /// each text as its length (u64, little-endian) and its bytes, so that two different
    /// lists of texts never give the same message. The record holds this, never the text.
    pub fn input_hmac_hex_texts(&self, texts: &[Vec<u8>]) -> [u8; 64] {
        let mut mac = self.input_mac.clone();
        mac.update(b"confidant/audit/input-texts/v1\0");
        for t in texts {
            mac.update(&(t.len() as u64).to_le_bytes());
            mac.update(t);
        }
        hex32(&mac.finalize().into_bytes().into())
    }

    /// Flushes, writes a final checkpoint and stops the writer.
    pub fn close(&self) {
        self.queue.close();
        if let Some(w) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod gathering_tests;
#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod tests;
