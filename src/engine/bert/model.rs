//! The BERT encoder in candle: weights loaded from Hugging Face-named safetensors, and the
//! forward pass over a padded batch with an attention mask.
//!
//! The layout follows `transformers`' `BertModel` (post-layer-norm, exact erf GELU, absolute
//! position embeddings), with two changes for speed that do not change the math: each
//! linear weight is stored pre-transposed (`[in, out]`, so a forward pass is a plain
//! row-major matmul), and a layer's query, key and value projections are one `[H, 3H]`
//! matmul. The plaintext weights live in locked memory and are zeroed on drop.

use candle_core::{D, DType, Device, Storage, Tensor};
use safetensors::SafeTensors;

use super::hf_config::BertShape;
use crate::engine::config::{Activation, TextHead};
use crate::engine::error::EngineError;
use crate::secure;

mod cpu;

/// Which kernels a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ops {
    /// candle's fused layer norm and softmax: the fastest, but they record no gradient
    /// (`apply_op*_no_bwd`), so a backward pass through them silently stops.
    Fused,
    /// The same math from primitive ops that candle can differentiate (for integrated
    /// gradients over the input embeddings).
    Differentiable,
}

/// Softmax over the last dimension with `ops`' kernels. The differentiable form subtracts
/// the row maximum, detached: it only steadies the exponentials and carries no gradient.
pub(super) fn softmax(x: &Tensor, ops: Ops) -> candle_core::Result<Tensor> {
    match ops {
        Ops::Fused => candle_nn::ops::softmax_last_dim(x),
        Ops::Differentiable => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            let sum = e.sum_keepdim(D::Minus1)?;
            e.broadcast_div(&sum)
        }
    }
}

