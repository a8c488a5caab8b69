//! The embedded demo model: a small MLP trained on the UCI Breast Cancer Wisconsin data
//! (30 features → 16 → 2, softmax), so that `confidant serve` with no flags serves something
//! real. `tests/fixtures/make_fixtures.py` documents how it was trained.

use crate::engine::{ConfigError, ModelConfig};

pub mod bootstrap;

pub use bootstrap::{DemoError, DemoModel, create_demo_api_key, obtain_demo_model};

/// The demo model's config JSON.
pub const CONFIG_JSON: &[u8] = include_bytes!("demo.json");
/// The demo model's safetensors weights.
pub const WEIGHTS: &[u8] = include_bytes!("demo.safetensors");
/// A real row from the held-out test split (label: benign), for the README's tour.
pub const SAMPLE_ROW: [f32; 30] = [
    9.504, 12.44, 60.34, 273.9, 0.1024, 0.06492, 0.02956, 0.02076, 0.1815, 0.06905, 0.2773, 0.9768,
    1.909, 15.7, 0.009606, 0.01432, 0.01985, 0.01421, 0.02027, 0.002968, 10.23, 15.66, 65.13,
    314.9, 0.1324, 0.1148, 0.08867, 0.06227, 0.245, 0.07773,
];

/// The demo model's config.
pub fn config() -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_json(CONFIG_JSON)
}
