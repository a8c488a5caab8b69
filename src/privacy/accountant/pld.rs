//! A pessimistic privacy loss distribution (PLD) accountant for the Poisson-subsampled
//! Gaussian (Koskela et al. 2020; Meiser & Mohammadi 2018; as in Google's dp_accounting).
//!
//! Each direction of add-or-remove adjacency gets its own PLD: the law of the privacy loss
//! `L = ln(P(x)/Q(x))` for `x ~ P`. Every step below only moves probability towards higher
//! loss, or bounds what it cannot place and adds that bound to δ, so the δ(ε) of the result
//! bounds the true δ(ε) from above and the reported ε is never below the true ε.
//!
//! 1. **One step.** The loss is discretized on the grid `k·h` by "connecting the dots"
//!    (Doroshenko, Ghazi, Kamath, Kumar & Manurangsi 2022): the probability of each loss
//!    interval `[kh, (k+1)h]` is split between its two ends so that both its P- and its
//!    Q-probability are kept. The result dominates the true pair and is exact at every grid
//!    point. The split is computed by Gauss–Legendre quadrature in x of
//!    `P(x)·(1 − e^{−(L(x) − kh)})/(1 − e^{−h})`, a sum of positive terms, so the masses
//!    carry relative rounding errors of a few ulps rather than the `u/h²` that differencing
//!    δ(ε) would cost. The x-tails beyond ±11.35σ (probability ≤ 1e-29 each) go to the
//!    lowest grid point or to +∞, whichever is higher in loss.
//! 2. **The loss range of the composition.** A Chernoff bound on the discrete PLD's moment
//!    generating function gives `[lo, hi]` with `P(S_T < lo), P(S_T > hi) ≤ τ`, τ = δ/10⁴.
//!    The grid step is 1e-4 unless that range would need more than [`MAX_BINS`] points; it
//!    then grows to fit (large ε, where a coarser step costs nothing measurable).
//! 3. **T-fold composition** in one pass: FFT of the step's PMF on a cyclic window covering
//!    `[lo, hi]`, T-th power, shift, inverse FFT. Mass outside the window wraps around; it is
//!    at most 2τ, which is added to the mass at +∞.
//! 4. **Rounding.** The error of the composed PMF is bounded and added to δ: the FFT's, per
//!    Fourier coefficient (see [`confidant_pld_kernel::cyclic_power`]), as an ℓ2 bound that
//!    costs `√k` times it when k grid points lie above ε; the single step's ℓ1 error times T.
//! 5. **ε at δ** is solved exactly on the discrete PMF (δ(ε) is affine in e^ε between grid
//!    points), rounding partial sums against us. A δ at or below the mass at +∞ plus the
//!    rounding bounds (about 1e-9 at 10⁴ steps; the Gaussian itself puts no mass at +∞) is
//!    refused with that reason.

use confidant_pld_kernel::{self as kernel, SubsampledGaussianLoss, U};

pub use confidant_pld_kernel::Direction;

use super::super::error::{PrivacyError, Result};
use super::super::special::normal_cdf;
use super::SubsampledGaussian;

/// The most grid points of a composed PLD; above it the grid step grows.
pub const MAX_BINS: usize = 1 << 21;

/// Discretization settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PldOptions {
    /// The finest loss grid step h (the step used unless the range needs more than
    /// `max_bins` points).
    pub discretization: f64,
    /// The most grid points of a composed PLD.
    pub max_bins: usize,
    /// The share of δ allowed for each truncated tail of the composition (moved to +∞).
    pub tail_fraction: f64,
}

impl Default for PldOptions {
    fn default() -> Self {
        Self {
            discretization: 1e-4,
            max_bins: MAX_BINS,
            tail_fraction: 1e-4,
        }
    }
}

/// x beyond ±Z·σ of the Gaussian means: Φ(−Z) < 4e-30.
const Z: f64 = 11.35;

/// A discrete privacy loss distribution: mass `pmf[i]` at loss `(offset + i)·h`, plus mass
/// at +∞, plus bounds on the floating-point error of `pmf`: `error_bound` in ℓ1, and
/// `error_l2` in ℓ2 (so the error over any k points is at most `√k·error_l2`).
#[derive(Debug, Clone)]
pub struct Pld {
    h: f64,
    offset: i64,
    pmf: Vec<f64>,
    infinity_mass: f64,
    error_bound: f64,
    error_l2: f64,
}

/// ε at δ for `mechanism` under add-or-remove adjacency: the larger of the two directions.
pub fn epsilon(mechanism: &SubsampledGaussian, delta: f64, options: &PldOptions) -> Result<f64> {
    Ok(epsilons(mechanism, &[delta], options)?
        .first()
        .copied()
        .unwrap_or(f64::INFINITY))
}