/// `y = x · W + b` with `W` stored `[in, out]`.
pub(super) struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x`: `[rows, in]` → `[rows, out]`.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }

    /// `x · W + b` with `ops`' kernels. Differentiating on the CPU, the gradient flows to
    /// `x` alone: candle's matmul backward also computes the weight's gradient, a third of
    /// the work of a backward pass that integrated gradients never reads, so the product is
    /// computed detached and [`InputGradient`] carries `x`'s gradient.
    fn forward_ops(&self, x: &Tensor, ops: Ops) -> candle_core::Result<Tensor> {
        match ops {
            Ops::Differentiable if x.device().is_cpu() => {
                let value = self.forward(&x.detach())?;
                let gate = x.apply_op1(InputGradient {
                    weight_t: self.weight_t.clone(),
                })?;
                value + gate
            }
            Ops::Fused | Ops::Differentiable => self.forward(x),
        }
    }

    fn tensors(&self) -> [&Tensor; 2] {
        [&self.weight_t, &self.bias]
    }
}

/// Zeros of the shape of `x · W` (`x`: `[rows, in]`, F32, on the CPU) whose backward is
/// that of `x · W` with respect to `x`: `grad · Wᵀ`. Added to the detached product, it makes
/// a linear layer differentiable in its input only.
struct InputGradient {
    weight_t: Tensor,
}

impl candle_core::CustomOp1 for InputGradient {
    fn name(&self) -> &'static str {
        "linear-input-gradient"
    }

    fn cpu_fwd(
        &self,
        _storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, _) = layout.shape().dims2()?;
        let (_, out) = self.weight_t.dims2()?;
        Ok((
            candle_core::CpuStorage::F32(vec![0f32; rows * out]),
            candle_core::Shape::from((rows, out)),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight_t.t()?)?))
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor, ops: Ops) -> candle_core::Result<Tensor> {
        match ops {
            Ops::Fused => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps),
            Ops::Differentiable => {
                candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)
            }
        }
    }

    fn tensors(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The encoder's weights.
pub(super) struct BertWeights {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    /// `pooler.dense`, where the checkpoint has it (BertForSequenceClassification's head
    /// reads the `[CLS]` vector through it and a tanh).
    pub(super) pooler: Option<Linear>,
    /// `classifier`, where the checkpoint has it.
    pub(super) classifier: Option<Linear>,
    /// An MLP head over the pooled embedding (`architecture.head`), from `head.safetensors`.
    pub(super) mlp_head: Vec<(Linear, Activation)>,
    shape: BertShape,
}

/// Reads the tensors of one checkpoint, with the prefix its names carry.
pub(super) struct TensorSource<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
    device: Device,
}

impl<'a> TensorSource<'a> {
    /// Parses safetensors bytes; names may carry a `bert.` prefix (as in
    /// `BertForSequenceClassification` checkpoints) or none (as in `BertModel`).
    pub(super) fn new(bytes: &'a [u8], device: &Device) -> Result<Self, EngineError> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| EngineError::Safetensors(e.to_string()))?;
        let prefix = if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        Ok(Self {
            st,
            prefix,
            device: device.clone(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// The tensor names in the file.
    fn names(&self) -> Vec<String> {
        self.st.names().into_iter().map(str::to_string).collect()
    }

    /// Loads an MLP head's layers (`head.safetensors`): the first reads `inputs` values, the
    /// last gives `labels`, each weight `[out, in]` with `in` the previous layer's `out`, and
    /// the file holds no tensor the head does not name.
    pub(super) fn mlp_head(
        &self,
        head: &TextHead,
        inputs: usize,
        labels: usize,
    ) -> Result<Vec<(Linear, Activation)>, EngineError> {
        let mut layers = Vec::with_capacity(head.layers.len());
        let mut width = inputs;
        let last = head.layers.len().saturating_sub(1);
        for (i, spec) in head.layers.iter().enumerate() {
            let view = self
                .st
                .tensor(&spec.weight)
                .map_err(|_| EngineError::MissingTensor {
                    name: spec.weight.clone(),
                    layer: i,
                })?;
            let out = match view.shape() {
                [out, _] if i < last && *out > 0 => *out,
                _ if i == last => labels,
                other => {
                    return Err(EngineError::Shape {
                        name: spec.weight.clone(),
                        found: other.to_vec(),
                        expected: vec![0, width],
                    });
                }
            };
            let w = self.load(&spec.weight, &[out, width], i)?;
            let bias = match &spec.bias {
                Some(name) => self.load(name, &[out], i)?,
                None => Tensor::zeros(out, DType::F32, &self.device)?,
            };
            let weight_t = w.t()?.contiguous()?;
            unlock(&w);
            scrub(&w);
            lock(&weight_t);
            layers.push((Linear { weight_t, bias }, spec.activation));
            width = out;
        }
        let named: std::collections::BTreeSet<&str> = head
            .layers
            .iter()
            .flat_map(|l| std::iter::once(l.weight.as_str()).chain(l.bias.as_deref()))
            .collect();
        if let Some(extra) = self
            .names()
            .into_iter()
            .find(|n| !named.contains(n.as_str()))
        {
            return Err(EngineError::ModelFile {
                file: "head.safetensors".into(),
                problem: format!("tensor {extra:?} is not a layer of architecture.head"),
            });
        }
        Ok(layers)
    }

    /// Loads `name` as contiguous F32 of exactly `shape`, finite, locked in RAM.
    fn load(&self, name: &str, shape: &[usize], layer: usize) -> Result<Tensor, EngineError> {
        use candle_core::safetensors::Load;
        let view = self
            .st
            .tensor(name)
            .map_err(|_| EngineError::MissingTensor {
                name: name.to_string(),
                layer,
            })?;
        if view.shape() != shape {
            return Err(EngineError::Shape {
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        let t = match view.dtype() {
            safetensors::Dtype::F32
            | safetensors::Dtype::F64
            | safetensors::Dtype::F16
            | safetensors::Dtype::BF16 => view.load(&self.device)?,
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
            scrub(&t);
            converted
        };
        if !all_finite(&t)? {
            scrub(&t);
            return Err(EngineError::NonFinite {
                name: name.to_string(),
            });
        }
        lock(&t);
        Ok(t)
    }

    fn linear(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        layer: usize,
    ) -> Result<Linear, EngineError> {
        let w = self.load(&format!("{name}.weight"), &[out, inp], layer)?;
        let bias = self.load(&format!("{name}.bias"), &[out], layer)?;
        let weight_t = w.t()?.contiguous()?;
        unlock(&w);
        scrub(&w);
        lock(&weight_t);
        Ok(Linear { weight_t, bias })
    }

    fn norm(
        &self,
        name: &str,
        width: usize,
        eps: f64,
        layer: usize,
    ) -> Result<LayerNorm, EngineError> {
        Ok(LayerNorm {
            weight: self.load(&format!("{name}.weight"), &[width], layer)?,
            bias: self.load(&format!("{name}.bias"), &[width], layer)?,
            eps: eps as f32,
        })
    }
}

impl BertWeights {
    /// Loads every tensor the shape implies; `labels` is the classifier's row count when
    /// the model is a classifier. Each tensor must exist with its shape and finite values.
    pub(super) fn load(
        src: &TensorSource<'_>,
        shape: &BertShape,
        labels: Option<usize>,
    ) -> Result<Self, EngineError> {
        let (h, p) = (shape.hidden_size, src.prefix);
        let eps = shape.layer_norm_eps;
        let word = src.load(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[shape.vocab_size, h],
            0,
        )?;
        let position = src.load(
            &format!("{p}embeddings.position_embeddings.weight"),
            &[shape.max_position_embeddings, h],
            0,
        )?;
        let token_type = src.load(
            &format!("{p}embeddings.token_type_embeddings.weight"),
            &[shape.type_vocab_size, h],
            0,
        )?;
        let embedding_norm = src.norm(&format!("{p}embeddings.LayerNorm"), h, eps, 0)?;
        let mut layers = Vec::with_capacity(shape.num_hidden_layers);
        for i in 0..shape.num_hidden_layers {
            let base = format!("{p}encoder.layer.{i}");
            let q = src.linear(&format!("{base}.attention.self.query"), h, h, i)?;
            let k = src.linear(&format!("{base}.attention.self.key"), h, h, i)?;
            let v = src.linear(&format!("{base}.attention.self.value"), h, h, i)?;
            // The attention scale 1/√d folded into the query projection: (s·q)·kᵀ = s·(q·kᵀ).
            let scale = 1.0 / (shape.head_dim() as f64).sqrt();
            let (q_w, q_b) = ((&q.weight_t * scale)?, (&q.bias * scale)?);
            let qkv = Linear {
                weight_t: Tensor::cat(&[&q_w, &k.weight_t, &v.weight_t], 1)?,
                bias: Tensor::cat(&[&q_b, &k.bias, &v.bias], 0)?,
            };
            scrub(&q_w);
            scrub(&q_b);
            for t in q
                .tensors()
                .into_iter()
                .chain(k.tensors())
                .chain(v.tensors())
            {
                unlock(t);
                scrub(t);
            }
            for t in qkv.tensors() {
                lock(t);
            }
            layers.push(Layer {
                qkv,
                attention_out: src.linear(&format!("{base}.attention.output.dense"), h, h, i)?,
                attention_norm: src.norm(
                    &format!("{base}.attention.output.LayerNorm"),
                    h,
                    eps,
                    i,
                )?,
                intermediate: src.linear(
                    &format!("{base}.intermediate.dense"),
                    h,
                    shape.intermediate_size,
                    i,
                )?,
                output: src.linear(
                    &format!("{base}.output.dense"),
                    shape.intermediate_size,
                    h,
                    i,
                )?,
                output_norm: src.norm(&format!("{base}.output.LayerNorm"), h, eps, i)?,
            });
        }
        let last = shape.num_hidden_layers;
        let pooler = if src.has(&format!("{p}pooler.dense.weight")) {
            Some(src.linear(&format!("{p}pooler.dense"), h, h, last)?)
        } else {
            None
        };
        let classifier = match labels {
            Some(n) => Some(src.linear("classifier", h, n, last)?),
            None => None,
        };
        Ok(Self {
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            pooler,
            classifier,
            mlp_head: Vec::new(),
            shape: shape.clone(),
        })
    }

    /// The encoder's last hidden states, `[rows, seq, hidden]`, for a padded batch: `ids`
    /// and `type_ids` `[rows, seq]` (U32), `mask` `[rows, seq]` (F32, 1 for real tokens).
    pub(super) fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (rows, seq) = ids.dims2()?;
        let words = self.word_embeddings(&ids.flatten_all()?)?.reshape((
            rows,
            seq,
            self.shape.hidden_size,
        ))?;
        self.encode(&words, type_ids, mask, Ops::Fused)
    }

    /// The word-embedding rows of `ids` (U32, any length): `[ids, hidden]`.
    pub(super) fn word_embeddings(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.word.index_select(ids, 0)
    }

    /// The encoder from the word embeddings on: `words` `[rows, seq, hidden]` (the word
    /// vectors that [`word_embeddings`](Self::word_embeddings) looks up, or any point
    /// between two of them), to which the position and token-type embeddings are added.
    pub(super) fn encode(
        &self,
        words: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        ops: Ops,
    ) -> candle_core::Result<Tensor> {
        let (rows, seq) = type_ids.dims2()?;
        let h = self.shape.hidden_size;
        let heads = self.shape.num_attention_heads;
        let head_dim = self.shape.head_dim();
        let types = self.token_type.index_select(&type_ids.flatten_all()?, 0)?;
        let positions = self.position.narrow(0, 0, seq)?;
        let x = words
            .reshape((rows * seq, h))?
            .add(&types)?
            .reshape((rows, seq, h))?
            .broadcast_add(&positions)?
            .reshape((rows * seq, h))?;
        let mut x = self.embedding_norm.forward(&x, ops)?;
        // 0 where attended, the most negative float at padding: softmax gives padding 0.
        let bias =
            ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?.reshape((rows, 1, 1, seq))?;
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward_ops(&x, ops)?
                .reshape((rows, seq, 3, heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let q = qkv.get(0)?;
            let k = qkv.get(1)?;
            let v = qkv.get(2)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probs = softmax(&scores, ops)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((rows * seq, h))?;
            let attended = (layer.attention_out.forward_ops(&context, ops)? + &x)?;
            let x1 = layer.attention_norm.forward(&attended, ops)?;
            let inner = layer.intermediate.forward_ops(&x1, ops)?.gelu_erf()?;
            let out = (layer.output.forward_ops(&inner, ops)? + &x1)?;
            x = layer.output_norm.forward(&out, ops)?;
        }
        x.reshape((rows, seq, h))
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut all = vec![&self.word, &self.position, &self.token_type];
        all.extend(self.embedding_norm.tensors());
        for l in &self.layers {
            all.extend(l.qkv.tensors());
            all.extend(l.attention_out.tensors());
            all.extend(l.attention_norm.tensors());
            all.extend(l.intermediate.tensors());
            all.extend(l.output.tensors());
            all.extend(l.output_norm.tensors());
        }
        for head in [&self.pooler, &self.classifier].into_iter().flatten() {
            all.extend(head.tensors());
        }
        for (layer, _) in &self.mlp_head {
            all.extend(layer.tensors());
        }
        all
    }
}

impl Drop for BertWeights {
    fn drop(&mut self) {
        for t in self.tensors() {
            unlock(t);
            scrub(t);
        }
    }
}

/// Mean of the token vectors of each row over its real tokens: `[rows, seq, h]` and mask
/// `[rows, seq]` → `[rows, h]` (sentence-transformers' mean pooling, which clamps the count
/// at 1e-9).
pub(super) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = mask.sum_keepdim(1)?.clamp(1e-9f32, f32::MAX)?;
    sum.broadcast_div(&count)
}

/// An element-wise activation, as the MLP engine computes it.
pub(super) fn activate(x: Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu_erf(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(&x),
        Activation::None => Ok(x),
    }
}

/// Each row scaled to unit L2 norm (PyTorch's `F.normalize`, eps 1e-12).
pub(super) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

fn all_finite(t: &Tensor) -> Result<bool, EngineError> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let s = cpu.as_slice::<f32>()?;
            Ok(layout
                .contiguous_offsets()
                .and_then(|(start, end)| s.get(start..end))
                .is_some_and(|v| v.iter().all(|x| x.is_finite())))
        }
        // On a device: x − x is NaN exactly for NaN and ±Inf, and a NaN makes the sum NaN.
        #[allow(unreachable_patterns)]
        _ => {
            drop(storage);
            let probe = t.sub(t)?.sum_all()?.to_scalar::<f32>()?;
            Ok(probe == 0.0)
        }
    }
}

/// Runs `f` on a contiguous CPU F32 tensor's values in place (no-op elsewhere).
fn with_cpu_f32(t: &Tensor, f: impl FnOnce(&[f32])) {
    let (storage, layout) = t.storage_and_layout();
    if let Storage::Cpu(cpu) = &*storage
        && let Ok(s) = cpu.as_slice::<f32>()
        && let Some(v) = layout
            .contiguous_offsets()
            .and_then(|(start, end)| s.get(start..end))
    {
        f(v);
    }
}

/// Locks a CPU weight tensor's values in RAM and out of core dumps.
fn lock(t: &Tensor) {
    with_cpu_f32(t, |v| {
        let _ = secure::lock_slice(v);
    });
}

fn unlock(t: &Tensor) {
    with_cpu_f32(t, secure::unlock_slice);
}

/// Overwrites a tensor's storage with zeros, so plaintext weights do not linger in freed
/// memory. (It fails only for an unsupported dtype or device; the memory is freed anyway.)
fn scrub(t: &Tensor) {
    let _ = t.zero_set();
}
