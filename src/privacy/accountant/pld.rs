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
//!    δ(ε) would cost. The x-tails beyond ±zσ (z ≥ 11.35; probability ≤ 4e-30 each) go to the
//!    lowest grid point or to +∞, whichever is higher in loss.
//!    Rounding is kept pessimistic too: each quadrature node's loss is raised by a bound on
//!    its rounding error before it is split, so rounding never moves mass down, and the
//!    masses' relative rounding error e = 64u is applied as a factor `(1 − e)^−T` to the
//!    composition. The x-tails cut are below `10⁻⁶·δ/T` each.
//! 2. **The window.** Chernoff bounds with the exact moment generating function M(λ) of the
//!    discrete PMF give `hi` with `P(S_T > hi) ≤ τ`, τ = δ/10⁴ (that mass is counted at
//!    +∞), the bottom `lo` of the range, and `ε_C ≥ ε`, the Chernoff bound on ε at its
//!    optimal λ*. The composition is computed on the window from `ε_C − 12/λ*` up (see
//!    `window` for how its width keeps what wraps around under 10⁻³·δ, for which tilt λ ≤ λ*).
//!    The grid step is 1e-4 unless the window would need more than [`MAX_BINS`] points; it
//!    then grows to fit (large ε, where a coarser step costs nothing measurable).
//! 3. **T-fold composition** in one pass of the exponentially tilted PMF `p_i·e^{λL_i}/M(λ)`:
//!    real FFT, T-th power, inverse FFT, rotation to the window, then the tilt undone
//!    (`× M(λ)^T·e^{−λL}`). Tilting moves the composition's bulk to ε, so that the window
//!    can be narrow and the FFT's rounding (absolute in the tilted measure) becomes relative
//!    to δ after the tilt is undone. Mass outside the window wraps around: from below it
//!    lands higher (only adds), from above lower, and that mass is also counted at +∞.
//! 4. **Rounding.** The FFT's error is bounded per Fourier coefficient (see
//!    [`confidant_pld_kernel::cyclic_power`]) as an ℓ2 bound in the tilted measure, which
//!    costs `error_l2·√(Σ f_i²)` over the points above ε, `f_i` the factor that undoes the
//!    tilt at point i (rounded up).
//! 5. **ε at δ** is solved exactly on the discrete PMF (δ(ε) is affine in e^ε between grid
//!    points), rounding partial sums against us. If ε falls below the window (the Chernoff
//!    bound overshot), the window is recomputed down to `lo`. The direction whose Chernoff
//!    bound on ε is already below the other's answer is not composed at all. δ is refused
//!    only at or below the mass at +∞ (about 10⁻⁴·δ by construction, so in practice never;
//!    the Gaussian itself puts no mass at +∞).
//!
//! `dp_accounting`'s `get_epsilon_for_delta` underflows above ε ≈ 745 (it sums `e^{−L}·p`)
//! and returns the loss quantile there, about 1/(1 + 1/λ) higher than the hockey-stick ε;
//! the reference fixture uses its `get_delta_for_epsilon` by bisection instead (see
//! `scripts/accountant-reference.py`).

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
    /// Whether to compose the exponentially tilted PMF on a window around ε (see the
    /// module's notes); without it the window covers the whole composition.
    pub tilt: bool,
}

impl Default for PldOptions {
    fn default() -> Self {
        Self {
            discretization: 1e-4,
            max_bins: MAX_BINS,
            tail_fraction: 1e-4,
            tilt: true,
        }
    }
}

/// How far below the Chernoff bound on ε (in units of 1/λ, i.e. of ln δ) the window reaches.
const MARGIN: f64 = 12.0;

/// x beyond ±Z·σ of the Gaussian means: Φ(−Z) < 4e-30, unless a smaller δ asks for more.
const Z: f64 = 11.35;

/// A discrete privacy loss distribution: mass `pmf[i]` at loss `(offset + i)·h`, plus mass
/// at +∞, plus a bound on the floating-point error of `pmf`: `error_l2` in ℓ2 before the
/// tilt is undone, so the error over the points above ε is at most
/// `error_l2·√(Σ f_i²)` with `f_i` the tilt's factor (`√k·error_l2` over k points without
/// a tilt).
#[derive(Debug, Clone)]
pub struct Pld {
    h: f64,
    offset: i64,
    pmf: Vec<f64>,
    infinity_mass: f64,
    error_l2: f64,
    tilt: kernel::Tilt,
}

