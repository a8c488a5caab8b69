//! Exact samplers (Canonne, Kamath & Steinke 2020, "The Discrete Gaussian for Differential
//! Privacy", Algorithms 1–3) and the power-of-two output grid.
//!
//! The exact path uses integer arithmetic only: every probability is a ratio of integers and
//! every coin is a comparison of uniform integers, so the output distribution is exactly the
//! one the privacy proof assumes (given a uniform [`DpRng`]). Parameters arrive as `f64`,
//! which are dyadic rationals, and are converted without rounding or, where a denominator
//! must be bounded, rounded in the direction that adds noise.
//!
//! [`fast`] holds a batched grid-Laplace sampler that trades exactness for speed, with a
//! stated bound on its deviation.

pub mod fast;

use super::error::{PrivacyError, Result};
use super::rng::DpRng;

/// A non-negative rational `num / den`, `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator.
    pub num: u128,
    /// Denominator, never zero.
    pub den: u128,
}

impl Rational {
    /// `num / den`; refuses a zero denominator.
    pub fn new(num: u128, den: u128) -> Result<Self> {
        if den == 0 {
            return Err(PrivacyError::InvalidParameter {
                name: "denominator",
                value: 0.0,
                reason: "must be positive",
            });
        }
        Ok(Self { num, den })
    }

    /// The value of a finite non-negative `f64`, rounded up to a multiple of `2^-max_den_bits`
    /// (exact when it already is one). Rounding up is the safe direction for a noise scale.
    pub fn from_f64_ceil(x: f64, max_den_bits: u32) -> Result<Self> {
        Self::from_f64_directed(x, max_den_bits, true)
    }

    /// As [`Rational::from_f64_ceil`], rounding down: the safe direction for an ε.
    pub fn from_f64_floor(x: f64, max_den_bits: u32) -> Result<Self> {
        Self::from_f64_directed(x, max_den_bits, false)
    }

    fn from_f64_directed(x: f64, max_den_bits: u32, up: bool) -> Result<Self> {
        if !x.is_finite() || x < 0.0 || max_den_bits > 64 {
            return Err(PrivacyError::InvalidParameter {
                name: "rational",
                value: x,
                reason: "must be finite and non-negative",
            });
        }
        if x == 0.0 {
            return Ok(Self { num: 0, den: 1 });
        }
        // x = mantissa * 2^exp exactly, with a 53-bit integer mantissa.
        let bits = x.to_bits();
        let raw_exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        let (mantissa, exp) = if raw_exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), raw_exp - 1075)
        };
        let overflow = PrivacyError::Overflow {
            what: "rational from f64",
        };
        if exp >= 0 {
            let shift = u32::try_from(exp).map_err(|_| overflow.clone())?;
            if shift > 74 {
                return Err(overflow);
            }
            return Ok(Self {
                num: u128::from(mantissa) << shift,
                den: 1,
            });
        }
        let den_bits = exp.unsigned_abs();
        if den_bits <= max_den_bits {
            // Cancel common factors of two so equal values compare equal.
            let common = mantissa.trailing_zeros().min(den_bits);
            return Ok(Self {
                num: u128::from(mantissa >> common),
                den: 1u128 << (den_bits - common),
            });
        }
        // Too fine: drop the low bits, rounding in the requested direction.
        let dropped = den_bits - max_den_bits;
        let mut num = if dropped >= 64 {
            0
        } else {
            u128::from(mantissa >> dropped)
        };
        let lost = dropped >= 64 || mantissa & ((1u64 << dropped) - 1) != 0;
        if up && lost {
            num += 1;
        }
        let common = num.trailing_zeros().min(max_den_bits);
        Ok(Self {
            num: num >> common,
            den: 1u128 << (max_den_bits - common),
        })
    }

    /// The value as `f64` (rounded to nearest; for reporting, never for sampling).
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

/// A uniform integer in `[0, n)`, by rejection, so exactly uniform. `n` must be positive.
pub fn uniform_below<R: DpRng + ?Sized>(rng: &mut R, n: u128) -> u128 {
    if n <= 1 {
        return 0;
    }
    if let Ok(n64) = u64::try_from(n) {
        // Lemire's multiply-and-reject: exact, one multiply in the common case.
        let mut m = u128::from(rng.next_u64()) * u128::from(n64);
        let mut low = m as u64;
        if low < n64 {
            let threshold = n64.wrapping_neg() % n64;
            while low < threshold {
                m = u128::from(rng.next_u64()) * u128::from(n64);
                low = m as u64;
            }
        }
        return m >> 64;
    }
    let mask = u128::MAX >> (n - 1).leading_zeros();
    loop {
        let x = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if x < n {
            return x;
        }
    }
}

