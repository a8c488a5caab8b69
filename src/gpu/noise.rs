//! DP noise on the GPU (`kernels/noise.cu`) and its CPU reference.
//!
//! **Experimental** (feature `experimental`, off by default): no server path calls this
//! module yet; the pipeline draws DP output noise on the CPU on every backend. It is compiled
//! and linted in CI (`--features cuda,experimental`), its CPU tests run there, and
//! `scripts/gpu-check.sh` compares its kernels with these references on a GPU.
//!
//! The kernels run the privacy module's samplers ([`crate::privacy::sampler`]) on the
//! device, each sample reading its randomness from its own ChaCha20 stream
//! ([`super::chacha`]), keyed by a [`NoiseKey`] drawn from the OS inside the TEE. The CPU
//! reference runs the **existing** Rust samplers over a [`ChaChaStream`] on the same
//! `(key, nonce)`, so a kernel and its reference give bit-identical samples; there is one
//! sampler logic, and the device port (`kernels/dp_samplers.cuh`) follows it statement by
//! statement.
//!
//! # Streams
//!
//! A call takes a key and a nonce base `b` and uses these streams (and no others):
//!
//! | kernel | sample `i` reads | nonces used |
//! | --- | --- | --- |
//! | [`grid_laplace_reference`] | 64-bit word `i` of stream `b`; its rare cold path stream `b + 1 + i` | `b ..= b + n` |
//! | [`discrete_laplace_reference`], [`discrete_gaussian_reference`] | stream `b + i` from block 0 | `b .. b + n` |
//! | [`noisy_argmax_reference`] | row `r`: stream `b + r` from block 0 | `b .. b + rows` |
//! | [`laplace_argmax_reference`] | element `i` of the matrix as grid-Laplace sample `i` | `b ..= b + rows·classes` |
//!
//! Two calls under one key must use disjoint nonce ranges ([`nonces_used`]); the simplest
//! rule is a fresh [`NoiseKey::from_os`] per call.
//!
//! # Which kernel gives which guarantee
//!
//! - `grid_laplace`: [`FastDiscreteLaplace`] noise, the sampler of `FastLaplaceScores`;
//!   added to scores on the grid it is pure `(Δ₁ + d·g)/b + s`-DP (mechanism docs), and any
//!   argmax of the noisy scores is post-processing with the same guarantee.
//! - `laplace_argmax`: report-noisy-max with that noise: [`FastLaplaceScores`] on every score
//!   of a row, then the first maximum, exactly the label `policy` derives from Laplace
//!   scores; post-processing, so the same guarantee as releasing the noisy scores.
//! - `discrete_gaussian`: the exact CKS sampler of `GaussianScores`: ρ-zCDP.
//! - `noisy_argmax`: this codebase's `noisy_argmax` policy is permute-and-flip
//!   ([`NoisyArgmax`], McKenna & Sheldon 2020), pure ε-DP. Permute-and-flip is *identical in
//!   distribution* to report-noisy-max with exponential noise of scale `2Δ/ε` (Ding, Kifer et
//!   al. 2021), and strictly better than report-noisy-max with Gumbel noise (≡ the
//!   exponential mechanism) at the same ε. The kernel runs permute-and-flip itself, with
//!   exact Bernoulli(exp(−γ)) coins on grid-rounded scores, rather than adding floating-point
//!   exponential noise: that keeps the exact sampler's guarantee (no Mironov-style
//!   floating-point leak) and makes the device bit-identical to
//!   [`NoisyArgmax::release`]. So "add noise and take the argmax" is fused into one pass per
//!   row with the noise in its exact, permutation form.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::GpuError;
use super::chacha::{ChaChaStream, NoiseKey};
use crate::privacy::error::Result;
use crate::privacy::mechanism::{FastLaplaceScores, NoisyArgmax};
use crate::privacy::rng::DpRng;
use crate::privacy::sampler::fast::{self, FastDiscreteLaplace};
use crate::privacy::sampler::{self, Rational};

/// The nonces a kernel call of `samples` samples (or rows) uses from its base, so that the
/// next call under the same key can start after them. `grid_laplace` uses one more.
pub fn nonces_used(samples: u64, grid_laplace: bool) -> u64 {
    samples.saturating_add(u64::from(grid_laplace))
}

