//! Text models end to end: a sealed BERT bundle served next to an MLP by the real binary
//! over TLS gRPC (`confidant.v1` and the Open Inference Protocol), with the guards, quotas,
//! audit records and metrics that MLPs have.
//!
//! The tiny random BERT of `confidant::engine::synthetic::tiny_bert` runs everywhere;
//! `minilm_over_the_wire_matches_sentence_transformers` needs all-MiniLM-L6-v2 from
//! `scripts/fetch-minilm.sh`'s cache and says so (and passes without comparing) when the
//! cache is absent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::{
    Server, audit_export, code, confidant, create_key, fixtures, p, seal_hf, stderr, stdout,
};
use confidant::client::Client;
use confidant::engine::TextEncoder;
use confidant::engine::bert::BertEncoder;
use confidant::engine::config::EncoderConfig;
use confidant::proto::inference as oip;
use confidant::sealed::bundle::ModelDirectory;
use tonic::Code;

const TINY_CONFIG: &str = r#"{"id": "tiny-text", "version": "1.0.0", "purposes": ["search"],
  "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean", "normalize": true,
                   "max_tokens": 16, "truncation": "refuse"}}"#;

/// The tiny BERT's directory under `dir/hf` and its files.
fn tiny_dir(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let files = confidant::engine::synthetic::tiny_bert(7, None).unwrap();
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for (name, bytes) in &files {
        std::fs::write(hf.join(name), bytes).unwrap();
    }
    (hf, files)
}

/// The encoder the server should be running, built in process from the same files.
fn in_process(files: Vec<(String, Vec<u8>)>, config: &str) -> BertEncoder {
    let config = EncoderConfig::from_json(config.as_bytes()).unwrap();
    let dir = ModelDirectory::from_files(files);
    BertEncoder::load(
        &config,
        dir.bert_files().unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot / (na * nb)
}

/// `confidant predict` against `server` with `extra` flags; its JSON.
fn predict_cli(server: &Server, key: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        key,
    ];
    args.extend_from_slice(extra);
    let out = confidant(&args);
    assert!(out.status.success(), "predict: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Triton's BYTES encoding: each element a 4-byte little-endian length and its bytes.
fn triton_bytes(texts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in texts {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out
}

async fn oip_client(
    server: &Server,
) -> oip::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel> {
    let channel = server.channel().await;
    oip::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel)
}

fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r.metadata_mut()
        .insert("x-purpose", "search".parse().unwrap());
    r
}

fn infer_request(
    shape: Vec<i64>,
    raw: Option<Vec<u8>>,
    bytes: Vec<Vec<u8>>,
) -> oip::ModelInferRequest {
    oip::ModelInferRequest {
        model_name: "tiny-text".into(),
        inputs: vec![oip::model_infer_request::InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape,
            contents: (!bytes.is_empty()).then(|| oip::InferTensorContents {
                bytes_contents: bytes,
                ..Default::default()
            }),
            ..Default::default()
        }],
        raw_input_contents: raw.into_iter().collect(),
        ..Default::default()
    }
}

