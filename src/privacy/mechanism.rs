//! Output mechanisms for predictions, each with its privacy map.
//!
//! Every noisy output is released on a power-of-two [`Grid`]: the input is rounded to the
//! grid, integer noise from an exact sampler is added, and the result is scaled back. The
//! rounding can move two neighbouring inputs one grid step further apart per coordinate, so
//! the maps charge the sensitivity plus that step (as OpenDP does).
//!
//! | mechanism | pure ε | zCDP ρ | (ε, δ) |
//! | --- | --- | --- | --- |
//! | [`LaplaceScores`] | `(Δ₁ + d·g) / b` | `ε² / 2` | `(ε, 0)` |
//! | [`FastLaplaceScores`] | the above `+ s` ([`fast`]) | `ε² / 2` | `(ε, 0)` |
//! | [`GaussianScores`] | none | `(Δ₂ + √d·g)² / (2σ²)` | analytic Gaussian |
//! | [`NoisyArgmax`] | `ε` | `ε² / 2` | `(ε, 0)` |
//! | [`label_only`] | none | none | none |

use super::error::{PrivacyError, Result, check_range};
use super::rng::DpRng;
use super::sampler::fast::{self, FastDiscreteLaplace};
use super::sampler::{self, Grid, Rational};
use super::special::log_normal_cdf;

/// What a mechanism guarantees per release, evaluated for its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Guarantee {
    /// ε-DP, and so ρ = ε²/2-zCDP.
    Pure {
        /// The ε charged.
        epsilon: f64,
        /// The zCDP ρ charged.
        rho: f64,
    },
    /// (ε, δ)-DP and ρ-zCDP.
    Approximate {
        /// The ε charged.
        epsilon: f64,
        /// The δ charged.
        delta: f64,
        /// The zCDP ρ charged.
        rho: f64,
    },
    /// No formal differential-privacy guarantee.
    NotPrivate,
}

impl Guarantee {
    /// The ε (infinite when not private).
    pub fn epsilon(&self) -> f64 {
        match *self {
            Self::Pure { epsilon, .. } | Self::Approximate { epsilon, .. } => epsilon,
            Self::NotPrivate => f64::INFINITY,
        }
    }

    /// The δ (0 for pure DP, 1 when not private).
    pub fn delta(&self) -> f64 {
        match *self {
            Self::Pure { .. } => 0.0,
            Self::Approximate { delta, .. } => delta,
            Self::NotPrivate => 1.0,
        }
    }

    /// The zCDP ρ, where there is one.
    pub fn rho(&self) -> Option<f64> {
        match *self {
            Self::Pure { rho, .. } | Self::Approximate { rho, .. } => Some(rho),
            Self::NotPrivate => None,
        }
    }
}

/// The largest ε any mechanism here accepts: beyond it the noise is meaningless.
const MAX_EPSILON: f64 = 1000.0;

/// Binary digits by which the grid is finer than the noise scale: the grid's rounding then
/// costs a relative 2^-20 of the sensitivity.
const GRID_BITS: i32 = 20;

/// The Laplace mechanism on a score vector: discrete Laplace noise on a grid, pure ε-DP.
#[derive(Debug, Clone)]
pub struct LaplaceScores {
    grid: Grid,
    scale_steps: Rational,
    /// The ℓ₁ sensitivity in grid steps after rounding (an upper bound).
    d_steps: f64,
    dim: usize,
    epsilon: f64,
}

impl LaplaceScores {
    /// Calibrates for `epsilon` given the ℓ₁ sensitivity of `dim` scores. The charged ε
    /// ([`LaplaceScores::guarantee`]) is at most `epsilon`.
    pub fn new(epsilon: f64, sensitivity_l1: f64, dim: usize) -> Result<Self> {
        check_range("epsilon", epsilon, 0.0, MAX_EPSILON, false)?;
        check_range("sensitivity", sensitivity_l1, 0.0, 1e12, false)?;
        check_dim(dim)?;
        let grid = Grid::finer_than(sensitivity_l1 / epsilon, GRID_BITS)?;
        let d_steps = rounded_l1_steps(sensitivity_l1, grid, dim);
        // A relative margin far above f64 rounding keeps the charged ε below the target.
        let t = d_steps / epsilon * (1.0 + 1e-12);
        let scale_steps = Rational::from_f64_ceil(t, 24)?;
        let charged = (d_steps / scale_steps.to_f64()).next_up().next_up();
        Ok(Self {
            grid,
            scale_steps,
            d_steps,
            dim,
            epsilon: charged,
        })
    }

