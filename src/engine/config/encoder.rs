//! The config of a transformer text encoder (`architecture.kind = "bert"`).
//!
//! ```json
//! {"id": "minilm", "version": "1.0.0",
//!  "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean",
//!                   "normalize": true, "max_tokens": 256, "truncation": "truncate"}}
//! ```
//!
//! A classifier says `"task": "classification"` and lists its `labels` (at the top level, as
//! an MLP does, or inside `architecture`; not both). The network's shapes come from the
//! Hugging Face `config.json` sealed beside the weights; what this config says about them
//! (`max_tokens` at most `max_position_embeddings`, one label per classifier row) is checked
//! when the weights are loaded, at seal time and at serve time.

use serde::{Deserialize, Serialize};

use super::{
    ArchitectureKind, DpGuarantee, LayerSpec, MAX_ID_LEN, MAX_LAYERS, OutputKind, validate_id,
};
use crate::engine::error::ConfigError;
use crate::privacy::policy::PrivacyPolicy;

/// Most tokens per text a config may allow (special tokens included).
pub const MAX_TOKENS_LIMIT: usize = 8192;
/// Fewest tokens per text a config may allow: `[CLS]` and `[SEP]` alone take two.
pub const MIN_TOKENS_LIMIT: usize = 2;
/// Most classifier labels.
pub const MAX_LABELS: usize = 1 << 16;
/// The Open Inference Protocol input tensor name of text models when the config names none.
pub const DEFAULT_TEXT_INPUT_TENSOR: &str = "text";
/// The Open Inference Protocol output tensor name of embedding models when the config names
/// none.
pub const DEFAULT_EMBEDDING_OUTPUT_TENSOR: &str = "embedding";

/// A text encoder as its publisher describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// The model id: `[A-Za-z0-9._-]`, 1 to 128 bytes.
    pub id: String,
    /// The model version (free text, for example semver).
    pub version: String,
    /// A human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The network and what its output becomes.
    pub architecture: EncoderArchitecture,
    /// Class labels of a classifier, one per output (or in `architecture.labels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The text input tensor's name in the Open Inference Protocol [default: `text`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tensor_name: Option<String>,
    /// The output tensor's name in the Open Inference Protocol [default: `embedding` for
    /// embedding models, `output__0` for classifiers].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tensor_name: Option<String>,
    /// The purposes this model may be used for; when not empty, every request must declare
    /// one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// The differential-privacy guarantee of training (of a classifier head), where there
    /// is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_training: Option<DpGuarantee>,
    /// The output privacy policy of a classifier, mandatory when set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyPolicy>,
}

/// The encoder network and its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderArchitecture {
    /// Always `bert` here.
    pub kind: ArchitectureKind,
    /// What the model is for.
    pub task: TextTask,
    /// How token vectors become one vector per text.
    pub pooling: Pooling,
    /// Whether the pooled vector is scaled to unit L2 norm (sentence-transformers'
    /// `Normalize` module) [default: false].
    #[serde(default)]
    pub normalize: bool,
    /// Most tokens per text, `[CLS]` and `[SEP]` included; at most the model's
    /// `max_position_embeddings`.
    pub max_tokens: usize,
    /// What happens to a longer text.
    pub truncation: Truncation,
    /// A classifier's output transform [default: `logits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputKind>,
    /// A classifier's labels, when not given at the top level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// A classifier head other than `BertForSequenceClassification`'s: an MLP over the
    /// pooled (and, with `normalize`, normalized) embedding, with its weights in the bundle
    /// entry `head.safetensors`, as `confidant train --encoder` writes it. Absent: the
    /// `classifier` (and `pooler`) tensors of `model.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<TextHead>,
}

/// A classifier head over the pooled embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextHead {
    /// The kind of head.
    pub kind: HeadKind,
    /// Its dense layers, input first, named as in `head.safetensors` (PyTorch `nn.Sequential`
    /// names such as `0.weight`, `2.weight`). The first reads the embedding; the last has
    /// one output per label.
    pub layers: Vec<LayerSpec>,
}

/// The kinds of classifier head over a pooled embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Dense layers with element-wise activations (a linear head is one layer).
    Mlp,
}

/// What a text model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextTask {
    /// One vector per text.
    Embedding,
    /// One score per label per text, from a `classifier.weight`/`classifier.bias` head.
    Classification,
}

/// How the encoder's token vectors become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The `[CLS]` token's vector.
    Cls,
    /// The mean over the text's tokens (padding excluded), special tokens included, as
    /// sentence-transformers computes it.
    Mean,
}

/// What happens to a text with more tokens than `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    /// Keep the first `max_tokens - 1` tokens and the final `[SEP]`.
    Truncate,
    /// Refuse the request, naming the text, its token count and the limit.
    Refuse,
}

impl EncoderConfig {
    /// Parses and validates a config from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The classifier's labels (empty for an embedding model).
    pub fn labels(&self) -> &[String] {
        if self.labels.is_empty() {
            &self.architecture.labels
        } else {
            &self.labels
        }
    }

