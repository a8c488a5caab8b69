//! The receipts' task: on the server's tokio runtime, it writes the records that answers
//! with receipts wait for and signs their group where it runs (see [`super::writer`] for how
//! it takes turns with the writer thread).

use super::*;
use std::sync::atomic::Ordering;

use crate::receipt::Delivery;

/// The receipts of one group: each statement is finished as its record is chained; once
/// the group is written, all are signed at once, under one signature over their Merkle tree.
#[derive(Default)]
pub(super) struct Receipts {
    statements: Vec<Vec<u8>>,
    waiting: Vec<(std::sync::Arc<crate::receipt::ReceiptSigner>, Delivery)>,
}

/// Statements to sign under one signature, and where each receipt goes.
pub(super) struct Signing {
    signer: std::sync::Arc<crate::receipt::ReceiptSigner>,
    statements: Vec<Vec<u8>>,
    deliveries: Vec<Delivery>,
}

impl Receipts {
    /// The record of `draft`'s call was just pushed: `st` holds its seq, hash and time.
    pub(super) fn add(&mut self, st: &State, prepared: crate::receipt::Prepared, done: Delivery) {
        let (statement, signer) = prepared.finish(st.seq, &st.head_raw, st.last_ts_ms);
        self.statements.push(statement);
        self.waiting.push((signer, done));
    }