    /// The same mechanism with the batched sampler of [`sampler::fast`]: same grid, same
    /// scale, and the sampler's deviation added to the charged ε.
    pub fn fast(&self) -> Result<FastLaplaceScores> {
        // The scale is a multiple of 2^-24 below 2^53, so `to_f64` is exact: the sampler
        // targets exactly the scale the charge was computed for.
        let sampler = FastDiscreteLaplace::new(self.scale_steps.to_f64())?;
        let slack = sampler.epsilon_slack(self.d_steps, self.dim);
        Ok(FastLaplaceScores {
            grid: self.grid,
            sampler,
            dim: self.dim,
            epsilon: (self.epsilon + slack).next_up(),
        })
    }

    /// The output grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The noise scale `b`, in output units.
    pub fn scale(&self) -> f64 {
        self.scale_steps.to_f64() * self.grid.step()
    }

    /// The privacy map, evaluated: ε-DP with ε at most the requested one.
    pub fn guarantee(&self) -> Guarantee {
        Guarantee::Pure {
            epsilon: self.epsilon,
            rho: (self.epsilon * self.epsilon / 2.0).next_up(),
        }
    }

    /// Noisy scores, each on the grid.
    pub fn release<R: DpRng + ?Sized>(&self, rng: &mut R, scores: &[f64]) -> Result<Vec<f64>> {
        check_len(scores, self.dim)?;
        scores
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let n = self.grid.to_steps(x, i)?;
                let z = sampler::discrete_laplace(rng, self.scale_steps)?;
                on_grid(self.grid, n, z, i)
            })
            .collect()
    }
}

/// [`LaplaceScores`] with the batched grid-Laplace sampler ([`sampler::fast`]), for bulk
/// releases. Built by [`LaplaceScores::fast`]; pure ε-DP per row with ε the exact
/// mechanism's plus [`FastDiscreteLaplace::epsilon_slack`].
#[derive(Debug, Clone)]
pub struct FastLaplaceScores {
    grid: Grid,
    sampler: FastDiscreteLaplace,
    dim: usize,
    epsilon: f64,
}

impl FastLaplaceScores {
    /// The output grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The sampler, with its deviation bounds.
    pub fn sampler(&self) -> &FastDiscreteLaplace {
        &self.sampler
    }

    /// The privacy map, evaluated per row: the exact mechanism's ε plus the sampler's slack.
    pub fn guarantee(&self) -> Guarantee {
        Guarantee::Pure {
            epsilon: self.epsilon,
            rho: (self.epsilon * self.epsilon / 2.0).next_up(),
        }
    }

    /// Noises `rows` in place: its length must be a multiple of the dimension, and each
    /// `dim` values are one row (one release). Every value is checked before any changes.
    pub fn release_in_place<R: DpRng + ?Sized>(&self, rng: &mut R, rows: &mut [f64]) -> Result<()> {
        if rows.is_empty() {
            return Err(PrivacyError::EmptyInput);
        }
        if !rows.len().is_multiple_of(self.dim) {
            return Err(PrivacyError::InvalidParameter {
                name: "scores length",
                value: rows.len() as f64,
                reason: "must be a multiple of the dimension the mechanism was calibrated for",
            });
        }
        fast::add_grid_laplace(rng, &self.sampler, self.grid, rows)
    }
}

/// The Gaussian mechanism on a score vector: discrete Gaussian noise on a grid, with σ from
/// the analytic Gaussian mechanism (Balle & Wang 2018).
///
/// The exact guarantee is ρ-zCDP (Canonne, Kamath & Steinke 2020, Theorem 14 holds for the
/// discrete Gaussian with the rounded sensitivity). The (ε, δ) claim applies Balle and
/// Wang's exact curve for the continuous Gaussian to the discrete one, which CKS 2020 §4
/// show agrees to within a negligible margin at σ ≥ 1 grid step; here σ ≈ 4096 steps.
#[derive(Debug, Clone)]
pub struct GaussianScores {
    grid: Grid,
    sigma2_steps: Rational,
    dim: usize,
    epsilon: f64,
    delta: f64,
    rho: f64,
}

