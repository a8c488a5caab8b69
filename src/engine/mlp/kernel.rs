//! The fused CPU forward: `act(x · W + b)` with register-tiled, run-time multiversioned
//! loops, for the small batches where candle's per-op overhead dominates.

use candle_core::{Storage, Tensor};

use super::super::config::Activation;
use super::super::error::EngineError;

/// Runs `f` on a contiguous CPU F32 tensor's values in place (no copy: the weights stay in
/// their locked memory).
pub(super) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, EngineError> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let s = cpu.as_slice::<f32>()?;
            let values = layout
                .contiguous_offsets()
                .and_then(|(start, end)| s.get(start..end))
                .ok_or_else(|| {
                    EngineError::Compute(candle_core::Error::Msg(
                        "fused forward needs contiguous tensors".into(),
                    ))
                })?;
            Ok(f(values))
        }
        #[allow(unreachable_patterns)]
        _ => Err(EngineError::Compute(candle_core::Error::Msg(
            "fused forward runs on the CPU only".into(),
        ))),
    }
}

/// `y = act(x · W + b)` for `rows` rows, with `W` stored `[inp, out]` row-major.
#[allow(clippy::too_many_arguments)]
pub(super) fn dense_fused(
    x: &[f32],
    rows: usize,
    inp: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out: usize,
    activation: Activation,
    y: &mut Vec<f32>,
) {
    y.clear();
    y.resize(rows * out, 0.0);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(out) {
            row.copy_from_slice(b);
        }
    }
    dense_accumulate(x, rows, inp, w, out, y);
    activate(y, activation);
}

/// Applies `activation` in place.
pub(super) fn activate(y: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Gelu => y
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2))),
        Activation::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Sigmoid => y.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        Activation::None => {}
    }
}

/// Output columns one register tile covers (one AVX-512 register, two AVX2 ones).
pub(super) const TILE: usize = 16;

/// `y += x · W` for `rows` rows (`W` stored `[inp, out]`), compiled for the host's widest
/// vector unit at run time (`multiversion`: the binary itself targets baseline x86-64).
/// Blocks of four rows by [`TILE`] columns of `y` stay in registers for a whole pass over
/// `W`; columns past the last full tile (a classifier's two outputs, say) are dot products
/// with register accumulators, never read-modify-writes of `y` per weight.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub(super) fn dense_accumulate(
    x: &[f32],
    rows: usize,
    inp: usize,
    w: &[f32],
    out: usize,
    y: &mut [f32],
) {
    if inp == 0 || out == 0 {
        return;
    }
    let mut xs = x.chunks_exact(inp);
    let mut ys = y.chunks_exact_mut(out);
    let mut left = rows;
    while left >= 4 {
        let (Some(x0), Some(x1), Some(x2), Some(x3)) = (xs.next(), xs.next(), xs.next(), xs.next())
        else {
            return;
        };
        let (Some(y0), Some(y1), Some(y2), Some(y3)) = (ys.next(), ys.next(), ys.next(), ys.next())
        else {
            return;
        };
        dense_block([x0, x1, x2, x3], w, out, [y0, y1, y2, y3]);
        left -= 4;
    }
    for (xr, yr) in xs.zip(ys).take(left) {
        dense_block([xr], w, out, [yr]);
    }
}

/// `R` rows of [`dense_accumulate`]; inlined into each of its target-specific copies.
#[inline(always)]
pub(super) fn dense_block<const R: usize>(
    x: [&[f32]; R],
    w: &[f32],
    out: usize,
    mut y: [&mut [f32]; R],
) {
    let full = out - out % TILE;
    for c in (0..full).step_by(TILE) {
        let mut acc = [[0f32; TILE]; R];
        for (k, wk) in w.chunks_exact(out).enumerate() {
            let Some(wt) = wk
                .get(c..c + TILE)
                .and_then(|t| <&[f32; TILE]>::try_from(t).ok())
            else {
                break;
            };
            for (acc_r, x_r) in acc.iter_mut().zip(&x) {
                let a = x_r.get(k).copied().unwrap_or(0.0);
                for (v, wv) in acc_r.iter_mut().zip(wt) {
                    *v += a * wv;
                }
            }
        }
        for (acc_r, y_r) in acc.iter().zip(y.iter_mut()) {
            if let Some(dst) = y_r.get_mut(c..c + TILE) {
                for (v, s) in dst.iter_mut().zip(acc_r) {
                    *v += s;
                }
            }
        }
    }
    for j in full..out {
        let mut acc = [0f32; R];
        for (k, wk) in w.chunks_exact(out).enumerate() {
            let wv = wk[j];
            for (v, x_r) in acc.iter_mut().zip(&x) {
                *v += x_r.get(k).copied().unwrap_or(0.0) * wv;
            }
        }
        for (v, y_r) in acc.iter().zip(y.iter_mut()) {
            y_r[j] += v;
        }
    }
}
