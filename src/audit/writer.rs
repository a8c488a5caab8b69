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
//!
//! The records themselves (chaining, sealing, write, fsync, cut) are in [`super::file`]; the
//! receipts' task in [`super::receipt_task`].

use std::sync::MutexGuard;

use ed25519_dalek::SigningKey;

use super::*;
use std::sync::atomic::Ordering;

/// What the writer owns: the chain's state, the bytes written since the last fsync, and who
/// waits for them (see the module's documentation for who holds it when).
pub(super) struct Writer {
    pub(super) st: State,
    /// Everything since the last fsync (see [`State::written`]).
    pub(super) buf: Vec<u8>,
    /// Waiters whose records are written, waiting for an fsync (or for a retry).
    pub(super) waiters: Vec<Waiter>,
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
    pub(super) fn write_queued(&mut self, queue: &Queue, rotate: bool) -> Option<Turn> {
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
pub(super) struct Turn {
    pub(super) closed: bool,
    pub(super) written: bool,
    pub(super) receipts: Vec<Signing>,
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
pub(super) fn withhold_answers(waiters: &mut Vec<Waiter>) {
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
