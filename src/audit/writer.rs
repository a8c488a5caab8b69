//! The writer: gathers queued events into groups, chains and writes them, fsyncs, rotates
//! segments, and signs checkpoints.
//!
//! An answer waits until its record is written to the file (in the kernel's page cache: a
//! crash of the process, kill -9 included, cannot lose it), not for the fsync: fsyncs are
//! batched every `group_linger` (and at once for admin events, checkpoints and rotation), so
//! their rate does not grow with the request rate. The freshness anchor only ever covers
//! fsync'd checkpoints.
//!
//! What the writer owns ([`Writer`]) is behind a lock, and two take turns with it:
//! - **the writer thread** does everything: it gathers, writes, fsyncs (without the lock:
//!   see [`sync_unlocked`]), rotates segments, applies retention;
//! - **the receipts' task** ([`AuditLog::write_receipts_on_runtime`]), on the server's tokio
//!   runtime, writes the records that answers with receipts wait for, and signs their
//!   receipts where it runs. A receipt's record then costs no thread switch: on a busy
//!   machine, waking the writer thread for each group (and the signing task after it) was
//!   the largest part of what receipts cost. The task never fsyncs, rotates or blocks on
//!   the lock: what needs the thread, it hands to the thread.

use std::io::{Seek, SeekFrom, Write};
use std::sync::MutexGuard;

use ed25519_dalek::{Signer, SigningKey};

use super::*;
use std::sync::atomic::Ordering;

/// What the writer owns: the chain's state, the bytes written since the last fsync, and who
/// waits for them (see the module's documentation for who holds it when).
pub(super) struct Writer {
    pub(super) st: State,
    /// Everything since the last fsync (see [`State::written`]).
    pub(super) buf: Vec<u8>,
    /// Waiters whose records are written, waiting for an fsync (or for a retry).
    waiters: Vec<Waiter>,
    receipts: Receipts,
    /// The group being written (swapped with the queue's, so that both keep their capacity).
    taken: Pending,
    signing: SigningKey,
    pub(super) config: AuditConfig,
}

/// The lock around the [`Writer`].
pub(super) type Shared = Mutex<Writer>;

pub(super) fn lock_writer(shared: &Shared) -> MutexGuard<'_, Writer> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Writer {
    pub(super) fn new(st: State, signing: SigningKey, config: AuditConfig) -> Self {
        Self {
            st,
            buf: Vec::with_capacity(64 * 1024),
            waiters: Vec::new(),
            receipts: Receipts::default(),
            taken: Pending::default(),
            signing,
            config,
        }
    }

    /// Takes what is queued, chains it (checkpoints included) and writes it to the file.
    /// `None`, taking nothing, when `rotate` is false and the group could reach the end of
    /// the segment (rotating fsyncs: the receipts' task leaves that to the thread). Returns
    /// whether the queue is closed, whether the group was written, and its receipts, to be
    /// signed once the lock is released ([`deliver`]).
    fn write_queued(&mut self, queue: &Queue, rotate: bool) -> Option<Turn> {
        let closed = {
            let mut pending = queue.lock();
            if !rotate {
                let n = pending.events.len() as u64;
                // Every event, the checkpoints they may bring, and one for the interval.
                let records = n + n / self.config.checkpoint_every.max(1) + 2;
                if self.st.in_segment + records >= self.st.segment_records {
                    pending.thread_wanted = true;
                    return None;
                }
            }
            std::mem::swap(&mut pending.bytes, &mut self.taken.bytes);
            std::mem::swap(&mut pending.events, &mut self.taken.events);
            pending.waiting = 0;
            pending.waiting_receipts = 0;
            pending.closed
        };
        let (st, buf) = (&mut self.st, &mut self.buf);
        let mut start = 0;
        for Queued {
            end,
            waiter,
            q,
            journaled,
        } in self.taken.events.drain(..)
        {
            push(st, buf, &self.taken.bytes[start..end], Kind::Sealed);
            start = end;
            st.pushed_q = q;
            if let Some(at) = journaled {
                st.journal_tail = at;
            }
            match waiter {
                Some(Waiter::Receipt(prepared, done)) => self.receipts.add(st, prepared, done),
                Some(d) => self.waiters.push(d),
                None => {}
            }
            if st.since_checkpoint >= self.config.checkpoint_every {
                push_checkpoint(st, buf, &self.signing);
            }
        }
        self.taken.bytes.clear();
        if st.since_checkpoint > 0
            && st.last_checkpoint.elapsed() >= self.config.checkpoint_interval
        {
            push_checkpoint(st, buf, &self.signing);
        }
        let written = write_pending(st, buf);
        Some(Turn {
            closed,
            written,
            receipts: self.receipts.take(written),
        })
    }
}

