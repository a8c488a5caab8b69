//! The dynamic batcher: coalesces concurrent requests for one model into one forward pass.
//!
//! Each model has one worker thread. Requests wait in a bounded queue; when it is full the
//! caller gets [`EngineError::QueueFull`] at once, so memory never grows with load. The worker
//! takes the first waiting request, then keeps taking requests that are already queued (and,
//! if `max_wait` is non-zero, that arrive before `max_wait` has passed) until the batch holds
//! `max_batch` rows. A request that would overflow the batch starts the next one. With the
//! default `max_wait` of zero, batches form only from requests that queued while the previous
//! batch computed, so a lone request never waits.
//!
//! **Inline.** With `max_wait` zero, a request small enough for the fused CPU loop
//! ([`INLINE_MAX_MACS`]) that finds the queue empty and the model idle runs on its own
//! thread instead of waking the worker: the hand-over to a sleeping thread and back cost
//! about 50 µs a request on a 2-vCPU VM, many times the forward pass of a small model. It is
//! still a batch (of one request) for the metrics and statistics, with no time queued. Under
//! load the queue is rarely empty, and requests batch as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::error::EngineError;
use super::mlp::Mlp;
use super::screening::Screener;
use crate::metrics::ExecMetrics;
use crate::metrics::stats::InferStats;

/// Most multiply-adds (the request's rows and their screening copies) that a request may
/// run inline on its own thread (see the module's notes): about 30 µs of the fused loop on
/// this project's 2-vCPU VM, so that an async worker is never held long.
pub const INLINE_MAX_MACS: usize = 1 << 16;

/// Batching settings for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most rows in one forward pass. A single request larger than this runs alone.
    pub max_batch: usize,
    /// How long the worker waits for more requests once it holds one, in microseconds.
    pub max_wait_us: u64,
    /// Most requests waiting per model; past it, requests are refused.
    pub queue_capacity: usize,
    /// Text models: most tokens one batch gathers, and most padded tokens (texts × longest)
    /// in one forward pass.
    pub max_padded_tokens: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait_us: 0,
            queue_capacity: 1024,
            max_padded_tokens: super::text::DEFAULT_MAX_PADDED_TOKENS,
        }
    }
}

/// A batching setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchConfigError(String);

impl BatchConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), BatchConfigError> {
        if !(1..=1 << 20).contains(&self.max_batch) {
            return Err(BatchConfigError(format!(
                "max_batch must be 1..=1048576, got {}",
                self.max_batch
            )));
        }
        if self.max_wait_us > 1_000_000 {
            return Err(BatchConfigError(format!(
                "max_wait_us must be at most 1000000 (1 s), got {}",
                self.max_wait_us
            )));
        }
        if !(1..=1 << 24).contains(&self.max_padded_tokens) {
            return Err(BatchConfigError(format!(
                "max_padded_tokens must be 1..=16777216, got {}",
                self.max_padded_tokens
            )));
        }
        if !(1..=1 << 20).contains(&self.queue_capacity) {
            return Err(BatchConfigError(format!(
                "queue_capacity must be 1..=1048576, got {}",
                self.queue_capacity
            )));
        }
        Ok(())
    }
}

/// What one request gets back.
#[derive(Debug)]
pub struct BatchOutput {
    /// `rows × outputs` values, row-major.
    pub values: Vec<f32>,
    /// Time spent waiting in the queue.
    pub queue_time: Duration,
    /// Time of the forward pass that served this request (shared by its batch).
    pub compute_time: Duration,
    /// Time spent gathering its batch's input (shared by its batch).
    pub input_time: Duration,
    /// Time spent splitting its batch's output into each request's rows (shared).
    pub output_time: Duration,
    /// Rows in that forward pass (request rows, not counting screening copies).
    pub batch_rows: usize,
    /// Each row's adversarial-sensitivity score, when the model is screened.
    /// Inline up to four rows: a one-row request's score costs no allocation.
    pub sensitivity: Option<SmallVec<[f32; 4]>>,
    /// Tokens this request's texts were padded to in their forward passes (text models;
    /// 0 for rows).
    pub padded_tokens: usize,
}

struct Job {
    values: Vec<f32>,
    rows: usize,
    /// Screening normals drawn by the caller's thread (empty: the worker draws them).
    noise: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<BatchOutput, EngineError>>,
}

/// A request queued for a batch worker.
#[must_use = "a queued request's outputs arrive through outcome()"]
pub struct Pending<'a> {
    rx: oneshot::Receiver<Result<BatchOutput, EngineError>>,
    model: &'a str,
}

impl<'a> Pending<'a> {
    /// Waits for the outputs (SHUTTING_DOWN if the worker went away first).
    pub async fn outcome(self) -> Result<BatchOutput, EngineError> {
        self.rx.await.unwrap_or_else(|_| {
            Err(EngineError::ShuttingDown {
                model: self.model.to_string(),
            })
        })
    }

    /// A request queued for `model`'s worker, answered through `rx`.
    pub(crate) fn new(
        rx: oneshot::Receiver<Result<BatchOutput, EngineError>>,
        model: &'a str,
    ) -> Self {
        Self { rx, model }
    }
}

