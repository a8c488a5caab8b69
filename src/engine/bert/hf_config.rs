//! The Hugging Face `config.json` of a BERT model: the shapes of the network.
//!
//! Only the fields the forward pass depends on are read; each is bounded, so that a crafted
//! config cannot ask for an absurd allocation before the weights are even compared with it.
//! Settings this engine does not implement (another activation, relative positions) are
//! refused by name rather than silently computed differently.

use serde::Deserialize;

use crate::engine::error::EngineError;

/// The largest vocabulary accepted.
pub const MAX_VOCAB: usize = 1 << 20;
/// The widest hidden size accepted.
pub const MAX_HIDDEN: usize = 1 << 14;
/// The most layers accepted.
pub const MAX_LAYERS: usize = 256;
/// The most positions accepted.
pub const MAX_POSITIONS: usize = 1 << 16;

/// The shapes and constants of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertShape {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary size.
    pub type_vocab_size: usize,
    /// The epsilon of every layer norm.
    pub layer_norm_eps: f64,
}

#[derive(Deserialize)]
struct Raw {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    is_decoder: Option<bool>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertShape {
    /// Parses and checks `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EngineError> {
        let bad = |problem: String| EngineError::ModelFile {
            file: "config.json".into(),
            problem,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(t) = &raw.model_type
            && t != "bert"
        {
            // RoBERTa-family models number positions from pad_token_id + 1, which this
            // forward pass does not do.
            return Err(bad(format!(
                "model_type {t:?} is not supported (only \"bert\")"
            )));
        }
        // Hugging Face's "gelu" is the exact erf form, as is PyTorch's nn.GELU().
        if raw.hidden_act != "gelu" {
            return Err(bad(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                raw.hidden_act
            )));
        }
        if let Some(p) = &raw.position_embedding_type
            && p != "absolute"
        {
            return Err(bad(format!(
                "position_embedding_type {p:?} is not supported (only \"absolute\")"
            )));
        }
        if raw.is_decoder == Some(true) {
            return Err(bad("is_decoder is true; only encoders are served".into()));
        }
        let ranges = [
            ("vocab_size", raw.vocab_size, MAX_VOCAB),
            ("hidden_size", raw.hidden_size, MAX_HIDDEN),
            ("num_hidden_layers", raw.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", raw.num_attention_heads, MAX_HIDDEN),
            ("intermediate_size", raw.intermediate_size, 4 * MAX_HIDDEN),
            (
                "max_position_embeddings",
                raw.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("type_vocab_size", raw.type_vocab_size, 1 << 10),
        ];
        for (name, value, max) in ranges {
            if value == 0 || value > max {
                return Err(bad(format!("{name} is {value}, outside 1..={max}")));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0 && raw.layer_norm_eps < 1.0)
        {
            return Err(bad(format!(
                "layer_norm_eps {} must be in (0, 1)",
                raw.layer_norm_eps
            )));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
