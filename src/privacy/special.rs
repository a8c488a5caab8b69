//! Special functions for the accountant and the analytic Gaussian: log-space arithmetic,
//! `ln erfc` without underflow, and the normal CDF.

/// `ln(e^a + e^b)`, exact for infinite arguments.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + libm::log1p((lo - hi).exp())
}

/// A real number held as a sign and a logarithm of its magnitude, so that alternating series
/// of huge and tiny terms can be summed without overflow and with the sign kept exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedLog {
    /// `true` for negative values.
    pub negative: bool,
    /// `ln |x|`; `-∞` for zero.
    pub log_abs: f64,
}

impl SignedLog {
    /// Zero.
    pub const ZERO: Self = Self {
        negative: false,
        log_abs: f64::NEG_INFINITY,
    };

    /// The sum of two values.
    pub fn plus(self, other: Self) -> Self {
        if other.log_abs == f64::NEG_INFINITY {
            return self;
        }
        if self.log_abs == f64::NEG_INFINITY {
            return other;
        }
        if self.negative == other.negative {
            return Self {
                negative: self.negative,
                log_abs: log_add(self.log_abs, other.log_abs),
            };
        }
        let (big, small) = if self.log_abs >= other.log_abs {
            (self, other)
        } else {
            (other, self)
        };
        let d = small.log_abs - big.log_abs;
        if d == 0.0 {
            return Self::ZERO;
        }
        Self {
            negative: big.negative,
            log_abs: big.log_abs + libm::log1p(-d.exp()),
        }
    }
}

/// `erfc(x)` (libm: under 1 ulp of error in its tested range).
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// `ln erfc(x)`, finite for all finite `x` (for large `x`, where `erfc` underflows, from the
/// asymptotic series, whose truncation error at x ≥ 20 is below 1e-16 relative).
pub fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    let x2 = x * x;
    let inv = 1.0 / (2.0 * x2);
    // erfc(x) = e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(2x²)² − 15/(2x²)³ + 105/(2x²)⁴ …)
    let series = 1.0 - inv + 3.0 * inv * inv - 15.0 * inv.powi(3) + 105.0 * inv.powi(4);
    -x2 - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// The standard normal CDF Φ(x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `ln Φ(x)`.
pub fn log_normal_cdf(x: f64) -> f64 {
    (0.5f64).ln() + log_erfc(-x / std::f64::consts::SQRT_2)
}

/// `ln Γ(x)` for `x > 0` (libm).
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

#[cfg(test)]
mod tests;