/// What one turn of writing did.
struct Turn {
    closed: bool,
    written: bool,
    receipts: Vec<Signing>,
}

pub(super) fn writer(shared: &Shared, queue: &Queue) {
    let config = lock_writer(shared).config;
    // Age is checked every half retention period (1 s to 60 s); the size cap every 10 s.
    let retention_every = match (config.retention, config.max_bytes) {
        (Some(r), _) => Some((r / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))),
        (None, Some(_)) => Some(Duration::from_secs(10)),
        (None, None) => None,
    }
    .map(|every| match config.max_bytes {
        Some(_) => every.min(Duration::from_secs(10)),
        None => every,
    });
    let mut last_retention: Option<std::time::Instant> = None;
    {
        let mut w = lock_writer(shared);
        let w = &mut *w;
        if w.st.uncovered_at_open > 0 {
            // A crash left records after the last checkpoint. They verified as a chain, but
            // no signature covered them: whoever could write the disk since could have
            // rewritten them. Sign them now, and say so (the window of loss, SECURITY.md).
            tracing::warn!(
                records = w.st.uncovered_at_open,
                "audit log: records written after the last checkpoint before a crash were not \
                 covered by a signature; they are checkpointed now as found"
            );
            push_checkpoint(&mut w.st, &mut w.buf, &w.signing);
            flush(&mut w.st, &mut w.buf);
        }
    }
    loop {
        let mut wait = retention_every.map_or(config.checkpoint_interval, |r| {
            r.min(config.checkpoint_interval)
        });
        {
            let w = lock_writer(shared);
            if !w.buf.is_empty() {
                // A group that failed to reach disk is retried soon, and written records are
                // fsync'd on time, even if nothing arrives.
                wait = wait
                    .min(RETRY_EVERY)
                    .min(config.group_linger.saturating_sub(w.st.last_sync.elapsed()))
                    .max(Duration::from_micros(100));
            }
        }
        gather(queue, &config, wait);
        let mut w = lock_writer(shared);
        let Some(turn) = w.write_queued(queue, true) else {
            unreachable!("the thread may rotate")
        };
        // Receipts go out once their records are written, as the answers without do.
        deliver(turn.receipts, false);
        let blocking = w.waiters.iter().any(|x| matches!(x, Waiter::Blocking(_)));
        // Written first: the answers waiting for these records go out; then fsync'd when due
        // (admin events wait for that, and a checkpoint is published only then).
        if turn.written {
            let due = blocking
                || turn.closed
                || w.st.unflushed_checkpoint.is_some()
                || w.st.last_sync.elapsed() >= config.group_linger;
            let waiters = std::mem::take(&mut w.waiters);
            // A failed fsync cuts the file back to the last one: the records go again with
            // the retry, and the answers waiting for them are withheld.
            let kept_on_disk = if due {
                let (guard, ok) = sync_unlocked(w, shared);
                w = guard;
                ok
            } else {
                true
            };
            for x in waiters {
                match x {
                    Waiter::Async(s) => {
                        let _ = s.send(kept_on_disk);
                    }
                    blocking if !(due && kept_on_disk) => w.waiters.push(blocking),
                    blocking => Waiter::done(blocking),
                }
            }
        } else {
            // Answers waiting for this group are withheld now rather than held until the
            // disk comes back; threads in `append_durable` keep waiting for the retry.
            withhold_answers(&mut w.waiters);
        }
        advance_journal(&mut w.st, queue);
        if turn.closed {
            // Appends stopped with the flag: nothing can arrive after this group.
            drop(w);
            break;
        }
        // Nothing is deleted before the whole log has verified (a start checks the rest in
        // the background): retried at the next turn until then.
        if let Some(every) = retention_every
            && last_retention.is_none_or(|t| t.elapsed() >= every)
            && *w.st.integrity.borrow() == Integrity::Verified
        {
            last_retention = Some(std::time::Instant::now());
            let w = &mut *w;
            if let Err(e) = apply_retention(
                &mut w.st,
                &mut w.buf,
                &w.signing,
                config.retention,
                config.max_bytes,
            ) {
                tracing::error!(error = %e, "audit retention failed; nothing was deleted");
            }
        }
        drop(w);
    }
    let mut w = lock_writer(shared);
    let w = &mut *w;
    if w.st.since_checkpoint > 0 {
        push_checkpoint(&mut w.st, &mut w.buf, &w.signing);
    }
    if !flush(&mut w.st, &mut w.buf) {
        // Durable appends still waiting see the writer stop (their senders drop).
        tracing::error!(
            bytes = w.buf.len(),
            "the audit log is closing and its last records could not be written"
        );
    }
    advance_journal(&mut w.st, queue);
}

