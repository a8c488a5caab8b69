//! The MLP on CUDA: packing for the fused kernel (`kernels/mlp.cu`), its plan, and the
//! cuBLAS path with the fused bias-and-activation epilogue for models too wide for it.

#[cfg(feature = "cuda")]
use candle_core::Device;
use candle_core::{DType, Tensor};

use super::super::config::{Activation, OutputKind};
use super::super::error::EngineError;
use super::Mlp;
#[cfg(feature = "cuda")]
use super::load::scrub;

impl Mlp {
    /// Packs every parameter into one f32 tensor on the model's device, in the layout the
    /// fused kernel reads ([`crate::gpu::mlp::MlpDesc`]): normalization mean and 1/std, then
    /// each layer's `[in, out]` weight and bias.
    pub fn pack(&self) -> Result<(Tensor, crate::gpu::mlp::MlpDesc), EngineError> {
        use crate::gpu::mlp::{PackError, PackLayer, pack};
        let layers: Vec<PackLayer<'_>> = self
            .layers
            .iter()
            .map(|l| PackLayer {
                weight_t: &l.weight_t,
                bias: l.bias.as_ref(),
                activation: kernel_activation(l.activation),
            })
            .collect();
        pack(
            self.normalization.as_ref().map(|(m, s)| (m, s)),
            &layers,
            self.in_features,
            self.out_features,
            self.output == OutputKind::Softmax,
        )
        .map_err(|e| match e {
            PackError::Tensor(t) => EngineError::Compute(t),
            other => EngineError::Compute(candle_core::Error::Msg(other.to_string())),
        })
    }

    /// The fused kernel's plan on a CUDA device, if the model fits its shared memory.
    #[cfg(feature = "cuda")]
    pub(super) fn plan_fused_gpu(
        &self,
    ) -> Result<Option<(Tensor, crate::gpu::mlp::MlpOp)>, EngineError> {
        let Device::Cuda(dev) = &self.device else {
            return Ok(None);
        };
        let limit = crate::gpu::mlp::device_shared_limit(dev)
            .map_err(|e| EngineError::Compute(candle_core::Error::Msg(e.to_string())))?;
        if self.layers.len() > crate::gpu::mlp::MAX_LAYERS {
            return Ok(None);
        }
        let (params, desc) = self.pack()?;
        Ok(match desc.plan(limit) {
            Some(desc) => match crate::gpu::mlp::prepare(dev, desc) {
                Ok(op) => Some((params, op)),
                Err(e) => {
                    scrub(params);
                    return Err(EngineError::Compute(candle_core::Error::Msg(e.to_string())));
                }
            },
            None => {
                scrub(params);
                None
            }
        })
    }

    #[cfg(not(feature = "cuda"))]
    pub(super) fn plan_fused_gpu(
        &self,
    ) -> Result<Option<(Tensor, crate::gpu::mlp::MlpOp)>, EngineError> {
        Ok(None)
    }

    /// cuBLAS (through candle) per layer, with bias and activation fused in one epilogue
    /// kernel (`bias_act_f32`).
    pub(super) fn forward_cublas(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        use crate::gpu::mlp::{BiasAct, activation_code};
        let activation_code = |a| activation_code(kernel_activation(a));
        let mut h = match &self.normalization {
            Some((mean, inv_std)) => x.broadcast_sub(mean)?.broadcast_mul(inv_std)?,
            None => x.clone(),
        };
        for layer in &self.layers {
            h = h.matmul(&layer.weight_t)?;
            let act = activation_code(layer.activation);
            h = match &layer.bias {
                Some(b) => h.apply_op2_no_bwd(b, &BiasAct { act })?,
                None => {
                    let zeros = Tensor::zeros(h.dim(1)?, DType::F32, &self.device)?;
                    h.apply_op2_no_bwd(&zeros, &BiasAct { act })?
                }
            };
        }
        Ok(match self.output {
            OutputKind::Softmax => candle_nn::ops::softmax_last_dim(&h)?,
            OutputKind::Logits => h,
        })
    }
}

/// The kernel layer's name for a config activation.
pub(super) fn kernel_activation(a: Activation) -> crate::gpu::mlp::KernelActivation {
    use crate::gpu::mlp::KernelActivation as K;
    match a {
        Activation::None => K::None,
        Activation::Relu => K::Relu,
        Activation::Gelu => K::Gelu,
        Activation::Tanh => K::Tanh,
        Activation::Sigmoid => K::Sigmoid,
    }
}
