//! Integrated gradients of a BERT text model over its input word embeddings.
//!
//! The input of a text of `n` tokens is its `[n, hidden]` matrix of word embeddings; the
//! position and token-type embeddings are added inside the encoder and are the same at
//! every point of the path. The baseline replaces the word embedding of every token the text
//! contributed with that of `[PAD]`, and keeps the template's `[CLS]` and `[SEP]`: the
//! reference input of Captum's BERT tutorials and of most published integrated-gradients
//! work on BERT, a text of the same length with its content removed. (The all-zero vector
//! of the original paper is not a token the model ever saw, and after the embedding layer
//! norm it would stand for "position only"; `[PAD]` is the model's own "nothing here".)
//! The template's tokens thus get attribution 0, and a token's attribution is its
//! embedding's, summed over the embedding dimension.
//!
//! The schedule, tolerance and report are the MLP's ([`crate::engine::explain`]): midpoint
//! rule, 64 points doubling to 8192 until the attributions sum to `f(x) − f(baseline)`
//! within a relative 1e-4. The path points of every text still refining are packed, longest
//! text first, into forward and backward passes of at most [`PASS_TOKENS`] padded
//! positions, so short texts share a pass; padding positions are masked out of attention
//! and pooling, so they neither receive gradient nor change a real token's.
//!
//! The differentiable forward pass uses primitive ops (candle's fused layer norm and
//! softmax record no gradient); before trusting it, the output it gives at the input is
//! checked against the served forward pass, and an explanation whose model disagrees with
//! itself is refused.

use candle_core::{DType, Tensor, Var};

use super::encoder::BertEncoder;
use super::model::Ops;
use crate::engine::config::TextTask;
use crate::engine::error::EngineError;
use crate::engine::explain::{
    Attribution, FIRST_STEPS, MAX_STEPS, TextAttribution, complete_enough,
};
use crate::engine::text::{DEFAULT_MAX_PADDED_TOKENS, DEFAULT_MAX_ROWS, TextEncoder, Tokens};

/// The most padded token positions in one forward and backward pass (about 0.5 GB of
/// activations for all-MiniLM-L6-v2 at 128 tokens).
pub(super) const PASS_TOKENS: usize = 1024;

/// How far the differentiable forward may stray from the served one at the input
/// (relative, of at least 1): rounding differences between kernels are far below it.
const SELF_CHECK: f64 = 1e-3;

/// Explains each text (see the module docs).
pub(super) fn integrated_gradients(
    enc: &BertEncoder,
    texts: &[Tokens],
    target: Option<usize>,
) -> Result<Vec<TextAttribution>, EngineError> {
    integrated_gradients_in(enc, texts, target, PASS_TOKENS)
}

/// One text's path: its baseline word embeddings (row-major `[n, hidden]`) and the way to
/// its input.
pub(super) struct TextPath {
    n: usize,
    type_ids: Vec<u32>,
    baseline: Vec<f32>,
    /// `input − baseline`, exact in f64.
    diff: Vec<f64>,
    target: usize,
}

impl TextPath {
    /// The path of `tokens` from its baseline: each position's word replaced by `pad`,
    /// except where `kept` (the template's tokens).
    fn new(
        enc: &BertEncoder,
        tokens: &Tokens,
        pad: u32,
        kept: &[bool],
        target: usize,
    ) -> Result<Self, EngineError> {
        let baseline_ids: Vec<u32> = tokens
            .ids
            .iter()
            .zip(kept)
            .map(|(&id, &kept)| if kept { id } else { pad })
            .collect();
        let input = word_rows(enc, &tokens.ids)?;
        let baseline = word_rows(enc, &baseline_ids)?;
        let diff = input
            .iter()
            .zip(&baseline)
            .map(|(x, b)| f64::from(*x) - f64::from(*b))
            .collect();
        Ok(Self {
            n: tokens.len(),
            type_ids: tokens.type_ids.clone(),
            baseline,
            diff,
            target,
        })
    }

