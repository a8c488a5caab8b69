//! Private prediction end to end: mandatory manifest policies, receipts, budgets that are
//! never overspent, Privacy.GetBudget and `confidant privacy budget`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::code;

use std::path::Path;

use common::{Server, confidant, create_key, fixtures, stderr, stdout};
use confidant::client::Client;
use tonic::Code;

/// Seals the softmax fixture MLP as model `dp` with `policy` in its signed manifest and
/// returns the serve flags.
fn sealed_private_model(dir: &Path, policy: serde_json::Value) -> Vec<String> {
    let fx = fixtures().join("mlp");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("softmax.json")).unwrap()).unwrap();
    config["id"] = "dp".into();
    config["privacy"] = policy;
    std::fs::write(dir.join("dp.json"), config.to_string()).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        &p("dp.json"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("dp.sealed"),
        "--key-out",
        &p("dp.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    vec![
        "--data-dir".into(),
        p("data"),
        "--model".into(),
        p("dp.sealed"),
        "--key-file".into(),
        p("dp.dek"),
        "--publisher-key".into(),
        p("keys/publisher.pub"),
    ]
}

fn with_config(args: &[String], dir: &Path, toml: &str) -> Vec<String> {
    let path = dir.join("serve.toml");
    std::fs::write(&path, toml).unwrap();
    let mut a = args.to_vec();
    a.push("--config".into());
    a.push(path.to_str().unwrap().into());
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_argmax_spends_the_budget_and_refuses_cleanly_when_it_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = sealed_private_model(
        d,
        serde_json::json!({"mechanism": "noisy_argmax", "epsilon": 0.5}),
    );
    let args = with_config(&args, d, "[privacy.budget]\nepsilon = 2.0\n");
    let data = d.join("data");
    let key = create_key(&data, "insurer", &["--rpd", "100"]);
    let other = create_key(&data, "bank", &[]);
    let server = Server::start(&strs(&args));
    let mut client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let row = vec![vec![0.5f32; 8]];
    for i in 1..=4 {
        let p = client.predict("dp", &row).await.unwrap();
        assert_eq!(p.labels.len(), 1);
        assert!(
            p.outputs[0].is_empty(),
            "noisy_argmax releases the label only"
        );
        let r = p.privacy.expect("a receipt");
        assert_eq!(r.mechanism, "noisy_argmax");
        assert!((r.epsilon_charged - 0.5).abs() < 1e-9, "{r:?}");
        assert!((r.epsilon_spent - 0.5 * f64::from(i)).abs() < 1e-9, "{r:?}");
        assert!(
            (r.epsilon_remaining - (2.0 - 0.5 * f64::from(i))).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(r.epsilon_budget, 2.0);
    }
    let (_, metrics_before) = common::http_get(server.metrics_url.as_ref().unwrap());
    let e = client.predict("dp", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("privacy budget") && msg.contains("0.000000 of 2 remains"),
        "{msg}"
    );
    // Two rows at once would need 1.0: refused as a whole, nothing released.
    let e = client
        .predict("dp", &[row[0].clone(), row[0].clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");

    // The refusals spent no request quota and no budget.
    let budget = client.get_budget("").await.unwrap();
    assert_eq!(budget.principal, "insurer");
    assert!((budget.epsilon_spent - 2.0).abs() < 1e-9, "{budget:?}");
    let (_, metrics_after) = common::http_get(server.metrics_url.as_ref().unwrap());
    let eps = |t: &str| common::metric(t, "confidant_privacy_epsilon_spent_total{model=\"dp\"}");
    assert_eq!(eps(&metrics_before), eps(&metrics_after));
    assert!((eps(&metrics_after) - 2.0).abs() < 1e-6);

    // Reading another principal's budget needs the admin scope.
    let e = client.get_budget("bank").await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    // The other principal has its own, untouched budget.
    let mut bank = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&other)
        .unwrap();
    bank.predict("dp", &row).await.unwrap();

    // The CLI reads the same odometer.
    let out = confidant(&[
        "privacy",
        "budget",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        &key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["principal"], "insurer");
    assert_eq!(v["epsilon_remaining"], 0.0);

    // The audit log records the epsilon of each release.
    assert!(server.stop().success());
    let log = common::audit_export(&data);
    let charged = log
        .lines()
        .filter(|l| l.contains("\"kind\":\"predict\"") && l.contains("\"epsilon\":0.5"))
        .count();
    assert_eq!(charged, 5, "four for insurer, one for bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_never_overspend_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = sealed_private_model(
        d,
        serde_json::json!({"mechanism": "noisy_argmax", "epsilon": 0.25}),
    );
    let args = with_config(&args, d, "[privacy.budget]\nepsilon = 3.0\n");
    let key = create_key(&d.join("data"), "insurer", &[]);
    let server = Server::start(&strs(&args));
    let client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.predict("dp", &[vec![0.1f32; 8]]).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(code(&e), Code::ResourceExhausted, "{e}"),
        }
    }
    assert_eq!(ok, 12, "exactly 3.0 / 0.25 releases");
    let b = client.clone().get_budget("").await.unwrap();
    assert!(b.epsilon_spent <= 3.0 + 1e-12, "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_config_may_tighten_the_manifest_policy_but_never_weaken_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = sealed_private_model(
        d,
        serde_json::json!({"mechanism": "laplace_scores", "epsilon": 1.0}),
    );
    for weaker in [
        "mechanism = \"none\"",
        "mechanism = \"label_only\"",
        "mechanism = \"laplace_scores\"\nepsilon = 4.0",
        "mechanism = \"gaussian_scores\"\nepsilon = 0.5\ndelta = 1e-6",
        "mechanism = \"laplace_scores\"\nepsilon = 0.5\nsensitivity = 0.01",
    ] {
        let a = with_config(&args, d, &format!("[privacy.models.dp]\n{weaker}\n"));
        let err = Server::try_start(&strs(&a))
            .err()
            .expect("must refuse to start");
        assert!(
            err.contains("would weaken") || err.contains("may not state a sensitivity"),
            "{weaker}: {err}"
        );
    }
    // Tighter: a smaller epsilon, then labels only.
    let a = with_config(
        &args,
        d,
        "[privacy.models.dp]\nmechanism = \"laplace_scores\"\nepsilon = 0.25\n",
    );
    let server = Server::start(&strs(&a));
    let key = create_key(&d.join("data"), "insurer", &[]);
    let mut c = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let p = c.predict("dp", &[vec![0.5f32; 8]]).await.unwrap();
    let r = p.privacy.unwrap();
    assert_eq!(r.mechanism, "laplace_scores");
    assert!(
        r.epsilon_charged <= 0.25 && r.epsilon_charged > 0.24,
        "{r:?}"
    );
    assert_eq!(
        p.outputs[0].len(),
        3,
        "noisy scores are released (three classes)"
    );
    drop(server);
    let a = with_config(
        &args,
        d,
        "[privacy.models.dp]\nmechanism = \"noisy_argmax\"\nepsilon = 1.0\n",
    );
    let server = Server::start(&strs(&a));
    let mut c = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap();
    let p = c.predict("dp", &[vec![0.5f32; 8]]).await.unwrap();
    assert_eq!(p.privacy.unwrap().mechanism, "noisy_argmax");
    assert!(p.outputs[0].is_empty());
}

/// `confidant privacy epsilon` at a long horizon and a small δ: every accountant answers
/// (the first pass refused δ below about 1e-9 at 10⁴ steps), `prv` prints `pld`'s ε, and
/// both lie between dp_accounting's optimistic and pessimistic PLDs (108.120 and 108.711,
/// dp-accounting 0.6.0 at h = 1e-4) and under the RDP bound.
#[test]
fn privacy_epsilon_cli_answers_small_delta_with_every_accountant() {
    let run = |accountant: &str| -> serde_json::Value {
        let out = confidant(&[
            "privacy",
            "epsilon",
            "--sample-rate",
            "0.05",
            "--noise-multiplier",
            "0.8",
            "--steps",
            "10000",
            "--delta",
            "1e-12",
            "--accountant",
            accountant,
        ]);
        assert!(out.status.success(), "{accountant}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let (pld, prv, rdp) = (run("pld"), run("prv"), run("rdp"));
    assert_eq!(pld["accountant"], "pld");
    assert_eq!(prv["accountant"], "prv");
    assert_eq!(pld["epsilon"], prv["epsilon"]);
    let e = pld["epsilon"].as_f64().unwrap();
    assert!((108.120..=108.711 * 1.0001).contains(&e), "{e}");
    assert!(e < rdp["epsilon"].as_f64().unwrap());
}
