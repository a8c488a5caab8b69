//! Loading: an [`Mlp`] from safetensors bytes or from tensors a GPU loader decrypted into
//! device memory, with the shape, dtype and finiteness checks, and the weights locked in RAM
//! while loaded and zeroed when dropped.

use candle_core::{DType, Device, Storage, Tensor};
use safetensors::SafeTensors;

use super::kernel::with_cpu_f32;
use super::{Dense, Mlp};
use crate::engine::config::ModelConfig;
use crate::engine::error::EngineError;
use crate::secure;

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
pub(super) fn scrub(t: Tensor) {
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
