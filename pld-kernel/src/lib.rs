//! Numeric kernels of Confidant's privacy loss distribution (PLD) accountant.
//!
//! The accountant itself (what is pessimistic, which errors are bounded and how) lives in
//! `confidant::privacy::accountant::pld`; this crate holds its hot loops only, so that they
//! are optimized even in the dev profile. Every function here is pure arithmetic on slices.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Unit roundoff of f64.
pub const U: f64 = f64::EPSILON / 2.0;

/// Which neighbour is the larger dataset, for the Poisson-subsampled Gaussian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²): loss `g(x)`.
    Remove,
    /// P = N(0,σ²), Q = (1−q)N(0,σ²) + qN(1,σ²): loss `−g(x)`.
    Add,
}

/// The subsampled Gaussian's privacy loss as a function of the observation x.
#[derive(Debug, Clone, Copy)]
pub struct SubsampledGaussianLoss {
    q: f64,
    sigma: f64,
    s2: f64,
    log1mq: f64,
    ln_q: f64,
    direction: Direction,
    inv_sqrt_2pi_s: f64,
}

impl SubsampledGaussianLoss {
    /// The loss of one step at sampling rate `q` ∈ (0, 1] and noise multiplier `sigma` > 0.
    pub fn new(q: f64, sigma: f64, direction: Direction) -> Self {
        Self {
            q,
            sigma,
            s2: sigma * sigma,
            log1mq: libm::log1p(-q),
            ln_q: q.ln(),
            direction,
            inv_sqrt_2pi_s: 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt()),
        }
    }

    /// g(x) = ln(1 − q + q·exp((2x − 1)/(2σ²))).
    pub fn g(&self, x: f64) -> f64 {
        let e = (2.0 * x - 1.0) / (2.0 * self.s2);
        if self.q >= 1.0 {
            e
        } else if e > 0.0 {
            // ln(q·e^e·(1 + (1−q)/q·e^−e)), stable for large e.
            self.ln_q + e + libm::log1p((1.0 - self.q) / self.q * (-e).exp())
        } else {
            self.log1mq + libm::log1p(self.q / (1.0 - self.q) * e.exp())
        }
    }

    /// The x at which g(x) = y; −∞ at or below ln(1 − q).
    pub fn x_of(&self, y: f64) -> f64 {
        if self.q >= 1.0 {
            return self.s2 * y + 0.5;
        }
        if y <= self.log1mq {
            return f64::NEG_INFINITY;
        }
        let ln_ratio = if y > 0.0 {
            // ln((e^y − 1 + q)/q) = y − ln q + ln(1 − (1−q)e^−y)
            y - self.ln_q + libm::log1p(-(1.0 - self.q) * (-y).exp())
        } else {
            libm::log1p(libm::expm1(y) / self.q)
        };
        self.s2 * ln_ratio + 0.5
    }

    /// The privacy loss at x in this direction.
    pub fn loss(&self, x: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.g(x),
            Direction::Add => -self.g(x),
        }
    }

    /// P's density at x.
    pub fn density(&self, x: f64) -> f64 {
        let n0 = (-(x * x) / (2.0 * self.s2)).exp();
        match self.direction {
            Direction::Remove => {
                let n1 = (-((x - 1.0) * (x - 1.0)) / (2.0 * self.s2)).exp();
                ((1.0 - self.q) * n0 + self.q * n1) * self.inv_sqrt_2pi_s
            }
            Direction::Add => n0 * self.inv_sqrt_2pi_s,
        }
    }

    /// The x-interval whose loss lies in `[lo, hi]`, before clipping.
    fn x_interval(&self, lo: f64, hi: f64) -> (f64, f64) {
        match self.direction {
            Direction::Remove => (self.x_of(lo), self.x_of(hi)),
            Direction::Add => (self.x_of(-hi), self.x_of(-lo)),
        }
    }
}

/// Gauss–Legendre nodes and weights on [−1, 1], five points.
const GL5: [(f64, f64); 5] = [
    (0.0, 0.568_888_888_888_889),
    (-0.538_469_310_105_683, 0.478_628_670_499_366_47),
    (0.538_469_310_105_683, 0.478_628_670_499_366_47),
    (-0.906_179_845_938_664, 0.236_926_885_056_189_08),
    (0.906_179_845_938_664, 0.236_926_885_056_189_08),
];