impl GaussianScores {
    /// Calibrates for `(epsilon, delta)` given the ℓ₂ sensitivity of `dim` scores.
    pub fn new(epsilon: f64, delta: f64, sensitivity_l2: f64, dim: usize) -> Result<Self> {
        check_range("epsilon", epsilon, 0.0, MAX_EPSILON, false)?;
        check_range("delta", delta, 0.0, 1.0, false)?;
        check_range("sensitivity", sensitivity_l2, 0.0, 1e12, false)?;
        check_dim(dim)?;
        let sigma0 = analytic_gaussian_sigma(epsilon, delta, sensitivity_l2)?;
        let grid = Grid::finer_than(sigma0, 12)?;
        let d_steps =
            (sensitivity_l2 / grid.step()).next_up() + (dim as f64).sqrt().next_up().next_up();
        let sigma_steps = analytic_gaussian_sigma(epsilon, delta, d_steps)?;
        let sigma2_steps = sampler::discrete_gaussian_sigma2(sigma_steps)?;
        let rho = (d_steps * d_steps / (2.0 * sigma2_steps.to_f64()))
            .next_up()
            .next_up();
        Ok(Self {
            grid,
            sigma2_steps,
            dim,
            epsilon,
            delta,
            rho,
        })
    }

    /// The output grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The noise standard deviation σ, in output units.
    pub fn sigma(&self) -> f64 {
        self.sigma2_steps.to_f64().sqrt() * self.grid.step()
    }

    /// The privacy map, evaluated.
    pub fn guarantee(&self) -> Guarantee {
        Guarantee::Approximate {
            epsilon: self.epsilon,
            delta: self.delta,
            rho: self.rho,
        }
    }

    /// Noisy scores, each on the grid.
    pub fn release<R: DpRng + ?Sized>(&self, rng: &mut R, scores: &[f64]) -> Result<Vec<f64>> {
        check_len(scores, self.dim)?;
        scores
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let n = self.grid.to_steps(x, i)?;
                let z = sampler::discrete_gaussian(rng, self.sigma2_steps)?;
                on_grid(self.grid, n, z, i)
            })
            .collect()
    }
}

/// Private argmax by permute-and-flip (McKenna & Sheldon 2020): visit the candidates in a
/// uniformly random order and stop at candidate `r` with probability
/// `exp(−ε·(q* − q_r) / (2Δ))`. It is ε-DP, never worse than the exponential mechanism, and
/// needs only exact Bernoulli(exp(−γ)) coins, on scores rounded to a grid.
#[derive(Debug, Clone)]
pub struct NoisyArgmax {
    grid: Grid,
    epsilon: Rational,
    /// `c·D`: 2 (or 1 for monotonic scores) times the integer sensitivity in grid steps.
    divisor: u128,
}

impl NoisyArgmax {
    /// `epsilon` and the sensitivity of each score. `monotonic` (every score moves the same
    /// way between neighbours, as with counts) halves the noise needed.
    pub fn new(epsilon: f64, sensitivity: f64, monotonic: bool) -> Result<Self> {
        check_range("epsilon", epsilon, 0.0, MAX_EPSILON, false)?;
        check_range("sensitivity", sensitivity, 0.0, 1e12, false)?;
        let grid = Grid::finer_than(sensitivity, GRID_BITS)?;
        // Each rounded score moves at most sensitivity/g + 1 steps between neighbours.
        let d = (sensitivity / grid.step()).ceil() as u128 + 1;
        let eps = Rational::from_f64_floor(epsilon, 40)?;
        if eps.num == 0 {
            return Err(PrivacyError::InvalidParameter {
                name: "epsilon",
                value: epsilon,
                reason: "too small",
            });
        }
        let c = if monotonic { 1 } else { 2 };
        Ok(Self {
            grid,
            epsilon: eps,
            divisor: c * d,
        })
    }

    /// The grid the scores are rounded to.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// ε as the exact rational the coins use (rounded down from the requested ε).
    pub fn epsilon_rational(&self) -> Rational {
        self.epsilon
    }

    /// `c·D`: the coin for a candidate `gap` steps below the best is
    /// Bernoulli(exp(−ε·gap / (c·D))). Exposed for the device port (`kernels/noise.cu`).
    pub fn divisor(&self) -> u128 {
        self.divisor
    }

    /// The privacy map, evaluated: ε-DP with ε at most the requested one.
    pub fn guarantee(&self) -> Guarantee {
        let epsilon = self.epsilon.to_f64();
        Guarantee::Pure {
            epsilon,
            rho: (epsilon * epsilon / 2.0).next_up(),
        }
    }

