//! The encoder's forward pass on the CPU, on plain slices instead of candle ops: the same
//! math as [`BertWeights::encode`] with [`Ops::Fused`](super::Ops::Fused), which tests
//! compare it with, in far fewer passes over memory and allocations.
//!
//! Four buffers per batch (hidden states, the fused query-key-value projection, the
//! attention context, the feed-forward activations) are reused by every layer; each matmul
//! writes its product where the next step reads it, the residual connections add in place
//! (the matmul accumulates into the hidden states), and the biases, GELU, attention mask,
//! softmax and layer norms are fused element-wise passes (`confidant_bert_kernels`). The
//! attention runs per text and head on strided views of the projection, with no transposed
//! copies, texts in parallel; the big matmuls and the element-wise passes use every thread
//! of rayon's pool.

use candle_core::{Error, Layout, Result, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use super::{BertWeights, Layer};
use confidant_bert_kernels::{Mat, bias_gelu, bias_layer_norm, masked_softmax, matmul};

/// A kernel's result, its error as candle's.
fn kernel<T>(r: confidant_bert_kernels::Result<T>) -> Result<T> {
    r.map_err(Error::wrap)
}

/// The rows of one parallel task of the element-wise passes.
const ROWS_PER_TASK: usize = 32;

/// A contiguous CPU F32 tensor's values, read-locked while this lives.
struct Held<'a> {
    storage: StorageRef<'a>,
    layout: &'a Layout,
}

impl<'a> Held<'a> {
    fn new(t: &'a Tensor) -> Self {
        let (storage, layout) = t.storage_and_layout();
        Self { storage, layout }
    }

    /// The values, which must be exactly `len`.
    fn sized(&self, len: usize) -> Result<&[f32]> {
        let v = self.values()?;
        if v.len() != len {
            return Err(Error::Msg(format!(
                "a weight tensor of {} values where {len} are needed",
                v.len()
            )));
        }
        Ok(v)
    }

    fn values(&self) -> Result<&[f32]> {
        let Some((start, end)) = self.layout.contiguous_offsets() else {
            return Err(Error::Msg("a weight tensor is not contiguous".into()));
        };
        match &*self.storage {
            Storage::Cpu(cpu) => cpu
                .as_slice::<f32>()?
                .get(start..end)
                .ok_or_else(|| Error::Msg("a weight tensor exceeds its storage".into())),
            #[allow(unreachable_patterns)]
            _ => Err(Error::Msg("a weight tensor is not on the CPU".into())),
        }
    }
}

/// One layer's weights as slices.
struct LayerView<'a> {
    qkv_w: &'a [f32],
    qkv_b: &'a [f32],
    out_w: &'a [f32],
    out_b: &'a [f32],
    norm1_w: &'a [f32],
    norm1_b: &'a [f32],
    inter_w: &'a [f32],
    inter_b: &'a [f32],
    ffn_w: &'a [f32],
    ffn_b: &'a [f32],
    norm2_w: &'a [f32],
    norm2_b: &'a [f32],
}

fn hold(layer: &Layer) -> [Held<'_>; 12] {
    [
        &layer.qkv.weight_t,
        &layer.qkv.bias,
        &layer.attention_out.weight_t,
        &layer.attention_out.bias,
        &layer.attention_norm.weight,
        &layer.attention_norm.bias,
        &layer.intermediate.weight_t,
        &layer.intermediate.bias,
        &layer.output.weight_t,
        &layer.output.bias,
        &layer.output_norm.weight,
        &layer.output_norm.bias,
    ]
    .map(Held::new)
}

impl<'a> LayerView<'a> {
    /// The slices, each checked to have its size for hidden width `h` and feed-forward
    /// width `inner`.
    fn new(held: &'a [Held<'_>; 12], h: usize, inner: usize) -> Result<Self> {
        let [
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            norm1_w,
            norm1_b,
            inter_w,
            inter_b,
            ffn_w,
            ffn_b,
            norm2_w,
            norm2_b,
        ] = held;
        Ok(Self {
            qkv_w: qkv_w.sized(h * 3 * h)?,
            qkv_b: qkv_b.sized(3 * h)?,
            out_w: out_w.sized(h * h)?,
            out_b: out_b.sized(h)?,
            norm1_w: norm1_w.sized(h)?,
            norm1_b: norm1_b.sized(h)?,
            inter_w: inter_w.sized(h * inner)?,
            inter_b: inter_b.sized(inner)?,
            ffn_w: ffn_w.sized(inner * h)?,
            ffn_b: ffn_b.sized(h)?,
            norm2_w: norm2_w.sized(h)?,
            norm2_b: norm2_b.sized(h)?,
        })
    }
}

