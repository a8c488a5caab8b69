//! A batched discrete-Laplace sampler for bulk grid-Laplace noise: one uniform word per
//! sample, inverted through a floating-point logarithm, with a proven bound on how far its
//! output distribution is from the exact one, charged in the privacy map.
//!
//! # Algorithm
//!
//! For scale `t` (in grid steps) let `p = exp(−1/t)`. The magnitude of a discrete Laplace
//! variable `X` has `P(|X| ≥ k) = q·p^k` for `k ≥ 1` with `q = 2/(1+p)`, so with `U`
//! uniform on (0, 1], `|X| = ⌊−t·ln U + c⌋` with `c = t·ln q` (inversion), and
//! `X = ±|X|` with a fair sign (a sign on 0 changes nothing, so nothing is rejected).
//!
//! Each sample takes one 64-bit word `w` from a block of generator output: bit 0 is the
//! sign, and `U = fl(w >> 1)·2^-63` (the 63 high bits, rounded to 53 significant bits, so
//! `U` has full `f64` precision down to 2^-10). If the computed value reaches the cap
//! `K = ⌊10·ln 2·t⌋` (probability `q·p^K`: about 2^-10 for `t ≫ 1`, 3.6 % at `t = 1/4`),
//! the sample continues in a cold path:
//! by memorylessness, `|X| − K` given `|X| ≥ K` is geometric, `P(G ≥ j) = p^j`, drawn by
//! the same inversion (`c = 0`) and the same cap, adding `K` per restart. The hot loop has
//! no rejection and no data-dependent branch except that rare one: 73–79 M samples/s on the
//! reference machine, 7–8× the exact sampler (BENCHMARKS.md, "DP samplers").
//!
//! # Deviation bound
//!
//! Write `θ` for the relative error of the computed `v = fl(fl(−log U)·t) + c`. The
//! logarithm is [`libm::log`] (FreeBSD's `e_log.c`, error below 1 ulp, the same on every
//! platform) and the product rounds once: 1.5·2^-52 of `−t·ln U`. `c` comes from `1/t`,
//! `expm1`, `log1p` (each below 1 ulp, condition numbers below 1.5) and a product: within
//! 7.1·2^-52 of `c`. The sum rounds once more, so `θ < 9.1·2^-52 < 2^-48 =: θ_max`, a
//! margin of 1.7.
//!
//! Without assuming the computed `v` is monotone in `U`, the event `⌊v⌋ = k` contains the
//! event that the exact value lies in `[k/(1−θ_max), (k+1)/(1+θ_max))` and is contained in
//! the event that it lies in `[k/(1+θ_max), (k+1)/(1−θ_max))`. Both are intervals of `U`
//! above 2^-11, whose probability under the exact uniform differs from the target
//! `q·p^k·(1−p)` by a relative `2(2k+2)·θ_max / (t·(1−p))` at most; the rounding of `U` to
//! its 53-bit grid adds at most `3·2^-52·b` for an interval ending at `b`, a relative
//! `6·2^-52/(1−p)`. So every point probability below the cap is within a relative
//!
//! ```text
//! η = (4·K·θ_max/t + 6·2^-52) / (1 − p)
//! ```
//!
//! of the exact one, and likewise each geometric step of the cold path; each restart's
//! probability is within a relative `η_ρ = 4·(K/t)·θ_max + 2^-50`. For `t = 2^20` (the
//! grid the Laplace mechanism uses at ε = 1) η ≈ 1.06·10⁻⁷; η grows linearly in `t`.
//!
//! # What is charged
//!
//! A noise value `x` has probability `P(x)·e(x)` where `P` is the exact discrete Laplace and
//! `e(x)` is a product of one point factor in `[1−η, 1+η]` and, in the tail, restart
//! factors. For two noise values `d` steps apart, the log-ratio is at most
//! `d/t + ℓ(η) + (⌊d/K⌋ + 2)·ℓ(η_ρ)` with `ℓ(η) = ln((1+η)/(1−η))`. Summed over the at most
//! `m = min(dim, ⌊D⌋)` coordinates that can differ between neighbours whose rounded scores
//! are `D` steps apart in ℓ₁, a mechanism that is `D/t`-DP with the exact sampler is
//! pure `(D/t + s)`-DP with this one, where
//!
//! ```text
//! s = m·(ℓ(η) + 2·ℓ(η_ρ)) + (D/K)·ℓ(η_ρ)        (FastDiscreteLaplace::epsilon_slack)
//! ```
//!
//! (about 2.2·10⁻⁷ per coordinate at `t = 2^20`). A pure bound is charged rather than a δ
//! because it composes in the same ε budgets as the exact mechanism; for an (ε, δ) view, the
//! total-variation distance of one sample from the exact law is at most
//! [`FastDiscreteLaplace::total_variation_bound`] `=: τ ≈ η`, so a release of `dim` noisy
//! coordinates is within `dim·τ` of the exact one, and the coupling argument gives
//! `(ε, dim·τ·(1 + e^ε))`-DP.
//!
//! Floating point enters only the *probabilities* of the integer noise, never the released
//! value: the output is an integer number of grid steps, scaled by a power of two, exactly.
//! The attack of Mironov 2012 reads the input from which `f64` values a noisy output can
//! take (the low bits of `x + noise` differ by `x`); here every output is a grid point
//! whatever the input, so the support is the same for all inputs and the bound above is the
//! whole story.