/// The generator one grid-Laplace sample sees: its word from the shared stream, then (in the
/// sampler's rare cold path) its own tail stream, opened on first use.
struct GridLaplaceSample<'a> {
    first: Option<u64>,
    key: &'a NoiseKey,
    tail_nonce: u64,
    tail: Option<ChaChaStream>,
}

impl DpRng for GridLaplaceSample<'_> {
    fn next_u64(&mut self) -> u64 {
        if let Some(w) = self.first.take() {
            return w;
        }
        let (key, nonce) = (self.key, self.tail_nonce);
        self.tail
            .get_or_insert_with(|| ChaChaStream::new(key, nonce))
            .next_u64()
    }
}

/// The reference of the `grid_laplace` kernel: `out[i]` is [`FastDiscreteLaplace::fill`]'s
/// sample on the generator of sample `i` (module docs, "Streams").
pub fn grid_laplace_reference(
    key: &NoiseKey,
    nonce: u64,
    sampler: &FastDiscreteLaplace,
    out: &mut [i64],
) {
    let mut words = ChaChaStream::new(key, nonce);
    for (i, o) in out.iter_mut().enumerate() {
        let mut rng = GridLaplaceSample {
            first: Some(words.next_u64()),
            key,
            tail_nonce: nonce.wrapping_add(1).wrapping_add(i as u64),
            tail: None,
        };
        sampler.fill(&mut rng, std::slice::from_mut(o));
    }
}

/// The reference of the `discrete_laplace` kernel: `out[i]` is
/// [`sampler::discrete_laplace`] on stream `nonce + i`.
pub fn discrete_laplace_reference(
    key: &NoiseKey,
    nonce: u64,
    scale: Rational,
    out: &mut [i64],
) -> Result<()> {
    per_stream(key, nonce, out, |rng| sampler::discrete_laplace(rng, scale))
}

/// The reference of the `discrete_gaussian` kernel: `out[i]` is
/// [`sampler::discrete_gaussian`] on stream `nonce + i`.
pub fn discrete_gaussian_reference(
    key: &NoiseKey,
    nonce: u64,
    sigma2: Rational,
    out: &mut [i64],
) -> Result<()> {
    per_stream(key, nonce, out, |rng| {
        sampler::discrete_gaussian(rng, sigma2)
    })
}

/// `out[i] = sample(stream nonce + i)`: the exact samplers' one-stream-per-sample layout.
fn per_stream(
    key: &NoiseKey,
    nonce: u64,
    out: &mut [i64],
    mut sample: impl FnMut(&mut ChaChaStream) -> Result<i64>,
) -> Result<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = sample(&mut ChaChaStream::new(key, nonce.wrapping_add(i as u64)))?;
    }
    Ok(())
}

/// The reference of the `noisy_argmax` kernel: for each row of `scores` (row-major, `classes`
/// wide), [`NoisyArgmax::release`] on stream `nonce + row`.
pub fn noisy_argmax_reference(
    key: &NoiseKey,
    nonce: u64,
    mechanism: &NoisyArgmax,
    scores: &[f32],
    classes: usize,
) -> Result<Vec<u32>> {
    scores
        .chunks_exact(classes.max(1))
        .enumerate()
        .map(|(r, row)| {
            let row64: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let mut rng = ChaChaStream::new(key, nonce.wrapping_add(r as u64));
            let label = mechanism.release(&mut rng, &row64)?;
            // classes < 2^32 is checked by the callers (the kernel indexes with u32).
            Ok(label as u32)
        })
        .collect()
}

/// The reference of the `laplace_argmax` kernel: [`FastLaplaceScores::release_in_place`]'s
/// noise ([`fast::add_grid_laplace`]) on every score, element `i` of the row-major matrix
/// with the generator of grid-Laplace sample `i` (module docs, "Streams"), then each noisy
/// row's label as `policy` takes it (the first maximum). Returns the labels and the noisy
/// scores.
pub fn laplace_argmax_reference(
    key: &NoiseKey,
    nonce: u64,
    mechanism: &FastLaplaceScores,
    scores: &[f32],
    classes: usize,
) -> Result<(Vec<u32>, Vec<f64>)> {
    let mut words = ChaChaStream::new(key, nonce);
    let mut noisy: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
    for (i, o) in noisy.iter_mut().enumerate() {
        let mut rng = GridLaplaceSample {
            first: Some(words.next_u64()),
            key,
            tail_nonce: nonce.wrapping_add(1).wrapping_add(i as u64),
            tail: None,
        };
        fast::add_grid_laplace(
            &mut rng,
            mechanism.sampler(),
            mechanism.grid(),
            std::slice::from_mut(o),
        )?;
    }
    let labels = noisy
        .chunks_exact(classes.max(1))
        .map(|row| {
            let mut best = 0;
            for (c, x) in row.iter().enumerate() {
                if *x > row[best] {
                    best = c;
                }
            }
            // classes < 2^32 is checked by the callers (the kernel indexes with u32).
            best as u32
        })
        .collect();
    Ok((labels, noisy))
}

