//! The dynamic batcher of a text model: batches by **token budget**, as TEI does.
//!
//! Requests arrive tokenized (the pipeline tokenizes before anything is spent, so a text
//! over a `refuse` limit is refused with no side effect). The worker takes the first waiting
//! request, then keeps taking requests already queued (or arriving within `max_wait_us`)
//! while the batch stays within `max_batch` texts and `max_padded_tokens` tokens; it then
//! groups every text of the batch by length ([`crate::engine::bert::group_by_length`]), so
//! that a forward pass pads short texts to a similar length, never to the longest text of
//! the batch, and runs the groups. A full queue refuses at once
//! ([`EngineError::QueueFull`]), as the MLP's batcher does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use super::{TextEncoder, Tokens};
use crate::engine::batcher::{BatchConfig, BatchOutput, Pending};
use crate::engine::error::EngineError;
use crate::metrics::ExecMetrics;
use crate::metrics::stats::InferStats;

struct Job {
    tokens: Vec<Tokens>,
    /// Texts in `tokens` (kept when the worker moves them into a batch).
    texts: usize,
    /// Tokens in `tokens`.
    token_count: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<BatchOutput, EngineError>>,
}

/// A handle to one text model's batching worker. Dropping it lets the worker finish the
/// requests already queued and exit.
pub struct TextBatcher {
    tx: Sender<Job>,
    exec: Arc<ExecMetrics>,
    stats: Arc<InferStats>,
    model_id: String,
    config: BatchConfig,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl TextBatcher {
    /// Starts the worker thread for `encoder`.
    pub fn spawn(
        encoder: Arc<dyn TextEncoder>,
        model_id: &str,
        config: BatchConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let exec = Arc::new(ExecMetrics::default());
        let stats = Arc::new(InferStats::default());
        let worker = Worker {
            encoder,
            model_id: model_id.to_string(),
            exec: Arc::clone(&exec),
            stats: Arc::clone(&stats),
            config,
        };
        let worker = std::thread::Builder::new()
            .name(format!("batch-{model_id}"))
            .spawn(move || worker.run(&rx))?;
        Ok(Self {
            tx,
            exec,
            stats,
            model_id: model_id.to_string(),
            config,
            worker: Some(worker),
        })
    }

    /// Queues tokenized texts for the next batch and waits for their outputs
    /// (`[texts, output width]`, row-major, in the order given).
    pub async fn infer(&self, tokens: Vec<Tokens>) -> Result<BatchOutput, EngineError> {
        self.enqueue(tokens)?.outcome().await
    }

    /// Queues tokenized texts for the next batch (refused at once if the queue is full);
    /// the returned [`Pending`] resolves to their outputs.
    pub fn enqueue(&self, tokens: Vec<Tokens>) -> Result<Pending<'_>, EngineError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            texts: tokens.len(),
            token_count: tokens.iter().map(Tokens::len).sum(),
            tokens,
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(Pending::new(rx, &self.model_id)),
            Err(TrySendError::Full(_)) => Err(EngineError::QueueFull {
                model: self.model_id.clone(),
                capacity: self.config.queue_capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown {
                model: self.model_id.clone(),
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
        &self.exec
    }

    /// This model's Triton statistics.
    pub fn stats(&self) -> &Arc<InferStats> {
        &self.stats
    }
}

impl Drop for TextBatcher {
    fn drop(&mut self) {
        let (dead, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

struct Worker {
    encoder: Arc<dyn TextEncoder>,
    model_id: String,
    exec: Arc<ExecMetrics>,
    stats: Arc<InferStats>,
    config: BatchConfig,
}

impl Worker {
    fn run(&self, rx: &Receiver<Job>) {
        let config = self.config;
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
            let mut texts = first.texts;
            let mut tokens = first.token_count;
            let mut batch = vec![first];
            while texts < config.max_batch && tokens < config.max_padded_tokens {
                let next = match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if max_wait.is_zero() => break,
                    Err(TryRecvError::Empty) => match rx.recv_deadline(deadline) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                let next_tokens = next.token_count;
                if texts + next.texts > config.max_batch
                    || tokens + next_tokens > config.max_padded_tokens
                {
                    carried = Some(next);
                    break;
                }
                texts += next.texts;
                tokens += next_tokens;
                batch.push(next);
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, mut batch: Vec<Job>) {
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        // One job's tokens are used as they are; several are moved into one list.
        let all: Vec<Tokens> = if batch.len() == 1 {
            std::mem::take(&mut batch[0].tokens)
        } else {
            batch
                .iter_mut()
                .flat_map(|j| std::mem::take(&mut j.tokens))
                .collect()
        };
        let input_time = started.elapsed();
        let result = self.encoder.infer_tokenized(
            &all,
            self.config.max_padded_tokens,
            self.config.max_batch,
        );
        let compute_time = started.elapsed().saturating_sub(input_time);
        let rows = all.len();
        let total: usize = batch.iter().map(|j| j.token_count).sum();
        self.exec.record(rows);
        match result {
            Ok(out) => {
                let split_started = Instant::now();
                let width = out.width;
                let mut parts = Vec::with_capacity(batch.len());
                let mut offset = 0;
                for j in &batch {
                    let n = j.texts * width;
                    parts.push(out.values.get(offset..offset + n).map(<[f32]>::to_vec));
                    offset += n;
                }
                let output_time = split_started.elapsed();
                self.stats
                    .record_execution(rows, input_time, compute_time, output_time);
                for (j, part) in batch.into_iter().zip(parts) {
                    let reply = match part {
                        Some(values) => Ok(BatchOutput {
                            values,
                            queue_time: started.saturating_duration_since(j.enqueued),
                            compute_time,
                            input_time,
                            output_time,
                            batch_rows: rows,
                            sensitivity: None,
                            // The request's share of its batch's padded tokens.
                            padded_tokens: share(out.padded_tokens, j.token_count, total),
                        }),
                        None => Err(EngineError::ShuttingDown {
                            model: self.model_id.clone(),
                        }),
                    };
                    let _ = j.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(model = %self.model_id, error = %e, "text forward pass failed");
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

/// `part / whole` of `padded`, rounded up (every request that ran was padded to at least
/// its own tokens).
fn share(padded: usize, part: usize, whole: usize) -> usize {
    if whole == 0 {
        return 0;
    }
    ((padded as u128 * part as u128).div_ceil(whole as u128)) as usize
}
