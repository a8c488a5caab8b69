//! Adversarial-sensitivity screening: does the prediction jump under tiny perturbations?
//!
//! For every request row the batcher appends `copies` perturbed copies, each feature moved
//! by Gaussian noise with standard deviation `noise × (max − min)` of that feature's signed
//! range, and runs them in the same forward pass as the request. A row's score is the mean
//! absolute change of the output over the copies and the output columns:
//!
//! `score(x) = 1/(K·W) Σₖ Σⱼ |f(x + δₖ)ⱼ − f(x)ⱼ|`
//!
//! Inputs crafted to sit next to a decision boundary (adversarial examples, model-extraction
//! probes) score high; ordinary rows score low. Above the threshold the model's action
//! applies: `flag` marks the row in the response and the audit record, `reject` refuses the
//! request with INVALID_ARGUMENT and a message that does not reveal the threshold.
//!
//! On the fused CPU path the copies are drawn where they act: a copy's input noise reaches
//! the network only through the first layer's pre-activation, as a Gaussian move whose
//! covariance the model fixes, so the batcher draws that move directly from a factor of the
//! covariance ([`PreactFactor`](super::mlp::PreactFactor)). The scores have the same
//! distribution as with perturbed inputs, for fewer normals and multiply-adds per copy when
//! the first layer is narrower than the input (the demo: 16 normals instead of 30). Other
//! models, and the CUDA kernel, perturb the inputs.
//!
//! The perturbations come from an AES-128-CTR stream keyed from the OS per thread (`stream`),
//! so a client cannot predict them and craft a row that is stable only under the copies it
//! will get. The stream is turned into Gaussian noise by a ziggurat in `f32` (`normal`), two
//! samples per 64-bit draw.

use serde::{Deserialize, Serialize};

mod normal;
mod stream;

use stream::{NoiseRng, noise_rng};

use super::config::InputSchema;
use super::error::{ConfigError, EngineError};
use super::mlp::{Mlp, PreactFactor};

/// Most perturbed copies per row.
pub const MAX_COPIES: u32 = 64;

/// What to do with a row whose score is above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScreenAction {
    /// Answer, but mark the row in the response and the audit record.
    Flag,
    /// Refuse the whole request (INVALID_ARGUMENT).
    Reject,
}

impl ScreenAction {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Reject => "reject",
        }
    }
}

/// Screening settings, from the signed manifest or the server config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreeningSpec {
    /// Perturbed copies per row (K), 1 to 64.
    pub copies: u32,
    /// Noise standard deviation as a fraction of each feature's range, in (0, 1].
    pub noise: f32,
    /// Scores above this trigger the action; finite and > 0.
    pub threshold: f32,
    /// `flag` or `reject`.
    pub action: ScreenAction,
}

impl ScreeningSpec {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_COPIES).contains(&self.copies) {
            return Err(ConfigError::Invalid(format!(
                "screening.copies must be 1 to {MAX_COPIES}, got {}",
                self.copies
            )));
        }
        if !(self.noise.is_finite() && self.noise > 0.0 && self.noise <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "screening.noise must be in (0, 1] (a fraction of each feature's range), got {}",
                self.noise
            )));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "screening.threshold must be finite and > 0, got {}",
                self.threshold
            )));
        }
        Ok(())
    }

    /// The settings in force when the signed manifest says `self` and the server config
    /// says `server`: the server may only tighten (more copies, a lower threshold, `reject`
    /// over `flag`). The noise scale stays the manifest's, since the threshold is calibrated
    /// against it.
    pub fn tightened_by(&self, server: &ScreeningSpec) -> ScreeningSpec {
        ScreeningSpec {
            copies: self.copies.max(server.copies),
            noise: self.noise,
            threshold: self.threshold.min(server.threshold),
            action: self.action.max(server.action),
        }
    }

    /// Whether a score is above the threshold. A NaN score (a model that produced NaN under
    /// noise) counts as unstable.
    pub fn is_flagged(&self, score: f32) -> bool {
        score.is_nan() || score > self.threshold
    }

    /// The settings in force given what the manifest and the server config declare.
    pub fn effective(
        manifest: Option<&ScreeningSpec>,
        server: Option<&ScreeningSpec>,
    ) -> Option<ScreeningSpec> {
        match (manifest, server) {
            (Some(m), Some(s)) => Some(m.tightened_by(s)),
            (Some(m), None) => Some(*m),
            (None, s) => s.copied(),
        }
    }
}