/// Gauss–Legendre nodes and weights on [−1, 1], three points.
const GL3: [(f64, f64); 3] = [
    (0.0, 0.888_888_888_888_889),
    (-0.774_596_669_241_483_4, 0.555_555_555_555_555_6),
    (0.774_596_669_241_483_4, 0.555_555_555_555_555_6),
];

/// The "connect the dots" masses of P's x restricted to `[x_min, x_max]`, on the grid
/// `(k_lo + i)·h`, i < `len`: each loss interval's probability split between its two ends
/// so that its P- and Q-probabilities are both kept. Returns the masses and
/// `Σ mass·(|loss| + h)` (for the caller's rounding bound).
pub fn connect_the_dots(
    loss: &SubsampledGaussianLoss,
    h: f64,
    k_lo: i64,
    len: usize,
    x_min: f64,
    x_max: f64,
) -> (Vec<f64>, f64) {
    let sigma = loss.sigma;
    let mut pmf = vec![0.0f64; len];
    let neg_expm1_h = -libm::expm1(-h);
    // The densities vary on the scale σ/(1 + |x|/σ) and the loss on the scale σ²; pieces
    // are kept to a fifth of that for five points, a hundredth for three, where the
    // quadrature error is far below an ulp.
    let scale = sigma.min(loss.s2);
    let mut weighted_abs_loss = 0.0;
    for i in 0..len.saturating_sub(1) {
        let l_i = (k_lo + i as i64) as f64 * h;
        let (xa, xb) = loss.x_interval(l_i, l_i + h);
        let (xa, xb) = (xa.max(x_min), xb.min(x_max));
        if xb <= xa || xb.is_nan() || xa.is_nan() {
            continue;
        }
        let reach = 1.0 + xa.abs().max((xb - 1.0).abs()).max(xb.abs()) / sigma;
        let t = (xb - xa) * reach / scale;
        let (rule, pieces): (&[(f64, f64)], f64) = if t <= 0.01 {
            (&GL3, 1.0)
        } else {
            (&GL5, (t / 0.2).ceil().max(1.0))
        };
        let step = (xb - xa) / pieces;
        let half = 0.5 * step;
        let (mut lower, mut upper) = (0.0, 0.0);
        for p in 0..pieces as usize {
            let mid = xa + p as f64 * step + half;
            for &(node, w) in rule {
                let x = mid + half * node;
                let mass = w * half * loss.density(x);
                // d ∈ [0, h]: how far above l_i this x's loss lies.
                let d = (loss.loss(x) - l_i).clamp(0.0, h);
                let up = -libm::expm1(-d) / neg_expm1_h;
                upper += mass * up;
                lower += mass * (1.0 - up);
            }
        }
        if let Some(v) = pmf.get_mut(i) {
            *v += lower;
        }
        if let Some(v) = pmf.get_mut(i + 1) {
            *v += upper;
        }
        weighted_abs_loss += (lower + upper) * (l_i.abs() + h);
    }
    (pmf, weighted_abs_loss)
}

/// `[lo, hi]` such that the sum of `steps` independent draws from the (sub-)probability
/// `pmf` on `base + i·h` is below lo, or above hi, with probability at most `tau` each
/// (Chernoff over λ ∈ [1e-4, 1e4]; the MGF is bounded on blocks of 64 points by their
/// highest or lowest loss).
pub fn chernoff_range(pmf: &[f64], base: f64, h: f64, steps: u64, tau: f64) -> (f64, f64) {
    const BLOCK: usize = 64;
    let t = steps as f64;
    let ln_tau = tau.ln();
    let blocks: Vec<(f64, f64, f64)> = pmf
        .chunks(BLOCK)
        .enumerate()
        .filter_map(|(b, c)| {
            let m: f64 = c.iter().sum();
            (m > 0.0).then(|| {
                let first = base + (b * BLOCK) as f64 * h;
                (m.ln(), first, first + (c.len() - 1) as f64 * h)
            })
        })
        .collect();
    let top = base + pmf.len().saturating_sub(1) as f64 * h;
    let (mut lo, mut hi) = (t * base, t * top);
    let ln_mgf = |lambda: f64, use_max: bool| {
        let mut mx = f64::NEG_INFINITY;
        for &(lm, a, b) in &blocks {
            mx = mx.max(lm + lambda * if use_max { b } else { a });
        }
        let mut sum = 0.0;
        for &(lm, a, b) in &blocks {
            sum += (lm + lambda * if use_max { b } else { a } - mx).exp();
        }
        mx + sum.ln()
    };
    for i in 0..97 {
        let lambda = 10f64.powf(-4.0 + f64::from(i) / 12.0);
        // P(S > a) ≤ exp(−λa + T·ln M(λ)).
        let a = (t * ln_mgf(lambda, true) - ln_tau) / lambda;
        if a.is_finite() {
            hi = hi.min(a);
        }
        // P(S < b) ≤ exp(λb + T·ln M(−λ)).
        let b = (ln_tau - t * ln_mgf(-lambda, false)) / lambda;
        if b.is_finite() {
            lo = lo.max(b);
        }
    }
    (lo, hi.max(lo))
}

