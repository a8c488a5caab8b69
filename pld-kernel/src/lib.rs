//! Numeric kernels of Confidant's privacy loss distribution (PLD) accountant.
//!
//! The accountant itself (what is pessimistic, which errors are bounded and how) lives in
//! `confidant::privacy::accountant::pld`; this crate holds its hot loops only, so that they
//! are optimized even in the dev profile. Every function here is pure arithmetic on slices.

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;

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

    /// A bound on the absolute rounding error of [`Self::loss`] at x: a few ulps of each of
    /// the terms it adds, `(2x − 1)/(2σ²)`, `ln q` and `ln(1 − q)`.
    pub fn loss_error(&self, x: f64) -> f64 {
        let e = (2.0 * x - 1.0) / (2.0 * self.s2);
        if self.q >= 1.0 {
            // The loss is e itself.
            return 4.0 * U * (e.abs() + 1.0);
        }
        16.0 * U * (e.abs() + self.ln_q.abs() + self.log1mq.abs() + 2.0)
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

/// The relative rounding error allowed for each mass of [`connect_the_dots`]: a sum of
/// positive terms, each a product of a weight, a density (one or two `exp`) and a split
/// fraction (two `expm1` and a division), with a few ulps each.
pub const MASS_RELATIVE_ERROR: f64 = 64.0 * U;

/// The "connect the dots" masses of P's x restricted to `[x_min, x_max]`, on the grid
/// `(k_lo + i)·h`, i < `len`: each loss interval's probability split between its two ends
/// so that its P- and Q-probabilities are both kept. Returns the masses and the mass that
/// fell above the grid's top point.
///
/// Pessimistic in its rounding: each quadrature node's loss is raised by a bound on its
/// rounding error ([`SubsampledGaussianLoss::loss_error`]) before it is split, so that no
/// rounding moves mass towards lower loss; a node whose raised loss passes the top of its
/// interval is split over the next one. What is left is each mass's relative rounding
/// error, at most [`MASS_RELATIVE_ERROR`] (for the caller to scale by).
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
    let mut above = 0.0f64;
    let neg_expm1_h = -libm::expm1(-h);
    // The densities vary on the scale σ/(1 + |x|/σ) and the loss on the scale σ²; pieces
    // are kept to a fifth of that for five points, a hundredth for three, where the
    // quadrature error is far below an ulp.
    let scale = sigma.min(loss.s2);
    let mut add = |pmf: &mut [f64], j: usize, v: f64| match pmf.get_mut(j) {
        Some(p) => *p += v,
        None => above += v,
    };
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
        let eta_l = 2.0 * U * (l_i.abs() + h);
        // Masses split over (i, i + 1), and over (i + 1, i + 2) for nodes pushed past l_i + h.
        let (mut lower, mut upper, mut lower2, mut upper2) = (0.0, 0.0, 0.0, 0.0);
        for p in 0..pieces as usize {
            let mid = xa + p as f64 * step + half;
            for &(node, w) in rule {
                let x = mid + half * node;
                let mass = w * half * loss.density(x);
                // d: how far above l_i this x's loss lies, raised by its rounding bound.
                let d = (loss.loss(x) - l_i + loss.loss_error(x) + eta_l).max(0.0);
                let (d, second) = if d >= h {
                    ((d - h).min(h), true)
                } else {
                    (d, false)
                };
                let up = (-libm::expm1(-d) / neg_expm1_h * (1.0 + 4.0 * U)).min(1.0);
                if second {
                    upper2 += mass * up;
                    lower2 += mass * (1.0 - up);
                } else {
                    upper += mass * up;
                    lower += mass * (1.0 - up);
                }
            }
        }
        add(&mut pmf, i, lower);
        add(&mut pmf, i + 1, upper + lower2);
        if upper2 > 0.0 {
            add(&mut pmf, i + 2, upper2);
        }
    }
    (pmf, above)
}

/// The natural log of `Σ pmf[i]·e^{λ(base + i·h)}` (log-sum-exp; `−∞` for no mass).
pub fn ln_mgf(pmf: &[f64], base: f64, h: f64, lambda: f64) -> f64 {
    let mut mx = f64::NEG_INFINITY;
    for (i, &p) in pmf.iter().enumerate() {
        if p > 0.0 {
            mx = mx.max(p.ln() + lambda * (base + i as f64 * h));
        }
    }
    if !mx.is_finite() {
        return mx;
    }
    let mut sum = 0.0;
    for (i, &p) in pmf.iter().enumerate() {
        if p > 0.0 {
            sum += (p.ln() + lambda * (base + i as f64 * h) - mx).exp();
        }
    }
    mx + sum.ln()
}

