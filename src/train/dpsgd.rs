//! DP-SGD (Abadi et al. 2016): Poisson-sampled batches, per-example clipping, Gaussian noise
//! calibrated by the accountant.
//!
//! Each step samples every training row independently with probability `q = B / N` (the
//! sampling the accountant's subsampled-Gaussian analysis assumes; shuffling would not match
//! it), clips each example's gradient to norm `C` over all layers jointly, adds
//! `N(0, σ²C²)` to every coordinate of the sum, and divides by the *expected* batch size
//! `qN` (dividing by the realized size would leak it). The noise multiplier σ is the
//! smallest for which `T = round(epochs / q)` steps are (ε, δ)-DP under add-or-remove-one
//! adjacency.
//!
//! Noise is drawn from a standard normal (ziggurat, `rand_distr`) driven by the ChaCha20 DP
//! generator. Like every floating-point Gaussian (and like Opacus and TF Privacy), it is
//! not an exact sampler: its low-order bits are not those of a true Gaussian. That matters
//! for released statistics whose noise an adversary sees directly; here the noise is folded
//! into many steps of weights, and the published DP-SGD guarantees make the same assumption.

use rand_distr::{Distribution, StandardNormal};

use super::error::{Result, TrainError};
use super::network::{BatchStats, Gradient, Network, Workspace, unit_interval};
use crate::privacy::accountant::{self, AccountantKind};
use crate::privacy::rng::{ChaChaDpRng, DpRng};

/// Whether and how training is private.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Privacy {
    /// DP-SGD calibrated to a target (ε, δ).
    Target {
        /// The target ε, finite and > 0.
        epsilon: f64,
        /// δ in (0, 1).
        delta: f64,
        /// The accountant that calibrates σ.
        accountant: AccountantKind,
    },
    /// The same code with no clipping and no noise: the non-private baseline. The model
    /// carries no DP guarantee.
    NonPrivate,
}

/// How the learning rate moves over the steps. Either way it is post-processing of the noisy
/// gradients and costs no privacy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// The same rate at every step.
    Constant,
    /// Cosine decay from the rate to 0 over the run: large early steps, then small ones that
    /// average the noise out of the final weights.
    #[default]
    Cosine,
}

/// What to train and how.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Hidden layer widths; empty for logistic (softmax) regression.
    pub hidden: Vec<usize>,
    /// Passes over the data, in expectation (steps = round(epochs / q)).
    pub epochs: u32,
    /// The expected batch size B (q = B / N).
    pub batch_size: usize,
    /// The per-example clipping norm C.
    pub clip: f64,
    /// The SGD learning rate.
    pub learning_rate: f64,
    /// Heavy-ball momentum in [0, 1): post-processing of the noisy gradients, so free of
    /// privacy cost.
    pub momentum: f64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Private or not.
    pub privacy: Privacy,
}

/// The widest hidden layer accepted.
pub const MAX_WIDTH: usize = 1 << 16;
/// The most hidden layers accepted.
pub const MAX_HIDDEN_LAYERS: usize = 64;
/// The most epochs accepted.
pub const MAX_EPOCHS: u32 = 100_000;

impl TrainOptions {
    /// Checks every parameter against `rows` training rows. Errors name the flag.
    pub fn validate(&self, rows: usize) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &str| {
            Err(TrainError::Parameter {
                name,
                value,
                reason: reason.to_string(),
            })
        };
        if self.hidden.len() > MAX_HIDDEN_LAYERS {
            return bad(
                "hidden",
                format!("{:?}", self.hidden),
                &format!("at most {MAX_HIDDEN_LAYERS} hidden layers"),
            );
        }
        if let Some(w) = self.hidden.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return bad(
                "hidden",
                w.to_string(),
                &format!("each hidden width must be 1 to {MAX_WIDTH}"),
            );
        }
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return bad(
                "epochs",
                self.epochs.to_string(),
                &format!("must be 1 to {MAX_EPOCHS}"),
            );
        }
        if self.batch_size == 0 || self.batch_size > rows {
            return bad(
                "batch-size",
                self.batch_size.to_string(),
                &format!("must be 1 to the number of training rows ({rows})"),
            );
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad("clip", self.clip.to_string(), "must be finite and > 0");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "lr",
                self.learning_rate.to_string(),
                "must be finite and > 0",
            );
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad("momentum", self.momentum.to_string(), "must be in [0, 1)");
        }
        if let Privacy::Target { epsilon, delta, .. } = self.privacy {
            if !(epsilon.is_finite() && epsilon > 0.0) {
                return bad(
                    "epsilon",
                    epsilon.to_string(),
                    "must be finite and > 0 (use --no-dp for the non-private baseline)",
                );
            }
            if !(delta.is_finite() && delta > 0.0 && delta < 1.0) {
                return bad("delta", delta.to_string(), "must be in (0, 1)");
            }
        }
        Ok(())
    }

    /// Validates, then fixes q, the step count and (when private) σ from the accountant.
    pub fn plan(&self, rows: usize) -> Result<Plan> {
        self.validate(rows)?;
        let sample_rate = self.batch_size as f64 / rows as f64;
        let steps = ((f64::from(self.epochs) / sample_rate).round() as u64).max(1);
        let noise_multiplier = match self.privacy {
            Privacy::Target {
                epsilon,
                delta,
                accountant: kind,
            } => Some(accountant::noise_multiplier(
                epsilon,
                delta,
                sample_rate,
                steps,
                kind,
            )?),
            Privacy::NonPrivate => None,
        };
        Ok(Plan {
            sample_rate,
            steps,
            noise_multiplier,
            clip: self.clip,
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            schedule: self.schedule,
            rows,
        })
    }
}

