//! `confidant train --encoder` end to end: a DP-SGD head trained over a sealed text encoder,
//! sealed with it as one classifier, served by the real binary over TLS gRPC with a
//! `noisy_argmax` policy, spending each caller's privacy budget exactly as a DP-trained MLP
//! under the same policy does.
//!
//! The tiny random BERT of `confidant::engine::synthetic::tiny_bert` runs everywhere.
//! `minilm_bbc_news_at_epsilon_3_is_accurate` needs all-MiniLM-L6-v2
//! (`scripts/fetch-minilm.sh`, `$CONFIDANT_MINILM_DIR`) and the BBC News split
//! (`scripts/fetch-bbc-news.sh`, `$CONFIDANT_BBC_NEWS_DIR`), and says so (and passes without
//! training) when either is absent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::{Server, code, confidant, create_key, fixtures, p, seal_hf, stderr, stdout};
use confidant::client::Client;
use confidant::engine::TextEncoder;
use confidant::engine::bert::BertEncoder;
use confidant::engine::config::EncoderConfig;
use confidant::proto::inference as oip;
use confidant::sealed::bundle::ModelDirectory;
use tonic::Code;

const ENCODER: &str = r#"{"id": "tiny-enc", "version": "1.0.0",
  "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean", "normalize": true,
                   "max_tokens": 16, "truncation": "truncate"}}"#;

/// Keys, the tiny BERT sealed as embedding model `enc`, and a triage CSV `train.csv`.
fn setup(d: &Path) {
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    let hf = d.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for (name, bytes) in confidant::engine::synthetic::tiny_bert(7, None).unwrap() {
        std::fs::write(hf.join(name), bytes).unwrap();
    }
    seal_hf(d, &hf, ENCODER, "enc");
    std::fs::write(d.join("train.csv"), triage_csv(200)).unwrap();
}

/// Texts of two kinds, alternating: routine paperwork and urgent symptoms.
fn triage_csv(rows: usize) -> String {
    let routine = [
        "the claim was approved",
        "the contract is approved",
        "a note with the claim",
        "the contract was denied",
    ];
    let urgent = [
        "the patient was in pain",
        "fever and pain",
        "the patient with fever",
        "pain , fever",
    ];
    let mut csv = "id,text,label\n".to_string();
    for i in 0..rows {
        let (text, label) = if i % 2 == 0 {
            (routine[i / 2 % 4], "routine")
        } else {
            (urgent[i / 2 % 4], "urgent")
        };
        csv.push_str(&format!("{i},\"{text}\",{label}\n"));
    }
    csv
}

