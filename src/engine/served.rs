//! What the registry serves: one trait, [`ServedEngine`], with one implementation per model
//! kind (an MLP behind its row batcher; any [`TextEncoder`] behind its token-budget
//! batcher). The registry, the batch queues' metrics and the Triton statistics see a model
//! only through it; a new kind is a new implementation, not a new branch in the pipeline.

use std::sync::Arc;

use super::batcher::{BatchConfig, Batcher, Pending};
use super::error::EngineError;
use super::mlp::Mlp;
use super::registry::ModelInput;
use super::text::{TextBatcher, TextEncoder};
use crate::metrics::ExecMetrics;
use crate::metrics::stats::InferStats;

/// A loaded network behind its batching worker.
pub trait ServedEngine: Send + Sync {
    /// What the network takes, as refusals name it (`numeric rows`, `texts`).
    fn input_form(&self) -> &'static str;

    /// Queues `input` for the next batch; refused at once when the input is not of the
    /// network's form or the queue is full.
    fn enqueue(&self, input: ModelInput) -> Result<Pending<'_>, EngineError>;

    /// Values per output row (scores per class, or an embedding's width).
    fn output_width(&self) -> usize;

    /// Where the network runs.
    fn device_location(&self) -> candle_core::DeviceLocation;

    /// Requests waiting now.
    fn queue_depth(&self) -> usize;

    /// Executions and batch sizes so far.
    fn exec_metrics(&self) -> &Arc<ExecMetrics>;

    /// This version's Triton statistics.
    fn stats(&self) -> &Arc<InferStats>;

    /// The batching settings.
    fn batch_config(&self) -> &BatchConfig;

    /// The MLP, for the explanations that run beside the batcher (`None` for other kinds).
    fn mlp(&self) -> Option<&Arc<Mlp>> {
        None
    }

    /// The text encoder, whose tokenizer the pipeline runs before anything is spent
    /// (`None` for other kinds).
    fn encoder(&self) -> Option<&Arc<dyn TextEncoder>> {
        None
    }
}

/// An MLP behind its row batcher.
pub struct MlpEngine {
    id: String,
    mlp: Arc<Mlp>,
    batcher: Batcher,
}

impl MlpEngine {
    /// The MLP `id` and its running batcher.
    pub fn new(id: &str, mlp: Arc<Mlp>, batcher: Batcher) -> Self {
        Self {
            id: id.to_string(),
            mlp,
            batcher,
        }
    }
}

/// A text encoder behind its token-budget batcher.
pub struct TextEngine {
    id: String,
    encoder: Arc<dyn TextEncoder>,
    batcher: TextBatcher,
}

impl TextEngine {
    /// The encoder `id` and its running batcher.
    pub fn new(id: &str, encoder: Arc<dyn TextEncoder>, batcher: TextBatcher) -> Self {
        Self {
            id: id.to_string(),
            encoder,
            batcher,
        }
    }
}

fn wrong_input(id: &str, expected: &'static str, input: &ModelInput) -> EngineError {
    EngineError::WrongInput {
        model: id.to_string(),
        expected,
        found: match input {
            ModelInput::Rows { .. } => "numeric rows",
            ModelInput::Tokens(_) => "texts",
        },
    }
}

impl ServedEngine for MlpEngine {
    fn input_form(&self) -> &'static str {
        "numeric rows"
    }

    fn enqueue(&self, input: ModelInput) -> Result<Pending<'_>, EngineError> {
        match input {
            ModelInput::Rows { values, rows } => self.batcher.enqueue(values, rows),
            other => Err(wrong_input(&self.id, self.input_form(), &other)),
        }
    }

    fn output_width(&self) -> usize {
        self.mlp.out_features()
    }

    fn device_location(&self) -> candle_core::DeviceLocation {
        self.mlp.device().location()
    }

    fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }

    fn exec_metrics(&self) -> &Arc<ExecMetrics> {
        self.batcher.exec_metrics()
    }

    fn stats(&self) -> &Arc<InferStats> {
        self.batcher.stats()
    }

    fn batch_config(&self) -> &BatchConfig {
        self.batcher.config()
    }

    fn mlp(&self) -> Option<&Arc<Mlp>> {
        Some(&self.mlp)
    }
}

impl ServedEngine for TextEngine {
    fn input_form(&self) -> &'static str {
        "texts"
    }

    fn enqueue(&self, input: ModelInput) -> Result<Pending<'_>, EngineError> {
        match input {
            ModelInput::Tokens(tokens) => self.batcher.enqueue(tokens),
            other => Err(wrong_input(&self.id, self.input_form(), &other)),
        }
    }

    fn output_width(&self) -> usize {
        self.encoder.output_width()
    }

    fn device_location(&self) -> candle_core::DeviceLocation {
        self.encoder.device().location()
    }

    fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }

    fn exec_metrics(&self) -> &Arc<ExecMetrics> {
        self.batcher.exec_metrics()
    }

    fn stats(&self) -> &Arc<InferStats> {
        self.batcher.stats()
    }

    fn batch_config(&self) -> &BatchConfig {
        self.batcher.config()
    }

    fn encoder(&self) -> Option<&Arc<dyn TextEncoder>> {
        Some(&self.encoder)
    }
}