/// `pmf[i]·e^{λ(base + i·h) − c}`: the exponentially tilted masses, for a given `c`
/// (normally [`ln_mgf`], so that they sum to about one). Each is within a relative
/// `8u·(|λ|·max|L| + |c| + 750)` of the exact value (the exponent's rounding, with `ln p` ≥ −745
/// where it is used).
pub fn tilt(pmf: &[f64], base: f64, h: f64, lambda: f64, c: f64) -> Vec<f64> {
    pmf.iter()
        .enumerate()
        .map(|(i, &p)| {
            let arg = lambda * (base + i as f64 * h) - c;
            if p <= 0.0 {
                0.0
            } else if arg < 700.0 {
                p * arg.exp()
            } else {
                (p.ln() + arg).exp()
            }
        })
        .collect()
}

/// The loss range and tilt for composing `steps` draws of the (sub-)probability `pmf` on
/// `base + i·h`, from Chernoff bounds with the exact moment generating function (Horner's
/// rule in `e^{∓λh}`, rounded up), each minimized over λ ∈ [1e-4, 1e4] by golden-section
/// search on ln λ (the bounds are quasi-convex in λ, as `T·ln M(λ)` is convex).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChernoffPlan {
    /// The sum is below `lo` with probability at most τ.
    pub lo: f64,
    /// The sum is above `hi` with probability at most τ.
    pub hi: f64,
    /// The λ that gives the smallest bound `x` with `P(sum > x) ≤ δ`, and that bound.
    pub lambda: f64,
    /// `min_λ (T·ln M(λ) − ln δ)/λ`: at or above the ε at δ.
    pub eps_upper: f64,
}

/// `ln Σ pmf[i]·e^{λ(base + i·h)}` for λ of either sign, by Horner's rule in `e^{−|λ|h}`
/// from the end where the exponent is largest, so nothing overflows; rounded up by a bound
/// on its relative error (`2nu` for n points, plus the exponentials').
pub fn ln_mgf_upper(pmf: &[f64], base: f64, h: f64, lambda: f64) -> f64 {
    let n = pmf.len();
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    let x = (-(lambda.abs()) * h).exp();
    let top = base + (n - 1) as f64 * h;
    let (acc, anchor) = if lambda >= 0.0 {
        // acc = Σ p_i x^{n−1−i}, M = e^{λ·top}·acc.
        (horner8(pmf.iter().copied(), x), lambda * top)
    } else {
        // acc = Σ p_i x^i, M = e^{λ·base}·acc.
        (horner8(pmf.iter().rev().copied(), x), lambda * base)
    };
    if acc <= 0.0 {
        return f64::NEG_INFINITY;
    }
    // x^j carries a relative error up to (j+1)·u·(1 + |λh|·…); 4nu(1 + |λ|·n·h) covers it.
    let rel = 4.0 * n as f64 * U * (1.0 + lambda.abs() * h * n as f64);
    anchor + acc.ln() + libm::log1p(rel) + 4.0 * U * (anchor.abs() + acc.ln().abs() + 1.0)
}

/// `Σ v_i x^{n−1−i}` by Horner's rule over blocks of eight (one dependent multiply-add per
/// block, so that the loop is not bound by its latency).
fn horner8(values: impl Iterator<Item = f64>, x: f64) -> f64 {
    let powers: [f64; 8] = std::array::from_fn(|j| x.powi(7 - j as i32));
    let x8 = x.powi(8);
    let mut acc = 0.0f64;
    let mut block = [0.0f64; 8];
    let mut filled = 0usize;
    for v in values {
        if let Some(b) = block.get_mut(filled) {
            *b = v;
        }
        filled += 1;
        if filled == 8 {
            let mut sum = 0.0;
            for (b, p) in block.iter().zip(&powers) {
                sum = b.mul_add(*p, sum);
            }
            acc = acc.mul_add(x8, sum);
            filled = 0;
        }
    }
    for b in block.iter().take(filled) {
        acc = acc.mul_add(x, *b);
    }
    acc
}