/// Answers waiting for a group that did not reach the file are told so at once (their
/// records go again with the retry); threads in `append_durable` keep waiting.
fn withhold_answers(waiters: &mut Vec<Waiter>) {
    let mut kept = Vec::with_capacity(waiters.len());
    for w in waiters.drain(..) {
        match w {
            Waiter::Async(s) => {
                let _ = s.send(false);
            }
            blocking => kept.push(blocking),
        }
    }
    *waiters = kept;
}

/// The writer thread waits (up to `wait`) for work, then gathers a group: see the comments.
fn gather(queue: &Queue, config: &AuditConfig, wait: Duration) {
    // With a receipts' task, receipts are its work: the thread wakes for other events, for
    // the task's hand-overs (`thread_wanted`) and on time.
    let task = queue.receipt_task.get().is_some();
    let work = |p: &Pending| {
        p.closed
            || p.thread_wanted
            || if task {
                p.events.len() > p.waiting_receipts
            } else {
                !p.events.is_empty()
            }
    };
    let mut pending = queue.lock();
    if !work(&pending) {
        pending = queue
            .ready
            .wait_timeout_while(pending, wait, |p| !work(p))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    pending.thread_wanted = false;
    if !pending.events.is_empty()
        && !pending.closed
        && pending.waiting == 0
        && !config.group_linger.is_zero()
        && pending.events.len() < 4096
    {
        // Gather the group: appends to a non-empty queue wake nobody, except the first that
        // someone waits for, which ends the gathering (a caller waits for its answer; what
        // queues meanwhile goes with the next write).
        pending = queue
            .ready
            .wait_timeout_while(pending, config.group_linger, |p| {
                p.waiting == 0 && !p.closed && p.events.len() < 4096
            })
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let expected = || queue.expected_receipts.load(Ordering::Acquire) > 0;
    if !task
        && pending.waiting > 0
        && pending.waiting == pending.waiting_receipts
        && !pending.closed
        && pending.events.len() < 4096
        && expected()
    {
        // Only receipts wait, and more calls that will carry one are under way: gather a
        // little more, so that one signature covers more of them (an answer that waits for
        // its record, or the last receipt expected, ends this at once).
        drop(
            queue
                .ready
                .wait_timeout_while(pending, config.receipt_linger, |p| {
                    p.waiting == p.waiting_receipts
                        && p.waiting_receipts < RECEIPT_GROUP
                        && !p.closed
                        && p.events.len() < 4096
                        && expected()
                })
                .unwrap_or_else(|p| p.into_inner())
                .0,
        );
    }
}

/// An fsync of what is written, with the writer's lock released meanwhile (the receipts'
/// task keeps writing): the lock is taken again to record what the fsync covered, which is
/// what was written when it began. Returns the lock and whether the fsync succeeded.
fn sync_unlocked<'a>(
    mut w: MutexGuard<'a, Writer>,
    shared: &'a Shared,
) -> (MutexGuard<'a, Writer>, bool) {
    let inner = &mut *w;
    let Some(ticket) = begin_sync(&mut inner.st, &inner.buf) else {
        return (w, true);
    };
    drop(w);
    let result = ticket.sync();
    let mut w = lock_writer(shared);
    let w2 = &mut *w;
    let ok = end_sync(&mut w2.st, &mut w2.buf, ticket, result);
    (w, ok)
}

/// The receipts of one group: each statement is finished as its record is chained; once
/// the group is written, all are signed at once, under one signature over their Merkle tree.
#[derive(Default)]
struct Receipts {
    statements: Vec<Vec<u8>>,
    waiting: Vec<(std::sync::Arc<crate::receipt::ReceiptSigner>, Delivery)>,
}

use crate::receipt::Delivery;

/// Statements to sign under one signature, and where each receipt goes.
struct Signing {
    signer: std::sync::Arc<crate::receipt::ReceiptSigner>,
    statements: Vec<Vec<u8>>,
    deliveries: Vec<Delivery>,
}

impl Receipts {
    /// The record of `draft`'s call was just pushed: `st` holds its seq, hash and time.
    fn add(&mut self, st: &State, prepared: crate::receipt::Prepared, done: Delivery) {
        let (statement, signer) = prepared.finish(st.seq, &st.head, st.last_ts_ms);
        self.statements.push(statement);
        self.waiting.push((signer, done));
    }

    /// The group's receipts to sign, once their records are `written`; else each waiter is
    /// told there is none (the answer is withheld, as an unwritten record's is).
    fn take(&mut self, written: bool) -> Vec<Signing> {
        if !written {
            self.statements.clear();
            for (_, done) in self.waiting.drain(..) {
                let _ = done.send(None);
            }
            return Vec::new();
        }
        // One server has one signer; a run of the same one is signed together.
        let mut out = Vec::new();
        while let Some((first, _)) = self.waiting.first() {
            let signer = std::sync::Arc::clone(first);
            let end = self
                .waiting
                .iter()
                .position(|(s, _)| !std::sync::Arc::ptr_eq(s, &signer))
                .unwrap_or(self.waiting.len());
            out.push(Signing {
                signer,
                statements: self.statements.drain(..end).collect(),
                deliveries: self.waiting.drain(..end).map(|(_, d)| d).collect(),
            });
        }
        out
    }
}

/// Signs and sends receipts: `here` on this thread (the receipts' task), else on the
/// signer's task when it has one.
fn deliver(receipts: Vec<Signing>, here: bool) {
    for s in receipts {
        if here {
            s.signer.sign_and_deliver_here(s.statements, s.deliveries);
        } else {
            s.signer.sign_and_deliver(s.statements, s.deliveries);
        }
    }
}

impl AuditLog {
    /// From now on, the records of answers that carry receipts are written, and their
    /// receipts signed, by a task of the current tokio runtime rather than by the writer
    /// thread (a no-op outside a runtime, or once started): see [`writer`]. A group gathers
    /// until it holds [`RECEIPT_GROUP`] receipts or no other call that will carry one is
    /// under way ([`Self::expect_receipt`]), or at the latest after
    /// [`AuditConfig::receipt_linger`] (rounded up to the runtime timer's millisecond).
    pub fn write_receipts_on_runtime(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let notify = Arc::new(tokio::sync::Notify::new());
        if self.queue.receipt_task.set(Arc::clone(&notify)).is_err() {
            return;
        }
        let linger = lock_writer(&self.writer).config.receipt_linger;
        // Weak: the task ends with the log.
        let (queue, shared) = (Arc::downgrade(&self.queue), Arc::downgrade(&self.writer));
        runtime.spawn(async move {
            loop {
                notify.notified().await;
                let deadline = tokio::time::Instant::now() + linger;
                loop {
                    let Some(queue) = queue.upgrade() else {
                        return;
                    };
                    match gathered(&queue) {
                        Gathered::Closed => return,
                        Gathered::Ready => break,
                        Gathered::NotYet => {}
                    }
                    drop(queue);
                    if tokio::time::timeout_at(deadline, notify.notified())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let (Some(queue), Some(shared)) = (queue.upgrade(), shared.upgrade()) else {
                    return;
                };
                // The thread holds the lock only for a turn of its own (not over an fsync):
                // try again once the other tasks here have run, and after a millisecond once
                // its turn is a long one (a rotation's fsync, retention).
                let mut tries = 0u32;
                while !receipts_turn(&shared, &queue) {
                    tries += 1;
                    if tries < 64 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
    }
}

/// Where a receipts' gathering stands.
enum Gathered {
    /// The log is closing: the thread writes the rest.
    Closed,
    /// Write it now.
    Ready,
    /// Wait for more.
    NotYet,
}

fn gathered(queue: &Queue) -> Gathered {
    let p = queue.lock();
    if p.closed {
        Gathered::Closed
    } else if p.waiting_receipts == 0
        || p.waiting_receipts >= RECEIPT_GROUP
        || p.waiting > p.waiting_receipts
        || queue.expected_receipts.load(Ordering::Acquire) == 0
    {
        Gathered::Ready
    } else {
        Gathered::NotYet
    }
}

/// One turn of the receipts' task: writes what is queued, unless the group needs the thread
/// (rotation: handed over); hands the thread what needs an fsync; signs the receipts here,
/// with the lock released. False, doing nothing, while the thread holds the lock (a tokio
/// worker never blocks on it).
pub(super) fn receipts_turn(shared: &Shared, queue: &Queue) -> bool {
    let mut w = match shared.try_lock() {
        Ok(w) => w,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return false,
    };
    let had_unsynced = !w.buf.is_empty();
    let Some(turn) = w.write_queued(queue, false) else {
        drop(w);
        queue.ready.notify_one();
        return true;
    };
    // The thread fsyncs: tell it when there is something new to fsync on time, something
    // that waits for an fsync, or a group to retry.
    let mut thread_wanted = !turn.written
        || (!had_unsynced && !w.buf.is_empty())
        || w.st.unflushed_checkpoint.is_some();
    if turn.written {
        let mut kept = Vec::new();
        for x in w.waiters.drain(..) {
            match x {
                Waiter::Async(s) => {
                    let _ = s.send(true);
                }
                blocking => {
                    thread_wanted = true;
                    kept.push(blocking);
                }
            }
        }
        w.waiters = kept;
    } else {
        withhold_answers(&mut w.waiters);
    }
    drop(w);
    if thread_wanted {
        queue.lock().thread_wanted = true;
        queue.ready.notify_one();
    }
    deliver(turn.receipts, true);
    true
}

/// After an fsync: the journal's entries of the events now on disk are free, and its header
/// says how far the log goes (see [`super::journal`]).
fn advance_journal(st: &mut State, queue: &Queue) {
    if let Some(mark) = st.synced_mark.take() {
        let mut pending = queue.lock();
        if let Some(j) = pending.journal.as_mut() {
            j.advance(mark);
        }
        if pending.unjournaled > 0 {
            tracing::warn!(
                events = pending.unjournaled,
                "audit journal: events were queued while it was full"
            );
            pending.unjournaled = 0;
        }
    }
}

/// How soon a group that failed to reach disk is retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How a record is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An event, encrypted (see [`super::seal`]).
    Sealed,
    /// A retention record, in clear: an auditor checks its signature.
    Retention,
    /// A checkpoint, in clear.
    Checkpoint,
}

/// Appends the record of one event (its canonical JSON object) to `buf`, chained to the head;
/// a `Kind::Sealed` event is encrypted first, here in the writer thread.
pub(super) fn push(st: &mut State, buf: &mut Vec<u8>, event_json: &[u8], kind: Kind) {
    // A segment's records go to its own file: rotate only once what precedes is on disk
    // (until then the current segment grows past its size).
    if st.in_segment >= st.segment_records && flush(st, buf) {
        st.segment += 1;
        st.in_segment = 0;
        let path = segment_path(&st.dir, st.segment);
        match open_segment(&path) {
            Ok(f) => {
                st.synced_len = f.metadata().map_or(0, |m| m.len());
                st.file = f;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log: cannot open a new segment");
                // The next flush opens it or fails (and marks the log unwritable): the
                // records are never written to the previous segment's file.
                st.reopen = true;
            }
        }
    }
    st.seq += 1;
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let hash = if kind == Kind::Sealed {
        st.sealed.clear();
        st.sealer.seal(st.seq, event_json, &mut st.sealed);
        write_record(buf, &mut st.tail, st.seq, ts_ms, &st.head, &st.sealed)
    } else {
        write_record(buf, &mut st.tail, st.seq, ts_ms, &st.head, event_json)
    };
    // The hex digits are ASCII; the head keeps its allocation from record to record.
    st.head.clear();
    st.head.extend(hash.iter().map(|&b| char::from(b)));
    st.last_ts_ms = ts_ms;
    buf.push(b'\n');
    st.in_segment += 1;
    if kind == Kind::Checkpoint {
        st.since_checkpoint = 0;
        st.last_checkpoint = std::time::Instant::now();
        st.unflushed_checkpoint = Some(Checkpointed {
            seq: st.seq,
            head: st.head.clone(),
        });
    } else {
        st.since_checkpoint += 1;
    }
}

/// [`push`] for an event the writer makes itself (checkpoints, retention records).
pub(super) fn push_event(st: &mut State, buf: &mut Vec<u8>, event: &Event) {
    match event_json(event) {
        Ok(json) => {
            let kind = match event {
                Event::Checkpoint { .. } => Kind::Checkpoint,
                Event::Retention { .. } => Kind::Retention,
                _ => Kind::Sealed,
            };
            push(st, buf, &json, kind);
        }
        Err(e) => tracing::error!(error = %e, "an audit event was lost"),
    }
}

pub(super) fn push_checkpoint(st: &mut State, buf: &mut Vec<u8>, signing: &SigningKey) {
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

/// Writes and fsyncs `buf`. On success it is cleared and the log is writable; on failure
/// whatever part reached the file since the last fsync is cut off again, `buf` is kept for
/// the retry, the segment will be reopened, and the log is unwritable until a retry
/// succeeds. Returns whether the group is on disk.
pub(super) fn flush(st: &mut State, buf: &mut Vec<u8>) -> bool {
    write_pending(st, buf) && sync_pending(st, buf)
}

/// Writes the part of `buf` not yet written (to the kernel: it survives a crash of the
/// process). On failure, see [`flush`].
pub(super) fn write_pending(st: &mut State, buf: &[u8]) -> bool {
    if st.written >= buf.len() {
        return true;
    }
    let r = (|| {
        if st.reopen {
            let path = segment_path(&st.dir, st.segment);
            st.file = OpenOptions::new().create(true).append(true).open(&path)?;
            st.reopen = false;
            st.synced_len = st.file.seek(SeekFrom::End(0))?;
        }
        st.file.write_all(&buf[st.written..])
    })();
    match r {
        Ok(()) => {
            st.written = buf.len();
            true
        }
        Err(e) => {
            failed(st, &e);
            false
        }
    }
}

/// Fsyncs what [`write_pending`] wrote; on success `buf` is cleared, the log is writable,
/// and a checkpoint in it is published. On failure, see [`flush`].
pub(super) fn sync_pending(st: &mut State, buf: &mut Vec<u8>) -> bool {
    let Some(ticket) = begin_sync(st, buf) else {
        return true;
    };
    let result = ticket.sync();
    end_sync(st, buf, ticket, result)
}

/// What an fsync covers: the first `len` bytes of the writer's buffer, all written when it
/// began, the journal's mark and the checkpoint among them.
pub(super) struct SyncTicket {
    /// The segment's file, a handle of its own, so that the fsync needs no lock.
    file: std::io::Result<File>,
    len: usize,
    mark: journal::Mark,
    checkpoint: Option<Checkpointed>,
    /// [`State::cuts`] when it began: a cut meanwhile undoes what it covers.
    cuts: u64,
}

impl SyncTicket {
    pub(super) fn sync(&self) -> std::io::Result<()> {
        match &self.file {
            Ok(file) => file.sync_data(),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Begins an fsync of what is written (all of `buf`: the caller's write succeeded); `None`
/// when nothing is.
pub(super) fn begin_sync(st: &mut State, buf: &[u8]) -> Option<SyncTicket> {
    if buf.is_empty() {
        return None;
    }
    debug_assert_eq!(
        st.written,
        buf.len(),
        "an fsync covers only what is written"
    );
    Some(SyncTicket {
        file: st.file.try_clone(),
        len: buf.len(),
        mark: super::journal::Mark {
            q: st.pushed_q,
            seq: st.seq,
            tail: st.journal_tail,
        },
        checkpoint: st.unflushed_checkpoint.take(),
        cuts: st.cuts,
    })
}

/// Ends an fsync: on success what it covered leaves `buf` (what was written since stays),
/// the log is writable, and its checkpoint is published; on failure, or if the file was cut
/// back meanwhile, see [`flush`].
pub(super) fn end_sync(
    st: &mut State,
    buf: &mut Vec<u8>,
    ticket: SyncTicket,
    result: std::io::Result<()>,
) -> bool {
    let cut = st.cuts != ticket.cuts;
    match result {
        Ok(()) if !cut => {
            st.synced_len += ticket.len as u64;
            buf.drain(..ticket.len);
            st.written = st.written.saturating_sub(ticket.len);
            st.synced_mark = Some(ticket.mark);
            st.last_sync = std::time::Instant::now();
            if let Some(c) = ticket.checkpoint {
                st.checkpointed.send_replace(Some(c));
            }
            if !st.writable.swap(true, Ordering::AcqRel) {
                tracing::warn!("the audit log is writable again; requests are served");
            }
            true
        }
        result => {
            // The checkpoint goes out with the fsync that does keep it (unless a later one
            // is waiting already).
            if st.unflushed_checkpoint.is_none() {
                st.unflushed_checkpoint = ticket.checkpoint;
            }
            if let Err(e) = result
                && !cut
            {
                failed(st, &e);
            }
            false
        }
    }
}

/// A write or fsync failed: cut the file back to its last fsync (best effort; a torn group
/// is also cut when the log is next opened), write all of `buf` again at the retry, and
/// refuse requests until then.
pub(super) fn failed(st: &mut State, e: &std::io::Error) {
    let _ = st.file.set_len(st.synced_len);
    st.cuts += 1;
    st.written = 0;
    st.reopen = true;
    if st.writable.swap(false, Ordering::AcqRel) {
        tracing::error!(
            error = %e,
            "audit log write failed; requests are refused until it can be written"
        );
    }
}
