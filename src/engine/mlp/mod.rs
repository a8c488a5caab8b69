//! The MLP: dense layers in candle, loaded from PyTorch-named safetensors.
//!
//! This file holds the model and its plain forward passes (candle, the fused CPU loop, the
//! CUDA kernel's entry); loading is `load.rs`, the screened forward passes `screened.rs`,
//! the CPU kernels `kernel.rs`, the pre-activation factor `preact.rs` and the GPU packing
//! `device.rs`.

use candle_core::{Device, Tensor};

use super::config::{Activation, OutputKind};
use super::error::EngineError;

mod device;
mod kernel;
mod load;
mod preact;
mod screened;

use kernel::*;
pub use preact::PreactFactor;

/// One dense layer, with the weight stored pre-transposed as `[in, out]` so that the forward
/// pass is a plain row-major matmul with no per-call transpose.
struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
    activation: Activation,
}

impl Dense {
    /// Outputs of the layer.
    fn out(&self) -> usize {
        self.weight_t.dims().get(1).copied().unwrap_or(0)
    }

    /// The fused CPU layer on `rows` rows of `x` (`inp` wide) into `y`, with `activation`
    /// (the layer's own, or `None` for the pre-activation).
    fn apply_cpu(
        &self,
        x: &[f32],
        rows: usize,
        inp: usize,
        activation: Activation,
        y: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let out = self.out();
        with_cpu_f32(&self.weight_t, |w| match &self.bias {
            Some(b) => with_cpu_f32(b, |b| {
                dense_fused(x, rows, inp, w, Some(b), out, activation, y)
            }),
            None => {
                dense_fused(x, rows, inp, w, None, out, activation, y);
                Ok(())
            }
        })?
    }
}

/// A loaded MLP. Its weight tensors are locked in RAM and zeroed when it is dropped.
pub struct Mlp {
    layers: Vec<Dense>,
    normalization: Option<(Tensor, Tensor)>,
    output: OutputKind,
    in_features: usize,
    out_features: usize,
    /// Multiply-adds per row, for choosing between the fused CPU loop and candle.
    macs_per_row: usize,
    device: Device,
    /// On a CUDA device: the packed parameters and the plan of the fused kernel
    /// (`kernels/mlp.cu`), when the model fits in a block's shared memory.
    fused_gpu: Option<(Tensor, crate::gpu::mlp::MlpOp)>,
}

/// Most multiply-adds in one pass of the fused CPU loop: a larger batch of a model that runs
/// on the loop is cut into passes of at most this many, so that each pass's activations
/// stay in cache. Slices of the loop also beat candle's matmul on large batches: 2304 rows
/// of the demo (256 rows and 8 screening copies of each) took 130–137 µs against 320–333 µs
/// in candle with rayon's two threads (BENCHMARKS.md, "Large batches of a small model").
pub const FUSED_MAX_MACS: usize = 1 << 20;

/// Largest model (multiply-adds per row) run by the fused loop: beyond it candle's gemm
/// wins even at batch 1 (`benches/engine.rs`: a 64-256-256-2 MLP, 82 k per row, is 7.7 µs
/// fused against 6.9 µs in candle; the 30-16-2 demo is 0.28 µs fused against 2.3 µs).
pub const FUSED_MAX_MACS_PER_ROW: usize = 1 << 15;

impl Mlp {
    /// Whether the fused MLP kernel serves this model (CUDA, and it fits shared memory).
    pub fn uses_fused_kernel(&self) -> bool {
        self.fused_gpu.is_some()
    }

