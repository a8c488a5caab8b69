//! `confidant attest` end to end: the real binary against every vector in
//! attestation/tests/data/, through each input form, plus reject twins, the simulated
//! round trip on this machine and flag errors. Each case is one short process run (the
//! debug build), and the cases run in parallel threads, so the file adds a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use confidant_attestation::{Evidence, SnpEvidence, TdxCollateral, TdxEvidence, Timestamp};
use serde_json::Value;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("attestation/tests/data")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    fn failures(&self) -> Vec<String> {
        self.json()["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .map(|f| f["check"].as_str().expect("check").to_owned())
            .collect()
    }
}

fn confidant<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run confidant");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn verify_args(input: &[String], at: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["attest".to_owned(), "verify".to_owned()];
    args.extend(input.iter().cloned());
    args.extend(["--at".to_owned(), at.to_owned()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// Asserts the verdict JSON has the contract fields and the expected outcome.
fn assert_verdict(run: &Run, accept: bool, failures: &[&str], context: &str) {
    let v = run.json();
    for key in [
        "verdict",
        "failures",
        "tee",
        "product",
        "measurement",
        "report_data",
        "debug",
        "tcb",
    ] {
        assert!(v.get(key).is_some(), "{context}: no {key:?} in {v}");
    }
    let want = if accept { "accept" } else { "reject" };
    assert_eq!(v["verdict"], want, "{context}: {v}\n{}", run.stderr);
    assert_eq!(run.code == 0, accept, "{context}: exit {}", run.code);
    assert_eq!(run.failures(), failures, "{context}: {v}");
    if !accept {
        assert!(
            run.stderr.contains("attestation rejected"),
            "{context}: {}",
            run.stderr
        );
    }
}

struct SnpCase {
    dir: &'static str,
    report: &'static str,
    vek: &'static str,
    chain: &'static str,
    expected: &'static str,
}

const SNP_CASES: [SnpCase; 6] = [
    SnpCase {
        dir: "virtee-milan-v2",
        report: "report.bin",
        vek: "vcek.der",
        chain: "ask_ark.pem",
        expected: "expected.json",
    },
    SnpCase {
        dir: "gosev-milan-v2-debug",
        report: "report.bin",
        vek: "vcek.der",
        chain: "ask_ark.pem",
        expected: "expected.json",
    },
    SnpCase {
        dir: "trustee-milan-v3-vlek-aws",
        report: "report.bin",
        vek: "vlek.der",
        chain: "asvk_ark.pem",
        expected: "expected.json",
    },
    SnpCase {
        dir: "trustee-genoa-v3",
        report: "report.bin",
        vek: "vcek.der",
        chain: "ask_ark.pem",
        expected: "expected.json",
    },
    SnpCase {
        dir: "gcp-milan-v5",
        report: "report.bin",
        vek: "vcek.der",
        chain: "ask_ark.pem",
        expected: "expected.json",
    },
    SnpCase {
        dir: "gcp-milan-v5",
        report: "report-reportdata.bin",
        vek: "vcek.der",
        chain: "ask_ark.pem",
        expected: "expected-reportdata.json",
    },
];

impl SnpCase {
    fn file(&self, name: &str) -> PathBuf {
        data().join("snp").join(self.dir).join(name)
    }

    fn expected(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.file(self.expected)).unwrap()).unwrap()
    }

    fn at(&self) -> String {
        self.expected()["suggested_pinned_now_utc"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn debug(&self) -> bool {
        self.expected()["report"]["policy_decoded"]["debug"]
            .as_bool()
            .unwrap()
    }

    fn name(&self) -> String {
        format!("{}/{}", self.dir, self.report)
    }

    fn raw_args(&self, chain: bool) -> Vec<String> {
        let mut args = vec![
            "--snp-report".to_owned(),
            path_str(&self.file(self.report)),
            "--vek".to_owned(),
            path_str(&self.file(self.vek)),
        ];
        if chain {
            args.extend(["--chain".to_owned(), path_str(&self.file(self.chain))]);
        }
        args
    }

    /// Evidence JSON assembled from the raw parts, as an attester would write it.
    fn evidence_file(&self, dir: &Path) -> PathBuf {
        let report = std::fs::read(self.file(self.report)).unwrap();
        let vek = std::fs::read(self.file(self.vek)).unwrap();
        let chain = std::fs::read(self.file(self.chain)).unwrap();
        let evidence = Evidence::Snp(SnpEvidence::from_parts(&report, &vek, Some(&chain)).unwrap());
        let path = dir.join(format!("{}-{}.json", self.dir, self.report));
        std::fs::write(&path, evidence.to_json().unwrap()).unwrap();
        path
    }
}

/// Every SNP vector gets its expected verdict through --snp-report/--vek, with and without
/// --chain, and through --evidence; the claims printed match expected.json.
#[test]
fn snp_vectors_get_their_expected_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for case in &SNP_CASES {
            let tmp = tmp.path();
            s.spawn(move || {
                let expected = case.expected();
                assert_eq!(expected["expected_signature_and_chain"], "valid");
                let evidence = case.evidence_file(tmp);
                let inputs = [
                    case.raw_args(false),
                    case.raw_args(true),
                    vec!["--evidence".to_owned(), path_str(&evidence)],
                ];
                for input in inputs {
                    let context = format!("{} {input:?}", case.name());
                    let run = confidant(&verify_args(&input, &case.at(), &[]));
                    if case.debug() {
                        assert_verdict(&run, false, &["debug"], &context);
                        let run = confidant(&verify_args(&input, &case.at(), &["--allow-debug"]));
                        assert_verdict(&run, true, &[], &context);
                    } else {
                        assert_verdict(&run, true, &[], &context);
                    }
                    let v = run.json();
                    assert_eq!(v["tee"], "snp");
                    assert_eq!(
                        v["measurement"], expected["report"]["measurement"],
                        "{context}"
                    );
                    assert_eq!(
                        v["report_data"], expected["report"]["report_data"],
                        "{context}"
                    );
                    assert_eq!(v["debug"], case.debug(), "{context}");
                    assert_eq!(
                        v["tcb"]["raw"], expected["report"]["reported_tcb"]["raw"],
                        "{context}"
                    );
                    assert!(v["product"].is_string(), "{context}: {v}");
                }
            });
        }
    });
}