/// Permute-and-flip noisy argmax over the rows of a `[rows, classes]` f32 score tensor, as a
/// candle [`CustomOp1`]: `cpu_fwd` is [`noisy_argmax_reference`], `cuda_fwd` the
/// `noisy_argmax` kernel; both give the same labels (a `[rows]` u32 tensor) for the same key.
pub struct NoisyArgmaxOp<'a> {
    key: &'a NoiseKey,
    nonce: u64,
    mechanism: &'a NoisyArgmax,
}

impl<'a> NoisyArgmaxOp<'a> {
    /// Row `r` uses stream `nonce + r` of `key`.
    pub fn new(key: &'a NoiseKey, nonce: u64, mechanism: &'a NoisyArgmax) -> Self {
        Self {
            key,
            nonce,
            mechanism,
        }
    }
}

/// `[rows, classes]` from a contiguous rank-2 layout, with the element range.
fn score_shape(layout: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (rows, classes) = layout.shape().dims2()?;
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("noisy argmax: the scores must be contiguous".into())
    })?;
    if rows == 0 || classes == 0 || u32::try_from(classes).is_err() {
        return Err(candle_core::Error::Msg(format!(
            "noisy argmax: needs 1 ..= 2^32 - 1 classes and at least one row, got [{rows}, {classes}]"
        )));
    }
    Ok((rows, classes, start, end))
}

impl CustomOp1 for NoisyArgmaxOp<'_> {
    fn name(&self) -> &'static str {
        "confidant-noisy-argmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, classes, start, end) = score_shape(layout)?;
        let CpuStorage::F32(v) = storage else {
            return Err(candle_core::Error::Msg(
                "noisy argmax: the scores must be f32".into(),
            ));
        };
        let scores = v
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg("noisy argmax: bad layout".into()))?;
        let labels = noisy_argmax_reference(self.key, self.nonce, self.mechanism, scores, classes)
            .map_err(|e| candle_core::Error::Msg(format!("noisy argmax: {e}")))?;
        Ok((CpuStorage::U32(labels), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, classes, start, end) = score_shape(layout)?;
        let dev = storage.device.clone();
        let scores = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let labels = device::noisy_argmax(
            &dev,
            &scores,
            rows,
            classes,
            self.key,
            self.nonce,
            self.mechanism,
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(labels, dev),
            Shape::from(rows),
        ))
    }
}

/// Report-noisy-max with grid-Laplace noise ([`FastLaplaceScores`]) over the rows of a
/// `[rows, classes]` f32 score tensor, as a candle [`CustomOp1`] giving the `[rows]` u32
/// labels: `cpu_fwd` is [`laplace_argmax_reference`], `cuda_fwd` the `laplace_argmax`
/// kernel. The label is post-processing of the noisy scores, so it carries the Laplace-scores
/// guarantee (`FastLaplaceScores::guarantee`).
pub struct LaplaceArgmaxOp<'a> {
    key: &'a NoiseKey,
    nonce: u64,
    mechanism: &'a FastLaplaceScores,
}

impl<'a> LaplaceArgmaxOp<'a> {
    /// Element `i` of the matrix uses word `i` of stream `nonce` of `key` and stream
    /// `nonce + 1 + i` (nonces `nonce ..= nonce + rows·classes`).
    pub fn new(key: &'a NoiseKey, nonce: u64, mechanism: &'a FastLaplaceScores) -> Self {
        Self {
            key,
            nonce,
            mechanism,
        }
    }
}