/// ε at each of `deltas`, composing once (the tails are cut for the smallest δ).
pub fn epsilons(
    mechanism: &SubsampledGaussian,
    deltas: &[f64],
    options: &PldOptions,
) -> Result<Vec<f64>> {
    let min_delta = deltas.iter().copied().fold(f64::INFINITY, f64::min);
    if !(min_delta > 0.0 && min_delta < 1.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "delta",
            value: min_delta,
            reason: "must be within (0, 1)",
        });
    }
    let mut eps = vec![0.0f64; deltas.len()];
    for direction in [Direction::Remove, Direction::Add] {
        let composed = composed(mechanism, direction, min_delta, options)?;
        for (e, &d) in eps.iter_mut().zip(deltas) {
            *e = e.max(composed.epsilon(d)?);
        }
    }
    Ok(eps)
}

/// The pessimistic PLD of `mechanism.steps` steps in one direction, with tails cut for `delta`.
pub fn composed(
    mechanism: &SubsampledGaussian,
    direction: Direction,
    delta: f64,
    options: &PldOptions,
) -> Result<Pld> {
    let (q, sigma, steps) = (
        mechanism.sample_rate,
        mechanism.noise_multiplier,
        mechanism.steps,
    );
    let h_min = options.discretization;
    if !(h_min > 1e-7 && h_min < 1.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "discretization",
            value: h_min,
            reason: "must be within (1e-7, 1)",
        });
    }
    if !(options.max_bins >= 1024 && options.max_bins <= 1 << 26) {
        return Err(PrivacyError::InvalidParameter {
            name: "max_bins",
            value: options.max_bins as f64,
            reason: "must be within [2^10, 2^26]",
        });
    }
    if !(options.tail_fraction > 0.0 && options.tail_fraction <= 0.1) {
        return Err(PrivacyError::InvalidParameter {
            name: "tail_fraction",
            value: options.tail_fraction,
            reason: "must be within (0, 0.1]",
        });
    }
    let tau = delta * options.tail_fraction;
    let mut h = h_min;
    // The grid grows at most a few times: each retry sizes it from the range just measured.
    for _ in 0..8 {
        let one = single_step(q, sigma, direction, h, options.max_bins)?;
        let one = match one {
            Some(one) => one,
            None => {
                h *= 2.0;
                continue;
            }
        };
        if steps == 1 {
            return Ok(one);
        }
        let (lo, hi) = one.chernoff_range(steps, tau);
        let k_lo = (lo / h).floor();
        let k_hi = (hi / h).ceil();
        let bins = k_hi - k_lo + 1.0;
        if bins > options.max_bins as f64 {
            h *= (bins / options.max_bins as f64) * 1.02;
            continue;
        }
        return Ok(one.self_compose(steps, k_lo as i64, bins as usize, 2.0 * tau));
    }
    Err(PrivacyError::Overflow {
        what: "PLD support (noise multiplier too small for any grid within max_bins)",
    })
}

/// The pessimistic PLD of one step in one direction on the grid `k·h`, or `None` when it
/// needs more than `max_bins` points.
fn single_step(
    q: f64,
    sigma: f64,
    direction: Direction,
    h: f64,
    max_bins: usize,
) -> Result<Option<Pld>> {
    let loss = SubsampledGaussianLoss::new(q, sigma, direction);
    // P's probability of x < t and of x > t.
    let p_below = |t: f64| match direction {
        Direction::Remove => (1.0 - q) * normal_cdf(t / sigma) + q * normal_cdf((t - 1.0) / sigma),
        Direction::Add => normal_cdf(t / sigma),
    };
    let p_above = |t: f64| match direction {
        Direction::Remove => (1.0 - q) * normal_cdf(-t / sigma) + q * normal_cdf((1.0 - t) / sigma),
        Direction::Add => normal_cdf(-t / sigma),
    };
    let (x_min, x_max) = (-Z * sigma, 1.0 + Z * sigma);
    let (l_a, l_b) = (loss.loss(x_min), loss.loss(x_max));
    let (l_lo, l_hi) = (l_a.min(l_b), l_a.max(l_b));
    let k_lo = (l_lo / h).floor();
    let k_hi = (l_hi / h).ceil();
    let span = k_hi - k_lo + 1.0;
    if !span.is_finite() || span > max_bins as f64 {
        return Ok(None);
    }
    let len = span as usize;
    let k_lo = k_lo as i64;
    let (mut pmf, weighted_abs_loss) = kernel::connect_the_dots(&loss, h, k_lo, len, x_min, x_max);
    // The x-tails: one side has losses below the grid's exact part (they go to the first
    // grid point at or above l_lo, which raises them), the other above it (they go to +∞).
    let (low_tail, high_tail) = match direction {
        Direction::Remove => (p_below(x_min), p_above(x_max)),
        Direction::Add => (p_above(x_max), p_below(x_min)),
    };
    let low_index = ((l_lo / h).ceil() as i64 - k_lo).clamp(0, len as i64 - 1) as usize;
    if let Some(v) = pmf.get_mut(low_index) {
        *v += low_tail;
    }
    let total: f64 = pmf.iter().sum::<f64>() + high_tail;
    // What quadrature and rounding left unplaced goes to +∞ (pessimistic); a surplus stays.
    let infinity_mass = high_tail + (1.0 - total).max(0.0);
    // Rounding: each mass is a sum of positive terms with a few ulps of relative error per
    // term (64u covers exp, expm1 and the products); the split of each interval between its
    // ends uses L(x) − kh, whose absolute error is a few ulps of |L|, relative to h.
    let error_bound = 64.0 * U * total.max(1.0) + 8.0 * U * weighted_abs_loss / h;
    Ok(Some(Pld {
        h,
        offset: k_lo,
        pmf,
        infinity_mass,
        error_bound,
        error_l2: 0.0,
    }))
}