/// Trustee's own SNP evidence JSON, as shipped with the vector, once tagged with `tee`
/// (untagged, it is a rejecting verdict that names the missing tag).
#[test]
fn trustee_evidence_json_is_accepted_once_tagged() {
    let path = data().join("snp/trustee-genoa-v3/evidence.json");
    let untagged = confidant(&verify_args(
        &["--evidence".to_owned(), path_str(&path)],
        "2025-06-01T00:00:00Z",
        &[],
    ));
    assert_verdict(&untagged, false, &["evidence_format"], "untagged");
    assert!(untagged.stdout.contains("missing field `tee`"));

    let mut value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    value["tee"] = "snp".into();
    let tmp = tempfile::tempdir().unwrap();
    let tagged = tmp.path().join("evidence.json");
    std::fs::write(&tagged, value.to_string()).unwrap();
    let run = confidant(&verify_args(
        &["--evidence".to_owned(), path_str(&tagged)],
        "2025-06-01T00:00:00Z",
        &[],
    ));
    assert_verdict(&run, true, &[], "trustee-genoa-v3/evidence.json");
    assert_eq!(run.json()["product"], "Genoa");
}

struct TdxCase {
    dir: &'static str,
}

const TDX_CASES: [TdxCase; 3] = [
    TdxCase {
        dir: "dcapqvl-b0c06f-v4-uptodate",
    },
    TdxCase {
        dir: "gotdx-90c06f-v5-uptodate",
    },
    TdxCase {
        dir: "trustee-50806f-v4-debug",
    },
];

impl TdxCase {
    fn file(&self, name: &str) -> PathBuf {
        data().join("tdx").join(self.dir).join(name)
    }

    fn results(&self) -> Value {
        let expected: Value =
            serde_json::from_slice(&std::fs::read(self.file("expected.json")).unwrap()).unwrap();
        expected["dcap_qvl_0_7_1"]["quote.bin"].clone()
    }

    fn at(&self, case: &str) -> String {
        let unix = self.results()[case]["now_unix"].as_u64().unwrap();
        Timestamp::from_unix_seconds(unix).to_rfc3339()
    }

    fn raw_args(&self) -> Vec<String> {
        vec![
            "--tdx-quote".to_owned(),
            path_str(&self.file("quote.bin")),
            "--collateral".to_owned(),
            path_str(&self.file("collateral.json")),
        ]
    }