/// `f` on each chunk of [`ROWS_PER_TASK`] rows of `width` values of `xs`, in parallel.
fn rows_par(xs: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Send + Sync) {
    xs.par_chunks_mut(ROWS_PER_TASK * width).for_each(f);
}

impl BertWeights {
    /// The last hidden states `[rows × seq × hidden]` (row-major) of a padded batch of
    /// `rows` texts of `seq` tokens: `ids` and `type_ids` (`rows × seq`) and `mask` (1 for
    /// real tokens, 0 for padding, which must follow a text's real tokens). The weights must
    /// be CPU F32 tensors.
    ///
    /// The pass runs on the real tokens only, packed text after text: padding costs no
    /// matmul (in a batch of texts of mixed lengths it is often a third or more of the
    /// tokens), and each text attends over its own length with no mask. The padding positions
    /// of the result are zero; poolers read real tokens only.
    pub(in crate::engine::bert) fn forward_cpu(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        mask: &[f32],
        rows: usize,
        seq: usize,
    ) -> Result<Vec<f32>> {
        let h = self.shape.hidden_size;
        let heads = self.shape.num_attention_heads;
        let d = self.shape.head_dim();
        let inner = self.shape.intermediate_size;
        let tokens = rows * seq;
        if ids.len() != tokens || type_ids.len() != tokens || mask.len() != tokens {
            return Err(Error::Msg(format!(
                "a batch of {rows}×{seq} tokens with {} ids, {} type ids and {} mask values",
                ids.len(),
                type_ids.len(),
                mask.len()
            )));
        }
        if seq > self.shape.max_position_embeddings {
            return Err(Error::Msg(format!(
                "{seq} tokens exceed the {} positions",
                self.shape.max_position_embeddings
            )));
        }
        let threads = rayon::current_num_threads();

        // Each text's real tokens: a prefix of its row.
        let mut lens = Vec::with_capacity(rows);
        for (text, m) in mask.chunks_exact(seq.max(1)).take(rows).enumerate() {
            let len = m.iter().take_while(|&&v| v != 0.0).count();
            if m.iter().skip(len).any(|&v| v != 0.0) {
                return Err(Error::Msg(format!(
                    "text {text}: padding must follow the real tokens"
                )));
            }
            lens.push(len);
        }
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |at, &len| {
                let start = *at;
                *at += len;
                Some(start)
            })
            .collect();
        let padded_tokens = tokens;
        let tokens: usize = lens.iter().sum();

        // Embeddings: word + position + token type, then the layer norm.
        let mut x = vec![0f32; tokens * h];
        {
            let held = [
                &self.word,
                &self.position,
                &self.token_type,
                &self.embedding_norm.weight,
                &self.embedding_norm.bias,
            ]
            .map(Held::new);
            let [word, position, token_type, norm_w, norm_b] = &held;
            let (word, position, token_type) =
                (word.values()?, position.values()?, token_type.values()?);
            let (norm_w, norm_b) = (norm_w.sized(h)?, norm_b.sized(h)?);
            fn row(table: &[f32], i: u32, h: usize) -> Option<&[f32]> {
                let start = (i as usize).checked_mul(h)?;
                table.get(start..start.checked_add(h)?)
            }
            let real = lens
                .iter()
                .enumerate()
                .flat_map(|(text, &len)| (0..len).map(move |pos| (text * seq + pos, pos)));
            for (out, (t, pos)) in x.chunks_exact_mut(h).zip(real) {
                let (Some(&id), Some(&ty)) = (ids.get(t), type_ids.get(t)) else {
                    return Err(Error::Msg(format!("token {t} is outside the batch")));
                };
                let pos = pos as u32;
                let (Some(w), Some(ty), Some(p)) = (
                    row(word, id, h),
                    row(token_type, ty, h),
                    row(position, pos, h),
                ) else {
                    return Err(Error::Msg(format!(
                        "token {t}: id {id} or type {ty} is outside the embeddings"
                    )));
                };
                for (((o, w), ty), p) in out.iter_mut().zip(w).zip(ty).zip(p) {
                    *o = w + ty + p;
                }
            }
            let eps = self.embedding_norm.eps;
            rows_par(&mut x, h, |c| {
                bias_layer_norm(c, h, &[], norm_w, norm_b, eps)
            });
        }

