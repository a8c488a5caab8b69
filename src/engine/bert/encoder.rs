//! [`BertEncoder`]: a sealed BERT model ready to serve, the [`TextEncoder`] implementation.

use candle_core::{Device, Tensor};

use super::batch::PaddedBatch;
use super::hf_config::BertShape;
use super::model::{BertWeights, Ops, TensorSource, activate, l2_normalize, mean_pool, softmax};
use super::tokenize::TextTokenizer;
use crate::engine::config::{EncoderConfig, OutputKind, Pooling, TextTask};
use crate::engine::error::EngineError;
use crate::engine::text::{TextEncoder, Tokens};

/// The files of a Hugging Face model directory that a BERT encoder is built from (the
/// entries of its sealed bundle).
#[derive(Clone, Copy)]
pub struct BertFiles<'a> {
    /// `model.safetensors`.
    pub weights: &'a [u8],
    /// `config.json`: the network's shapes.
    pub config: &'a [u8],
    /// `tokenizer.json`.
    pub tokenizer: &'a [u8],
    /// sentence-transformers' `1_Pooling/config.json`, when the model has one: its pooling
    /// mode must be the config's.
    pub pooling: Option<&'a [u8]>,
    /// sentence-transformers' `modules.json`, when the model has one: a `Normalize` module
    /// there must match the config's `normalize`.
    pub modules: Option<&'a [u8]>,
    /// `head.safetensors`: the weights of an `architecture.head` (and only then).
    pub head: Option<&'a [u8]>,
}

/// The bundle entry of an `architecture.head`'s weights.
pub const HEAD_FILE: &str = "head.safetensors";

/// A loaded BERT encoder: tokenizer, weights and the config's pooling, normalization and
/// head.
pub struct BertEncoder {
    pub(super) config: EncoderConfig,
    shape: BertShape,
    pub(super) tokenizer: TextTokenizer,
    pub(super) weights: BertWeights,
    device: Device,
}

impl BertEncoder {
    /// Builds the encoder that `config` describes from a model's files. Checks that the
    /// config fits the network (`max_tokens` within the position embeddings, a classifier
    /// head with one row per label), that every tensor is present with its shape and finite
    /// values, that the tokenizer loads and fits the vocabulary, and that the pooling and
    /// normalization agree with the model's own sentence-transformers files.
    pub fn load(
        config: &EncoderConfig,
        files: BertFiles<'_>,
        device: &Device,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let shape = BertShape::from_json(files.config)?;
        let a = &config.architecture;
        if a.max_tokens > shape.max_position_embeddings {
            return Err(EngineError::ModelFile {
                file: "config.json".into(),
                problem: format!(
                    "max_position_embeddings is {}, below the model config's max_tokens {}",
                    shape.max_position_embeddings, a.max_tokens
                ),
            });
        }
        if let Some(pooling) = files.pooling {
            check_pooling(pooling, a.pooling, shape.hidden_size)?;
        }
        if let Some(modules) = files.modules {
            check_normalize(modules, a.normalize)?;
        }
        let tokenizer = TextTokenizer::from_json(
            files.tokenizer,
            a.max_tokens,
            a.truncation,
            shape.vocab_size,
            shape.type_vocab_size,
        )?;
        // A classifier reads model.safetensors' `classifier` unless it has its own head.
        let labels = match (a.task, &a.head) {
            (TextTask::Classification, None) => Some(config.labels().len()),
            _ => None,
        };
        let source = TensorSource::new(files.weights, device)?;
        let mut weights = BertWeights::load(&source, &shape, labels)?;
        match (&a.head, files.head) {
            (Some(head), Some(bytes)) => {
                let head_source = TensorSource::new(bytes, device)?;
                weights.mlp_head =
                    head_source.mlp_head(head, shape.hidden_size, config.labels().len())?;
            }
            (Some(_), None) => return Err(EngineError::MissingEntry(HEAD_FILE.into())),
            (None, Some(_)) => {
                return Err(EngineError::ModelFile {
                    file: HEAD_FILE.into(),
                    problem: "the model config declares no architecture.head for it".into(),
                });
            }
            (None, None) => {}
        }
        Ok(Self {
            config: config.clone(),
            shape,
            tokenizer,
            weights,
            device: device.clone(),
        })
    }

    /// The network's shapes.
    pub fn shape(&self) -> &BertShape {
        &self.shape
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Last hidden states `[rows, seq, hidden]` and the mask `[rows, seq]` of a batch.
    pub(super) fn hidden(&self, batch: &[&Tokens]) -> Result<(Tensor, Tensor), EngineError> {
        if batch.is_empty() || batch.iter().any(|t| t.is_empty()) {
            return Err(EngineError::Compute(candle_core::Error::Msg(
                "a text batch needs at least one text, each of at least one token".into(),
            )));
        }
        let padded = PaddedBatch::pad(batch);
        let dims = (padded.rows, padded.seq_len);
        if padded.seq_len > self.shape.max_position_embeddings {
            return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                "{} tokens exceed the {} positions",
                padded.seq_len, self.shape.max_position_embeddings
            ))));
        }
        if self.device.is_cpu() {
            // The CPU forward pass on slices (model/cpu.rs), the same math as `forward`.
            let x = self.weights.forward_cpu(
                &padded.ids,
                &padded.type_ids,
                &padded.mask,
                padded.rows,
                padded.seq_len,
            )?;
            let hidden =
                Tensor::from_vec(x, (dims.0, dims.1, self.shape.hidden_size), &self.device)?;
            let mask = Tensor::from_vec(padded.mask, dims, &self.device)?;
            return Ok((hidden, mask));
        }
        let ids = Tensor::from_vec(padded.ids, dims, &self.device)?;
        let type_ids = Tensor::from_vec(padded.type_ids, dims, &self.device)?;
        let mask = Tensor::from_vec(padded.mask, dims, &self.device)?;
        let hidden = self.weights.forward(&ids, &type_ids, &mask)?;
        Ok((hidden, mask))
    }

    /// The pooled (and maybe normalized) vectors `[rows, hidden]`.
    fn pooled(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor, EngineError> {
        let a = &self.config.architecture;
        let pooled = match a.pooling {
            Pooling::Mean => mean_pool(hidden, mask)?,
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        Ok(if a.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        })
    }

    fn to_vec(t: &Tensor) -> Result<Vec<f32>, EngineError> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }
}

