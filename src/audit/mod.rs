//! The tamper-evident audit log: append-only JSON-lines segments with a SHA-256 hash chain
//! and periodic checkpoints signed by the server's Ed25519 key.
//!
//! Every line is one [`Record`]. Its `hash` is SHA-256 over `"confidant.audit.v1\0"`, the
//! previous record's hash and the record's canonical JSON without the `hash` field, so editing,
//! deleting, inserting or reordering any line breaks the chain at that line. Every
//! `checkpoint_every` records (and at shutdown) a `checkpoint` record signs the chain head.
//!
//! Records hold ids, digests and decisions, never inputs or outputs: the input appears only as
//! an HMAC-SHA256 under the server's audit key, and the output only as its argmax class.
//!
//! Writes go through one writer thread that appends in groups and fsyncs once per group, so a
//! burst of requests costs one fsync. On start, a torn final line (a crash mid-write) is cut
//! with a warning; every line that was fsync'd survives.

pub mod outbox;
pub mod verify;

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use verify::{VerifyReport, verify_dir};

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
    /// The event has no JSON form (not reached: every event serializes). It is refused
    /// rather than written as a line that would break the chain.
    #[error("audit event could not be serialized: {0}")]
    Unserializable(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    /// What happened.
    pub event: Event,
    /// Hex SHA-256 of the previous record (64 zeros for the first).
    pub prev: String,
    /// Hex SHA-256 of this record (see the module docs).
    #[serde(default)]
    pub hash: String,
}

/// The events the log records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
// Predict dominates the traffic: boxing it would add an allocation per request for an event
// that is only serialized (onto the writer's queue) and dropped.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A Predict call, allowed or refused.
    Predict {
        /// The request id returned to the caller ("" when refused before one was made).
        request_id: String,
        /// The authenticated principal ("" when authentication failed).
        principal: String,
        /// `model@version`.
        model: String,
        /// The declared purpose.
        purpose: Option<String>,
        /// The data subject's pseudonym, if the request named one.
        subject: Option<String>,
        /// Hex HMAC-SHA256 of the input under the audit key.
        input_hmac: Option<String>,
        /// The argmax class per row (no scores).
        output_argmax: Vec<u32>,
        /// Rows flagged by adversarial-sensitivity screening.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flagged_rows: Vec<u32>,
        /// Rows in the request.
        rows: u64,
        /// Server-side latency in microseconds.
        latency_us: u64,
        /// `allow` or `refuse`.
        decision: Cow<'static, str>,
        /// Why (the gRPC status name for refusals).
        reason: Cow<'static, str>,
        /// Privacy budget spent.
        epsilon: f64,
        /// The RPC, when not Predict (`explain`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rpc: Option<Cow<'static, str>>,
    },
    /// An administrative or data-access event (key creation, consent, erasure, start).
    Admin {
        /// Who acted.
        actor: String,
        /// What was done.
        action: String,
        /// Details (ids, never secrets).
        detail: String,
    },
    /// A signed statement that the segments up to `removed_through_segment` were deleted
    /// under the retention policy, and that the chain now legitimately starts at the record
    /// `first_kept_seq`, whose `prev` is `first_kept_prev`.
    Retention {
        /// The last deleted segment.
        removed_through_segment: u64,
        /// The sequence number of the first record kept.
        first_kept_seq: u64,
        /// That record's `prev` (the hash of the last deleted record).
        first_kept_prev: String,
        /// Hex of the signer's raw Ed25519 public key.
        public_key: String,
        /// Hex Ed25519 signature over [`retention_message`].
        signature: String,
    },
    /// A signed statement of the chain head.
    Checkpoint {
        /// The hash of the record just before this checkpoint.
        head: String,
        /// Hex of the signer's raw Ed25519 public key.
        public_key: String,
        /// Hex Ed25519 signature over `"confidant.audit.checkpoint.v1\0" ‖ seq ‖ head`.
        signature: String,
    },
}