    /// The group's receipts to sign, once their records are `written`; else each waiter is
    /// told there is none (the answer is withheld, as an unwritten record's is).
    pub(super) fn take(&mut self, written: bool) -> Vec<Signing> {
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
pub(super) fn deliver(receipts: Vec<Signing>, here: bool) {
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
    ///
    /// `idle`: the park hooks of this runtime ([`IdleWorkers::install`]). With them, a group
    /// is also held while the runtime is busy with other calls that may bring receipts (it
    /// is then signed once a worker is about to wait for work: [`Load::may_sign`]); without
    /// them, it is signed as soon as no call is expected.
    pub fn write_receipts_on_runtime(&self, idle: Option<&Arc<IdleWorkers>>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let notify = Arc::new(tokio::sync::Notify::new());
        if self.queue.receipt_task.set(Arc::clone(&notify)).is_err() {
            return;
        }
        if let Some(idle) = idle {
            idle.register(&notify);
            let _ = self.queue.load.set(Load {
                idle: Arc::clone(idle),
                // This task is about to be one of them.
                base: std::sync::atomic::AtomicUsize::new(runtime.metrics().num_alive_tasks() + 1),
                connections: std::sync::OnceLock::new(),
                runtime: runtime.clone(),
                mix: CallMix::default(),
            });
        }
        let linger = lock_writer(&self.writer).config.receipt_linger;
        // Weak: the task ends with the log.
        let (queue, shared) = (Arc::downgrade(&self.queue), Arc::downgrade(&self.writer));
        runtime.spawn(async move {
            loop {
                notify.notified().await;
                // One timer for the whole gathering, however often it is woken.
                let linger_over = tokio::time::sleep(linger);
                let mut linger_over = std::pin::pin!(linger_over);
                // Begun before the first look: a worker that parks after it counts.
                let Some(q) = queue.upgrade() else {
                    return;
                };
                let mut gathering = q.load.get().map(|l| l.idle.gathering());
                drop(q);
                loop {
                    let Some(queue) = queue.upgrade() else {
                        return;
                    };
                    // Before each look: a worker that parks during it wakes this task.
                    if let Some(g) = gathering.as_mut() {
                        g.wake_on_parks(true);
                    }
                    match gathered(&queue, gathering.as_ref()) {
                        Gathered::Closed => return,
                        Gathered::Ready => break,
                        Gathered::NotYet { for_calls } => {
                            if let Some(g) = gathering.as_mut().filter(|_| for_calls) {
                                g.wake_on_parks(false);
                            }
                        }
                    }
                    drop(queue);
                    tokio::select! {
                        biased;
                        () = notify.notified() => {}
                        () = linger_over.as_mut() => break,
                    }
                }
                drop(gathering);
                let (Some(queue), Some(shared)) = (queue.upgrade(), shared.upgrade()) else {
                    return;
                };
                // The thread holds the lock only for a turn of its own (not over an fsync), an
                // answer only for the turn it takes itself: try again once the other tasks
                // here have run, and once the turn is a long one (a rotation's fsync,
                // retention), after a millisecond or when an answer's turn ends with
                // receipts still queued.
                let mut tries = 0u32;
                while !receipts_turn(&shared, &queue) {
                    tries += 1;
                    if tries < 64 {
                        tokio::task::yield_now().await;
                    } else {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(1), notify.notified()).await;
                    }
                }
            }
        });
    }

    /// The server is up (every task of its own spawned, [`Self::write_receipts_on_runtime`]
    /// given the runtime's park hooks): the tasks alive now, beyond one for each connection
    /// it holds open (`connections` counts them: the server's `tls::OpenConnections`), are
    /// the server's own, and so are the connections' tasks from now on. Neither is a
    /// call in flight, for which a receipts' group is held ([`Load::may_sign`]). Without
    /// this, the tasks the server spawned after its receipts' task, and one per connection
    /// open, counted as calls: at concurrency 1, with one connection, about 7, so that no
    /// receipt was signed by its own call. From then on, the server's own tasks are also
    /// taken to be fewer whenever fewer are alive ([`Load::calls_in_flight`]).
    pub fn receipts_serving(&self, connections: impl Fn() -> usize + Send + Sync + 'static) {
        let Some(load) = self.queue.load.get() else {
            return;
        };
        let open = connections();
        let _ = load.connections.set(Box::new(connections));
        let own = load
            .runtime
            .metrics()
            .num_alive_tasks()
            .saturating_sub(open);
        load.base.store(own, Ordering::Release);
    }
}

/// Where a receipts' gathering stands.
enum Gathered {
    /// The log is closing: the thread writes the rest.
    Closed,
    /// Write it now.
    Ready,
    /// Wait for more: `for_calls`, for calls inside the pipeline that will bring receipts
    /// (their arrival, or their end, wakes the task); else for the runtime to have nothing
    /// else to do (a worker about to park wakes it).
    NotYet { for_calls: bool },
}

/// Whether the group queued now is written and signed: at once if it is full, if an answer
/// without a receipt waits too, or if no other call that will carry a receipt is under way
/// and the runtime has nothing else to do (a worker parked since `gathering` began, or
/// [`Load::may_sign`]).
fn gathered(queue: &Queue, gathering: Option<&idle::Gathering>) -> Gathered {
    let p = queue.lock();
    if p.closed {
        return Gathered::Closed;
    }
    if p.waiting_receipts == 0
        || p.waiting_receipts >= RECEIPT_GROUP
        || p.waiting > p.waiting_receipts
    {
        return Gathered::Ready;
    }
    if queue.expected_receipts.load(Ordering::Acquire) > 0 {
        return Gathered::NotYet { for_calls: true };
    }
    if queue.load.get().is_none_or(|l| {
        l.may_sign(p.waiting_receipts) || gathering.is_some_and(idle::Gathering::a_worker_parked)
    }) {
        Gathered::Ready
    } else {
        Gathered::NotYet { for_calls: false }
    }
}

/// A receipts' group is held while it is smaller than one in this many of the calls in
/// flight (and the runtime is busy: [`Load::may_sign`]). At 1, a group is held until every
/// call in flight that may bring a receipt has brought it, or a worker runs out of work; a
/// lone call's receipt is never held. With the server on a core of its own, holding more
/// gained at concurrency 8 (BENCHMARKS.md, "Receipts", sessions 22 and 24): at 1/8 a receipt
/// was mostly signed alone, by its own call, the moment a second one would have joined it,
/// and a group is better ended by the worker running out of work. Session 22 chose 1/2 while
/// the estimate of the calls in flight also counted the server's own tasks and its
/// connections (about 7 more at one connection); with those told apart, 1/2 lost 0.08–0.09
/// of plain throughput at concurrency 8 and 1 gained 0.07 over the rule before (session
/// 24). With the client on the same two vCPUs, where workers park all the time, the share
/// made no difference.
pub(super) const HOLD_SHARE: usize = 1;

/// How busy the runtime is, as the receipts' gathering sees it (given its park hooks).
pub(super) struct Load {
    idle: Arc<IdleWorkers>,
    runtime: tokio::runtime::Handle,
    /// The server's own tasks: those alive when the receipts' task started (itself
    /// included), until the server says which are once it is up
    /// ([`AuditLog::receipts_serving`]).
    base: std::sync::atomic::AtomicUsize,
    /// How many connections the server holds open (a task each), once it said so.
    connections: std::sync::OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
    /// What share of the recent calls carried receipts.
    pub(super) mix: CallMix,
}

impl Load {
    /// The calls in flight that may bring receipts, estimated as the runtime's tasks beyond
    /// the server's own and its connections' ([`AuditLog::receipts_serving`]), times the
    /// share of recent calls that carried receipts. The HTTP/2 server spawns a task per call
    /// as its headers arrive, so the calls on their way to the handler count too (as do TLS
    /// handshakes under way, and the server's occasional short tasks). Whether a call brings
    /// a receipt is only known from the handler on ([`AuditLog::expect_receipt`]), too late
    /// to gather it.
    fn calls_in_flight(&self) -> usize {
        let tasks = self.runtime.metrics().num_alive_tasks();
        let beyond = match self.connections.get() {
            None => tasks.saturating_sub(self.base.load(Ordering::Acquire)),
            Some(connections) => {
                let tasks = tasks.saturating_sub(connections());
                // Every look is made for a call in flight (one that queues its receipt, or
                // those of the group): at least one of these tasks is a call. Fewer than
                // that beyond the server's own means some of its own have ended since it
                // said so (a start's short tasks): they no longer count. (An HTTP/1 call,
                // on the embeddings port, runs in its connection's task: looks made for
                // such calls alone lower the base by one at most, once.)
                let base = self
                    .base
                    .fetch_min(tasks.saturating_sub(1), Ordering::AcqRel)
                    .min(tasks.saturating_sub(1));
                tasks - base
            }
        };
        self.mix.receipts_among(beyond)
    }

    /// Whether a group of `receipts`, with no other receipt expected, is signed now rather
    /// than held for the calls on their way: when a worker waits for work (holding would
    /// leave it idle), or when the group is already a fair share of the calls in flight
    /// ([`HOLD_SHARE`]: at low concurrency nothing is held).
    pub(super) fn may_sign(&self, receipts: usize) -> bool {
        self.idle.any_parked() || HOLD_SHARE * receipts >= self.calls_in_flight()
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