/// `confidant train --encoder enc.sealed …` on `data` with `extra` flags.
fn train_text(d: &Path, data: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train".to_string(),
        "--encoder".into(),
        p(d, "enc.sealed"),
        "--key-file".into(),
        p(d, "enc.dek"),
        "--publisher-key".into(),
        p(d, "keys/publisher.pub"),
        "--data".into(),
        data.into(),
        "--signing-key".into(),
        p(d, "keys/publisher.key"),
        "--accountant".into(),
        "rdp".into(),
        "--force".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    confidant(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "train: {}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_classifier_trained_at_epsilon_3_spends_budget_as_an_mlp_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // The text classifier: encoder + head, sealed as one model.
    let v = json(&train_text(
        d,
        &p(d, "train.csv"),
        &[
            "--text-column",
            "text",
            "--label",
            "label",
            "--epsilon",
            "3",
            "--delta",
            "1e-5",
            "--id",
            "triage",
            "--seal",
            &p(d, "triage.sealed"),
            "--key-out",
            &p(d, "triage.dek"),
            "--config",
            &p(d, "triage.json"),
            "--eval-data",
            &p(d, "train.csv"),
        ],
    ));
    assert_eq!(v["model"], "triage");
    assert_eq!(v["rows"], 200);
    assert_eq!(v["classes"], serde_json::json!(["routine", "urgent"]));
    assert_eq!(v["epsilon"], 3.0);
    assert!(v["noise_multiplier"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["eval_rows"], 200);
    assert!(v["eval_accuracy"].as_f64().unwrap() >= 0.0, "{v}");
    let entries: Vec<&str> = v["sealed"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(entries.contains(&"model.safetensors"), "{entries:?}");
    assert!(entries.contains(&"tokenizer.json"), "{entries:?}");
    assert_eq!(entries.last(), Some(&"head.safetensors"));
    // The manifest is signed: inspect checks the signature and every chunk.
    let out = confidant(&[
        "inspect",
        &p(d, "triage.sealed"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
        "--key-file",
        &p(d, "triage.dek"),
    ]);
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    let m: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(m["verdict"], "ok");
    let model = &m["manifest"]["model"];
    assert_eq!(model["architecture"]["task"], "classification");
    assert_eq!(model["architecture"]["head"]["kind"], "mlp");
    assert_eq!(model["dp_training"]["epsilon"], 3.0);
    assert_eq!(model["labels"], serde_json::json!(["routine", "urgent"]));

    // An MLP trained at the same ε, for comparison.
    let bc = fixtures().join("splits/breast_cancer_train.csv");
    let out = confidant(&[
        "train",
        "--data",
        bc.to_str().unwrap(),
        "--label",
        "target",
        "--epsilon",
        "3",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--id",
        "tumour",
        "--out",
        &p(d, "tumour.safetensors"),
        "--config",
        &p(d, "tumour.json"),
        "--seal",
        &p(d, "tumour.sealed"),
        "--signing-key",
        &p(d, "keys/publisher.key"),
        "--key-out",
        &p(d, "tumour.dek"),
    ]);
    assert!(out.status.success(), "train MLP: {}", stderr(&out));
    let row: Vec<f32> = std::fs::read_to_string(&bc)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .take(30)
        .map(|c| c.parse().unwrap())
        .collect();

    // Both under the same server-side policy and budget.
    std::fs::write(
        d.join("serve.toml"),
        "[privacy.budget]\nepsilon = 2.0\n\
         [privacy.models.triage]\nmechanism = \"noisy_argmax\"\nepsilon = 0.5\n\
         [privacy.models.tumour]\nmechanism = \"noisy_argmax\"\nepsilon = 0.5\n",
    )
    .unwrap();
    let data = d.join("data");
    let nurse = create_key(&data, "nurse", &["--rpd", "100"]);
    let doctor = create_key(&data, "doctor", &["--rpd", "100"]);
    let server = Server::start(&[
        "--config",
        &p(d, "serve.toml"),
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "triage.sealed"),
        "--key-file",
        &p(d, "triage.dek"),
        "--model",
        &p(d, "tumour.sealed"),
        "--key-file",
        &p(d, "tumour.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let connect = |key: String| {
        let server = &server;
        async move {
            Client::connect(&server.addr, &server.ca())
                .await
                .unwrap()
                .with_api_key(&key)
                .unwrap()
        }
    };
    let mut text_client = connect(nurse.clone()).await;
    let mut mlp_client = connect(doctor).await;
    let texts = ["the patient was in pain", "the claim was approved"];
    // Two inputs, then one, then one: 1.0 + 0.5 + 0.5 = the budget of 2.0 for each; the
    // fourth request (one input) is refused for both.
    for (step, n) in [2usize, 1, 1].into_iter().enumerate() {
        let t = text_client
            .predict_texts("triage", texts[..n].iter().map(|s| s.to_string()).collect())
            .await
            .unwrap();
        let m = mlp_client
            .predict("tumour", &vec![row.clone(); n])
            .await
            .unwrap();
        for (p, labels) in [(&t, ["routine", "urgent"]), (&m, ["0", "1"])] {
            assert_eq!(p.labels.len(), n, "step {step}");
            assert!(p.outputs.iter().all(Vec::is_empty), "label only: {p:?}");
            for l in &p.labels {
                assert!(labels.contains(&l.as_str()), "{l}");
            }
        }
        let (tr, mr) = (t.privacy.unwrap(), m.privacy.unwrap());
        assert_eq!(tr.mechanism, "noisy_argmax");
        assert_eq!(tr.mechanism, mr.mechanism);
        assert!((tr.epsilon_charged - 0.5 * n as f64).abs() < 1e-9, "{tr:?}");
        assert_eq!(tr.epsilon_charged, mr.epsilon_charged, "step {step}");
        assert_eq!(tr.epsilon_spent, mr.epsilon_spent, "step {step}");
        assert_eq!(tr.epsilon_remaining, mr.epsilon_remaining, "step {step}");
        assert_eq!(tr.epsilon_budget, mr.epsilon_budget, "step {step}");
    }
    let te = text_client
        .predict_texts("triage", vec![texts[0].to_string()])
        .await
        .unwrap_err();
    let me = mlp_client
        .predict("tumour", std::slice::from_ref(&row))
        .await
        .unwrap_err();
    for e in [&te, &me] {
        assert_eq!(code(e), Code::ResourceExhausted, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("privacy budget") && msg.contains("0.000000 of 2 remains"),
            "{msg}"
        );
    }
    let (tb, mb) = (
        text_client.get_budget("").await.unwrap(),
        mlp_client.get_budget("").await.unwrap(),
    );
    assert!((tb.epsilon_spent - 2.0).abs() < 1e-9, "{tb:?}");
    assert_eq!(tb.epsilon_spent, mb.epsilon_spent);

    // `confidant predict --text` reaches the same model and the same refusal.
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &nurse,
        "--model",
        "triage",
        "--text",
        "fever",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("privacy budget"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_text_classifier_serves_scores_and_labels_over_grpc_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let v = json(&train_text(
        d,
        &p(d, "train.csv"),
        &[
            "--text-column",
            "text",
            "--label",
            "label",
            "--class-names",
            "urgent,routine",
            "--hidden",
            "8",
            "--lr",
            "1",
            "--no-dp",
            "--seed",
            "2",
            "--id",
            "triage",
            "--out",
            &p(d, "head.safetensors"),
            "--config",
            &p(d, "triage.json"),
            "--seal",
            &p(d, "triage.sealed"),
            "--key-out",
            &p(d, "triage.dek"),
        ],
    ));
    assert_eq!(v["classes"], serde_json::json!(["urgent", "routine"]));
    assert!(v["epsilon"].is_null());
    assert!(d.join("head.safetensors").exists());
    let data = d.join("data");
    let key = create_key(&data, "nurse", &[]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "triage.sealed"),
        "--key-file",
        &p(d, "triage.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &key,
        "--model",
        "triage",
        "--text",
        "the patient was in pain",
        "--text",
        "the claim was approved",
    ]);
    assert!(out.status.success(), "predict: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The classifier the server runs, built in process from the same files: the encoder's
    // and the head `--out` wrote, under the config `--config` wrote.
    let mut files = confidant::engine::synthetic::tiny_bert(7, None).unwrap();
    files.push((
        "head.safetensors".into(),
        std::fs::read(d.join("head.safetensors")).unwrap(),
    ));
    let config = EncoderConfig::from_json(&std::fs::read(d.join("triage.json")).unwrap()).unwrap();
    assert_eq!(config.architecture.head.as_ref().unwrap().layers.len(), 2);
    let dir = ModelDirectory::from_files(files);
    let local = BertEncoder::load(
        &config,
        dir.bert_files().unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let want = local
        .classify(&["the patient was in pain", "the claim was approved"])
        .unwrap();
    // The MLP head is explained as any classifier is: integrated gradients through the head
    // and the encoder down to the input embeddings, complete.
    {
        use confidant::engine::TextEncoder as _;
        let tokens = local.tokenize(&["the patient was in pain"]).unwrap();
        let explained = local.explain_tokens(&tokens, None).unwrap();
        let a = &explained[0].attribution;
        assert_eq!(a.attributions.len(), explained[0].tokens.len());
        let sum: f32 = a.attributions.iter().sum();
        let gap = a.output_at_input - a.output_at_baseline;
        assert!(gap.abs() > 1e-6, "the head's output moved: {gap}");
        assert!(
            (sum - gap).abs() <= 1e-3 * gap.abs().max(1e-3),
            "{sum} vs {gap}"
        );
    }
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    for ((row, label), want) in outputs
        .iter()
        .zip(v["labels"].as_array().unwrap())
        .zip(&want)
    {
        let s: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(s.len(), 2);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-4, "softmax: {s:?}");
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let best = if s[0] >= s[1] { "urgent" } else { "routine" };
        assert_eq!(label, best, "{v}");
    }

    // The Open Inference Protocol: a BYTES tensor in Triton's encoding, FP32 scores back.
    let mut raw = Vec::new();
    for t in ["the patient was in pain", "the claim was approved"] {
        raw.extend_from_slice(&(t.len() as u32).to_le_bytes());
        raw.extend_from_slice(t.as_bytes());
    }
    let mut request = tonic::Request::new(oip::ModelInferRequest {
        model_name: "triage".into(),
        inputs: vec![oip::model_infer_request::InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![2],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    let mut client =
        oip::grpc_inference_service_client::GrpcInferenceServiceClient::new(server.channel().await);
    let out = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(out.outputs[0].datatype, "FP32");
    assert_eq!(out.outputs[0].shape, vec![2, 2]);
    let got: Vec<f32> = out.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (a, b) in got.iter().zip(want.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "OIP {a} vs {b}");
    }
}

#[test]
fn bad_flags_data_and_encoders_get_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out_flags = |name: &str| {
        vec![
            "--seal".to_string(),
            p(d, &format!("{name}.sealed")),
            "--key-out".to_string(),
            p(d, &format!("{name}.dek")),
            "--epsilon".into(),
            "3".into(),
            "--delta".into(),
            "1e-5".into(),
        ]
    };
    let fails = |data: &str, extra: &[&str], needle: &str| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(out_flags("bad"));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = train_text(d, data, &a);
        assert!(!out.status.success(), "{needle}: should fail");
        let e = stderr(&out);
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(!d.join("bad.sealed").exists(), "{needle}: nothing sealed");
    };
    let train = p(d, "train.csv");
    fails(
        &train,
        &["--text-column", "body", "--label", "label"],
        "no column \"body\" in the header (columns: \"id\", \"text\", \"label\")",
    );
    fails(
        &train,
        &[
            "--text-column",
            "text",
            "--label",
            "label",
            "--class-names",
            "routine,spam",
        ],
        "line 3, column \"label\": unknown label \"urgent\": the classes are \"routine\", \"spam\"",
    );
    std::fs::write(d.join("latin1.csv"), b"text,label\nok,a\ncaf\xe9,b\n").unwrap();
    fails(
        &p(d, "latin1.csv"),
        &["--text-column", "text", "--label", "label"],
        "line 3, column \"text\": the cell is not valid UTF-8",
    );
    std::fs::write(d.join("one.csv"), "text,label\nfever,a\npain,a\n").unwrap();
    fails(
        &p(d, "one.csv"),
        &[
            "--text-column",
            "text",
            "--label",
            "label",
            "--batch-size",
            "1",
        ],
        "training needs at least two",
    );

    // The encoder: flags it needs, a file that is not sealed, a signature that fails, an
    // encoder that already classifies, an MLP.
    let out = confidant(&[
        "train",
        "--encoder",
        &p(d, "enc.sealed"),
        "--data",
        &train,
        "--label",
        "label",
        "--text-column",
        "text",
        "--key-file",
        &p(d, "enc.dek"),
        "--no-dp",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--publisher-key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--seal"), "{}", stderr(&out));
    let with_encoder = |encoder: &str, key: &str, publisher: &str, needle: &str| {
        let mut args = vec![
            "train".to_string(),
            "--encoder".into(),
            encoder.into(),
            "--key-file".into(),
            key.into(),
            "--publisher-key".into(),
            publisher.into(),
            "--data".into(),
            train.clone(),
            "--text-column".into(),
            "text".into(),
            "--label".into(),
            "label".into(),
            "--signing-key".into(),
            p(d, "keys/publisher.key"),
        ];
        args.extend(out_flags("bad"));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = confidant(&a);
        assert!(!out.status.success(), "{needle}: should fail");
        let e = stderr(&out);
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(!d.join("bad.sealed").exists(), "{needle}: nothing sealed");
    };
    let publisher = p(d, "keys/publisher.pub");
    with_encoder(
        &p(d, "hf/model.safetensors"),
        &p(d, "enc.dek"),
        &publisher,
        &format!(
            "--encoder {}: not a sealed model",
            p(d, "hf/model.safetensors")
        ),
    );
    assert!(
        confidant(&["keygen", "--out", &p(d, "other")])
            .status
            .success()
    );
    with_encoder(
        &p(d, "enc.sealed"),
        &p(d, "enc.dek"),
        &p(d, "other/publisher.pub"),
        "manifest signature check failed: publisher key",
    );
    // A data key of the wrong model: decryption fails after the signature passed.
    let hf = d.join("hf");
    seal_hf(
        d,
        &hf,
        &ENCODER.replace("tiny-enc", "other-enc"),
        "other-enc",
    );
    with_encoder(
        &p(d, "enc.sealed"),
        &p(d, "other-enc.dek"),
        &publisher,
        &format!(
            "--encoder {}: chunk 0 of 1 failed AES-256-GCM authentication",
            p(d, "enc.sealed")
        ),
    );
    let cls_dir = d.join("hf-cls");
    std::fs::create_dir_all(&cls_dir).unwrap();
    for (name, bytes) in confidant::engine::synthetic::tiny_bert(7, Some(2)).unwrap() {
        std::fs::write(cls_dir.join(name), bytes).unwrap();
    }
    seal_hf(
        d,
        &cls_dir,
        r#"{"id": "cls", "version": "1", "labels": ["a", "b"],
            "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
                             "max_tokens": 16, "truncation": "truncate"}}"#,
        "cls",
    );
    with_encoder(
        &p(d, "cls.sealed"),
        &p(d, "cls.dek"),
        &publisher,
        "model cls is a classification model; a head is trained on an embedding model",
    );
    let mlp = fixtures().join("mlp");
    let out = confidant(&[
        "seal",
        "--weights",
        mlp.join("weights.safetensors").to_str().unwrap(),
        "--config",
        mlp.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p(d, "keys/publisher.key"),
        "--out",
        &p(d, "mlp.sealed"),
        "--key-out",
        &p(d, "mlp.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    with_encoder(
        &p(d, "mlp.sealed"),
        &p(d, "mlp.dek"),
        &publisher,
        "is an mlp model, not a text encoder",
    );
}

/// The cached model and data directories, when both are there.
fn minilm_and_bbc() -> Option<(PathBuf, PathBuf)> {
    let dir = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
    };
    match (dir("CONFIDANT_MINILM_DIR"), dir("CONFIDANT_BBC_NEWS_DIR")) {
        (Some(m), Some(b)) => Some((m, b)),
        _ => None,
    }
}

#[test]
fn minilm_bbc_news_at_epsilon_3_is_accurate() {
    let Some((minilm, bbc)) = minilm_and_bbc() else {
        eprintln!(
            "skipped: set CONFIDANT_MINILM_DIR=$(bash scripts/fetch-minilm.sh) and \
             CONFIDANT_BBC_NEWS_DIR=$(bash scripts/fetch-bbc-news.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    seal_hf(
        d,
        &minilm,
        r#"{"id": "minilm", "version": "1.0.0",
            "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean",
                             "normalize": true, "max_tokens": 128, "truncation": "truncate"}}"#,
        "enc",
    );
    let v = json(&confidant(&[
        "train",
        "--encoder",
        &p(d, "enc.sealed"),
        "--key-file",
        &p(d, "enc.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
        "--data",
        bbc.join("train.csv").to_str().unwrap(),
        "--eval-data",
        bbc.join("test.csv").to_str().unwrap(),
        "--text-column",
        "text",
        "--label",
        "topic",
        "--epsilon",
        "3",
        "--delta",
        "1e-5",
        "--seal",
        &p(d, "bbc.sealed"),
        "--signing-key",
        &p(d, "keys/publisher.key"),
        "--key-out",
        &p(d, "bbc.dek"),
    ]));
    let accuracy = v["eval_accuracy"].as_f64().unwrap();
    eprintln!("MiniLM + DP-SGD head, BBC News held-out accuracy at ε=3: {accuracy:.4}");
    assert_eq!(v["eval_rows"], 468);
    assert!(accuracy >= 0.85, "{v}");
}