/// The minimum over λ ∈ [1e-4, 1e4] of `f(λ)`, quasi-convex in λ, by golden-section search
/// on ln λ; returns (λ, f(λ)) of the best point evaluated.
pub fn golden_min(f: impl Fn(f64) -> f64) -> (f64, f64) {
    let g = |t: f64| {
        let v = f(t.exp());
        if v.is_nan() { f64::INFINITY } else { v }
    };
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = ((1e-4f64).ln(), (1e4f64).ln());
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (g(c), g(d));
    let mut best = if fc < fd { (c, fc) } else { (d, fd) };
    // Until ln λ is known to within 0.01 (about 16 steps).
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - inv_phi * (b - a);
            fc = g(c);
            if fc < best.1 {
                best = (c, fc);
            }
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + inv_phi * (b - a);
            fd = g(d);
            if fd < best.1 {
                best = (d, fd);
            }
        }
        if b - a < 1e-2 {
            break;
        }
    }
    (best.0.exp(), best.1)
}

/// See [`ChernoffPlan`].
pub fn chernoff_plan(
    pmf: &[f64],
    base: f64,
    h: f64,
    steps: u64,
    tau: f64,
    delta: f64,
) -> ChernoffPlan {
    let t = steps as f64;
    let (ln_tau, ln_delta) = (tau.ln(), delta.ln());
    let top = base + pmf.len().saturating_sub(1) as f64 * h;
    // P(S > a) ≤ exp(−λa + T·ln M(λ)).
    let (_, hi) = golden_min(|l| (t * ln_mgf_upper(pmf, base, h, l) - ln_tau) / l);
    // P(S < b) ≤ exp(λb + T·ln M(−λ)).
    let (_, neg_lo) = golden_min(|l| (t * ln_mgf_upper(pmf, base, h, -l) - ln_tau) / l);
    let (lambda, eps_upper) = golden_min(|l| (t * ln_mgf_upper(pmf, base, h, l) - ln_delta) / l);
    let hi = if hi.is_finite() {
        hi.min(t * top)
    } else {
        t * top
    };
    let lo = if neg_lo.is_finite() {
        (-neg_lo).max(t * base)
    } else {
        t * base
    };
    ChernoffPlan {
        lo,
        hi: hi.max(lo),
        lambda,
        eps_upper,
    }
}

/// The smallest even 2^a·{1, 3/4, 5/8} at or above n, at least 16 (fast sizes for the
/// real FFT).
pub fn fft_size(n: usize) -> usize {
    let p = n.max(16).next_power_of_two();
    [p, 3 * p / 4, 5 * p / 8]
        .into_iter()
        .filter(|&s| s >= n && s.is_multiple_of(2))
        .min()
        .unwrap_or(p)
}

/// `x^n` by repeated squaring.
fn powu(x: f64, mut n: u64) -> f64 {
    let mut result = 1.0;
    let mut base = x;
    while n > 0 {
        if n & 1 == 1 {
            result *= base;
        }
        n >>= 1;
        if n > 0 {
            base *= base;
        }
    }
    result
}