impl CustomOp1 for LaplaceArgmaxOp<'_> {
    fn name(&self) -> &'static str {
        "confidant-laplace-argmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, classes, start, end) = score_shape(layout)?;
        let CpuStorage::F32(v) = storage else {
            return Err(candle_core::Error::Msg(
                "laplace argmax: the scores must be f32".into(),
            ));
        };
        let scores = v
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg("laplace argmax: bad layout".into()))?;
        let (labels, _) =
            laplace_argmax_reference(self.key, self.nonce, self.mechanism, scores, classes)
                .map_err(|e| candle_core::Error::Msg(format!("laplace argmax: {e}")))?;
        Ok((CpuStorage::U32(labels), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, classes, start, end) = score_shape(layout)?;
        let dev = storage.device.clone();
        let scores = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let (labels, _) = device::laplace_argmax(
            &dev,
            &scores,
            rows,
            classes,
            self.key,
            self.nonce,
            self.mechanism,
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(labels, dev),
            Shape::from(rows),
        ))
    }
}

/// Grid-Laplace report-noisy-max labels for a `[rows, classes]` f32 score tensor on any
/// device (the kernel on CUDA, the reference on the CPU).
pub fn laplace_argmax(
    scores: &Tensor,
    key: &NoiseKey,
    nonce: u64,
    mechanism: &FastLaplaceScores,
) -> std::result::Result<Tensor, GpuError> {
    Ok(scores.apply_op1_no_bwd(&LaplaceArgmaxOp::new(key, nonce, mechanism))?)
}

/// Permute-and-flip labels for a `[rows, classes]` f32 score tensor on any device (the
/// kernel on CUDA, the reference on the CPU).
pub fn noisy_argmax(
    scores: &Tensor,
    key: &NoiseKey,
    nonce: u64,
    mechanism: &NoisyArgmax,
) -> std::result::Result<Tensor, GpuError> {
    Ok(scores.apply_op1_no_bwd(&NoisyArgmaxOp::new(key, nonce, mechanism))?)
}

#[cfg(feature = "cuda")]
pub use device::{
    bench_noise_gbps, chacha20_fill_on_device, discrete_gaussian_on_device,
    discrete_laplace_on_device, grid_laplace_on_device, laplace_argmax_on_device,
    noisy_argmax_on_device,
};

