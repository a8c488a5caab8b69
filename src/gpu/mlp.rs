//! The fused MLP kernel (`kernels/mlp.cu`) and its CPU reference.
//!
//! A model's parameters are packed into one f32 buffer ([`MlpDesc`] says where each piece
//! is); [`MlpOp`] is a candle `CustomOp2` on `(x [rows, in], params [len])` whose `cpu_fwd`
//! is [`reference_forward`] and whose `cuda_fwd` launches `mlp_fused_f32`, which runs every
//! layer in one launch with the parameters in shared memory. [`BiasAct`] is the fused
//! epilogue (`act(y + bias)`) for models too wide for shared memory, which run each matmul in
//! cuBLAS through candle.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// Most layers the fused kernel takes (`MLP_MAX_LAYERS` in `kernels/mlp.cu`).
pub const MAX_LAYERS: usize = 8;
/// No bias / no normalization (`MLP_NONE`).
pub const NONE: u32 = u32::MAX;
/// Threads per block of the fused kernel (its `__launch_bounds__`).
pub const BLOCK: u32 = 256;
/// Most rows per shared-memory tile.
pub const MAX_TILE_ROWS: u32 = 64;

/// One layer of a packed MLP (`MlpLayer` in `kernels/mlp.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MlpLayer {
    /// Input width.
    pub inp: u32,
    /// Output width.
    pub out: u32,
    /// Activation code ([`activation_code`]).
    pub act: u32,
    /// Offset of the `[in, out]` row-major weight in the packed buffer.
    pub w_off: u32,
    /// Offset of the bias, or [`NONE`].
    pub b_off: u32,
}

/// Where everything is in a packed parameter buffer (`MlpDesc` in `kernels/mlp.cu`; passed
/// to the kernel by value, so the layout is `repr(C)` and mirrors the C struct exactly).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MlpDesc {
    /// Number of layers (≤ [`MAX_LAYERS`]).
    pub n_layers: u32,
    /// Input width.
    pub in_features: u32,
    /// Output width.
    pub out_features: u32,
    /// Widest activation (input included).
    pub max_width: u32,
    /// Offset of the normalization mean (then `1/std`), or [`NONE`].
    pub norm_off: u32,
    /// 1 when the output is a softmax.
    pub softmax: u32,
    /// Floats in the packed buffer.
    pub param_len: u32,
    /// Rows per shared-memory tile (set by [`MlpDesc::plan`]).
    pub tile_rows: u32,
    /// The layers; entries past `n_layers` are unused.
    pub layers: [MlpLayer; MAX_LAYERS],
}

/// The activations the kernels apply (`MLP_ACT_*` in `kernels/mlp.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelActivation {
    /// Identity.
    None,
    /// `max(0, x)`.
    Relu,
    /// The exact (erf) GELU.
    Gelu,
    /// `tanh(x)`.
    Tanh,
    /// The logistic function.
    Sigmoid,
}

/// The kernel's code for an activation.
pub fn activation_code(a: KernelActivation) -> u32 {
    match a {
        KernelActivation::None => 0,
        KernelActivation::Relu => 1,
        KernelActivation::Gelu => 2,
        KernelActivation::Tanh => 3,
        KernelActivation::Sigmoid => 4,
    }
}

/// One layer to pack: its `[in, out]` weight (transposed from PyTorch's `[out, in]`), its
/// bias and its activation.
pub struct PackLayer<'a> {
    /// The `[in, out]` weight.
    pub weight_t: &'a Tensor,
    /// The `[out]` bias, if any.
    pub bias: Option<&'a Tensor>,
    /// The activation after the layer.
    pub activation: KernelActivation,
}

