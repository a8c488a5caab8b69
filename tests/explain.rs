//! Inference.Explain end to end: integrated gradients through the guards, completeness,
//! the explain scope, and refusal under a DP output policy.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::code;

use common::{Server, confidant, create_key, fixtures, stderr, stdout};
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
