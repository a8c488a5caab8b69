//! CPU kernels of the BERT forward pass, on plain `f32` slices: the matmul (the `gemm`
//! crate, which candle's CPU matmul also runs, with its AVX-512 kernels enabled) and fused
//! element-wise passes that candle would run as several ops, each allocating a tensor:
//!
//! - [`bias_gelu`]: `x ← GELU(x + b)`, the exact (erf) GELU of BERT;
//! - [`masked_softmax`]: `x ← softmax(x + mask bias)` over each row of attention scores;
//! - [`bias_layer_norm`]: `x ← LayerNorm(x + b)`, after a matmul that added its product to
//!   the residual in place.
//!
//! The element-wise kernels are written once, as plain loops without branches (their `exp`
//! and `erf` are polynomial, with no library call), and compiled three times: for AVX-512,
//! for AVX2 with FMA, and for any x86-64 or other CPU. The first two are picked at run time
//! when the CPU has those features; LLVM vectorizes the loops for each. Tests compare each
//! kernel with an independent scalar reference (libm, candle's ops, a naive matmul).
//!
//! A crate of its own, used by `confidant`'s `engine::bert` (`model/cpu.rs`), so that the dev
//! profile compiles it optimized, as it does dependencies: these loops are written for LLVM to
//! vectorize and inline, and unoptimized they dominated every test that encodes text.

// `unsafe` here is of two kinds, each with its SAFETY note: calls of the `gemm` crate's
// raw-pointer matmul, after checking that every element it reads or writes lies within the
// slices, and calls of the AVX-512 and AVX2 builds of a kernel after detecting those CPU
// features at run time.
#![allow(unsafe_code)]

/// A view or product that does not fit its slice, or a stride too large to address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(String);

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// A kernel's result.
pub type Result<T> = std::result::Result<T, KernelError>;

/// A matrix in a slice: element `(i, j)` at `i * rs + j * cs`, every one within the slice.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// The offset of the last element of a `rows × cols` view with strides `rs`, `cs`, and
/// whether it lies before `len` (an empty view always fits).
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .zip((cols - 1).checked_mul(cs))
        .and_then(|(a, b)| a.checked_add(b))
        .is_some_and(|last| last < len)
}

fn isize_of(v: usize) -> Result<isize> {
    isize::try_from(v).map_err(|_| KernelError(format!("stride {v} is too large")))
}

impl<'a> Mat<'a> {
    /// A `rows × cols` view of `data` at offset `start` with strides `rs`, `cs`; an error if
    /// an element would fall outside `data`.
    #[inline]
    pub fn new(
        data: &'a [f32],
        start: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Result<Self> {
        let data = data
            .get(start..)
            .filter(|d| fits(d.len(), rows, cols, rs, cs))
            .ok_or_else(|| {
                KernelError(format!(
                    "a {rows}×{cols} view (strides {rs}, {cs}) at {start} exceeds {} values",
                    data.len()
                ))
            })?;
        Ok(Self {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// The row-major `rows × cols` matrix at the start of `data`.
    #[inline]
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, 0, (rows, cols), (cols, 1))
    }
}

/// `dst ← lhs · rhs`, or `dst ← dst + lhs · rhs` when `accumulate`, with `dst` the `m × n`
/// row-major matrix of row stride `dst_rs ≥ n` at the start of `dst`, on up to `threads`
/// threads of rayon's pool.
#[inline]
pub fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        return Err(KernelError(format!(
            "matmul of {m}×{k} by {}×{n}",
            rhs.rows
        )));
    }
    // Row-major with dst_rs ≥ n: distinct (i, j) are distinct elements, all within dst.
    if dst_rs < n || !fits(dst.len(), m, n, dst_rs, 1) {
        return Err(KernelError(format!(
            "a {m}×{n} product (row stride {dst_rs}) exceeds {} values",
            dst.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row.iter_mut().take(n).for_each(|v| *v = 0.0);
            }
        }
        return Ok(());
    }
    let (dst_rs, lhs_rs, lhs_cs, rhs_rs, rhs_cs) = (
        isize_of(dst_rs)?,
        isize_of(lhs.rs)?,
        isize_of(lhs.cs)?,
        isize_of(rhs.rs)?,
        isize_of(rhs.cs)?,
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `gemm` reads lhs (i, l) at `i·lhs_rs + l·lhs_cs` for i < m, l < k, rhs (l, j)
    // at `l·rhs_rs + j·rhs_cs` for j < n, and reads (when accumulating) and writes dst (i, j)
    // at `i·dst_rs + j`: `Mat::new` checked that the last element of each input view lies in
    // its slice and `fits` that of dst, with non-negative strides, so every access is in
    // bounds. dst is a `&mut` borrow, so it aliases neither input, and distinct (i, j) of dst
    // are distinct elements (dst_rs ≥ n, column stride 1), so the threads' writes are
    // disjoint. Without `read_dst`, `alpha` is ignored; with it, dst ← 1·dst + 1·lhs·rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Defines `$name`, which runs `$body` compiled for the best of AVX-512, AVX2 + FMA and the
/// baseline target that the CPU has (detected at run time), and, for tests, `$portable`:
/// `$body` for the baseline target.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident / $portable:ident ($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[inline]
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                if simd::avx512() {
                    // SAFETY: the CPU has every feature `avx512` is compiled for (detected
                    // at run time just above).
                    return unsafe { avx512($($arg),*) };
                }
                if simd::avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (detected at run time just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }

        #[inline(always)]
        fn $portable($($arg: $ty),*) $body
    };
}

#[cfg(target_arch = "x86_64")]
mod simd {
    /// Whether the CPU has the AVX-512 subsets the kernels are compiled for (cached by std).
    pub(super) fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && avx2()
    }