        // A text attends over its own tokens only: no mask.
        let no_mask = vec![0f32; seq];
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut context = vec![0f32; tokens * h];
        let mut ffn = vec![0f32; tokens * inner];
        for layer in &self.layers {
            let held = hold(layer);
            let w = LayerView::new(&held, h, inner)?;

            // qkv ← x·W + b (the bias written first, the product added to it).
            qkv.par_chunks_mut(3 * h)
                .for_each(|r| r.copy_from_slice(w.qkv_b));
            kernel(matmul(
                &mut qkv,
                3 * h,
                true,
                kernel(Mat::rows(&x, tokens, h))?,
                kernel(Mat::rows(w.qkv_w, h, 3 * h))?,
                threads,
            ))?;

            // Attention, text by text: per head, scores ← q·kᵀ, masked softmax, context ←
            // probabilities·v, written into the head's columns of the text's context rows.
            let (qkv_ref, no_mask) = (&qkv, &no_mask);
            let mut texts = Vec::with_capacity(rows);
            let mut rest = &mut context[..];
            for (&len, &start) in lens.iter().zip(&offsets) {
                let (ctx, tail) = rest.split_at_mut(len * h);
                texts.push((start, len, ctx));
                rest = tail;
            }
            texts.into_par_iter().try_for_each_init(
                || vec![0f32; longest * longest],
                |scores, (start, len, ctx)| -> Result<()> {
                    if len == 0 {
                        return Ok(());
                    }
                    let base = start * 3 * h;
                    let scores = scores
                        .get_mut(..len * len)
                        .ok_or_else(|| Error::Msg("scores of a text".into()))?;
                    let bias = no_mask
                        .get(..len)
                        .ok_or_else(|| Error::Msg("mask of a text".into()))?;
                    for head in 0..heads {
                        let col = head * d;
                        let q = kernel(Mat::new(qkv_ref, base + col, (len, d), (3 * h, 1)))?;
                        let kt = kernel(Mat::new(qkv_ref, base + h + col, (d, len), (1, 3 * h)))?;
                        let v =
                            kernel(Mat::new(qkv_ref, base + 2 * h + col, (len, d), (3 * h, 1)))?;
                        kernel(matmul(scores, len, false, q, kt, 1))?;
                        masked_softmax(scores, len, bias);
                        let ctx = ctx
                            .get_mut(col..)
                            .ok_or_else(|| Error::Msg("context of a head".into()))?;
                        kernel(matmul(
                            ctx,
                            h,
                            false,
                            kernel(Mat::rows(scores, len, len))?,
                            v,
                            1,
                        ))?;
                    }
                    Ok(())
                },
            )?;

            // x ← LayerNorm(x + context·W + b).
            kernel(matmul(
                &mut x,
                h,
                true,
                kernel(Mat::rows(&context, tokens, h))?,
                kernel(Mat::rows(w.out_w, h, h))?,
                threads,
            ))?;
            let eps = layer.attention_norm.eps;
            rows_par(&mut x, h, |c| {
                bias_layer_norm(c, h, w.out_b, w.norm1_w, w.norm1_b, eps);
            });

            // ffn ← GELU(x·W + b); x ← LayerNorm(x + ffn·W + b).
            kernel(matmul(
                &mut ffn,
                inner,
                false,
                kernel(Mat::rows(&x, tokens, h))?,
                kernel(Mat::rows(w.inter_w, h, inner))?,
                threads,
            ))?;
            rows_par(&mut ffn, inner, |c| bias_gelu(c, inner, w.inter_b));
            kernel(matmul(
                &mut x,
                h,
                true,
                kernel(Mat::rows(&ffn, tokens, inner))?,
                kernel(Mat::rows(w.ffn_w, inner, h))?,
                threads,
            ))?;
            let eps = layer.output_norm.eps;
            rows_par(&mut x, h, |c| {
                bias_layer_norm(c, h, w.ffn_b, w.norm2_w, w.norm2_b, eps);
            });
        }
        // Back to the padded layout, zeros at the padding.
        let mut out = vec![0f32; padded_tokens * h];
        for ((&len, &start), text) in lens.iter().zip(&offsets).zip(out.chunks_mut(seq * h)) {
            let (Some(dst), Some(src)) =
                (text.get_mut(..len * h), x.get(start * h..(start + len) * h))
            else {
                return Err(Error::Msg("a text's hidden states".into()));
            };
            dst.copy_from_slice(src);
        }
        Ok(out)
    }
}
