//! Per-model output privacy policies for Predict, and how one applies to a batch of rows.
//!
//! A policy in the signed manifest is mandatory: the server configuration may replace it
//! only by a policy that is at least as private ([`PrivacyPolicy::may_be_replaced_by`]), and
//! the server refuses to start otherwise.
//!
//! Sensitivities are bounds on how far the released scores can move, whatever the input or
//! the training data: for a `softmax` model the probabilities lie in [0, 1], so the ℓ₁
//! distance between two score vectors is at most 2, the ℓ₂ distance at most √2, and each
//! coordinate moves by at most 1. These are the defaults; a `logits` model must state its
//! own. The guarantee therefore holds against anything the scores could encode, including
//! membership of a record in the training data.
//!
//! Each released row is one use of the mechanism, so a request of `n` rows charges `n` times
//! the per-row ε (or ρ).

use serde::{Deserialize, Serialize};

use super::error::{PrivacyError, Result};
use super::mechanism::{GaussianScores, Guarantee, LaplaceScores, NoisyArgmax, label_only};
use super::rng::DpRng;

/// A model's output policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrivacyPolicy {
    /// Scores as computed. No guarantee.
    None,
    /// The argmax label only, no scores. Hides the scores but is not differentially private.
    LabelOnly,
    /// Laplace noise on the scores (pure ε-DP per row).
    LaplaceScores {
        /// ε per row.
        epsilon: f64,
        /// ℓ₁ sensitivity of the score vector; default 2 for softmax outputs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sensitivity: Option<f64>,
    },
    /// Gaussian noise on the scores, calibrated by the analytic Gaussian mechanism
    /// ((ε, δ)-DP and ρ-zCDP per row).
    GaussianScores {
        /// ε per row.
        epsilon: f64,
        /// δ per row.
        delta: f64,
        /// ℓ₂ sensitivity of the score vector; default √2 for softmax outputs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sensitivity: Option<f64>,
    },
    /// A private argmax by permute-and-flip (the exponential mechanism's better sibling):
    /// only the label is released (pure ε-DP per row).
    NoisyArgmax {
        /// ε per row.
        epsilon: f64,
        /// How far one score can move; default 1 for softmax outputs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sensitivity: Option<f64>,
    },
}

/// How informative a mechanism's output is, for the "at least as private" order.
fn output_rank(p: &PrivacyPolicy) -> u8 {
    match p {
        PrivacyPolicy::None | PrivacyPolicy::LaplaceScores { .. } => 3,
        PrivacyPolicy::GaussianScores { .. } => 3,
        PrivacyPolicy::LabelOnly | PrivacyPolicy::NoisyArgmax { .. } => 1,
    }
}

/// Why the server config's privacy policy cannot take the place of the signed manifest's
/// ([`PrivacyPolicy::effective`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// A server policy replacing a private manifest policy stated a sensitivity (a fact of
    /// the signed model, not of the server).
    #[error(
        "the server config may not state a sensitivity for a model whose signed manifest sets \
         the {manifest} policy"
    )]
    StatesSensitivity {
        /// The manifest's policy.
        manifest: &'static str,
    },
    /// The server policy would release more, or guarantee less, than the manifest's.
    #[error(
        "the server config's {server} policy would weaken the signed manifest's {manifest} \
         policy; it may only tighten it"
    )]
    Weakens {
        /// The server config's policy.
        server: &'static str,
        /// The manifest's policy.
        manifest: &'static str,
    },
    /// The two policies could not be compared.
    #[error(transparent)]
    Invalid(PrivacyError),
}

