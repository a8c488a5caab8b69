//! Adversarial-sensitivity screening and clip-mode validation, end to end over real gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{code, used_today};

use common::{Server, confidant, fixtures, stderr};
use confidant::client::Client;
use tonic::Code;

/// Rows of the held-out breast-cancer split, clamped into the demo model's signed ranges.
fn test_rows() -> Vec<Vec<f32>> {
    let config = confidant::demo::config().unwrap();
    let mut reader = csv::Reader::from_path(fixtures().join("breast_cancer_test.csv")).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (0..config.feature_count())
                .map(|f| {
                    let v: f32 = r[f].parse().unwrap();
                    v.clamp(config.input.min[f], config.input.max[f])
                })
                .collect()
        })
        .collect()
}

fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + t * (y - x)).collect()
}

/// Walks the segment between a row of each class, by bisection over Predict calls, to a row
/// on the model's decision boundary: the kind of input an evasion attack produces. A row the
/// server rejects on the way is such a row.
async fn boundary_row(client: &mut Client) -> Vec<f32> {
    let rows = test_rows();
    // Stable rows of each class (a reject-mode server refuses the borderline ones).
    let mut by_label: Vec<(String, Vec<f32>)> = Vec::new();
    for row in &rows {
        if let Ok(p) = client.predict("demo", std::slice::from_ref(row)).await
            && by_label.iter().all(|(l, _)| *l != p.labels[0])
        {
            by_label.push((p.labels[0].clone(), row.clone()));
            if by_label.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(by_label.len(), 2, "the split has both classes");
    let first = by_label[0].0.clone();
    let (a, b) = (by_label[0].1.clone(), by_label[1].1.clone());
    let (mut lo, mut hi) = (0.0f32, 1.0f32);
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        let row = lerp(&a, &b, mid);
        let p = match client.predict("demo", std::slice::from_ref(&row)).await {
            Ok(p) => p,
            Err(e) if code(&e) == Code::InvalidArgument => return row,
            Err(e) => panic!("{e}"),
        };
        if p.labels[0] == first {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lerp(&a, &b, lo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_rows_are_flagged_and_ordinary_rows_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A tighter threshold than the manifest's (the server config may tighten it), so that
    // the randomized score of a boundary row is far above it: the test is not flaky.
    let toml = dir.path().join("serve.toml");
    std::fs::write(
        &toml,
        "[screening.demo]\ncopies = 16\nnoise = 0.005\nthreshold = 0.03\naction = \"flag\"\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
    ]);
    let mut client = server.client().await;

    let ordinary = client
        .predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
        .await
        .unwrap();
    assert!(ordinary.flagged_rows.is_empty());

    let edge = boundary_row(&mut client).await;
    // Screening is randomized: five copies of the boundary row make a miss of all five
    // vanishingly unlikely.
    let mut rows = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    rows.extend(std::iter::repeat_n(edge, 5));
    let p = client.predict("demo", &rows).await.unwrap();
    assert!(!p.flagged_rows.is_empty(), "the boundary rows are flagged");
    assert!(
        !p.flagged_rows.contains(&0),
        "the ordinary row is not: {:?}",
        p.flagged_rows
    );
    assert_eq!(p.outputs.len(), 6, "flag mode still answers");

    // The audit log records the flag (and no input).
    let stopped = server.stop();
    assert!(stopped.success());
    let audit = common::audit_export(&data);
    assert!(audit.contains("\"flagged_rows\":["), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_config_can_escalate_to_reject_and_a_rejection_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml = dir.path().join("serve.toml");
    // Try to loosen the threshold (ignored: the manifest's is mandatory) and escalate the
    // action to reject (allowed).
    std::fs::write(
        &toml,
        "[screening.demo]\ncopies = 16\nnoise = 0.5\nthreshold = 0.03\naction = \"reject\"\n",
    )
    .unwrap();
    // Find a boundary row on a flag-mode server (the same embedded demo model).
    let edge = {
        let probe_dir = dir.path().join("probe");
        let probe = Server::start(&["--data-dir", probe_dir.to_str().unwrap()]);
        let mut c = probe.client().await;
        boundary_row(&mut c).await
    };
    let server = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
        "--rpd",
        "10",
    ]);
    let mut client = server.client().await;
    let principal = "demo";
    let before = used_today(&data, principal);
    let mut rows = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    rows.extend(std::iter::repeat_n(edge, 5));
    let err = client.predict("demo", &rows).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.contains("row ") && !msg.contains("row 0 ") && msg.contains("sensitivity"),
        "{msg}"
    );
    assert!(!msg.contains("0.15") && !msg.contains("threshold"), "{msg}");
    // Ordinary rows still pass.
    client
        .predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
        .await
        .unwrap();
    // After a graceful stop (which returns unused quota leases) the database holds exactly
    // the one request served: the rejection spent nothing.
    assert!(server.stop().success());
    assert_eq!(
        used_today(&data, principal),
        before + 1,
        "a rejection spends no quota"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_mode_clamps_out_of_range_values_and_still_refuses_nan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = fixtures().join("mlp");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("logits.json")).unwrap()).unwrap();
    config["input"]["out_of_range"] = "clip".into();
    let id = config["id"].as_str().unwrap().to_string();
    let min: Vec<f32> = serde_json::from_value(config["input"]["min"].clone()).unwrap();
    let max: Vec<f32> = serde_json::from_value(config["input"]["max"].clone()).unwrap();
    std::fs::write(d.join("clip.json"), config.to_string()).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        &p("clip.json"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = p("data");
    let key = common::create_key(std::path::Path::new(&data), "clinic", &[]);
    let server = Server::start(&[
        "--data-dir",
        &data,
        "--model",
        &p("m.sealed"),
        "--key-file",
        &p("m.dek"),
        "--publisher-key",
        &p("keys/publisher.pub"),
    ]);
    let mut client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let width = min.len();
    let wild: Vec<f32> = (0..width)
        .map(|f| {
            if f % 2 == 0 {
                max[f] + 1e6
            } else {
                min[f] - 1e6
            }
        })
        .collect();
    let clamped: Vec<f32> = (0..width)
        .map(|f| if f % 2 == 0 { max[f] } else { min[f] })
        .collect();
    let a = client
        .predict(&id, std::slice::from_ref(&wild))
        .await
        .unwrap();
    let b = client.predict(&id, &[clamped]).await.unwrap();
    assert_eq!(
        a.outputs, b.outputs,
        "out-of-range values are clamped to the range"
    );
    let mut nan = wild;
    nan[0] = f32::NAN;
    let err = client.predict(&id, &[nan]).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("row 0, feature 0"), "{err}");
}