/// A batch's outputs (`rows × width`) and each row's score.
pub type ScreenedOutputs = (Vec<f32>, Vec<f32>);

/// A per-worker screener: the settings plus each feature's noise scale.
pub struct Screener {
    spec: ScreeningSpec,
    sigmas: Vec<f32>,
    rng: NoiseRng,
    /// Scratch for one batch's noise.
    noise: Vec<f32>,
    /// On the fused CPU path: the copies are drawn in the first layer's pre-activation
    /// space ([`PreactFactor`]).
    factor: Option<PreactFactor>,
}

impl Screener {
    /// A screener for a model with this input schema, seeded from the OS.
    pub fn new(spec: ScreeningSpec, schema: &InputSchema) -> Result<Self, ConfigError> {
        spec.validate()?;
        let seed = crate::secure::os_seed()
            .map_err(|e| ConfigError::Invalid(format!("screening: OS randomness: {e}")))?;
        // By reference: the seed is not copied out of its zeroizing wrapper.
        Ok(Self::with_seed(spec, schema, &seed))
    }

    /// A screener with a fixed seed (tests and benchmarks only).
    pub fn with_seed(spec: ScreeningSpec, schema: &InputSchema, seed: &[u8; 32]) -> Self {
        let sigmas = schema
            .min
            .iter()
            .zip(&schema.max)
            .map(|(lo, hi)| spec.noise * (hi - lo))
            .collect();
        Self {
            spec,
            sigmas,
            rng: noise_rng(seed),
            noise: Vec::new(),
            factor: None,
        }
    }

    /// Draws the copies for `model` in its first layer's pre-activation space when it runs
    /// on the fused CPU path ([`PreactFactor`]: the same score distribution, fewer normals
    /// and multiply-adds per copy); otherwise leaves the input-space path in place.
    pub fn for_model(mut self, model: &Mlp) -> Result<Self, EngineError> {
        self.factor = model.preact_factor(&self.sigmas)?;
        Ok(self)
    }

    /// Normals each request row needs on the pre-activation path (`copies × rank`), which
    /// the request's own thread may draw ([`draw_normals`]); 0 when the path does not apply.
    pub fn normals_per_row(&self) -> usize {
        self.factor
            .as_ref()
            .map_or(0, |f| f.rank() * self.spec.copies as usize)
    }

    /// The pre-activation factor in use, if any.
    pub fn factor(&self) -> Option<&PreactFactor> {
        self.factor.as_ref()
    }