use super::super::error::{PrivacyError, Result, check_range};
use super::super::rng::DpRng;

/// Words drawn from the generator per block.
const BLOCK_WORDS: usize = 512;

/// `2^-63`: maps the 63 high bits of a word to (0, 1].
const TWO_POW_MINUS_63: f64 = 1.0 / 9_223_372_036_854_775_808.0;

/// The bound `θ_max` on the relative error of the computed inversion value (module docs).
const THETA_MAX: f64 = 1.0 / 281_474_976_710_656.0; // 2^-48

/// A discrete Laplace sampler of fixed scale.
#[derive(Debug, Clone)]
pub struct FastDiscreteLaplace {
    scale: f64,
    /// `c = t·ln(2/(1+p))`: the shift that turns the geometric into `|X|`.
    shift: f64,
    /// The cap `K`, in steps.
    cap: i64,
    /// `K` as `f64` (exact: `K < 2^35`).
    cap_f: f64,
    /// `η`: relative deviation of each point (and geometric step) probability.
    eta_point: f64,
    /// `η_ρ`: relative deviation of each restart probability.
    eta_restart: f64,
}

impl FastDiscreteLaplace {
    /// A sampler for `P(x) ∝ exp(−|x|/scale)`, `scale` in `[1/4, 2^32]`. Above 2^32 the
    /// deviation bound grows past 10⁻³; below 1/4 use the exact sampler.
    pub fn new(scale: f64) -> Result<Self> {
        check_range("scale", scale, 0.25, 4_294_967_296.0, true)?;
        // K = ⌊10·ln 2·t⌋ keeps q·p^K ≥ 2^-10 up to rounding (U has full precision there);
        // t ≥ 1/4 gives K ≥ 1.
        let cap_f = (10.0 * std::f64::consts::LN_2 * scale).floor().max(1.0);
        let cap = cap_f as i64;
        let one_minus_p = -libm::expm1(-1.0 / scale);
        let shift = -scale * libm::log1p(-one_minus_p / 2.0);
        if !(one_minus_p > 0.0 && shift > 0.0 && shift.is_finite()) {
            return Err(PrivacyError::InvalidParameter {
                name: "scale",
                value: scale,
                reason: "outside the fast sampler's range",
            });
        }
        let eps52 = f64::EPSILON; // 2^-52
        // A 1 % margin covers the rounding of these bounds themselves.
        let eta_point = (4.0 * cap_f * THETA_MAX / scale + 6.0 * eps52) / one_minus_p * 1.01;
        let eta_restart = (4.0 * (cap_f / scale) * THETA_MAX + 4.0 * eps52) * 1.01;
        Ok(Self {
            scale,
            shift,
            cap,
            cap_f,
            eta_point,
            eta_restart,
        })
    }

    /// The scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `c = t·ln(2/(1+p))`, the shift added to every inversion value (module docs). Exposed
    /// so the device port (`kernels/dp_samplers.cuh`) uses the same bits.
    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// The cap `K`, in steps (module docs). Exposed for the device port, as [`Self::shift`].
    pub fn cap(&self) -> i64 {
        self.cap
    }

    /// `η`: every point probability below the cap, and every geometric step of the tail, is
    /// within this relative distance of the exact one.
    pub fn point_deviation(&self) -> f64 {
        self.eta_point
    }

