//! The writer thread: gathers queued events into groups, chains and writes them, fsyncs,
//! rotates segments, and signs checkpoints.
//!
//! An answer waits until its record is written to the file (in the kernel's page cache: a
//! crash of the process, kill -9 included, cannot lose it), not for the fsync: fsyncs are
//! batched every `group_linger` (and at once for admin events, checkpoints and rotation), so
//! their rate does not grow with the request rate. The freshness anchor only ever covers
//! fsync'd checkpoints.

use std::io::{Seek, SeekFrom, Write};

use ed25519_dalek::{Signer, SigningKey};

use super::*;
use std::sync::atomic::Ordering;

pub(super) fn writer(mut st: State, signing: SigningKey, config: AuditConfig, queue: &Queue) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::new();
    let mut receipts = Receipts::default();
    let mut taken = Pending::default();
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
    if st.uncovered_at_open > 0 {
        // A crash left records after the last checkpoint. They verified as a chain, but no
        // signature covered them: whoever could write the disk since could have rewritten
        // them. Sign them now, and say so (the window of loss, SECURITY.md).
        tracing::warn!(
            records = st.uncovered_at_open,
            "audit log: records written after the last checkpoint before a crash were not \
             covered by a signature; they are checkpointed now as found"
        );
        push_checkpoint(&mut st, &mut buf, &signing);
        flush(&mut st, &mut buf);
    }
    loop {
        let mut wait = retention_every.map_or(config.checkpoint_interval, |r| {
            r.min(config.checkpoint_interval)
        });
        if !buf.is_empty() {
            // A group that failed to reach disk is retried soon, and written records are
            // fsync'd on time, even if nothing arrives.
            wait = wait
                .min(RETRY_EVERY)
                .min(config.group_linger.saturating_sub(st.last_sync.elapsed()))
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
            let expected = || queue.expected_receipts.load(Ordering::Acquire) > 0;
            if pending.waiting > 0
                && pending.waiting == pending.waiting_receipts
                && !pending.closed
                && pending.events.len() < 4096
                && expected()
            {
                // Only receipts wait, and more calls that will carry one are under way:
                // gather a little more, so that one signature covers more of them (an answer
                // that waits for its record, or the last receipt expected, ends this at once).
                pending = queue
                    .ready
                    .wait_timeout_while(pending, config.receipt_linger, |p| {
                        p.waiting == p.waiting_receipts
                            && p.waiting_receipts < RECEIPT_GROUP
                            && !p.closed
                            && p.events.len() < 4096
                            && expected()
                    })
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut taken.bytes);
            std::mem::swap(&mut pending.events, &mut taken.events);
            pending.waiting = 0;
            pending.waiting_receipts = 0;
            pending.closed
        };
        let mut start = 0;
        for Queued {
            end,
            waiter,
            q,
            journaled,
        } in taken.events.drain(..)
        {
            push(&mut st, &mut buf, &taken.bytes[start..end], Kind::Sealed);
            start = end;
            st.pushed_q = q;
            if let Some(at) = journaled {
                st.journal_tail = at;
            }
            match waiter {
                Some(Waiter::Receipt(prepared, done)) => receipts.add(&st, prepared, done),
                Some(d) => waiters.push(d),
                None => {}
            }
            if st.since_checkpoint >= config.checkpoint_every {
                push_checkpoint(&mut st, &mut buf, &signing);
            }
        }
        taken.bytes.clear();
        if st.since_checkpoint > 0 && st.last_checkpoint.elapsed() >= config.checkpoint_interval {
            push_checkpoint(&mut st, &mut buf, &signing);
        }
        // Written first: the answers waiting for these records go out; then fsync'd when due
        // (admin events wait for that, and a checkpoint is published only then).
        let blocking = waiters.iter().any(|w| matches!(w, Waiter::Blocking(_)));
        let written = write_pending(&mut st, &buf);
        // Receipts go out once their records are written, as the answers without do.
        receipts.send(written);
        if written {
            let due = blocking
                || closed
                || st.unflushed_checkpoint.is_some()
                || st.last_sync.elapsed() >= config.group_linger;
            // A failed fsync cuts the file back to the last one: the records go again with
            // the retry, and the answers waiting for them are withheld.
            let kept_on_disk = !due || sync_pending(&mut st, &mut buf);
            let mut kept = Vec::new();
            for w in waiters.drain(..) {
                match w {
                    Waiter::Async(s) => {
                        let _ = s.send(kept_on_disk);
                    }
                    blocking if !(due && kept_on_disk) => kept.push(blocking),
                    blocking => Waiter::done(blocking),
                }
            }
            waiters = kept;
        } else {
            // Answers waiting for this group are withheld now rather than held until the
            // disk comes back; threads in `append_durable` keep waiting for the retry.
            let mut kept = Vec::with_capacity(waiters.len());
            for w in waiters.drain(..) {
                match w {
                    Waiter::Async(s) => {
                        let _ = s.send(false);
                    }
                    blocking => kept.push(blocking),
                }
            }
            waiters = kept;
        }
        advance_journal(&mut st, queue);
        if closed {
            // Appends stopped with the flag: nothing can arrive after this group.
            break;
        }
        // Nothing is deleted before the whole log has verified (a start checks the rest in
        // the background): retried at the next turn until then.
        if let Some(every) = retention_every
            && last_retention.is_none_or(|t| t.elapsed() >= every)
            && *st.integrity.borrow() == Integrity::Verified
        {
            last_retention = Some(std::time::Instant::now());
            if let Err(e) = apply_retention(
                &mut st,
                &mut buf,
                &signing,
                config.retention,
                config.max_bytes,
            ) {
                tracing::error!(error = %e, "audit retention failed; nothing was deleted");
            }
        }
    }
    if st.since_checkpoint > 0 {
        push_checkpoint(&mut st, &mut buf, &signing);
    }
    if !flush(&mut st, &mut buf) {
        // Durable appends still waiting see the writer stop (their senders drop).
        tracing::error!(
            bytes = buf.len(),
            "the audit log is closing and its last records could not be written"
        );
    }
    advance_journal(&mut st, queue);
}

