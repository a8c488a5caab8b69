//! BERT-family text encoders, sealed as Hugging Face model directories: tokenization inside
//! the TEE with the `tokenizers` crate from the sealed `tokenizer.json`, the encoder in
//! candle, mean or `[CLS]` pooling, L2 normalization, and an optional
//! `BertForSequenceClassification`-style head.
//!
//! The forward pass is our own candle code rather than `candle-transformers`' `BertModel`:
//! it loads from the decrypted bytes in locked memory with the same per-tensor checks as
//! the MLP, fuses the query, key and value projections into one matmul, stores weights
//! pre-transposed, and exposes the hidden states that pooling, classification heads and
//! integrated gradients over the input word embeddings (`explain.rs`) need. On the CPU the
//! forward pass that serves runs on plain slices (`model/cpu.rs`) with fused kernels (the
//! `confidant-bert-kernels` crate, `bert-kernels/`: the `gemm` crate's matmul, bias + GELU,
//! masked softmax, bias + layer norm), the same math as the candle ops, which the GPU and
//! integrated gradients use.

mod batch;
mod encoder;
mod explain;
pub mod hf_config;
mod model;
mod tokenize;

pub use batch::{PaddedBatch, group_by_length};
pub use encoder::{BertEncoder, BertFiles, HEAD_FILE};
pub use hf_config::BertShape;
pub use tokenize::TextTokenizer;

#[cfg(test)]
mod tests;
