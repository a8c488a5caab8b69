//! Batching text: padding a group of tokenized texts to one length, and grouping texts by
//! length under a budget of padded tokens (the dynamic batcher's unit, as in TEI), so that
//! a short text is not padded to the length of a long one.

use crate::engine::text::Tokens;

/// Tokenized texts padded to the longest, row-major `[rows, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    /// Texts.
    pub rows: usize,
    /// Tokens per row after padding: the longest text's.
    pub seq_len: usize,
    /// Token ids; padding positions hold 0.
    pub ids: Vec<u32>,
    /// Token type ids; padding positions hold 0.
    pub type_ids: Vec<u32>,
    /// 1.0 for a real token, 0.0 for padding.
    pub mask: Vec<f32>,
}

impl PaddedBatch {
    /// Pads `texts` (at least one, none empty) to the longest.
    pub fn pad(texts: &[&Tokens]) -> Self {
        let rows = texts.len();
        let seq_len = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut ids = vec![0u32; rows * seq_len];
        let mut type_ids = vec![0u32; rows * seq_len];
        let mut mask = vec![0f32; rows * seq_len];
        for (r, t) in texts.iter().enumerate() {
            let row = r * seq_len..r * seq_len + t.len();
            ids[row.clone()].copy_from_slice(&t.ids);
            type_ids[row.clone()].copy_from_slice(&t.type_ids);
            mask[row].fill(1.0);
        }
        Self {
            rows,
            seq_len,
            ids,
            type_ids,
            mask,
        }
    }

    /// Tokens the forward pass computes, padding included.
    pub fn padded_tokens(&self) -> usize {
        self.rows * self.seq_len
    }

    /// Real tokens.
    pub fn real_tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m > 0.0).count()
    }
}

/// Groups sequences of the given lengths into batches of at most `max_rows` rows whose
/// padded size (rows × longest) is at most `max_padded_tokens`; returns each batch's indices
/// into `lengths`. Sequences are taken longest first, so each batch holds texts of similar
/// length; a sequence longer than the budget on its own forms a batch of one. Every index
/// appears exactly once.
pub fn group_by_length(
    lengths: &[usize],
    max_padded_tokens: usize,
    max_rows: usize,
) -> Vec<Vec<usize>> {
    let max_rows = max_rows.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties keep request order (stable sort).
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for i in order {
        let len = lengths[i].max(1);
        // Sorted longest first, so the current batch's padded length is its first member's.
        let fits = !current.is_empty()
            && current.len() < max_rows
            && (current.len() + 1).saturating_mul(longest) <= max_padded_tokens;
        if !fits && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            longest = len;
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