impl TextEncoder for BertEncoder {
    fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn embedding_width(&self) -> usize {
        self.shape.hidden_size
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>, EngineError> {
        self.tokenizer.encode(texts, &self.config.id)
    }

    fn embed_tokens(&self, batch: &[&Tokens]) -> Result<Vec<f32>, EngineError> {
        let (hidden, mask) = self.hidden(batch)?;
        Self::to_vec(&self.pooled(&hidden, &mask)?)
    }

    fn infer_tokens(&self, batch: &[&Tokens]) -> Result<Vec<f32>, EngineError> {
        let (hidden, mask) = self.hidden(batch)?;
        Self::to_vec(&self.outputs(&hidden, &mask, Ops::Fused)?)
    }

    fn explain_tokens(
        &self,
        texts: &[Tokens],
        target: Option<usize>,
    ) -> Result<Vec<crate::engine::explain::TextAttribution>, EngineError> {
        super::explain::integrated_gradients(self, texts, target)
    }
}

impl BertEncoder {
    /// The task's output `[rows, width]` from the last hidden states: the pooled embedding,
    /// or the classifier's scores (a `BertForSequenceClassification` head, or an MLP head
    /// from `confidant train --encoder`). `ops` picks the kernels (fused to serve,
    /// differentiable to explain); both compute the same function.
    pub(super) fn outputs(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        ops: Ops,
    ) -> Result<Tensor, EngineError> {
        if !self.weights.mlp_head.is_empty() {
            // An MLP head (`confidant train --encoder`) over the pooled embedding.
            let mut x = self.pooled(hidden, mask)?;
            for (layer, activation) in &self.weights.mlp_head {
                x = activate(layer.forward(&x)?, *activation)?;
            }
            return Ok(match self.config.output_kind() {
                OutputKind::Logits => x,
                OutputKind::Softmax => softmax(&x, ops)?,
            });
        }
        let Some(classifier) = &self.weights.classifier else {
            return self.pooled(hidden, mask);
        };
        // BertForSequenceClassification: the [CLS] vector through the pooler and a tanh.
        // A head without a pooler (one trained on pooled embeddings) reads the pooled
        // vector the config describes.
        let features = match (&self.weights.pooler, self.config.architecture.pooling) {
            (Some(pooler), Pooling::Cls) => {
                let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                pooler.forward(&cls)?.tanh()?
            }
            _ => self.pooled(hidden, mask)?,
        };
        let logits = classifier.forward(&features)?;
        Ok(match self.config.output_kind() {
            OutputKind::Logits => logits,
            OutputKind::Softmax => softmax(&logits, ops)?,
        })
    }
}

/// Checks sentence-transformers' pooling config against the model config.
fn check_pooling(json: &[u8], pooling: Pooling, hidden: usize) -> Result<(), EngineError> {
    let bad = |problem: String| EngineError::ModelFile {
        file: "1_Pooling/config.json".into(),
        problem,
    };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let flag = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    let modes: Vec<&str> = [
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
        ("pooling_mode_weightedmean_tokens", "weightedmean"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ]
    .into_iter()
    .filter(|(k, _)| flag(k))
    .map(|(_, m)| m)
    .collect();
    if modes != [pooling.as_str()] {
        return Err(bad(format!(
            "the model pools by {modes:?} but the config says {:?}",
            pooling.as_str()
        )));
    }
    if let Some(d) = v
        .get("word_embedding_dimension")
        .and_then(serde_json::Value::as_u64)
        && d != hidden as u64
    {
        return Err(bad(format!(
            "word_embedding_dimension {d} is not the hidden size {hidden}"
        )));
    }
    Ok(())
}

/// Checks that sentence-transformers' module list normalizes exactly when the config does.
fn check_normalize(json: &[u8], normalize: bool) -> Result<(), EngineError> {
    let bad = |problem: String| EngineError::ModelFile {
        file: "modules.json".into(),
        problem,
    };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let modules = v
        .as_array()
        .ok_or_else(|| bad("is not a list of modules".into()))?;
    let normalizes = modules.iter().any(|m| {
        m.get("type").and_then(serde_json::Value::as_str)
            == Some("sentence_transformers.models.Normalize")
    });
    if normalizes != normalize {
        return Err(bad(format!(
            "the model {} its embeddings but the config says \"normalize\": {normalize}",
            if normalizes {
                "normalizes"
            } else {
                "does not normalize"
            }
        )));
    }
    Ok(())
}