/// The smallest 2^a·{1, 3/4, 5/8} at or above n (fast sizes for rustfft).
pub fn fft_size(n: usize) -> usize {
    let p = n.max(1).next_power_of_two();
    [p, 3 * p / 4, 5 * p / 8]
        .into_iter()
        .filter(|&s| s >= n && s > 0)
        .min()
        .unwrap_or(p)
}

/// The `steps`-fold cyclic self-convolution of `pmf` (zero-padded to `size`), read from
/// index `shift` on: `out[n] = c[(n + shift) mod size]`. One forward FFT, the power, a
/// phase, one inverse FFT; negative rounding residues are set to zero.
///
/// Also returns a bound on the ℓ2 norm of `out` minus the exact cyclic power of `pmf`
/// (`pmf` ≥ 0 taken as exact). Per Fourier coefficient (componentwise, as each FFT stage
/// adds at most a few ulps of the ℓ1 norm of the inputs of that stage, and twiddles have
/// modulus one): `|Â_k − A_k| ≤ r·Σa` with `r = 16u·⌈log₂N⌉`, about three times the
/// constant of a radix-2 FFT (Higham, *Accuracy and Stability of Numerical Algorithms*,
/// §24.1). With `ρ_k = |Â_k| + r·Σa ≥ max(|A_k|, |Â_k|)`, the power's error is at most
/// `T·ρ_k^{T−1}·r·Σa` from the transform plus `(5T + 8)u·ρ_k^T` from the squarings and the
/// phase. The inverse FFT adds `r·‖Ŷ‖₂` (normwise) and the 1/N scaling `u` relative.
pub fn cyclic_power(pmf: &[f64], size: usize, steps: u64, shift: u64) -> (Vec<f64>, f64) {
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(size);
    let inv = planner.plan_fft_inverse(size);
    let mut a: Vec<Complex<f64>> = pmf.iter().map(|&x| Complex::new(x, 0.0)).collect();
    a.resize(size, Complex::new(0.0, 0.0));
    fwd.process(&mut a);
    let n = size as f64;
    let t = steps as f64;
    let r = 16.0 * U * n.log2().ceil().max(1.0);
    let mass: f64 = pmf.iter().sum();
    let transform_error = r * mass;
    let two_pi_over_n = 2.0 * std::f64::consts::PI / n;
    let shift = u128::from(shift) % size as u128;
    let (mut fourier_error_sq, mut y_sq) = (0.0f64, 0.0f64);
    for (k, c) in a.iter_mut().enumerate() {
        let rho = c.norm() + transform_error;
        let ln_rho = rho.ln();
        let rho_t1 = ((t - 1.0) * ln_rho).exp();
        let err = t * rho_t1 * transform_error + (5.0 * t + 8.0) * U * rho_t1 * rho;
        fourier_error_sq += err * err;
        let p = pow(*c, steps);
        let turn = ((k as u128 * shift) % size as u128) as f64;
        let (s, co) = (two_pi_over_n * turn).sin_cos();
        *c = p * Complex::new(co, s);
        y_sq += c.norm_sqr();
    }
    inv.process(&mut a);
    let scale = 1.0 / n;
    let out = a.iter().map(|c| (c.re * scale).max(0.0)).collect();
    let error_l2 = (fourier_error_sq.sqrt() * (1.0 + r) + (r + 2.0 * U) * y_sq.sqrt()) / n.sqrt();
    (out, error_l2 * (1.0 + 1e-6))
}

