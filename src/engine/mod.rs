//! The inference engine: model configs, the candle MLP, BERT text encoders, the dynamic
//! batcher and the registry.
//!
//! The engine knows nothing of gRPC, keys or sealing: it takes a validated config and
//! plaintext safetensors bytes, and serves forward passes.
//!
//! A model kind is one implementation of [`ServedEngine`] (the MLP behind its row batcher,
//! a [`TextEncoder`] behind its token-budget batcher); the [`Registry`] holds any of them.

pub mod batcher;
pub mod bert;
pub mod config;
pub mod error;
pub mod explain;
pub mod mlp;
pub mod registry;
pub mod screening;
pub mod served;
pub mod synthetic;
pub mod text;

pub use batcher::{BatchConfig, BatchOutput, Batcher};
pub use config::{EncoderConfig, ModelConfig, ModelSpec, OutputKind};
pub use error::{ConfigError, EngineError};
pub use mlp::Mlp;
pub use registry::{LoadedModel, ModelInput, Provenance, Registry, ServingOptions};
pub use screening::{ScreenAction, Screener, ScreeningSpec};
pub use served::ServedEngine;
pub use text::{TextEncoder, TextOutput, Tokens};

/// The index of the largest value in each row of a row-major `[rows, width]` matrix.
/// NaN never wins; ties go to the lowest index.
pub fn argmax_rows(values: &[f32], width: usize) -> Vec<usize> {
    if width == 0 {
        return Vec::new();
    }
    values
        .chunks_exact(width)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] || row[best].is_nan() {
                    best = i;
                }
            }
            best
        })
        .collect()
}
