//! The queue to the writer thread, and appending to it: each event is encoded by its caller,
//! copied onto the queue under one lock (and sealed into the journal under the same lock),
//! and whoever must know when it is safe (an answer, an admin event) gets what to wait for.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// The events on their way to the writer, in the order they were appended: each event's
/// canonical JSON object, back to back in one buffer. Appending is a copy under a lock: no
/// allocation per event, and nothing allocated on one thread is freed on another. The writer
/// swaps the whole buffer out once per group, so both buffers keep their capacity.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    /// The events in `bytes`, in order.
    pub(super) events: Vec<Queued>,
    /// How many of `events` have a waiter: while any does, the writer does not linger.
    pub(super) waiting: usize,
    /// How many of those wait for a receipt: while they are all that wait, the writer
    /// lingers a little ([`RECEIPT_LINGER`]) so that one signature covers more of them.
    pub(super) waiting_receipts: usize,
    /// No more events: the log is closing, or the writer is gone.
    pub(super) closed: bool,
    /// The receipts' task hands the writer thread something to do (an fsync, a rotation, a
    /// retry): the thread takes a turn at once.
    pub(super) thread_wanted: bool,
    /// The last queue number given (see [`journal`]).
    pub(super) q: u64,
    /// Where each event is also written, sealed, as it is queued (`None`: no journal).
    pub(super) journal: Option<journal::Journal>,
    /// Events queued while the journal's ring was full, since the last warning.
    pub(super) unjournaled: u64,
}

/// One queued event.
pub(super) struct Queued {
    /// Where it ends in [`Pending::bytes`].
    pub(super) end: usize,
    /// Whom to tell once it is on disk.
    pub(super) waiter: Option<Waiter>,
    /// Its queue number.
    pub(super) q: u64,
    /// Where the journal's next entry starts after it (`None`: not journaled).
    pub(super) journaled: Option<usize>,
}

/// The default of [`AuditConfig::receipt_linger`]: how long a group whose only waiters want
/// receipts is gathered, once the first of them arrived, while more calls that will carry
/// one are under way (nobody waits for calls that nobody started: at low load a receipt is
/// signed at once). One Ed25519 signature (about 20 µs) covers the whole group: without
/// gathering, groups of one or two spent about 10 µs of signing per answer.
///
/// - **The writer thread** (no receipts' task) gathers for this long at most. Longer
///   gathering (250 to 500 µs) measured no better: the answers wait longer (BENCHMARKS.md,
///   receipts). Under load the groups are larger than [`RECEIPT_GROUP`] anyway (what queues
///   while the writer works goes with the next group; the signing task also signs together
///   the groups that reach it at once).
/// - **The receipts' task** ([`AuditLog::write_receipts_on_runtime`], the server's case) ends
///   a group once [`RECEIPT_GROUP`] receipts wait or no other call is expected (and, given
///   the runtime's park hooks, once a worker is about to wait for work or the group is a
///   fair share of the calls in flight); this is only its limit, rounded up to the runtime
///   timer's millisecond, for a call under way that is much slower than the others, or for
///   a runtime busy with calls that bring no receipt.
pub const RECEIPT_LINGER: Duration = Duration::from_micros(100);
/// A receipts' gathering ends once this many receipts wait.
pub(super) const RECEIPT_GROUP: usize = 32;

/// What a caller of [`AuditLog::enqueue`] waits for.
pub(super) enum Want {
    /// Nothing: the event reaches disk with the next group.
    Nothing,
    /// An answer's record: journaled, or else written by the writer, before the answer leaves.
    Answer,
    /// A thread blocked until the event is fsync'd.
    Blocking(std::sync::mpsc::Sender<()>),
    /// An answer that carries a receipt: it waits for the writer, which alone knows the
    /// record's place in the chain that the receipt states (and, if it said so, the call
    /// is no longer expected).
    Receipt(crate::receipt::Prepared, Option<ReceiptExpected>),
}