/// A Predict event by reference, for [`AuditLog::append_predict`]: the request path writes
/// its canonical JSON itself, so the record crosses to the writer thread as one buffer
/// rather than as a dozen strings allocated on one thread and freed on another.
#[derive(Debug, Clone, Copy)]
pub struct PredictEvent<'a> {
    /// As in [`Event::Predict`].
    pub request_id: &'a str,
    /// As in [`Event::Predict`].
    pub principal: &'a str,
    /// As in [`Event::Predict`].
    pub model: &'a str,
    /// As in [`Event::Predict`].
    pub purpose: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub subject: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub input_hmac: Option<&'a str>,
    /// As in [`Event::Predict`].
    pub output_argmax: &'a [u32],
    /// As in [`Event::Predict`].
    pub flagged_rows: &'a [u32],
    /// As in [`Event::Predict`].
    pub rows: u64,
    /// As in [`Event::Predict`].
    pub latency_us: u64,
    /// As in [`Event::Predict`].
    pub decision: &'a str,
    /// As in [`Event::Predict`].
    pub reason: &'a str,
    /// As in [`Event::Predict`].
    pub epsilon: f64,
    /// As in [`Event::Predict`].
    pub rpc: Option<&'a str>,
}

impl<'a> PredictEvent<'a> {
    /// The borrowed view of an owned Predict event (`None` for any other event).
    pub fn of(event: &'a Event) -> Option<Self> {
        let Event::Predict {
            request_id,
            principal,
            model,
            purpose,
            subject,
            input_hmac,
            output_argmax,
            flagged_rows,
            rows,
            latency_us,
            decision,
            reason,
            epsilon,
            rpc,
        } = event
        else {
            return None;
        };
        Some(Self {
            request_id,
            principal,
            model,
            purpose: purpose.as_deref(),
            subject: subject.as_deref(),
            input_hmac: input_hmac.as_deref(),
            output_argmax,
            flagged_rows,
            rows: *rows,
            latency_us: *latency_us,
            decision,
            reason,
            epsilon: *epsilon,
            rpc: rpc.as_deref(),
        })
    }

    /// The owned event (tests, and callers that want one).
    pub fn to_event(&self) -> Event {
        Event::Predict {
            request_id: self.request_id.to_string(),
            principal: self.principal.to_string(),
            model: self.model.to_string(),
            purpose: self.purpose.map(str::to_string),
            subject: self.subject.map(str::to_string),
            input_hmac: self.input_hmac.map(str::to_string),
            output_argmax: self.output_argmax.to_vec(),
            flagged_rows: self.flagged_rows.to_vec(),
            rows: self.rows,
            latency_us: self.latency_us,
            decision: Cow::Owned(self.decision.to_string()),
            reason: Cow::Owned(self.reason.to_string()),
            epsilon: self.epsilon,
            rpc: self.rpc.map(|r| Cow::Owned(r.to_string())),
        }
    }
}

impl Record {
    /// The chain hash of this record given its `prev`.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let body = crate::canonical::to_vec(&unhashed).unwrap_or_default();
        String::from_utf8_lossy(&hash_body(&self.prev, &body)).into_owned()
    }
}

/// The chain hash over a record's canonical body (with an empty `hash`), as lower-case hex.
fn hash_body(prev: &str, body: &[u8]) -> [u8; 64] {
    let mut h = chain_hasher(prev);
    h.update(body);
    hex32(&h.finalize().into())
}

/// A record's chain hash, before its canonical body: the domain, then the previous hash.
fn chain_hasher(prev: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev.as_bytes());
    h
}

/// Lower-case hex of a 32-byte digest as 64 ASCII bytes, with no allocation.
fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [b'0'; 64];
    // 64 is exactly twice 32, the only length `encode_to_slice` checks.
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

/// The message a checkpoint signs.
pub fn checkpoint_message(seq: u64, head: &str) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head.as_bytes());
    m
}

/// The message a retention checkpoint signs.
pub fn retention_message(
    first_kept_seq: u64,
    first_kept_prev: &str,
    removed_through: u64,
) -> Vec<u8> {
    let mut m = RETENTION_DOMAIN.to_vec();
    m.extend_from_slice(&first_kept_seq.to_be_bytes());
    m.extend_from_slice(first_kept_prev.as_bytes());
    m.extend_from_slice(&removed_through.to_be_bytes());
    m
}

/// How long the writer gathers a group of records before one write and one fsync, by
/// default (`[audit] group_commit_ms`).
pub const DEFAULT_GROUP_COMMIT_MS: u64 = 10;

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
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            group_linger: Duration::from_millis(DEFAULT_GROUP_COMMIT_MS),
            segment_records: SEGMENT_RECORDS,
            retention: None,
        }
    }
}

