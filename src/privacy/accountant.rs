//! Privacy accounting for DP-SGD: the Poisson-subsampled Gaussian mechanism composed over
//! training steps, and the noise calibration that meets a target ε.
//!
//! - [`rdp`]: Rényi DP at integer and fractional orders (Mironov, Talwar & Zhang 2019),
//!   converted to (ε, δ) by Balle et al. 2020 (or the classic Mironov 2017 bound).
//! - [`pld`]: a privacy loss distribution discretized pessimistically, so the reported ε is
//!   an upper bound; tight to the discretization step. Long horizons (10⁴ steps and more)
//!   are composed in one FFT pass of the exponentially tilted PMF, on a loss window around
//!   ε sized by Chernoff bounds, with every rounding error bounded relative to δ. The
//!   `prv` accountant is an alias of it (see [`AccountantKind::Prv`]).

pub mod pld;
pub mod rdp;

use super::error::{PrivacyError, Result, check_range};

/// Which accountant computes ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountantKind {
    /// Rényi DP with the Balle et al. 2020 conversion.
    Rdp,
    /// The pessimistic privacy loss distribution.
    Pld,
    /// The privacy random variable (Gopi, Lee & Wutschitz 2021). An alias, by design: the
    /// PRV is the same distribution as the PLD seen as a random variable, and here it is
    /// computed by the same pessimistic PLD code (tilted FFT composition with rigorous error
    /// bounds), so its ε equals [`AccountantKind::Pld`]'s bit for bit. It does not use
    /// Microsoft's `prv-accountant` algorithm or its error bounds (an estimate with an
    /// error interval); it exists so that `--accountant prv` answers like `pld`.
    Prv,
}

impl AccountantKind {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
            Self::Prv => "prv",
        }
    }
}

/// DP-SGD's mechanism: each step samples each record with probability `sample_rate`
/// (Poisson), clips per-record gradients to norm C, and adds N(0, (noise_multiplier·C)²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubsampledGaussian {
    /// The Poisson sampling probability q, in (0, 1].
    pub sample_rate: f64,
    /// σ / C, positive.
    pub noise_multiplier: f64,
    /// The number of steps composed.
    pub steps: u64,
}

impl SubsampledGaussian {
    fn check(&self) -> Result<()> {
        check_range("sample_rate", self.sample_rate, 0.0, 1.0, true)?;
        if self.sample_rate == 0.0 {
            return Err(PrivacyError::InvalidParameter {
                name: "sample_rate",
                value: 0.0,
                reason: "must be positive",
            });
        }
        check_range("noise_multiplier", self.noise_multiplier, 0.0, 1e6, false)?;
        if self.steps == 0 || self.steps > 1 << 32 {
            return Err(PrivacyError::InvalidParameter {
                name: "steps",
                value: self.steps as f64,
                reason: "must be between 1 and 2^32",
            });
        }
        Ok(())
    }
}

/// The ε at which `mechanism` is (ε, δ)-DP under add-or-remove-one adjacency.
pub fn epsilon(mechanism: &SubsampledGaussian, delta: f64, kind: AccountantKind) -> Result<f64> {
    mechanism.check()?;
    check_range("delta", delta, 0.0, 1.0, false)?;
    match kind {
        AccountantKind::Rdp => {
            let orders = rdp::default_orders();
            let curve = rdp::rdp_curve(mechanism, &orders)?;
            Ok(rdp::epsilon_from_rdp(&orders, &curve, delta, rdp::Conversion::Balle2020)?.0)
        }
        AccountantKind::Pld | AccountantKind::Prv => {
            pld::epsilon(mechanism, delta, &pld::PldOptions::default())
        }
    }
}

/// ε at each of `deltas` (one composition per direction for the PLD and PRV accountants).
pub fn epsilons(
    mechanism: &SubsampledGaussian,
    deltas: &[f64],
    kind: AccountantKind,
) -> Result<Vec<f64>> {
    mechanism.check()?;
    for &delta in deltas {
        check_range("delta", delta, 0.0, 1.0, false)?;
    }
    match kind {
        AccountantKind::Rdp => deltas
            .iter()
            .map(|&d| epsilon(mechanism, d, kind))
            .collect(),
        AccountantKind::Pld | AccountantKind::Prv => {
            pld::epsilons(mechanism, deltas, &pld::PldOptions::default())
        }
    }
}

/// The ratio between neighbouring points of the noise-multiplier grid: σ_j = 1.001^j.
pub const NOISE_GRID_RATIO: f64 = 1.001;

/// The noise multiplier at point `j` of the grid: `1.001^j` rounded to 12 significant
/// digits, so that it survives a round trip through decimal text (JSON) exactly.
pub fn noise_grid_point(j: i64) -> f64 {
    let x = (j as f64 * NOISE_GRID_RATIO.ln()).exp();
    // m / 10^k with m < 2^53 and 10^k exact (k ≤ 22) is the double nearest the decimal.
    let k = 11 - x.log10().floor() as i32;
    if (0..=22).contains(&k) {
        let scale = 10f64.powi(k);
        (x * scale).round() / scale
    } else {
        x
    }
}