    /// The index of the chosen candidate.
    pub fn release<R: DpRng + ?Sized>(&self, rng: &mut R, scores: &[f64]) -> Result<usize> {
        if scores.is_empty() {
            return Err(PrivacyError::EmptyInput);
        }
        let steps = scores
            .iter()
            .enumerate()
            .map(|(i, &x)| self.grid.to_steps(x, i))
            .collect::<Result<Vec<i64>>>()?;
        let best = steps.iter().copied().max().unwrap_or_default();
        let mut order: Vec<usize> = (0..steps.len()).collect();
        // Fisher–Yates with exact uniform indices.
        for i in (1..order.len()).rev() {
            let j = sampler::uniform_below(rng, i as u128 + 1) as usize;
            order.swap(i, j);
        }
        let den = self
            .epsilon
            .den
            .checked_mul(self.divisor)
            .ok_or(PrivacyError::Overflow { what: "argmax" })?;
        for &r in &order {
            let n = steps.get(r).copied().unwrap_or(best);
            let gap = u128::from(best.abs_diff(n));
            let num = self
                .epsilon
                .num
                .checked_mul(gap)
                .ok_or(PrivacyError::Overflow { what: "argmax" })?;
            if sampler::bernoulli_exp_neg(rng, Rational { num, den })? {
                return Ok(r);
            }
        }
        // The best candidate has gap 0 and is always accepted, so the loop has returned.
        Err(PrivacyError::Unreachable {
            reason: "permute-and-flip accepted no candidate".into(),
        })
    }
}

/// Label-only output: the index of the highest score (the lowest index on ties). It hides the
/// scores but is **not** differentially private on its own; pair it with [`NoisyArgmax`]
/// where a guarantee is needed. Its [`Guarantee`] is [`Guarantee::NotPrivate`].
pub fn label_only(scores: &[f64]) -> Result<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &x) in scores.iter().enumerate() {
        if !x.is_finite() {
            return Err(PrivacyError::NonFiniteInput { index: i });
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i).ok_or(PrivacyError::EmptyInput)
}

/// The smallest σ (to bisection precision, never below it) for which the Gaussian mechanism
/// with ℓ₂ sensitivity `sensitivity` is (ε, δ)-DP, by the exact condition of Balle & Wang
/// 2018, Theorem 8: `Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) ≤ δ`.
pub fn analytic_gaussian_sigma(epsilon: f64, delta: f64, sensitivity: f64) -> Result<f64> {
    check_range("epsilon", epsilon, 0.0, MAX_EPSILON, false)?;
    check_range("delta", delta, 0.0, 1.0, false)?;
    check_range("sensitivity", sensitivity, 0.0, 1e15, false)?;
    // Accept only with a relative margin, so floating-point error in δ(σ) cannot let a σ
    // through whose true δ is above the target.
    let ok = |sigma: f64| gaussian_delta(epsilon, sigma, sensitivity) <= delta * (1.0 - 1e-9);
    let mut hi = sensitivity * (2.0 * (1.25 / delta).ln()).sqrt() / epsilon.min(1.0);
    let mut guard = 0;
    while !ok(hi) {
        hi *= 2.0;
        guard += 1;
        if guard > 200 {
            return Err(PrivacyError::Unreachable {
                reason: "no σ meets (ε, δ)".into(),
            });
        }
    }
    let mut lo = hi;
    while ok(lo) {
        lo /= 2.0;
        if lo < sensitivity * 1e-12 {
            return Ok(hi);
        }
        hi = lo * 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// δ(ε) of the Gaussian mechanism with noise σ and sensitivity Δ (Balle & Wang 2018), in
/// log space so the difference of two tiny terms keeps its precision.
pub fn gaussian_delta(epsilon: f64, sigma: f64, sensitivity: f64) -> f64 {
    let a = sensitivity / (2.0 * sigma);
    let b = epsilon * sigma / sensitivity;
    let l1 = log_normal_cdf(a - b);
    let l2 = epsilon + log_normal_cdf(-a - b);
    if l2 >= l1 {
        return 0.0;
    }
    l1.exp() * -libm::expm1(l2 - l1)
}

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 || dim > 1 << 24 {
        return Err(PrivacyError::InvalidParameter {
            name: "dim",
            value: dim as f64,
            reason: "must be between 1 and 2^24",
        });
    }
    Ok(())
}

fn check_len(scores: &[f64], dim: usize) -> Result<()> {
    if scores.len() != dim {
        return Err(PrivacyError::InvalidParameter {
            name: "scores length",
            value: scores.len() as f64,
            reason: "must equal the dimension the mechanism was calibrated for",
        });
    }
    Ok(())
}

/// ℓ₁ sensitivity in grid steps after rounding, as an upper bound.
fn rounded_l1_steps(sensitivity: f64, grid: Grid, dim: usize) -> f64 {
    ((sensitivity / grid.step()).next_up() + dim as f64).next_up()
}

fn on_grid(grid: Grid, n: i64, z: i64, index: usize) -> Result<f64> {
    let s = n
        .checked_add(z)
        .filter(|s| s.unsigned_abs() < 1u64 << 53)
        .ok_or(PrivacyError::OffGrid { index })?;
    Ok(grid.from_steps(s))
}

#[cfg(test)]
mod tests;