    /// The path of `tokens` with the encoder's baseline, for tests.
    #[cfg(test)]
    pub(super) fn for_test(enc: &BertEncoder, tokens: &Tokens, target: usize) -> Self {
        let pad = enc.tokenizer.pad_id().unwrap_or(0);
        let kept = enc.tokenizer.template_positions(tokens.len());
        match Self::new(enc, tokens, pad, &kept, target) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Tokens.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// The word embeddings at `alpha` along the path (exactly the input at 1, the
    /// baseline at 0).
    fn point(&self, alpha: f64, out: &mut Vec<f32>) {
        out.extend(
            self.baseline
                .iter()
                .zip(&self.diff)
                .map(|(b, d)| (f64::from(*b) + alpha * d) as f32),
        );
    }
}

/// What one pass computed: each row's outputs and, when asked, the gradient of each row's
/// target output with respect to its word embeddings, `[rows, seq, hidden]` row-major.
pub(super) struct Pass {
    pub(super) outputs: Vec<f32>,
    pub(super) gradients: Option<Vec<f32>>,
    pub(super) seq: usize,
}

/// [`integrated_gradients`] with passes of at most `pass_tokens` padded positions.
pub(super) fn integrated_gradients_in(
    enc: &BertEncoder,
    texts: &[Tokens],
    target: Option<usize>,
    pass_tokens: usize,
) -> Result<Vec<TextAttribution>, EngineError> {
    let model = enc.config.id.as_str();
    let width = enc.output_width();
    match (enc.config.architecture.task, target) {
        (_, Some(t)) if t >= width => {
            return Err(EngineError::ExplainTarget {
                model: model.to_string(),
                problem: format!("target {t} does not exist: the model has {width} outputs"),
            });
        }
        (TextTask::Embedding, None) => {
            return Err(EngineError::ExplainTarget {
                model: model.to_string(),
                problem: format!(
                    "an embedding model has no predicted class to explain by default: name \
                     the embedding dimension to explain as the target (0 to {})",
                    width.saturating_sub(1)
                ),
            });
        }
        _ => {}
    }
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(pad) = enc.tokenizer.pad_id() else {
        return Err(EngineError::NotExplainable {
            model: model.to_string(),
            reason: "its tokenizer has no [PAD] token to build the baseline from".into(),
        });
    };
    let positions = enc.shape().max_position_embeddings;
    if let Some(t) = texts.iter().find(|t| t.is_empty() || t.len() > positions) {
        return Err(EngineError::Compute(candle_core::Error::Msg(format!(
            "a text of {} tokens cannot be explained (1 to {positions})",
            t.len()
        ))));
    }
    // What the model serves at each input: the default target, and the reference the
    // differentiable forward must reproduce.
    let served = enc.infer_tokenized(texts, DEFAULT_MAX_PADDED_TOKENS, DEFAULT_MAX_ROWS)?;
    let served_rows = served.to_rows();
    let mut paths = Vec::with_capacity(texts.len());
    let mut special = Vec::with_capacity(texts.len());
    for (tokens, scores) in texts.iter().zip(&served_rows) {
        let target = match target {
            Some(t) => t,
            None => crate::engine::argmax_rows(scores, width)
                .first()
                .copied()
                .unwrap_or(0),
        };
        let template = enc.tokenizer.template_positions(tokens.len());
        paths.push(TextPath::new(enc, tokens, pad, &template, target)?);
        special.push(template);
    }
    let h = enc.shape().hidden_size;
    // Longest first, so that a pass's texts have similar lengths.
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(paths[i].n));

    // f(x) and f(baseline) with the differentiable forward, checked against the served f(x).
    let ends: Vec<(usize, f64)> = order.iter().flat_map(|&i| [(i, 1.0), (i, 0.0)]).collect();
    let mut fx = vec![0f64; paths.len()];
    let mut fb = vec![0f64; paths.len()];
    for range in packed(&paths, &ends, pass_tokens) {
        let items = &ends[range];
        let pass = run_pass(enc, &paths, items, false)?;
        for ((i, alpha), row) in items.iter().zip(pass.outputs.chunks_exact(width)) {
            let v = f64::from(row[paths[*i].target]);
            if *alpha == 1.0 {
                let want = served_rows[*i]
                    .get(paths[*i].target)
                    .copied()
                    .unwrap_or(0.0);
                if (v - f64::from(want)).abs() > SELF_CHECK * f64::from(want).abs().max(1.0) {
                    return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                        "model {model}: the differentiable forward pass gives {v} where the \
                         served one gives {want}; the explanation would not explain the model"
                    ))));
                }
                fx[*i] = v;
            } else {
                fb[*i] = v;
            }
        }
    }

    let mut done: Vec<Option<Attribution>> = vec![None; paths.len()];
    let mut steps = FIRST_STEPS;
    while done.iter().any(Option::is_none) {
        let pending: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| done[i].is_none())
            .collect();
        let items: Vec<(usize, f64)> = pending
            .iter()
            .flat_map(|&i| (0..steps).map(move |k| (i, (k as f64 + 0.5) / steps as f64)))
            .collect();
        let mut sums: Vec<Vec<f64>> = paths.iter().map(|p| vec![0f64; p.n]).collect();
        for range in packed(&paths, &items, pass_tokens) {
            let items = &items[range];
            let pass = run_pass(enc, &paths, items, true)?;
            let Some(grads) = pass.gradients else {
                return Err(EngineError::Compute(candle_core::Error::Msg(
                    "a pass returned no gradient".into(),
                )));
            };
            for (r, (i, _)) in items.iter().enumerate() {
                let path = &paths[*i];
                let start = r * pass.seq * h;
                let Some(row) = grads.get(start..start + path.n * h) else {
                    return Err(EngineError::Compute(candle_core::Error::Msg(
                        "a pass returned too few gradients".into(),
                    )));
                };
                for ((sum, g), d) in sums[*i]
                    .iter_mut()
                    .zip(row.chunks_exact(h))
                    .zip(path.diff.chunks_exact(h))
                {
                    *sum += g.iter().zip(d).map(|(g, d)| f64::from(*g) * d).sum::<f64>();
                }
            }
        }
        for &i in &pending {
            let attributions: Vec<f64> = sums[i].iter().map(|s| s / steps as f64).collect();
            let want = fx[i] - fb[i];
            let error = (attributions.iter().sum::<f64>() - want).abs();
            if complete_enough(error, want) || steps >= MAX_STEPS {
                done[i] = Some(Attribution {
                    attributions: attributions.iter().map(|v| *v as f32).collect(),
                    target: paths[i].target,
                    output_at_input: fx[i] as f32,
                    output_at_baseline: fb[i] as f32,
                    completeness_error: error as f32,
                    steps,
                });
            }
        }
        steps *= 2;
    }
    let baseline_token = enc
        .tokenizer
        .token_strings(&[pad])
        .pop()
        .unwrap_or_default();
    texts
        .iter()
        .zip(done)
        .zip(special)
        .map(|((tokens, a), special)| {
            // The loop above ends only when every text is done.
            let attribution = a.ok_or_else(|| {
                EngineError::Compute(candle_core::Error::Msg(
                    "a text was left unexplained".into(),
                ))
            })?;
            Ok(TextAttribution {
                attribution,
                tokens: enc.tokenizer.token_strings(&tokens.ids),
                special,
                baseline_token: baseline_token.clone(),
            })
        })
        .collect()
}