impl Pld {
    /// The grid step.
    pub fn step(&self) -> f64 {
        self.h
    }

    /// The number of grid points.
    pub fn len(&self) -> usize {
        self.pmf.len()
    }

    /// Whether the PMF has no grid points.
    pub fn is_empty(&self) -> bool {
        self.pmf.is_empty()
    }

    /// What δ always includes: the mass at +∞ and the ℓ1 rounding bound that does not
    /// depend on ε. (The ℓ2 part adds `√(points above ε)·error_l2`.)
    pub fn floor(&self) -> f64 {
        self.infinity_mass + self.error_bound
    }

    /// `[lo, hi]` holding the sum of `steps` copies of the finite part but for `tau` each side.
    fn chernoff_range(&self, steps: u64, tau: f64) -> (f64, f64) {
        kernel::chernoff_range(&self.pmf, self.offset as f64 * self.h, self.h, steps, tau)
    }

    /// `steps` copies composed, on the cyclic window of `bins` points from grid index
    /// `window_lo`; `aliased` bounds the mass of the composition outside the window, which
    /// wraps around and is therefore also counted at +∞.
    fn self_compose(&self, steps: u64, window_lo: i64, bins: usize, aliased: f64) -> Pld {
        let size = kernel::fft_size(bins.max(self.pmf.len()));
        let t = steps as f64;
        // The sum of `steps` grid indices j (from self.offset) lies at composed index
        // steps·offset + J; the window's point n is J = n + shift.
        let shift_full = i128::from(window_lo) - i128::from(self.offset) * i128::from(steps);
        let shift = shift_full.rem_euclid(size as i128) as u64;
        // The FFT's rounding, bounded per Fourier coefficient (see kernel::cyclic_power).
        let (pmf, error_l2) = kernel::cyclic_power(&self.pmf, size, steps, shift);
        // The single step's own ℓ1 error ε₁ becomes at most T·ε₁·(1 + ε₁)^(T−1).
        let e1 = self.error_bound;
        let propagated = t * e1 * ((t - 1.0) * libm::log1p(e1)).exp();
        // Mass at +∞ after T steps: 1 − (1 − m)^T.
        let infinity = -libm::expm1(t * libm::log1p(-self.infinity_mass.min(1.0)));
        Pld {
            h: self.h,
            offset: window_lo,
            pmf,
            infinity_mass: (infinity + aliased).min(1.0),
            error_bound: propagated,
            error_l2,
        }
    }

    /// δ(ε) = P(L = ∞) + E[(1 − e^{ε − L})₊], plus the floating-point error bounds.
    pub fn delta(&self, epsilon: f64) -> f64 {
        let mut delta = 0.0;
        let mut above = 0usize;
        for (i, &p) in self.pmf.iter().enumerate() {
            let loss = (self.offset + i as i64) as f64 * self.h;
            if loss > epsilon {
                delta += p * -libm::expm1(epsilon - loss);
                above += 1;
            }
        }
        delta * (1.0 + 4.0 * self.pmf.len() as f64 * U)
            + self.floor()
            + (above as f64).sqrt() * self.error_l2
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ δ, rounded up.
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        let floor = self.floor();
        kernel::epsilon_at(&self.pmf, self.offset, self.h, delta, floor, self.error_l2).ok_or_else(
            || PrivacyError::Unreachable {
                reason: format!(
                    "δ = {delta} is below this PLD's mass at infinite loss plus its rounding \
                     bound ({floor:e}); the Gaussian itself has none, so ask for a larger δ or \
                     use the rdp accountant"
                ),
            },
        )
    }
}
