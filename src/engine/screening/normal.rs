//! Standard normal samples in `f32` by the ziggurat method (Marsaglia and Tsang, 2000: 128
//! layers, the tail beyond r = 3.4426 by Marsaglia's exponential method), two samples per
//! 64-bit draw.
//!
//! Each sample takes 32 independent bits of the stream: 7 choose the layer, 1 the sign and 24
//! the position in the layer (an `f32` has 24 significant bits, so no resolution is lost).
//! The layer bits and the value bits are disjoint, which avoids the correlation that Doornik
//! (2005) found in the original, where they overlap. `rand_distr::StandardNormal` spends a
//! whole `u64` and `f64` arithmetic on each sample, only for the screener to round it to
//! `f32`; this halves the keystream the screener needs.

use rand_core::RngCore;

const LAYERS: usize = 128;
/// Where the tail starts.
const R: f64 = 3.442_619_855_899;
/// The area of each layer.
const V: f64 = 9.912_563_035_262_17e-3;
/// The range of the 24-bit position.
const M: f64 = (1u32 << 24) as f64;

/// The ziggurat's tables.
pub(super) struct Ziggurat {
    /// Accept at once when the position is below this.
    k: [u32; LAYERS],
    /// Position to value.
    w: [f32; LAYERS],
    /// The density at each layer's edge.
    f: [f64; LAYERS],
}

/// The tables, built once per process: they are constants of the method.
pub(super) fn table() -> &'static Ziggurat {
    static TABLE: std::sync::LazyLock<Ziggurat> = std::sync::LazyLock::new(Ziggurat::new);
    &TABLE
}

impl Ziggurat {
    fn new() -> Self {
        let mut k = [0u32; LAYERS];
        let mut w = [0f32; LAYERS];
        let mut f = [0f64; LAYERS];
        let mut dn = R;
        let mut tn = dn;
        let q = V / (-0.5 * dn * dn).exp();
        k[0] = (dn / q * M) as u32;
        k[1] = 0;
        w[0] = (q / M) as f32;
        w[LAYERS - 1] = (dn / M) as f32;
        f[0] = 1.0;
        f[LAYERS - 1] = (-0.5 * dn * dn).exp();
        for i in (1..LAYERS - 1).rev() {
            dn = (-2.0 * (V / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            k[i + 1] = (dn / tn * M) as u32;
            tn = dn;
            f[i] = (-0.5 * dn * dn).exp();
            w[i] = (dn / M) as f32;
        }
        Self { k, w, f }
    }

    /// Fills `out` with independent standard normal samples from `rng`.
    pub(super) fn fill(&self, rng: &mut impl RngCore, out: &mut [f32]) {
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = rng.next_u64();
            pair[0] = self.sample(rng, bits as u32);
            pair[1] = self.sample(rng, (bits >> 32) as u32);
        }
        for last in pairs.into_remainder() {
            let bits = rng.next_u32();
            *last = self.sample(rng, bits);
        }
    }

    #[inline]
    fn sample(&self, rng: &mut impl RngCore, mut bits: u32) -> f32 {
        loop {
            let layer = (bits & 0x7f) as usize;
            // Bit 7 is the sign, moved to the float's sign bit: no branch to mispredict.
            let sign = (bits & 0x80) << 24;
            let position = bits >> 8;
            // `layer` < 128 by the mask.
            let (k, w) = (self.k[layer], self.w[layer]);
            if position < k {
                return f32::from_bits((position as f32 * w).to_bits() ^ sign);
            }
            if let Some(x) = self.edge(rng, layer, position) {
                return f32::from_bits(x.to_bits() ^ sign);
            }
            bits = rng.next_u32();
        }
    }

    /// The rare case: the tail (layer 0) or the wedge of a layer. `None`: rejected.
    #[cold]
    fn edge(&self, rng: &mut impl RngCore, layer: usize, position: u32) -> Option<f32> {
        if layer == 0 {
            loop {
                let x = -uniform(rng).ln() / R;
                let y = -uniform(rng).ln();
                if y + y >= x * x {
                    return Some((R + x) as f32);
                }
            }
        }
        let x = f64::from(position) * f64::from(self.w[layer]);
        let (hi, lo) = (self.f[layer - 1], self.f[layer]);
        (lo + uniform(rng) * (hi - lo) < (-0.5 * x * x).exp()).then_some(x as f32)
    }
}

/// A uniform in (0, 1), never 0 (its logarithm is taken).
fn uniform(rng: &mut impl RngCore) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
