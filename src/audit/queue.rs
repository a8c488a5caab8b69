//! The queue to the writer thread, and appending to it: each event is encoded by its caller,
//! copied onto the queue under one lock (and sealed into the journal under the same lock),
//! and whoever must know when it is safe (an answer, an admin event) gets what to wait for.

use super::*;

/// The records on their way to the writer, in the order they were chained: each a finished
/// line (see [`super::chain`]), back to back in one buffer. Appending is a copy under a lock:
/// no allocation per event, and nothing allocated on one thread is freed on another. The
/// writer swaps the whole buffer out once per group, so both buffers keep their capacity.
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    /// The records in `bytes`, in order.
    pub(super) events: Vec<Queued>,
    /// How many of `events` have a waiter: while any does, the writer does not linger.
    pub(super) waiting: usize,
    /// No more events: the log is closing, or the writer is gone.
    pub(super) closed: bool,
    /// The last queue number given (see [`journal`]).
    pub(super) q: u64,
    /// Where each record is also written, sealed, as it is chained (`None`: no journal).
    pub(super) journal: Option<journal::Journal>,
    /// Records chained while the journal's ring was full, since the last warning.
    pub(super) unjournaled: u64,
    /// The queue number of the last record that the full ring could not take (0: none).
    /// Until the writer has written it, a later record's entry makes no answer safe: a
    /// replay stops where the journal misses a record.
    pub(super) gap_q: u64,
    /// The chain's head.
    pub(super) chain: Chain,
    /// Scratch space: one event's JSON before it is chained.
    json: Vec<u8>,
}

/// What the writer takes from the queue at once.
#[derive(Default)]
pub(super) struct Taken {
    pub(super) bytes: Vec<u8>,
    pub(super) events: Vec<Queued>,
}

/// One queued record.
pub(super) struct Queued {
    /// Where its line ends in [`Pending::bytes`].
    pub(super) end: usize,
    /// Whom to tell once it is on disk.
    pub(super) waiter: Option<Waiter>,
    /// Its queue number, and its sequence number in the chain.
    pub(super) q: u64,
    pub(super) seq: u64,
    /// Where the journal's next entry starts after it (`None`: not journaled).
    pub(super) journaled: Option<usize>,
    /// A checkpoint's chain hash: the checkpoint is published once it is on disk.
    pub(super) checkpoint: Option<String>,
}

impl Pending {
    pub(super) fn new(chain: Chain, journal: Option<journal::Journal>) -> Self {
        Self {
            bytes: Vec::new(),
            events: Vec::new(),
            waiting: 0,
            closed: false,
            q: 0,
            journal,
            unjournaled: 0,
            gap_q: 0,
            chain,
            json: Vec::with_capacity(1024),
        }
    }

    /// Chains [`Self::json`] as the next record and journals its line: returns where the
    /// line ends in [`Self::bytes`], and where the journal's next entry starts after it
    /// (`None`: the ring was full, or there is no journal).
    fn chain_json(&mut self, kind: Kind) -> (usize, Option<usize>) {
        let start = self.bytes.len();
        self.chain.push(&mut self.bytes, &self.json, kind);
        let end = self.bytes.len();
        self.q += 1;
        let journaled = match self.journal.as_mut() {
            Some(j) => {
                // The line without its newline.
                let at = j.append(self.q, &self.bytes[start..end - 1]);
                if at.is_none() {
                    self.gap_q = self.q;
                    self.unjournaled += 1;
                    if self.unjournaled == 1 {
                        tracing::warn!(
                            "audit journal full: answers wait for the writer until it catches up"
                        );
                    }
                }
                at
            }
            None => None,
        };
        (end, journaled)
    }

    /// Chains an event the writer makes itself (a retention record).
    pub(super) fn push_own(&mut self, event: &Event) {
        let kind = match event {
            Event::Checkpoint { .. } => Kind::Checkpoint,
            Event::Retention { .. } => Kind::Retention,
            _ => Kind::Sealed,
        };
        match event_json(event) {
            Ok(json) => {
                self.json = json;
                self.push_queued(kind, None);
            }
            Err(e) => tracing::error!(error = %e, "an audit event was lost"),
        }
    }

    /// Chains a checkpoint that signs the head.
    pub(super) fn push_checkpoint(&mut self) {
        self.json = self.chain.checkpoint_json();
        self.push_queued(Kind::Checkpoint, None);
    }

    /// Chains [`Self::json`] and queues it; a checkpoint follows when one is due.
    fn push_queued(&mut self, kind: Kind, waiter: Option<Waiter>) {
        let (end, journaled) = self.chain_json(kind);
        self.queued(end, journaled, kind, waiter);
    }

    fn queued(&mut self, end: usize, journaled: Option<usize>, kind: Kind, waiter: Option<Waiter>) {
        self.waiting += usize::from(waiter.is_some());
        self.events.push(Queued {
            end,
            waiter,
            q: self.q,
            seq: self.chain.seq,
            journaled,
            checkpoint: (kind == Kind::Checkpoint).then(|| self.chain.head.clone()),
        });
        if kind != Kind::Checkpoint && self.chain.checkpoint_due() {
            self.push_checkpoint();
        }
    }
}

/// What a caller of [`AuditLog::enqueue`] waits for.
pub(super) enum Want {
    /// Nothing: the event reaches disk with the next group.
    Nothing,
    /// An answer's record: journaled, or else written by the writer, before the answer leaves.
    Answer,
    /// A thread blocked until the event is fsync'd.
    Blocking(std::sync::mpsc::Sender<()>),
    /// An answer that carries a receipt: the receipt states the record's place in the chain,
    /// known once it is chained, and is signed once the record is safe (journaled, or else
    /// written by the writer).
    Receipt(Box<crate::receipt::Draft>),
}