/// The word embeddings of `ids`, row-major `[ids, hidden]`.
fn word_rows(enc: &BertEncoder, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
    let ids = Tensor::from_slice(ids, ids.len(), enc.device())?;
    Ok(enc
        .weights
        .word_embeddings(&ids)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Splits `items` (path points `(text, alpha)`, grouped by text, longest text first) into
/// runs of at most `budget` padded positions each (a single point longer than the budget
/// forms a pass alone).
pub(super) fn packed(
    paths: &[TextPath],
    items: &[(usize, f64)],
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (k, (i, _)) in items.iter().enumerate() {
        let n = paths[*i].n;
        let rows = k - start;
        if rows > 0 && (rows + 1) * longest.max(n) > budget {
            out.push(start..k);
            start = k;
            longest = 0;
        }
        longest = longest.max(n);
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

/// One forward (and, with `gradients`, backward) pass over the path points `items`, padded
/// to the longest.
pub(super) fn run_pass(
    enc: &BertEncoder,
    paths: &[TextPath],
    items: &[(usize, f64)],
    gradients: bool,
) -> Result<Pass, EngineError> {
    let h = enc.shape().hidden_size;
    let width = enc.output_width();
    let rows = items.len();
    let seq = items.iter().map(|(i, _)| paths[*i].n).max().unwrap_or(0);
    let mut words = Vec::with_capacity(rows * seq * h);
    let mut type_ids = vec![0u32; rows * seq];
    let mut mask = vec![0f32; rows * seq];
    let mut pick = vec![0f32; rows * width];
    for (r, (i, alpha)) in items.iter().enumerate() {
        let path = &paths[*i];
        path.point(*alpha, &mut words);
        words.resize((r + 1) * seq * h, 0.0);
        type_ids[r * seq..][..path.n].copy_from_slice(&path.type_ids);
        mask[r * seq..][..path.n].fill(1.0);
        pick[r * width + path.target] = 1.0;
    }
    let device = enc.device();
    let words = Tensor::from_vec(words, (rows, seq, h), device)?;
    let type_ids = Tensor::from_vec(type_ids, (rows, seq), device)?;
    let mask = Tensor::from_vec(mask, (rows, seq), device)?;
    if !gradients {
        let hidden = enc
            .weights
            .encode(&words, &type_ids, &mask, Ops::Differentiable)?;
        let out = enc.outputs(&hidden, &mask, Ops::Differentiable)?;
        return Ok(Pass {
            outputs: out.flatten_all()?.to_vec1::<f32>()?,
            gradients: None,
            seq,
        });
    }
    let var = Var::from_tensor(&words)?;
    let hidden = enc
        .weights
        .encode(var.as_tensor(), &type_ids, &mask, Ops::Differentiable)?;
    let out = enc.outputs(&hidden, &mask, Ops::Differentiable)?;
    // Each row's own target: the sum of the picked outputs has, for each row, the gradient
    // of that row's target output (rows do not interact).
    let pick = Tensor::from_vec(pick, (rows, width), device)?;
    let grads = out.mul(&pick)?.sum_all()?.backward()?;
    let grad = grads.get(var.as_tensor()).ok_or_else(|| {
        EngineError::Compute(candle_core::Error::Msg(
            "no gradient reached the word embeddings".into(),
        ))
    })?;
    Ok(Pass {
        outputs: out.flatten_all()?.to_vec1::<f32>()?,
        gradients: Some(grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        seq,
    })
}
