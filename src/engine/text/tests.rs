#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::engine::batcher::BatchConfig;
use crate::engine::bert::BertEncoder;
use crate::engine::config::EncoderConfig;
use crate::sealed::bundle::ModelDirectory;

fn tiny(truncation: &str) -> Arc<BertEncoder> {
    let config = EncoderConfig::from_json(
        format!(
            r#"{{"id": "tiny", "version": "1",
               "architecture": {{"kind": "bert", "task": "embedding", "pooling": "mean",
                "normalize": true, "max_tokens": 8, "truncation": "{truncation}"}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let dir = ModelDirectory::from_files(crate::engine::synthetic::tiny_bert(3, None).unwrap());
    Arc::new(
        BertEncoder::load(
            &config,
            dir.bert_files().unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap(),
    )
}

const TEXTS: [&str; 5] = [
    "the patient",
    "",
    "the claim was not approved and the contract was denied",
    "hello world",
    "日本 é",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_text_requests_are_batched_by_tokens_and_answer_in_order() {
    let encoder = tiny("truncate");
    let want = encoder.embed(&TEXTS).unwrap();
    let batcher = TextBatcher::spawn(
        Arc::clone(&encoder) as Arc<dyn TextEncoder>,
        "tiny",
        BatchConfig {
            max_wait_us: 20_000,
            max_padded_tokens: 24,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let batcher = Arc::new(batcher);
    // Every text alone and all together, at once: the worker gathers them into batches of
    // at most 24 tokens and each caller gets its own rows back, in its order.
    let mut handles = Vec::new();
    for (i, text) in TEXTS.iter().enumerate() {
        let (b, e) = (Arc::clone(&batcher), Arc::clone(&encoder));
        handles.push(tokio::spawn(async move {
            let tokens = e.tokenize(&[text]).unwrap();
            (vec![i], b.infer(tokens).await.unwrap())
        }));
    }
    let (b, e) = (Arc::clone(&batcher), Arc::clone(&encoder));
    handles.push(tokio::spawn(async move {
        let tokens = e.tokenize(&TEXTS).unwrap();
        ((0..TEXTS.len()).collect(), b.infer(tokens).await.unwrap())
    }));
    for h in handles {
        let (indices, out) = h.await.unwrap();
        assert_eq!(out.values.len(), indices.len() * 16);
        assert!(out.padded_tokens > 0);
        for (row, i) in out.values.chunks(16).zip(indices) {
            for (a, b) in row.iter().zip(&want[i]) {
                assert!((a - b).abs() < 1e-5, "text {i}: {a} vs {b}");
            }
        }
    }
    assert!(batcher.exec_metrics().executions() >= 1);
}

#[test]
fn a_refusing_model_names_the_text_and_a_truncating_one_cuts_it() {
    // 9 tokens with [CLS] and [SEP]: one over the limit of 8.
    let long = "the patient note was not approved and";
    let e = tiny("refuse").tokenize(&["hello", long]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "text 1 has 9 tokens; model tiny accepts at most 8 (truncation: refuse)"
    );
    let t = tiny("truncate").tokenize(&[long]).unwrap();
    assert_eq!(t[0].len(), 8);
    assert!(t[0].truncated());
}

#[tokio::test]
async fn the_registry_serves_a_text_model_and_refuses_what_does_not_apply_to_it() {
    use crate::engine::{ModelInput, Provenance, Registry, ServingOptions};
    use crate::privacy::policy::PrivacyPolicy;
    let registry = Registry::new();
    let provenance = Provenance {
        weights_sha256: "00".into(),
        publisher_key_id: "k".into(),
        manifest_sha256: [0; 32],
    };
    let encoder = || tiny("truncate") as Arc<dyn TextEncoder>;
    // An output policy is for scores, not embeddings.
    let e = registry
        .insert_text(
            encoder(),
            provenance.clone(),
            BatchConfig::default(),
            ServingOptions {
                privacy: Some(PrivacyPolicy::LabelOnly),
                ..ServingOptions::default()
            },
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("not to embedding models"), "{e}");
    let model = registry
        .insert_text(
            encoder(),
            provenance.clone(),
            BatchConfig::default(),
            ServingOptions::default(),
        )
        .unwrap();
    assert_eq!(model.label(), "tiny@1");
    assert!(!model.has_classes());
    assert_eq!(model.output_width(), 16);
    assert_eq!(model.input_tensor_name(), "text");
    assert_eq!(model.output_tensor_name(), "embedding");
    assert!(model.mlp().is_none() && model.mlp_config().is_none());
    let e = registry
        .insert_text(
            encoder(),
            provenance,
            BatchConfig::default(),
            ServingOptions::default(),
        )
        .err()
        .unwrap();
    assert!(matches!(e, EngineError::DuplicateModel(_)), "{e}");
    // Rows are not a text model's input.
    let e = model
        .infer(ModelInput::Rows {
            values: vec![0.0; 4],
            rows: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "model tiny takes texts, not numeric rows");
    let tokens = model.encoder().unwrap().tokenize(&["hello"]).unwrap();
    let out = model.infer(ModelInput::Tokens(tokens)).await.unwrap();
    assert_eq!(out.values.len(), 16);
}