    /// A bound on the total-variation distance between one sample's law and the exact
    /// discrete Laplace. A point reached after `a` geometric restarts deviates by at most
    /// `(1+η_ρ)^{a+1}·(1+η) − 1 ≤ 1.01·((a+1)·η_ρ + η)`; summed against the exact law, whose
    /// tail mass `ρ₁ = q·p^K` and restart ratio `ρ₂ = p^K` satisfy `ρ₁/(1−ρ₂) < 1/8` for
    /// every `t ≥ 1/4`, that is at most `1.01·(η + η_ρ/8)`, here rounded up to `1.02·(…)`.
    pub fn total_variation_bound(&self) -> f64 {
        (self.eta_point + self.eta_restart / 8.0) * 1.02
    }

    /// The ε to add to the exact mechanism's pure ε when this sampler replaces the exact one
    /// for noise on `dim` coordinates whose rounded values move at most `l1_steps` grid steps
    /// (ℓ₁) between neighbours (module docs, "What is charged"). Rounded up.
    pub fn epsilon_slack(&self, l1_steps: f64, dim: usize) -> f64 {
        let ell = |eta: f64| libm::log1p(eta) - libm::log1p(-eta);
        let coordinates = (dim as f64).min(l1_steps.floor().max(1.0));
        let s = coordinates * (ell(self.eta_point) + 2.0 * ell(self.eta_restart))
            + (l1_steps / self.cap_f) * ell(self.eta_restart);
        // The bounds are ≥ 2^-52, so a 10⁻⁶ relative margin swamps the rounding above.
        (s * (1.0 + 1e-6)).next_up()
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: DpRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let mut block = [0u64; BLOCK_WORDS];
        for chunk in out.chunks_mut(BLOCK_WORDS) {
            let words = &mut block[..chunk.len()];
            rng.fill_u64(words);
            for (o, &w) in chunk.iter_mut().zip(words.iter()) {
                let v = inversion_value(w, self.scale) + self.shift;
                // NaN (never produced, U > 0 or log = −∞) and +∞ also take the cold path.
                let magnitude = if v < self.cap_f {
                    v as i64
                } else {
                    self.tail(rng)
                };
                let negative = (w & 1) as i64;
                // Two's-complement negation when the sign bit is set, without a branch.
                *o = (magnitude ^ -negative) + negative;
            }
        }
    }

    /// `K + G` for the geometric `G` of ratio `p`, given that `|X|` reached the cap.
    #[cold]
    #[inline(never)]
    fn tail<R: DpRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let mut g = self.cap;
        loop {
            let y = inversion_value(rng.next_u64(), self.scale);
            if y < self.cap_f {
                // y ∈ [0, K): the cast is exact; saturation needs 2^28 restarts in a row.
                return g.saturating_add(y as i64);
            }
            g = g.saturating_add(self.cap);
        }
    }
}

/// `fl(−log(U)·t)` with `U = fl(w >> 1)·2^-63`; `+∞` when `U = 0`.
#[inline(always)]
fn inversion_value(w: u64, scale: f64) -> f64 {
    let u = (w >> 1) as f64 * TWO_POW_MINUS_63;
    -libm::log(u) * scale
}

/// Grid-Laplace noise in bulk: `values` rounded to `grid`, plus `grid ×` discrete Laplace
/// noise of `scale` steps, written back in place. Every value is checked before any is
/// changed, so on error `values` is untouched. The privacy map must add
/// [`FastDiscreteLaplace::epsilon_slack`].
pub fn add_grid_laplace<R: DpRng + ?Sized>(
    rng: &mut R,
    sampler: &FastDiscreteLaplace,
    grid: super::Grid,
    values: &mut [f64],
) -> Result<()> {
    let mut steps = values
        .iter()
        .enumerate()
        .map(|(i, &x)| grid.to_steps(x, i))
        .collect::<Result<Vec<i64>>>()?;
    let mut noise = vec![0i64; values.len()];
    sampler.fill(rng, &mut noise);
    for (i, (n, z)) in steps.iter_mut().zip(&noise).enumerate() {
        *n = n
            .checked_add(*z)
            .filter(|s| s.unsigned_abs() < 1u64 << 53)
            .ok_or(PrivacyError::OffGrid { index: i })?;
    }
    for (x, &n) in values.iter_mut().zip(&steps) {
        *x = grid.from_steps(n);
    }
    Ok(())
}
