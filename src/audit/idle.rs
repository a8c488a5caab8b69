//! When the server's runtime is about to run out of work: the receipts' task holds a group
//! of receipts open while the runtime is busy with other calls, and signs it as soon as a
//! worker would otherwise wait for work (see [`super::receipt_task`]).
//!
//! One signature covers a whole group, so larger groups cost less per answer; but an answer
//! held while nothing else runs is latency lost for nothing. A worker about to park is the
//! moment that holding stops paying: tokio tells it through the hooks that
//! [`IdleWorkers::install`] puts on the runtime's builder.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The runtime's workers that wait for work, told by its park hooks; and the receipts'
/// gatherings to end when one is about to.
#[derive(Default)]
pub struct IdleWorkers {
    /// Workers parked now (waiting for work).
    parked: AtomicUsize,
    /// Parks so far: a gathering ends once a worker parked since it began, even if that
    /// worker is back at work (it may have been unparked to run the receipts' task itself).
    parks: AtomicU64,
    /// Gatherings that wait for a worker to park: a worker about to park wakes the receipts'
    /// tasks only while there are any.
    gathering: AtomicUsize,
    /// The receipts' tasks to wake (one per audit log on the runtime; gone once its log is).
    tasks: Mutex<Vec<Weak<Notify>>>,
}

impl std::fmt::Debug for IdleWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWorkers")
            .field("parked", &self.parked.load(Ordering::Relaxed))
            .field("gathering", &self.gathering.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl IdleWorkers {
    /// Nothing parked, nothing gathering.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Puts the park hooks on a multi-thread runtime's builder: only a runtime built with
    /// them may be handed to [`super::AuditLog::write_receipts_on_runtime`] with this.
    pub fn install<'b>(
        self: &Arc<Self>,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        let (parking, unparked) = (Arc::clone(self), Arc::clone(self));
        builder
            .on_thread_park(move || parking.parking())
            .on_thread_unpark(move || unparked.unparked())
    }

    /// A worker is about to wait for work: gatherings under way end now.
    pub fn parking(&self) {
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.parks.fetch_add(1, Ordering::AcqRel);
        if self.gathering.load(Ordering::Acquire) > 0 {
            let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for task in tasks.iter().filter_map(Weak::upgrade) {
                task.notify_one();
            }
        }
    }

    /// A worker has work again.
    pub fn unparked(&self) {
        // Saturating, defensively: hooks called out of pair (one `IdleWorkers` installed on
        // two runtimes, or driven by hand) must not wrap the count.
        let _ = self
            .parked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// How many gatherings a worker about to park wakes now.
    #[cfg(test)]
    pub(super) fn gatherings_woken_on_parks(&self) -> usize {
        self.gathering.load(Ordering::Acquire)
    }

    /// Whether some worker waits for work now.
    pub(super) fn any_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire) > 0
    }

    /// The receipts' task to wake while it gathers.
    pub(super) fn register(&self, task: &Arc<Notify>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| t.strong_count() > 0);
        tasks.push(Arc::downgrade(task));
    }

    /// A gathering is under way until the guard drops: a worker about to park wakes the
    /// registered tasks while it [waits for one](Gathering::wake_on_parks).
    pub(super) fn gathering(self: &Arc<Self>) -> Gathering {
        Gathering {
            parks: self.parks.load(Ordering::Acquire),
            idle: Arc::clone(self),
            woken_on_parks: false,
        }
    }
}

/// See [`IdleWorkers::gathering`].
pub(super) struct Gathering {
    idle: Arc<IdleWorkers>,
    /// [`IdleWorkers::parks`] when it began.
    parks: u64,
    /// Whether it counts in [`IdleWorkers::gathering`].
    woken_on_parks: bool,
}

impl Gathering {
    /// Whether a worker parked since the gathering began (even if it is back at work: it may
    /// have been unparked to run the gathering task itself).
    pub(super) fn a_worker_parked(&self) -> bool {
        self.idle.parks.load(Ordering::Acquire) != self.parks
    }

    /// Whether a worker about to park wakes this gathering's task: only while a park could
    /// end it. While it waits for calls inside the pipeline, their arrival (or their end)
    /// wakes it instead: a worker that parks while they compute elsewhere (a large batch in
    /// the engine's threads) would otherwise wake it again and again for nothing. A park
    /// meanwhile still counts ([`Self::a_worker_parked`]).
    pub(super) fn wake_on_parks(&mut self, wake: bool) {
        if wake != self.woken_on_parks {
            self.woken_on_parks = wake;
            if wake {
                self.idle.gathering.fetch_add(1, Ordering::AcqRel);
            } else {
                self.idle.gathering.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        self.wake_on_parks(false);
    }
}