/// ε at δ for `mechanism` under add-or-remove adjacency: the larger of the two directions.
pub fn epsilon(mechanism: &SubsampledGaussian, delta: f64, options: &PldOptions) -> Result<f64> {
    Ok(epsilons(mechanism, &[delta], options)?
        .first()
        .copied()
        .unwrap_or(f64::INFINITY))
}

/// ε at each of `deltas`, composing once per direction (the window is planned for the
/// smallest δ; a δ whose ε falls below the window is answered by a second composition).
pub fn epsilons(
    mechanism: &SubsampledGaussian,
    deltas: &[f64],
    options: &PldOptions,
) -> Result<Vec<f64>> {
    let min_delta = deltas.iter().copied().fold(f64::INFINITY, f64::min);
    if !(min_delta > 0.0 && min_delta < 1.0) || deltas.iter().any(|d| d.is_nan() || *d >= 1.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "delta",
            value: min_delta,
            reason: "must be within (0, 1)",
        });
    }
    let mut eps = vec![0.0f64; deltas.len()];
    for direction in [Direction::Remove, Direction::Add] {
        if direction == Direction::Add && dominated(mechanism, direction, deltas, &eps, options)? {
            continue;
        }
        let composed = composed(mechanism, direction, min_delta, options)?;
        for (e, &d) in eps.iter_mut().zip(deltas) {
            let here = match composed.solve(d)? {
                Solved::Epsilon(x) => x,
                Solved::BelowWindow(loose) => {
                    // The Chernoff bound overshot ε by more than MARGIN allows: compose
                    // again on a window reaching down to the Chernoff bottom.
                    let again = composed_for(mechanism, direction, d, options, true)?;
                    match again.solve(d)? {
                        Solved::Epsilon(x) => x,
                        Solved::BelowWindow(x) => x.min(loose),
                    }
                }
            };
            *e = e.max(here);
        }
    }
    Ok(eps)
}

