//! The writer thread: takes the queued records (chained as they were queued, see
//! [`super::chain`]) in groups, writes them, fsyncs, rotates segments, and has checkpoints
//! chained when they are due by time.
//!
//! An answer waits until its record is written to the file (in the kernel's page cache: a
//! crash of the process, kill -9 included, cannot lose it), not for the fsync: fsyncs are
//! batched every `group_linger` (and at once for admin events, checkpoints and rotation), so
//! their rate does not grow with the request rate. The freshness anchor only ever covers
//! fsync'd checkpoints.

use std::io::{Seek, SeekFrom, Write};

use ed25519_dalek::SigningKey;

use super::*;

/// What the writer carries from group to group.
pub(super) struct Writer {
    pub(super) st: State,
    /// Everything since the last fsync (see [`State::written`]).
    pub(super) buf: Vec<u8>,
    waiters: Vec<Waiter>,
    receipts: Receipts,
    taken: Taken,
}

impl Writer {
    pub(super) fn new(st: State) -> Self {
        Self {
            st,
            buf: Vec::with_capacity(64 * 1024),
            waiters: Vec::new(),
            receipts: Receipts::default(),
            taken: Taken::default(),
        }
    }

    /// Takes everything queued (the caller holds the queue's lock).
    fn take(&mut self, pending: &mut Pending) {
        std::mem::swap(&mut pending.bytes, &mut self.taken.bytes);
        std::mem::swap(&mut pending.events, &mut self.taken.events);
        pending.waiting = 0;
    }

    /// Writes what was taken: fsyncs when `sync` or when due, and tells the waiters.
    fn write_taken(&mut self, sync: bool, config: &AuditConfig, queue: &Queue) {
        let st = &mut self.st;
        let mut start = 0;
        for Queued {
            end,
            waiter,
            q,
            seq,
            journaled,
            checkpoint,
        } in self.taken.events.drain(..)
        {
            push_line(st, &mut self.buf, &self.taken.bytes[start..end]);
            start = end;
            st.seq = seq;
            st.pushed_q = q;
            if let Some(at) = journaled {
                st.journal_tail = at;
            }
            if let Some(head) = checkpoint {
                st.unflushed_checkpoint = Some(Checkpointed { seq, head });
            }
            match waiter {
                Some(Waiter::Receipt(r)) => self.receipts.add(r),
                Some(d) => self.waiters.push(d),
                None => {}
            }
        }
        self.taken.bytes.clear();
        // Written first: the answers waiting for these records go out; then fsync'd when due
        // (admin events wait for that, and a checkpoint is published only then).
        let blocking = self
            .waiters
            .iter()
            .any(|w| matches!(w, Waiter::Blocking(_)));
        let written = write_pending(st, &self.buf);
        if written {
            queue.written_q.store(st.pushed_q, Ordering::Release);
        }
        // Receipts go out once their records are written, as the answers without do.
        self.receipts.send(written);
        if written {
            let due = sync
                || blocking
                || st.unflushed_checkpoint.is_some()
                || st.last_sync.elapsed() >= config.group_linger;
            // A failed fsync cuts the file back to the last one: the records go again with
            // the retry, and the answers waiting for them are withheld.
            let kept_on_disk = !due || sync_pending(st, &mut self.buf);
            let mut kept = Vec::new();
            for w in self.waiters.drain(..) {
                match w {
                    Waiter::Async(s) => {
                        let _ = s.send(kept_on_disk);
                    }
                    blocking if !(due && kept_on_disk) => kept.push(blocking),
                    blocking => Waiter::done(blocking),
                }
            }
            self.waiters = kept;
        } else {
            // Answers waiting for this group are withheld now rather than held until the
            // disk comes back; threads in `append_durable` keep waiting for the retry.
            let mut kept = Vec::with_capacity(self.waiters.len());
            for w in self.waiters.drain(..) {
                match w {
                    Waiter::Async(s) => {
                        let _ = s.send(false);
                    }
                    blocking => kept.push(blocking),
                }
            }
            self.waiters = kept;
        }
        advance_journal(st, queue);
    }

    /// Has `push` chain records now (a checkpoint, a retention record), and writes and
    /// fsyncs them with everything queued before them. Returns whether they are on disk.
    pub(super) fn chain_and_flush(
        &mut self,
        queue: &Queue,
        config: &AuditConfig,
        push: impl FnOnce(&mut Pending),
    ) -> bool {
        {
            let mut pending = queue.lock();
            push(&mut pending);
            self.take(&mut pending);
        }
        self.write_taken(true, config, queue);
        self.buf.is_empty()
    }
}

