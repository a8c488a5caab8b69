//! The text encoder's forward pass: all-MiniLM-L6-v2, a batch of 32 texts of exactly 128
//! tokens, on the CPU, against PyTorch on the same batch.
//!
//! - `minilm/forward_b32_t128`: [`TextEncoder::embed_tokens`] (embeddings, 6 layers, mean
//!   pooling, L2 normalization) on pre-tokenized texts, as PyTorch is timed;
//! - `minilm/tokenize_b32`: tokenizing the same 32 texts with the sealed tokenizer.
//!
//! `scripts/bench-text.sh` runs this with `RAYON_NUM_THREADS=2` between two runs of
//! `benches/text_torch.py` (sentence-transformers' model, `torch.set_num_threads(2)`) and
//! prints the ratio. The model comes from `$CONFIDANT_MINILM_DIR` or
//! `scripts/fetch-minilm.sh`'s cache.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench text`.

use std::hint::black_box;
use std::path::PathBuf;

use candle_core::Device;
use confidant::engine::EncoderConfig;
use confidant::engine::bert::BertEncoder;
use confidant::engine::text::TextEncoder;
use confidant::sealed::bundle::ModelDirectory;
use criterion::{Criterion, Throughput};

const ROWS: usize = 32;
const TOKENS: usize = 128;

#[allow(clippy::expect_used)]
fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CONFIDANT_MINILM_DIR") {
        return PathBuf::from(d);
    }
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/fetch-minilm.sh"
        ))
        .output()
        .expect("run scripts/fetch-minilm.sh");
    assert!(
        out.status.success(),
        "scripts/fetch-minilm.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// 32 different texts, each longer than 128 tokens (cut to exactly 128).
pub fn texts() -> Vec<String> {
    (0..ROWS)
        .map(|i| {
            format!(
                "Request {i}: confidential computing protects data in use by performing \
                 computation in a hardware-based, attested trusted execution environment. "
            )
            .repeat(8)
        })
        .collect()
}

#[allow(clippy::expect_used)]
fn bench(c: &mut Criterion) {
    let dir = ModelDirectory::read(&model_dir()).expect("read the model directory");
    let config = EncoderConfig::from_json(
        br#"{"id": "minilm", "version": "1.0.0", "architecture": {"kind": "bert",
        "task": "embedding", "pooling": "mean", "normalize": true, "max_tokens": 128,
        "truncation": "truncate"}}"#,
    )
    .expect("config");
    let encoder = BertEncoder::load(&config, dir.bert_files().expect("files"), &Device::Cpu)
        .expect("load MiniLM");
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = encoder.tokenize(&refs).expect("tokenize");
    assert!(
        tokens.iter().all(|t| t.len() == TOKENS),
        "every text must be 128 tokens"
    );
    let batch: Vec<_> = tokens.iter().collect();
    eprintln!(
        "text bench: candle CPU threads = {}",
        candle_core::utils::get_num_threads()
    );
    let mut g = c.benchmark_group("minilm");
    g.throughput(Throughput::Elements((ROWS * TOKENS) as u64));
    g.bench_function("forward_b32_t128", |b| {
        b.iter(|| encoder.embed_tokens(black_box(&batch)).expect("forward"))
    });
    g.bench_function("tokenize_b32", |b| {
        b.iter(|| encoder.tokenize(black_box(&refs)).expect("tokenize"))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