fn floats(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_text_model_is_served_next_to_an_mlp_with_every_guard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    let (hf, files) = tiny_dir(d);
    seal_hf(d, &hf, TINY_CONFIG, "tiny");
    let fx = fixtures().join("mlp");
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p(d, "keys/publisher.key"),
        "--out",
        &p(d, "mlp.sealed"),
        "--key-out",
        &p(d, "mlp.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = d.join("data");
    let key = create_key(&data, "analyst", &["--purposes", "search", "--rpd", "6"]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "tiny.sealed"),
        "--key-file",
        &p(d, "tiny.dek"),
        "--model",
        &p(d, "mlp.sealed"),
        "--key-file",
        &p(d, "mlp.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let encoder = in_process(files, TINY_CONFIG);
    let texts = [
        "the patient denied fever.",
        "",
        "Contract approved, 日本 é",
        "hello",
    ];

    // 1. `confidant predict --text` (spends 1 of 6).
    let mut args = vec!["--model", "tiny-text", "--purpose", "search"];
    for t in &texts {
        args.extend_from_slice(&["--text", t]);
    }
    let v = predict_cli(&server, &key, &args);
    assert_eq!(v["model"], "tiny-text");
    let got = rows(&v["embeddings"]);
    let want = encoder.embed(&texts).unwrap();
    assert_eq!(got.len(), texts.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), 16);
        let c = cosine(g, w);
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
    // --input-jsonl gives the same vectors (spends 2 of 6).
    let jsonl: String = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect();
    std::fs::write(d.join("texts.jsonl"), jsonl).unwrap();
    let v = predict_cli(
        &server,
        &key,
        &[
            "--model",
            "tiny-text",
            "--purpose",
            "search",
            "--input-jsonl",
            &p(d, "texts.jsonl"),
        ],
    );
    assert_eq!(rows(&v["embeddings"]), got);

    // 2. The Rust client: ListModels describes it; refusals with their codes, none spending.
    let client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap()
        .with_purpose("search")
        .unwrap();
    let models = client.clone().list_models().await.unwrap();
    assert_eq!(models.len(), 2, "the MLP and the text model");
    let text = models.iter().find(|m| m.id == "tiny-text").unwrap();
    assert_eq!(
        (
            text.kind.as_str(),
            text.task.as_str(),
            text.max_tokens,
            text.output_width
        ),
        ("bert", "embedding", 16, 16)
    );
    assert_eq!(text.truncation, "refuse");
    assert_eq!(text.output, "embedding");
    let out = confidant(&[
        "models",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "tiny-text" && m["task"] == "embedding" && m["kind"] == "bert"),
        "{listed}"
    );
    let used = common::used_today(&data, "analyst");
    let refusals: Vec<(&str, Vec<String>, Code, &str)> = vec![
        (
            "over the token limit (refuse)",
            vec!["the patient note was not approved and the claim was denied with pain ".repeat(3)],
            Code::InvalidArgument,
            "accepts at most 16 (truncation: refuse)",
        ),
        (
            "over the bytes per text",
            vec!["a".repeat(70_000)],
            Code::InvalidArgument,
            "at most 65536 are accepted per text",
        ),
        ("no texts", vec![], Code::InvalidArgument, "no texts"),
    ];
    for (name, texts, want, needle) in refusals {
        let e = client
            .clone()
            .predict_texts("tiny-text", texts)
            .await
            .expect_err(name);
        assert_eq!(code(&e), want, "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    let e = client
        .clone()
        .predict("tiny-text", &[vec![0.5f32; 8]])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("takes texts"), "{e}");
    let e = client
        .clone()
        .predict_texts("fixture-softmax", vec!["hello".into()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("takes numeric rows"), "{e}");
    let e = client
        .clone()
        .with_purpose("marketing")
        .unwrap()
        .predict_texts("tiny-text", vec!["hello".into()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert_eq!(
        common::used_today(&data, "analyst"),
        used,
        "a refused request spends no quota"
    );

    // 3. The Open Inference Protocol: BYTES in raw (Triton's encoding) or bytes_contents,
    // shape [n] or [n, 1]; FP32 out under the names of ModelMetadata.
    let mut o = oip_client(&server).await;
    let meta = o
        .model_metadata(authed(
            oip::ModelMetadataRequest {
                name: "tiny-text".into(),
                version: String::new(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.inputs[0].name, "text");
    assert_eq!(meta.inputs[0].datatype, "BYTES");
    assert_eq!(meta.outputs[0].name, "embedding");
    assert_eq!(meta.outputs[0].datatype, "FP32");
    assert_eq!(meta.outputs[0].shape, vec![-1, 16]);
    let config = o
        .model_config(authed(
            oip::ModelConfigRequest {
                name: "tiny-text".into(),
                version: String::new(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.input[0].data_type, oip::DataType::TypeString as i32);
    assert_eq!(config.input[0].dims, vec![1]);
    assert_eq!(config.output[0].dims, vec![16]);
    let two = [texts[0], texts[2]];
    let raw = o
        .model_infer(authed(
            infer_request(vec![2, 1], Some(triton_bytes(&two)), Vec::new()),
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw.outputs[0].name, "embedding");
    assert_eq!(raw.outputs[0].shape, vec![2, 16]);
    let values = floats(&raw.raw_output_contents[0]);
    for (row, want) in values.chunks(16).zip([&got[0], &got[2]]) {
        assert!(cosine(row, want) >= 0.9999);
    }
    let typed = o
        .model_infer(authed(
            infer_request(
                vec![2],
                None,
                two.iter().map(|t| t.as_bytes().to_vec()).collect(),
            ),
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let typed_values = &typed.outputs[0].contents.as_ref().unwrap().fp32_contents;
    assert_eq!(typed_values, &values);
    // Invalid UTF-8 and a broken length prefix: INVALID_ARGUMENT, nothing spent.
    let used = common::used_today(&data, "analyst");
    let bad_utf8 = o
        .model_infer(authed(
            infer_request(vec![1], Some(vec![2, 0, 0, 0, 0xff, 0xfe]), Vec::new()),
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_utf8.code(), Code::InvalidArgument, "{bad_utf8:?}");
    assert!(
        bad_utf8.message().contains("not valid UTF-8"),
        "{bad_utf8:?}"
    );
    let bad_len = o
        .model_infer(authed(
            infer_request(vec![1], Some(vec![9, 0, 0, 0, b'a']), Vec::new()),
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_len.code(), Code::InvalidArgument, "{bad_len:?}");
    assert_eq!(common::used_today(&data, "analyst"), used);

    // 4. Metrics count tokens; the audit log holds a keyed digest, never the text.
    let (status, metrics) = common::http_get(server.metrics_url.as_deref().expect("metrics url"));
    assert_eq!(status, 200);
    let tokens = metrics
        .lines()
        .find(|l| l.starts_with("confidant_text_tokens_total") && l.contains("tiny-text"))
        .expect("a token counter for the text model");
    assert!(!tokens.ends_with(" 0"), "{tokens}");
    drop(server);
    let audit = audit_export(&data);
    assert!(!audit.contains("patient"), "the audit log holds a text");
    assert!(
        !audit.contains("Contract approved"),
        "the audit log holds a text"
    );
    let predicts: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.to_string().contains("tiny-text@1.0.0"))
        .collect();
    assert!(predicts.len() >= 4, "{audit}");
    assert!(
        predicts
            .iter()
            .any(|r| r.to_string().contains("input_hmac")),
        "{audit}"
    );
}

fn minilm_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CONFIDANT_MINILM_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("CONFIDANT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/confidant")))?;
    let dir = cache.join("all-minilm-l6-v2-0.1.2");
    dir.join(".complete").exists().then_some(dir)
}

/// The acceptance check over the wire: every sentence of `tests/fixtures/text/sentences.jsonl`
/// (empty, non-ASCII, longer than 256 tokens) through `confidant predict --input-jsonl`
/// against sentence-transformers' embeddings (`minilm-reference.json`) and the in-process
/// engine: cosine ≥ 0.9999 for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_over_the_wire_matches_sentence_transformers() {
    let Some(hf) = minilm_dir() else {
        eprintln!(
            "SKIPPED minilm_over_the_wire_matches_sentence_transformers: all-MiniLM-L6-v2 is \
             not cached; run scripts/fetch-minilm.sh (PyPI) or set CONFIDANT_MINILM_DIR"
        );
        return;
    };
    let config = r#"{"id": "minilm", "version": "1.0.0",
      "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean",
                       "normalize": true, "max_tokens": 256, "truncation": "truncate"}}"#;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    seal_hf(d, &hf, config, "minilm");
    let data = d.join("data");
    let key = create_key(&data, "search", &[]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "minilm.sealed"),
        "--key-file",
        &p(d, "minilm.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let sentences = fixtures().join("text/sentences.jsonl");
    let v = predict_cli(
        &server,
        &key,
        &[
            "--model",
            "minilm",
            "--input-jsonl",
            sentences.to_str().unwrap(),
        ],
    );
    let got = rows(&v["embeddings"]);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("text/minilm-reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = std::fs::read_to_string(&sentences)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let refs = reference["texts"].as_array().unwrap();
    assert_eq!(got.len(), texts.len());
    assert_eq!(refs.len(), texts.len());
    let files: Vec<(String, Vec<u8>)> = ["model.safetensors", "config.json", "tokenizer.json"]
        .iter()
        .map(|n| ((*n).to_string(), std::fs::read(hf.join(n)).unwrap()))
        .chain(
            ["1_Pooling/config.json", "modules.json"]
                .iter()
                .filter_map(|n| {
                    std::fs::read(hf.join(n))
                        .ok()
                        .map(|b| ((*n).to_string(), b))
                }),
        )
        .collect();
    let encoder = in_process(files, config);
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let local = encoder.embed(&text_refs).unwrap();
    for (i, g) in got.iter().enumerate() {
        let st: Vec<f32> = refs[i]["embedding_256"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(g, &st);
        assert!(
            c >= 0.9999,
            "text {i}: cosine with sentence-transformers {c}"
        );
        let c = cosine(g, &local[i]);
        assert!(
            c >= 0.9999,
            "text {i}: cosine with the in-process engine {c}"
        );
    }
}

/// A refused HTTP request: name, headers, body, status and a phrase of the message.
type RefusalCase<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    serde_json::Value,
    u16,
    &'a str,
);

/// One HTTPS request to the embeddings API (hyper over rustls, trusting the server's
/// certificate): status, headers and JSON body.
async fn https(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> (u16, hyper::HeaderMap, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::pem::PemObject;
    let url = server
        .http_url
        .as_deref()
        .expect("the embeddings API is on");
    let authority = url
        .strip_prefix("https://")
        .unwrap()
        .trim_end_matches("/v1");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&server.ca()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = sender
        .send_request(req.body(Full::new(hyper::body::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_embeddings_api_runs_the_same_guards_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    let (hf, files) = tiny_dir(d);
    seal_hf(d, &hf, TINY_CONFIG, "tiny");
    let data = d.join("data");
    let key = create_key(&data, "analyst", &["--purposes", "search", "--rpd", "3"]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "tiny.sealed"),
        "--key-file",
        &p(d, "tiny.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let encoder = in_process(files, TINY_CONFIG);
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str()), ("x-purpose", "search")];
    let texts = ["hello world", "日本 é"];
    let want = encoder.embed(&texts).unwrap();

    // GET /v1/models.
    let (status, _, models) = https(&server, "GET", "/v1/models", &auth, None).await;
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["data"][0]["id"], "tiny-text");
    let (status, _, e) = https(&server, "GET", "/v1/models", &[], None).await;
    assert_eq!(status, 401, "{e}");
    assert_eq!(e["error"]["type"], "authentication_error");

    // POST /v1/embeddings, floats (spends 1 of 3, with a receipt) and base64 (2 of 3).
    let body = serde_json::json!({"model": "tiny-text", "input": texts});
    let salt = "5a".repeat(20);
    let with_receipt = [auth[0], auth[1], ("x-confidant-receipt", salt.as_str())];
    let (status, headers, v) =
        https(&server, "POST", "/v1/embeddings", &with_receipt, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    {
        use base64::Engine as _;
        let cose = base64::engine::general_purpose::STANDARD
            .decode(headers["x-confidant-receipt"].to_str().unwrap())
            .unwrap();
        assert!(headers.get("x-confidant-receipt-salt").is_none());
        let opened = confidant::receipt::envelope::open(&cose).unwrap();
        let st = confidant::receipt::Statement::from_cbor(&opened.statement).unwrap();
        assert_eq!(st.rpc, "embeddings");
        let request = confidant::receipt::digest::RequestFile {
            salt: salt.clone(),
            inputs: None,
            texts: Some(texts.iter().map(|t| t.to_string()).collect()),
        };
        assert_eq!(st.request, request.digest().unwrap());
        let rows: Vec<Vec<f32>> = (0..texts.len())
            .map(|i| {
                v["data"][i]["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let flat: Vec<f32> = rows.concat();
        let response = confidant::receipt::digest::response(
            rows.len() as u64,
            rows[0].len() as u64,
            &flat,
            &[] as &[&str],
        );
        assert_eq!(st.response, response);
    }
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "tiny-text");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(v["data"][i]["index"], i);
        let got: Vec<f32> = v["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert!(cosine(&got, w) >= 0.9999);
    }
    let body = serde_json::json!({"model": "tiny-text", "input": texts[1],
                                  "encoding_format": "base64"});
    let (status, _, v) = https(&server, "POST", "/v1/embeddings", &auth, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let got: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(cosine(&got, &want[1]) >= 0.9999);

    // Refusals: OpenAI error bodies with the matching HTTP status, none spending.
    let used = common::used_today(&data, "analyst");
    let marketing = [
        ("authorization", bearer.as_str()),
        ("x-purpose", "marketing"),
    ];
    let cases: Vec<RefusalCase<'_>> = vec![
        (
            "no key",
            &[],
            serde_json::json!({"model": "tiny-text", "input": "a"}),
            401,
            "credentials",
        ),
        (
            "wrong purpose",
            &marketing,
            serde_json::json!({"model": "tiny-text", "input": "a"}),
            403,
            "marketing",
        ),
        (
            "unknown model",
            &auth,
            serde_json::json!({"model": "nope", "input": "a"}),
            404,
            "nope",
        ),
        (
            "token arrays",
            &auth,
            serde_json::json!({"model": "tiny-text", "input": [[1, 2]]}),
            400,
            "token arrays",
        ),
        (
            "over the token limit",
            &auth,
            serde_json::json!({"model": "tiny-text", "input": "the claim ".repeat(20)}),
            400,
            "truncation: refuse",
        ),
        (
            "dimensions",
            &auth,
            serde_json::json!({"model": "tiny-text", "input": "a", "dimensions": 8}),
            400,
            "16-dimensional",
        ),
        (
            "not JSON",
            &auth,
            serde_json::json!("x"),
            400,
            "not an embeddings request",
        ),
    ];
    for (name, headers, body, want_status, needle) in cases {
        let (status, _, e) = https(&server, "POST", "/v1/embeddings", headers, Some(body)).await;
        assert_eq!(status, want_status, "{name}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{name}: {message}");
    }
    assert_eq!(
        common::used_today(&data, "analyst"),
        used,
        "refusals spend nothing"
    );
    // The third request spends the last of the day; the fourth is a 429 with Retry-After.
    let body = serde_json::json!({"model": "tiny-text", "input": "a"});
    let (status, _, _) = https(&server, "POST", "/v1/embeddings", &auth, Some(body.clone())).await;
    assert_eq!(status, 200);
    let (status, headers, e) = https(&server, "POST", "/v1/embeddings", &auth, Some(body)).await;
    assert_eq!(status, 429, "{e}");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert!(headers.contains_key("retry-after"));
    drop(server);
    let audit = audit_export(&data);
    assert!(!audit.contains("日本"), "the audit log holds a text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_classifier_returns_scores_and_labels_and_spends_its_privacy_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
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
    seal_hf(d, &hf, open, "triage");
    seal_hf(d, &hf, private, "triage-dp");
    let data = d.join("data");
    let key = create_key(&data, "nurse", &[]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "triage.sealed"),
        "--key-file",
        &p(d, "triage.dek"),
        "--model",
        &p(d, "triage-dp.sealed"),
        "--key-file",
        &p(d, "triage-dp.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let encoder = in_process(files, open);
    let texts = ["the patient was in pain", "hello world"];
    let want = encoder.classify(&texts).unwrap();

    // Scores and labels, as for an MLP.
    let v = predict_cli(
        &server,
        &key,
        &["--model", "triage", "--text", texts[0], "--text", texts[1]],
    );
    assert!(v.get("embeddings").is_none(), "{v}");
    let outputs = rows(&v["outputs"]);
    let labels = ["routine", "urgent", "spam"];
    for (i, (g, w)) in outputs.iter().zip(&want).enumerate() {
        assert!(
            (g.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "softmax row {i}"
        );
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
        let argmax = (0..3).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
        assert_eq!(v["labels"][i], labels[argmax]);
    }

    // 20 KiB of text (tokenized off the async worker), each cut to 32 tokens.
    let long = "the patient was in pain ".repeat(43);
    let out = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap()
        .predict_texts("triage", vec![long.clone(); 20])
        .await
        .unwrap();
    assert_eq!(out.tokens, 20 * 32);
    let cut = encoder.classify(&[long.as_str()]).unwrap();
    for row in &out.outputs {
        for (a, b) in row.iter().zip(&cut[0]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    // Under noisy_argmax: a label per text, no scores, and a receipt of ε spent.
    let v = predict_cli(
        &server,
        &key,
        &[
            "--model",
            "triage-dp",
            "--text",
            texts[0],
            "--text",
            texts[1],
        ],
    );
    assert_eq!(v["privacy"]["mechanism"], "noisy_argmax", "{v}");
    assert!(
        v["privacy"]["epsilon_charged"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["privacy"]["epsilon_spent"].as_f64().unwrap() > 0.0, "{v}");
    for l in v["labels"].as_array().unwrap() {
        assert!(labels.contains(&l.as_str().unwrap()), "{v}");
    }
    assert!(
        rows(&v["outputs"]).iter().all(Vec::is_empty),
        "no scores under noisy_argmax: {v}"
    );

    // /v1/embeddings refuses a classifier before spending.
    let bearer = format!("Bearer {key}");
    let (status, _, e) = https(
        &server,
        "POST",
        "/v1/embeddings",
        &[("authorization", bearer.as_str())],
        Some(serde_json::json!({"model": "triage", "input": "a"})),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gives class scores and labels, not embeddings"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counted_in_tokens_charges_each_text_request_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    let (hf, _) = tiny_dir(d);
    seal_hf(d, &hf, TINY_CONFIG, "tiny");
    std::fs::write(d.join("serve.toml"), "[rate]\nunit = \"tokens\"\n").unwrap();
    let data = d.join("data");
    let key = create_key(&data, "analyst", &["--purposes", "search", "--rpd", "20"]);
    let server = Server::start(&[
        "--config",
        &p(d, "serve.toml"),
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "tiny.sealed"),
        "--key-file",
        &p(d, "tiny.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    let client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap()
        .with_purpose("search")
        .unwrap();
    // "hello world" and "the patient": [CLS] w w [SEP] each, 8 tokens.
    let out = client
        .clone()
        .predict_texts(
            "tiny-text",
            vec!["hello world".into(), "the patient".into()],
        )
        .await
        .unwrap();
    assert_eq!(out.tokens, 8);
    assert_eq!(common::used_today(&data, "analyst"), 8);
    // 13 more tokens would pass the day's 20: refused whole, nothing spent.
    let e = client
        .clone()
        .predict_texts(
            "tiny-text",
            vec!["the patient note was not approved and the claim was denied .".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    assert!(e.to_string().contains("daily quota of 20 tokens"), "{e}");
    assert_eq!(common::used_today(&data, "analyst"), 8);
    client
        .clone()
        .predict_texts("tiny-text", vec!["hello".into()])
        .await
        .unwrap();
    assert_eq!(common::used_today(&data, "analyst"), 11);
}

/// `confidant bench` drives a text model with the texts given, over both protocols, and
/// refuses texts for an MLP and a text model without texts.
#[test]
fn bench_drives_a_text_model_with_the_texts_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        confidant(&["keygen", "--out", &p(d, "keys")])
            .status
            .success()
    );
    let (hf, _) = tiny_dir(d);
    seal_hf(d, &hf, TINY_CONFIG, "tiny");
    let fx = fixtures().join("mlp");
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p(d, "keys/publisher.key"),
        "--out",
        &p(d, "mlp.sealed"),
        "--key-out",
        &p(d, "mlp.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = d.join("data");
    let key = create_key(&data, "bencher", &["--purposes", "search"]);
    let server = Server::start(&[
        "--data-dir",
        &p(d, "data"),
        "--model",
        &p(d, "tiny.sealed"),
        "--key-file",
        &p(d, "tiny.dek"),
        "--model",
        &p(d, "mlp.sealed"),
        "--key-file",
        &p(d, "mlp.dek"),
        "--publisher-key",
        &p(d, "keys/publisher.pub"),
    ]);
    std::fs::write(
        d.join("texts.jsonl"),
        "{\"text\": \"Contract approved, 日本 é\"}\n\n{\"text\": \"\"}\n",
    )
    .unwrap();
    let bench = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--addr",
            &server.addr,
            "--tls-ca",
            server.cert.to_str().unwrap(),
            "--api-key",
            &key,
            "--purpose",
            "search",
            "--model",
            model,
            "--concurrency",
            "2",
            "--window",
            "200ms",
            "--warmup",
            "100ms",
            "--max-trials",
            "3",
        ];
        args.extend_from_slice(extra);
        confidant(&args)
    };
    let jsonl = p(d, "texts.jsonl");
    for protocol in ["oip", "confidant"] {
        let out_dir = p(d, protocol);
        let out = bench(
            "tiny-text",
            &[
                "--protocol",
                protocol,
                "--batch",
                "1,3",
                "--text",
                "the patient denied fever.",
                "--input-jsonl",
                &jsonl,
                "--out",
                &out_dir,
            ],
        );
        assert!(out.status.success(), "{protocol}: {}", stderr(&out));
        assert!(stdout(&out).contains("texts: 3"), "{}", stdout(&out));
        let results: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(&out_dir).join("results.json")).unwrap(),
        )
        .unwrap();
        let points = results.as_array().unwrap();
        assert_eq!(points.len(), 2, "{results}");
        for pt in points {
            assert_eq!(pt["errors"], 0, "{protocol}: {pt}");
            assert!(pt["requests"].as_u64().unwrap() > 0, "{protocol}: {pt}");
            assert_eq!(pt["protocol"], protocol);
            let ratio =
                pt["inferences_per_s"].as_f64().unwrap() / pt["requests_per_s"].as_f64().unwrap();
            assert!((ratio - pt["batch"].as_f64().unwrap()).abs() < 1e-9, "{pt}");
        }
    }
    // Texts for an MLP, none for a text model, a file without texts, a malformed line,
    // and flags that only random rows use.
    std::fs::write(d.join("empty.jsonl"), "\n").unwrap();
    std::fs::write(d.join("bad.jsonl"), "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n").unwrap();
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "fixture-softmax",
            &["--text", "hello"],
            "model fixture-softmax takes numeric rows (",
        ),
        (
            "tiny-text",
            &["--protocol", "confidant"],
            "model tiny-text is a text model: give the texts to send with --text or --input-jsonl",
        ),
        (
            "tiny-text",
            &["--input-jsonl", &p(d, "empty.jsonl")],
            "no texts in the file",
        ),
        (
            "tiny-text",
            &["--input-jsonl", &p(d, "bad.jsonl")],
            "line 2: expected an object with a string \"text\" field",
        ),
        ("tiny-text", &["--text", "a", "--seed", "3"], "--seed"),
        (
            "tiny-text",
            &["--text", "a", "--input-range", "0,2"],
            "--input-range",
        ),
    ];
    for (model, extra, needle) in cases {
        let out = bench(model, extra);
        assert!(!out.status.success(), "{extra:?}");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
}