    /// The input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The forward pass on a `[rows, in]` tensor. On a CUDA device it is the fused kernel
    /// when the model fits shared memory, else cuBLAS per layer with the fused bias and
    /// activation epilogue.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        if let Some((params, op)) = &self.fused_gpu {
            return Ok(x.apply_op2_no_bwd(params, op)?);
        }
        if self.device.is_cuda() {
            return self.forward_cublas(x);
        }
        self.forward_candle(x)
    }

    /// The forward pass in plain candle operations on any device (matmul, broadcast add,
    /// activation, softmax: one kernel each on a GPU): the baseline the fused kernel is
    /// measured against.
    pub fn forward_candle(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let mut h = match &self.normalization {
            Some((mean, inv_std)) => x.broadcast_sub(mean)?.broadcast_mul(inv_std)?,
            None => x.clone(),
        };
        for layer in &self.layers {
            h = h.matmul(&layer.weight_t)?;
            if let Some(b) = &layer.bias {
                h = h.broadcast_add(b)?;
            }
            h = match layer.activation {
                Activation::Relu => h.relu()?,
                Activation::Gelu => h.gelu_erf()?,
                Activation::Tanh => h.tanh()?,
                Activation::Sigmoid => candle_nn::ops::sigmoid(&h)?,
                Activation::None => h,
            };
        }
        Ok(match self.output {
            OutputKind::Softmax => candle_nn::ops::softmax_last_dim(&h)?,
            OutputKind::Logits => h,
        })
    }

    /// The forward pass built only from differentiable candle operations (for autograd:
    /// explanations). The same function as [`forward`](Self::forward).
    pub fn forward_differentiable(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let mut h = match &self.normalization {
            Some((mean, inv_std)) => x.broadcast_sub(mean)?.broadcast_mul(inv_std)?,
            None => x.clone(),
        };
        for layer in &self.layers {
            h = h.matmul(&layer.weight_t)?;
            if let Some(b) = &layer.bias {
                h = h.broadcast_add(b)?;
            }
            h = match layer.activation {
                Activation::Relu => h.relu()?,
                Activation::Gelu => h.gelu_erf()?,
                Activation::Tanh => h.tanh()?,
                Activation::Sigmoid => (h.neg()?.exp()? + 1.0)?.recip()?,
                Activation::None => h,
            };
        }
        Ok(match self.output {
            OutputKind::Softmax => {
                // The max only steadies the exponentials; it carries no gradient.
                let max = h.max_keepdim(1)?.detach();
                let e = h.broadcast_sub(&max)?.exp()?;
                let sum = e.sum_keepdim(1)?;
                e.broadcast_div(&sum)?
            }
            OutputKind::Logits => h,
        })
    }

    /// The forward pass on `rows` packed row-major f32 values; returns `rows × out` values.
    pub fn forward_rows(&self, values: &[f32], rows: usize) -> Result<Vec<f32>, EngineError> {
        if rows == 0 || values.len() != rows * self.in_features {
            return Err(EngineError::Width {
                model: String::new(),
                found: values.len().checked_div(rows).unwrap_or(0),
                expected: self.in_features,
            });
        }
        let per_pass = self.fused_cpu_rows(1);
        if per_pass >= rows {
            return self.forward_fused_cpu(values, rows);
        }
        if per_pass > 0 {
            // A large batch of a small model: the fused loop, a slice of rows at a time, on
            // this thread. candle would spread it over rayon's pool, whose threads spin for
            // work beside the server's own and halved a loaded server's throughput
            // (BENCHMARKS.md, "Large batches of a small model").
            let mut out = Vec::with_capacity(rows * self.out_features);
            for chunk in values.chunks(per_pass * self.in_features) {
                out.extend(self.forward_fused_cpu(chunk, chunk.len() / self.in_features)?);
            }
            return Ok(out);
        }
        let x = Tensor::from_slice(values, (rows, self.in_features), &self.device)?;
        let y = self.forward(&x)?;
        Ok(y.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The forward pass as one fused loop per layer on the CPU (matmul, bias and activation
    /// in a single sweep over each output row, four rows at a time), for the small batches
    /// of small tabular models where candle's per-operation overhead dominates. It computes
    /// the same function as [`forward`](Self::forward), in a different summation order.
    pub fn forward_fused_cpu(&self, values: &[f32], rows: usize) -> Result<Vec<f32>, EngineError> {
        let x = self.normalized(values)?;
        self.fused_layers(x, rows, 0)
    }

    /// Whether [`forward_fused_cpu`](Self::forward_fused_cpu) takes `rows` rows in one pass.
    pub fn fused_cpu_fits(&self, rows: usize) -> bool {
        self.device.is_cpu()
            && self.macs_per_row <= FUSED_MAX_MACS_PER_ROW
            && rows.saturating_mul(self.macs_per_row) <= FUSED_MAX_MACS
    }

    /// How many inputs, each `per_input` rows of the model, one pass of the fused CPU loop
    /// takes (at most [`FUSED_MAX_MACS`] multiply-adds, at least one input): a larger batch
    /// runs as several passes. 0 when the model does not run on the fused loop at all (on a
    /// GPU, or too large a model).
    pub fn fused_cpu_rows(&self, per_input: usize) -> usize {
        match self.fused_cpu_rows_within(per_input, FUSED_MAX_MACS) {
            // On the loop, but one input is over a pass: it runs alone.
            0 if self.fused_cpu_fits(1) => 1,
            n => n,
        }
    }

    /// How many inputs, each `per_input` rows of the model, the fused CPU loop runs within
    /// `macs` multiply-adds: 0 when not even one does, or the model is not on the fused loop.
    pub fn fused_cpu_rows_within(&self, per_input: usize, macs: usize) -> usize {
        if !self.fused_cpu_fits(1) {
            return 0;
        }
        macs / self.macs_per_row.saturating_mul(per_input.max(1)).max(1)
    }

    /// The input rows, standardized when the model declares a normalization.
    fn normalized(&self, values: &[f32]) -> Result<Vec<f32>, EngineError> {
        let mut x = values.to_vec();
        if let Some((mean, inv_std)) = &self.normalization {
            with_cpu_f32(mean, |mean| {
                with_cpu_f32(inv_std, |inv| {
                    for row in x.chunks_exact_mut(self.in_features) {
                        for ((v, m), i) in row.iter_mut().zip(mean).zip(inv) {
                            *v = (*v - m) * i;
                        }
                    }
                })
            })??;
        }
        Ok(x)
    }

    /// Runs layers `from..` of the fused CPU forward pass on `x` (the input of layer
    /// `from`, `rows` rows), then the softmax.
    fn fused_layers(
        &self,
        mut x: Vec<f32>,
        rows: usize,
        from: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let mut width = match from.checked_sub(1) {
            None => self.in_features,
            Some(prev) => self.layer_width(prev),
        };
        let mut y = Vec::new();
        for layer in self.layers.iter().skip(from) {
            layer.apply_cpu(&x, rows, width, layer.activation, &mut y)?;
            std::mem::swap(&mut x, &mut y);
            width = layer.out();
        }
        if self.output == OutputKind::Softmax {
            for row in x.chunks_exact_mut(width.max(1)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                for v in row.iter_mut() {
                    *v /= sum;
                }
            }
        }
        y.fill(0.0);
        Ok(x)
    }

    /// Outputs of layer `i`.
    fn layer_width(&self, i: usize) -> usize {
        self.layers.get(i).map_or(0, Dense::out)
    }

    /// The matmuls alone, with no bias, activation or normalization: the baseline that the
    /// engine bench compares the full forward pass against.
    pub fn matmuls_only(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = h.matmul(&layer.weight_t)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests;