/// The launch wrappers (feature `cuda`): safe functions that check sizes, then launch.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod device {
    use std::time::Instant;

    use candle_core::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };

    use super::super::GpuError;
    use super::super::chacha::NoiseKey;
    use super::super::cuda::driver;
    use crate::privacy::mechanism::{FastLaplaceScores, NoisyArgmax};
    use crate::privacy::sampler::Rational;
    use crate::privacy::sampler::fast::FastDiscreteLaplace;

    const MODULE: &str = "confidant_noise";
    const THREADS: u32 = 256;

    fn function(dev: &CudaDevice, name: &'static str) -> Result<CudaFunction, GpuError> {
        Ok(dev
            .get_or_load_custom_func(name, MODULE, super::super::ptx::NOISE)?
            .into_cuda_function())
    }

    /// A 1-D grid of 256-thread blocks covering `units` work items (the kernels grid-stride,
    /// so the cap only bounds the launch, not the work).
    fn config(units: u64) -> LaunchConfig {
        let blocks = units.div_ceil(u64::from(THREADS)).clamp(1, 1 << 20);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn positive(kernel: &'static str, n: usize) -> Result<u64, GpuError> {
        if n == 0 {
            return Err(GpuError::Arguments {
                kernel,
                reason: "needs at least one sample".into(),
            });
        }
        Ok(n as u64)
    }

    fn split(x: u128) -> (u64, u64) {
        (x as u64, (x >> 64) as u64)
    }

    /// Reads the kernel's status word (DP_* flags from dp_samplers.cuh).
    fn check_status(
        dev: &CudaDevice,
        kernel: &'static str,
        status: &CudaSlice<u32>,
    ) -> Result<(), GpuError> {
        let s = dev.cuda_stream().clone_dtoh(status).map_err(driver)?;
        let s = s.first().copied().unwrap_or(0);
        if s == 0 {
            return Ok(());
        }
        let mut what = Vec::new();
        for (bit, name) in [
            (1, "an integer overflow"),
            (2, "an invalid parameter"),
            (4, "a score off the grid"),
            (8, "a non-finite score"),
        ] {
            if s & bit != 0 {
                what.push(name);
            }
        }
        Err(GpuError::Arguments {
            kernel,
            reason: format!("the sampler reported {}", what.join(" and ")),
        })
    }

    /// Fills `out` with words `16·counter0 ..` of ChaCha20 stream `(key, nonce)` (the
    /// reference is [`super::super::chacha::fill_words`]).
    pub fn chacha20_fill_on_device(
        dev: &CudaDevice,
        out: &mut CudaSlice<u32>,
        key: &NoiseKey,
        nonce: u64,
        counter0: u64,
    ) -> Result<(), GpuError> {
        let n = positive("chacha20_fill", out.len())?;
        let f = function(dev, "chacha20_fill")?;
        let k = key.kernel_words();
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(out);
        b.arg(&n);
        b.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
        b.arg(&nonce).arg(&counter0);
        // SAFETY: the arguments match chacha20_fill(u32*, u64, u64 ×4, u64, u64) in
        // kernels/noise.cu in type and order, and the kernel writes only out[0..n), n being
        // out's length.
        unsafe { b.launch(config(n.div_ceil(16))) }.map_err(driver)?;
        Ok(())
    }

    /// `n` samples of [`FastDiscreteLaplace`] (grid steps) on the device; the reference is
    /// [`super::grid_laplace_reference`]. Uses nonces `nonce ..= nonce + n`.
    pub fn grid_laplace_on_device(
        dev: &CudaDevice,
        key: &NoiseKey,
        nonce: u64,
        sampler: &FastDiscreteLaplace,
        n: usize,
    ) -> Result<CudaSlice<i64>, GpuError> {
        let n64 = positive("grid_laplace", n)?;
        let stream = dev.cuda_stream();
        let mut out = stream.alloc_zeros::<i64>(n).map_err(driver)?;
        let f = function(dev, "grid_laplace")?;
        let k = key.kernel_words();
        let (scale, shift, cap) = (sampler.scale(), sampler.shift(), sampler.cap());
        let cap_f = cap as f64; // exact: K < 2^35, and FastDiscreteLaplace keeps K = cap_f
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out);
        b.arg(&n64);
        b.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
        b.arg(&nonce);
        b.arg(&scale).arg(&shift).arg(&cap_f).arg(&cap);
        // SAFETY: the arguments match grid_laplace(i64*, u64, u64 ×4, u64, f64, f64, f64,
        // i64) in kernels/noise.cu; out holds n elements and the kernel writes only [0, n).
        unsafe { b.launch(config(n64.div_ceil(8))) }.map_err(driver)?;
        Ok(out)
    }

    /// `n` samples of [`crate::privacy::sampler::discrete_laplace`] with scale `t/s` on the
    /// device; the reference is [`super::discrete_laplace_reference`].
    pub fn discrete_laplace_on_device(
        dev: &CudaDevice,
        key: &NoiseKey,
        nonce: u64,
        scale: Rational,
        n: usize,
    ) -> Result<CudaSlice<i64>, GpuError> {
        exact(dev, "discrete_laplace", key, nonce, scale, n)
    }

    /// `n` samples of [`crate::privacy::sampler::discrete_gaussian`] with `σ² = sigma2` on the
    /// device; the reference is [`super::discrete_gaussian_reference`].
    pub fn discrete_gaussian_on_device(
        dev: &CudaDevice,
        key: &NoiseKey,
        nonce: u64,
        sigma2: Rational,
        n: usize,
    ) -> Result<CudaSlice<i64>, GpuError> {
        exact(dev, "discrete_gaussian", key, nonce, sigma2, n)
    }

    fn exact(
        dev: &CudaDevice,
        kernel: &'static str,
        key: &NoiseKey,
        nonce: u64,
        param: Rational,
        n: usize,
    ) -> Result<CudaSlice<i64>, GpuError> {
        let n64 = positive(kernel, n)?;
        let stream = dev.cuda_stream();
        let mut out = stream.alloc_zeros::<i64>(n).map_err(driver)?;
        let mut status = stream.alloc_zeros::<u32>(1).map_err(driver)?;
        let f = function(dev, kernel)?;
        let k = key.kernel_words();
        let (num_lo, num_hi) = split(param.num);
        let (den_lo, den_hi) = split(param.den);
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out);
        b.arg(&n64);
        b.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
        b.arg(&nonce);
        b.arg(&num_lo).arg(&num_hi).arg(&den_lo).arg(&den_hi);
        b.arg(&mut status);
        // SAFETY: the arguments match discrete_laplace / discrete_gaussian(i64*, u64, u64 ×4,
        // u64, u64 ×4, u32*) in kernels/noise.cu; out holds n elements, status one, and the
        // kernel writes only out[0, n) and status[0].
        unsafe { b.launch(config(n64)) }.map_err(driver)?;
        check_status(dev, kernel, &status)?;
        Ok(out)
    }

    /// Permute-and-flip labels for `rows` rows of `classes` scores (row-major f32 on the
    /// device); the reference is [`super::noisy_argmax_reference`]. Uses nonces
    /// `nonce .. nonce + rows`.
    pub fn noisy_argmax_on_device(
        dev: &CudaDevice,
        scores: &CudaSlice<f32>,
        classes: usize,
        key: &NoiseKey,
        nonce: u64,
        mechanism: &NoisyArgmax,
    ) -> Result<CudaSlice<u32>, GpuError> {
        let rows = scores.len().checked_div(classes).unwrap_or(0);
        if rows * classes != scores.len() {
            return Err(GpuError::Arguments {
                kernel: "noisy_argmax",
                reason: format!("{} scores are not rows of {classes}", scores.len()),
            });
        }
        noisy_argmax(dev, &scores.slice(..), rows, classes, key, nonce, mechanism)
    }

    /// Checks that `len` scores are `rows` rows of `classes` (both non-zero, `classes` < 2^32)
    /// and returns `classes` as the kernels take it.
    fn score_shape(
        kernel: &'static str,
        len: usize,
        rows: usize,
        classes: usize,
    ) -> Result<u32, GpuError> {
        let bad = |reason: String| GpuError::Arguments { kernel, reason };
        let classes32 = u32::try_from(classes)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| bad(format!("needs 1 ..= 2^32 - 1 classes, got {classes}")))?;
        if rows == 0 || rows.checked_mul(classes) != Some(len) {
            return Err(bad(format!(
                "{len} scores are not {rows} rows of {classes}"
            )));
        }
        Ok(classes32)
    }

    pub(super) fn noisy_argmax(
        dev: &CudaDevice,
        scores: &CudaView<'_, f32>,
        rows: usize,
        classes: usize,
        key: &NoiseKey,
        nonce: u64,
        mechanism: &NoisyArgmax,
    ) -> Result<CudaSlice<u32>, GpuError> {
        let classes32 = score_shape("noisy_argmax", scores.len(), rows, classes)?;
        let bad = |reason: String| GpuError::Arguments {
            kernel: "noisy_argmax",
            reason,
        };
        let eps = mechanism.epsilon_rational();
        let den = eps
            .den
            .checked_mul(mechanism.divisor())
            .ok_or_else(|| bad("ε's denominator times the divisor overflows".into()))?;
        let stream = dev.cuda_stream();
        let mut labels = stream.alloc_zeros::<u32>(rows).map_err(driver)?;
        let mut order = stream.alloc_zeros::<u32>(scores.len()).map_err(driver)?;
        let mut status = stream.alloc_zeros::<u32>(1).map_err(driver)?;
        let f = function(dev, "noisy_argmax")?;
        let k = key.kernel_words();
        let rows64 = rows as u64;
        let step = mechanism.grid().step();
        let (eps_lo, eps_hi) = split(eps.num);
        let (den_lo, den_hi) = split(den);
        let mut b = stream.launch_builder(&f);
        b.arg(&mut labels);
        b.arg(scores);
        b.arg(&rows64).arg(&classes32);
        b.arg(&mut order);
        b.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
        b.arg(&nonce).arg(&step);
        b.arg(&eps_lo).arg(&eps_hi).arg(&den_lo).arg(&den_hi);
        b.arg(&mut status);
        // SAFETY: the arguments match noisy_argmax(u32*, const f32*, u64, u32, u32*, u64 ×4,
        // u64, f64, u64 ×4, u32*) in kernels/noise.cu. scores holds rows·classes elements
        // (checked above), labels rows, order rows·classes, status one; the kernel reads and
        // writes only within those bounds.
        unsafe { b.launch(config(rows64)) }.map_err(driver)?;
        check_status(dev, "noisy_argmax", &status)?;
        Ok(labels)
    }

    /// Grid-Laplace report-noisy-max on `rows` rows of `classes` scores (row-major f32 on the
    /// device): the labels and the noisy scores (f64, on the grid). The reference is
    /// [`super::laplace_argmax_reference`]. Uses nonces `nonce ..= nonce + rows·classes`.
    pub fn laplace_argmax_on_device(
        dev: &CudaDevice,
        scores: &CudaSlice<f32>,
        classes: usize,
        key: &NoiseKey,
        nonce: u64,
        mechanism: &FastLaplaceScores,
    ) -> Result<(CudaSlice<u32>, CudaSlice<f64>), GpuError> {
        let rows = scores.len().checked_div(classes).unwrap_or(0);
        laplace_argmax(dev, &scores.slice(..), rows, classes, key, nonce, mechanism)
    }

    pub(super) fn laplace_argmax(
        dev: &CudaDevice,
        scores: &CudaView<'_, f32>,
        rows: usize,
        classes: usize,
        key: &NoiseKey,
        nonce: u64,
        mechanism: &FastLaplaceScores,
    ) -> Result<(CudaSlice<u32>, CudaSlice<f64>), GpuError> {
        let classes32 = score_shape("laplace_argmax", scores.len(), rows, classes)?;
        let stream = dev.cuda_stream();
        let mut labels = stream.alloc_zeros::<u32>(rows).map_err(driver)?;
        let mut noisy = stream.alloc_zeros::<f64>(scores.len()).map_err(driver)?;
        let mut status = stream.alloc_zeros::<u32>(1).map_err(driver)?;
        let f = function(dev, "laplace_argmax")?;
        let k = key.kernel_words();
        let rows64 = rows as u64;
        let step = mechanism.grid().step();
        let sampler = mechanism.sampler();
        let (scale, shift, cap) = (sampler.scale(), sampler.shift(), sampler.cap());
        let cap_f = cap as f64; // exact: K < 2^35
        let mut b = stream.launch_builder(&f);
        b.arg(&mut labels).arg(&mut noisy);
        b.arg(scores);
        b.arg(&rows64).arg(&classes32);
        b.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
        b.arg(&nonce).arg(&step);
        b.arg(&scale).arg(&shift).arg(&cap_f).arg(&cap);
        b.arg(&mut status);
        // SAFETY: the arguments match laplace_argmax(u32*, f64*, const f32*, u64, u32, u64 ×4,
        // u64, f64, f64, f64, f64, i64, u32*) in kernels/noise.cu. scores and noisy hold
        // rows·classes elements (checked above), labels rows, status one; the kernel touches
        // only those.
        unsafe { b.launch(config(rows64)) }.map_err(driver)?;
        check_status(dev, "laplace_argmax", &status)?;
        Ok((labels, noisy))
    }

    /// Throughput of [`chacha20_fill_on_device`] on `bytes` bytes (rounded down to whole
    /// words, at least one block) and, for comparison, of a device-to-device copy of the same
    /// size, in GB/s (10^9 bytes written per second), as `(noise, copy)`. Runs a warm-up and
    /// then 20 timed repetitions of each, synchronising the stream around each batch.
    pub fn bench_noise_gbps(dev: &CudaDevice, bytes: usize) -> Result<(f64, f64), GpuError> {
        const REPS: u32 = 20;
        let words = (bytes / 4).max(16);
        let stream = dev.cuda_stream();
        let key = NoiseKey::from_os().map_err(|e| GpuError::Driver(e.to_string()))?;
        let mut out = stream.alloc_zeros::<u32>(words).map_err(driver)?;
        let mut copy = stream.alloc_zeros::<u32>(words).map_err(driver)?;
        chacha20_fill_on_device(dev, &mut out, &key, 0, 0)?;
        stream.memcpy_dtod(&out, &mut copy).map_err(driver)?;
        stream.synchronize().map_err(driver)?;
        let t = Instant::now();
        for r in 0..REPS {
            chacha20_fill_on_device(dev, &mut out, &key, u64::from(r) + 1, 0)?;
        }
        stream.synchronize().map_err(driver)?;
        let noise = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..REPS {
            stream.memcpy_dtod(&out, &mut copy).map_err(driver)?;
        }
        stream.synchronize().map_err(driver)?;
        let copied = t.elapsed().as_secs_f64();
        let total = (words * 4) as f64 * f64::from(REPS) / 1e9;
        Ok((total / noise, total / copied))
    }
}

#[cfg(test)]
mod tests;
