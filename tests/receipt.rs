//! Verifiable responses end to end: a real server signs a receipt for an answer, the CLI
//! saves it with the request and response, and `confidant receipt verify` checks it offline
//! against the evidence that binds the server's receipt key and a policy pinning its
//! measurement. Any changed byte of the receipt, the response or the evidence fails it; a
//! receipt of another server is refused; the receipt states the call's audit record.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::{Server, confidant, stderr, stdout};
use tonic::metadata::MetadataValue;

fn measurement() -> String {
    let out = confidant(&["attest", "measurement"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["measurement"].as_str().unwrap().to_string()
}

fn write_policy(dir: &Path, measurement: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(
        &p,
        format!("measurements = [\"{measurement}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    p
}

fn fetch_evidence(server: &Server, out: &Path) {
    let o = confidant(&[
        "receipt",
        "evidence",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `confidant predict` of the demo's sample row, asking for a receipt saved to `receipt`.
fn predict_command(server: &Server, receipt: &Path) -> std::process::Command {
    let row = serde_json::to_string(&vec![confidant::demo::SAMPLE_ROW.to_vec()]).unwrap();
    common::command(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        server.api_key.as_deref().unwrap(),
        "--model",
        "demo",
        "--input",
        &row,
        "--receipt-out",
        receipt.to_str().unwrap(),
    ])
}

fn predict_with_receipt(server: &Server, receipt: &Path) -> serde_json::Value {
    let o = predict_command(server, receipt).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `receipt verify`, its exit status and verdict.
fn verify(
    receipt: &Path,
    evidence: &Path,
    policy: &Path,
    with_files: bool,
) -> (bool, serde_json::Value) {
    let request = format!("{}.request.json", receipt.display());
    let response = format!("{}.response.json", receipt.display());
    let mut args = vec![
        "receipt",
        "verify",
        receipt.to_str().unwrap(),
        "--evidence",
        evidence.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ];
    if with_files {
        args.extend(["--request", &request, "--response", &response]);
    }
    let o = confidant(&args);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("verdict JSON: {e}: {} {}", stdout(&o), stderr(&o)));
    (o.status.success(), v)
}

fn failed_checks(v: &serde_json::Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_receipt_verifies_offline_and_any_changed_byte_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let evidence = dir.path().join("evidence.json");
    fetch_evidence(&server, &evidence);
    let policy = write_policy(dir.path(), &measurement());
    let receipt = dir.path().join("r.cose");
    let printed = predict_with_receipt(&server, &receipt);

    let (ok, v) = verify(&receipt, &evidence, &policy, true);
    assert!(ok, "{v:#}");
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["request_checked"], true);
    assert_eq!(v["response_checked"], true);
    let st = &v["statement"];
    assert_eq!(st["rpc"], "predict");
    assert_eq!(st["model"], "demo");
    assert_eq!(st["request_id"], printed["request_id"]);
    // /metrics counts it: one receipt, under one signature (a nonce made ahead, or whole).
    let (_, text) = common::http_get(server.metrics_url.as_ref().unwrap());
    let series = |name: &str| common::metric(&text, name);
    assert_eq!(series("confidant_receipts_total"), 1.0);
    assert_eq!(
        series("confidant_receipt_signatures_total{nonce=\"ahead\"}")
            + series("confidant_receipt_signatures_total{nonce=\"whole\"}"),
        1.0
    );

    // Explain answers carry receipts too; the explanation is what the receipt states.
    let explained = dir.path().join("e.cose");
    let row = serde_json::to_string(&vec![confidant::demo::SAMPLE_ROW.to_vec()]).unwrap();
    let o = confidant(&[
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
        &row,
        "--receipt-out",
        explained.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ok, v) = verify(&explained, &evidence, &policy, true);
    assert!(ok, "{v:#}");
    assert_eq!(v["statement"]["rpc"], "explain");
    let response_path = PathBuf::from(format!("{}.response.json", explained.display()));
    let mut response: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response_path).unwrap()).unwrap();
    let x = response["attributions"][0][3].as_f64().unwrap();
    response["attributions"][0][3] = serde_json::json!(x * 2.0 + 1e-3);
    std::fs::write(&response_path, serde_json::to_vec(&response).unwrap()).unwrap();
    let (ok, v) = verify(&explained, &evidence, &policy, true);
    assert!(!ok);
    assert_eq!(failed_checks(&v), ["response"], "{v:#}");

    // The receipt states the call's own audit record: its seq, chain hash and time.
    server.stop();
    let log = common::audit_export(&data);
    let record: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"]["request_id"] == printed["request_id"])
        .expect("the call's audit record");
    assert_eq!(record["seq"], st["audit_seq"]);
    assert_eq!(record["hash"], st["audit_hash"]);
    assert_eq!(record["ts_ms"], st["time_ms"]);

    // Any changed byte of the receipt.
    let original = std::fs::read(&receipt).unwrap();
    let bad = dir.path().join("bad.cose");
    for i in (0..original.len()).step_by(7) {
        let mut b = original.clone();
        b[i] ^= 0x04;
        std::fs::write(&bad, &b).unwrap();
        let (ok, v) = verify(&bad, &evidence, &policy, false);
        assert!(!ok, "byte {i} of the receipt changed unnoticed: {v:#}");
    }
    // The response: one output value changed.
    let response_path = PathBuf::from(format!("{}.response.json", receipt.display()));
    let mut response: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response_path).unwrap()).unwrap();
    let x = response["outputs"][0][0].as_f64().unwrap();
    response["outputs"][0][0] = serde_json::json!(x + 1e-3);
    std::fs::write(&response_path, serde_json::to_vec(&response).unwrap()).unwrap();
    let (ok, v) = verify(&receipt, &evidence, &policy, true);
    assert!(!ok);
    assert_eq!(failed_checks(&v), ["response"], "{v:#}");
    // The evidence: a changed byte.
    let mut ev = std::fs::read(&evidence).unwrap();
    let mid = ev.len() / 2;
    ev[mid] ^= 0x01;
    let bad_evidence = dir.path().join("bad-evidence.json");
    std::fs::write(&bad_evidence, &ev).unwrap();
    let (ok, v) = verify(&receipt, &bad_evidence, &policy, false);
    assert!(!ok);
    assert!(
        failed_checks(&v).contains(&"evidence_digest".to_string()),
        "{v:#}"
    );
    // A policy pinning another measurement.
    let other = write_policy(&dir.path().join("."), &"ab".repeat(48));
    let (ok, v) = verify(&receipt, &evidence, &other, false);
    assert!(!ok);
    assert_eq!(failed_checks(&v), ["evidence"], "{v:#}");
}

/// `confidant predict … --receipt-out R | head -c 1`: the answer cannot be printed (the
/// reader is gone, and the command ends on `SIGPIPE`, as CLI tools do), but the receipt,
/// the signed record of what the call was charged, was saved first and verifies.
#[test]
fn a_receipt_is_saved_even_when_the_answer_cannot_be_printed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let evidence = dir.path().join("evidence.json");
    fetch_evidence(&server, &evidence);
    let policy = write_policy(dir.path(), &measurement());
    let receipt = dir.path().join("r.cose");
    // A pipe whose reading end is closed: every write to it fails (EPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = predict_command(&server, &receipt)
        .stdout(writer)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (ok, v) = verify(&receipt, &evidence, &policy, true);
    assert!(ok, "{v:#}");
    assert_eq!(v["statement"]["rpc"], "predict");
}

#[test]
fn a_receipt_of_another_server_or_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path(), &measurement());
    let a = Server::start(&["--data-dir", dir.path().join("a").to_str().unwrap()]);
    let b = Server::start(&["--data-dir", dir.path().join("b").to_str().unwrap()]);
    let (ev_a, ev_b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    fetch_evidence(&a, &ev_a);
    fetch_evidence(&b, &ev_b);
    let receipt_b = dir.path().join("b.cose");
    predict_with_receipt(&b, &receipt_b);
    // With its own evidence, B's receipt verifies (same binary, same measurement)...
    assert!(verify(&receipt_b, &ev_b, &policy, true).0);
    // ...but not as A's: A's evidence binds another key.
    let (ok, v) = verify(&receipt_b, &ev_a, &policy, true);
    assert!(!ok);
    assert_eq!(
        failed_checks(&v),
        ["evidence_digest", "key_binding"],
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_over_every_api_and_refusals_that_spend_nothing() {
    use confidant::proto::inference as oip;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Two answers a day: a refusal that spent one would leave a single answer.
    let key = common::create_key(&data, "client", &["--rpd", "2"]);
    let server = Server::start(&["--data-dir", data.to_str().unwrap(), "--require-receipts"]);
    let ca = server.ca();
    // A malformed salt: INVALID_ARGUMENT, before anything is spent.
    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    let features = row[0].len();
    for bad in ["zz", "abcd", &"ab".repeat(65)] {
        let mut req = tonic::Request::new(confidant::proto::confidant::v1::PredictRequest {
            model: "demo".into(),
            input: Some(confidant::proto::confidant::v1::Tensor {
                shape: vec![1, features as u64],
                values: row[0].clone(),
            }),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-api-key", MetadataValue::try_from(key.as_str()).unwrap());
        req.metadata_mut()
            .insert("x-confidant-receipt", MetadataValue::try_from(bad).unwrap());
        let e = confidant::proto::confidant::v1::inference_client::InferenceClient::new(
            server.channel().await,
        )
        .predict(req)
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(
            e.message().contains("x-confidant-receipt"),
            "{}",
            e.message()
        );
    }
    // Required: a client that sent no salt still gets a receipt, and the salt the server drew.
    let mut client = confidant::client::Client::connect(&server.addr, &ca)
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let p = client.predict("demo", &row).await.unwrap();
    let receipt = p.receipt.clone().expect("a receipt");
    let salt = p.receipt_salt.clone().expect("the drawn salt");
    assert_eq!(salt.len(), 32);
    let opened = confidant::receipt::envelope::open(&receipt).unwrap();
    let st = confidant::receipt::Statement::from_cbor(&opened.statement).unwrap();
    let request = confidant::receipt::digest::RequestFile {
        salt: hex::encode(&salt),
        inputs: Some(row.clone()),
        texts: None,
    };
    assert_eq!(st.request, request.digest().unwrap());
    let response = confidant::receipt::digest::response(
        1,
        p.outputs[0].len() as u64,
        &p.outputs[0],
        &p.labels,
    );
    assert_eq!(st.response, response);

    // The Open Inference Protocol: ModelInfer with the client's salt.
    let mut oip_client =
        oip::grpc_inference_service_client::GrpcInferenceServiceClient::new(server.channel().await);
    let mut req = tonic::Request::new(oip::ModelInferRequest {
        model_name: "demo".into(),
        inputs: vec![oip::model_infer_request::InferInputTensor {
            name: "input__0".into(),
            datatype: "FP32".into(),
            shape: vec![1, features as i64],
            contents: Some(oip::InferTensorContents {
                fp32_contents: row[0].clone(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-api-key", MetadataValue::try_from(key.as_str()).unwrap());
    let client_salt = "cd".repeat(24);
    req.metadata_mut().insert(
        "x-confidant-receipt",
        MetadataValue::try_from(client_salt.as_str()).unwrap(),
    );
    let resp = oip_client.model_infer(req).await.unwrap().into_inner();
    let param = |name: &str| match resp.parameters.get(name)?.parameter_choice.as_ref()? {
        oip::infer_parameter::ParameterChoice::StringParam(s) => Some(s.clone()),
        _ => None,
    };
    use base64::Engine as _;
    let cose = base64::engine::general_purpose::STANDARD
        .decode(param("confidant_receipt").expect("a receipt"))
        .unwrap();
    assert!(param("confidant_receipt_salt").is_none());
    let st = confidant::receipt::Statement::from_cbor(
        &confidant::receipt::envelope::open(&cose).unwrap().statement,
    )
    .unwrap();
    assert_eq!(st.rpc, "model_infer");
    let request = confidant::receipt::digest::RequestFile {
        salt: client_salt,
        inputs: Some(row.clone()),
        texts: None,
    };
    assert_eq!(st.request, request.digest().unwrap());
    // Both answers of the day were spent by the two calls above, none by the refusals.
    let e = client.predict("demo", &row).await.unwrap_err();
    assert_eq!(common::code(&e), tonic::Code::ResourceExhausted, "{e}");
}