    /// Evidence JSON with the collateral inside, and without it (then passed by flag).
    fn evidence_args(&self, dir: &Path) -> [Vec<String>; 2] {
        let quote = std::fs::read(self.file("quote.bin")).unwrap();
        let collateral =
            TdxCollateral::from_json(&std::fs::read(self.file("collateral.json")).unwrap())
                .unwrap();
        let bare = dir.join(format!("{}-bare.json", self.dir));
        let full = dir.join(format!("{}-full.json", self.dir));
        let evidence = TdxEvidence::new(quote);
        std::fs::write(&bare, Evidence::Tdx(evidence.clone()).to_json().unwrap()).unwrap();
        std::fs::write(
            &full,
            Evidence::Tdx(evidence.with_collateral(collateral))
                .to_json()
                .unwrap(),
        )
        .unwrap();
        [
            vec!["--evidence".to_owned(), path_str(&full)],
            vec![
                "--evidence".to_owned(),
                path_str(&bare),
                "--collateral".to_owned(),
                path_str(&self.file("collateral.json")),
            ],
        ]
    }
}

/// Every TDX vector gets its expected verdict through --tdx-quote/--collateral and through
/// --evidence (collateral carried or passed by flag).
#[test]
fn tdx_vectors_get_their_expected_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for case in &TDX_CASES {
            let tmp = tmp.path();
            s.spawn(move || {
                let results = case.results();
                let pinned = &results["at_pinned_time"];
                let [full, bare] = case.evidence_args(tmp);
                for input in [case.raw_args(), full, bare] {
                    let context = format!("{} {input:?}", case.dir);
                    let run = confidant(&verify_args(&input, &case.at("at_pinned_time"), &[]));
                    if pinned["result"] == "ok" {
                        assert_verdict(&run, true, &[], &context);
                        assert_eq!(run.json()["tcb"]["status"], pinned["tcb_status"]);
                    } else {
                        assert_eq!(pinned["error"], "Debug mode is enabled");
                        // dcap-qvl's own attribute check refuses it, and the policy's rule.
                        assert_verdict(&run, false, &["quote_verification", "debug"], &context);
                        let run = confidant(&verify_args(
                            &input,
                            &case.at("at_pinned_time"),
                            &["--allow-debug"],
                        ));
                        assert_verdict(&run, true, &[], &context);
                        assert_eq!(run.json()["tcb"]["status"], "UpToDate");
                    }
                    let v = run.json();
                    assert_eq!(v["tee"], "tdx");
                    assert_eq!(
                        v["measurement"], results["body"]["td"]["mr_td"],
                        "{context}"
                    );
                    assert_eq!(
                        v["report_data"], results["body"]["td"]["report_data"],
                        "{context}"
                    );
                }
                // After the collateral window: rejected.
                let run = confidant(&verify_args(
                    &case.raw_args(),
                    &case.at("after_window"),
                    &[],
                ));
                assert_eq!(run.code, 1, "{}: {}", case.dir, run.stdout);
                assert!(run.failures().contains(&"quote_verification".to_owned()));
            });
        }
    });
}

#[test]
fn snp_reject_twins_through_the_cli() {
    let case = &SNP_CASES[0];
    let expected = case.expected();
    let measurement = expected["report"]["measurement"].as_str().unwrap();
    let report_data = expected["report"]["report_data"].as_str().unwrap();
    let input = case.raw_args(true);
    let at = case.at();

    // The right measurement and report_data: accepted.
    let run = confidant(&verify_args(
        &input,
        &at,
        &["--measurement", measurement, "--report-data", report_data],
    ));
    assert_verdict(&run, true, &[], "right measurement");

    // A wrong measurement.
    let wrong = "00".repeat(48);
    let run = confidant(&verify_args(&input, &at, &["--measurement", &wrong]));
    assert_verdict(&run, false, &["measurement"], "wrong measurement");

    // A wrong report_data.
    let run = confidant(&verify_args(&input, &at, &["--report-data", "deadbeef"]));
    assert_verdict(&run, false, &["report_data"], "wrong report_data");

    // Outside the certificates' validity.
    let run = confidant(&verify_args(&input, "2031-01-01T00:00:00Z", &[]));
    assert_verdict(&run, false, &["certificate_validity"], "expired");

    // The wrong VEK: the Genoa vector's VCEK under the Milan report.
    let mut wrong_vek = input.clone();
    wrong_vek[3] = path_str(&data().join("snp/trustee-genoa-v3/vcek.der"));
    let run = confidant(&verify_args(&wrong_vek, &at, &[]));
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.failures().contains(&"report_signature".to_owned()));

    // A policy file: its measurement list, and --measurement overriding it.
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("measurements = [\"{measurement}\"]\n[min_tcb]\nsnp = 8\n"),
    )
    .unwrap();
    let policy = path_str(&policy);
    let run = confidant(&verify_args(&input, &at, &["--policy", &policy]));
    assert_verdict(&run, true, &[], "policy file");
    let run = confidant(&verify_args(
        &input,
        &at,
        &["--policy", &policy, "--measurement", &wrong],
    ));
    assert_verdict(
        &run,
        false,
        &["measurement"],
        "policy file, wrong --measurement",
    );
}