/// Whom the writer tells that an event is on disk.
pub(super) enum Waiter {
    /// A thread blocked in [`AuditLog::append_durable`].
    Blocking(std::sync::mpsc::Sender<()>),
    /// A task awaiting a [`Durable`]: told `true` once the event is on disk, `false` if the
    /// group it was in failed to reach disk (the writer keeps retrying the group, but the
    /// answer waiting for it is not held up).
    Async(tokio::sync::oneshot::Sender<bool>),
    /// A task awaiting a receipt whose record the journal does not hold: its statement is
    /// signed once the record is written (see [`super::writer`]), or `None` is sent if the
    /// group failed to reach the file.
    Receipt(ReceiptWait),
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
            // Receipts are signed and sent by the writer's `Receipts`.
            Self::Receipt(r) => {
                let _ = r.done.send(None);
            }
        }
    }
}

/// A receipt that waits for the writer: its statement (finished: the record is chained),
/// who signs it, and where it goes.
pub(super) struct ReceiptWait {
    pub(super) statement: Vec<u8>,
    pub(super) signer: std::sync::Arc<crate::receipt::ReceiptSigner>,
    pub(super) done: crate::receipt::Delivery,
}

/// An answer's record on its way to disk: [`Durable::wait`] returns once a crash can no
/// longer lose it: at once when the event is in the journal, else once the writer has written
/// it to the file (or fails if its group failed, or the writer stops first).
#[must_use = "a durable append is only durable once waited for"]
pub struct Durable(DurableState);

enum DurableState {
    Journaled,
    Writing(tokio::sync::oneshot::Receiver<bool>),
    Receipt(tokio::sync::oneshot::Receiver<Option<crate::receipt::envelope::Unencoded>>),
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
                Ok(Some(receipt)) => Ok(Some(receipt.encode())),
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
    /// The queue number of the last record the writer has written to the file.
    pub(super) written_q: std::sync::atomic::AtomicU64,
    /// Signalled when an event lands in an empty queue, and on close.
    pub(super) ready: std::sync::Condvar,
}

impl Queue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
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

    /// Queues a Predict event whose answer carries a receipt: what it returns gives the
    /// receipt once the writer has chained and written the record (the receipt states the
    /// record's sequence number and chain hash, which only the writer knows).
    pub fn append_predict_with_receipt(
        &self,
        event: &PredictEvent<'_>,
        draft: crate::receipt::Draft,
    ) -> Result<Durable, AuditError> {
        self.enqueue(
            |out| compact::write(out, event),
            Want::Receipt(Box::new(draft)),
        )?
        .ok_or(AuditError::Stopped)
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

    /// Chains one event (its JSON, which `write` appends) onto the queue under its lock, so
    /// that the queue's order is the order of the appends and of the chain, journals it, and
    /// wakes the writer if the queue was empty. `write` only appends bytes already known to
    /// be a whole event: it cannot fail half-way. For [`Want::Answer`] and
    /// [`Want::Receipt`] it returns what the answer awaits.
    fn enqueue(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        want: Want,
    ) -> Result<Option<Durable>, AuditError> {
        let mut guard = self.queue.lock();
        let pending = &mut *guard;
        if pending.closed {
            return Err(AuditError::Stopped);
        }
        let was_empty = pending.events.is_empty();
        pending.json.clear();
        write(&mut pending.json);
        let (end, journaled) = pending.chain_json(Kind::Sealed);
        // The journal's entry makes the record safe only if every record before it that the
        // writer has not written yet is journaled too: a replay stops at a missing one.
        let safe =
            journaled.is_some() && pending.gap_q <= self.queue.written_q.load(Ordering::Acquire);
        // A receipt whose record is safe is signed at once, once the lock is released.
        let mut sign_now = None;
        let (waiter, durable) = match want {
            Want::Nothing => (None, None),
            Want::Answer if safe => (None, Some(Durable(DurableState::Journaled))),
            Want::Answer => {
                let (done, wait) = tokio::sync::oneshot::channel();
                (
                    Some(Waiter::Async(done)),
                    Some(Durable(DurableState::Writing(wait))),
                )
            }
            Want::Blocking(done) => (Some(Waiter::Blocking(done)), None),
            Want::Receipt(draft) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                let chain = &pending.chain;
                let waiter = if safe {
                    sign_now = Some((draft, done, chain.seq, chain.head.clone(), chain.last_ts_ms));
                    None
                } else {
                    Some(Waiter::Receipt(ReceiptWait {
                        statement: draft.statement_cbor(chain.seq, &chain.head, chain.last_ts_ms),
                        signer: std::sync::Arc::clone(&draft.signer),
                        done,
                    }))
                };
                (waiter, Some(Durable(DurableState::Receipt(wait))))
            }
        };
        let waited = waiter.is_some();
        pending.queued(end, journaled, Kind::Sealed, waiter);
        // The first event wakes the writer; so does the first that someone waits for (it
        // ends a gathering).
        let wake = was_empty || (waited && pending.waiting == 1);
        drop(guard);
        if wake {
            self.queue.ready.notify_one();
        }
        if let Some((draft, done, seq, head, ts_ms)) = sign_now {
            draft
                .signer
                .sign_one(draft.statement_cbor(seq, &head, ts_ms), done);
        }
        Ok(durable)
    }
}
