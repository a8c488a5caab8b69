//! The candle ops of the fused MLP: [`MlpOp`] (the whole MLP in one launch, CPU reference
//! in `cpu_fwd`) and [`BiasAct`] (the cuBLAS path's bias + activation epilogue), and their
//! CUDA launches (feature `cuda`).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};

#[cfg(feature = "cuda")]
use super::BLOCK;
use super::{MlpDesc, activate, reference_forward};

/// `(x [rows, in], params [len]) -> [rows, out]`: the whole MLP in one kernel.
#[derive(Clone, Copy, Debug)]
pub struct MlpOp {
    /// The packed layout (planned for the device it runs on).
    pub desc: MlpDesc,
    /// Multiprocessors of the CUDA device the op was prepared for
    /// ([`prepare`](cuda::prepare), once at load); 0 when not prepared, and then each launch
    /// queries the device and raises the kernel's shared-memory limit itself.
    pub sms: u32,
}

impl MlpOp {
    /// An op for `desc`, not yet prepared for a CUDA device.
    pub fn new(desc: MlpDesc) -> Self {
        Self { desc, sms: 0 }
    }

    fn check(&self, x: &Layout, p: &Layout) -> candle_core::Result<usize> {
        let bad = |m: String| candle_core::Error::Msg(format!("mlp_fused: {m}"));
        let [rows, width] = x.dims() else {
            return Err(bad(format!("x must be [rows, in], got {:?}", x.dims())));
        };
        if *width != self.desc.in_features as usize {
            return Err(bad(format!(
                "x has {width} features, the model {}",
                self.desc.in_features
            )));
        }
        if *rows > u32::MAX as usize {
            return Err(bad(format!("{rows} rows is more than one launch takes")));
        }
        self.desc
            .validate(p.shape().elem_count())
            .map_err(|e| bad(format!("bad descriptor: {e}")))?;
        Ok(*rows)
    }
}

impl CustomOp2 for MlpOp {
    fn name(&self) -> &'static str {
        "mlp_fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(l1, l2)?;
        let x = crate::gpu::cpu_f32(s1, l1, "x")?;
        let p = crate::gpu::cpu_f32(s2, l2, "params")?;
        let y = reference_forward(p, &self.desc, x, rows);
        Ok((
            CpuStorage::F32(y),
            Shape::from((rows, self.desc.out_features as usize)),
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
        let rows = self.check(l1, l2)?;
        let y = cuda::launch_mlp(self, s1, l1, s2, l2, rows)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((y, Shape::from((rows, self.desc.out_features as usize))))
    }
}

/// `(y [rows, cols], bias [cols]) -> act(y + bias)`: the epilogue after a cuBLAS matmul.
#[derive(Clone, Copy, Debug)]
pub struct BiasAct {
    /// Activation code ([`activation_code`]).
    pub act: u32,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias_act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = bias_cols(l1, l2)?;
        let y = crate::gpu::cpu_f32(s1, l1, "y")?;
        let b = crate::gpu::cpu_f32(s2, l2, "bias")?;
        let out = y
            .iter()
            .enumerate()
            .map(|(i, v)| activate(v + b[i % cols], self.act))
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let cols = bias_cols(l1, l2)?;
        let y = cuda::launch_bias_act(self.act, s1, l1, s2, l2, cols)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((y, l1.shape().clone()))
    }
}

fn bias_cols(y: &Layout, b: &Layout) -> candle_core::Result<usize> {
    match (y.dims(), b.dims()) {
        ([_, cols], [n]) if cols == n && *cols > 0 => Ok(*cols),
        (yd, bd) => Err(candle_core::Error::Msg(format!(
            "bias_act: y {yd:?} and bias {bd:?} do not match"
        ))),
    }
}

