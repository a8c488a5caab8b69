//! Accuracy of a model on labelled data, through the serving engine's own forward pass.

use candle_core::Device;
use serde::Serialize;

use super::data::Dataset;
use super::error::{Result, TrainError};
use crate::engine::{EngineError, Mlp, ModelConfig, argmax_rows};

/// Rows per engine forward pass.
const CHUNK_ROWS: usize = 4096;

/// The result of [`evaluate`]: `{"accuracy", "rows"}` as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// The fraction of rows whose argmax output is their label.
    pub accuracy: f64,
    /// The number of rows evaluated.
    pub rows: usize,
}

/// Loads `weights` with `config` into the engine's [`Mlp`] (the same checks and code as
/// `confidant serve`) and counts the rows of `data` whose argmax output equals the label.
/// `data`'s feature columns must be the config's features, in order (read it with
/// [`Dataset::read_csv`] and `Some(&config.input.features)`).
pub fn evaluate(config: &ModelConfig, weights: &[u8], data: &Dataset) -> Result<Evaluation> {
    config.validate().map_err(EngineError::from)?;
    if data.features() != config.input.features.as_slice() {
        return Err(TrainError::Data {
            source_name: data.source_name().to_string(),
            reason: "the feature columns are not the model's features in schema order".into(),
        });
    }
    let outputs = config.output_count();
    if let Some((r, l)) = data
        .labels()
        .iter()
        .enumerate()
        .find(|(_, l)| **l >= outputs)
    {
        return Err(TrainError::Data {
            source_name: data.source_name().to_string(),
            reason: format!(
                "data row {}: label {l} is not a class of this model (it has {outputs} \
                 outputs, labels 0 to {})",
                r + 1,
                outputs.saturating_sub(1)
            ),
        });
    }
    let mlp = Mlp::from_safetensors(config, weights, &Device::Cpu)?;
    let width = data.width();
    let mut correct = 0usize;
    for (x, y) in data
        .values()
        .chunks(CHUNK_ROWS * width)
        .zip(data.labels().chunks(CHUNK_ROWS))
    {
        let out = mlp.forward_rows(x, y.len())?;
        correct += argmax_rows(&out, outputs)
            .iter()
            .zip(y)
            .filter(|(p, l)| p == l)
            .count();
    }
    Ok(Evaluation {
        accuracy: correct as f64 / data.rows() as f64,
        rows: data.rows(),
    })
}
