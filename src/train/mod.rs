//! Differentially private training (DP-SGD) of the MLPs the engine serves, and evaluation
//! through the engine.
//!
//! - [`data`]: numeric CSV tables with an integer label column; standardization fitted on
//!   the training rows; the schema's input ranges.
//! - [`network`]: dense layers with ReLU, softmax cross-entropy, and per-example gradient
//!   norms by the ghost-clipping identity `‖δ aᵀ‖ = ‖δ‖·‖a‖`.
//! - [`dpsgd`]: Poisson sampling, clipping, Gaussian noise calibrated by
//!   [`crate::privacy::accountant`], SGD.
//! - [`evaluate`](mod@evaluate): accuracy through [`crate::engine::Mlp`], the served forward pass.
//! - [`text`]: a classifier head over a sealed text encoder's embeddings, with the same
//!   DP-SGD.
//!
//! The output is a safetensors file with PyTorch `nn.Sequential` names and a
//! [`ModelConfig`] whose `dp_training` records (ε, δ) and the mechanism behind them, so a
//! trained model seals and serves like any other.
//!
//! What the guarantee covers: the weights. The standardization (per-feature mean and
//! standard deviation) and the schema's input ranges are computed from the training data
//! without noise and are published in the config; they are outside the (ε, δ) guarantee.
//!
//! ```
//! use confidant::privacy::rng::ChaChaDpRng;
//! use confidant::train::{self, Dataset, ModelInfo, Privacy, TrainOptions};
//!
//! let csv = "a,b,y\n0,1,0\n1,0,1\n0,2,0\n2,0,1\n0,3,0\n3,0,1\n";
//! let data = Dataset::from_csv_reader(csv.as_bytes(), "inline", "y", None)?;
//! let options = TrainOptions {
//!     hidden: vec![],
//!     epochs: 5,
//!     batch_size: 3,
//!     clip: 1.0,
//!     learning_rate: 0.5,
//!     momentum: 0.0,
//!     schedule: train::Schedule::Constant,
//!     privacy: Privacy::NonPrivate,
//! };
//! let mut rng = ChaChaDpRng::dangerous_from_seed([1; 32]);
//! let model = train::train(&data, &options, &ModelInfo::new("toy"), &mut rng, &mut train::Silent)?;
//! assert_eq!(model.config.labels, ["0", "1"]);
//! let weights = model.weights()?;
//! let eval = train::evaluate(&model.config, &weights, &data)?;
//! assert_eq!(eval.rows, 6);
//! # Ok::<(), confidant::train::TrainError>(())
//! ```

pub mod data;
pub mod dpsgd;
pub mod error;
pub mod evaluate;
pub mod network;
pub mod text;

pub use data::{Dataset, Standardization};
pub use dpsgd::{Plan, Privacy, Schedule, TrainOptions, Trainer};
pub use error::TrainError;
pub use evaluate::{Evaluation, evaluate};
pub use network::Network;
pub use text::{
    TextDataset, TextEvaluation, TextModelInfo, TrainedTextHead, evaluate_text, train_text,
};

use crate::engine::config::{
    Architecture, ArchitectureKind, DpGuarantee, DpSgdMechanism, InputSchema, ModelConfig,
    Normalization, OutputKind, RangePolicy,
};
use crate::engine::{ConfigError, EngineError};
use crate::privacy::rng::ChaChaDpRng;
use error::Result;

/// The default widening of each feature's training range, as a fraction of its span.
pub const DEFAULT_RANGE_MARGIN: f64 = 0.5;

/// The model's identity and labels, written into its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The model id (`[A-Za-z0-9._-]`).
    pub id: String,
    /// The model version.
    pub version: String,
    /// A description; `None` writes one that states the guarantee.
    pub description: Option<String>,
    /// One name per class; `None` names them `0`, `1`, ….
    pub labels: Option<Vec<String>>,
    /// The widening of each feature's accepted range beyond the training min and max, as a
    /// fraction of the span (see [`data::feature_ranges`]).
    pub range_margin: f64,
}

impl ModelInfo {
    /// Version `0.1.0`, default labels, description and range margin.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            version: "0.1.0".into(),
            description: None,
            labels: None,
            range_margin: DEFAULT_RANGE_MARGIN,
        }
    }
}

/// Hooks for a progress display; every method defaults to doing nothing.
pub trait Progress {
    /// Training starts: `steps` steps in all, about `steps_per_epoch` per epoch.
    fn start(&mut self, _steps: u64, _steps_per_epoch: u64) {}
    /// `step` (from 1) is done; `loss` is a running mean of the per-example training loss.
    fn update(&mut self, _step: u64, _loss: f64) {}
    /// Training is over.
    fn finish(&mut self) {}
}

/// No progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// A trained model: its config, its network and how it was trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    /// The config to write beside the weights (validated).
    pub config: ModelConfig,
    /// The trained network (f64; the weights file holds it as f32).
    pub network: Network,
    /// The standardization the network expects (also in `config.input.normalization`).
    pub standardization: Standardization,
    /// The schedule followed, σ included.
    pub plan: Plan,
    /// The running mean training loss at the end.
    pub final_loss: f64,
}

impl TrainedModel {
    /// The weights as F32 safetensors.
    pub fn weights(&self) -> Result<Vec<u8>> {
        self.network.to_safetensors()
    }

    /// The trainer's own forward pass on raw (unstandardized) rows: softmax probabilities,
    /// row-major `rows × classes`.
    pub fn probabilities(&self, raw: &[f32]) -> Vec<f64> {
        let x = self.standardization.apply(raw);
        let rows = x.len() / self.network.inputs().max(1);
        self.network.probabilities(&x, rows)
    }
}

