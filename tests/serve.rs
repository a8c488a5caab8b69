//! End to end: the real `confidant` binary, real TLS gRPC on loopback, the real client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Server, confidant, create_key, fixtures, stderr, stdout};
use confidant::client::ClientError;
use confidant::proto::confidant::v1 as pb;
use tonic::Code;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

async fn raw_client(
    server: &Server,
) -> pb::inference_client::InferenceClient<tonic::transport::Channel> {
    let channel = server.channel().await;
    pb::inference_client::InferenceClient::new(channel)
}

fn request(model: &str, shape: Vec<u64>, values: Vec<f32>) -> pb::PredictRequest {
    pb::PredictRequest {
        model: model.into(),
        version: String::new(),
        input: Some(pb::Tensor { shape, values }),
        texts: Vec::new(),
    }
}

/// Wraps a message with an API key (and optionally a purpose) in its metadata.
fn authed<T>(message: T, key: &str, purpose: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    if let Some(p) = purpose {
        r.metadata_mut().insert("x-purpose", p.parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_the_embedded_model_over_tls() {
    let dir = tmp();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    assert!(
        server
            .logs_with(&["NOT CONFIDENTIAL"], 20)
            .contains("NOT CONFIDENTIAL"),
        "no loud demo warning"
    );
    assert!(data.join("tls/cert.pem").exists());

    let mut client = server.client().await;
    let p = client
        .predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
        .await
        .unwrap();
    assert_eq!(p.model, "demo");
    assert_eq!(p.labels, vec!["benign"]);
    let sum: f32 = p.outputs[0].iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "softmax rows sum to 1, got {sum}");
    assert_eq!(p.request_id.len(), 36);

    let models = client.list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].features.len(), 30);
    let sha = models[0].weights_sha256.clone();

    // Health says SERVING once models are loaded.
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // SIGTERM drains and exits cleanly.
    let demo_key = server
        .api_key
        .clone()
        .expect("demo key shown on first start");
    // The issue-2 contract form works with no key flag on embedded defaults: the CLI finds the
    // demo key in the data dir.
    let row_json = serde_json::to_string(&[confidant::demo::SAMPLE_ROW.to_vec()]).unwrap();
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "demo",
        "--input",
        &row_json,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(got["labels"][0], "benign");
    let logs_before = server.logs();
    let status = server.stop();
    assert!(status.success(), "exit status {status}: {logs_before}");

    // A second start reuses the sealed demo and its key, and shows no key again.
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    assert!(server.api_key.is_none(), "the demo key is shown only once");
    let models = server
        .client()
        .await
        .with_api_key(&demo_key)
        .unwrap()
        .list_models()
        .await
        .unwrap();
    assert_eq!(models[0].weights_sha256, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_code() {
    let dir = tmp();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-rows",
        "8",
    ]);
    let mut c = raw_client(&server).await;
    let key = server
        .api_key
        .clone()
        .expect("demo key printed on first start");
    let row = confidant::demo::SAMPLE_ROW.to_vec();

    let cases: Vec<(&str, pb::PredictRequest, Code, &str)> = vec![
        (
            "wrong width",
            request("demo", vec![1, 29], row[..29].to_vec()),
            Code::InvalidArgument,
            "29 features",
        ),
        (
            "empty batch",
            request("demo", vec![0, 30], vec![]),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "unknown model",
            request("nope", vec![1, 30], row.clone()),
            Code::NotFound,
            "nope",
        ),
        (
            "no model",
            request("", vec![1, 30], row.clone()),
            Code::InvalidArgument,
            "model must be set",
        ),
        (
            "rank 1",
            request("demo", vec![30], row.clone()),
            Code::InvalidArgument,
            "[rows, features]",
        ),
        (
            "count mismatch",
            request("demo", vec![2, 30], row.clone()),
            Code::InvalidArgument,
            "needs 60 values",
        ),
        (
            "too many rows",
            request("demo", vec![9, 30], row.repeat(9)),
            Code::InvalidArgument,
            "at most 8",
        ),
        (
            "NaN",
            request("demo", vec![1, 30], {
                let mut r = row.clone();
                r[3] = f32::NAN;
                r
            }),
            Code::InvalidArgument,
            "row 0, feature 3 (mean area)",
        ),
        (
            "infinity",
            request("demo", vec![2, 30], {
                let mut r = row.repeat(2);
                r[31] = f32::INFINITY;
                r
            }),
            Code::InvalidArgument,
            "row 1, feature 1",
        ),
        (
            "out of range",
            request("demo", vec![1, 30], {
                let mut r = row.clone();
                r[0] = 1e6;
                r
            }),
            Code::InvalidArgument,
            "outside",
        ),
        (
            "version mismatch",
            pb::PredictRequest {
                version: "9.9.9".into(),
                ..request("demo", vec![1, 30], row.clone())
            },
            Code::FailedPrecondition,
            "9.9.9",
        ),
    ];
    for (name, req, code, needle) in cases {
        let err = c.predict(authed(req, &key, None)).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains(needle),
            "{name}: {:?}",
            err.message()
        );
    }
    let missing = pb::PredictRequest {
        model: "demo".into(),
        version: String::new(),
        input: None,
        texts: Vec::new(),
    };
    assert_eq!(
        c.predict(authed(missing, &key, None))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    // The server still serves after all that.
    let ok = c
        .predict(authed(request("demo", vec![1, 30], row), &key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.labels, vec!["benign"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let dir = tmp();
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-message-bytes",
        "65536",
    ]);
    let mut c = raw_client(&server).await;
    let rows = 1000u64;
    let req = request(
        "demo",
        vec![rows, 30],
        confidant::demo::SAMPLE_ROW.repeat(rows as usize),
    );
    let err = c.predict(req).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
}

#[test]
fn tour_keygen_seal_inspect_serve_predict_matches_the_reference() {
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let fx = fixtures().join("mlp");

    let out = confidant(&["keygen", "--out", &p("keys")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(d.join("keys/publisher.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sealed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(sealed["key_resource"], "default/models/fixture-softmax");
    assert_eq!(std::fs::read(d.join("m.dek")).unwrap().len(), 32);

    let out = confidant(&[
        "inspect",
        &p("m.sealed"),
        "--publisher-key",
        &p("keys/publisher.pub"),
        "--key-file",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["manifest"]["model"]["id"], "fixture-softmax");

    // Sealing over an existing file is refused without --force.
    let again = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m2.dek"),
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));

    let api_key = create_key(&d.join("data"), "tour", &["--purposes", "testing"]);
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
    assert!(
        server
            .logs_with(&["development path"], 20)
            .contains("development path"),
        "key-file path must warn"
    );

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let inputs = reference["inputs"].to_string();
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &api_key,
        "--model",
        "fixture-softmax",
        "--input",
        &inputs,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(got["model"], "fixture-softmax");
    let want = reference["outputs"]["softmax"].as_array().unwrap();
    let got_rows = got["outputs"].as_array().unwrap();
    assert_eq!(got_rows.len(), want.len());
    for (g, w) in got_rows.iter().zip(want) {
        for (g, w) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-3), "{g} vs {w}");
        }
    }
    assert_eq!(got["labels"].as_array().unwrap().len(), want.len());

    // A refused call exits non-zero and names the status code.
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &api_key,
        "--model",
        "fixture-softmax",
        "--input",
        "[[1, 2, 3]]",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("INVALID_ARGUMENT"),
        "{}",
        stderr(&out)
    );
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &api_key,
        "--model",
        "nope",
        "--input",
        "[[1, 2, 3, 4, 5, 6, 7, 8]]",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));

    // CSV input, with a header matched by feature names.
    let csv = d.join("in.csv");
    let mut text = String::from("x7,x6,x5,x4,x3,x2,x1,x0,unused\n");
    for row in reference["inputs"].as_array().unwrap() {
        let mut cells: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        cells.reverse();
        cells.push("zzz".into());
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    std::fs::write(&csv, text).unwrap();
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &api_key,
        "--model",
        "fixture-softmax",
        "--input-csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv_got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(csv_got["outputs"], got["outputs"]);
}