    /// Runs `rows` rows (`input`) and their copies through `model` on the fused CPU path,
    /// with the copies drawn in pre-activation space, and returns the rows' outputs and
    /// scores. A batch too large for one pass of the fused loop runs as several, a slice of
    /// rows (with their copies) at a time. `None` when that path does not apply (no factor:
    /// the model is not on the fused loop); the caller then perturbs inputs.
    ///
    /// `drawn` holds the normals the requests' own threads drew
    /// ([`draw_normals`]), `rows × copies × rank` of them, or is empty for the screener to
    /// draw them itself.
    pub fn forward_cpu(
        &mut self,
        model: &Mlp,
        input: &[f32],
        rows: usize,
        drawn: &[f32],
    ) -> Option<Result<ScreenedOutputs, EngineError>> {
        let factor = self.factor.as_ref()?;
        let copies = self.spec.copies as usize;
        let per_pass = model.fused_cpu_rows(1 + copies);
        if per_pass == 0 {
            return None;
        }
        let rank = factor.rank();
        let needed = rows * copies * rank;
        let normals = if drawn.len() == needed {
            drawn
        } else {
            self.noise.resize(needed, 0.0);
            normal::table().fill(&mut self.rng, &mut self.noise);
            &self.noise
        };
        let width = model.out_features();
        let inp = model.in_features();
        let mut outputs = Vec::with_capacity(rows * width);
        let mut scores = Vec::with_capacity(rows);
        let mut start = 0;
        while start < rows {
            let n = per_pass.min(rows - start);
            let out = match model.forward_screened_cpu(
                input
                    .get(start * inp..(start + n) * inp)
                    .unwrap_or_default(),
                n,
                copies,
                factor,
                normals
                    .get(start * copies * rank..(start + n) * copies * rank)
                    .unwrap_or_default(),
            ) {
                Ok(out) => out,
                Err(e) => return Some(Err(e)),
            };
            let (base, perturbed) = out.split_at((n * width).min(out.len()));
            scores.extend(self.scores(base, perturbed, width));
            outputs.extend_from_slice(base);
            start += n;
        }
        Some(Ok((outputs, scores)))
    }

    /// The settings.
    pub fn spec(&self) -> &ScreeningSpec {
        &self.spec
    }

    /// Each feature's noise scale (σ = noise × the feature's range).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Copies per row.
    pub fn copies(&self) -> usize {
        self.spec.copies as usize
    }

    /// Appends `copies` perturbed copies of each of the `rows` rows in `input` to `out`,
    /// row 0's copies first.
    pub fn perturb_into(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let width = self.sigmas.len();
        if width == 0 {
            return;
        }
        let copies = self.copies();
        let rows = input.len() / width;
        // All of the batch's noise in one block, then one pass that scales and adds it.
        self.noise.resize(rows * copies * width, 0.0);
        normal::table().fill(&mut self.rng, &mut self.noise);
        out.reserve(rows * copies * width);
        let mut noise = self.noise.chunks_exact(width);
        for row in input.chunks_exact(width) {
            for z in noise.by_ref().take(copies) {
                out.extend(
                    row.iter()
                        .zip(&self.sigmas)
                        .zip(z)
                        .map(|((x, s), z)| x + s * z),
                );
            }
        }
    }

    /// Each row's score, given the outputs of the rows (`[rows, width]`) and of their copies
    /// (`[rows × copies, width]`, in the order [`perturb_into`](Self::perturb_into) made).
    pub fn scores(&self, outputs: &[f32], perturbed: &[f32], width: usize) -> Vec<f32> {
        let k = self.copies();
        if width == 0 || k == 0 {
            return Vec::new();
        }
        outputs
            .chunks_exact(width)
            .zip(perturbed.chunks_exact(width * k))
            .map(|(base, copies)| {
                let total: f32 = copies
                    .chunks_exact(width)
                    .map(|c| c.iter().zip(base).map(|(a, b)| (a - b).abs()).sum::<f32>())
                    .sum();
                total / (k * width) as f32
            })
            .collect()
    }

    /// Whether a score is above the threshold.
    pub fn is_flagged(&self, score: f32) -> bool {
        self.spec.is_flagged(score)
    }
}

thread_local! {
    /// This thread's screening stream, keyed from the OS, as the screener's own.
    static THREAD_NOISE: std::cell::RefCell<Option<NoiseRng>> =
        const { std::cell::RefCell::new(None) };
}

/// Fills `out` with standard normals from the calling thread's own OS-keyed stream,
/// so that request threads draw their rows' screening noise in parallel instead of the
/// batch worker drawing everyone's in turn. Returns false (leaving `out` alone) if the OS
/// has no randomness to seed the stream; the worker then draws the noise itself.
pub fn draw_normals(out: &mut [f32]) -> bool {
    THREAD_NOISE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let Ok(seed) = crate::secure::os_seed() else {
                return false;
            };
            *slot = Some(noise_rng(&seed));
        }
        match slot.as_mut() {
            Some(rng) => {
                normal::table().fill(rng, out);
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests;
