//! The fused MLP kernel (`kernels/mlp.cu`) and its CPU reference.
//!
//! A model's parameters are packed into one f32 buffer ([`MlpDesc`] says where each piece
//! is); [`MlpOp`] is a candle `CustomOp2` on `(x [rows, in], params [len])` whose `cpu_fwd`
//! is [`reference_forward`] and whose `cuda_fwd` launches `mlp_fused_f32`, which runs every
//! layer in one launch with the parameters in shared memory. [`BiasAct`] is the fused
//! epilogue (`act(y + bias)`) for models too wide for shared memory, which run each matmul in
//! cuBLAS through candle.
//!
//! This file holds the packed layout, its checks and the CPU reference; the candle ops and
//! their CUDA launches are `mlp/ops.rs`.

use candle_core::Tensor;

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

mod ops;

pub use ops::{BiasAct, MlpOp};
#[cfg(feature = "cuda")]
pub use ops::{device_shared_limit, prepare};