/// Whom the writer tells that an event is on disk.
pub(super) enum Waiter {
    /// A thread blocked in [`AuditLog::append_durable`].
    Blocking(std::sync::mpsc::Sender<()>),
    /// A task awaiting a [`Durable`]: told `true` once the event is on disk, `false` if the
    /// group it was in failed to reach disk (the writer keeps retrying the group, but the
    /// answer waiting for it is not held up).
    Async(tokio::sync::oneshot::Sender<bool>),
    /// A task awaiting a receipt: sent it once the record is written, or `None` if the
    /// group failed to reach the file.
    Receipt(crate::receipt::Prepared, crate::receipt::Delivery),
}

impl Waiter {
    pub(super) fn done(self) {
        match self {
            Self::Blocking(s) => {
                let _ = s.send(());
            }
            Self::Async(s) => {
                let _ = s.send(true);
            }
            // Receipts are made and sent by the writer (`writer::send_receipts`).
            Self::Receipt(_, s) => {
                let _ = s.send(None);
            }
        }
    }
}

/// An answer's record on its way to disk: [`Durable::wait`] returns once a crash can no
/// longer lose it: at once when the event is in the journal, else once the writer has written
/// it to the file (or fails if its group failed, or the writer stops first).
#[must_use = "a durable append is only durable once waited for"]
pub struct Durable(DurableState);

enum DurableState {
    Journaled,
    Writing(tokio::sync::oneshot::Receiver<bool>),
    Receipt(tokio::sync::oneshot::Receiver<Option<Vec<u8>>>),
}

impl Durable {
    /// Waits until the event survives a crash of the process: [`AuditError::Unwritable`] if
    /// its group failed to reach disk (the writer retries it; the record may still land),
    /// [`AuditError::Stopped`] if the writer stopped first.
    pub async fn wait(self) -> Result<(), AuditError> {
        self.wait_for_receipt().await.map(drop)
    }

    /// [`Durable::wait`], returning the receipt when one was asked for
    /// ([`AuditLog::append_predict_with_receipt`]).
    pub async fn wait_for_receipt(self) -> Result<Option<Vec<u8>>, AuditError> {
        match self.0 {
            DurableState::Journaled => Ok(None),
            DurableState::Writing(rx) => match rx.await {
                Ok(true) => Ok(None),
                Ok(false) => Err(AuditError::Unwritable),
                Err(_) => Err(AuditError::Stopped),
            },
            DurableState::Receipt(rx) => match rx.await {
                Ok(Some(receipt)) => Ok(Some(receipt)),
                Ok(None) => Err(AuditError::Unwritable),
                Err(_) => Err(AuditError::Stopped),
            },
        }
    }

    /// Whether the event is already safe (journaled): waiting costs nothing.
    pub fn is_journaled(&self) -> bool {
        matches!(self.0, DurableState::Journaled)
    }
}

pub(super) struct Queue {
    pub(super) pending: Mutex<Pending>,
    /// Signalled when an event lands in an empty queue, and on close.
    pub(super) ready: std::sync::Condvar,
    /// Calls that will carry a receipt and have not queued their record yet
    /// ([`AuditLog::expect_receipt`]): while there are none, gathering a receipts' group
    /// waits for nobody, and the writer does not linger.
    pub(super) expected_receipts: std::sync::atomic::AtomicUsize,
    /// Wakes the receipts' task, once [`AuditLog::write_receipts_on_runtime`] started it:
    /// from then on, receipts wake it rather than the writer thread.
    pub(super) receipt_task: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// How busy the runtime is, when the receipts' task was given its park hooks: a group
    /// is then held while the runtime has other calls to run ([`Load::may_sign`]).
    pub(super) load: std::sync::OnceLock<Load>,
}

/// The recent calls with and without receipts ([`AuditLog::expect_receipt`],
/// [`AuditLog::note_call_without_receipt`]), halved every [`CallMix::WINDOW`] calls so that
/// the share follows the load.
#[derive(Default)]
pub(super) struct CallMix {
    receipts: AtomicU32,
    plain: AtomicU32,
}