/// Whether a Chernoff bound shows that `direction`'s ε at each of `deltas` is at most the
/// `found` one (so that composing it cannot change the answer). Rigorous: for the
/// pessimistic single-step PMF scaled by its rounding bound, with mass m at +∞,
/// `δ_T(x) ≤ P(S_T > x) + 1 − (1 − m)^T` and `P(S_T > x) ≤ e^{T·ln M(λ) − λx}`.
fn dominated(
    mechanism: &SubsampledGaussian,
    direction: Direction,
    deltas: &[f64],
    found: &[f64],
    options: &PldOptions,
) -> Result<bool> {
    let min_delta = deltas.iter().copied().fold(f64::INFINITY, f64::min);
    let z = x_cut(min_delta * options.tail_fraction * 1e-2 / mechanism.steps as f64);
    let mut h = options.discretization;
    let mut one = None;
    for _ in 0..8 {
        one = single_step(
            mechanism.sample_rate,
            mechanism.noise_multiplier,
            direction,
            h,
            z,
            options.max_bins,
        )?;
        if one.is_some() {
            break;
        }
        h *= 2.0;
    }
    let Some(one) = one else {
        return Ok(false);
    };
    let t = mechanism.steps as f64;
    let base = one.offset as f64 * one.h;
    let ln_scale = -t * libm::log1p(-kernel::MASS_RELATIVE_ERROR);
    let infinity = -libm::expm1(t * libm::log1p(-one.infinity_mass.min(1.0)));
    for (&d, &e) in deltas.iter().zip(found) {
        let room = d - infinity;
        if !(room > 0.0 && e > 0.0) {
            return Ok(false);
        }
        let (_, ln_tail) = kernel::golden_min(|l| {
            t * kernel::ln_mgf_upper(&one.pmf, base, one.h, l) + ln_scale - l * e
        });
        if ln_tail.is_nan() || ln_tail > room.ln() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The pessimistic PLD of `mechanism.steps` steps in one direction, with its window and
/// tails planned for `delta`.
pub fn composed(
    mechanism: &SubsampledGaussian,
    direction: Direction,
    delta: f64,
    options: &PldOptions,
) -> Result<Pld> {
    composed_for(mechanism, direction, delta, options, false)
}

fn check_options(options: &PldOptions) -> Result<()> {
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
    Ok(())
}

/// As [`composed`]; `full` starts the window at the Chernoff bottom.
fn composed_for(
    mechanism: &SubsampledGaussian,
    direction: Direction,
    delta: f64,
    options: &PldOptions,
    full: bool,
) -> Result<Pld> {
    check_options(options)?;
    let (q, sigma, steps) = (
        mechanism.sample_rate,
        mechanism.noise_multiplier,
        mechanism.steps,
    );
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "delta",
            value: delta,
            reason: "must be within (0, 1)",
        });
    }
    let tau = delta * options.tail_fraction;
    // The x-tails cut from each step go to +∞ (or are raised): keep their total, over all
    // steps, to a millionth of δ.
    let z = x_cut(tau * 1e-2 / steps as f64);
    let mut h = options.discretization;
    // The grid grows at most a few times: each retry sizes it from the range just measured.
    for _ in 0..8 {
        let Some(one) = single_step(q, sigma, direction, h, z, options.max_bins)? else {
            h *= 2.0;
            continue;
        };
        if steps == 1 {
            // A mass m̂ = m(1 + θ), |θ| ≤ e, bounds m by m̂/(1 − e).
            return Ok(one.scaled((1.0 + 4.0 * U) / (1.0 - kernel::MASS_RELATIVE_ERROR)));
        }
        let plan = kernel::chernoff_plan(&one.pmf, one.offset as f64 * h, h, steps, tau, delta);
        let (lo, hi, lambda) = window(&one, steps, &plan, delta, options.tilt, full);
        let k_lo = (lo / h).floor();
        let k_hi = (hi / h).ceil();
        let bins = k_hi - k_lo + 1.0;
        if bins > options.max_bins as f64 {
            h *= (bins / options.max_bins as f64) * 1.02;
            continue;
        }
        return one.self_compose(steps, k_lo as i64, bins as usize, tau, lambda);
    }
    Err(PrivacyError::Overflow {
        what: "PLD support (noise multiplier too small for any grid within max_bins)",
    })
}

/// The loss window `[lo, hi]` to compose on, and the tilt λ (0 for none). Without a tilt,
/// the whole Chernoff range. With one at λ, the top is at least the same but the bottom may
/// be higher:
/// - mass below the window wraps around to its top, damped by `e^{−λW}` for a window of
///   width W, and only ever adds mass: `W ≥ ln(10³/δ)/λ` keeps it under 10⁻³·δ;
/// - mass above the window's top wraps down by W, amplified by `e^{λW}`; what lands above the
///   window's bottom b is at most `e^{λW}·P(S ≥ b + W)`, which is at most
///   `exp(λW + T·ln M(λ+μ) − (λ+μ)(b+W))` for any μ > 0, so under 10⁻³·δ once
///   `W ≥ min_μ (T·ln M(λ+μ) − (λ+μ)·b − ln(10⁻³δ))/μ`. It too only adds mass (the
///   mass above the Chernoff top is also counted at +∞).
///
/// The bottom is kept `MARGIN/λ*` under the Chernoff bound on ε (λ* its optimal λ), which is
/// above the true ε by a factor of a few tens in δ (e³ at q = 0.05, σ = 0.8, T = 10⁴); a δ
/// whose ε is below the window anyway is composed again. λ is the one of λ*·0.65^k, k < 4,
/// that needs the narrowest window.
fn window(
    one: &Pld,
    steps: u64,
    plan: &kernel::ChernoffPlan,
    delta: f64,
    tilt: bool,
    full: bool,
) -> (f64, f64, f64) {
    let (lo, hi) = (plan.lo, plan.hi);
    if !tilt || plan.lambda.is_nan() || plan.lambda <= 0.0 || !plan.eps_upper.is_finite() {
        return (lo, hi, 0.0);
    }
    // At or below the Chernoff bottom, the window starts there (the tilt still keeps the
    // rounding relative to δ).
    let bottom = if full {
        lo
    } else {
        (plan.eps_upper - MARGIN / plan.lambda).min(hi).max(lo)
    };
    let (t, base, h) = (steps as f64, one.offset as f64 * one.h, one.h);
    let ln_target = (1e-3 * delta).ln();
    let mut best = (f64::INFINITY, 0.0);
    let mut lambda = plan.lambda;
    for _ in 0..4 {
        let below = -ln_target / lambda;
        let (_, above) = kernel::golden_min(|mu| {
            let l = lambda + mu;
            (t * kernel::ln_mgf_upper(&one.pmf, base, h, l) - l * bottom - ln_target) / mu
        });
        let width = below.max(above).max(hi - bottom);
        if width < best.0 {
            best = (width, lambda);
        }
        lambda *= 0.65;
    }
    if best.1 == 0.0 {
        return (lo, hi, 0.0);
    }
    (bottom, bottom + best.0, best.1)
}