#[test]
fn a_flipped_byte_makes_inspect_and_serve_refuse_and_name_the_check() {
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let fx = fixtures().join("mlp");
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("logits.json").to_str().unwrap(),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let original = std::fs::read(d.join("m.sealed")).unwrap();
    let manifest_len = u32::from_be_bytes(original[10..14].try_into().unwrap()) as usize;
    // One flip in each region: magic, version, manifest, signature, ciphertext.
    let regions = [
        (2, "bad magic"),
        (9, "format version"),
        (14 + manifest_len / 2, "manifest"),
        (14 + manifest_len + 10, "signature"),
        (original.len() - 40, "ciphertext SHA-256 check failed"),
    ];
    for (at, needle) in regions {
        let mut bytes = original.clone();
        bytes[at] ^= 0x20;
        std::fs::write(d.join("t.sealed"), &bytes).unwrap();
        let out = confidant(&[
            "inspect",
            &p("t.sealed"),
            "--publisher-key",
            &p("keys/publisher.pub"),
        ]);
        assert!(!out.status.success(), "inspect accepted a flip at {at}");
        assert!(
            stderr(&out).contains(needle),
            "inspect, flip at {at}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("t.sealed"),
            "the error names the file"
        );

        let started = Server::try_start(&[
            "--data-dir",
            &p("data"),
            "--model",
            &p("t.sealed"),
            "--key-file",
            &p("m.dek"),
            "--publisher-key",
            &p("keys/publisher.pub"),
        ]);
        let log = started
            .err()
            .unwrap_or_else(|| panic!("serve accepted a flip at {at}"));
        assert!(log.contains(needle), "serve, flip at {at}: {log}");
    }
    // And with digest checks skipped, the AEAD tag still catches a ciphertext flip.
    let mut bytes = original.clone();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(d.join("t.sealed"), &bytes).unwrap();
    let log = Server::try_start(&[
        "--data-dir",
        &p("data"),
        "--model",
        &p("t.sealed"),
        "--key-file",
        &p("m.dek"),
        "--publisher-key",
        &p("keys/publisher.pub"),
        "--skip-digest-check",
    ])
    .err()
    .expect("serve accepted a ciphertext flip");
    assert!(log.contains("failed AES-256-GCM authentication"), "{log}");
}

