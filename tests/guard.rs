//! Guards end to end over real gRPC: identity, scopes, purposes, rate limits, and the rule
//! that a refused request changes no counter.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{code, used_today};

use std::path::Path;

use common::{Server, confidant, create_key, fixtures, stderr};
use confidant::client::{Client, ClientError};
use tonic::Code;

/// Seals the fixture MLP with `purposes` into `dir` and returns the serve flags for it.
fn sealed_model_with_purposes(dir: &Path, purposes: &[&str]) -> Vec<String> {
    let fx = fixtures().join("mlp");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("logits.json")).unwrap()).unwrap();
    config["id"] = "fraud".into();
    config["purposes"] = serde_json::json!(purposes);
    std::fs::write(dir.join("fraud.json"), config.to_string()).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        &p("fraud.json"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("fraud.sealed"),
        "--key-out",
        &p("fraud.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    vec![
        "--data-dir".into(),
        p("data"),
        "--model".into(),
        p("fraud.sealed"),
        "--key-file".into(),
        p("fraud.dek"),
        "--publisher-key".into(),
        p("keys/publisher.pub"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guard_refuses_with_its_status_and_refusals_spend_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = sealed_model_with_purposes(d, &["fraud-detection"]);
    let data = d.join("data");
    let good = create_key(
        &data,
        "bank",
        &["--purposes", "fraud-detection,marketing", "--rpd", "3"],
    );
    let explain_only = create_key(
        &data,
        "auditor",
        &["--scopes", "explain", "--purposes", "fraud-detection"],
    );
    let revoked = create_key(&data, "former", &["--purposes", "fraud-detection"]);
    let out = confidant(&[
        "keys",
        "revoke",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "former",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let base = Client::connect(&server.addr, &server.ca()).await.unwrap();
    let row = vec![vec![0.5f32; 8]];

    // UNAUTHENTICATED: none, unknown, revoked.
    let e = base.clone().predict("fraud", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");
    let e = base
        .clone()
        .with_api_key("cfd_wrong")
        .unwrap()
        .predict("fraud", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");
    let e = base
        .clone()
        .with_api_key(&revoked)
        .unwrap()
        .with_purpose("fraud-detection")
        .unwrap()
        .predict("fraud", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");

    // PERMISSION_DENIED: scope, no purpose, a purpose the model does not allow, a purpose
    // the key does not hold.
    let e = base
        .clone()
        .with_api_key(&explain_only)
        .unwrap()
        .with_purpose("fraud-detection")
        .unwrap()
        .predict("fraud", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("predict scope"), "{e}");
    let bank = base.clone().with_api_key(&good).unwrap();
    let e = bank.clone().predict("fraud", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("requires a declared purpose"), "{e}");
    let e = bank
        .clone()
        .with_purpose("marketing")
        .unwrap()
        .predict("fraud", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("not allowed for model fraud"), "{e}");
    let e = bank
        .clone()
        .with_purpose("profiling")
        .unwrap()
        .predict("fraud", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");

    // INVALID_ARGUMENT: NaN and out of range.
    let mut ok = bank.clone().with_purpose("fraud-detection").unwrap();
    let e = ok.predict("fraud", &[vec![f32::NAN; 8]]).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let e = ok.predict("fraud", &[vec![99.0; 8]]).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // None of that spent the bank's quota, and the metrics count only refusals.
    assert_eq!(used_today(&data, "bank"), 0);
    let (status, text) = common::http_get(server.metrics_url.as_ref().unwrap());
    assert_eq!(status, 200);
    let m = |series: &str| common::metric(&text, series);
    assert_eq!(
        m("confidant_requests_total{model=\"fraud\",code=\"OK\"}"),
        0.0
    );
    assert_eq!(
        m("confidant_requests_total{model=\"fraud\",code=\"UNAUTHENTICATED\"}"),
        3.0
    );
    assert_eq!(
        m("confidant_requests_total{model=\"fraud\",code=\"PERMISSION_DENIED\"}"),
        4.0
    );
    assert_eq!(
        m("confidant_requests_total{model=\"fraud\",code=\"INVALID_ARGUMENT\"}"),
        2.0
    );
    assert_eq!(
        m("nv_inference_count{model=\"fraud\",version=\"0.1.0\"}"),
        0.0
    );
    assert_eq!(
        m("nv_inference_exec_count{model=\"fraud\",version=\"0.1.0\"}"),
        0.0
    );

    // The quota of 3 per day: three pass, the fourth is RESOURCE_EXHAUSTED with retry info.
    for _ in 0..3 {
        ok.predict("fraud", &row).await.unwrap();
    }
    let e = ok.predict("fraud", &row).await.unwrap_err();
    let ClientError::Status(status) = &e else {
        panic!("{e}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{e}");
    let retry_ms: u64 = status
        .metadata()
        .get("retry-after-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_ms > 0 && retry_ms <= 86_400_000, "{retry_ms}");
    use tonic_types::StatusExt;
    let info = status
        .get_details_retry_info()
        .expect("google.rpc.RetryInfo detail");
    assert!(info.retry_delay.is_some());
    assert_eq!(used_today(&data, "bank"), 3);
    let (_, text) = common::http_get(server.metrics_url.as_ref().unwrap());
    let m = |series: &str| common::metric(&text, series);
    assert_eq!(
        m("nv_inference_request_success{model=\"fraud\",version=\"0.1.0\"}"),
        3.0
    );
    assert_eq!(
        m("nv_inference_request_failure{model=\"fraud\",version=\"0.1.0\"}"),
        10.0
    );
    assert_eq!(
        m("nv_inference_count{model=\"fraud\",version=\"0.1.0\"}"),
        3.0
    );
    assert_eq!(
        m("nv_inference_exec_count{model=\"fraud\",version=\"0.1.0\"}"),
        3.0
    );
    assert_eq!(
        m("confidant_request_duration_seconds_count{model=\"fraud\"}"),
        13.0
    );
    assert_eq!(
        m("confidant_compute_duration_seconds_count{model=\"fraud\"}"),
        3.0
    );

    // The CLI prints the status name and exits non-zero.
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &good,
        "--purpose",
        "fraud-detection",
        "--model",
        "fraud",
        "--input",
        "[[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]]",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("RESOURCE_EXHAUSTED"),
        "{}",
        stderr(&out)
    );
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--model",
        "fraud",
        "--input",
        "[[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]]",
    ]);
    assert!(stderr(&out).contains("UNAUTHENTICATED"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_get_exactly_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = sealed_model_with_purposes(d, &[]);
    let data = d.join("data");
    let key = create_key(&data, "hammer", &["--rpd", "20"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.predict("fraud", &[vec![0.1f32; 8]]).await })
        })
        .collect();
    let mut ok = 0;
    let mut exhausted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if code(&e) == Code::ResourceExhausted => exhausted += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(exhausted, 30);
    assert_eq!(used_today(&data, "hammer"), 20);
}

#[test]
fn keys_cli_lists_without_secrets_and_validates_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(
        &data,
        "alice",
        &[
            "--scopes",
            "predict,explain",
            "--purposes",
            "a,b",
            "--rpm",
            "60",
        ],
    );
    let out = confidant(&["keys", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alice") && !text.contains(&key), "{text}");
    for (args, needle) in [
        (vec!["--scopes", "root"], "unknown scope"),
        (vec!["--scopes", ""], "at least one scope"),
        (vec!["--rpd", "0"], "at least 1"),
        (vec!["--purposes", "bad purpose"], "purpose"),
    ] {
        let mut all = vec![
            "keys",
            "create",
            "--data-dir",
            data.to_str().unwrap(),
            "--principal",
            "x",
        ];
        all.extend(args);
        let out = confidant(&all);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    let out = confidant(&["keys", "list", "--data-dir", "/nonexistent/dir"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/dir"));
    let out = confidant(&[
        "keys",
        "revoke",
        "--data-dir",
        data.to_str().unwrap(),
        "--key-id",
        "ffff",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no live key"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_of_a_real_run_verifies_holds_no_inputs_and_breaks_at_an_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let key = server.api_key.clone().unwrap();
    let mut client = server.client().await;
    // Distinctive values that must never reach a log.
    let mut row = confidant::demo::SAMPLE_ROW.to_vec();
    row[0] = 13.371337;
    let p = client.predict("demo", &[row.clone()]).await.unwrap();
    // The small class probability prints as a distinctive string (for example 1.7e-12).
    let out_value = p.outputs[0][0];
    assert!(out_value.to_string().len() > 6, "{out_value}");
    let mut bad = row.clone();
    bad[5] = f32::NAN;
    assert!(client.predict("demo", &[bad]).await.is_err());
    let anon = Client::connect(&server.addr, &server.ca()).await.unwrap();
    assert!(anon.clone().predict("demo", &[row.clone()]).await.is_err());
    let logs = server.logs();
    assert!(server.stop().success());

    let audit_dir = data.join("audit");
    let out = confidant(&["audit", "verify", audit_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");

    // Nothing secret or personal in the server's logs or in the audit log.
    let segment = std::fs::read_to_string(audit_dir.join("segment-000001.jsonl")).unwrap();
    let exported = common::audit_export(&data);
    for (name, text) in [
        ("server log", &logs),
        ("audit log", &segment),
        ("exported audit log", &exported),
    ] {
        assert!(
            !text.contains("13.371337") && !text.contains("13.37134"),
            "{name} holds an input value"
        );
        assert!(!text.contains(&key), "{name} holds the API key");
        assert!(
            !text.contains(&out_value.to_string()),
            "{name} holds an output score"
        );
    }
    assert!(exported.contains("\"decision\":\"allow\"") && exported.contains("UNAUTHENTICATED"));
    assert!(exported.contains("INVALID_ARGUMENT"));
    assert!(
        !segment.contains("UNAUTHENTICATED") && !segment.contains("\"decision\""),
        "events are encrypted on disk"
    );

    // Edit one line: verify fails, naming that line.
    let mut lines: Vec<String> = segment.lines().map(str::to_string).collect();
    let target = 2;
    lines[target] = lines[target].replacen("\"ts_ms\":", "\"ts_ms\":9", 1);
    std::fs::write(
        audit_dir.join("segment-000001.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let out = confidant(&["audit", "verify", audit_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("line {}", target + 1)),
        "{}",
        stderr(&out)
    );
}

/// The README's tour makes a key before the first `serve`: `keys create` makes the data
/// directory (0700) and its database, and the server then accepts the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_makes_a_missing_data_dir_that_the_server_then_uses() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not").join("yet");
    let out = confidant(&[
        "keys",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "early",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let key = v["api_key"].as_str().unwrap().to_string();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(data.join("confidant.db").is_file());
    // Listing or revoking still needs a directory that exists.
    let missing = dir.path().join("missing");
    let out = confidant(&["keys", "list", "--data-dir", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!missing.exists());

    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let mut client = server.client().await.with_api_key(&key).unwrap();
    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    let resp = client.predict("demo", &row).await.unwrap();
    assert_eq!(resp.outputs.len(), 1);
}

/// The bytes of a message as they are: what a client with its own encoder sends.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut v = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// Issue 19's report: a confidant.v1 request whose `texts` held invalid UTF-8 was answered
/// INTERNAL (tonic-prost's codec calls every decode error internal; this test failed so
/// before `proto::codec::StrictCodec`, with `Code::Internal`). A request that does not decode
/// is the caller's error: INVALID_ARGUMENT, naming the problem.
///
/// Two workers: the server's stop at the end waits for the client's connection to close,
/// which the runtime must drive while the test's thread waits for the exit (on one thread the
/// stop hung until the helper killed the server 20 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_is_invalid_argument() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let key = server.api_key.clone().expect("the demo key");
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    // PredictRequest { model (1): "demo", texts (4): [0xff 0xfe] }: both are `string`s.
    let bad_utf8: Vec<u8> = [&[0x0a, 4][..], b"demo", &[0x22, 2, 0xff, 0xfe]].concat();
    // And a length that runs past the end of the message.
    let truncated: Vec<u8> = [&[0x0a, 40][..], b"demo"].concat();
    for (body, what) in [(bad_utf8, "UTF-8"), (truncated, "buffer underflow")] {
        let mut request = tonic::Request::new(body);
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                request,
                "/confidant.v1.Inference/Predict".parse().unwrap(),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("does not decode") && err.message().contains(what),
            "{err:?}"
        );
    }
    // The connection still serves a lawful request.
    let mut c = server.client().await;
    c.predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
        .await
        .unwrap();
}