/// Fails before issue 16: `--policy` with an empty file (or only `allow_debug = false`)
/// accepted the genuine Milan report. Now the file is refused at load, naming the key; with
/// no `--policy` at all, only authenticity is checked and the JSON says no policy applied.
#[test]
fn a_policy_file_must_pin_measurements() {
    let dir = data().join("snp/virtee-milan-v2");
    let input = vec![
        "--snp-report".to_owned(),
        path_str(&dir.join("report.bin")),
        "--vek".to_owned(),
        path_str(&dir.join("vcek.der")),
    ];
    let at = "2025-06-01T00:00:00Z";
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.toml", ""),
        ("nodebug.toml", "allow_debug = false\n"),
    ] {
        let policy = tmp.path().join(name);
        std::fs::write(&policy, text).unwrap();
        let run = confidant(&verify_args(&input, at, &["--policy", &path_str(&policy)]));
        assert_ne!(run.code, 0, "{name}: {}", run.stdout);
        assert!(
            run.stdout.is_empty(),
            "{name}: no verdict is printed: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains("measurements is missing"),
            "{name}: {}",
            run.stderr
        );
    }

    // No --policy: authenticity only, and the JSON says so.
    let run = confidant(&verify_args(&input, at, &[]));
    assert_verdict(&run, true, &[], "no policy");
    assert_eq!(run.json()["policy_applied"], false);

    // The open form, said in words, with a floor: applied, and it accepts.
    let open = tmp.path().join("open.toml");
    std::fs::write(
        &open,
        "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n[min_tcb]\nsnp = 8\n",
    )
    .unwrap();
    let run = confidant(&verify_args(&input, at, &["--policy", &path_str(&open)]));
    assert_verdict(&run, true, &[], "open policy");
    assert_eq!(run.json()["policy_applied"], true);
    // Without a TCB floor the genuine SNP report is refused.
    let no_floor = tmp.path().join("nofloor.toml");
    std::fs::write(
        &no_floor,
        "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n",
    )
    .unwrap();
    let run = confidant(&verify_args(
        &input,
        at,
        &["--policy", &path_str(&no_floor)],
    ));
    assert_verdict(&run, false, &["min_tcb"], "no min_tcb");
}