/// A fixed training schedule: what the accountant was told, and what the trainer does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// q, the Poisson sampling probability.
    pub sample_rate: f64,
    /// T, the number of steps.
    pub steps: u64,
    /// σ; `None` for the non-private baseline (no clipping, no noise).
    pub noise_multiplier: Option<f64>,
    /// C.
    pub clip: f64,
    /// The learning rate.
    pub learning_rate: f64,
    /// The momentum.
    pub momentum: f64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// N, the training rows.
    pub rows: usize,
}

impl Plan {
    /// The expected batch size qN: the divisor of every noisy sum.
    pub fn expected_batch(&self) -> f64 {
        self.sample_rate * self.rows as f64
    }

    /// The learning rate of step `step` (from 1); past the plan's last step, the last rate.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Cosine => {
                let t = step.saturating_sub(1).min(self.steps) as f64 / self.steps.max(1) as f64;
                self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }

    /// Steps per epoch, rounded (for progress display).
    pub fn steps_per_epoch(&self) -> u64 {
        ((1.0 / self.sample_rate).round() as u64).max(1)
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepStats {
    /// The batch: loss sum, size, clipped count.
    pub batch: BatchStats,
}

/// Runs DP-SGD steps over standardized training data.
pub struct Trainer {
    network: Network,
    x: Vec<f64>,
    labels: Vec<usize>,
    width: usize,
    plan: Plan,
    sampling: ChaChaDpRng,
    noise: ChaChaDpRng,
    workspace: Workspace,
    gradient: Gradient,
    velocity: Gradient,
    batch_x: Vec<f64>,
    batch_labels: Vec<usize>,
    step: u64,
}

impl Trainer {
    /// A trainer for `network` on `x` (row-major `labels.len() × network.inputs()`, already
    /// standardized). The Poisson sampling and the noise each get a generator forked from
    /// `rng`.
    pub fn new(
        network: Network,
        x: Vec<f64>,
        labels: Vec<usize>,
        plan: Plan,
        rng: &mut ChaChaDpRng,
    ) -> Self {
        let gradient = Gradient::zeros(&network);
        let velocity = Gradient::zeros(&network);
        let width = network.inputs();
        Self {
            network,
            x,
            labels,
            width,
            plan,
            sampling: rng.fork(),
            noise: rng.fork(),
            workspace: Workspace::default(),
            gradient,
            velocity,
            batch_x: Vec::new(),
            batch_labels: Vec::new(),
            step: 0,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The network as trained so far.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The trained network.
    pub fn into_network(self) -> Network {
        self.network
    }

    /// One step: sample, clip, noise, descend. Runs past `plan.steps` if asked (the bench
    /// does); only the first `plan.steps` are covered by the accounted guarantee.
    pub fn step(&mut self) -> Result<StepStats> {
        self.step += 1;
        poisson_sample(
            &mut self.sampling,
            self.plan.sample_rate,
            &self.x,
            &self.labels,
            self.width,
            &mut self.batch_x,
            &mut self.batch_labels,
        );
        let clip = self.plan.noise_multiplier.map(|_| self.plan.clip);
        let batch = self.network.gradient_sum(
            &self.batch_x,
            &self.batch_labels,
            clip,
            &mut self.workspace,
            &mut self.gradient,
        );
        if let Some(sigma) = self.plan.noise_multiplier {
            add_gaussian_noise(&mut self.noise, &mut self.gradient, sigma * self.plan.clip);
        }
        let scale = 1.0 / self.plan.expected_batch();
        let lr = self.plan.learning_rate_at(self.step);
        if self.plan.momentum > 0.0 {
            let m = self.plan.momentum;
            self.velocity.values_mut().for_each(|v| *v *= m);
            self.velocity.add_scaled(&self.gradient, scale);
            self.network.descend(&self.velocity, lr);
        } else {
            self.network.descend(&self.gradient, lr * scale);
        }
        if !batch.loss_sum.is_finite() {
            return Err(TrainError::Diverged { step: self.step });
        }
        Ok(StepStats { batch })
    }
}

/// Poisson sampling: each row joins the batch independently with probability `q`; the
/// chosen rows are copied into `batch_x` / `batch_labels` in their original order.
pub fn poisson_sample<R: DpRng + ?Sized>(
    rng: &mut R,
    q: f64,
    x: &[f64],
    labels: &[usize],
    width: usize,
    batch_x: &mut Vec<f64>,
    batch_labels: &mut Vec<usize>,
) {
    batch_x.clear();
    batch_labels.clear();
    for (row, &y) in x.chunks_exact(width.max(1)).zip(labels) {
        if q >= 1.0 || unit_interval(rng) < q {
            batch_x.extend_from_slice(row);
            batch_labels.push(y);
        }
    }
}

/// Adds independent `N(0, std²)` to every coordinate of `gradient`.
pub fn add_gaussian_noise<R: DpRng + ?Sized>(rng: &mut R, gradient: &mut Gradient, std: f64) {
    let mut source = RandSource(rng);
    for v in gradient.values_mut() {
        let z: f64 = StandardNormal.sample(&mut source);
        *v += std * z;
    }
}

/// `rand_core::RngCore` over a [`DpRng`], so `rand_distr` samplers draw from the DP
/// generator and nothing else.
struct RandSource<'a, R: DpRng + ?Sized>(&'a mut R);

impl<R: DpRng + ?Sized> rand_core::RngCore for RandSource<'_, R> {
    fn next_u32(&mut self) -> u32 {
        (self.0.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let word = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}