#[test]
fn cli_rejects_bad_flags_with_clear_messages() {
    let out = confidant(&["serve", "--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));

    let out = confidant(&["serve", "--model", "a.sealed"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--key-file"), "{}", stderr(&out));

    let out = confidant(&["serve", "--model", "a.sealed", "--key-file", "a.dek"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("publisher key"), "{}", stderr(&out));

    let out = confidant(&["serve", "--max-batch", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_batch"), "{}", stderr(&out));

    let out = confidant(&["inspect", "/nonexistent/m.sealed"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/m.sealed"),
        "{}",
        stderr(&out)
    );

    let out = confidant(&[
        "predict",
        "--model",
        "demo",
        "--input",
        "[[1,2]]",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );

    let out = confidant(&[
        "predict",
        "--model",
        "demo",
        "--input",
        "[[1,\"x\"]]",
        "--tls-ca",
        file!(),
    ]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_plaintext_urls() {
    let err = confidant::client::Client::connect("http://127.0.0.1:1", b"")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Address { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_serves_several_models_from_a_config_file() {
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let fx = fixtures().join("mlp");
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    for variant in ["softmax", "logits"] {
        let out = confidant(&[
            "seal",
            "--weights",
            fx.join("weights.safetensors").to_str().unwrap(),
            "--config",
            fx.join(format!("{variant}.json")).to_str().unwrap(),
            "--signing-key",
            &p("keys/publisher.key"),
            "--out",
            &p(&format!("{variant}.sealed")),
            "--key-out",
            &p(&format!("{variant}.dek")),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let toml = format!(
        r#"
data_dir = "{data}"
max_rows_per_request = 16
publisher_keys = ["{pk}"]

[batch]
max_batch = 32
max_wait_us = 100
queue_capacity = 64

[[models]]
sealed = "{s1}"
key_file = "{k1}"

[[models]]
sealed = "{s2}"
key_file = "{k2}"
"#,
        data = p("data"),
        pk = p("keys/publisher.pub"),
        s1 = p("softmax.sealed"),
        k1 = p("softmax.dek"),
        s2 = p("logits.sealed"),
        k2 = p("logits.dek"),
    );
    std::fs::write(d.join("serve.toml"), toml).unwrap();
    let api_key = create_key(&d.join("data"), "many", &[]);
    let server = Server::start(&["--config", &p("serve.toml")]);
    let mut client = server.client().await.with_api_key(&api_key).unwrap();
    let mut ids: Vec<String> = client
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["fixture-logits", "fixture-softmax"]);

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(reference["inputs"].clone()).unwrap();
    for variant in ["softmax", "logits"] {
        let p = client
            .predict(&format!("fixture-{variant}"), &rows)
            .await
            .unwrap();
        let want: Vec<Vec<f64>> =
            serde_json::from_value(reference["outputs"][variant].clone()).unwrap();
        for (g, w) in p.outputs.iter().flatten().zip(want.iter().flatten()) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "{variant}: {g} vs {w}"
            );
        }
    }
    // The config file's row limit applies.
    let err = client
        .predict("fixture-logits", &vec![rows[0].clone(); 17])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Status(ref s) if s.code() == Code::InvalidArgument),
        "{err}"
    );

    // Many concurrent callers all get their own rows back (the batcher splits correctly).
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut c = client.clone();
        let row: Vec<f32> = (0..8).map(|j| ((i * 8 + j) as f32 * 0.37).sin()).collect();
        tasks.push(tokio::spawn(async move {
            let batched = c
                .predict("fixture-logits", std::slice::from_ref(&row))
                .await
                .unwrap();
            (row, batched.outputs[0].clone())
        }));
    }
    for t in tasks {
        let (row, out) = t.await.unwrap();
        let alone = client.predict("fixture-logits", &[row]).await.unwrap();
        for (a, b) in out.iter().zip(&alone.outputs[0]) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    // Unknown keys in the config file are refused with the file name.
    std::fs::write(
        d.join("bad.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_port = 5\n",
    )
    .unwrap();
    let out = confidant(&["serve", "--config", &p("bad.toml")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad.toml") && stderr(&out).contains("listen_port"),
        "{}",
        stderr(&out)
    );
}

/// Runs `confidant ARGS` with its stdout a pipe whose reading end is already closed (as
/// `confidant … | head` leaves it), and returns the exit status and stderr.
fn run_into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(common::bin())
        .args(args)
        .env_remove("CONFIDANT_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// Before the change, `confidant inspect … | head` panicked on the closed pipe ("failed
/// printing to stdout: Broken pipe", exit 101). Now a command whose output pipe closes ends
/// quietly, as other Unix tools do (by SIGPIPE, with nothing on stderr).
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let fx = fixtures().join("mlp");
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        fx.join("softmax.json").to_str().unwrap(),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (sealed, public) = (p("m.sealed"), p("keys/publisher.pub"));
    for args in [
        vec![
            "inspect",
            sealed.as_str(),
            "--publisher-key",
            public.as_str(),
        ],
        vec!["attest", "measurement"],
    ] {
        let (status, err) = run_into_closed_pipe(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {status}: {err}"
        );
    }
}

/// A client that stops reading cannot hold a stop. An HTTP/2 connection ends gracefully only
/// once its client acknowledges the server's GOAWAY; a client that never reads again once held
/// `SIGTERM` for as long as it stayed (the test helper's SIGKILL came 20 s later). Past
/// `--drain-secs` its connection is dropped, the log says so, the server exits cleanly and its
/// audit log, final checkpoint included, verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_hold_the_stop() {
    let d = tmp();
    let data = d.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap(), "--drain-secs", "1"]);
    let (addr, ca) = (server.addr.clone(), server.ca());
    let key = server.api_key.clone().expect("the demo key");
    // The client's connection lives on a runtime of its own, which is not polled after one
    // answer: its end of the connection neither reads the GOAWAY nor closes.
    let (answered_tx, answered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let stuck = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let mut c = confidant::client::Client::connect(&addr, &ca)
                .await
                .unwrap()
                .with_api_key(&key)
                .unwrap();
            c.predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
                .await
                .unwrap();
            c
        });
        answered_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(client);
    });
    answered_rx.recv().unwrap();

    let (status, stopped_in, logs) = server.stop_timed();
    release_tx.send(()).unwrap();
    stuck.join().unwrap();
    assert!(status.success(), "{status}: {logs}");
    assert!(
        logs.contains("connections still open at the drain deadline are dropped"),
        "{logs}"
    );
    assert!(
        stopped_in < std::time::Duration::from_secs(10),
        "the stop took {stopped_in:?}:\n{logs}"
    );
    let out = confidant(&["audit", "verify", data.join("audit").to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// `--drain-secs` (and `drain_secs` in the config file) outside 1..=3600 is refused with the
/// range, before the data directory is created.
#[test]
fn a_drain_deadline_out_of_range_is_refused_before_anything_is_written() {
    let d = tmp();
    let data = d.path().join("data");
    let config = d.path().join("confidant.toml");
    std::fs::write(&config, "drain_secs = 3601\n").unwrap();
    let data_s = data.to_str().unwrap();
    for (args, got) in [
        (vec!["--drain-secs", "0"], "0"),
        (vec!["--config", config.to_str().unwrap()], "3601"),
    ] {
        let out = confidant(&[&["serve", "--data-dir", data_s][..], &args].concat());
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("drain_secs must be 1..=3600, got {got}")),
            "{}",
            stderr(&out)
        );
    }
    assert!(!data.exists(), "a refused start created {}", data.display());
}