/// Bernoulli(`num / den`), exactly. Requires `num <= den`, `den > 0`.
pub fn bernoulli<R: DpRng + ?Sized>(rng: &mut R, p: Rational) -> bool {
    uniform_below(rng, p.den) < p.num
}

/// Bernoulli(exp(−γ)) for rational γ ≥ 0, exactly (CKS 2020, Algorithm 1).
///
/// Fails only when `γ.den * K` overflows for the loop counter `K`, which needs `K` beyond
/// about `2^128 / γ.den`; its probability is below `1 / K!`.
pub fn bernoulli_exp_neg<R: DpRng + ?Sized>(rng: &mut R, gamma: Rational) -> Result<bool> {
    if gamma.den == 0 {
        return Err(PrivacyError::Overflow { what: "gamma" });
    }
    let whole = gamma.num / gamma.den;
    let frac = Rational {
        num: gamma.num % gamma.den,
        den: gamma.den,
    };
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−{γ}); each factor is an independent coin, and the first
    // failure decides, so a huge ⌊γ⌋ costs about 1.6 coins on average.
    let mut i: u128 = 0;
    while i < whole {
        if !bernoulli_exp_neg_unit(rng, Rational { num: 1, den: 1 })? {
            return Ok(false);
        }
        i += 1;
    }
    bernoulli_exp_neg_unit(rng, frac)
}

/// Bernoulli(exp(−γ)) for γ ∈ [0, 1].
fn bernoulli_exp_neg_unit<R: DpRng + ?Sized>(rng: &mut R, gamma: Rational) -> Result<bool> {
    let mut k: u128 = 1;
    loop {
        let den = gamma.den.checked_mul(k).ok_or(PrivacyError::Overflow {
            what: "Bernoulli(exp) loop",
        })?;
        if !bernoulli(
            rng,
            Rational {
                num: gamma.num,
                den,
            },
        ) {
            break;
        }
        k += 1;
    }
    Ok(k % 2 == 1)
}

/// The discrete Laplace distribution on ℤ with `P(x) ∝ exp(−|x| / scale)`, exactly (CKS 2020,
/// Algorithm 2). `scale` must be positive.
pub fn discrete_laplace<R: DpRng + ?Sized>(rng: &mut R, scale: Rational) -> Result<i64> {
    if scale.num == 0 || scale.den == 0 {
        return Err(PrivacyError::InvalidParameter {
            name: "scale",
            value: scale.to_f64(),
            reason: "must be positive",
        });
    }
    // CKS name the scale t/s.
    let (t, s) = (scale.num, scale.den);
    loop {
        let u = uniform_below(rng, t);
        if !bernoulli_exp_neg(rng, Rational { num: u, den: t })? {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp_neg_unit(rng, Rational { num: 1, den: 1 })? {
            v += 1;
        }
        let x =
            v.checked_mul(t)
                .and_then(|vt| vt.checked_add(u))
                .ok_or(PrivacyError::Overflow {
                    what: "discrete Laplace",
                })?;
        let y = x / s;
        let negative = rng.next_u64() & 1 == 1;
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).map_err(|_| PrivacyError::Overflow {
            what: "discrete Laplace output",
        })?;
        return Ok(if negative { -y } else { y });
    }
}

