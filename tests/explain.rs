//! Inference.Explain end to end: integrated gradients through the guards, completeness,
//! the explain scope, and refusal under a DP output policy.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::code;

use common::{Server, confidant, create_key, fixtures, seal_hf, stderr, stdout};
use confidant::client::Client;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributions_sum_to_the_output_difference_and_the_explain_scope_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    // The demo key holds predict and explain.
    let mut client = server.client().await;
    let mut reader = csv::Reader::from_path(fixtures().join("breast_cancer_test.csv")).unwrap();
    let config = confidant::demo::config().unwrap();
    let rows: Vec<Vec<f32>> = reader
        .records()
        .take(6)
        .map(|r| {
            let r = r.unwrap();
            (0..30)
                .map(|f| {
                    r[f].parse::<f32>()
                        .unwrap()
                        .clamp(config.input.min[f], config.input.max[f])
                })
                .collect()
        })
        .collect();
    let r = client.explain("demo", &rows, None).await.unwrap();
    let attributions = r.attributions.unwrap();
    assert_eq!(attributions.shape, vec![6, 30]);
    let predicted = client.predict("demo", &rows).await.unwrap();
    for (i, row) in attributions.values.chunks(30).enumerate() {
        let sum: f64 = row.iter().map(|v| f64::from(*v)).sum();
        let want = f64::from(r.output_at_input[i]) - f64::from(r.output_at_baseline[i]);
        assert!(
            (sum - want).abs() <= 1e-3 * want.abs().max(1e-3),
            "row {i}: attributions sum to {sum}, f(x) - f(baseline) = {want}"
        );
        // The explained output is the predicted class, and f(x) is what Predict returns.
        let target = r.targets[i] as usize;
        assert_eq!(predicted.labels[i], config.labels[target]);
        assert!((predicted.outputs[i][target] - r.output_at_input[i]).abs() < 1e-5);
    }
    assert_eq!(r.baseline.len(), 30);

    // A key without the explain scope is refused; a bad target too.
    let predict_only = create_key(&data, "clerk", &["--purposes", "demonstration"]);
    let e = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&predict_only)
        .unwrap()
        .explain("demo", &rows, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("explain scope"), "{e}");
    let e = client.explain("demo", &rows, Some(7)).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let mut nan = rows[0].clone();
    nan[2] = f32::NAN;
    let e = client.explain("demo", &[nan], None).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // The CLI prints the same.
    let out = confidant(&[
        "explain",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        server.api_key.as_deref().unwrap(),
        "--model",
        "demo",
        "--input",
        &serde_json::to_string(&rows[..1]).unwrap(),
        "--target",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["targets"][0], 0);
    assert_eq!(v["attributions"][0].as_array().unwrap().len(), 30);

    // Explanations are audited as such.
    assert!(server.stop().success());
    let log = common::audit_export(&data);
    assert!(log.contains("\"rpc\":\"explain\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_dp_output_policy_refuses_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = fixtures().join("mlp");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("softmax.json")).unwrap()).unwrap();
    config["privacy"] = serde_json::json!({"mechanism": "noisy_argmax", "epsilon": 1.0});
    config["explanation"] = serde_json::json!({"baseline": vec![0.0f32; 8]});
    std::fs::write(d.join("m.json"), config.to_string()).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        &p("m.json"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = create_key(&d.join("data"), "analyst", &["--scopes", "predict,explain"]);
    let server = Server::start(&[
        "--data-dir",
        &p("data"),
        "--model",
        &p("m.sealed"),
        "--key-file",
        &p("m.dek"),
        "--publisher-key",
        &p("keys/publisher.pub"),
    ]);
    let id = config["id"].as_str().unwrap().to_string();
    let e = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap()
        .explain(&id, &[vec![0.5; 8]], None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("noisy_argmax"), "{e}");
}

/// Issue 19, item 6: a text model's Explain gives per-token attributions over the input
/// word embeddings, complete within the MLP's tolerance, with the tokens, through the same
/// scope, privacy refusal, cost bound (counted in tokens), quota and audit as an MLP's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_models_are_explained_token_by_token_behind_the_same_guards() {
    use confidant::engine::TextEncoder;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let files = confidant::engine::synthetic::tiny_bert(11, Some(3)).unwrap();
    let hf = d.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for (name, bytes) in &files {
        std::fs::write(hf.join(name), bytes).unwrap();
    }
    let open = r#"{"id": "triage", "version": "1.0.0", "labels": ["routine", "urgent", "spam"],
      "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
                       "output": "softmax", "max_tokens": 32, "truncation": "truncate"}}"#;
    let private = r#"{"id": "triage-dp", "version": "1.0.0", "labels": ["routine", "urgent", "spam"],
      "privacy": {"mechanism": "noisy_argmax", "epsilon": 1.0},
      "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
                       "output": "softmax", "max_tokens": 32, "truncation": "truncate"}}"#;
    let embedding = r#"{"id": "search", "version": "1.0.0", "purposes": ["search"],
      "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean",
                       "normalize": true, "max_tokens": 32, "truncation": "truncate"}}"#;
    seal_hf(d, &hf, open, "triage");
    seal_hf(d, &hf, private, "triage-dp");
    seal_hf(d, &hf, embedding, "search");
    // 12 tokens' worth of path points per request, and quotas counted in tokens.
    std::fs::write(
        d.join("serve.toml"),
        format!(
            "[explain]\nmax_points_per_request = {}\n[rate]\nunit = \"tokens\"\n",
            12 * confidant::engine::explain::MAX_POINTS_PER_ROW
        ),
    )
    .unwrap();
    let data = d.join("data");
    let key = create_key(
        &data,
        "nurse",
        &[
            "--scopes",
            "predict,explain",
            "--rpd",
            "100",
            "--purposes",
            "search",
        ],
    );
    let predict_only = create_key(&data, "clerk", &[]);
    let mut args = vec![
        "--config".to_string(),
        p("serve.toml"),
        "--data-dir".into(),
        p("data"),
        "--publisher-key".into(),
        p("keys/publisher.pub"),
    ];
    for name in ["triage", "triage-dp", "search"] {
        args.extend([
            "--model".into(),
            p(&format!("{name}.sealed")),
            "--key-file".into(),
            p(&format!("{name}.dek")),
        ]);
    }
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let connect = |key: String| {
        let server_addr = server.addr.clone();
        let ca = server.ca();
        async move {
            Client::connect(&server_addr, &ca)
                .await
                .unwrap()
                .with_api_key(&key)
                .unwrap()
        }
    };
    let mut client = connect(key.clone()).await;
    let texts = vec![
        "the patient was in pain".to_string(),
        "hello world".to_string(),
    ];

    let r = client
        .explain_texts("triage", texts.clone(), None)
        .await
        .unwrap();
    assert!(r.attributions.is_none(), "no feature tensor for texts");
    assert_eq!(r.baseline_token, "[PAD]");
    assert_eq!(r.text_attributions.len(), 2);
    let spent = common::used_today(&data, "nurse");
    assert_eq!(
        spent,
        7 + 4,
        "an explanation spends its tokens, as Predict does"
    );
    let predicted = client.predict_texts("triage", texts.clone()).await.unwrap();
    let spent = common::used_today(&data, "nurse");
    // The same explanation in process, from the same files.
    let config = confidant::engine::config::EncoderConfig::from_json(open.as_bytes()).unwrap();
    let dir_files = confidant::sealed::bundle::ModelDirectory::from_files(files);
    let encoder = confidant::engine::bert::BertEncoder::load(
        &config,
        dir_files.bert_files().unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let local = encoder
        .explain_tokens(&encoder.tokenize(&refs).unwrap(), None)
        .unwrap();
    for (i, t) in r.text_attributions.iter().enumerate() {
        let sum: f64 = t.attributions.iter().map(|v| f64::from(*v)).sum();
        let want = f64::from(r.output_at_input[i]) - f64::from(r.output_at_baseline[i]);
        assert!(
            (sum - want).abs() <= 1e-3 * want.abs().max(1e-3),
            "text {i}: attributions sum to {sum}, f(x) - f(baseline) = {want}"
        );
        assert!(
            f64::from(r.completeness_error[i]) <= 1e-4 * want.abs().max(1e-6) || r.steps[i] == 8192
        );
        // The explained output is the predicted label, and f(x) is what Predict returns.
        let target = r.targets[i] as usize;
        assert_eq!(predicted.labels[i], ["routine", "urgent", "spam"][target]);
        assert!((predicted.outputs[i][target] - r.output_at_input[i]).abs() < 1e-5);
        assert_eq!(t.tokens.first().map(String::as_str), Some("[CLS]"));
        assert_eq!(t.tokens.last().map(String::as_str), Some("[SEP]"));
        assert_eq!(t.tokens, local[i].tokens);
        assert_eq!(t.special, local[i].special);
        assert!(!t.truncated);
        for (k, (a, b)) in t
            .attributions
            .iter()
            .zip(&local[i].attribution.attributions)
            .enumerate()
        {
            assert!((a - b).abs() <= 1e-6, "text {i} token {k}: {a} vs {b}");
            if t.special[k] {
                assert_eq!(*a, 0.0);
            }
        }
    }
    assert_eq!(
        r.text_attributions[1].tokens,
        ["[CLS]", "hello", "world", "[SEP]"]
    );

    // Over the bound (13 tokens > 12): RESOURCE_EXHAUSTED before anything is spent.
    let e = client
        .explain_texts(
            "triage",
            vec![
                "the patient was in pain".into(),
                "the claim was denied".into(),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    assert!(
        e.to_string().contains("explain.max_points_per_request"),
        "{e}"
    );
    assert_eq!(common::used_today(&data, "nurse"), spent);

    // An embedding model with purposes: none declared is refused as for Predict.
    let e = client
        .explain_texts("search", vec!["hello world".into()], Some(3))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    // A named dimension, or a precise refusal.
    let mut client = connect(key.clone()).await.with_purpose("search").unwrap();
    let e = client
        .explain_texts("search", vec!["hello world".into()], None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("name the embedding dimension"),
        "{e}"
    );
    let r = client
        .explain_texts("search", vec!["hello world".into()], Some(3))
        .await
        .unwrap();
    assert_eq!(r.targets, vec![3]);
    let sum: f32 = r.text_attributions[0].attributions.iter().sum();
    let want = r.output_at_input[0] - r.output_at_baseline[0];
    assert!(
        (sum - want).abs() <= 1e-3 * want.abs().max(1e-3),
        "{sum} vs {want}"
    );
    let e = client
        .explain_texts("triage", vec!["hello".into()], Some(3))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // Under an output privacy policy, refused as for an MLP; without the explain scope, too.
    let e = client
        .explain_texts("triage-dp", vec!["hello".into()], None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("noisy_argmax"), "{e}");
    let e = connect(predict_only)
        .await
        .explain_texts("triage", vec!["hello".into()], None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");

    // The CLI prints the tokens with their attributions.
    let out = confidant(&[
        "explain",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &key,
        "--model",
        "triage",
        "--text",
        "hello world",
        "--target",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["targets"][0], 1);
    assert_eq!(v["texts"][0]["tokens"][1], "hello");
    assert_eq!(v["texts"][0]["special"][0], true);
    assert_eq!(v["texts"][0]["attributions"].as_array().unwrap().len(), 4);

    // Audited as explanations, with a keyed digest and never the text.
    assert!(server.stop().success());
    let log = common::audit_export(&data);
    let explained = log
        .lines()
        .find(|l| l.contains("\"rpc\":\"explain\"") && l.contains("\"model\":\"triage@"))
        .unwrap_or_else(|| panic!("no explain record: {log}"));
    assert!(explained.contains("\"input_hmac\":\""), "{explained}");
    assert!(!log.contains("patient"), "the audit log holds a text");
}
