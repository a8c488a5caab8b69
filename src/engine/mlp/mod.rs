//! The MLP: dense layers in candle, loaded from PyTorch-named safetensors.

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::SafeTensors;

use super::config::{Activation, ModelConfig, OutputKind};
use super::error::EngineError;
use crate::secure;

mod device;
mod kernel;
mod preact;

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

/// Largest batch (in multiply-adds) run by the fused CPU loop rather than candle's matmul.
/// Measured with `examples/guard_costs.rs`: below it, candle's per-op overhead dominates.
pub const FUSED_MAX_MACS: usize = 1 << 20;

/// Largest model (multiply-adds per row) run by the fused loop: beyond it candle's gemm
/// wins even at batch 1 (`benches/engine.rs`: a 64-256-256-2 MLP, 82 k per row, is 7.7 µs
/// fused against 6.9 µs in candle; the 30-16-2 demo is 0.28 µs fused against 2.3 µs).
pub const FUSED_MAX_MACS_PER_ROW: usize = 1 << 15;

impl Mlp {
    /// Builds the MLP that `config` describes from safetensors bytes (usually the plaintext
    /// of a sealed model, still inside its locked buffer).
    ///
    /// Every named tensor must exist with the shape the architecture implies (PyTorch
    /// layout: weight `[out, in]`, bias `[out]`) and hold only finite values. F64, F16 and
    /// BF16 weights are converted to F32.
    pub fn from_safetensors(
        config: &ModelConfig,
        weights: &[u8],
        device: &Device,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let st = SafeTensors::deserialize(weights)
            .map_err(|e| EngineError::Safetensors(e.to_string()))?;
        Self::from_loader(config, device, |name, layer| {
            load_f32(&st, name, layer, device)
        })
    }

    /// Builds the MLP from tensors that `load(name, layer)` returns (already on `device`,
    /// F32): the GPU loaders hand over tensors that were decrypted into device memory. The
    /// same shape and finiteness checks as [`from_safetensors`](Self::from_safetensors).
    pub fn from_loader(
        config: &ModelConfig,
        device: &Device,
        mut load: impl FnMut(&str, usize) -> Result<Tensor, EngineError>,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let mut load_f32 =
            |name: &str, layer: usize, _device: &Device| -> Result<Tensor, EngineError> {
                let t = load(name, layer)?;
                if t.dtype() != DType::F32 || !all_finite(&t)? {
                    let dtype = t.dtype();
                    scrub(t);
                    return Err(if dtype == DType::F32 {
                        EngineError::NonFinite {
                            name: name.to_string(),
                        }
                    } else {
                        EngineError::Dtype {
                            name: name.to_string(),
                            dtype: format!("{dtype:?}"),
                        }
                    });
                }
                Ok(t)
            };
        let mut layers = Vec::with_capacity(config.architecture.layers.len());
        let mut width = config.feature_count();
        let last = config.architecture.layers.len() - 1;
        for (i, spec) in config.architecture.layers.iter().enumerate() {
            let w = load_f32(&spec.weight, i, device)?;
            let dims = w.dims().to_vec();
            let out = match dims.as_slice() {
                [out, inp] if *inp == width && *out > 0 => *out,
                _ => {
                    scrub(w);
                    return Err(EngineError::Shape {
                        name: spec.weight.clone(),
                        found: dims,
                        expected: vec![if i == last { config.output_count() } else { 0 }, width],
                    });
                }
            };
            if i == last && out != config.output_count() {
                scrub(w);
                return Err(EngineError::Shape {
                    name: spec.weight.clone(),
                    found: dims,
                    expected: vec![config.output_count(), width],
                });
            }
            let weight_t = w.t()?.contiguous()?;
            scrub(w);
            let bias = match &spec.bias {
                Some(name) => {
                    let b = load_f32(name, i, device)?;
                    if b.dims() != [out] {
                        let found = b.dims().to_vec();
                        scrub(b);
                        scrub(weight_t);
                        return Err(EngineError::Shape {
                            name: name.clone(),
                            found,
                            expected: vec![out],
                        });
                    }
                    Some(b)
                }
                None => None,
            };
            lock_tensor(&weight_t);
            if let Some(b) = &bias {
                lock_tensor(b);
            }
            layers.push(Dense {
                weight_t,
                bias,
                activation: spec.activation,
            });
            width = out;
        }
        let normalization = match &config.input.normalization {
            Some(n) => {
                let mean = Tensor::from_slice(&n.mean, n.mean.len(), device)?;
                let inv: Vec<f32> = n.std.iter().map(|s| 1.0 / s).collect();
                let inv_std = Tensor::from_slice(&inv, inv.len(), device)?;
                Some((mean, inv_std))
            }
            None => None,
        };
        let mut macs_per_row = 0usize;
        let mut w_in = config.feature_count();
        for l in &layers {
            let out = l.out();
            macs_per_row = macs_per_row.saturating_add(w_in.saturating_mul(out));
            w_in = out;
        }
        let mut mlp = Self {
            layers,
            normalization,
            output: config.architecture.output,
            in_features: config.feature_count(),
            out_features: config.output_count(),
            macs_per_row,
            device: device.clone(),
            fused_gpu: None,
        };
        mlp.fused_gpu = mlp.plan_fused_gpu()?;
        Ok(mlp)
    }