/// No TEE here: `attest report` falls back to the simulated TEE with a warning; its evidence
/// verifies only under allow_simulated = true, and its measurement is `attest measurement`.
#[test]
fn simulated_report_round_trips_only_with_allow_simulated() {
    if Path::new("/sys/kernel/config/tsm/report").is_dir() || Path::new("/dev/sev-guest").exists() {
        eprintln!("skipped: this machine may have a TEE");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("evidence.json");
    let run = confidant(&[
        "attest",
        "report",
        "--report-data",
        "c0ffee",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("SIMULATED TEE"), "{}", run.stderr);
    assert_eq!(run.json()["tee"], "simulated");
    assert_eq!(run.json()["attester"], "simulated");

    let input = vec!["--evidence".to_owned(), path_str(&out)];
    let now = "2026-06-01T00:00:00Z";
    let rejected = confidant(&verify_args(&input, now, &[]));
    assert_verdict(&rejected, false, &["simulated"], "default policy");
    assert_eq!(rejected.json()["tee"], "simulated");

    let measurement = confidant(&["attest", "measurement"]);
    assert_eq!(measurement.code, 0, "{}", measurement.stderr);
    let m = measurement.json()["measurement"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(m.len(), 96);

    let policy = tmp.path().join("dev.toml");
    std::fs::write(
        &policy,
        format!("measurements = [\"{m}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    let policy = path_str(&policy);
    let mut want_rd = "c0ffee".to_owned();
    want_rd.push_str(&"00".repeat(61));
    let accepted = confidant(&verify_args(
        &input,
        now,
        &["--policy", &policy, "--report-data", "c0ffee"],
    ));
    assert_verdict(&accepted, true, &[], "allow_simulated");
    let v = accepted.json();
    assert_eq!(v["report_data"], want_rd);
    assert_eq!(v["policy_applied"], true);
    assert_eq!(v["measurement"], m);

    // The measurement pins the binary: another measurement is refused.
    let other = "11".repeat(48);
    let run = confidant(&verify_args(
        &input,
        now,
        &["--policy", &policy, "--measurement", &other],
    ));
    assert_verdict(
        &run,
        false,
        &["measurement"],
        "simulated, wrong measurement",
    );

    // Without --out the evidence goes to stdout.
    let run = confidant(&["attest", "report", "--report-data", "01"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["tee"], "simulated");
    Evidence::from_json(run.stdout.as_bytes()).expect("stdout is evidence JSON");
}

/// Bad flags exit non-zero and say precisely what was wrong.
#[test]
fn bad_flags_are_refused_precisely() {
    let case = &SNP_CASES[0];
    let report = path_str(&case.file("report.bin"));
    let vek = path_str(&case.file("vcek.der"));
    let quote = path_str(&data().join("tdx/dcapqvl-b0c06f-v4-uptodate/quote.bin"));
    let at = "2025-06-01T00:00:00Z";
    let tmp = tempfile::tempdir().unwrap();
    let bad_policy = tmp.path().join("bad.toml");
    std::fs::write(&bad_policy, "allow_simulatd = true\n").unwrap();
    let bad_policy = path_str(&bad_policy);
    let bad_chain = tmp.path().join("chain.pem");
    std::fs::write(&bad_chain, "not PEM").unwrap();
    let bad_chain = path_str(&bad_chain);
    let long_report_data = "00".repeat(65);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["attest", "report", "--report-data", "zz"],
            "invalid value 'zz' for '--report-data <HEX>': invalid hex for report_data",
        ),
        (
            vec!["attest", "report", "--report-data", &long_report_data],
            "expected 1 to 64 bytes, got 65",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                at,
                "--measurement",
                "abcd",
            ],
            "invalid hex for measurement: expected 48 bytes, got 2",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                at,
                "--report-data",
                "xyz",
            ],
            "invalid value 'xyz' for '--report-data <HEX>'",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                "yesterday",
            ],
            "invalid value 'yesterday' for '--at <RFC3339>': invalid timestamp",
        ),
        (
            vec!["attest", "verify", "--snp-report", &report, "--vek", &vek],
            "--at <RFC3339>",
        ),
        (
            vec!["attest", "verify", "--at", at],
            "<--evidence <FILE>|--snp-report <FILE>|--tdx-quote <FILE>|--gpu-evidence <FILE>>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--evidence",
                &report,
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                at,
            ],
            "the argument '--evidence <FILE>' cannot be used with '--snp-report <FILE>'",
        ),
        (
            vec!["attest", "verify", "--snp-report", &report, "--at", at],
            "--vek <FILE>",
        ),
        (
            vec!["attest", "verify", "--tdx-quote", &quote, "--at", at],
            "--collateral <FILE>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--evidence",
                &report,
                "--chain",
                &vek,
                "--at",
                at,
            ],
            "--snp-report <FILE>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--evidence",
                "/nonexistent/evidence.json",
                "--at",
                at,
            ],
            "--evidence /nonexistent/evidence.json: cannot read",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                "/nonexistent/r.bin",
                "--vek",
                &vek,
                "--at",
                at,
            ],
            "--snp-report /nonexistent/r.bin: cannot read",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                "/nonexistent/v.der",
                "--at",
                at,
            ],
            "--vek /nonexistent/v.der: cannot read",
        ),
        (
            vec![
                "attest",
                "verify",
                "--tdx-quote",
                &quote,
                "--collateral",
                "/nonexistent/c.json",
                "--at",
                at,
            ],
            "--collateral /nonexistent/c.json: cannot read",
        ),
        (
            vec![
                "attest",
                "verify",
                "--tdx-quote",
                &quote,
                "--collateral",
                &vek,
                "--at",
                at,
            ],
            "invalid TDX collateral",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--chain",
                &bad_chain,
                "--at",
                at,
            ],
            "certificate chain PEM",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                at,
                "--policy",
                &bad_policy,
            ],
            "invalid policy",
        ),
        (
            vec![
                "attest",
                "verify",
                "--snp-report",
                &report,
                "--vek",
                &vek,
                "--at",
                at,
                "--policy",
                "/nonexistent/p.toml",
            ],
            "--policy /nonexistent/p.toml: cannot read",
        ),
    ];
    std::thread::scope(|s| {
        for (args, message) in &cases {
            s.spawn(move || {
                let run = confidant(args);
                assert_ne!(run.code, 0, "{args:?} succeeded: {}", run.stdout);
                assert!(
                    run.stderr.contains(message),
                    "{args:?}: expected {message:?} in stderr:\n{}",
                    run.stderr
                );
                assert!(run.stdout.is_empty(), "{args:?}: printed {}", run.stdout);
            });
        }
    });
}