impl CallMix {
    /// About this many recent calls are counted.
    const WINDOW: u32 = 4096;

    pub(super) fn note(&self, receipt: bool) {
        let (this, other) = if receipt {
            (&self.receipts, &self.plain)
        } else {
            (&self.plain, &self.receipts)
        };
        let n = this.fetch_add(1, Ordering::Relaxed) + 1;
        if n + other.load(Ordering::Relaxed) >= Self::WINDOW {
            // Racy by design: a count added meanwhile may be halved or lost; the share is
            // an estimate.
            this.store(n / 2, Ordering::Relaxed);
            other.store(other.load(Ordering::Relaxed) / 2, Ordering::Relaxed);
        }
    }

    /// `calls` scaled by the share of recent calls that carried receipts (all of them
    /// before any call was counted).
    pub(super) fn receipts_among(&self, calls: usize) -> usize {
        let receipts = self.receipts.load(Ordering::Relaxed) as usize;
        let plain = self.plain.load(Ordering::Relaxed) as usize;
        if receipts + plain == 0 {
            calls
        } else {
            (calls * receipts).div_ceil(receipts + plain)
        }
    }
}

/// A call that will queue a record with a receipt ([`AuditLog::expect_receipt`]): counted
/// until the record is queued ([`AuditLog::append_predict_with_receipt`]) or the call ends
/// without one (drop).
#[must_use = "the writer waits for an expected receipt until it is queued or dropped"]
pub struct ReceiptExpected {
    queue: Option<Arc<Queue>>,
}

impl ReceiptExpected {
    /// Counts off this call as its record is queued (under the queue's lock): how many
    /// are still expected.
    fn arrived(mut self) -> usize {
        self.queue.take().map_or(usize::MAX, |q| {
            q.expected_receipts.fetch_sub(1, Ordering::AcqRel) - 1
        })
    }
}

impl Drop for ReceiptExpected {
    fn drop(&mut self) {
        // The call ends without a record: if it was the last one expected, a gathering
        // writer stops waiting for it (under the lock, so that the wake-up cannot fall
        // between its check and its wait). Only a group of receipts waits for calls
        // expected: with none queued, nobody is woken. (Woken, the receipts' task would
        // take a turn of its own for the records queued meanwhile, a `write(2)` and the
        // writer thread's wake-up for each call refused after it asked for a receipt.)
        if let Some(q) = self.queue.take()
            && q.expected_receipts.fetch_sub(1, Ordering::AcqRel) == 1
            && q.lock().waiting_receipts > 0
        {
            match q.receipt_task.get() {
                Some(task) => task.notify_one(),
                None => q.ready.notify_one(),
            }
        }
    }
}

impl std::fmt::Debug for ReceiptExpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptExpected")
    }
}

impl Queue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call with or without a receipt, where a gathering reads the share (given
    /// the runtime's park hooks).
    fn note_call(&self, receipt: bool) {
        if let Some(load) = self.load.get() {
            load.mix.note(receipt);
        }
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        // The receipts' task ends (the thread writes the rest).
        if let Some(task) = self.receipt_task.get() {
            task.notify_one();
        }
    }
}

impl AuditLog {
    /// Queues a Predict event, serialized here (see [`PredictEvent`]); it reaches disk with
    /// the next group fsync.
    pub fn append_predict(&self, event: &PredictEvent<'_>) {
        self.queue(|out| compact::write(out, event));
    }

    /// Queues a Predict event and returns what to await before the answer it records leaves
    /// the server: no answer is delivered whose record a crash could lose. The writer does
    /// not linger over a group that someone waits for.
    pub fn append_predict_durable(&self, event: &PredictEvent<'_>) -> Result<Durable, AuditError> {
        self.enqueue(|out| compact::write(out, event), Want::Answer)?
            .ok_or(AuditError::Stopped)
    }

