//! Tokenization inside the TEE, from the sealed `tokenizer.json`, with the model's
//! truncation policy.
//!
//! The padding and truncation settings stored in `tokenizer.json` are discarded: the model
//! config alone decides the limit (`max_tokens`, special tokens included) and what happens
//! above it, and padding is the batch's business ([`super::batch`]).

use tokenizers::{Encoding, PostProcessor, Token, Tokenizer, TruncationDirection};

use crate::engine::config::Truncation;
use crate::engine::error::EngineError;
use crate::engine::text::Tokens;

/// A tokenizer bound to one model's limits.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    /// Special tokens the post-processor adds to one text (`[CLS]` and `[SEP]`: 2).
    special: usize,
    max_tokens: usize,
    policy: Truncation,
    vocab_size: usize,
    type_vocab_size: usize,
    /// Special tokens the template puts before a text's own tokens (`[CLS]`: 1) and after
    /// them (`[SEP]`: 1).
    template: (usize, usize),
    /// The padding token's id (the stored padding's `pad_id`, else `[PAD]`'s), if any.
    pad_id: Option<u32>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and binds it to the limits. Refuses a tokenizer whose
    /// vocabulary is larger than the model's embedding table, or whose special tokens alone
    /// exceed `max_tokens`.
    pub fn from_json(
        json: &[u8],
        max_tokens: usize,
        policy: Truncation,
        vocab_size: usize,
        type_vocab_size: usize,
    ) -> Result<Self, EngineError> {
        let mut tokenizer =
            Tokenizer::from_bytes(json).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"));
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > vocab_size {
            return Err(EngineError::Tokenizer(format!(
                "its vocabulary has {vocab} tokens but the model embeds only {vocab_size}"
            )));
        }
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if special >= max_tokens {
            return Err(EngineError::Tokenizer(format!(
                "it adds {special} special tokens to every text, leaving no room under \
                 max_tokens {max_tokens}"
            )));
        }
        // Where the template's special tokens go around a text of one token: its special
        // tokens mask marks what the template added.
        let probe = Encoding::from_tokens(vec![Token::new(0, String::new(), (0, 0))], 0);
        let probe = tokenizer
            .post_process(probe, None, true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mask = probe.get_special_tokens_mask();
        let lead = mask.iter().take_while(|m| **m == 1).count();
        let trail = mask.iter().rev().take_while(|m| **m == 1).count();
        if mask.iter().filter(|m| **m == 0).count() != 1 || lead + trail != special {
            return Err(EngineError::Tokenizer(format!(
                "its post-processor does not wrap a text in {special} special tokens \
                 (mask {mask:?} around one token)"
            )));
        }
        let this = Self {
            tokenizer,
            special,
            max_tokens,
            policy,
            vocab_size,
            type_vocab_size,
            template: (lead, trail),
            pad_id,
        };
        // A tokenizer that encodes the empty text as nothing has no [CLS] to pool.
        if this.encode_one(0, "", "probe")?.is_empty() {
            return Err(EngineError::Tokenizer(
                "it encodes the empty text as no tokens (no [CLS]/[SEP] template)".into(),
            ));
        }
        Ok(this)
    }

    /// Most tokens per text.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The truncation policy.
    pub fn policy(&self) -> Truncation {
        self.policy
    }

    /// The padding token's id, if the tokenizer has one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Which of a tokenized text's `len` positions the template added (`[CLS]`, `[SEP]`)
    /// rather than the text.
    pub fn template_positions(&self, len: usize) -> Vec<bool> {
        let (lead, trail) = self.template;
        (0..len).map(|i| i < lead || i + trail >= len).collect()
    }

    /// The vocabulary's string of each id (a WordPiece continuation keeps its `##`).
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.tokenizer
                    .id_to_token(id)
                    .unwrap_or_else(|| format!("[id {id}]"))
            })
            .collect()
    }

    /// Tokenizes `texts`, applying the policy; `model` names the model in errors.
    pub fn encode(&self, texts: &[&str], model: &str) -> Result<Vec<Tokens>, EngineError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.encode_one(i, t, model))
            .collect()
    }

    /// Tokenizes one text as Hugging Face does with truncation: the text's own tokens are
    /// cut to `max_tokens` minus the special tokens, then the template adds those.
    fn encode_one(&self, index: usize, text: &str, model: &str) -> Result<Tokens, EngineError> {
        let fail = |e: tokenizers::Error| EngineError::Tokenize {
            index,
            problem: e.to_string(),
        };
        let mut raw = self.tokenizer.encode(text, false).map_err(fail)?;
        let original_len = raw.get_ids().len() + self.special;
        if original_len > self.max_tokens {
            match self.policy {
                Truncation::Refuse => {
                    return Err(EngineError::TooManyTokens {
                        model: model.to_string(),
                        index,
                        tokens: original_len,
                        limit: self.max_tokens,
                    });
                }
                Truncation::Truncate => {
                    raw.truncate(
                        self.max_tokens - self.special,
                        0,
                        TruncationDirection::Right,
                    );
                    drop(raw.take_overflowing());
                }
            }
        }
        let encoding = self.tokenizer.post_process(raw, None, true).map_err(fail)?;
        let ids = encoding.get_ids().to_vec();
        let type_ids = encoding.get_type_ids().to_vec();
        if ids.len() > self.max_tokens || type_ids.len() != ids.len() {
            return Err(EngineError::Tokenize {
                index,
                problem: format!(
                    "the tokenizer returned {} ids and {} type ids for a limit of {}",
                    ids.len(),
                    type_ids.len(),
                    self.max_tokens
                ),
            });
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EngineError::Tokenize {
                index,
                problem: format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.vocab_size
                ),
            });
        }
        if let Some(t) = type_ids
            .iter()
            .find(|&&t| t as usize >= self.type_vocab_size)
        {
            return Err(EngineError::Tokenize {
                index,
                problem: format!(
                    "token type {t} is outside the {} token types",
                    self.type_vocab_size
                ),
            });
        }
        Ok(Tokens {
            ids,
            type_ids,
            original_len,
        })
    }
}