/// The x at which the Gaussian's tail mass falls to `tail` (at least 11.35σ).
fn x_cut(tail: f64) -> f64 {
    let mut z = Z;
    while normal_cdf(-z) > tail && z < 40.0 {
        z += 0.25;
    }
    z
}

/// The pessimistic PLD of one step in one direction on the grid `k·h`, or `None` when it
/// needs more than `max_bins` points. Its masses carry a relative rounding error of at most
/// [`kernel::MASS_RELATIVE_ERROR`], for the caller to scale by.
fn single_step(
    q: f64,
    sigma: f64,
    direction: Direction,
    h: f64,
    z: f64,
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
    let (x_min, x_max) = (-z * sigma, 1.0 + z * sigma);
    let (l_a, l_b) = (loss.loss(x_min), loss.loss(x_max));
    let (l_lo, l_hi) = (l_a.min(l_b), l_a.max(l_b));
    let k_lo = (l_lo / h).floor() - 1.0;
    let k_hi = (l_hi / h).ceil() + 2.0;
    let span = k_hi - k_lo + 1.0;
    if !span.is_finite() || span > max_bins as f64 {
        return Ok(None);
    }
    let len = span as usize;
    let k_lo = k_lo as i64;
    let (mut pmf, spilled) = kernel::connect_the_dots(&loss, h, k_lo, len, x_min, x_max);
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
    // What quadrature left unplaced goes to +∞ (pessimistic); a surplus stays. The masses
    // are scaled up by their rounding bound later, so a deficit within it is rounding.
    let total = neumaier_sum(&pmf) / (1.0 - kernel::MASS_RELATIVE_ERROR) + high_tail + spilled;
    let infinity_mass = high_tail + spilled + (1.0 - total - 4.0 * U).max(0.0);
    Ok(Some(Pld {
        h,
        offset: k_lo,
        pmf,
        infinity_mass,
        error_l2: 0.0,
        tilt: kernel::Tilt::NONE,
    }))
}