impl PrivacyPolicy {
    /// The policy's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::LabelOnly => "label_only",
            Self::LaplaceScores { .. } => "laplace_scores",
            Self::GaussianScores { .. } => "gaussian_scores",
            Self::NoisyArgmax { .. } => "noisy_argmax",
        }
    }

    /// Whether the policy releases scores (otherwise labels only).
    pub fn releases_scores(&self) -> bool {
        output_rank(self) == 3
    }

    /// Whether the policy carries a differential-privacy guarantee.
    pub fn is_private(&self) -> bool {
        matches!(
            self,
            Self::LaplaceScores { .. } | Self::GaussianScores { .. } | Self::NoisyArgmax { .. }
        )
    }

    /// Checks the parameters; `softmax` says whether the model's outputs are probabilities
    /// (which gives default sensitivities).
    pub fn validate(&self, softmax: bool) -> Result<()> {
        self.mechanism(softmax, 2).map(|_| ())
    }

    /// The per-row guarantee.
    pub fn per_row(&self, softmax: bool, width: usize) -> Result<Guarantee> {
        Ok(match self.mechanism(softmax, width.max(1))? {
            Mechanism::Raw | Mechanism::Label => Guarantee::NotPrivate,
            Mechanism::Laplace(m) => m.guarantee(),
            Mechanism::Gaussian(m) => m.guarantee(),
            Mechanism::Argmax(m) => m.guarantee(),
        })
    }

    /// Whether the server config may replace `self` (from the signed manifest) by `other`:
    /// only if `other` releases no more (labels instead of scores, never the reverse) and
    /// its per-row guarantee is at least as strong.
    pub fn may_be_replaced_by(
        &self,
        other: &PrivacyPolicy,
        softmax: bool,
        width: usize,
    ) -> Result<bool> {
        if output_rank(other) > output_rank(self) {
            return Ok(false);
        }
        if !self.is_private() {
            // Nothing to weaken; label_only may become noisy_argmax, none anything.
            return Ok(!matches!(self, Self::LabelOnly) || !other.releases_scores());
        }
        if !other.is_private() {
            return Ok(false);
        }
        // Both must be valid; then compare what each promises per row (each mechanism's
        // evaluated guarantee never exceeds its stated parameters).
        self.per_row(softmax, width)?;
        other.per_row(softmax, width)?;
        let (mine, theirs) = (self.stated(), other.stated());
        Ok(theirs.0 <= mine.0 && theirs.1 <= mine.1)
    }

    fn sensitivity(&self) -> Option<f64> {
        match *self {
            Self::LaplaceScores { sensitivity, .. }
            | Self::GaussianScores { sensitivity, .. }
            | Self::NoisyArgmax { sensitivity, .. } => sensitivity,
            Self::None | Self::LabelOnly => None,
        }
    }

    /// The policy in force for a model whose signed manifest says `manifest` and whose
    /// server config says `server`. Sensitivities are facts of the signed model: a server
    /// policy replacing a private manifest policy may not state one; it inherits the
    /// manifest's when the mechanism is the same.
    pub fn effective(
        manifest: Option<&PrivacyPolicy>,
        server: Option<&PrivacyPolicy>,
        softmax: bool,
        width: usize,
    ) -> std::result::Result<PrivacyPolicy, OverrideError> {
        let manifest = manifest.copied().unwrap_or(PrivacyPolicy::None);
        let Some(server) = server.copied() else {
            return Ok(manifest);
        };
        let mut server = server;
        if manifest.is_private() {
            if server.sensitivity().is_some() {
                return Err(OverrideError::StatesSensitivity {
                    manifest: manifest.name(),
                });
            }
            if std::mem::discriminant(&server) == std::mem::discriminant(&manifest) {
                let inherited = manifest.sensitivity();
                match &mut server {
                    Self::LaplaceScores { sensitivity, .. }
                    | Self::GaussianScores { sensitivity, .. }
                    | Self::NoisyArgmax { sensitivity, .. } => *sensitivity = inherited,
                    Self::None | Self::LabelOnly => {}
                }
            }
        }
        match manifest.may_be_replaced_by(&server, softmax, width) {
            Ok(true) => Ok(server),
            Ok(false) => Err(OverrideError::Weakens {
                server: server.name(),
                manifest: manifest.name(),
            }),
            Err(e) => Err(OverrideError::Invalid(e)),
        }
    }

    /// The stated per-row (ε, δ).
    fn stated(&self) -> (f64, f64) {
        match *self {
            Self::None | Self::LabelOnly => (f64::INFINITY, 1.0),
            Self::LaplaceScores { epsilon, .. } | Self::NoisyArgmax { epsilon, .. } => {
                (epsilon, 0.0)
            }
            Self::GaussianScores { epsilon, delta, .. } => (epsilon, delta),
        }
    }

    fn mechanism(&self, softmax: bool, width: usize) -> Result<Mechanism> {
        let need = |given: Option<f64>, default: f64, name: &'static str| {
            given
                .or(softmax.then_some(default))
                .ok_or(PrivacyError::InvalidParameter {
                    name,
                    value: f64::NAN,
                    reason: "a logits model must state the sensitivity of its scores",
                })
        };
        Ok(match *self {
            Self::None => Mechanism::Raw,
            Self::LabelOnly => Mechanism::Label,
            Self::LaplaceScores {
                epsilon,
                sensitivity,
            } => Mechanism::Laplace(LaplaceScores::new(
                epsilon,
                need(sensitivity, 2.0, "sensitivity")?,
                width,
            )?),
            Self::GaussianScores {
                epsilon,
                delta,
                sensitivity,
            } => Mechanism::Gaussian(GaussianScores::new(
                epsilon,
                delta,
                need(sensitivity, std::f64::consts::SQRT_2, "sensitivity")?,
                width,
            )?),
            Self::NoisyArgmax {
                epsilon,
                sensitivity,
            } => Mechanism::Argmax(NoisyArgmax::new(
                epsilon,
                need(sensitivity, 1.0, "sensitivity")?,
                false,
            )?),
        })
    }

    /// Applies the policy to `rows` rows of `width` scores.
    pub fn apply<R: DpRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[f32],
        width: usize,
        softmax: bool,
    ) -> Result<Released> {
        let mech = self.mechanism(softmax, width.max(1))?;
        let rows = scores.len().checked_div(width).unwrap_or(0);
        let mut labels = Vec::with_capacity(rows);
        let mut values = Vec::new();
        for row in scores.chunks_exact(width.max(1)) {
            let row64: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            match &mech {
                Mechanism::Raw => {
                    labels.push(label_only(&row64)?);
                    values.extend_from_slice(row);
                }
                Mechanism::Label => labels.push(label_only(&row64)?),
                Mechanism::Laplace(m) => {
                    let noisy = m.release(rng, &row64)?;
                    labels.push(argmax(&noisy));
                    values.extend(noisy.iter().map(|&v| v as f32));
                }
                Mechanism::Gaussian(m) => {
                    let noisy = m.release(rng, &row64)?;
                    labels.push(argmax(&noisy));
                    values.extend(noisy.iter().map(|&v| v as f32));
                }
                Mechanism::Argmax(m) => labels.push(m.release(rng, &row64)?),
            }
        }
        let per_row = self.per_row(softmax, width)?;
        Ok(Released {
            values: self.releases_scores().then_some(values),
            labels,
            charge: Charge::of(&per_row, rows),
        })
    }
}