/// Why a model cannot be packed for the fused kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The model does not fit the kernel's limits.
    #[error("the fused kernel cannot take this model: {0}")]
    TooBig(&'static str),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Packs every parameter into one f32 tensor on the tensors' device, in the layout the fused
/// kernel reads ([`MlpDesc`]): the normalization mean and 1/std (if any), then each layer's
/// `[in, out]` weight and bias.
pub fn pack(
    normalization: Option<(&Tensor, &Tensor)>,
    layers: &[PackLayer<'_>],
    in_features: usize,
    out_features: usize,
    softmax: bool,
) -> Result<(Tensor, MlpDesc), PackError> {
    if layers.len() > MAX_LAYERS {
        return Err(PackError::TooBig("too many layers"));
    }
    let narrow =
        |v: usize, what: &'static str| u32::try_from(v).map_err(|_| PackError::TooBig(what));
    let mut parts: Vec<Tensor> = Vec::new();
    let mut len = 0usize;
    let mut push = |t: &Tensor, parts: &mut Vec<Tensor>| -> Result<u32, PackError> {
        let off = u32::try_from(len).map_err(|_| PackError::TooBig("over 2^32 parameters"))?;
        len += t.elem_count();
        parts.push(t.flatten_all()?);
        Ok(off)
    };
    let mut desc = MlpDesc {
        n_layers: narrow(layers.len(), "too many layers")?,
        in_features: narrow(in_features, "too wide")?,
        out_features: narrow(out_features, "too wide")?,
        norm_off: NONE,
        softmax: u32::from(softmax),
        ..MlpDesc::default()
    };
    if let Some((mean, inv_std)) = normalization {
        desc.norm_off = push(mean, &mut parts)?;
        push(inv_std, &mut parts)?;
    }
    let mut max_width = in_features;
    for (i, layer) in layers.iter().enumerate() {
        let (inp, out) = layer.weight_t.dims2()?;
        max_width = max_width.max(out);
        let w_off = push(layer.weight_t, &mut parts)?;
        let b_off = match layer.bias {
            Some(b) => push(b, &mut parts)?,
            None => NONE,
        };
        desc.layers[i] = MlpLayer {
            inp: narrow(inp, "too wide")?,
            out: narrow(out, "too wide")?,
            act: activation_code(layer.activation),
            w_off,
            b_off,
        };
    }
    desc.max_width = narrow(max_width, "too wide")?;
    desc.param_len = narrow(len, "over 2^32 parameters")?;
    Ok((Tensor::cat(&parts, 0)?, desc))
}

/// The activation, on the CPU, as the kernel computes it.
pub fn activate(v: f32, code: u32) -> f32 {
    match code {
        1 => v.max(0.0),
        2 => 0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2)),
        3 => v.tanh(),
        4 => 1.0 / (1.0 + (-v).exp()),
        _ => v,
    }
}

impl MlpDesc {
    /// Shared memory the fused kernel needs with `tile_rows` rows per tile, in bytes.
    pub fn shared_bytes(&self, tile_rows: u32) -> usize {
        let params = (self.param_len as usize).div_ceil(4) * 4;
        (params + 2 * tile_rows as usize * self.max_width as usize) * 4
    }

    /// Chooses the tile height for a shared-memory budget of `max_shared` bytes per block:
    /// the largest up to [`MAX_TILE_ROWS`] that fits, or `None` when not even one row fits
    /// (then the model runs layer by layer in cuBLAS).
    pub fn plan(mut self, max_shared: usize) -> Option<Self> {
        if self.n_layers == 0 || self.n_layers as usize > MAX_LAYERS {
            return None;
        }
        let mut t = MAX_TILE_ROWS;
        while t > 0 && self.shared_bytes(t) > max_shared {
            t /= 2;
        }
        (t > 0).then(|| {
            self.tile_rows = t;
            self
        })
    }

