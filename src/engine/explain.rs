//! Explanations: integrated gradients (Sundararajan, Taly & Yan 2017) with candle autograd.
//!
//! For an input `x`, a baseline `b` and a target output `c`, the attribution of feature `i`
//! is `(xᵢ − bᵢ) · ∫₀¹ ∂f_c(b + α(x − b))/∂xᵢ dα`, approximated by the midpoint rule over
//! `m` points of the straight path, all in one batched forward and backward pass. By the
//! fundamental theorem of calculus the attributions sum to `f_c(x) − f_c(b)`
//! (completeness); the number of points doubles from 64 until the sum is within a relative
//! 1e-4 of that difference (or 8192 points), and the remaining gap is reported.
//!
//! Text models are explained the same way over their input word embeddings, with the same
//! schedule, tolerance and report, one attribution per token ([`TextAttribution`], computed
//! by [`crate::engine::bert`]'s encoder); their cost is counted in tokens ([`text_points`]).

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::error::{ConfigError, EngineError};
use super::mlp::Mlp;

/// How a model is explained (in the model config, and so in the signed manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplanationSpec {
    /// The baseline input ("absence of signal"), one value per feature, inside the schema's
    /// ranges. Without it the explanation uses the normalization mean, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Vec<f32>>,
}

/// One row's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// Per-feature attributions.
    pub attributions: Vec<f32>,
    /// The output column explained.
    pub target: usize,
    /// `f_target(x)`.
    pub output_at_input: f32,
    /// `f_target(baseline)`.
    pub output_at_baseline: f32,
    /// `|Σ attributions − (f(x) − f(baseline))|`.
    pub completeness_error: f32,
    /// Path points used.
    pub steps: usize,
}

/// One text's explanation: [`Attribution`] with one attribution per token (its word
/// embedding's, summed over the embedding dimension), and the tokens themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct TextAttribution {
    /// Per-token attributions, the schedule and the completeness report.
    pub attribution: Attribution,
    /// Each token as the tokenizer's vocabulary writes it (`[CLS]`, `hello`, `##ing`).
    pub tokens: Vec<String>,
    /// Whether each token was added by the tokenizer's template (`[CLS]`, `[SEP]`) rather
    /// than taken from the text. Such tokens keep their embedding in the baseline, so
    /// their attribution is 0.
    pub special: Vec<bool>,
    /// The token whose word embedding replaced each of the text's own tokens in the
    /// baseline (`[PAD]`).
    pub baseline_token: String,
}

pub(crate) const FIRST_STEPS: usize = 64;
pub(crate) const MAX_STEPS: usize = 8192;
const REL_TOLERANCE: f64 = 1e-4;

/// Whether attributions that miss `f(x) − f(baseline)` = `want` by `error` are complete
/// enough to stop doubling the path points: a relative 1e-4 (of at least 1e-6).
pub(crate) fn complete_enough(error: f64, want: f64) -> bool {
    error <= REL_TOLERANCE * want.abs().max(1e-6)
}

/// The worst-case path-point cost of explaining texts of `tokens` tokens in all: every
/// path point of a text runs all its tokens through the encoder, so a token counts as an
/// MLP row does, [`MAX_POINTS_PER_ROW`] each.
pub fn text_points(tokens: usize) -> u64 {
    (tokens as u64).saturating_mul(MAX_POINTS_PER_ROW)
}

/// The most path points [`integrated_gradients`] evaluates for one row (forward and
/// backward): every doubling from 64 to 8192 points, when the sum never converges. A
/// request's worst-case work is its rows times this; the server bounds that product.
pub const MAX_POINTS_PER_ROW: u64 = {
    let mut total = 0;
    let mut steps = FIRST_STEPS;
    while steps <= MAX_STEPS {
        total += steps as u64;
        steps *= 2;
    }
    total
};

impl ExplanationSpec {
    /// Checks the baseline against the number of features.
    pub fn validate(&self, features: usize) -> Result<(), ConfigError> {
        if let Some(b) = &self.baseline {
            if b.len() != features {
                return Err(ConfigError::Invalid(format!(
                    "explanation.baseline has {} values but there are {features} features",
                    b.len()
                )));
            }
            if let Some(i) = b.iter().position(|v| !v.is_finite()) {
                return Err(ConfigError::Invalid(format!(
                    "explanation.baseline[{i}] is not finite"
                )));
            }
        }
        Ok(())
    }
}

/// Integrated gradients of output `target` (default: the argmax at `x`) for one row.
pub fn integrated_gradients(
    mlp: &Mlp,
    x: &[f32],
    baseline: &[f32],
    target: Option<usize>,
) -> Result<Attribution, EngineError> {
    let features = mlp.in_features();
    if x.len() != features || baseline.len() != features {
        return Err(EngineError::Width {
            model: String::new(),
            found: x.len(),
            expected: features,
        });
    }
    let ends = mlp.forward_rows(&[x, baseline].concat(), 2)?;
    let width = mlp.out_features();
    let (fx, fb) = ends.split_at(width);
    let target = match target {
        Some(t) if t < width => t,
        Some(t) => {
            return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                "target output {t} does not exist (the model has {width})"
            ))));
        }
        None => super::argmax_rows(fx, width).first().copied().unwrap_or(0),
    };
    let want = f64::from(fx[target]) - f64::from(fb[target]);
    let diff: Vec<f64> = x
        .iter()
        .zip(baseline)
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect();
    let mut steps = FIRST_STEPS;
    loop {
        let mean_grad = path_gradient(mlp, baseline, &diff, target, steps)?;
        let attributions: Vec<f64> = mean_grad.iter().zip(&diff).map(|(g, d)| g * d).collect();
        let error = (attributions.iter().sum::<f64>() - want).abs();
        if complete_enough(error, want) || steps >= MAX_STEPS {
            return Ok(Attribution {
                attributions: attributions.iter().map(|v| *v as f32).collect(),
                target,
                output_at_input: fx[target],
                output_at_baseline: fb[target],
                completeness_error: error as f32,
                steps,
            });
        }
        steps *= 2;
    }
}

/// The mean gradient of `f_target` over `steps` midpoints of the path from the baseline.
fn path_gradient(
    mlp: &Mlp,
    baseline: &[f32],
    diff: &[f64],
    target: usize,
    steps: usize,
) -> Result<Vec<f64>, EngineError> {
    let features = baseline.len();
    let mut path = Vec::with_capacity(steps * features);
    for k in 0..steps {
        let alpha = (k as f64 + 0.5) / steps as f64;
        path.extend(
            baseline
                .iter()
                .zip(diff)
                .map(|(b, d)| (f64::from(*b) + alpha * d) as f32),
        );
    }
    let var = Var::from_tensor(&Tensor::from_vec(path, (steps, features), mlp.device())?)?;
    let out = mlp.forward_differentiable(var.as_tensor())?;
    let objective = out.narrow(1, target, 1)?.sum_all()?;
    let grads = objective.backward()?;
    let grad = grads.get(var.as_tensor()).ok_or_else(|| {
        EngineError::Compute(candle_core::Error::Msg("no gradient for the input".into()))
    })?;
    let g = grad.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
    let mut mean = vec![0.0f64; features];
    for row in &g {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= steps as f64;
    }
    Ok(mean)
}

#[cfg(test)]
mod tests;