enum Mechanism {
    Raw,
    Label,
    Laplace(LaplaceScores),
    Gaussian(GaussianScores),
    Argmax(NoisyArgmax),
}

fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// What a release costs the budget: pure ε (summed by basic composition) and, for the
/// Gaussian mechanism, zCDP ρ (summed, converted to ε at the budget's δ).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Charge {
    /// ε of pure-DP releases.
    pub epsilon: f64,
    /// ρ of zCDP (Gaussian) releases.
    pub rho: f64,
}

impl Charge {
    /// The charge of `rows` releases with guarantee `g`.
    pub fn of(g: &Guarantee, rows: usize) -> Self {
        let n = rows as f64;
        match *g {
            Guarantee::Pure { epsilon, .. } => Self {
                epsilon: epsilon * n,
                rho: 0.0,
            },
            Guarantee::Approximate { rho, .. } => Self {
                epsilon: 0.0,
                rho: rho * n,
            },
            _ => Self::default(),
        }
    }

    /// Whether anything is charged.
    pub fn is_zero(&self) -> bool {
        self.epsilon == 0.0 && self.rho == 0.0
    }

    /// The ε this charge amounts to at `delta`: `ε_pure + ρ + 2√(ρ ln(1/δ))` (Bun &
    /// Steinke 2016, Proposition 1.3, for the zCDP part; basic composition across parts).
    pub fn epsilon_at(&self, delta: f64) -> f64 {
        let rho_eps = if self.rho > 0.0 {
            self.rho + 2.0 * (self.rho * (1.0 / delta).ln()).sqrt()
        } else {
            0.0
        };
        self.epsilon + rho_eps
    }
}

/// A policy's output for a batch.
#[derive(Debug, Clone)]
pub struct Released {
    /// The released scores (`rows × width`), or `None` when only labels are released.
    pub values: Option<Vec<f32>>,
    /// The released label index per row.
    pub labels: Vec<usize>,
    /// What it costs.
    pub charge: Charge,
}

#[cfg(test)]
mod tests;