    /// Checks that every offset and width is inside a buffer of `len` floats, so that neither
    /// the kernel nor the reference can read out of bounds.
    pub fn validate(&self, len: usize) -> Result<(), DescError> {
        if self.n_layers == 0 || self.n_layers as usize > MAX_LAYERS {
            return Err(DescError::LayerCount(self.n_layers));
        }
        if self.param_len as usize != len {
            return Err(DescError::ParamLen {
                descriptor: self.param_len,
                buffer: len,
            });
        }
        let fits = |off: u32, n: u64| u64::from(off) + n <= len as u64;
        if self.norm_off != NONE && !fits(self.norm_off, 2 * u64::from(self.in_features)) {
            return Err(DescError::NormOutside);
        }
        let mut width = self.in_features;
        let mut max_width = width;
        for (i, l) in self.layers[..self.n_layers as usize].iter().enumerate() {
            if l.inp != width || l.out == 0 || l.act > 4 {
                return Err(DescError::Layer {
                    layer: i,
                    inp: l.inp,
                    out: l.out,
                    act: l.act,
                });
            }
            if !fits(l.w_off, u64::from(l.inp) * u64::from(l.out))
                || (l.b_off != NONE && !fits(l.b_off, u64::from(l.out)))
            {
                return Err(DescError::LayerOutside(i));
            }
            width = l.out;
            max_width = max_width.max(width);
        }
        if width != self.out_features || max_width != self.max_width {
            return Err(DescError::Widths);
        }
        Ok(())
    }
}

/// Why an [`MlpDesc`] does not fit its parameter buffer ([`MlpDesc::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescError {
    /// No layers, or more than the kernel holds.
    #[error("{0} layers (1 to {MAX_LAYERS})")]
    LayerCount(u32),
    /// The descriptor's parameter count is not the buffer's.
    #[error("descriptor says {descriptor} floats, buffer has {buffer}")]
    ParamLen {
        /// The descriptor's count.
        descriptor: u32,
        /// The buffer's length.
        buffer: usize,
    },
    /// The input normalization's parameters lie outside the buffer.
    #[error("normalization outside the buffer")]
    NormOutside,
    /// A layer whose input is not the previous output, with no outputs, or an unknown
    /// activation code.
    #[error("layer {layer}: in {inp} out {out} act {act}")]
    Layer {
        /// The layer index.
        layer: usize,
        /// Its input width.
        inp: u32,
        /// Its output width.
        out: u32,
        /// Its activation code.
        act: u32,
    },
    /// A layer's weights or bias lie outside the buffer.
    #[error("layer {0}: parameters outside the buffer")]
    LayerOutside(usize),
    /// The output or maximum width does not match the layers.
    #[error("output or maximum width does not match the layers")]
    Widths,
}

/// The CPU reference of `mlp_fused_f32`: the same packed layout, the same loop order (bias
/// first, then the inputs in order, fused multiply-add), the same activations and softmax.
pub fn reference_forward(params: &[f32], d: &MlpDesc, x: &[f32], rows: usize) -> Vec<f32> {
    let inp = d.in_features as usize;
    let mut cur: Vec<f32> = x[..rows * inp].to_vec();
    if d.norm_off != NONE {
        let n = d.norm_off as usize;
        for row in cur.chunks_exact_mut(inp) {
            for (k, v) in row.iter_mut().enumerate() {
                *v = (*v - params[n + k]) * params[n + inp + k];
            }
        }
    }
    for l in &d.layers[..d.n_layers as usize] {
        let (li, lo) = (l.inp as usize, l.out as usize);
        let w = &params[l.w_off as usize..l.w_off as usize + li * lo];
        let mut next = vec![0.0f32; rows * lo];
        for (hr, yr) in cur.chunks_exact(li).zip(next.chunks_exact_mut(lo)) {
            for (j, y) in yr.iter_mut().enumerate() {
                let mut acc = if l.b_off == NONE {
                    0.0
                } else {
                    params[l.b_off as usize + j]
                };
                for (k, h) in hr.iter().enumerate() {
                    acc = h.mul_add(w[k * lo + j], acc);
                }
                *y = activate(acc, l.act);
            }
        }
        cur = next;
    }
    if d.softmax == 1 {
        for row in cur.chunks_exact_mut(d.out_features as usize) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
            for v in row.iter_mut() {
                *v = (*v - m).exp() / s;
            }
        }
    }
    cur
}

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