    /// Whether the fused MLP kernel serves this model (CUDA, and it fits shared memory).
    pub fn uses_fused_kernel(&self) -> bool {
        self.fused_gpu.is_some()
    }

    /// The forward pass and the sensitivity scores of `rows` rows in one pass on the model's
    /// device: the perturbed copies are made by the `perturb_rows` kernel (or its CPU
    /// reference), batched with the rows, and reduced by `sensitivity_scores`. Returns the
    /// rows' outputs (`rows × out`) and one score per row.
    pub fn forward_screened(
        &self,
        values: &[f32],
        rows: usize,
        sigmas: &[f32],
        copies: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        use crate::gpu::sensitivity::{PerturbOp, ScoresOp};
        let compute = |m: String| EngineError::Compute(candle_core::Error::Msg(m));
        if rows == 0 || values.len() != rows * self.in_features || sigmas.len() != self.in_features
        {
            return Err(compute(format!(
                "forward_screened: {} values, {} sigmas for {rows} rows of {}",
                values.len(),
                sigmas.len(),
                self.in_features
            )));
        }
        let copies32 = u32::try_from(copies).map_err(|_| compute("too many copies".into()))?;
        let rows32 = u32::try_from(rows).map_err(|_| compute("too many rows".into()))?;
        let op =
            PerturbOp::from_os(copies32).map_err(|e| compute(format!("OS randomness: {e}")))?;
        let x = Tensor::from_slice(values, (rows, self.in_features), &self.device)?;
        let sigma = Tensor::from_slice(sigmas, self.in_features, &self.device)?;
        let perturbed = x.apply_op2_no_bwd(&sigma, &op)?;
        let all = Tensor::cat(&[&x, &perturbed], 0)?;
        let y = self.forward(&all)?;
        let scores = y
            .apply_op1_no_bwd(&ScoresOp {
                rows: rows32,
                copies: copies32,
            })?
            .to_vec1::<f32>()?;
        let out = y.narrow(0, 0, rows)?.flatten_all()?.to_vec1::<f32>()?;
        scrub(x);
        scrub(perturbed);
        scrub(all);
        scrub(y);
        Ok((out, scores))
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
        if self.fused_cpu_fits(rows) {
            return self.forward_fused_cpu(values, rows);
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

    /// Whether [`forward_fused_cpu`](Self::forward_fused_cpu) is the path `forward_rows`
    /// takes for `rows` rows.
    pub fn fused_cpu_fits(&self, rows: usize) -> bool {
        self.device.is_cpu()
            && self.macs_per_row <= FUSED_MAX_MACS_PER_ROW
            && rows.saturating_mul(self.macs_per_row) <= FUSED_MAX_MACS
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

    /// The factor that lets adversarial-sensitivity screening draw its perturbations in the
    /// first layer's pre-activation space (see [`PreactFactor`]), for input noise of
    /// standard deviation `sigmas[i]` on raw feature `i`. `None` when the model does not run
    /// on the fused CPU path, where the copies are made in input space instead.
    pub fn preact_factor(&self, sigmas: &[f32]) -> Result<Option<PreactFactor>, EngineError> {
        if !self.fused_cpu_fits(1) || sigmas.len() != self.in_features {
            return Ok(None);
        }
        let Some(first) = self.layers.first() else {
            return Ok(None);
        };
        let hidden = self.layer_width(0);
        let inp = self.in_features;
        // s_i: the noise scale of feature i after standardization.
        let mut scale: Vec<f64> = sigmas.iter().map(|&s| f64::from(s)).collect();
        if let Some((_, inv_std)) = &self.normalization {
            with_cpu_f32(inv_std, |inv| {
                for (s, i) in scale.iter_mut().zip(inv) {
                    *s *= f64::from(*i);
                }
            })?;
        }
        // M = diag(s) · W1, `[inp, hidden]`: the pre-activation moves by Mᵀ z for z ~ N(0, I).
        let m: Vec<f64> = with_cpu_f32(&first.weight_t, |w| {
            w.chunks_exact(hidden.max(1))
                .zip(&scale)
                .flat_map(|(row, s)| row.iter().map(move |v| f64::from(*v) * s))
                .collect()
        })?;
        let factor = PreactFactor::from_input_map(&m, inp, hidden);
        Ok(Some(factor))
    }

    /// The fused CPU forward pass of `rows` rows and, after them, `copies` perturbed copies
    /// of each (row 0's copies first), with each copy's first-layer pre-activation moved by
    /// `Fᵀ u` for its `factor.rank()` standard normals in `normals` (`rows × copies × rank`
    /// values). Returns `rows × (1 + copies)` output rows, in the layout the input-space
    /// path ([`Screener::perturb_into`](super::Screener::perturb_into) then
    /// [`forward_rows`](Self::forward_rows)) produces.
    pub fn forward_screened_cpu(
        &self,
        values: &[f32],
        rows: usize,
        copies: usize,
        factor: &PreactFactor,
        normals: &[f32],
    ) -> Result<Vec<f32>, EngineError> {
        let hidden = self.layer_width(0);
        if rows == 0
            || values.len() != rows * self.in_features
            || factor.hidden != hidden
            || normals.len() != rows * copies * factor.rank
        {
            return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                "screened forward: {} values, {} normals for {rows} rows, {copies} copies, \
                 rank {} (model: {} features, {hidden} hidden)",
                values.len(),
                normals.len(),
                factor.rank,
                self.in_features
            ))));
        }
        let Some(first) = self.layers.first() else {
            return Err(EngineError::Compute(candle_core::Error::Msg(
                "screened forward: the model has no layers".into(),
            )));
        };
        let x = self.normalized(values)?;
        let mut base = Vec::new();
        first.apply_cpu(&x, rows, self.in_features, Activation::None, &mut base)?;
        let mut all = Vec::with_capacity(rows * (1 + copies) * hidden);
        all.extend_from_slice(&base);
        for row in base.chunks_exact(hidden.max(1)) {
            for _ in 0..copies {
                all.extend_from_slice(row);
            }
        }
        if factor.rank > 0 {
            dense_accumulate(
                normals,
                rows * copies,
                factor.rank,
                &factor.f,
                hidden,
                &mut all[rows * hidden..],
            );
        }
        activate(&mut all, first.activation);
        self.fused_layers(all, rows * (1 + copies), 1)
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

impl Drop for Mlp {
    fn drop(&mut self) {
        if let Some((params, _)) = self.fused_gpu.take() {
            scrub(params);
        }
        for layer in self.layers.drain(..) {
            unlock_tensor(&layer.weight_t);
            scrub(layer.weight_t);
            if let Some(b) = layer.bias {
                unlock_tensor(&b);
                scrub(b);
            }
        }
    }
}

/// Loads one tensor as contiguous F32 and checks that every value is finite.
fn load_f32(
    st: &SafeTensors<'_>,
    name: &str,
    layer: usize,
    device: &Device,
) -> Result<Tensor, EngineError> {
    use candle_core::safetensors::Load;
    let view = st.tensor(name).map_err(|_| EngineError::MissingTensor {
        name: name.to_string(),
        layer,
    })?;
    let dtype = view.dtype();
    let t = match dtype {
        safetensors::Dtype::F32
        | safetensors::Dtype::F64
        | safetensors::Dtype::F16
        | safetensors::Dtype::BF16 => view.load(device)?,
        other => {
            return Err(EngineError::Dtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        let converted = t.to_dtype(DType::F32)?;
        scrub(t);
        converted
    };
    // from_loader checks finiteness on whichever device the tensor landed.
    Ok(t)
}

fn all_finite(t: &Tensor) -> Result<bool, EngineError> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let s = cpu.as_slice::<f32>()?;
            let Some((start, end)) = layout.contiguous_offsets() else {
                return Ok(false);
            };
            Ok(s.get(start..end)
                .is_some_and(|v| v.iter().all(|x| x.is_finite())))
        }
        // On a device: x − x is NaN exactly for NaN and ±Inf, and a NaN makes the sum NaN.
        #[allow(unreachable_patterns)]
        _ => {
            drop(storage);
            let probe = t
                .sub(t)?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            Ok(probe == 0.0)
        }
    }
}

/// Overwrites a tensor's storage with zeros before dropping it, so plaintext weights do not
/// linger in freed heap memory.
fn scrub(t: Tensor) {
    // zero_set fails only for an unsupported dtype or device, which would be a bug; the
    // memory is freed either way.
    let _ = t.zero_set();
}

/// Locks a CPU weight tensor's values in RAM (no-op on other devices).
fn lock_tensor(t: &Tensor) {
    let _ = with_cpu_f32(t, secure::lock_slice);
}

fn unlock_tensor(t: &Tensor) {
    let _ = with_cpu_f32(t, secure::unlock_slice);
}

#[cfg(test)]
mod tests;