    /// The classifier's output transform (`logits` unless the config says otherwise).
    pub fn output_kind(&self) -> OutputKind {
        self.architecture.output.unwrap_or(OutputKind::Logits)
    }

    /// The text input tensor's Open Inference Protocol name.
    pub fn input_tensor_name(&self) -> &str {
        self.input_tensor_name
            .as_deref()
            .unwrap_or(DEFAULT_TEXT_INPUT_TENSOR)
    }

    /// The output tensor's Open Inference Protocol name.
    pub fn output_tensor_name(&self) -> &str {
        match (&self.output_tensor_name, self.architecture.task) {
            (Some(name), _) => name,
            (None, TextTask::Embedding) => DEFAULT_EMBEDDING_OUTPUT_TENSOR,
            (None, TextTask::Classification) => super::DEFAULT_OUTPUT_TENSOR,
        }
    }

    /// Checks everything that can be checked without the weights.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        validate_id(&self.id)?;
        if self.version.is_empty() || self.version.len() > MAX_ID_LEN {
            return bad(format!("version must be 1 to {MAX_ID_LEN} bytes"));
        }
        let a = &self.architecture;
        if a.kind != ArchitectureKind::Bert {
            return bad(format!(
                "architecture.kind {:?} is not a text encoder (expected \"bert\")",
                a.kind.as_str()
            ));
        }
        if !(MIN_TOKENS_LIMIT..=MAX_TOKENS_LIMIT).contains(&a.max_tokens) {
            return bad(format!(
                "architecture.max_tokens must be {MIN_TOKENS_LIMIT} to {MAX_TOKENS_LIMIT}, found {}",
                a.max_tokens
            ));
        }
        if !self.labels.is_empty() && !a.labels.is_empty() {
            return bad(
                "labels are given both at the top level and in architecture; \
                        give them once"
                    .into(),
            );
        }
        let labels = self.labels();
        match a.task {
            TextTask::Embedding => {
                if a.head.is_some() {
                    return bad("architecture.head applies to classifiers only".into());
                }
                if !labels.is_empty() {
                    return bad("an embedding model has no labels (task is \"embedding\")".into());
                }
                if a.output.is_some() {
                    return bad("architecture.output applies to classifiers only".into());
                }
                if self.privacy.is_some() {
                    return bad("an output privacy policy applies to classifiers only".into());
                }
            }
            TextTask::Classification => {
                if labels.is_empty() || labels.len() > MAX_LABELS {
                    return bad(format!(
                        "a classifier needs 1 to {MAX_LABELS} labels, found {}",
                        labels.len()
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                for l in labels {
                    if l.is_empty() || l.len() > MAX_ID_LEN {
                        return bad(format!("label {l:?} must be 1 to {MAX_ID_LEN} bytes"));
                    }
                    if !seen.insert(l.as_str()) {
                        return bad(format!("label {l:?} appears twice"));
                    }
                }
                if let Some(head) = &a.head {
                    head.validate()?;
                }
            }
        }
        for (what, name) in [
            ("input_tensor_name", &self.input_tensor_name),
            ("output_tensor_name", &self.output_tensor_name),
        ] {
            if let Some(name) = name
                && validate_id(name).is_err()
            {
                return bad(format!(
                    "{what} {name:?} must be 1 to {MAX_ID_LEN} characters of [A-Za-z0-9._-], \
                     not starting with '.'"
                ));
            }
        }
        if self.input_tensor_name() == self.output_tensor_name() {
            return bad(format!(
                "the input and output tensors are both named {:?}",
                self.input_tensor_name()
            ));
        }
        super::validate_purposes(&self.purposes)?;
        if let Some(dp) = &self.dp_training {
            dp.validate()?;
        }
        if let Some(privacy) = &self.privacy {
            privacy
                .validate(self.output_kind() == OutputKind::Softmax)
                .map_err(|e| ConfigError::Invalid(format!("privacy: {e}")))?;
        }
        Ok(())
    }
}

impl TextHead {
    /// Checks the layer list: 1 to [`MAX_LAYERS`] layers with distinct, non-empty tensor
    /// names. Shapes are checked against `head.safetensors` when the model is loaded.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return bad(format!(
                "architecture.head needs 1 to {MAX_LAYERS} layers, found {}",
                self.layers.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for name in std::iter::once(&layer.weight).chain(layer.bias.as_ref()) {
                if name.is_empty() || name.len() > MAX_ID_LEN {
                    return bad(format!(
                        "architecture.head layer {i}: tensor name {name:?} must be 1 to \
                         {MAX_ID_LEN} bytes"
                    ));
                }
                if !names.insert(name.as_str()) {
                    return bad(format!(
                        "architecture.head layer {i}: tensor {name:?} is named twice"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Pooling {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
        }
    }
}

impl TextTask {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedding => "embedding",
            Self::Classification => "classification",
        }
    }
}
