//! Rényi DP of the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019).
//!
//! At integer order α the RDP is `ln A_α / (α − 1)` with
//! `A_α = Σ_k C(α,k) (1−q)^{α−k} q^k exp((k² − k)/(2σ²))`, a sum of positive terms. At
//! fractional α the binomial series has terms of both signs; they are summed here with
//! their signs kept ([`SignedLog`]) rather than assumed, which is where naive
//! implementations lose convergence at small α and large q.

use super::super::error::{PrivacyError, Result};
use super::super::special::{SignedLog, ln_gamma, log_add, log_erfc};
use super::SubsampledGaussian;

/// How RDP becomes (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conversion {
    /// `ε = R(α) + ln(1/δ)/(α−1)` (Mironov 2017, Proposition 3).
    Classic,
    /// `ε = R(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1)` (Balle et al. 2020, Theorem 21).
    Balle2020,
}

/// Opacus's default orders (1.1 to 10.9 by 0.1, 12 to 63) plus 128 and 256.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((12..64).map(f64::from));
    orders.extend([128.0, 256.0]);
    orders
}

/// The RDP of all `steps` steps at each order; `+∞` where the series for an order does not
/// converge in [`MAX_SERIES_TERMS`] terms (that order is then unusable, not wrong).
pub fn rdp_curve(mechanism: &SubsampledGaussian, orders: &[f64]) -> Result<Vec<f64>> {
    orders
        .iter()
        .map(|&alpha| {
            match rdp_poisson_gaussian(mechanism.sample_rate, mechanism.noise_multiplier, alpha) {
                Ok(r) => Ok(r * mechanism.steps as f64),
                Err(PrivacyError::Unreachable { .. }) => Ok(f64::INFINITY),
                Err(e) => Err(e),
            }
        })
        .collect()
}

/// The RDP at order `alpha > 1` of one step of the Poisson-subsampled Gaussian.
pub fn rdp_poisson_gaussian(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    if !(alpha > 1.0 && alpha.is_finite()) {
        return Err(PrivacyError::InvalidParameter {
            name: "order",
            value: alpha,
            reason: "must be finite and above 1",
        });
    }
    if q == 0.0 {
        return Ok(0.0);
    }
    if q >= 1.0 {
        return Ok(alpha / (2.0 * sigma * sigma));
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)?
    };
    Ok(log_a / (alpha - 1.0))
}

fn log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let n = alpha as u64;
    let mut log_a = f64::NEG_INFINITY;
    let (lq, l1q) = (q.ln(), libm::log1p(-q));
    for k in 0..=n {
        let kf = k as f64;
        let log_binom = ln_gamma(alpha + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(alpha - kf + 1.0);
        let term =
            log_binom + kf * lq + (alpha - kf) * l1q + (kf * kf - kf) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a
}

/// Terms of the fractional-order series before giving up on an order. Near α = 1 with large
/// q the terms decay only polynomially; such orders are skipped (see [`rdp_curve`]), which is
/// safe because ε is a minimum over the orders that remain.
const MAX_SERIES_TERMS: u32 = 20_000;

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let (lq, l1q) = (q.ln(), libm::log1p(-q));
    let s2 = sigma * sigma;
    let z0 = s2 * (1.0 / q - 1.0).ln() + 0.5;
    let half = 0.5f64.ln();
    let (mut a0, mut a1) = (SignedLog::ZERO, SignedLog::ZERO);
    // C(α, i) as sign and log-magnitude, updated by C(α, i+1) = C(α, i)·(α − i)/(i + 1).
    let (mut coef_negative, mut log_coef) = (false, 0.0);
    for i in 0..MAX_SERIES_TERMS {
        let fi = f64::from(i);
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lq + j * l1q;
        let log_t1 = log_coef + j * lq + fi * l1q;
        let log_e0 = half + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = half + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * s2) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * s2) + log_e1;
        a0 = a0.plus(SignedLog {
            negative: coef_negative,
            log_abs: log_s0,
        });
        a1 = a1.plus(SignedLog {
            negative: coef_negative,
            log_abs: log_s1,
        });
        // Past i > α the terms alternate in sign and shrink, so the error is about the next
        // term; stop once it is below 1e-13 of the sum, and add twice the last terms so the
        // result stays an upper bound.
        let total = a0.plus(a1);
        let last = log_s0.max(log_s1);
        if fi > alpha && last < total.log_abs - 30.0 {
            if total.negative {
                return Err(PrivacyError::Unreachable {
                    reason: "fractional-order RDP series lost precision".into(),
                });
            }
            return Ok(log_add(total.log_abs, 2f64.ln() + last));
        }
        let factor = alpha - fi;
        if factor < 0.0 {
            coef_negative = !coef_negative;
        }
        log_coef += factor.abs().ln() - (fi + 1.0).ln();
    }
    Err(PrivacyError::Unreachable {
        reason: "fractional-order RDP series did not converge".into(),
    })
}

/// The best (ε, order) over `orders` for total RDP values `rdp` at δ.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for (&alpha, &r) in orders.iter().zip(rdp) {
        if alpha <= 1.0 || alpha.is_nan() || !r.is_finite() {
            continue;
        }
        let eps = match conversion {
            Conversion::Classic => r + (1.0 / delta).ln() / (alpha - 1.0),
            Conversion::Balle2020 => {
                r + ((alpha - 1.0) / alpha).ln() - (delta.ln() + alpha.ln()) / (alpha - 1.0)
            }
        }
        .max(0.0);
        if best.is_none_or(|(b, _)| eps < b) {
            best = Some((eps, alpha));
        }
    }
    best.ok_or(PrivacyError::Unreachable {
        reason: "no finite RDP order".into(),
    })
}
