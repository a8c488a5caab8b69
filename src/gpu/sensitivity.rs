//! Adversarial-sensitivity screening on the device (`kernels/sensitivity.cu`) and its CPU
//! reference.
//!
//! [`PerturbOp`] makes the perturbed copies: copy value `i` (row 0's copies first, as
//! [`crate::engine::screening::Screener::perturb_into`] orders them) is `x + σ_f · z_i`, with
//! `z_i` a standard normal drawn by Box-Muller from words `2i` and `2i + 1` of the ChaCha20
//! stream `(key, stream)`. [`ScoresOp`] turns the outputs of the rows and their copies into
//! each row's mean |Δoutput|, as [`crate::engine::screening::Screener::scores`] defines it.
//! The key comes from OS randomness inside the TEE, per batch.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A standard normal from two stream words, as the kernel computes it (f64, then rounded).
pub fn box_muller(w0: u32, w1: u32) -> f32 {
    let u1 = (f64::from(w0 >> 8) + 1.0) * (1.0 / 16_777_216.0);
    let u2 = f64::from(w1 >> 8) * (1.0 / 16_777_216.0);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// The ChaCha20 stream `(key, stream)` as rand_chacha defines it (64-bit block counter, 64-bit
/// stream id), which `kernels/chacha20.cuh` reproduces.
pub fn chacha20_stream(key: &[u32; 8], stream: u64) -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    for (s, k) in seed.chunks_exact_mut(4).zip(key) {
        s.copy_from_slice(&k.to_le_bytes());
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    rng.set_stream(stream);
    rng
}

/// The CPU reference of `perturb_rows_f32`: `copies` perturbed copies of each `width`-wide row.
pub fn reference_perturb(
    x: &[f32],
    sigma: &[f32],
    copies: usize,
    key: &[u32; 8],
    stream: u64,
) -> Vec<f32> {
    let width = sigma.len();
    if width == 0 {
        return Vec::new();
    }
    let mut rng = chacha20_stream(key, stream);
    let mut out = Vec::with_capacity(x.len() * copies);
    for row in x.chunks_exact(width) {
        for _ in 0..copies {
            for (v, s) in row.iter().zip(sigma) {
                let (w0, w1) = (rng.next_u32(), rng.next_u32());
                out.push(v + s * box_muller(w0, w1));
            }
        }
    }
    out
}

/// The CPU reference of `sensitivity_scores_f32`: `outputs` holds the `rows` rows' outputs,
/// then their copies' (`rows × copies` more rows), each `width` wide.
pub fn reference_scores(outputs: &[f32], rows: usize, width: usize, copies: usize) -> Vec<f32> {
    if width == 0 || copies == 0 {
        return vec![0.0; rows];
    }
    let (base, perturbed) = outputs.split_at(rows * width);
    base.chunks_exact(width)
        .zip(perturbed.chunks_exact(width * copies))
        .map(|(b, c)| {
            let total: f32 = c
                .iter()
                .enumerate()
                .map(|(i, v)| (v - b[i % width]).abs())
                .sum();
            total / (copies * width) as f32
        })
        .collect()
}

/// `(x [rows, width], sigma [width]) -> [rows × copies, width]`.
#[derive(Clone, Copy, Debug)]
pub struct PerturbOp {
    /// Copies per row.
    pub copies: u32,
    /// The ChaCha20 key.
    pub key: [u32; 8],
    /// The ChaCha20 stream id.
    pub stream: u64,
}

impl PerturbOp {
    /// An op keyed from OS randomness.
    pub fn from_os(copies: u32) -> Result<Self, getrandom::Error> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 40]);
        getrandom::fill(bytes.as_mut())?;
        let mut key = [0u32; 8];
        for (k, b) in key.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(&bytes[32..]);
        Ok(Self {
            copies,
            key,
            stream: u64::from_le_bytes(s),
        })
    }

    fn check(&self, x: &Layout, sigma: &Layout) -> candle_core::Result<(usize, usize)> {
        match (x.dims(), sigma.dims()) {
            ([rows, w], [s]) if w == s && *w > 0 => {
                let n = (*rows as u64) * u64::from(self.copies) * (*w as u64);
                if n > u64::from(u32::MAX) * 8 {
                    return Err(candle_core::Error::Msg(format!(
                        "perturb: {n} values is more than one launch takes"
                    )));
                }
                Ok((*rows, *w))
            }
            (xd, sd) => Err(candle_core::Error::Msg(format!(
                "perturb: x {xd:?} and sigma {sd:?} do not match"
            ))),
        }
    }
}

