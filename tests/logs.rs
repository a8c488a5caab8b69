//! No input, output, key or API key ever reaches the logs: an end-to-end run at full
//! verbosity, in both log formats, and a grep of every line it wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Server, confidant, create_key, stderr};
use confidant::client::Client;

/// The demo's sample row, nudged so every value prints as a distinctive decimal.
fn distinctive_row() -> Vec<f32> {
    let config = confidant::demo::config().unwrap();
    confidant::demo::SAMPLE_ROW
        .iter()
        .enumerate()
        .map(|(f, v)| {
            let lo = config.input.min[f];
            let hi = config.input.max[f];
            (v * 1.000_137 + 0.000_173).clamp(lo, hi)
        })
        .collect()
}

/// Every way a value could be printed: Display, Debug, and JSON.
fn spellings(v: f32) -> Vec<String> {
    let mut s = vec![
        format!("{v}"),
        format!("{v:?}"),
        serde_json::json!(v).to_string(),
    ];
    s.retain(|x| x.len() >= 6); // short spellings (like "0.5") could occur by chance
    s
}

async fn exercise(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::try_start_env(
        &["--data-dir", data.to_str().unwrap(), "--log-format", format],
        &[("RUST_LOG", "trace")],
    )
    .unwrap();
    let demo_key = server.api_key.clone().expect("demo key printed once");
    let user_key = create_key(&data, "analyst", &["--purposes", "demonstration"]);

    let row = distinctive_row();
    let mut client = server.client().await;
    let ok = client
        .predict("demo", std::slice::from_ref(&row))
        .await
        .unwrap();
    let mut analyst = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&user_key)
        .unwrap()
        .with_purpose("demonstration")
        .unwrap();
    analyst
        .predict("demo", &[row.clone(), row.clone()])
        .await
        .unwrap();
    // Refusals: an out-of-range value, a NaN, a wrong key, no key, a bad purpose.
    let mut wild = row.clone();
    wild[3] = 987_654.3;
    assert!(client.predict("demo", &[wild]).await.is_err());
    let mut nan = row.clone();
    nan[5] = f32::NAN;
    assert!(client.predict("demo", &[nan]).await.is_err());
    let wrong = "cfd_AAAAthisIsNotARealKeyButLooksLikeOneZZZZZZZZZZZZZZ";
    let mut bad = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(wrong)
        .unwrap();
    assert!(
        bad.predict("demo", std::slice::from_ref(&row))
            .await
            .is_err()
    );
    let mut nokey = Client::connect(&server.addr, &server.ca()).await.unwrap();
    assert!(
        nokey
            .predict("demo", std::slice::from_ref(&row))
            .await
            .is_err()
    );
    assert!(
        analyst
            .clone()
            .with_purpose("marketing")
            .unwrap()
            .predict("demo", std::slice::from_ref(&row))
            .await
            .is_err()
    );
    // The CLI path too.
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &user_key,
        "--purpose",
        "demonstration",
        "--model",
        "demo",
        "--input",
        &serde_json::to_string(&row).unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let captured = std::sync::Arc::clone(&server.stderr);
    assert!(server.stop().success());
    let logs = captured.lock().unwrap().join("\n");

    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.len() > 20,
        "a trace-level run logs plenty ({} lines)",
        lines.len()
    );
    if format == "json" {
        for l in &lines {
            assert!(
                serde_json::from_str::<serde_json::Value>(l).is_ok(),
                "not JSON: {l}"
            );
        }
    }
    let mut secrets: Vec<(String, String)> = vec![
        ("demo API key".into(), demo_key.clone()),
        ("analyst API key".into(), user_key.clone()),
        ("presented wrong key".into(), wrong.to_string()),
        ("the key prefix".into(), "cfd_".into()),
        ("out-of-range input".into(), "987654".into()),
    ];
    for v in &row {
        for s in spellings(*v) {
            secrets.push(("an input value".into(), s));
        }
    }
    for v in ok.outputs.iter().flatten() {
        for s in spellings(*v) {
            secrets.push(("an output value".into(), s));
        }
    }
    let state = common::state_key(&data);
    for (what, subkey) in [
        (
            "the audit HMAC key",
            confidant::state::Subkey::AuditInputHmac,
        ),
        (
            "the audit record key",
            confidant::state::Subkey::AuditRecords,
        ),
        ("the database key", confidant::state::Subkey::Database),
        (
            "the pseudonym-index key",
            confidant::state::Subkey::Pseudonyms,
        ),
    ] {
        secrets.push((what.into(), hex::encode(state.subkey(subkey).as_ref())));
    }
    for line in &lines {
        for (what, s) in &secrets {
            assert!(
                !line.contains(s.as_str()),
                "{what} ({s}) leaked into a log line:\n{line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_at_trace_level_hold_no_inputs_outputs_or_keys() {
    exercise("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_trace_level_hold_no_inputs_outputs_or_keys() {
    exercise("json").await;
}