/// The smallest noise multiplier on the grid `1.001^j` (j an integer; a relative step of
/// 1e-3) at which `steps` steps at `sample_rate` are (target_epsilon, δ)-DP by `kind`. Both
/// sides are checked: the ε of the returned σ is at most the target, and the ε of the grid
/// point below it exceeds the target.
pub fn noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    kind: AccountantKind,
) -> Result<f64> {
    check_range("epsilon", target_epsilon, 0.0, 1e4, false)?;
    check_range("delta", delta, 0.0, 1.0, false)?;
    let ln_target = target_epsilon.ln();
    // j ∈ [J_MIN, J_MAX] spans σ from about 1e-3 to 1e6 (the range `epsilon` accepts).
    const J_MIN: i64 = -6_900;
    const J_MAX: i64 = 13_800;
    // f(j) = ln ε(σ_j) − ln target: positive where σ_j is too small. A support too large for
    // the PLD grid (σ tiny) counts as too small a σ, which only ever moves the answer up.
    let f = |j: i64| -> Result<f64> {
        let m = SubsampledGaussian {
            sample_rate,
            noise_multiplier: noise_grid_point(j),
            steps,
        };
        match epsilon(&m, delta, kind) {
            Ok(e) => Ok(e.max(1e-300).ln() - ln_target),
            Err(PrivacyError::Overflow { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };
    let step = NOISE_GRID_RATIO.ln();
    // Where to start, and how fast ln ε falls per grid step there. RDP is cheap and its ε is
    // an upper bound on the PLD's, so its σ is a close guess from above for the PLD; without
    // it, ε falls roughly like 1/σ.
    let (j0, slope) = match kind {
        AccountantKind::Rdp => (0i64, -step),
        AccountantKind::Pld | AccountantKind::Prv => {
            match noise_multiplier(
                target_epsilon,
                delta,
                sample_rate,
                steps,
                AccountantKind::Rdp,
            ) {
                Ok(s) => {
                    let j = (s.ln() / step).round() as i64;
                    let rdp_at = |j: i64| {
                        epsilon(
                            &SubsampledGaussian {
                                sample_rate,
                                noise_multiplier: noise_grid_point(j),
                                steps,
                            },
                            delta,
                            AccountantKind::Rdp,
                        )
                        .map(|e| e.max(1e-300).ln())
                    };
                    let slope = match (rdp_at(j), rdp_at(j - 50)) {
                        (Ok(a), Ok(b)) if a < b => (a - b) / 50.0,
                        _ => -step,
                    };
                    (j.clamp(J_MIN, J_MAX), slope)
                }
                Err(_) => (0, -step),
            }
        }
    };
    // Bracket: f(lo) > 0 ≥ f(hi), moving by the slope's estimate of the distance, 2% past it.
    let (mut j_lo, mut f_lo, mut j_hi, mut f_hi);
    let mut j = j0;
    let mut fj = f(j0)?;
    let mut stride = 1i64;
    loop {
        let guess = if fj.is_finite() {
            ((fj / slope).abs() * 1.02).ceil() as i64 + 1
        } else {
            0
        };
        let mv = guess.max(stride);
        let next = if fj > 0.0 { j + mv } else { j - mv }.clamp(J_MIN, J_MAX);
        if next == j {
            return Err(PrivacyError::Unreachable {
                reason: format!(
                    "ε = {target_epsilon} at δ = {delta} needs a noise multiplier outside \
                     [1e-3, 1e6]"
                ),
            });
        }
        let fn_ = f(next)?;
        if (fj > 0.0) != (fn_ > 0.0) {
            if fj > 0.0 {
                (j_lo, f_lo, j_hi, f_hi) = (j, fj, next, fn_);
            } else {
                (j_lo, f_lo, j_hi, f_hi) = (next, fn_, j, fj);
            }
            break;
        }
        j = next;
        fj = fn_;
        stride *= 2;
    }
    // Narrow to neighbours by false position on ln ε (Illinois), with bisection whenever the
    // bracket fails to halve.
    let mut width_before = j_hi - j_lo;
    let mut slow = 0;
    while j_hi - j_lo > 1 {
        let (a, b) = (f_lo.min(1e300), f_hi.max(-1e300));
        let root = j_lo as f64 + (j_hi - j_lo) as f64 * a / (a - b);
        let mut c = if slow >= 2 || !root.is_finite() {
            slow = 0;
            j_lo + (j_hi - j_lo) / 2
        } else {
            root.ceil() as i64
        };
        c = c.clamp(j_lo + 1, j_hi - 1);
        let fc = f(c)?;
        if fc > 0.0 {
            (j_lo, f_lo) = (c, fc);
            f_hi *= 0.5;
        } else {
            (j_hi, f_hi) = (c, fc);
            f_lo *= 0.5;
        }
        let width = j_hi - j_lo;
        if width * 2 > width_before {
            slow += 1;
        }
        width_before = width;
    }
    Ok(noise_grid_point(j_hi))
}

#[cfg(test)]
mod tests;