/// The receipts of one group: each statement is finished as its record is chained; once
/// the group is written, all are signed at once, under one signature over their Merkle tree
/// (by the signer's task, see [`crate::receipt::ReceiptSigner::sign_on_runtime`]).
#[derive(Default)]
struct Receipts {
    statements: Vec<Vec<u8>>,
    waiting: Vec<(std::sync::Arc<crate::receipt::ReceiptSigner>, Delivery)>,
}

use crate::receipt::Delivery;

impl Receipts {
    /// The record of `draft`'s call was just pushed: `st` holds its seq, hash and time.
    fn add(&mut self, st: &State, prepared: crate::receipt::Prepared, done: Delivery) {
        let (statement, signer) = prepared.finish(st.seq, &st.head, st.last_ts_ms);
        self.statements.push(statement);
        self.waiting.push((signer, done));
    }

    /// Has the receipts signed and sent once their records are `written`; else each waiter
    /// is told there is none (the answer is withheld, as an unwritten record's is).
    fn send(&mut self, written: bool) {
        if !written {
            self.statements.clear();
            for (_, done) in self.waiting.drain(..) {
                let _ = done.send(None);
            }
            return;
        }
        // One server has one signer; a run of the same one is signed together.
        while let Some((first, _)) = self.waiting.first() {
            let signer = std::sync::Arc::clone(first);
            let end = self
                .waiting
                .iter()
                .position(|(s, _)| !std::sync::Arc::ptr_eq(s, &signer))
                .unwrap_or(self.waiting.len());
            let statements: Vec<Vec<u8>> = self.statements.drain(..end).collect();
            let deliveries = self.waiting.drain(..end).map(|(_, d)| d).collect();
            signer.sign_and_deliver(statements, deliveries);
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