struct State {
    dir: PathBuf,
    file: File,
    segment: u64,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    last_checkpoint: std::time::Instant,
    in_segment: u64,
    segment_records: u64,
    /// Scratch space for the tail of one record's line (see [`write_record`]).
    tail: Vec<u8>,
}

/// The audit log writer. Appends are queued to one writer thread that writes in groups with
/// one fsync per group.
pub struct AuditLog {
    queue: Arc<Queue>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// HMAC-SHA256 keyed with the audit key: the key schedule runs once, and each input
    /// clones the keyed state. The state is as secret as the key; it is zeroized on drop
    /// (the `zeroize` features of `hmac` and `sha2`), as each per-request copy is.
    input_mac: Hmac<Sha256>,
    public_key: String,
    /// The checkpoint key, also used to sign receipts (erasure) the server hands out.
    signing: SigningKey,
}

/// The events on their way to the writer, in the order they were appended: each event's
/// canonical JSON object, back to back in one buffer. Appending is a copy under a lock: no
/// allocation per event, and nothing allocated on one thread is freed on another. The writer
/// swaps the whole buffer out once per group, so both buffers keep their capacity.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`, and whom to tell once it is on disk.
    events: Vec<(usize, Option<std::sync::mpsc::Sender<()>>)>,
    /// No more events: the log is closing, or the writer is gone.
    closed: bool,
}

struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when an event lands in an empty queue, and on close.
    ready: std::sync::Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// The canonical JSON object of an event: Predict events by [`write_predict_event`], others