/// Trains a model on `data` with `options`: fits the standardization, initializes the
/// network from `rng`, asks the accountant for σ, runs the plan's steps, and builds the
/// config. The noise, the sampling and the initialization all come from generators forked
/// from `rng`, which should be [`ChaChaDpRng::from_os`] for any model that leaves the lab.
pub fn train(
    data: &Dataset,
    options: &TrainOptions,
    info: &ModelInfo,
    rng: &mut ChaChaDpRng,
    progress: &mut dyn Progress,
) -> Result<TrainedModel> {
    let source_name = data.source_name().to_string();
    let data_err = |reason: String| TrainError::Data {
        source_name: source_name.clone(),
        reason,
    };
    let classes = data.classes();
    let labels = match &info.labels {
        Some(names) if names.len() < classes => {
            return Err(TrainError::Parameter {
                name: "class-names",
                value: names.join(","),
                reason: format!(
                    "names {} classes but the label column reaches class {}",
                    names.len(),
                    classes - 1
                ),
            });
        }
        Some(names) => names.clone(),
        None => (0..classes).map(|c| c.to_string()).collect(),
    };
    if labels.len() < 2 {
        return Err(data_err(
            "the label column holds a single class; training needs at least two".into(),
        ));
    }
    if !(info.range_margin.is_finite() && info.range_margin >= 0.0) {
        return Err(TrainError::Parameter {
            name: "range-margin",
            value: info.range_margin.to_string(),
            reason: "must be finite and >= 0".into(),
        });
    }
    let plan = options.plan(data.rows())?;

    let standardization = Standardization::fit(data);
    let x = standardization.apply(data.values());
    let (network, final_loss) = fit(
        x,
        data.labels(),
        data.width(),
        labels.len(),
        options,
        plan,
        rng,
        progress,
    )?;
    let (min, max) = data::feature_ranges(data, info.range_margin);
    let dp_training = guarantee(options, &plan);
    let description = info
        .description
        .clone()
        .unwrap_or_else(|| match &dp_training {
            Some(dp) => format!(
                "Trained by confidant train with DP-SGD: ({}, {})-DP for the weights; the \
             normalization and input ranges are computed from the data without noise",
                dp.epsilon, dp.delta
            ),
            None => "Trained by confidant train without differential privacy".into(),
        });
    let config = ModelConfig {
        id: info.id.clone(),
        version: info.version.clone(),
        description: Some(description),
        architecture: Architecture {
            kind: ArchitectureKind::Mlp,
            output: OutputKind::Softmax,
            layers: network.layer_specs(),
        },
        input: InputSchema {
            features: data.features().to_vec(),
            min,
            max,
            normalization: Some(Normalization {
                mean: standardization.mean.clone(),
                std: standardization.std.clone(),
            }),
            out_of_range: RangePolicy::Reject,
            tensor_name: None,
        },
        labels,
        output_tensor_name: None,
        purposes: Vec::new(),
        dp_training,
        screening: None,
        privacy: None,
        explanation: None,
    };
    config
        .validate()
        .map_err(|e: ConfigError| EngineError::from(e))?;
    Ok(TrainedModel {
        config,
        network,
        standardization,
        plan,
        final_loss,
    })
}

/// Runs DP-SGD on the rows `x` (row-major, `inputs` wide, already in the network's input
/// space) with class labels `labels`: initializes a network of `inputs → hidden… → classes`
/// from `rng`, follows `plan`, and returns it with the running mean training loss.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit(
    x: Vec<f64>,
    labels: &[usize],
    inputs: usize,
    classes: usize,
    options: &TrainOptions,
    plan: Plan,
    rng: &mut ChaChaDpRng,
    progress: &mut dyn Progress,
) -> Result<(Network, f64)> {
    let mut widths = vec![inputs];
    widths.extend(&options.hidden);
    widths.push(classes);
    let network = Network::new(&widths, &mut rng.fork());
    let mut trainer = Trainer::new(network, x, labels.to_vec(), plan, rng);

    progress.start(plan.steps, plan.steps_per_epoch());
    // An exponential moving average over about one epoch of examples.
    let mut loss = f64::NAN;
    let decay = (-(plan.sample_rate)).exp();
    for step in 1..=plan.steps {
        let stats = trainer.step()?;
        if stats.batch.rows > 0 {
            let batch_loss = stats.batch.loss_sum / stats.batch.rows as f64;
            loss = if loss.is_nan() {
                batch_loss
            } else {
                decay * loss + (1.0 - decay) * batch_loss
            };
        }
        progress.update(step, loss);
    }
    progress.finish();
    let network = trainer.into_network();
    if !network.is_finite() {
        return Err(TrainError::Diverged { step: plan.steps });
    }
    Ok((network, loss))
}

/// The (ε, δ) guarantee and the mechanism behind it, for a private run.
pub(crate) fn guarantee(options: &TrainOptions, plan: &Plan) -> Option<DpGuarantee> {
    match (options.privacy, plan.noise_multiplier) {
        (
            Privacy::Target {
                epsilon,
                delta,
                accountant,
            },
            Some(sigma),
        ) => Some(DpGuarantee {
            epsilon,
            delta,
            mechanism: Some(DpSgdMechanism {
                sample_rate: plan.sample_rate,
                noise_multiplier: sigma,
                steps: plan.steps,
                clip_norm: plan.clip,
                accountant: accountant.as_str().to_string(),
            }),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
