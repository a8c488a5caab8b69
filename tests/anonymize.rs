//! Anonymization of UCI Adult (config A of tests/fixtures/adult/hierarchies/README.md), checked
//! by an independent reader: the output CSV is parsed afresh, every equivalence class is
//! recomputed from the released quasi-identifier values, and every released cell is checked
//! against the original record through the hierarchy files themselves.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use confidant::anonymize::{AnonymizeConfig, Anonymizer, ColumnRole, Diversity, QuasiKind, Table};

const CATEGORICAL: [&str; 7] = [
    "sex",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adult")
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        Table::read_csv(&fixtures().join("adult.csv"), Some("?")).expect("adult.csv reads")
    })
}

fn config_a(k: usize) -> AnonymizeConfig {
    let mut columns = vec![("age".to_owned(), ColumnRole::Quasi(QuasiKind::Numeric))];
    for c in CATEGORICAL {
        columns.push((
            c.to_owned(),
            ColumnRole::Quasi(QuasiKind::Hierarchy(
                fixtures().join("hierarchies").join(format!("{c}.csv")),
            )),
        ));
    }
    columns.push(("income".to_owned(), ColumnRole::Sensitive));
    AnonymizeConfig {
        k,
        diversity: None,
        suppression_limit: 0.0,
        missing: Some("?".into()),
        columns,
    }
}

/// The original complete rows, read without the library.
fn original() -> &'static (Vec<String>, Vec<Vec<String>>) {
    static ROWS: OnceLock<(Vec<String>, Vec<Vec<String>>)> = OnceLock::new();
    ROWS.get_or_init(|| {
        read_csv_plain(
            &std::fs::read(fixtures().join("adult.csv")).expect("read"),
            true,
        )
    })
}

fn read_csv_plain(bytes: &[u8], drop_missing: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(bytes);
    let header = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = r
        .records()
        .map(|rec| {
            rec.expect("record")
                .iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|row| !drop_missing || !row.iter().any(|f| f == "?"))
        .collect();
    (header, rows)
}

/// For each categorical QI: leaf -> the labels that cover it, and label -> leaves under it.
struct Hierarchies {
    covers: HashMap<String, HashMap<String, HashSet<String>>>,
    leaves_under: HashMap<String, HashMap<String, usize>>,
    domain: HashMap<String, usize>,
}

fn hierarchies() -> &'static Hierarchies {
    static H: OnceLock<Hierarchies> = OnceLock::new();
    H.get_or_init(|| {
        let mut h = Hierarchies {
            covers: HashMap::new(),
            leaves_under: HashMap::new(),
            domain: HashMap::new(),
        };
        for c in CATEGORICAL {
            let text = std::fs::read_to_string(fixtures().join(format!("hierarchies/{c}.csv")))
                .expect("hierarchy");
            let mut covers = HashMap::new();
            let mut under: HashMap<String, usize> = HashMap::new();
            let mut n = 0;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let labels: Vec<String> = line.split(',').map(str::to_owned).collect();
                for l in labels.iter().collect::<HashSet<_>>() {
                    *under.entry(l.clone()).or_default() += 1;
                }
                covers.insert(labels[0].clone(), labels.into_iter().collect());
                n += 1;
            }
            h.covers.insert(c.to_owned(), covers);
            h.leaves_under.insert(c.to_owned(), under);
            h.domain.insert(c.to_owned(), n);
        }
        h
    })
}

/// Checks a released CSV against the original; returns (achieved k, NCP in percent).
fn independent_check(out: &[u8], k: usize, l: Option<usize>) -> (usize, f64) {
    let (oh, orig) = original();
    let (header, rows) = read_csv_plain(out, false);
    assert_eq!(&header, oh, "same columns, same order");
    assert_eq!(rows.len(), orig.len(), "no record suppressed or added");
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    let qi: Vec<usize> = std::iter::once("age").chain(CATEGORICAL).map(col).collect();
    let income = col("income");
    let h = hierarchies();
    let mut classes: HashMap<Vec<&str>, (usize, HashSet<&str>)> = HashMap::new();
    let mut cost = 0.0;
    for (released, original) in rows.iter().zip(orig) {
        for (i, (r, o)) in released.iter().zip(original).enumerate() {
            let name = header[i].as_str();
            if name == "age" {
                let v: f64 = o.parse().expect("age");
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                let (lo, hi): (f64, f64) = (lo.parse().expect("lo"), hi.parse().expect("hi"));
                assert!(lo <= v && v <= hi, "age {v} released as {r}");
                cost += (hi - lo) / (90.0 - 17.0);
            } else if let Some(covers) = h.covers.get(name) {
                assert!(
                    covers[o].contains(r),
                    "{name}: {o:?} released as {r:?}, which does not cover it"
                );
                if r != o {
                    cost += h.leaves_under[name][r] as f64 / h.domain[name] as f64;
                }
            } else {
                assert_eq!(r, o, "column {name} passes through unchanged");
            }
        }
        let key: Vec<&str> = qi.iter().map(|&i| released[i].as_str()).collect();
        let entry = classes.entry(key).or_default();
        entry.0 += 1;
        entry.1.insert(released[income].as_str());
    }
    let achieved = classes.values().map(|c| c.0).min().expect("classes");
    assert!(achieved >= k, "achieved k = {achieved} < {k}");
    if let Some(l) = l {
        let achieved_l = classes.values().map(|c| c.1.len()).min().expect("classes");
        assert!(achieved_l >= l, "achieved l = {achieved_l} < {l}");
    }
    let ncp = 100.0 * cost / (rows.len() * qi.len()) as f64;
    (achieved, ncp)
}

