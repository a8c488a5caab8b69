//! Triton's per-model, per-version inference statistics (`ModelStatistics`): cumulative counts
//! and nanoseconds for success, failure, queue, compute input, compute infer and compute
//! output, the inference and execution counts, and the same per batch size.
//!
//! What is measured where:
//!
//! - **success**, **fail**: a request's whole time in the pipeline, from the front door handing
//!   it over to the reply (recorded by the pipeline, once per request, for requests that
//!   named this model and version and were authenticated);
//! - **queue**: from the request entering the model's batch queue to its batch starting;
//! - **compute input**: gathering the batch's rows into one input buffer;
//! - **compute infer**: the forward pass (on a GPU, with its host-device copies: the engine
//!   makes them inside the pass);
//! - **compute output**: splitting the batch's outputs into each request's rows.
//!
//! As in Triton, every request of a batch is charged its batch's compute durations, and the
//! per-request queue and compute figures are recorded only for successful requests, so
//! `success.count == queue.count == compute_*.count`. `execution_count` and the batch
//! statistics count forward passes (one per batch).
//!
//! The request path costs a few relaxed atomic adds on this thread's shard; nothing locks.
//! The batch statistics are written by the model's one batch worker: sizes up to
//! [`DENSE_BATCH_SIZES`] in atomics, larger (rare, and far costlier than a lock) batches in
//! a map behind a mutex that only that worker and readers take.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{SHARDS, shard};

/// Batch sizes whose statistics live in atomics (1 through this).
pub const DENSE_BATCH_SIZES: usize = 64;

/// A count and a cumulative duration (Triton's `StatisticDuration`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDuration {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

/// One batch size's executions (Triton's `InferBatchStatistics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSizeStats {
    /// Rows in the batch.
    pub batch_size: u64,
    /// Preparing the input.
    pub compute_input: StatDuration,
    /// The forward pass.
    pub compute_infer: StatDuration,
    /// Splitting the output.
    pub compute_output: StatDuration,
}

/// The engine's timing of one request (its share of one batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineTimes {
    /// Waiting in the batch queue.
    pub queue: Duration,
    /// Gathering the batch's input.
    pub compute_input: Duration,
    /// The forward pass.
    pub compute_infer: Duration,
    /// Splitting the batch's output.
    pub compute_output: Duration,
}

/// A consistent-enough copy of one model version's statistics (each counter is read once;
/// requests finishing during the read may be counted in some fields and not yet in others).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Milliseconds since the epoch of the last request that finished (0: none yet).
    pub last_inference_ms: u64,
    /// Rows of successful requests.
    pub inference_count: u64,
    /// Successful forward passes.
    pub execution_count: u64,
    /// Successful requests.
    pub success: StatDuration,
    /// Failed requests.
    pub fail: StatDuration,
    /// Queue time of successful requests.
    pub queue: StatDuration,
    /// Input preparation charged to successful requests.
    pub compute_input: StatDuration,
    /// Forward passes charged to successful requests.
    pub compute_infer: StatDuration,
    /// Output extraction charged to successful requests.
    pub compute_output: StatDuration,
    /// Per batch size, ascending, only sizes that ran.
    pub batches: Vec<BatchSizeStats>,
}

/// One model version's statistics. Shared by the pipeline (per request) and the batch
/// worker (per execution).
#[derive(Debug)]
pub struct InferStats {
    shards: [StatsShard; SHARDS],
    last_inference_ms: AtomicU64,
    executions: AtomicU64,
    /// `[count, input ns, infer ns, output ns]` for batch sizes 1..=DENSE_BATCH_SIZES.
    dense: Box<[[AtomicU64; 4]]>,
    /// The same for larger batches.
    large: Mutex<BTreeMap<u64, [u64; 4]>>,
}

/// One shard of the per-request counters (on its own cache lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct StatsShard {
    inferences: AtomicU64,
    success: Pair,
    fail: Pair,
    queue: Pair,
    compute_input: Pair,
    compute_infer: Pair,
    compute_output: Pair,
}