    /// Whether the CPU has AVX2 and FMA.
    pub(super) fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
}

/// The lanes that the reductions keep apart (one AVX-512 register of f32): a sum or a
/// maximum over a row accumulates into this many partial results, which LLVM keeps in
/// vector registers (it may not reorder a single scalar accumulator's additions).
const LANES: usize = 16;

/// `p[0] + p[1]·x + p[2]·x² + …` (Horner, with fused multiply-adds).
#[inline(always)]
fn poly<const N: usize>(p: &[f32; N], x: f32) -> f32 {
    p.iter().rev().fold(0.0, |acc, &c| acc.mul_add(x, c))
}

/// `eˣ` in f32 (Cephes' `expf`: `x = n·ln 2 + r`, a degree-6 polynomial for `eʳ`, `2ⁿ`
/// from the exponent bits), within 2 ulp on `[-87.3, 88]`; 0 below (where `eˣ` is
/// subnormal or 0). Larger `x` give `e⁸⁸`: the kernels call it with `x ≤ 0` only. NaN
/// stays NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LO: f32 = -87.336_54; // ln 2⁻¹²⁶
    const HI: f32 = 88.0;
    // 1.5·2²³: adding it rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        0.5,
        1.666_666_5e-1,
        4.166_579_6e-2,
        8.333_452e-3,
        1.398_2e-3,
        1.987_569_1e-4,
    ];
    let xc = x.clamp(LO, HI);
    let k = xc.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = k - ROUND;
    let r = (-n).mul_add(LN2_HI, xc);
    let r = (-n).mul_add(LN2_LO, r);
    let y = poly(&P, r).mul_add(r * r, r) + 1.0;
    // The low bits of k's representation hold n (−126 ≤ n ≤ 127): 2ⁿ is (n + 127) << 23.
    let scale = f32::from_bits((k.to_bits() << 23).wrapping_add(127 << 23));
    if x < LO { 0.0 } else { y * scale }
}

/// The exact GELU, `x·Φ(x) = ½·x·(1 + erf(x/√2))`, within 4e-7 absolute and 4e-6 relative
/// of the true value for |x| < 6 (and as close beyond): `1 + erf(z)` is `1 + z·A(z²)` for
/// `|z| < 1`, and from `erfc(|z|) = e^(−z²)·B(t)`, `t = 1/(1 + |z|/2)`, beyond, which keeps
/// its relative accuracy in the negative tail where `1 + erf(z)` is tiny. `A` and `B` are
/// minimax fits (relative error 1e-9 and 8e-9 in f64).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    const A: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_27,
        0.112_836,
        -0.026_854_448,
        0.005_189_542,
        -8.020_893e-4,
        7.889_279e-5,
    ];
    const B: [f32; 9] = [
        -1.899_139_1e-6,
        0.282_146_08,
        0.281_535_2,
        0.249_900_58,
        0.168_478_47,
        0.083_330_47,
        0.053_209_406,
        -0.205_036_75,
        0.086_944_6,
    ];
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let s = z * z;
    let near = z.mul_add(poly(&A, s), 1.0);
    let t = 1.0 / a.mul_add(0.5, 1.0);
    let erfc = exp(-s) * poly(&B, t);
    let far = if z < 0.0 { erfc } else { 2.0 - erfc };
    0.5 * x * if a < 1.0 { near } else { far }
}

/// The sum of `xs`, in [`LANES`] partial sums.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let (chunks, rest) = xs.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// The largest of `xs` (−∞ for none), in [`LANES`] partial maxima.
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let (chunks, rest) = xs.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

multiversion! {
    /// `x ← GELU(x + bias)` on each row of `width` values of `xs` (`bias`: `width` values; a
    /// partial last row is left alone).
    fn bias_gelu / bias_gelu_portable(xs: &mut [f32], width: usize, bias: &[f32]) {
        for row in xs.chunks_exact_mut(width) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x = gelu(*x + b);
            }
        }
    }
}

multiversion! {
    /// `x ← softmax(x + mask_bias)` on each row of `width` values of `xs` (`mask_bias`: 0
    /// for the keys attended, the most negative f32 for padding).
    fn masked_softmax / masked_softmax_portable(xs: &mut [f32], width: usize, mask_bias: &[f32]) {
        for row in xs.chunks_exact_mut(width) {
            for (x, b) in row.iter_mut().zip(mask_bias) {
                *x += b;
            }
            let m = max(row);
            for x in row.iter_mut() {
                *x = exp(*x - m);
            }
            let scale = 1.0 / sum(row);
            for x in row.iter_mut() {
                *x *= scale;
            }
        }
    }
}

multiversion! {
    /// `x ← LayerNorm(x + bias)·gamma + beta` on each row of `width` values of `xs` (a
    /// `bias` of no values adds nothing), over the row's mean and biased variance.
    fn bias_layer_norm / bias_layer_norm_portable(
        xs: &mut [f32],
        width: usize,
        bias: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let n = width as f32;
        for row in xs.chunks_exact_mut(width) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += b;
            }
            let mean = sum(row) / n;
            for x in row.iter_mut() {
                *x -= mean;
            }
            let (chunks, rest) = row.as_chunks::<LANES>();
            let mut acc = [0.0f32; LANES];
            for c in chunks {
                for (a, v) in acc.iter_mut().zip(c) {
                    *a = v.mul_add(*v, *a);
                }
            }
            let var = (acc.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>()) / n;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *x = (*x * inv).mul_add(*g, *b);
            }
        }
    }
}

#[cfg(test)]
mod tests;