/// The discrete Gaussian on ℤ with `P(x) ∝ exp(−x² / (2σ²))`, exactly (CKS 2020, Algorithm
/// 3), for rational `sigma2 = σ²`.
///
/// Requires `sigma2.den · t² ≤ 2^40` with `t = ⌊σ⌋ + 1`, so that every acceptance exponent
/// fits in 128 bits; [`discrete_gaussian_sigma2`] builds such a `sigma2` from an `f64`.
pub fn discrete_gaussian<R: DpRng + ?Sized>(rng: &mut R, sigma2: Rational) -> Result<i64> {
    let (a, b) = (sigma2.num, sigma2.den);
    if a == 0 || b == 0 {
        return Err(PrivacyError::InvalidParameter {
            name: "sigma2",
            value: sigma2.to_f64(),
            reason: "must be positive",
        });
    }
    let t = isqrt_ratio_floor(a, b) + 1;
    let bt2 = t
        .checked_mul(t)
        .and_then(|t2| t2.checked_mul(b))
        .filter(|&v| v <= 1u128 << 40)
        .ok_or(PrivacyError::Overflow {
            what: "discrete Gaussian parameters",
        })?;
    // γ = (|y| − σ²/t)² / (2σ²) = (|y|·b·t − a)² / (2·a·b·t²).
    let den = a
        .checked_mul(bt2)
        .and_then(|v| v.checked_mul(2))
        .ok_or(PrivacyError::Overflow {
            what: "discrete Gaussian denominator",
        })?;
    loop {
        let y = discrete_laplace(rng, Rational { num: t, den: 1 })?;
        let c = u128::from(y.unsigned_abs())
            .checked_mul(b * t)
            .map(|v| v.abs_diff(a));
        // With b·t² ≤ 2^40, c ≥ 2^64 needs |y| ≥ 2^24·t, which the discrete Laplace of scale
        // t produces with probability below exp(−2^24); treating it as a rejection changes
        // the output distribution by less than that.
        let Some(num) = c.filter(|&c| c < 1u128 << 64).map(|c| c * c) else {
            continue;
        };
        if bernoulli_exp_neg(rng, Rational { num, den })? {
            return Ok(y);
        }
    }
}

/// `σ²` as a rational for [`discrete_gaussian`]: rounded up (more noise) to a multiple of
/// `2^-k`, with `k` as large as the 2^40 bound allows.
pub fn discrete_gaussian_sigma2(sigma: f64) -> Result<Rational> {
    super::error::check_range("sigma", sigma, 0.0, 2f64.powi(19), false)?;
    let s2 = sigma * sigma;
    let t = sigma.floor() + 1.0;
    // b·t² ≤ 2^40 with a margin of one bit for the rounding of t.
    let den_bits = (39.0 - (t * t).log2().ceil()).clamp(0.0, 52.0) as u32;
    // s2 was rounded to nearest; bump one ulp so the rational is ≥ the true σ².
    Rational::from_f64_ceil(s2.next_up(), den_bits)
}

/// `⌊√(a/b)⌋` in integers.
fn isqrt_ratio_floor(a: u128, b: u128) -> u128 {
    // Largest m with m²·b ≤ a, by bisection on m.
    let (mut lo, mut hi) = (0u128, 1u128 << 64);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let fits = mid
            .checked_mul(mid)
            .and_then(|m2| m2.checked_mul(b))
            .is_some_and(|v| v <= a);
        if fits {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A power-of-two output grid `2^k`. Releasing on a grid closes the floating-point attacks of
/// Mironov 2012: outputs are integers times `2^k`, exactly representable, so the low bits of
/// an output carry no information about the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    log2: i32,
}

impl Grid {
    /// The grid `2^log2`; `log2` within ±1000 so the step is a normal `f64`.
    pub fn new(log2: i32) -> Result<Self> {
        if !(-1000..=1000).contains(&log2) {
            return Err(PrivacyError::InvalidParameter {
                name: "grid log2",
                value: f64::from(log2),
                reason: "must be within -1000..=1000",
            });
        }
        Ok(Self { log2 })
    }

    /// The largest power of two at most `x / 2^bits` (x > 0): a grid `bits` binary digits
    /// finer than `x`.
    pub fn finer_than(x: f64, bits: i32) -> Result<Self> {
        super::error::check_range("grid reference", x, 0.0, f64::MAX, false)?;
        Self::new(x.log2().floor() as i32 - bits)
    }

    /// `log2` of the step.
    pub fn log2(self) -> i32 {
        self.log2
    }

    /// The step `2^log2`, exact.
    pub fn step(self) -> f64 {
        2f64.powi(self.log2)
    }

    /// `x` rounded to the nearest grid point, as a count of steps. Dividing by a power of two
    /// is exact, and so is `round`, so this is the true nearest grid point.
    pub fn to_steps(self, x: f64, index: usize) -> Result<i64> {
        if !x.is_finite() {
            return Err(PrivacyError::NonFiniteInput { index });
        }
        let n = (x / self.step()).round();
        // |n| < 2^53 keeps (n + noise) · step exact after the noise is added.
        if n.abs() >= 2f64.powi(52) {
            return Err(PrivacyError::OffGrid { index });
        }
        Ok(n as i64)
    }

    /// `steps · 2^log2` as `f64`; exact while `|steps| < 2^53`.
    pub fn from_steps(self, steps: i64) -> f64 {
        steps as f64 * self.step()
    }
}

#[cfg(test)]
mod tests;