#[derive(Debug, Default)]
struct Pair {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Pair {
    fn add(&self, count: u64, d: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for InferStats {
    fn default() -> Self {
        Self {
            shards: Default::default(),
            last_inference_ms: AtomicU64::new(0),
            executions: AtomicU64::new(0),
            dense: (0..DENSE_BATCH_SIZES)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            large: Mutex::new(BTreeMap::new()),
        }
    }
}

impl InferStats {
    /// Records a successful request of `rows` rows that spent `total` in the pipeline.
    pub fn record_success(&self, total: Duration, rows: u64, engine: &EngineTimes) {
        let s = &self.shards[shard()];
        s.inferences.fetch_add(rows, Ordering::Relaxed);
        s.success.add(1, total);
        s.queue.add(1, engine.queue);
        s.compute_input.add(1, engine.compute_input);
        s.compute_infer.add(1, engine.compute_infer);
        s.compute_output.add(1, engine.compute_output);
        self.last_inference_ms
            .fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Records a failed request that spent `total` in the pipeline.
    pub fn record_failure(&self, total: Duration) {
        self.shards[shard()].fail.add(1, total);
        self.last_inference_ms
            .fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Records one successful forward pass over `batch_size` rows (the batch worker).
    pub fn record_execution(
        &self,
        batch_size: usize,
        input: Duration,
        infer: Duration,
        output: Duration,
    ) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        let add = [1, nanos(input), nanos(infer), nanos(output)];
        match batch_size.checked_sub(1).and_then(|i| self.dense.get(i)) {
            Some(entry) => {
                for (slot, v) in entry.iter().zip(add) {
                    slot.fetch_add(v, Ordering::Relaxed);
                }
            }
            None => {
                let mut large = self.large.lock().unwrap_or_else(|p| p.into_inner());
                let entry = large.entry(batch_size as u64).or_default();
                for (slot, v) in entry.iter_mut().zip(add) {
                    *slot = slot.saturating_add(v);
                }
            }
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |pick: fn(&StatsShard) -> &Pair| StatDuration {
            count: self
                .shards
                .iter()
                .map(|s| pick(s).count.load(Ordering::Relaxed))
                .sum(),
            ns: self
                .shards
                .iter()
                .map(|s| pick(s).ns.load(Ordering::Relaxed))
                .sum(),
        };
        let batch = |batch_size: u64, [count, input, infer, output]: [u64; 4]| BatchSizeStats {
            batch_size,
            compute_input: StatDuration { count, ns: input },
            compute_infer: StatDuration { count, ns: infer },
            compute_output: StatDuration { count, ns: output },
        };
        let mut batches: Vec<BatchSizeStats> = self
            .dense
            .iter()
            .zip(1u64..)
            .map(|(entry, size)| (size, entry.each_ref().map(|a| a.load(Ordering::Relaxed))))
            .filter(|(_, values)| values[0] > 0)
            .map(|(size, values)| batch(size, values))
            .collect();
        {
            let large = self.large.lock().unwrap_or_else(|p| p.into_inner());
            batches.extend(large.iter().map(|(&size, &values)| batch(size, values)));
        }
        StatsSnapshot {
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self
                .shards
                .iter()
                .map(|s| s.inferences.load(Ordering::Relaxed))
                .sum(),
            execution_count: self.executions.load(Ordering::Relaxed),
            success: sum(|s| &s.success),
            fail: sum(|s| &s.fail),
            queue: sum(|s| &s.queue),
            compute_input: sum(|s| &s.compute_input),
            compute_infer: sum(|s| &s.compute_infer),
            compute_output: sum(|s| &s.compute_output),
            batches,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_and_executions_add_up_across_threads() {
        let stats = std::sync::Arc::new(InferStats::default());
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
        let times = EngineTimes {
            queue: ms(1),
            compute_input: ms(2),
            compute_infer: ms(3),
            compute_output: ms(4),
        };
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let stats = std::sync::Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        stats.record_success(ms(10), 3, &times);
                    }
                    stats.record_failure(ms(5));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        stats.record_execution(1, ms(1), ms(2), ms(3));
        stats.record_execution(1, ms(1), ms(2), ms(3));
        stats.record_execution(DENSE_BATCH_SIZES, ms(1), ms(1), ms(1));
        stats.record_execution(1000, ms(7), ms(8), ms(9));
        let s = stats.snapshot();
        let d = |count, ms: u64| StatDuration {
            count,
            ns: ms * 1_000_000,
        };
        assert_eq!(s.success, d(600, 6000));
        assert_eq!(s.fail, d(6, 30));
        assert_eq!(s.queue, d(600, 600));
        assert_eq!(s.compute_input, d(600, 1200));
        assert_eq!(s.compute_infer, d(600, 1800));
        assert_eq!(s.compute_output, d(600, 2400));
        assert_eq!(s.inference_count, 1800);
        assert_eq!(s.execution_count, 4);
        assert!(s.last_inference_ms > 1_700_000_000_000);
        let sizes: Vec<u64> = s.batches.iter().map(|b| b.batch_size).collect();
        assert_eq!(sizes, [1, DENSE_BATCH_SIZES as u64, 1000]);
        assert_eq!(s.batches[0].compute_infer, d(2, 4));
        assert_eq!(s.batches[0].compute_output, d(2, 6));
        assert_eq!(s.batches[2].compute_input, d(1, 7));
    }
}