/// The `steps`-fold cyclic self-convolution of `pmf` (zero-padded to `size`, which must be
/// even and at least `pmf.len()`), read from index `shift` on: `out[n] = c[(n + shift) mod
/// size]`. One real-to-complex FFT, the power of the `size/2 + 1` coefficients, one
/// complex-to-real FFT and a rotation; negative rounding residues are set to zero. `None`
/// only for a `size` that breaks those rules.
///
/// Also returns a bound on the ℓ2 norm of `out` minus the exact cyclic power of `pmf`
/// (`pmf` ≥ 0 taken as exact). Per Fourier coefficient (componentwise, as each FFT stage
/// adds at most a few ulps of the ℓ1 norm of the inputs of that stage, and twiddles have
/// modulus one; the real FFT is a half-size complex FFT plus one twiddled stage):
/// `|Â_k − A_k| ≤ r·Σa` with `r = 16u·⌈log₂N⌉`, about three times the constant of a radix-2
/// FFT (Higham, *Accuracy and Stability of Numerical Algorithms*, §24.1). With
/// `ρ_k = |Â_k| + r·Σa ≥ max(|A_k|, |Â_k|)`, the power's error is at most
/// `T·ρ_k^{T−1}·r·Σa` from the transform plus `(5T + 8)u·ρ_k^T` from the squarings; a
/// coefficient with `ρ_k^T < 1e-300` is set to zero and `ρ_k^T` counted as its error. The
/// inverse FFT adds `r·‖Ŷ‖₂` (normwise, over the full Hermitian spectrum) and the 1/N
/// scaling `u` relative.
pub fn cyclic_power(pmf: &[f64], size: usize, steps: u64, shift: u64) -> Option<(Vec<f64>, f64)> {
    if !size.is_multiple_of(2) || size < pmf.len() || size < 2 {
        return None;
    }
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(size);
    let inv = planner.plan_fft_inverse(size);
    let mut input = fwd.make_input_vec();
    input.get_mut(..pmf.len())?.copy_from_slice(pmf);
    let mut spectrum = fwd.make_output_vec();
    fwd.process(&mut input, &mut spectrum).ok()?;
    let n = size as f64;
    let t = steps as f64;
    let r = 16.0 * U * n.log2().ceil().max(1.0);
    let mass: f64 = pmf.iter().sum();
    let transform_error = r * mass;
    let last = spectrum.len() - 1;
    let (mut fourier_error_sq, mut y_sq) = (0.0f64, 0.0f64);
    for (k, c) in spectrum.iter_mut().enumerate() {
        // Interior coefficients stand for themselves and their conjugates.
        let weight = if k == 0 || k == last { 1.0 } else { 2.0 };
        let rho = c.norm() + transform_error;
        let rho_t1 = powu(rho, steps - 1);
        let rho_t = rho_t1 * rho;
        let err = if rho_t < 1e-300 {
            *c = Complex::new(0.0, 0.0);
            rho_t
        } else {
            *c = pow(*c, steps);
            y_sq += weight * c.norm_sqr();
            t * rho_t1 * transform_error + (5.0 * t + 8.0) * U * rho_t
        };
        fourier_error_sq += weight * err * err;
    }
    // The first and last coefficients of a real signal's spectrum are real (their imaginary
    // parts are zero up to rounding, which the error bound above already covers).
    if let Some(c) = spectrum.first_mut() {
        c.im = 0.0;
    }
    if let Some(c) = spectrum.last_mut() {
        c.im = 0.0;
    }
    inv.process(&mut spectrum, &mut input).ok()?;
    let scale = 1.0 / n;
    let shift = (u128::from(shift) % size as u128) as usize;
    input.rotate_left(shift);
    for v in input.iter_mut() {
        *v = (*v * scale).max(0.0);
    }
    let error_l2 = (fourier_error_sq.sqrt() * (1.0 + r) + (r + 2.0 * U) * y_sq.sqrt()) / n.sqrt();
    Some((input, error_l2 * (1.0 + 1e-6)))
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

/// How the masses of a composed PMF relate to the FFT's output: the FFT composed the tilted
/// masses `p_i·e^{λ L_i − c}`, so the mass at loss L is the output times
/// `e^{ln_scale − λL}` (`ln_scale = T·c`); an FFT error bounded by `error_l2` in ℓ2 is
/// scaled by the same factor point by point. `lambda = 0`, `ln_scale = 0` is no tilt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tilt {
    /// λ.
    pub lambda: f64,
    /// `T·c`.
    pub ln_scale: f64,
}

impl Tilt {
    /// No tilt.
    pub const NONE: Tilt = Tilt {
        lambda: 0.0,
        ln_scale: 0.0,
    };

    /// The factor at loss `l`, rounded up (a bound on the true factor).
    pub fn factor(&self, l: f64) -> f64 {
        let arg = self.ln_scale - self.lambda * l;
        // exp has an error under an ulp; its argument one of a few ulps of its terms.
        let slack = 4.0 * U * (self.ln_scale.abs() + (self.lambda * l).abs() + 750.0);
        (arg + slack).exp() * (1.0 + 2.0 * U)
    }

    /// Untilts the FFT's output in place: `out[i] ← out[i]·factor((offset + i)·h)`.
    pub fn apply(&self, out: &mut [f64], offset: i64, h: f64) {
        if self.lambda == 0.0 && self.ln_scale == 0.0 {
            return;
        }
        for (i, v) in out.iter_mut().enumerate() {
            if *v > 0.0 {
                let l = (offset + i as i64) as f64 * h;
                let arg = self.ln_scale - self.lambda * l;
                *v = if arg < 700.0 {
                    *v * self.factor(l)
                } else {
                    let slack = 4.0 * U * (self.ln_scale.abs() + (self.lambda * l).abs() + 750.0);
                    (v.ln() + arg + slack).exp() * (1.0 + 4.0 * U)
                };
            }
        }
    }
}