// Kernel launches and by-value kernel arguments are unsafe FFI; each use states its contract.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        CUdevice_attribute, CUfunction_attribute,
    };
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, Layout};

    use super::{BLOCK, MlpDesc, MlpOp};
    use crate::gpu::cuda::{driver, f32_view};
    use crate::gpu::{GpuError, ptx};

    // SAFETY: MlpDesc and MlpLayer are repr(C) plain integers mirroring the C structs.
    unsafe impl DeviceRepr for MlpDesc {}

    const MODULE: &str = "confidant_mlp";

    /// The largest dynamic shared memory a block of the fused kernel may use on this device
    /// (the opt-in limit: 227 KiB on Hopper).
    pub fn max_shared_bytes(dev: &candle_core::CudaDevice) -> Result<usize, GpuError> {
        let ctx = dev.cuda_stream().context().clone();
        let n = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver)?;
        Ok(usize::try_from(n).unwrap_or(48 * 1024))
    }

    /// Prepares `desc` (planned) for `dev`, once per model: checks its largest tile against
    /// the device's shared memory, raises the kernel's dynamic shared-memory limit to it (the
    /// attribute stays with the loaded function), and records the multiprocessor count, so
    /// that a launch makes no driver queries.
    pub fn prepare(dev: &candle_core::CudaDevice, desc: MlpDesc) -> Result<MlpOp, GpuError> {
        let shared = desc.shared_bytes(desc.tile_rows);
        if desc.tile_rows == 0 || shared > max_shared_bytes(dev)? {
            return Err(GpuError::Arguments {
                kernel: "mlp_fused_f32",
                reason: format!("{shared} bytes of shared memory do not fit this device"),
            });
        }
        let func = dev.get_or_load_custom_func("mlp_fused_f32", MODULE, ptx::MLP)?;
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            i32::try_from(shared).unwrap_or(i32::MAX),
        )
        .map_err(driver)?;
        let sms = dev
            .cuda_stream()
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver)?
            .max(1) as u32;
        Ok(MlpOp { desc, sms })
    }

    pub fn launch_mlp(
        op: &MlpOp,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        rows: usize,
    ) -> Result<CudaStorage, GpuError> {
        let dev = &s1.device;
        let mut d = op.desc;
        let x = f32_view(s1, l1, "mlp", "x")?;
        let p = f32_view(s2, l2, "mlp", "params")?;
        let out_len = rows * d.out_features as usize;
        let stream = dev.cuda_stream();
        // SAFETY: the kernel writes every one of the rows × out_features outputs before
        // anything reads them (and rows = 0 allocates one unread element).
        let mut y = unsafe { stream.alloc::<f32>(out_len.max(1)) }.map_err(driver)?;
        if rows > 0 {
            if op.desc.tile_rows == 0 {
                return Err(GpuError::Arguments {
                    kernel: "mlp_fused_f32",
                    reason: "the descriptor has no shared-memory plan".into(),
                });
            }
            let op = if op.sms == 0 {
                prepare(dev, op.desc)?
            } else {
                *op
            };
            let sms = op.sms as usize;
            // Spread the rows over every multiprocessor: small batches get one-row tiles
            // (one block per row), large ones up to the planned tile height, whose shared
            // memory `prepare` allowed.
            d.tile_rows = rows.div_ceil(sms).clamp(1, d.tile_rows as usize) as u32;
            let shared = d.shared_bytes(d.tile_rows);
            let func = dev.get_or_load_custom_func("mlp_fused_f32", MODULE, ptx::MLP)?;
            let grid = rows.div_ceil(d.tile_rows as usize).min(sms * 8) as u32;
            let rows32 = rows as u32;
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: shared as u32,
            };
            let mut b = func.builder();
            b.arg(&p).arg(&x).arg(&mut y).arg(&rows32).arg(&d);
            // SAFETY: the descriptor was validated against the parameter buffer's length, x
            // holds rows × in_features values, y rows × out_features, and the shared memory
            // size is the one the kernel indexes (MlpDesc::shared_bytes of its tile height).
            unsafe { b.launch(cfg) }.map_err(driver)?;
        }
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }

    pub fn launch_bias_act(
        act: u32,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        cols: usize,
    ) -> Result<CudaStorage, GpuError> {
        let dev = &s1.device;
        let y = f32_view(s1, l1, "mlp", "y")?;
        let bias = f32_view(s2, l2, "mlp", "bias")?;
        let n = l1.shape().elem_count();
        let stream = dev.cuda_stream();
        let mut out = stream.alloc_zeros::<f32>(n.max(1)).map_err(driver)?;
        if n > 0 {
            let func = dev.get_or_load_custom_func("bias_act_f32", MODULE, ptx::MLP)?;
            let grid = n.div_ceil(256).min(65_535) as u32;
            let (n64, cols32) = (n as u64, cols as u32);
            let mut b = func.builder();
            b.arg(&y)
                .arg(&bias)
                .arg(&mut out)
                .arg(&n64)
                .arg(&cols32)
                .arg(&act);
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: y and out hold n values, bias holds cols values and n is a multiple of
            // cols (bias_cols checked the shapes).
            unsafe { b.launch(cfg) }.map_err(driver)?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }

    pub use max_shared_bytes as device_shared_limit;
}

#[cfg(feature = "cuda")]
pub use cuda::{device_shared_limit, prepare};