/// Σ values, compensated (Neumaier), to within a few ulps of the total.
fn neumaier_sum(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for &v in values {
        let t = sum + v;
        c += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + c
}

/// What [`Pld::solve`] found.
enum Solved {
    Epsilon(f64),
    /// ε lies below the window; the value carried meets δ but may be loose.
    BelowWindow(f64),
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

    /// What δ always includes: the mass at +∞ (the cut tails included). (The rounding
    /// bound adds `error_l2·√(Σ f_i²)` over the points above ε.)
    pub fn floor(&self) -> f64 {
        self.infinity_mass
    }

    /// Every mass multiplied by `factor` (≥ 1: a bound on the relative rounding error).
    fn scaled(mut self, factor: f64) -> Pld {
        for v in self.pmf.iter_mut() {
            *v *= factor;
        }
        self
    }

    /// `steps` copies composed, on the cyclic window of `bins` points from grid index
    /// `window_lo`, with the single step's PMF tilted by `e^{λL}`. The mass of the
    /// composition above the window (at most τ by Chernoff) wraps around to lower loss, so
    /// it is also counted at +∞; mass below the window wraps to higher loss, which only
    /// adds.
    fn self_compose(
        &self,
        steps: u64,
        window_lo: i64,
        bins: usize,
        tau: f64,
        lambda: f64,
    ) -> Result<Pld> {
        let size = kernel::fft_size(bins.max(self.pmf.len()));
        let t = steps as f64;
        let base = self.offset as f64 * self.h;
        let (input, c) = if lambda > 0.0 {
            let c = kernel::ln_mgf(&self.pmf, base, self.h, lambda);
            (kernel::tilt(&self.pmf, base, self.h, lambda, c), c)
        } else {
            (self.pmf.clone(), 0.0)
        };
        // The sum of `steps` grid indices j (from self.offset) lies at composed index
        // steps·offset + J; the window's point n is J = n + shift.
        let shift_full = i128::from(window_lo) - i128::from(self.offset) * i128::from(steps);
        let shift = shift_full.rem_euclid(size as i128) as u64;
        // The FFT's rounding, bounded per Fourier coefficient (see kernel::cyclic_power).
        let (mut pmf, error_l2) =
            kernel::cyclic_power(&input, size, steps, shift).ok_or(PrivacyError::Overflow {
                what: "FFT size of the PLD composition",
            })?;
        // Each single-step mass is within a relative MASS_RELATIVE_ERROR of the exact one,
        // and the tilt's exp within a few ulps; a product of T of them within (1 + e)^T.
        let e = kernel::MASS_RELATIVE_ERROR
            + if lambda > 0.0 {
                let top = base + self.h * self.pmf.len() as f64;
                8.0 * U * (lambda * base.abs().max(top.abs()) + c.abs() + 750.0)
            } else {
                0.0
            };
        // m̂ = m(1 + θ) with |θ| ≤ e bounds m by m̂/(1 − e); a product of T by (1 − e)^−T.
        let relative = (-t * libm::log1p(-e)).exp() * (1.0 + 4.0 * U);
        let tilt = kernel::Tilt {
            lambda,
            ln_scale: t * c,
        };
        tilt.apply(&mut pmf, window_lo, self.h);
        for v in pmf.iter_mut() {
            *v *= relative;
        }
        // Mass at +∞ after T steps: 1 − (1 − m)^T.
        let infinity = -libm::expm1(t * libm::log1p(-self.infinity_mass.min(1.0)));
        Ok(Pld {
            h: self.h,
            offset: window_lo,
            pmf,
            // The Chernoff bound τ holds for the computed PMF; the scaled one's tail is at
            // most `relative` times it.
            infinity_mass: (infinity + tau * relative).min(1.0),
            error_l2: error_l2 * relative,
            tilt,
        })
    }

    /// δ(ε) = P(L = ∞) + E[(1 − e^{ε − L})₊], plus the floating-point error bounds, counting
    /// only the points in the window (which, for ε below it, is not the whole δ).
    pub fn delta(&self, epsilon: f64) -> f64 {
        let mut delta = 0.0;
        let mut f2 = 0.0;
        for (i, &p) in self.pmf.iter().enumerate() {
            let loss = (self.offset + i as i64) as f64 * self.h;
            if loss > epsilon {
                delta += p * -libm::expm1(epsilon - loss);
                let f = self.tilt.factor(loss);
                f2 += f * f;
            }
        }
        let grow = 1.0 + 4.0 * self.pmf.len() as f64 * U;
        delta * grow + self.floor() + (f2 * grow).sqrt() * self.error_l2
    }

    fn solve(&self, delta: f64) -> Result<Solved> {
        let floor = self.floor();
        match kernel::epsilon_at(
            &self.pmf,
            self.offset,
            self.h,
            delta,
            floor,
            self.error_l2,
            self.tilt,
        ) {
            kernel::EpsilonAt::Epsilon(e) => Ok(Solved::Epsilon(e)),
            kernel::EpsilonAt::BelowGrid(e) => Ok(Solved::BelowWindow(e)),
            kernel::EpsilonAt::Unreachable => Err(PrivacyError::Unreachable {
                reason: format!(
                    "δ = {delta} is at or below this PLD's mass at infinite loss plus its \
                     rounding bound ({floor:e}); the Gaussian itself has none"
                ),
            }),
        }
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ δ, rounded up (for a window that does not reach down
    /// to it, the lowest ε the window certifies).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        match self.solve(delta)? {
            Solved::Epsilon(e) | Solved::BelowWindow(e) => Ok(e),
        }
    }
}
