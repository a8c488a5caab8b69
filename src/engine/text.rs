//! Text models: the trait a transformer encoder implements, whatever its architecture, so
//! that the serving layers (batcher, guards, audit, metrics) can run any of them.
//!
//! A [`TextEncoder`] tokenizes inside the TEE (from its sealed tokenizer), applies its
//! truncation policy, and runs padded, length-grouped batches. [`crate::engine::bert`] is
//! the first implementation.

use super::config::{EncoderConfig, TextTask};
use super::error::EngineError;

mod batcher;
#[cfg(test)]
mod tests;

pub use batcher::TextBatcher;

/// Default budget of padded tokens per forward pass in [`TextEncoder::embed`] and
/// [`TextEncoder::infer`]: 32 texts of 256 tokens.
pub const DEFAULT_MAX_PADDED_TOKENS: usize = 32 * 256;
/// Default most texts per forward pass.
pub const DEFAULT_MAX_ROWS: usize = 64;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, one per token.
    pub type_ids: Vec<u32>,
    /// Tokens the text had before truncation (equal to `ids.len()` unless truncated).
    pub original_len: usize,
}

impl Tokens {
    /// Tokens after truncation.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the text was cut to fit.
    pub fn truncated(&self) -> bool {
        self.original_len > self.ids.len()
    }
}

/// Row-major `[rows, width]` outputs, one row per text, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOutput {
    /// The values.
    pub values: Vec<f32>,
    /// Texts.
    pub rows: usize,
    /// Values per text.
    pub width: usize,
    /// Tokens per text after truncation (for quotas and metrics).
    pub tokens: Vec<usize>,
    /// Tokens the forward passes computed, padding included.
    pub padded_tokens: usize,
}

impl TextOutput {
    /// The rows as vectors.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        if self.width == 0 {
            return vec![Vec::new(); self.rows];
        }
        self.values
            .chunks_exact(self.width)
            .map(<[f32]>::to_vec)
            .collect()
    }
}

/// What a transformer text model does, for whoever serves it.
pub trait TextEncoder: Send + Sync {
    /// The signed config.
    fn config(&self) -> &EncoderConfig;

    /// Width of an embedding (the encoder's hidden size).
    fn embedding_width(&self) -> usize;

    /// The device the encoder runs on.
    fn device(&self) -> &candle_core::Device;

    /// Width of the task's output: the embedding width, or one score per label.
    fn output_width(&self) -> usize {
        match self.config().architecture.task {
            TextTask::Embedding => self.embedding_width(),
            TextTask::Classification => self.config().labels().len(),
        }
    }

    /// Tokenizes texts with the model's tokenizer and truncation policy (a text over the
    /// limit under `refuse` fails the call, naming it).
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>, EngineError>;

    /// Pooled (and, if the config says so, normalized) embeddings of one padded batch of
    /// tokenized texts, row-major `[texts, embedding_width]`.
    fn embed_tokens(&self, batch: &[&Tokens]) -> Result<Vec<f32>, EngineError>;

    /// The task's output for one padded batch: embeddings, or a classifier's scores
    /// (`[texts, labels]`, logits or softmax as configured).
    fn infer_tokens(&self, batch: &[&Tokens]) -> Result<Vec<f32>, EngineError>;

    /// The task's output for `texts`, batched by length under the default budget.
    fn infer(&self, texts: &[&str]) -> Result<TextOutput, EngineError> {
        let tokens = self.tokenize(texts)?;
        self.infer_tokenized(&tokens, DEFAULT_MAX_PADDED_TOKENS, DEFAULT_MAX_ROWS)
    }

    /// The task's output for texts already tokenized (by [`tokenize`](Self::tokenize)),
    /// grouped by length into forward passes of at most `max_padded_tokens` padded tokens
    /// and `max_rows` texts, in the order given.
    fn infer_tokenized(
        &self,
        tokens: &[Tokens],
        max_padded_tokens: usize,
        max_rows: usize,
    ) -> Result<TextOutput, EngineError> {
        run_grouped(
            tokens,
            self.output_width(),
            max_padded_tokens,
            max_rows,
            |b| self.infer_tokens(b),
        )
    }

    /// Embeddings of `texts` (for a classifier, the vectors its head reads), batched by
    /// length under the default budget, in request order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
        let tokens = self.tokenize(texts)?;
        Ok(run_grouped(
            &tokens,
            self.embedding_width(),
            DEFAULT_MAX_PADDED_TOKENS,
            DEFAULT_MAX_ROWS,
            |b| self.embed_tokens(b),
        )?
        .to_rows())
    }

    /// Integrated gradients over the input word embeddings of tokenized texts (one
    /// explanation per text, in order), for output `target` (a classifier's default: each
    /// text's predicted label; an embedding model needs one). The default refuses: an
    /// encoder that cannot differentiate its forward pass explains nothing.
    fn explain_tokens(
        &self,
        texts: &[Tokens],
        target: Option<usize>,
    ) -> Result<Vec<super::explain::TextAttribution>, EngineError> {
        let _ = (texts, target);
        Err(EngineError::NotExplainable {
            model: self.config().id.clone(),
            reason: "its encoder does not compute gradients".into(),
        })
    }

    /// A classifier's scores for `texts`; refused for embedding models.
    fn classify(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
        let config = self.config();
        if config.architecture.task != TextTask::Classification {
            return Err(EngineError::WrongTask {
                model: config.id.clone(),
                task: config.architecture.task.as_str(),
                operation: "classify",
                needed: TextTask::Classification.as_str(),
            });
        }
        Ok(self.infer(texts)?.to_rows())
    }
}

/// Runs `forward` over length-grouped batches of `tokens` and puts the rows back in order.
fn run_grouped(
    tokens: &[Tokens],
    width: usize,
    max_padded_tokens: usize,
    max_rows: usize,
    forward: impl Fn(&[&Tokens]) -> Result<Vec<f32>, EngineError>,
) -> Result<TextOutput, EngineError> {
    let lengths: Vec<usize> = tokens.iter().map(Tokens::len).collect();
    let groups = super::bert::group_by_length(&lengths, max_padded_tokens, max_rows);
    let mut values = vec![0f32; tokens.len() * width];
    let mut padded_tokens = 0;
    for group in groups {
        let batch: Vec<&Tokens> = group.iter().map(|&i| &tokens[i]).collect();
        padded_tokens += batch.len() * batch.iter().map(|t| t.len()).max().unwrap_or(0);
        let out = forward(&batch)?;
        if out.len() != group.len() * width {
            return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                "a batch of {} texts gave {} values, expected {}",
                group.len(),
                out.len(),
                group.len() * width
            ))));
        }
        for (row, &i) in out.chunks_exact(width.max(1)).zip(&group) {
            values[i * width..(i + 1) * width].copy_from_slice(row);
        }
    }
    Ok(TextOutput {
        values,
        rows: tokens.len(),
        width,
        tokens: lengths,
        padded_tokens,
    })
}