pub(super) fn writer(st: State, signing: SigningKey, config: AuditConfig, queue: &Queue) {
    let mut w = Writer::new(st);
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
    if w.st.uncovered_at_open > 0 {
        // A crash left records after the last checkpoint. They verified as a chain, but no
        // signature covered them: whoever could write the disk since could have rewritten
        // them. Sign them now, and say so (the window of loss, SECURITY.md).
        tracing::warn!(
            records = w.st.uncovered_at_open,
            "audit log: records written after the last checkpoint before a crash were not \
             covered by a signature; they are checkpointed now as found"
        );
        w.chain_and_flush(queue, &config, Pending::push_checkpoint);
    }
    loop {
        let mut wait = retention_every.map_or(config.checkpoint_interval, |r| {
            r.min(config.checkpoint_interval)
        });
        if !w.buf.is_empty() {
            // A group that failed to reach disk is retried soon, and written records are
            // fsync'd on time, even if nothing arrives.
            wait = wait
                .min(RETRY_EVERY)
                .min(config.group_linger.saturating_sub(w.st.last_sync.elapsed()))
                .max(Duration::from_micros(100));
        }
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
                && pending.waiting == 0
                && !config.group_linger.is_zero()
                && pending.events.len() < 4096
            {
                // Gather the group: appends to a non-empty queue wake nobody, except the
                // first that someone waits for, which ends the gathering (a caller waits
                // for its answer; what queues meanwhile goes with the next write).
                pending = queue
                    .ready
                    .wait_timeout_while(pending, config.group_linger, |p| {
                        p.waiting == 0 && !p.closed && p.events.len() < 4096
                    })
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            // A checkpoint is due by time, or the log closes: it signs everything before it
            // (nothing can be queued after the close).
            if pending.chain.since_checkpoint > 0
                && (pending.closed
                    || pending.chain.last_checkpoint.elapsed() >= config.checkpoint_interval)
            {
                pending.push_checkpoint();
            }
            w.take(&mut pending);
            pending.closed
        };
        w.write_taken(closed, &config, queue);
        if closed {
            // Appends stopped with the flag: nothing can arrive after this group.
            break;
        }
        // Nothing is deleted before the whole log has verified (a start checks the rest in
        // the background): retried at the next turn until then.
        if let Some(every) = retention_every
            && last_retention.is_none_or(|t| t.elapsed() >= every)
            && *w.st.integrity.borrow() == Integrity::Verified
        {
            last_retention = Some(std::time::Instant::now());
            if let Err(e) = apply_retention(
                &mut w,
                queue,
                &config,
                &signing,
                config.retention,
                config.max_bytes,
            ) {
                tracing::error!(error = %e, "audit retention failed; nothing was deleted");
            }
        }
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

/// The receipts of one group whose records the journal does not hold: signed and sent once
/// their records are written (by the signer's task, see
/// [`crate::receipt::ReceiptSigner::sign_on_runtime`]).
#[derive(Default)]
struct Receipts {
    waiting: Vec<ReceiptWait>,
}

impl Receipts {
    fn add(&mut self, r: ReceiptWait) {
        self.waiting.push(r);
    }

    /// Has the receipts signed and sent once their records are `written`; else each waiter
    /// is told there is none (the answer is withheld, as an unwritten record's is).
    fn send(&mut self, written: bool) {
        for r in self.waiting.drain(..) {
            if written {
                r.signer.sign_one(r.statement, r.done);
            } else {
                let _ = r.done.send(None);
            }
        }
    }
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

/// Appends one record's line (with its newline) to `buf`, in the current segment, or in a
/// new one once the current is full.
pub(super) fn push_line(st: &mut State, buf: &mut Vec<u8>, line: &[u8]) {
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
    buf.extend_from_slice(line);
    st.in_segment += 1;
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
    if buf.is_empty() {
        return true;
    }
    match st.file.sync_data() {
        Ok(()) => {
            st.synced_len += buf.len() as u64;
            buf.clear();
            st.synced_mark = Some(super::journal::Mark {
                q: st.pushed_q,
                seq: st.seq,
                tail: st.journal_tail,
            });
            st.written = 0;
            st.last_sync = std::time::Instant::now();
            if let Some(c) = st.unflushed_checkpoint.take() {
                st.checkpointed.send_replace(Some(c));
            }
            if !st.writable.swap(true, Ordering::AcqRel) {
                tracing::warn!("the audit log is writable again; requests are served");
            }
            true
        }
        Err(e) => {
            failed(st, &e);
            false
        }
    }
}

/// A write or fsync failed: cut the file back to its last fsync (best effort; a torn group
/// is also cut when the log is next opened), write all of `buf` again at the retry, and
/// refuse requests until then.
fn failed(st: &mut State, e: &std::io::Error) {
    let _ = st.file.set_len(st.synced_len);
    st.written = 0;
    st.reopen = true;
    if st.writable.swap(false, Ordering::AcqRel) {
        tracing::error!(
            error = %e,
            "audit log write failed; requests are refused until it can be written"
        );
    }
}