/// The smallest ε ≥ 0 (rounded up) at which
/// `flat + error_l2·√(Σ_{L_i > ε} f_i²) + Σ_{L_i > ε} pmf[i]·(1 − e^{ε − L_i}) ≤ delta`
/// for losses `L_i = (offset + i)·h` and `f_i = tilt.factor(L_i)` (1 without a tilt, so
/// that the middle term is `error_l2·√(points above ε)`); `None` when no ε on or below the
/// top point meets it; [`EpsilonAt::BelowGrid`] when it lies below the grid point under the
/// lowest one (the grid does not reach down far enough to answer). Partial sums are rounded against the answer
/// (4·n·u relative).
pub fn epsilon_at(
    pmf: &[f64],
    offset: i64,
    h: f64,
    delta: f64,
    flat: f64,
    error_l2: f64,
    tilt: Tilt,
) -> EpsilonAt {
    let n = pmf.len();
    let grow = 1.0 + 4.0 * n as f64 * U;
    let shrink = 1.0 - 4.0 * n as f64 * U;
    let decay = (-h).exp();
    // Walking down from the top: s1 = Σ_{j≥i} p_j, s2 = Σ_{j≥i} p_j·e^{−(L_j − L_i)}; for
    // ε ∈ [L_{i−1}, L_i] the sum is s1 − e^{ε − L_i}·s2 over the n − i points above ε.
    let (mut s1, mut s2, mut f2) = (0.0f64, 0.0f64, 0.0f64);
    if flat >= delta {
        return EpsilonAt::Unreachable;
    }
    for i in (0..n).rev() {
        let p = pmf.get(i).copied().unwrap_or(0.0);
        s1 += p;
        s2 = p + decay * s2;
        let l_i = (offset + i as i64) as f64 * h;
        if l_i <= 0.0 {
            return EpsilonAt::Epsilon(0.0);
        }
        let f = tilt.factor(l_i);
        f2 += f * f;
        let target = delta - flat - error_l2 * (f2 * grow).sqrt();
        if target <= 0.0 {
            // ε = L_i, with the n − i − 1 points above it, was certified one step up (or,
            // at the top point, by flat < δ); below it the bound on the rounding is too large.
            return EpsilonAt::Epsilon(l_i + 1e-12 * (1.0 + l_i.abs()));
        }
        let below = (l_i - h).max(0.0);
        let at_below = s1 * grow - (below - l_i).exp() * s2 * shrink;
        if at_below > target {
            let ratio = (s1 * grow - target) / (s2 * shrink);
            let eps = if ratio > 0.0 { l_i + ratio.ln() } else { l_i };
            let eps = eps.clamp(below, l_i);
            return EpsilonAt::Epsilon(eps + 1e-12 * (1.0 + eps.abs()));
        }
        if i == 0 {
            return EpsilonAt::BelowGrid(below);
        }
    }
    EpsilonAt::Epsilon(0.0)
}