fn run_and_check(config: AnonymizeConfig, l: Option<usize>) -> (usize, f64) {
    let k = config.k;
    let release = Anonymizer::new(config)
        .expect("config")
        .run(table())
        .expect("runs");
    let mut out = Vec::new();
    release.write_csv(&mut out).expect("writes");
    let (achieved, ncp) = independent_check(&out, k, l);
    let report = release.report();
    assert_eq!(report.records, 30_162);
    assert_eq!(report.dropped_missing, 2_399);
    assert_eq!(
        report.stats.k, achieved,
        "the report's k matches the recount"
    );
    assert!(
        (report.ncp_percent - ncp).abs() < 1e-6,
        "report NCP {} vs recomputed {ncp}",
        report.ncp_percent
    );
    eprintln!(
        "k = {k}: achieved {achieved}, NCP {ncp:.3}%, {:.1} ms",
        report.runtime_ms
    );
    (achieved, ncp)
}

#[test]
fn adult_config_a_k2() {
    run_and_check(config_a(2), None);
}

#[test]
fn adult_config_a_k5() {
    run_and_check(config_a(5), None);
}

#[test]
fn adult_config_a_k10_meets_the_utility_target() {
    let (_, ncp) = run_and_check(config_a(10), None);
    assert!(ncp <= 11.0, "NCP {ncp}% above the 11% target");
}

#[test]
fn adult_config_a_k50() {
    run_and_check(config_a(50), None);
}

#[test]
fn adult_config_a_k10_distinct_l2() {
    let mut config = config_a(10);
    config.diversity = Some(Diversity::Distinct(2));
    run_and_check(config, Some(2));
}

#[test]
fn adult_toml_config_a_matches_the_struct() {
    let config = AnonymizeConfig::from_toml_file(&fixtures().join("anon-config-a.toml"))
        .expect("config parses");
    let mut expected = config_a(10);
    expected.columns.sort_by(|a, b| a.0.cmp(&b.0));
    let mut got = config.clone();
    got.columns.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected);
}

#[test]
fn adult_value_missing_from_a_hierarchy_names_line_and_column() {
    // Without dropping `?` rows, the first `?` (native-country, line 16) is not a leaf.
    let raw = Table::read_csv(&fixtures().join("adult.csv"), None).expect("reads");
    let err = Anonymizer::new(config_a(10))
        .expect("config")
        .run(&raw)
        .expect_err("?");
    assert_eq!(
        err.to_string(),
        "line 16, column \"native-country\": value \"?\" is not in the hierarchy"
    );
}

#[test]
fn cli_flag_form_and_check_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.csv");
    let report = dir.path().join("report.json");
    let exe = env!("CARGO_BIN_EXE_confidant");
    let h = fixtures().join("hierarchies");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("anonymize")
        .arg("--input")
        .arg(fixtures().join("adult.csv"))
        .args(["--missing", "?", "--qi"])
        .arg(format!("age,{}", CATEGORICAL.join(",")))
        .args([
            "--numeric",
            "age",
            "--sensitive",
            "income",
            "--k",
            "10",
            "--l",
            "2",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report);
    for c in CATEGORICAL {
        cmd.arg("--hierarchy")
            .arg(format!("{c}={}", h.join(format!("{c}.csv")).display()));
    }
    let status = cmd.output().expect("runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert!(report["k"].as_u64().expect("k") >= 10);
    assert!(report["l_distinct"].as_u64().expect("l") >= 2);
    let check = std::process::Command::new(exe)
        .args(["anonymize", "check", "--input"])
        .arg(&out)
        .arg("--qi")
        .arg(format!("age,{}", CATEGORICAL.join(",")))
        .args(["--sensitive", "income"])
        .output()
        .expect("runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(stats["k"], report["k"]);
    assert_eq!(stats["l_distinct"], report["l_distinct"]);
    assert_eq!(stats["t"], report["t"]);
    // Bad input through the CLI: k larger than the table.
    let small = dir.path().join("small.csv");
    std::fs::write(&small, "age,income\n30,<=50K\n").expect("write");
    let bad = std::process::Command::new(exe)
        .args(["anonymize", "--input"])
        .arg(&small)
        .args(["--qi", "age", "--numeric", "age", "--k", "5", "--out"])
        .arg(dir.path().join("x.csv"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("k = 5 is larger than the table (1 records)")
    );
}

#[test]
fn cli_config_form_writes_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.csv");
    let report = dir.path().join("report.json");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["anonymize", "--input"])
        .arg(fixtures().join("adult.csv"))
        .arg("--config")
        .arg(fixtures().join("anon-config-a.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(report["k_target"], 10);
    assert!(report["k"].as_u64().expect("k") >= 10);
    assert!(report["ncp_percent"].as_f64().expect("ncp") <= 11.0);
    assert_eq!(report["records"], 30_162);
    let (achieved, _) = independent_check(&std::fs::read(&out).expect("out"), 10, None);
    assert_eq!(report["k"], achieved);
}