impl CustomOp2 for PerturbOp {
    fn name(&self) -> &'static str {
        "perturb_rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, width) = self.check(l1, l2)?;
        let x = crate::gpu::cpu_f32(s1, l1, "x")?;
        let sigma = crate::gpu::cpu_f32(s2, l2, "sigma")?;
        let out = reference_perturb(x, sigma, self.copies as usize, &self.key, self.stream);
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows * self.copies as usize, width)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, width) = self.check(l1, l2)?;
        let out = cuda::perturb(self, s1, l1, s2, l2, rows, width)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((out, Shape::from((rows * self.copies as usize, width))))
    }
}

/// `outputs [rows × (1 + copies), width] -> scores [rows]`.
#[derive(Clone, Copy, Debug)]
pub struct ScoresOp {
    /// The number of original rows.
    pub rows: u32,
    /// Copies per row.
    pub copies: u32,
}

impl ScoresOp {
    fn check(&self, l: &Layout) -> candle_core::Result<usize> {
        match l.dims() {
            [n, w]
                if *n as u64 == u64::from(self.rows) * (1 + u64::from(self.copies)) && *w > 0 =>
            {
                Ok(*w)
            }
            d => Err(candle_core::Error::Msg(format!(
                "sensitivity_scores: outputs {d:?} are not {} rows × (1 + {}) copies",
                self.rows, self.copies
            ))),
        }
    }
}

impl CustomOp1 for ScoresOp {
    fn name(&self) -> &'static str {
        "sensitivity_scores"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let width = self.check(l)?;
        let o = crate::gpu::cpu_f32(s, l, "outputs")?;
        let scores = reference_scores(o, self.rows as usize, width, self.copies as usize);
        Ok((CpuStorage::F32(scores), Shape::from(self.rows as usize)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let width = self.check(l)?;
        let out =
            cuda::scores(self, s, l, width).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((out, Shape::from(self.rows as usize)))
    }
}

// Kernel launches and by-value kernel arguments are unsafe FFI; each use states its contract.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, Layout};

    use super::{PerturbOp, ScoresOp};
    use crate::gpu::cuda::{driver, f32_view};
    use crate::gpu::{GpuError, ptx};

    const MODULE: &str = "confidant_sensitivity";

    /// `ConfidantChachaKey` in `kernels/chacha20.cuh`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ChachaKey([u32; 8]);
    // SAFETY: eight u32s, the layout of the C struct.
    unsafe impl DeviceRepr for ChachaKey {}

    fn grid(work: u64) -> u32 {
        work.div_ceil(256).clamp(1, 65_535) as u32
    }

    pub fn perturb(
        op: &PerturbOp,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        rows: usize,
        width: usize,
    ) -> Result<CudaStorage, GpuError> {
        let dev = &s1.device;
        let x = f32_view(s1, l1, "sensitivity", "x")?;
        let sigma = f32_view(s2, l2, "sensitivity", "sigma")?;
        let n = rows * op.copies as usize * width;
        let mut out = dev
            .cuda_stream()
            .alloc_zeros::<f32>(n.max(1))
            .map_err(driver)?;
        if n > 0 {
            let func = dev.get_or_load_custom_func("perturb_rows_f32", MODULE, ptx::SENSITIVITY)?;
            let (r, w, c) = (rows as u32, width as u32, op.copies);
            let key = ChachaKey(op.key);
            let mut b = func.builder();
            b.arg(&x)
                .arg(&sigma)
                .arg(&mut out)
                .arg(&r)
                .arg(&w)
                .arg(&c)
                .arg(&key)
                .arg(&op.stream);
            let cfg = LaunchConfig {
                grid_dim: (grid((n as u64).div_ceil(8)), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: x holds rows × width values, sigma width, out rows × copies × width.
            unsafe { b.launch(cfg) }.map_err(driver)?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }

    pub fn scores(
        op: &ScoresOp,
        s: &CudaStorage,
        l: &Layout,
        width: usize,
    ) -> Result<CudaStorage, GpuError> {
        let dev = &s.device;
        let outputs = f32_view(s, l, "sensitivity", "outputs")?;
        let mut out = dev
            .cuda_stream()
            .alloc_zeros::<f32>((op.rows as usize).max(1))
            .map_err(driver)?;
        if op.rows > 0 {
            let func =
                dev.get_or_load_custom_func("sensitivity_scores_f32", MODULE, ptx::SENSITIVITY)?;
            let w = width as u32;
            let mut b = func.builder();
            b.arg(&outputs)
                .arg(&mut out)
                .arg(&op.rows)
                .arg(&w)
                .arg(&op.copies);
            let cfg = LaunchConfig {
                grid_dim: (grid(u64::from(op.rows) * 32), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: outputs holds rows × (1 + copies) × width values, out holds rows.
            unsafe { b.launch(cfg) }.map_err(driver)?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}