    /// Says that a call will queue a record with a receipt: while such calls are under
    /// way, the writer gathers the receipts that are already queued a little longer (up to
    /// [`AuditConfig::receipt_linger`]), so that one signature covers them too; once none is, it signs at
    /// once. Pass the token to [`Self::append_predict_with_receipt`], or drop it.
    pub fn expect_receipt(&self) -> ReceiptExpected {
        self.queue.note_call(true);
        self.queue.expected_receipts.fetch_add(1, Ordering::AcqRel);
        ReceiptExpected {
            queue: Some(Arc::clone(&self.queue)),
        }
    }

    /// Says that a call carries no receipt: while most calls do not, a receipts' group is not
    /// held for the calls in flight ([`Self::write_receipts_on_runtime`]).
    pub fn note_call_without_receipt(&self) {
        self.queue.note_call(false);
    }

    /// Queues a Predict event whose answer carries a receipt: what it returns gives the
    /// receipt once the writer has chained and written the record (the receipt states the
    /// record's sequence number and chain hash, which only the writer knows). `expected`:
    /// the call's [`Self::expect_receipt`], if it said so.
    pub fn append_predict_with_receipt(
        &self,
        event: &PredictEvent<'_>,
        draft: crate::receipt::Draft<'_>,
        expected: Option<ReceiptExpected>,
    ) -> Result<Durable, AuditError> {
        // Encoded here, in the answer's task: the writer only adds the record's place.
        let prepared = draft.prepare();
        let (durable, take_turn) = self.enqueue_taking_turn(
            |out| compact::write(out, event),
            Want::Receipt(prepared, expected),
        )?;
        let durable = durable.ok_or(AuditError::Stopped)?;
        // A group of this receipt alone, complete: written and signed here, on the answer's
        // own task, rather than by the receipts' task, woken and then waking the answer (at
        // low concurrency those two hand-offs were most of a receipt's latency).
        if take_turn {
            // Wake the task if the turn was not to be had here, or if receipts queued
            // meanwhile (it may be waiting for the lock this turn held).
            let wake = !super::receipt_task::receipts_turn(&self.writer, &self.queue)
                || self.queue.lock().waiting_receipts > 0;
            if wake && let Some(task) = self.queue.receipt_task.get() {
                task.notify_one();
            }
        }
        Ok(durable)
    }

    /// Queues an event; it reaches disk with the next group fsync.
    pub fn append(&self, event: Event) {
        if let Some(e) = PredictEvent::of(&event) {
            self.queue(|out| compact::write(out, &e));
            return;
        }
        match event_json(&event) {
            Ok(json) => self.queue(|out| out.extend_from_slice(&json)),
            Err(e) => tracing::error!(error = %e, "an audit event was lost"),
        }
    }

    fn queue(&self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.enqueue(write, Want::Nothing).is_err() {
            tracing::error!("audit writer stopped; an audit event was lost");
        }
    }

    /// Appends an event and waits until it is on disk. Refused at once while the log is
    /// not writable (an event queued just before a failure waits for the retry).
    pub fn append_durable(&self, event: Event) -> Result<(), AuditError> {
        if !self.is_writable() {
            return Err(AuditError::Unwritable);
        }
        let json = event_json(&event)?;
        let (done, wait) = std::sync::mpsc::channel();
        self.enqueue(|out| out.extend_from_slice(&json), Want::Blocking(done))?;
        wait.recv().map_err(|_| AuditError::Stopped)
    }

    /// Writes one event's JSON onto the queue (under its lock, so that the queue's order is
    /// the order of the appends) and into the journal, and wakes the writer if the queue was
    /// empty. `write` only appends bytes already known to be a whole event: it cannot fail
    /// half-way. For [`Want::Answer`] it returns what the answer awaits.
    fn enqueue(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        want: Want,
    ) -> Result<Option<Durable>, AuditError> {
        self.enqueue_taking_turn(write, want)
            .map(|(durable, _)| durable)
    }