/// A file that is not evidence is a rejecting verdict (evidence_format), not a crash.
#[test]
fn garbage_evidence_is_a_reject_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("garbage.json");
    std::fs::write(&path, b"{\"tee\": \"snp\", \"attestation_report\": 7}").unwrap();
    let run = confidant(&verify_args(
        &["--evidence".to_owned(), path_str(&path)],
        "2025-06-01T00:00:00Z",
        &[],
    ));
    assert_verdict(&run, false, &["evidence_format"], "garbage");
}

/// An NVIDIA GPU vector in attestation/tests/data/nvidia.
struct GpuCase {
    dir: &'static str,
    rims: &'static [&'static str],
}

const GPU_CASES: [GpuCase; 2] = [
    GpuCase {
        dir: "hopper-h100-545.00-nvtrust",
        rims: &[
            "rim-driver-545.00.swidtag",
            "rim-vbios-96.00.5E.00.01.swidtag",
        ],
    },
    GpuCase {
        dir: "blackwell-gb100-575.32-asdk",
        rims: &[],
    },
];

impl GpuCase {
    fn file(&self, name: &str) -> String {
        path_str(&data().join("nvidia").join(self.dir).join(name))
    }

    fn expected(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.file("expected.json")).unwrap()).unwrap()
    }

    fn args(&self, report: &str, rims: bool, nonce: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["attest", "verify", "--gpu-evidence", report, "--gpu-chain"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(self.file("chain.pem"));
        if rims {
            for rim in self.rims {
                args.extend(["--rim".to_owned(), self.file(rim)]);
            }
        }
        args.extend(["--nonce".to_owned(), nonce.to_owned()]);
        args.extend([
            "--at".to_owned(),
            self.expected()["at"].as_str().unwrap().to_owned(),
        ]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    fn nonce(&self) -> String {
        self.expected()["nonce"].as_str().unwrap().to_owned()
    }
}

#[test]
fn gpu_vectors_get_their_expected_verdicts() {
    for case in &GPU_CASES {
        let expected = case.expected();
        for report in ["report.bin", "report.hex"] {
            let context = format!("{} {report}", case.dir);
            let run = confidant(&case.args(&case.file(report), true, &case.nonce(), &[]));
            assert_verdict(&run, true, &[], &context);
            let v = run.json();
            assert_eq!(v["tee"], "nvidia_gpu", "{context}");
            assert_eq!(v["report_data"], expected["nonce"], "{context}");
            assert_eq!(v["claims"]["format"], "nvidia_gpu", "{context}");
            assert_eq!(v["claims"]["checks"], expected["checks"], "{context}");
            assert_eq!(v["claims"]["first_failure"], Value::Null, "{context}");
            let gpu = &v["claims"]["gpu"];
            assert_eq!(
                gpu["driver_version"], expected["driver_version"],
                "{context}"
            );
            assert_eq!(gpu["vbios_version"], expected["vbios_version"], "{context}");
            let notes = v["claims"]["notes"].to_string();
            assert!(
                notes.contains("revocation (OCSP): not_checked"),
                "{context}: {notes}"
            );
            assert_eq!(
                notes.contains("measurements not compared"),
                case.rims.is_empty(),
                "{context}: {notes}"
            );
        }
    }
    // Hopper without its RIMs: authenticity only, and the verdict says so.
    let hopper = &GPU_CASES[0];
    let run = confidant(&hopper.args(&hopper.file("report.bin"), false, &hopper.nonce(), &[]));
    assert_verdict(&run, true, &[], "hopper without RIMs");
    let v = run.json();
    assert_eq!(v["claims"]["checks"].as_object().unwrap().len(), 5);
    assert!(
        v["claims"]["notes"]
            .to_string()
            .contains("measurements not compared")
    );
    assert_eq!(v["debug"], Value::Null);
}

#[test]
fn gpu_reject_twins_through_the_cli() {
    let hopper = &GPU_CASES[0];
    let tmp = tempfile::tempdir().unwrap();
    // Wrong nonce.
    let mut nonce = hopper.nonce();
    nonce.replace_range(0..2, "00");
    let run = confidant(&hopper.args(&hopper.file("report.bin"), true, &nonce, &[]));
    assert_verdict(&run, false, &["nonce"], "wrong nonce");
    assert_eq!(run.json()["claims"]["first_failure"], "nonce");
    // A byte after the signature, raw and hex.
    let mut report = std::fs::read(hopper.file("report.bin")).unwrap();
    report.push(0);
    let trailing = tmp.path().join("trailing.bin");
    std::fs::write(&trailing, &report).unwrap();
    let run = confidant(&hopper.args(&path_str(&trailing), true, &hopper.nonce(), &[]));
    assert_verdict(&run, false, &["report_parsed"], "trailing byte");
    let trailing_hex = tmp.path().join("trailing.hex");
    std::fs::write(&trailing_hex, hex::encode(&report)).unwrap();
    let run = confidant(&hopper.args(&path_str(&trailing_hex), true, &hopper.nonce(), &[]));
    assert_verdict(&run, false, &["report_parsed"], "trailing byte, hex");
    // A tampered RIM.
    let rim = std::fs::read_to_string(hopper.file(hopper.rims[0]))
        .unwrap()
        .replacen(
            "index=\"7\" active=\"True\"",
            "index=\"7\" active=\"False\"",
            1,
        );
    let tampered = tmp.path().join("rim.swidtag");
    std::fs::write(&tampered, rim).unwrap();
    let mut args = hopper.args(&hopper.file("report.bin"), false, &hopper.nonce(), &[]);
    args.extend([
        "--rim".to_owned(),
        path_str(&tampered),
        "--rim".to_owned(),
        hopper.file(hopper.rims[1]),
    ]);
    let run = confidant(&args);
    assert_verdict(&run, false, &["rim_driver_signature"], "tampered RIM");
    // The Blackwell evidence with the Hopper RIMs.
    let blackwell = &GPU_CASES[1];
    let mut args = blackwell.args(
        &blackwell.file("report.hex"),
        false,
        &blackwell.nonce(),
        &[],
    );
    for rim in hopper.rims {
        args.extend(["--rim".to_owned(), hopper.file(rim)]);
    }
    let run = confidant(&args);
    assert_verdict(
        &run,
        false,
        &[
            "rim_driver_version_match",
            "rim_driver_product_match",
            "rim_vbios_version_match",
            "rim_vbios_product_match",
            "measurements_match",
        ],
        "RIMs for another GPU",
    );
    // Hex wrapped as `xxd -p` writes it (60 digits a line) reads as the same report.
    let digits = hex::encode(std::fs::read(hopper.file("report.bin")).unwrap());
    let wrapped: Vec<&str> = digits
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let wrapped_hex = tmp.path().join("wrapped.hex");
    std::fs::write(&wrapped_hex, wrapped.join("\n") + "\n").unwrap();
    let run = confidant(&hopper.args(&path_str(&wrapped_hex), true, &hopper.nonce(), &[]));
    assert_verdict(&run, true, &[], "wrapped hex");
    // Before the chain is valid.
    let mut args = hopper.args(&hopper.file("report.bin"), false, &hopper.nonce(), &[]);
    let at = args.iter().position(|a| a == "--at").unwrap() + 1;
    args[at] = "2022-01-01T00:00:00Z".to_owned();
    let run = confidant(&args);
    assert_verdict(&run, false, &["cert_chain"], "before the chain");
}

#[test]
fn gpu_policies_through_the_cli() {
    let hopper = &GPU_CASES[0];
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path_str(&path)
    };
    // Every policy must pin the CPU measurement, or say in words that it does not.
    let cpu = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
    let cc_on = write(
        "cc.toml",
        &format!(
            "{cpu}[gpu]\ncc_mode = \"on\"\ndriver_versions = [\"545.00\"]\nrequire_ocsp = false\n"
        ),
    );
    let no_gpu = write("cpu.toml", cpu);
    let ocsp = write(
        "ocsp.toml",
        // require_ocsp is the default: a missing response is a failure unless the policy says
        // otherwise.
        &format!("{cpu}[gpu]\ncc_mode = \"any\"\n"),
    );
    let old_driver = write(
        "old.toml",
        &format!("{cpu}[gpu]\ndriver_versions = [\"535.86\"]\nrequire_ocsp = false\n"),
    );
    let report = hopper.file("report.bin");
    let nonce = hopper.nonce();

    let run = confidant(&hopper.args(&report, true, &nonce, &["--policy", &cc_on]));
    assert_verdict(&run, true, &[], "cc_mode on with RIMs");
    assert_eq!(run.json()["debug"], false);
    let run = confidant(&hopper.args(&report, false, &nonce, &["--policy", &cc_on]));
    assert_verdict(&run, false, &["gpu_cc_mode"], "cc_mode on without RIMs");
    let run = confidant(&hopper.args(&report, true, &nonce, &["--policy", &no_gpu]));
    assert_verdict(&run, false, &["gpu_policy"], "policy without [gpu]");
    let run = confidant(&hopper.args(&report, true, &nonce, &["--policy", &ocsp]));
    assert_verdict(
        &run,
        false,
        &["ocsp"],
        "OCSP required by default, none given",
    );
    let run = confidant(&hopper.args(&report, true, &nonce, &["--policy", &old_driver]));
    assert_verdict(&run, false, &["gpu_driver_version"], "driver not allowed");
}

#[test]
fn gpu_flags_are_refused_precisely() {
    let hopper = &GPU_CASES[0];
    let report = hopper.file("report.bin");
    let chain = hopper.file("chain.pem");
    let at = "2025-01-01T00:00:00Z";
    let nonce = hopper.nonce();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "attest",
                "verify",
                "--gpu-evidence",
                &report,
                "--gpu-chain",
                &chain,
                "--at",
                at,
            ],
            "--nonce <HEX>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--gpu-evidence",
                &report,
                "--nonce",
                &nonce,
                "--at",
                at,
            ],
            "--gpu-chain <FILE>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--gpu-evidence",
                &report,
                "--gpu-chain",
                &chain,
                "--nonce",
                "abcd",
                "--at",
                at,
            ],
            "2 bytes, expected 32",
        ),
        (
            vec![
                "attest",
                "verify",
                "--gpu-chain",
                &chain,
                "--nonce",
                &nonce,
                "--at",
                at,
            ],
            "--gpu-evidence <FILE>",
        ),
        (
            vec![
                "attest",
                "verify",
                "--gpu-evidence",
                &report,
                "--gpu-chain",
                &chain,
                "--nonce",
                &nonce,
                "--at",
                at,
                "--allow-debug",
            ],
            "apply to CPU evidence",
        ),
        (
            vec![
                "attest",
                "verify",
                "--gpu-evidence",
                "/nonexistent/report.bin",
                "--gpu-chain",
                &chain,
                "--nonce",
                &nonce,
                "--at",
                at,
            ],
            "--gpu-evidence /nonexistent/report.bin: cannot read",
        ),
    ];
    for (args, message) in cases {
        let run = confidant(&args);
        assert_ne!(run.code, 0, "{args:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
}

/// `attest gpu-evidence` collects through NVML; a build without the `cuda` feature (or a host
/// without NVML) says there is no GPU evidence, exits non-zero and writes nothing.
#[test]
fn gpu_evidence_collection_without_nvml_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("evidence");
    let run = confidant(&[
        "attest",
        "gpu-evidence",
        "--device",
        "0",
        "--nonce",
        &"ab".repeat(32),
        "--out",
        &path_str(&out),
    ]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("cuda:0") && run.stderr.contains("no GPU evidence"),
        "{}",
        run.stderr
    );
    assert!(!out.exists());
    // A nonce that is not 32 bytes is refused by the parser.
    let run = confidant(&[
        "attest",
        "gpu-evidence",
        "--nonce",
        "abcd",
        "--out",
        &path_str(&out),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("2 bytes, expected 32"),
        "{}",
        run.stderr
    );
}
