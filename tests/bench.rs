//! `confidant bench` end to end: the real binary against the real server (demo mode).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Server, confidant, stderr, stdout};

#[test]
fn bench_writes_the_results_contract_for_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    for protocol in ["oip", "confidant"] {
        let out_dir = dir.path().join(protocol);
        let out = run_bench(
            &server,
            protocol,
            &out_dir,
            &["--batch", "1,4", "--concurrency", "1,3"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("requests/s"), "{}", stdout(&out));
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
                .unwrap();
        let points = results.as_array().unwrap();
        assert_eq!(points.len(), 4);
        for p in points {
            assert!(p["requests_per_s"].as_f64().unwrap() > 0.0, "{p}");
            assert_eq!(p["errors"], 0, "{p}");
            assert_eq!(p["receipts"], false, "{p}");
            let batch = p["batch"].as_f64().unwrap();
            let ratio =
                p["inferences_per_s"].as_f64().unwrap() / p["requests_per_s"].as_f64().unwrap();
            assert!((ratio - batch).abs() < 1e-9, "{p}");
            assert!(p["p50_ms"].as_f64().unwrap() <= p["p99_ms"].as_f64().unwrap());
            let (p99, p999, max) = (
                p["p99_ms"].as_f64().unwrap(),
                p["p999_ms"].as_f64().unwrap(),
                p["max_ms"].as_f64().unwrap(),
            );
            assert!(p99 <= p999 && p999 <= max && max > 0.0, "{p}");
        }
        let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5);
        let svg = std::fs::read_to_string(out_dir.join("latency_throughput.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
    }
    // A wrong key: every request fails, and the errors are counted by code.
    let out = confidant(&[
        "bench",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        "cfd_wrong",
        "--model",
        "demo",
        "--batch",
        "1",
        "--concurrency",
        "1",
        "--window",
        "200ms",
        "--max-trials",
        "3",
    ]);
    // Discovery needs ListModels, so a wrong key stops the run before it starts.
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UNAUTHENTICATED"), "{}", stderr(&out));
}

#[test]
fn bench_refuses_bad_flags_clearly() {
    let base = ["bench", "--addr", "https://127.0.0.1:1", "--model", "m"];
    let cases: [(&[&str], &str); 4] = [
        (&["--policy", "p.toml"], "--policy p.toml: cannot read"),
        (&["--batch", "0"], "--batch"),
        (&["--window", "soon"], "--window"),
        (&["--max-trials", "2"], "--max-trials"),
    ];
    for (extra, needle) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        if !extra.contains(&"--policy") {
            args.extend_from_slice(&["--tls-ca", "/dev/null"]);
        }
        let out = confidant(&args);
        assert!(!out.status.success(), "{extra:?}");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
}

/// `confidant bench` against `server` over `protocol`, short windows, results into `out_dir`,
/// with `extra` flags.
fn run_bench(
    server: &Server,
    protocol: &str,
    out_dir: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "bench",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        server.api_key.as_deref().unwrap(),
        "--protocol",
        protocol,
        "--model",
        "demo",
        "--window",
        "200ms",
        "--warmup",
        "100ms",
        "--max-trials",
        "3",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    confidant(&args)
}

/// `--receipts` asks for a receipt with every answer, over both protocols, and says so in
/// the results; an answer without one would count as an error.
#[test]
fn bench_asks_for_a_receipt_with_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    for protocol in ["confidant", "oip"] {
        let out_dir = dir.path().join(protocol);
        let extra = ["--batch", "1", "--concurrency", "2", "--receipts"];
        let o = run_bench(&server, protocol, &out_dir, &extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let results: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
        let point = &results[0];
        assert_eq!(point["receipts"], true, "{point:#}");
        assert_eq!(point["errors"], 0, "{point:#}");
        assert!(point["requests"].as_u64().unwrap() > 0, "{point:#}");
    }
}