    /// [`Self::enqueue`], and whether the caller takes the receipts' turn itself: true only
    /// for a receipt alone in the queue with no other call expected to bring one (its group
    /// is complete, and no gathering is under way), while the receipts' task runs.
    fn enqueue_taking_turn(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        want: Want,
    ) -> Result<(Option<Durable>, bool), AuditError> {
        let mut guard = self.queue.lock();
        let pending = &mut *guard;
        if pending.closed {
            return Err(AuditError::Stopped);
        }
        let start = pending.bytes.len();
        write(&mut pending.bytes);
        let end = pending.bytes.len();
        pending.q += 1;
        let q = pending.q;
        let journaled = match pending.journal.as_mut() {
            Some(j) => {
                let at = j.append(q, &pending.bytes[start..end]);
                if at.is_none() {
                    pending.unjournaled += 1;
                    if pending.unjournaled == 1 {
                        tracing::warn!(
                            "audit journal full: answers wait for the writer until it catches up"
                        );
                    }
                }
                at
            }
            None => None,
        };
        // How many receipts are still expected once this one is queued (`None`: not said).
        let mut still_expected = None;
        let (waiter, durable) = match want {
            Want::Nothing => (None, None),
            Want::Answer if journaled.is_some() => (None, Some(Durable(DurableState::Journaled))),
            Want::Answer => {
                let (done, wait) = tokio::sync::oneshot::channel();
                (
                    Some(Waiter::Async(done)),
                    Some(Durable(DurableState::Writing(wait))),
                )
            }
            Want::Blocking(done) => (Some(Waiter::Blocking(done)), None),
            Want::Receipt(draft, expected) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                still_expected = expected.map(ReceiptExpected::arrived);
                (
                    Some(Waiter::Receipt(draft, done)),
                    Some(Durable(DurableState::Receipt(wait))),
                )
            }
        };
        let waited = waiter.is_some();
        let receipt = matches!(waiter, Some(Waiter::Receipt(..)));
        pending.waiting += usize::from(waited);
        pending.waiting_receipts += usize::from(receipt);
        pending.events.push(Queued {
            end,
            waiter,
            q,
            journaled,
        });
        // (Not while the runtime is busy with other calls: the receipts' task gathers it with
        // theirs, see `Load::may_sign`.)
        let lone = receipt
            && pending.waiting == 1
            && pending.waiting_receipts == 1
            && still_expected == Some(0)
            && self.queue.load.get().is_none_or(|l| l.may_sign(1));
        let (wake_thread, wake_task, take_turn) = match self.queue.receipt_task.get() {
            // The first event wakes the writer; so does the first that someone waits for (it
            // ends a gathering).
            // (The first answer that waits without a receipt also ends a receipts' gathering,
            // as does the last receipt expected.)
            None => (
                pending.events.len() == 1
                    || (waited && pending.waiting == 1)
                    || (waited && !receipt && pending.waiting - pending.waiting_receipts == 1)
                    || (receipt && pending.waiting_receipts == RECEIPT_GROUP)
                    || still_expected == Some(0),
                None,
                false,
            ),
            // Receipts are the task's: the first of a group starts its gathering, which ends
            // once the group is full or the last receipt expected is queued. Other events
            // wake the thread as above. A lone receipt wakes nobody: its caller takes the turn
            // (see `append_predict_with_receipt`).
            Some(task) => (
                !receipt
                    && (pending.events.len() - pending.waiting_receipts == 1
                        || (waited && pending.waiting - pending.waiting_receipts == 1)),
                (receipt
                    && !lone
                    && (pending.waiting_receipts == 1
                        || pending.waiting_receipts == RECEIPT_GROUP
                        || still_expected == Some(0)))
                .then_some(task),
                lone,
            ),
        };
        drop(guard);
        if wake_thread {
            self.queue.ready.notify_one();
        }
        if let Some(task) = wake_task {
            task.notify_one();
        }
        Ok((durable, take_turn))
    }
}