/// through [`crate::canonical`]. Events other than the server's Predicts (which go through
/// [`AuditLog::append_predict`]) are encoded with this before they reach the queue, so that
/// the queue's lock is never held over a `serde_json::Value` tree, and an event that fails
/// to serialize never reaches it.
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
    /// Opens `<dir>` (creating it), checks the existing chain, cuts a torn final line, and
    /// starts the writer. `signing` signs checkpoints; `hmac_key` keys input digests.
    pub fn open(
        dir: &Path,
        signing: SigningKey,
        hmac_key: [u8; 32],
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (segment, seq, head, in_segment) = recover(dir)?;
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let public_key = hex::encode(signing.verifying_key().as_bytes());
        let state = State {
            dir: dir.to_path_buf(),
            file,
            segment,
            seq,
            head,
            since_checkpoint: 0,
            last_checkpoint: std::time::Instant::now(),
            in_segment,
            segment_records: config.segment_records.max(1),
            tail: Vec::with_capacity(256),
        };
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending::default()),
            ready: std::sync::Condvar::new(),
        });
        let worker = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn({
                let signing = signing.clone();
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
                    writer(state, signing, config, &queue);
                }
            })
            .map_err(io_err(dir))?;
        Ok(Self {
            queue,
            worker: Mutex::new(Some(worker)),
            input_mac: <Hmac<Sha256> as KeyInit>::new_from_slice(Zeroizing::new(hmac_key).as_ref())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
            public_key,
            signing,
        })
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

    /// Queues a Predict event, serialized here (see [`PredictEvent`]); it reaches disk with
    /// the next group fsync.
    pub fn append_predict(&self, event: &PredictEvent<'_>) {
        self.queue(|out| write_predict_event(out, event));
    }

    /// Queues an event; it reaches disk with the next group fsync.
    pub fn append(&self, event: Event) {
        match event_json(&event) {
            Ok(json) => self.queue(|out| out.extend_from_slice(&json)),
            Err(e) => tracing::error!(error = %e, "an audit event was lost"),
        }
    }

    fn queue(&self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.enqueue(write, None).is_err() {
            tracing::error!("audit writer stopped; an audit event was lost");
        }
    }

    /// Appends an event and waits until it is on disk.
    pub fn append_durable(&self, event: Event) -> Result<(), AuditError> {
        let json = event_json(&event)?;
        let (done, wait) = std::sync::mpsc::channel();
        self.enqueue(|out| out.extend_from_slice(&json), Some(done))?;
        wait.recv().map_err(|_| AuditError::Stopped)
    }

    /// Writes one event's JSON onto the queue (under its lock, so that the queue's order is
    /// the order of the appends), and wakes the writer if the queue was empty. `write` only
    /// appends bytes already known to be a whole event: it cannot fail half-way.
    fn enqueue(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        done: Option<std::sync::mpsc::Sender<()>>,
    ) -> Result<(), AuditError> {
        let mut pending = self.queue.lock();
        if pending.closed {
            return Err(AuditError::Stopped);
        }
        write(&mut pending.bytes);
        let end = pending.bytes.len();
        pending.events.push((end, done));
        let first = pending.events.len() == 1;
        drop(pending);
        if first {
            self.queue.ready.notify_one();
        }
        Ok(())
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

/// Reads a 32-byte key file, or creates one (0600) from the OS CSPRNG.
pub fn load_or_create_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, AuditError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Ok(bytes) => Err(AuditError::Damaged {
            path: path.display().to_string(),
            line: 0,
            problem: format!("key file holds {} bytes, expected 32", bytes.len()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(key.as_mut()).map_err(|e| AuditError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err(path))?;
            f.write_all(key.as_ref()).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
            Ok(key)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The path of segment `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:06}.jsonl"))
}

/// The segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, AuditError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Verifies the existing chain, cuts a torn last line, and returns
/// (segment, last seq, head hash, records in that segment).
fn recover(dir: &Path) -> Result<(u64, u64, String, u64), AuditError> {
    let zero = "0".repeat(64);
    let segs = segments(dir)?;
    let Some(&last) = segs.last() else {
        return Ok((1, 0, zero, 0));
    };
    // Cut a torn final line: anything after the last newline of the last segment.
    let path = segment_path(dir, last);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        tracing::warn!(
            segment = %path.display(),
            bytes = bytes.len() - keep,
            "audit log: cutting a torn final line left by a crash"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.set_len(keep as u64).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    let report = verify_dir(dir, &[]);
    if let Some(fail) = report.first_failure {
        return Err(AuditError::Damaged {
            path: fail.segment,
            line: fail.line,
            problem: fail.problem,
        });
    }
    let f = File::open(&path).map_err(io_err(&path))?;
    let in_segment = BufReader::new(f).lines().count() as u64;
    Ok((
        last,
        report.last_seq,
        report.head.unwrap_or(zero),
        in_segment,
    ))
}

fn writer(mut st: State, signing: SigningKey, config: AuditConfig, queue: &Queue) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    let mut taken = Pending::default();
    let retention_every = config
        .retention
        .map(|r| (r / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    let mut last_retention: Option<std::time::Instant> = None;
    loop {
        let wait = retention_every.map_or(config.checkpoint_interval, |r| {
            r.min(config.checkpoint_interval)
        });
        let closed = {
            let mut pending = queue.lock();
            if pending.events.is_empty() && !pending.closed {
                pending = queue
                    .ready
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if !pending.events.is_empty()
                && !pending.closed
                && !config.group_linger.is_zero()
                && pending.events.len() < 4096
            {
                // Gather the group: appends to a non-empty queue wake nobody.
                drop(pending);
                std::thread::sleep(config.group_linger);
                pending = queue.lock();
            }
            std::mem::swap(&mut pending.bytes, &mut taken.bytes);
            std::mem::swap(&mut pending.events, &mut taken.events);
            pending.closed
        };
        let mut start = 0;
        for (end, done) in taken.events.drain(..) {
            push(&mut st, &mut buf, &taken.bytes[start..end], false);
            start = end;
            if let Some(d) = done {
                waiters.push(d);
            }
            if st.since_checkpoint >= config.checkpoint_every {
                push_checkpoint(&mut st, &mut buf, &signing);
            }
        }
        taken.bytes.clear();
        if st.since_checkpoint > 0 && st.last_checkpoint.elapsed() >= config.checkpoint_interval {
            push_checkpoint(&mut st, &mut buf, &signing);
        }
        flush(&mut st, &mut buf);
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        if closed {
            // Appends stopped with the flag: nothing can arrive after this group.
            break;
        }
        if let (Some(retention), Some(every)) = (config.retention, retention_every)
            && last_retention.is_none_or(|t| t.elapsed() >= every)
        {
            last_retention = Some(std::time::Instant::now());
            if let Err(e) = apply_retention(&mut st, &mut buf, &signing, retention) {
                tracing::error!(error = %e, "audit retention failed; nothing was deleted");
            }
        }
    }
    if st.since_checkpoint > 0 {
        push_checkpoint(&mut st, &mut buf, &signing);
    }
    flush(&mut st, &mut buf);
}

/// Appends the line of a record (its canonical JSON, see [`crate::canonical`], without the
/// newline) around an event object already in canonical form, and returns its chain hash.
/// `tail` is scratch space. No `serde_json::Value` tree, no key sort, and the event is not
/// copied to be hashed: the hash runs over the pieces of the body (the record with an empty
/// `hash`, which sorts right after `event`), and the line is the same pieces with the hash
/// in place. A test checks the line against `canonical::to_vec` for every kind of event.
fn write_record(
    buf: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    seq: u64,
    ts_ms: u64,
    prev: &str,
    event_json: &[u8],
) -> [u8; 64] {
    const OPEN: &[u8] = b"{\"event\":";
    tail.clear();
    let at = write_body_tail(tail, seq, ts_ms, prev);
    let mut h = chain_hasher(prev);
    h.update(OPEN);
    h.update(event_json);
    h.update(&tail[..]);
    let hash = hex32(&h.finalize().into());
    buf.reserve(OPEN.len() + event_json.len() + tail.len() + hash.len());
    buf.extend_from_slice(OPEN);
    buf.extend_from_slice(event_json);
    buf.extend_from_slice(&tail[..at]);
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(&tail[at..]);
    hash
}

/// The canonical JSON object of a Predict event: keys in byte order, as
/// `canonical::to_vec` sorts them.
fn write_predict_event(out: &mut Vec<u8>, e: &PredictEvent<'_>) {
    out.extend_from_slice(b"{\"decision\":");
    json_str(out, e.decision);
    out.extend_from_slice(b",\"epsilon\":");
    json_f64(out, e.epsilon);
    if !e.flagged_rows.is_empty() {
        out.extend_from_slice(b",\"flagged_rows\":");
        json_u32s(out, e.flagged_rows);
    }
    out.extend_from_slice(b",\"input_hmac\":");
    json_opt_str(out, e.input_hmac);
    out.extend_from_slice(b",\"kind\":\"predict\",\"latency_us\":");
    json_u64(out, e.latency_us);
    out.extend_from_slice(b",\"model\":");
    json_str(out, e.model);
    out.extend_from_slice(b",\"output_argmax\":");
    json_u32s(out, e.output_argmax);
    out.extend_from_slice(b",\"principal\":");
    json_str(out, e.principal);
    out.extend_from_slice(b",\"purpose\":");
    json_opt_str(out, e.purpose);
    out.extend_from_slice(b",\"reason\":");
    json_str(out, e.reason);
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, e.request_id);
    out.extend_from_slice(b",\"rows\":");
    json_u64(out, e.rows);
    if let Some(rpc) = e.rpc {
        out.extend_from_slice(b",\"rpc\":");
        json_str(out, rpc);
    }
    out.extend_from_slice(b",\"subject\":");
    json_opt_str(out, e.subject);
    out.push(b'}');
}

/// The rest of a canonical record body after its event object (`"hash"` empty); returns
/// where the hash belongs (between the quotes of `"hash":""`).
fn write_body_tail(out: &mut Vec<u8>, seq: u64, ts_ms: u64, prev: &str) -> usize {
    out.extend_from_slice(b",\"hash\":\"");
    let at = out.len();
    out.extend_from_slice(b"\",\"prev\":");
    json_str(out, prev);
    out.extend_from_slice(b",\"seq\":");
    json_u64(out, seq);
    out.extend_from_slice(b",\"ts_ms\":");
    json_u64(out, ts_ms);
    out.push(b'}');
    at
}

// The scalars are written by serde_json itself, so escaping and number formatting are the
// ones `canonical::to_vec` uses. Writing to a `Vec` cannot fail.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most fields (ids, hex digests, names) need no escape: copy them between quotes, which
    // is byte for byte what serde_json writes for them. Anything else goes through serde_json.
    // A fold with no early exit, so that the scan compiles to vector compares.
    let plain = !s.bytes().fold(false, |special, b| {
        special | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

fn json_f64(out: &mut Vec<u8>, x: f64) {
    // As `serde_json::Value` does: a non-finite number becomes null.
    let _ = serde_json::to_writer(&mut *out, &x);
}

fn json_u32s(out: &mut Vec<u8>, items: &[u32]) {
    out.push(b'[');
    for (i, n) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_u64(out, u64::from(*n));
    }
    out.push(b']');
}

/// Appends the record of one event (its canonical JSON object) to `buf`, chained to the head.
fn push(st: &mut State, buf: &mut Vec<u8>, event_json: &[u8], is_checkpoint: bool) {
    if st.in_segment >= st.segment_records {
        flush(st, buf);
        st.segment += 1;
        st.in_segment = 0;
        let path = segment_path(&st.dir, st.segment);
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => st.file = f,
            Err(e) => tracing::error!(error = %e, "audit log: cannot open a new segment"),
        }
    }
    st.seq += 1;
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let hash = write_record(buf, &mut st.tail, st.seq, ts_ms, &st.head, event_json);
    // The hex digits are ASCII; the head keeps its allocation from record to record.
    st.head.clear();
    st.head.extend(hash.iter().map(|&b| char::from(b)));
    buf.push(b'\n');
    st.in_segment += 1;
    if is_checkpoint {
        st.since_checkpoint = 0;
        st.last_checkpoint = std::time::Instant::now();
    } else {
        st.since_checkpoint += 1;
    }
}

/// [`push`] for an event the writer makes itself (checkpoints, retention records).
fn push_event(st: &mut State, buf: &mut Vec<u8>, event: &Event) {
    match event_json(event) {
        Ok(json) => push(st, buf, &json, matches!(event, Event::Checkpoint { .. })),
        Err(e) => tracing::error!(error = %e, "an audit event was lost"),
    }
}

/// Deletes the oldest segments whose newest record is older than `retention`, after a
/// durable, signed retention record vouches for where the chain now starts.
fn apply_retention(
    st: &mut State,
    buf: &mut Vec<u8>,
    signing: &SigningKey,
    retention: Duration,
) -> Result<(), AuditError> {
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(retention.as_millis() as u64);
    let segs = segments(&st.dir)?;
    let mut removable = Vec::new();
    for &n in segs.iter().filter(|&&n| n < st.segment) {
        let last = last_record(&segment_path(&st.dir, n))?;
        if last.is_some_and(|r| r.ts_ms < cutoff) {
            removable.push(n);
        } else {
            break;
        }
    }
    let Some(&through) = removable.last() else {
        return Ok(());
    };
    let next = segment_path(&st.dir, through + 1);
    let Some(first) = first_record(&next)? else {
        return Ok(());
    };
    let signature = hex::encode(
        signing
            .sign(&retention_message(first.seq, &first.prev, through))
            .to_bytes(),
    );
    push_event(
        st,
        buf,
        &Event::Retention {
            removed_through_segment: through,
            first_kept_seq: first.seq,
            first_kept_prev: first.prev,
            public_key: hex::encode(signing.verifying_key().as_bytes()),
            signature,
        },
    );
    flush(st, buf);
    for n in removable {
        let path = segment_path(&st.dir, n);
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    tracing::info!(
        through_segment = through,
        "audit retention: expired segments deleted"
    );
    Ok(())
}

fn first_record(path: &Path) -> Result<Option<Record>, AuditError> {
    let f = File::open(path).map_err(io_err(path))?;
    let line = BufReader::new(f)
        .lines()
        .next()
        .transpose()
        .map_err(io_err(path))?;
    Ok(line.and_then(|l| serde_json::from_str(&l).ok()))
}

fn last_record(path: &Path) -> Result<Option<Record>, AuditError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut last = None;
    for line in BufReader::new(f).lines() {
        last = Some(line.map_err(io_err(path))?);
    }
    Ok(last.and_then(|l| serde_json::from_str(&l).ok()))
}

fn push_checkpoint(st: &mut State, buf: &mut Vec<u8>, signing: &SigningKey) {
    // The checkpoint signs the head as of the record before it, at its own seq.
    let seq = st.seq + 1;
    let head = st.head.clone();
    let signature = hex::encode(signing.sign(&checkpoint_message(seq, &head)).to_bytes());
    let event = Event::Checkpoint {
        head,
        public_key: hex::encode(signing.verifying_key().as_bytes()),
        signature,
    };
    push_event(st, buf, &event);
}

fn flush(st: &mut State, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let r = st
        .file
        .write_all(buf)
        .and_then(|()| st.file.sync_data())
        .and_then(|()| st.file.seek(SeekFrom::End(0)).map(|_| ()));
    if let Err(e) = r {
        tracing::error!(error = %e, "audit log write failed");
    }
    buf.clear();
}

#[cfg(test)]
mod tests;