/// z^n by repeated squaring.
fn pow(z: Complex<f64>, mut n: u64) -> Complex<f64> {
    let mut result = Complex::new(1.0, 0.0);
    let mut base = z;
    while n > 0 {
        if n & 1 == 1 {
            result *= base;
        }
        n >>= 1;
        if n > 0 {
            base = base * base;
        }
    }
    result
}

/// The smallest ε ≥ 0 (rounded up) at which
/// `flat + per_sqrt_bin·√(points above ε) + Σ_{L_i > ε} pmf[i]·(1 − e^{ε − L_i}) ≤ delta`
/// for losses `L_i = (offset + i)·h`; `None` when no ε on or below the top point meets it.
/// Partial sums are rounded against the answer (4·n·u relative).
pub fn epsilon_at(
    pmf: &[f64],
    offset: i64,
    h: f64,
    delta: f64,
    flat: f64,
    per_sqrt_bin: f64,
) -> Option<f64> {
    let n = pmf.len();
    let grow = 1.0 + 4.0 * n as f64 * U;
    let shrink = 1.0 - 4.0 * n as f64 * U;
    let decay = (-h).exp();
    // Walking down from the top: s1 = Σ_{j≥i} p_j, s2 = Σ_{j≥i} p_j·e^{−(L_j − L_i)}; for
    // ε ∈ [L_{i−1}, L_i] the sum is s1 − e^{ε − L_i}·s2 over the n − i points above ε.
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    if flat >= delta {
        return None;
    }
    for i in (0..n).rev() {
        let p = pmf.get(i).copied().unwrap_or(0.0);
        s1 += p;
        s2 = p + decay * s2;
        let l_i = (offset + i as i64) as f64 * h;
        if l_i <= 0.0 {
            break;
        }
        let target = delta - flat - per_sqrt_bin * ((n - i) as f64).sqrt();
        if target <= 0.0 {
            // ε = L_i, with the n − i − 1 points above it, was certified one step up (or,
            // at the top point, by flat < δ); below it the bound on the rounding is too large.
            return Some(l_i + 1e-12 * (1.0 + l_i.abs()));
        }
        let below = (l_i - h).max(0.0);
        let at_below = s1 * grow - (below - l_i).exp() * s2 * shrink;
        if at_below > target {
            let ratio = (s1 * grow - target) / (s2 * shrink);
            let eps = if ratio > 0.0 { l_i + ratio.ln() } else { l_i };
            let eps = eps.clamp(below, l_i);
            return Some(eps + 1e-12 * (1.0 + eps.abs()));
        }
    }
    Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclic_power_matches_direct_convolution() {
        let a = [0.5, 0.25, 0.25];
        // a * a * a directly.
        let mut c = [0.0; 7];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in a.iter().enumerate() {
                for (k, z) in a.iter().enumerate() {
                    c[i + j + k] += x * y * z;
                }
            }
        }
        let (out, err) = cyclic_power(&a, 8, 3, 2);
        assert!(err > 0.0 && err < 1e-13, "{err}");
        for n in 0..5 {
            assert!(
                (out[n] - c[n + 2]).abs() < 1e-15,
                "{n}: {} {}",
                out[n],
                c[n + 2]
            );
        }
    }

    #[test]
    fn epsilon_at_solves_the_hockey_stick_exactly() {
        // Mass ½ at loss 0 and ½ at loss 1: δ(ε) = ½(1 − e^{ε−1}) on [0, 1].
        let pmf = [0.5, 0.0, 0.5];
        let eps = epsilon_at(&pmf, 0, 0.5, 0.1, 0.0, 0.0).unwrap();
        let want = 1.0 + (1.0f64 - 0.2).ln();
        assert!(eps >= want && eps < want + 1e-9, "{eps} {want}");
        assert_eq!(epsilon_at(&pmf, 0, 0.5, 0.6, 0.0, 0.0), Some(0.0));
        assert_eq!(epsilon_at(&pmf, 0, 0.5, 0.1, 0.2, 0.0), None);
    }
}