/// What [`epsilon_at`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpsilonAt {
    /// The smallest ε meeting δ.
    Epsilon(f64),
    /// Not even the top point meets δ: the floor (mass at +∞ plus the rounding bound at
    /// the top) is at or above δ.
    Unreachable,
    /// ε lies below the grid point under the lowest one, which is above zero; that point
    /// (carried) meets δ, so it is a valid but possibly loose answer.
    BelowGrid(f64),
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
        let (out, err) = cyclic_power(&a, 8, 3, 2).unwrap();
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
    fn cyclic_power_rotates_like_the_phase_did() {
        // A window read from an odd shift, wrapping around the end of the buffer.
        let a = [0.25, 0.5, 0.25];
        let (out, _) = cyclic_power(&a, 16, 2, 13).unwrap();
        // a*a = [1/16, 1/4, 3/8, 1/4, 1/16] at 0..5; out[n] = c[(n + 13) mod 16].
        let c = [0.0625, 0.25, 0.375, 0.25, 0.0625];
        for (n, v) in out.iter().enumerate() {
            let want = c.get((n + 13) % 16).copied().unwrap_or(0.0);
            assert!((v - want).abs() < 1e-15, "{n}: {v} {want}");
        }
        assert!(cyclic_power(&a, 15, 2, 0).is_none(), "odd size");
    }

    #[test]
    fn ln_mgf_upper_bounds_the_direct_sum_closely() {
        let pmf: Vec<f64> = (0..1000)
            .map(|i| ((i as f64) * 0.37).sin().abs() * 1e-3)
            .collect();
        let (base, h) = (-2.0, 0.01);
        for lambda in [-30.0, -1.0, -1e-3, 0.0, 1e-3, 0.7, 12.0, 300.0] {
            let direct = {
                let terms: Vec<f64> = pmf
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.ln() + lambda * (base + i as f64 * h))
                    .collect();
                let mx = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln()
            };
            let up = ln_mgf_upper(&pmf, base, h, lambda);
            assert!(
                up >= direct && up - direct < 1e-9 * (1.0 + direct.abs()),
                "{lambda}: {up} {direct}"
            );
            let mid = ln_mgf(&pmf, base, h, lambda);
            assert!(
                (mid - direct).abs() < 1e-12 * (1.0 + direct.abs()),
                "{lambda}: {mid} {direct}"
            );
        }
    }

    #[test]
    fn golden_min_finds_the_minimum_of_a_quasi_convex_function() {
        let (x, v) = golden_min(|l| (l.ln() - 2.0).powi(2) + 1.0);
        assert!(
            (x.ln() - 2.0).abs() < 0.01 && (v - 1.0).abs() < 1e-4,
            "{x} {v}"
        );
    }

    #[test]
    fn one_gaussian_step_is_pessimistic_and_tight() {
        // q = 1: the Gaussian mechanism, δ(ε) = Φ(−εσ + 1/(2σ)) − e^ε·Φ(−εσ − 1/(2σ)).
        let (sigma, h) = (1.0, 1e-3);
        let loss = SubsampledGaussianLoss::new(1.0, sigma, Direction::Remove);
        let (x_min, x_max) = (-11.35 * sigma, 1.0 + 11.35 * sigma);
        let k_lo = (loss.loss(x_min) / h).floor() as i64 - 1;
        let len = ((loss.loss(x_max) / h).ceil() as i64 - k_lo + 3) as usize;
        let (pmf, above) = connect_the_dots(&loss, h, k_lo, len, x_min, x_max);
        let phi = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let total: f64 = pmf.iter().sum::<f64>() + above;
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        for eps in [0.0, 0.5, 1.0, 2.0, 4.0] {
            let exact =
                phi(-eps * sigma + 0.5 / sigma) - eps.exp() * phi(-eps * sigma - 0.5 / sigma);
            let ours: f64 = pmf
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let l = (k_lo + i as i64) as f64 * h;
                    if l > eps {
                        p * -libm::expm1(eps - l)
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
                * (1.0 + MASS_RELATIVE_ERROR);
            assert!(ours >= exact * (1.0 - 1e-12), "{eps}: {ours} < {exact}");
            assert!(
                ours <= exact * (1.0 + 1e-5) + 1e-15,
                "{eps}: {ours} vs {exact}"
            );
        }
    }

    #[test]
    fn tilt_factors_round_up_and_undo_the_tilt() {
        let t = Tilt {
            lambda: 0.5,
            ln_scale: 40.0,
        };
        for l in [0.0f64, 10.0, 79.0, 200.0] {
            let exact = (40.0 - 0.5 * l).exp();
            let f = t.factor(l);
            assert!(f >= exact && f <= exact * (1.0 + 1e-12), "{l}: {f} {exact}");
        }
        let mut v = vec![1e-30, 0.5, 0.0];
        t.apply(&mut v, 100, 1.0);
        assert!(v[0] >= 1e-30 * (-10.0f64).exp() && v[2] == 0.0);
    }

    #[test]
    fn epsilon_at_solves_the_hockey_stick_exactly() {
        // Mass ½ at loss 0 and ½ at loss 1: δ(ε) = ½(1 − e^{ε−1}) on [0, 1].
        let pmf = [0.5, 0.0, 0.5];
        let EpsilonAt::Epsilon(eps) = epsilon_at(&pmf, 0, 0.5, 0.1, 0.0, 0.0, Tilt::NONE) else {
            panic!("no answer");
        };
        let want = 1.0 + (1.0f64 - 0.2).ln();
        assert!(eps >= want && eps < want + 1e-9, "{eps} {want}");
        assert_eq!(
            epsilon_at(&pmf, 0, 0.5, 0.6, 0.0, 0.0, Tilt::NONE),
            EpsilonAt::Epsilon(0.0)
        );
        assert_eq!(
            epsilon_at(&pmf, 0, 0.5, 0.1, 0.2, 0.0, Tilt::NONE),
            EpsilonAt::Unreachable
        );
    }
}
