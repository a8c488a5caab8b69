//! A batched discrete-Laplace sampler for bulk grid-Laplace noise.
//!
//! **Not exact.** It draws the same decomposition as the exact sampler: a geometric
//! `G = n·V + U` with `n = 2^j ≤ scale`, `U ∈ [0, n)` accepted with probability
//! `exp(−U/scale)` and `V` geometric with ratio `r = exp(−n/scale)`, then a sign, rejecting
//! `−0`. The coin probabilities are `f64` products of tabulated `exp` values compared with
//! 53- and 64-bit uniform integers, and `V`'s table stops where `r^v < 2^-24` (past it,
//! memorylessness restarts the table). Every point probability of the output is therefore
//! within a relative error η ≤ 2^-36 of the discrete Laplace (the worst term is 64-bit
//! rounding of a threshold near 2^-24, about 2^-40, plus a few `f64` ulps), so a mechanism
//! that is ε-DP with the exact sampler is ε + [`FAST_LAPLACE_EPSILON_SLACK`]-DP with this
//! one, where the slack is `ln((1+η)/(1−η))` rounded up.

use super::super::error::{PrivacyError, Result, check_range};
use super::super::rng::DpRng;

/// The ε to add to a pure-DP guarantee when [`FastDiscreteLaplace`] replaces the exact
/// sampler: `ln((1+η)/(1−η))` for η = 2^-36, rounded up.
pub const FAST_LAPLACE_EPSILON_SLACK: f64 = 3.0e-11;

/// Entries of `V`'s threshold table kept while `r^v ≥ 2^-24`.
const V_TABLE_MIN: f64 = 1.0 / 16_777_216.0;

/// Words drawn from the generator per refill.
const BUFFER_WORDS: usize = 1024;

/// A discrete Laplace sampler of fixed scale with precomputed tables.
#[derive(Debug, Clone)]
pub struct FastDiscreteLaplace {
    scale: f64,
    /// `j`, with `n = 2^j`.
    u_bits: u32,
    /// `exp(−(k·2^{8i})/scale)` for byte `i` of `U` and byte value `k`.
    accept: Vec<[f64; 256]>,
    /// `⌊r^v · 2^64⌋` for `v = 1..=len`; `V ≥ v` iff the word is below entry `v`.
    v_thresholds: Vec<u64>,
}

impl FastDiscreteLaplace {
    /// A sampler for `P(x) ∝ exp(−|x|/scale)`, `scale` in `[1/4, 2^32]`. Below 1/4 the
    /// tables lose relative precision; use the exact sampler there.
    pub fn new(scale: f64) -> Result<Self> {
        check_range("scale", scale, 0.25, 4_294_967_296.0, true)?;
        let u_bits = if scale < 1.0 {
            0
        } else {
            scale.log2().floor() as u32
        };
        let n = 2f64.powi(u_bits as i32);
        let bytes = u_bits.div_ceil(8) as usize;
        let accept = (0..bytes)
            .map(|i| {
                let mut row = [0.0; 256];
                for (k, p) in row.iter_mut().enumerate() {
                    *p = (-(k as f64) * 2f64.powi(8 * i as i32) / scale).exp();
                }
                row
            })
            .collect();
        let r = (-n / scale).exp();
        let mut v_thresholds = Vec::new();
        let mut v = 1;
        loop {
            let rv = (-(v as f64) * n / scale).exp();
            if rv < V_TABLE_MIN {
                break;
            }
            // rv < 1, so rv·2^64 < 2^64 and the cast does not saturate.
            v_thresholds.push((rv * 18_446_744_073_709_551_616.0) as u64);
            v += 1;
        }
        if v_thresholds.is_empty() || r <= 0.0 {
            return Err(PrivacyError::InvalidParameter {
                name: "scale",
                value: scale,
                reason: "too small for the fast sampler",
            });
        }
        Ok(Self {
            scale,
            u_bits,
            accept,
            v_thresholds,
        })
    }

    /// The scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: DpRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let mut words = WordBuffer::new();
        for o in out.iter_mut() {
            *o = self.one(rng, &mut words);
        }
    }

    #[inline(always)]
    fn one<R: DpRng + ?Sized>(&self, rng: &mut R, words: &mut WordBuffer) -> i64 {
        let u_mask = (1u64 << self.u_bits) - 1;
        loop {
            let w = words.next(rng);
            let negative = w >> 63 == 1;
            let u = w & u_mask;
            if self.u_bits > 0 {
                let mut p = 1.0;
                for (i, row) in self.accept.iter().enumerate() {
                    // The mask keeps the index below 256.
                    p *= row[((u >> (8 * i)) & 0xff) as usize];
                }
                // Accept with probability ⌊p·2^53⌋/2^53, within 2^-53 of p.
                let threshold = (p * 9_007_199_254_740_992.0) as u64;
                if words.next(rng) >> 11 >= threshold {
                    continue;
                }
            }
            let mut v: u64 = 0;
            'geometric: loop {
                let w = words.next(rng);
                for &t in &self.v_thresholds {
                    if w >= t {
                        break 'geometric;
                    }
                    v += 1;
                }
                // Past the table: by memorylessness, draw the rest afresh.
            }
            let g = (v << self.u_bits) | u;
            if negative && g == 0 {
                continue;
            }
            // g < 2^63 except with probability far below 2^-1000.
            let g = g as i64;
            return if negative { -g } else { g };
        }
    }
}

/// Generator output drawn in blocks, which lets ChaCha's wide SIMD path run.
struct WordBuffer {
    buf: [u64; BUFFER_WORDS],
    pos: usize,
}

impl WordBuffer {
    fn new() -> Self {
        Self {
            buf: [0; BUFFER_WORDS],
            pos: BUFFER_WORDS,
        }
    }

    #[inline(always)]
    fn next<R: DpRng + ?Sized>(&mut self, rng: &mut R) -> u64 {
        if self.pos >= BUFFER_WORDS {
            rng.fill_u64(&mut self.buf);
            self.pos = 0;
        }
        let w = self.buf.get(self.pos).copied().unwrap_or_default();
        self.pos += 1;
        w
    }
}

/// Grid-Laplace noise in bulk: `values` rounded to `grid`, plus `grid ×` discrete Laplace
/// noise of `scale` steps, written back in place. Uses the fast sampler, so the privacy map
/// must add [`FAST_LAPLACE_EPSILON_SLACK`].
pub fn add_grid_laplace<R: DpRng + ?Sized>(
    rng: &mut R,
    sampler: &FastDiscreteLaplace,
    grid: super::Grid,
    values: &mut [f64],
) -> Result<()> {
    let mut noise = vec![0i64; values.len()];
    sampler.fill(rng, &mut noise);
    for (i, (x, z)) in values.iter_mut().zip(&noise).enumerate() {
        let n = grid.to_steps(*x, i)?;
        *x = grid.from_steps(
            n.checked_add(*z)
                .ok_or(PrivacyError::OffGrid { index: i })?,
        );
    }
    Ok(())
}
