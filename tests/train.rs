//! End to end: `confidant train` and `confidant evaluate` through the real binary, and a
//! DP-trained model sealed, inspected, served and queried.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::{Server, confidant, create_key, fixtures, stderr, stdout};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn split(name: &str) -> String {
    fixtures()
        .join("splits")
        .join(format!("{name}.csv"))
        .to_str()
        .unwrap()
        .to_string()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// Runs `confidant train ARGS` and returns its JSON summary.
fn train(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    let out = confidant(&all);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn evaluate(weights: &str, config: &str, data: &str) -> serde_json::Value {
    let out = confidant(&[
        "evaluate",
        "--weights",
        weights,
        "--config",
        config,
        "--data",
        data,
        "--label",
        "target",
    ]);
    assert!(out.status.success(), "evaluate failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn breast_cancer_logistic_regression_at_epsilon_1_is_accurate() {
    let dir = tmp();
    let d = dir.path();
    let summary = train(&[
        "--data",
        &split("breast_cancer_train"),
        "--label",
        "target",
        "--hidden",
        "",
        "--epsilon",
        "1",
        "--delta",
        "1e-5",
        "--seed",
        "1",
        // RDP is slightly looser than the default PLD but far faster in a debug build.
        "--accountant",
        "rdp",
        "--out",
        &path(d, "bc.safetensors"),
        "--config",
        &path(d, "bc.json"),
    ]);
    assert_eq!(summary["rows"], 455);
    assert_eq!(summary["classes"], 2);
    assert_eq!(summary["epsilon"], 1.0);
    assert_eq!(summary["accountant"], "rdp");
    assert!(summary["noise_multiplier"].as_f64().unwrap() > 1.0);

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("bc.json")).unwrap()).unwrap();
    assert_eq!(config["dp_training"]["epsilon"], 1.0);
    assert_eq!(config["dp_training"]["delta"], 1e-5);
    assert_eq!(
        config["dp_training"]["mechanism"]["steps"],
        summary["steps"]
    );
    assert_eq!(config["architecture"]["layers"][0]["weight"], "0.weight");
    assert_eq!(config["input"]["features"][0], "mean radius");
    assert_eq!(
        config["input"]["normalization"]["mean"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("bc.safetensors"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "plaintext weights are private to their owner"
    );

    let result = evaluate(
        &path(d, "bc.safetensors"),
        &path(d, "bc.json"),
        &split("breast_cancer_test"),
    );
    // The contract: exactly {"accuracy", "rows"}.
    assert_eq!(result.as_object().unwrap().len(), 2);
    assert_eq!(result["rows"], 114);
    let accuracy = result["accuracy"].as_f64().unwrap();
    // The acceptance bar for the mean of five seeds (BENCHMARKS.md); seed 1 gives 0.98.
    assert!(accuracy >= 0.93, "test accuracy {accuracy} at ε = 1");
}

#[test]
fn no_dp_is_the_same_trainer_without_a_guarantee() {
    let dir = tmp();
    let d = dir.path();
    let summary = train(&[
        "--data",
        &split("breast_cancer_train"),
        "--label",
        "target",
        "--no-dp",
        "--epochs",
        "5",
        "--seed",
        "3",
        "--out",
        &path(d, "m.safetensors"),
        "--config",
        &path(d, "m.json"),
    ]);
    assert_eq!(summary["noise_multiplier"], serde_json::Value::Null);
    assert_eq!(summary["epsilon"], serde_json::Value::Null);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("m.json")).unwrap()).unwrap();
    assert!(config.get("dp_training").is_none());
    let result = evaluate(
        &path(d, "m.safetensors"),
        &path(d, "m.json"),
        &split("breast_cancer_test"),
    );
    assert!(result["accuracy"].as_f64().unwrap() >= 0.93, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_trained_model_seals_serves_and_predicts_as_the_engine_does() {
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| path(d, name);
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let summary = train(&[
        "--data",
        &split("digits_train"),
        "--label",
        "target",
        "--hidden",
        "16",
        "--epsilon",
        "3",
        "--delta",
        "1e-5",
        "--epochs",
        "2",
        "--accountant",
        "rdp",
        "--id",
        "digits-dp",
        "--class-names",
        "zero,one,two,three,four,five,six,seven,eight,nine",
        "--out",
        &p("digits.safetensors"),
        "--config",
        &p("digits.json"),
        "--seal",
        &p("digits.sealed"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--key-out",
        &p("digits.dek"),
    ]);
    assert_eq!(summary["sealed"]["model"], "digits-dp");
    assert_eq!(
        summary["sealed"]["key_resource"],
        "default/models/digits-dp"
    );

    // The guarantee is in the signed manifest.
    let out = confidant(&[
        "inspect",
        &p("digits.sealed"),
        "--publisher-key",
        &p("keys/publisher.pub"),
        "--key-file",
        &p("digits.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["verdict"], "ok");
    let dp = &report["manifest"]["model"]["dp_training"];
    assert_eq!(dp["epsilon"], 3.0);
    assert_eq!(dp["delta"], 1e-5);
    assert_eq!(dp["mechanism"]["accountant"], "rdp");
    assert_eq!(dp["mechanism"]["steps"], summary["steps"]);

    // Sealing again over the same files is refused without --force, as `seal` refuses.
    let again = confidant(&[
        "train",
        "--data",
        &split("breast_cancer_train"),
        "--label",
        "target",
        "--no-dp",
        "--epochs",
        "1",
        "--out",
        &p("x.safetensors"),
        "--config",
        &p("x.json"),
        "--seal",
        &p("digits.sealed"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--key-out",
        &p("x.dek"),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // Served outputs equal the engine's forward pass on the written weights.
    let config =
        confidant::engine::ModelConfig::from_json(&std::fs::read(p("digits.json")).unwrap())
            .unwrap();
    let weights = std::fs::read(p("digits.safetensors")).unwrap();
    let mlp =
        confidant::engine::Mlp::from_safetensors(&config, &weights, &candle_core::Device::Cpu)
            .unwrap();
    let test = confidant::train::Dataset::read_csv(
        Path::new(&split("digits_test")),
        "target",
        Some(&config.input.features),
    )
    .unwrap();
    let rows = 20;
    let values = &test.values()[..rows * 64];
    let want = mlp.forward_rows(values, rows).unwrap();

    let api_key = create_key(&d.join("data"), "trainer", &[]);
    let server = Server::start(&[
        "--data-dir",
        &p("data"),
        "--model",
        &p("digits.sealed"),
        "--key-file",
        &p("digits.dek"),
        "--publisher-key",
        &p("keys/publisher.pub"),
    ]);
    let client = confidant::client::Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&api_key)
        .unwrap();
    let mut client = client;
    let input: Vec<Vec<f32>> = values.chunks(64).map(<[f32]>::to_vec).collect();
    let got = client.predict("digits-dp", &input).await.unwrap();
    assert_eq!(got.labels.len(), rows);
    assert!(
        got.labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_lowercase()))
    );
    let flat: Vec<f32> = got.outputs.iter().flatten().copied().collect();
    assert_eq!(flat.len(), want.len());
    for (g, w) in flat.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6, "served {g}, engine {w}");
    }
    drop(server);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_input_is_refused_naming_the_row_column_or_flag() {
    let dir = tmp();
    let d = dir.path();
    let good = write(d, "good.csv", "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n");
    let fail = |data: &str, extra: &[&str]| -> String {
        let out_w = path(d, "m.safetensors");
        let out_c = path(d, "m.json");
        let mut args = vec![
            "train",
            "--data",
            data,
            "--label",
            "y",
            "--out",
            &out_w,
            "--config",
            &out_c,
            "--accountant",
            "rdp",
        ];
        if !extra.iter().any(|a| *a == "--no-dp" || *a == "--epsilon") {
            args.extend_from_slice(&["--epsilon", "1", "--delta", "1e-5"]);
        }
        if !extra.contains(&"--batch-size") {
            args.extend_from_slice(&["--batch-size", "2"]);
        }
        args.extend_from_slice(extra);
        let out = confidant(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        stderr(&out)
    };
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (
            write(d, "ragged.csv", "a,b,y\n1,2,0\n3,4\n"),
            vec![],
            vec!["ragged.csv: line 3", "2 cells", "3 columns"],
        ),
        (
            write(d, "text.csv", "a,b,y\n1,2,0\n3,four,1\n"),
            vec![],
            vec!["line 3, column \"b\"", "\"four\" is not a number"],
        ),
        (
            write(d, "nolabel.csv", "a,b,class\n1,2,0\n"),
            vec![],
            vec!["no column \"y\"", "\"class\""],
        ),
        (
            write(d, "frac.csv", "a,b,y\n1,2,0\n3,4,0.5\n"),
            vec![],
            vec!["line 3, column \"y\"", "not an integer class index"],
        ),
        (
            write(d, "many.csv", "a,b,y\n1,2,0\n3,4,99999\n"),
            vec![],
            vec!["line 3, column \"y\"", "too large", "1024"],
        ),
        (
            write(d, "one.csv", "a,b,y\n1,2,0\n3,4,0\n"),
            vec![],
            vec!["single class"],
        ),
        (
            good.clone(),
            vec!["--epsilon", "0", "--delta", "1e-5"],
            vec!["--epsilon 0", "> 0"],
        ),
        (
            good.clone(),
            vec!["--epsilon", "-2", "--delta", "1e-5"],
            vec!["--epsilon -2"],
        ),
        (
            good.clone(),
            vec!["--epsilon", "inf", "--delta", "1e-5"],
            vec!["--epsilon inf", "--no-dp"],
        ),
        (
            good.clone(),
            vec!["--epsilon", "1", "--delta", "0"],
            vec!["--delta 0", "(0, 1)"],
        ),
        (
            good.clone(),
            vec!["--epsilon", "1", "--delta", "1"],
            vec!["--delta 1", "(0, 1)"],
        ),
        (
            good.clone(),
            vec!["--batch-size", "5"],
            vec!["--batch-size 5", "training rows (4)"],
        ),
        (good.clone(), vec!["--clip", "0"], vec!["--clip 0", "> 0"]),
        (good.clone(), vec!["--clip", "-1"], vec!["--clip -1"]),
        (good.clone(), vec!["--lr", "0"], vec!["--lr 0"]),
        (good.clone(), vec!["--epochs", "0"], vec!["--epochs 0"]),
        (
            good.clone(),
            vec!["--hidden", "8,x"],
            vec!["--hidden", "\"x\""],
        ),
        (
            good.clone(),
            vec!["--id", "bad id!"],
            vec!["--id", "model id"],
        ),
        (path(d, "absent.csv"), vec![], vec!["absent.csv"]),
    ];
    for (data, extra, wants) in &cases {
        let err = fail(data, extra);
        for w in wants {
            assert!(err.contains(w), "{data} {extra:?}: want {w:?} in {err}");
        }
    }
    // Without --epsilon/--delta or --no-dp, clap names the missing flags.
    let out = confidant(&[
        "train", "--data", &good, "--label", "y", "--out", "m.st", "--config", "m.json",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--epsilon"), "{}", stderr(&out));
    // --seal needs a signing key and a key file.
    let out = confidant(&[
        "train", "--data", &good, "--label", "y", "--no-dp", "--out", "m.st", "--config", "m.json",
        "--seal", "m.sealed",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--signing-key"), "{}", stderr(&out));

    // evaluate: the model's label range and feature names are checked.
    let w = path(d, "ok.safetensors");
    let c = path(d, "ok.json");
    train(&[
        "--data",
        &good,
        "--label",
        "y",
        "--no-dp",
        "--batch-size",
        "2",
        "--out",
        &w,
        "--config",
        &c,
    ]);
    let bad_label = write(d, "eval.csv", "b,a,y\n2,1,0\n4,3,7\n");
    let out = confidant(&[
        "evaluate",
        "--weights",
        &w,
        "--config",
        &c,
        "--data",
        &bad_label,
        "--label",
        "y",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("data row 2: label 7"),
        "{}",
        stderr(&out)
    );
    let missing = write(d, "eval2.csv", "a,y\n1,0\n");
    let out = confidant(&[
        "evaluate",
        "--weights",
        &w,
        "--config",
        &c,
        "--data",
        &missing,
        "--label",
        "y",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no column \"b\""), "{}", stderr(&out));
    // Columns in another order are matched by name.
    let reordered = write(d, "eval3.csv", "y,b,a\n0,2,1\n1,4,3\n");
    let out = confidant(&[
        "evaluate",
        "--weights",
        &w,
        "--config",
        &c,
        "--data",
        &reordered,
        "--label",
        "y",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["rows"], 2);
}