/// A handle to one model's batching worker. Dropping the last handle lets the worker finish
/// the requests already queued and exit.
pub struct Batcher {
    tx: Sender<Job>,
    /// Screening normals per request row that callers draw themselves (0: none).
    normals_per_row: usize,
    /// Most rows a request may have to run inline (0: never; see the module's notes).
    inline_rows: usize,
    shared: Arc<Shared>,
    config: BatchConfig,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// What the worker thread and inline requests share: the model, its metrics, and (behind a
/// lock that whoever runs a batch holds) the screener and the buffers.
struct Shared {
    model: Arc<Mlp>,
    model_id: String,
    exec: Arc<ExecMetrics>,
    stats: Arc<InferStats>,
    running: std::sync::Mutex<Running>,
}

/// What a batch runs with.
struct Running {
    screener: Option<Screener>,
    scratch: Scratch,
}

impl Batcher {
    /// Starts the worker thread for `model`.
    pub fn spawn(model: Arc<Mlp>, model_id: &str, config: BatchConfig) -> std::io::Result<Self> {
        Self::spawn_screened(model, model_id, config, None)
    }

    /// Starts the worker thread for `model`, screening every row with `screener` (its
    /// perturbed copies run in the same forward pass as the batch).
    pub fn spawn_screened(
        model: Arc<Mlp>,
        model_id: &str,
        config: BatchConfig,
        screener: Option<Screener>,
    ) -> std::io::Result<Self> {
        let normals_per_row = screener.as_ref().map_or(0, Screener::normals_per_row);
        let copies = screener.as_ref().map_or(0, Screener::copies);
        // Only a model on the fused CPU loop runs inline, and only when batches do not wait
        // for more requests (a `max_wait` asks for batching).
        let inline_rows = if config.max_wait_us == 0 {
            model.fused_cpu_rows_within(1 + copies, INLINE_MAX_MACS)
        } else {
            0
        };
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let shared = Arc::new(Shared {
            model,
            model_id: model_id.to_string(),
            exec: Arc::new(ExecMetrics::default()),
            stats: Arc::new(InferStats::default()),
            running: std::sync::Mutex::new(Running {
                screener,
                scratch: Scratch::default(),
            }),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name(format!("batch-{model_id}"))
            .spawn(move || worker_shared.run(config, &rx))?;
        Ok(Self {
            tx,
            normals_per_row,
            inline_rows,
            shared,
            config,
            worker: Some(worker),
        })
    }

    /// Queues `rows` rows for the next batch and waits for their outputs.
    pub async fn infer(&self, values: Vec<f32>, rows: usize) -> Result<BatchOutput, EngineError> {
        self.enqueue(values, rows)?.outcome().await
    }

    /// Queues `rows` rows for the next batch (refused at once if the queue is full); the
    /// returned [`Pending`] resolves to their outputs.
    pub fn enqueue(&self, values: Vec<f32>, rows: usize) -> Result<Pending<'_>, EngineError> {
        let (reply, rx) = oneshot::channel();
        // The request's thread draws its rows' screening noise, in parallel with other
        // requests, rather than the one batch worker drawing every row's in turn.
        let mut noise = Vec::new();
        if self.normals_per_row > 0 {
            noise.resize(rows * self.normals_per_row, 0.0);
            if !super::screening::draw_normals(&mut noise) {
                noise = Vec::new();
            }
        }
        let job = Job {
            values,
            rows,
            noise,
            enqueued: Instant::now(),
            reply,
        };
        let model = &self.shared.model_id;
        // Inline: nobody queued ahead, and no batch running (see the module's notes).
        if rows <= self.inline_rows
            && self.tx.is_empty()
            && let Ok(mut running) = self.shared.running.try_lock()
        {
            self.shared.run_batch(vec![job], &mut running);
            return Ok(Pending { rx, model });
        }
        match self.tx.try_send(job) {
            Ok(()) => Ok(Pending { rx, model }),
            Err(TrySendError::Full(_)) => Err(EngineError::QueueFull {
                model: model.clone(),
                capacity: self.config.queue_capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown {
                model: model.clone(),
            }),
        }
    }

    /// The batching settings.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// Executions and batch sizes so far.
    pub fn exec_metrics(&self) -> &Arc<ExecMetrics> {
        &self.shared.exec
    }

    /// This model's Triton statistics (the worker records executions; the pipeline records
    /// requests).
    pub fn stats(&self) -> &Arc<InferStats> {
        &self.shared.stats
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Disconnect the queue by swapping in a dead sender, then wait for the worker to
        // drain what is already queued.
        let (dead, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Buffers a worker reuses from batch to batch.
#[derive(Default)]
struct Scratch {
    /// The batch's rows, gathered.
    rows: Vec<f32>,
    /// The batch's screening normals, gathered.
    noise: Vec<f32>,
    /// Each request's share of the batch's output, split before any reply is sent.
    parts: Vec<Option<Part>>,
}

/// One request's outputs and sensitivity scores.
type Part = (Vec<f32>, Option<SmallVec<[f32; 4]>>);

/// One buffer of every job in `batch`, back to back: a lone job's own buffer as it is, else
/// `buf`, refilled (the worker's, reused from batch to batch).
fn gathered<'a>(
    batch: &'a [Job],
    buf: &'a mut Vec<f32>,
    field: impl Fn(&Job) -> &[f32],
) -> &'a [f32] {
    if let [only] = batch {
        return field(only);
    }
    buf.clear();
    buf.reserve(batch.iter().map(|j| field(j).len()).sum());
    for j in batch {
        buf.extend_from_slice(field(j));
    }
    buf
}

impl Shared {
    /// The worker thread: batches what is queued until the queue is disconnected.
    fn run(&self, config: BatchConfig, rx: &Receiver<Job>) {
        let max_wait = Duration::from_micros(config.max_wait_us);
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            };
            let deadline = Instant::now() + max_wait;
            let mut rows = first.rows;
            let mut batch = vec![first];
            while rows < config.max_batch {
                let next = match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if max_wait.is_zero() => break,
                    Err(TryRecvError::Empty) => match rx.recv_deadline(deadline) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                if rows + next.rows > config.max_batch {
                    carried = Some(next);
                    break;
                }
                rows += next.rows;
                batch.push(next);
            }
            // Held for the batch: an inline request waits for nothing, it queues instead.
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            self.run_batch(batch, &mut running);
        }
    }

    /// Runs one batch and sends each request its outputs.
    fn run_batch(&self, mut batch: Vec<Job>, running: &mut Running) {
        let Running { screener, scratch } = running;
        let screener = screener.as_mut();
        let (model, model_id) = (&*self.model, self.model_id.as_str());
        // Callers that gave up (deadline, disconnect) need no compute.
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let rows: usize = batch.iter().map(|j| j.rows).sum();
        let width = model.out_features();
        let input = gathered(&batch, &mut scratch.rows, |j| &j.values);
        let input_time = started.elapsed();
        let (result, scores) = match screener {
            None => (model.forward_rows(input, rows), None),
            Some(screener) if model.device().is_cuda() => {
                // On the GPU the copies are made on the device (kernels/sensitivity.cu).
                match model.forward_screened(input, rows, screener.sigmas(), screener.copies()) {
                    Ok((out, scores)) => (Ok(out), Some(scores)),
                    Err(e) => (Err(e), None),
                }
            }
            Some(screener) => {
                let copies = screener.copies();
                // On the fused CPU path the copies are drawn in the first layer's
                // pre-activation space (`PreactFactor`), still in one forward pass, from the
                // normals the callers drew (the screener draws them if any caller did not).
                let drawn = if batch.iter().all(|j| !j.noise.is_empty()) {
                    gathered(&batch, &mut scratch.noise, |j| &j.noise)
                } else {
                    &[]
                };
                match screener.forward_cpu(model, input, rows, drawn) {
                    Some(Ok((out, scores))) => (Ok(out), Some(scores)),
                    Some(Err(e)) => (Err(e), None),
                    None => {
                        // The request rows first, then every row's perturbed copies.
                        let mut all = input.to_vec();
                        screener.perturb_into(input, &mut all);
                        match model.forward_rows(&all, rows * (1 + copies)) {
                            Ok(mut out) => {
                                let scores = screener.scores(
                                    &out[..rows * width],
                                    &out[rows * width..],
                                    width,
                                );
                                out.truncate(rows * width);
                                (Ok(out), Some(scores))
                            }
                            Err(e) => (Err(e), None),
                        }
                    }
                }
            }
        };
        let compute_time = started.elapsed().saturating_sub(input_time);
        self.exec.record(rows);
        match result {
            Ok(out) => {
                // Split first, then reply, so that each reply carries the split's duration.
                let split_started = Instant::now();
                let mut offset = 0;
                let mut row_offset = 0;
                scratch.parts.clear();
                scratch.parts.extend(batch.iter().map(|j| {
                    let n = j.rows * width;
                    let values = out.get(offset..offset + n).map(<[f32]>::to_vec);
                    let sensitivity = scores
                        .as_ref()
                        .and_then(|s| s.get(row_offset..row_offset + j.rows))
                        .map(SmallVec::from_slice);
                    offset += n;
                    row_offset += j.rows;
                    values.map(|v| (v, sensitivity))
                }));
                let output_time = split_started.elapsed();
                self.stats
                    .record_execution(rows, input_time, compute_time, output_time);
                for (j, part) in batch.into_iter().zip(scratch.parts.drain(..)) {
                    let reply = match part {
                        Some((values, sensitivity)) => Ok(BatchOutput {
                            values,
                            queue_time: started.saturating_duration_since(j.enqueued),
                            compute_time,
                            input_time,
                            output_time,
                            batch_rows: rows,
                            sensitivity,
                            padded_tokens: 0,
                        }),
                        None => Err(EngineError::ShuttingDown {
                            model: model_id.to_string(),
                        }),
                    };
                    let _ = j.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(model = model_id, error = %e, "forward pass failed");
                let msg = e.to_string();
                for j in batch {
                    let _ = j
                        .reply
                        .send(Err(EngineError::Compute(candle_core::Error::Msg(
                            msg.clone(),
                        ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
