use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn table(csv: &str) -> Table {
    Table::from_reader(csv.as_bytes(), Path::new("t.csv"), Some("?")).expect("table parses")
}

fn hierarchy(text: &str) -> Hierarchy {
    Hierarchy::from_reader(text.as_bytes(), Path::new("h.csv")).expect("hierarchy parses")
}

/// Writes files into a temporary directory and returns it.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let mut f = std::fs::File::create(dir.path().join(name)).expect("create");
        f.write_all(body.as_bytes()).expect("write");
    }
    dir
}

const COLOR: &str = "red,warm,*\norange,warm,*\nblue,cold,*\ngreen,cold,*\n";

fn small_config(dir: &Path, k: usize) -> AnonymizeConfig {
    AnonymizeConfig {
        k,
        diversity: None,
        suppression_limit: 0.0,
        missing: None,
        columns: vec![
            ("age".into(), ColumnRole::Quasi(QuasiKind::Numeric)),
            (
                "color".into(),
                ColumnRole::Quasi(QuasiKind::Hierarchy(dir.join("color.csv"))),
            ),
            ("disease".into(), ColumnRole::Sensitive),
        ],
    }
}

const SMALL: &str = "id,age,color,disease\n\
    1,20,red,flu\n2,21,orange,cold\n3,22,red,flu\n4,23,blue,hiv\n\
    5,40,green,flu\n6,41,blue,cold\n7,42,green,hiv\n8,43,blue,flu\n";

#[test]
fn hierarchy_orders_leaves_depth_first_and_finds_ancestors() {
    let h = hierarchy("a,x,*\nc,y,*\nb,x,*\nd,y,*\n");
    // a and b share x, so they become adjacent.
    assert_eq!(h.code("a"), Some(0));
    assert_eq!(h.code("b"), Some(1));
    assert_eq!(h.code("c"), Some(2));
    assert_eq!(h.levels(), 3);
    let mut lca = hierarchy::Lca::new(&h, 0);
    lca.add(&h, 1);
    assert_eq!(lca.label(&h), "x");
    assert!((lca.cost(&h) - 0.5).abs() < 1e-12);
    lca.add(&h, 3);
    assert_eq!(lca.label(&h), "*");
    assert!(h.covers("x", 1) && !h.covers("y", 1) && h.covers("b", 1));
}

#[test]
fn hierarchy_adds_a_root_and_reads_semicolons() {
    let h = hierarchy("a;x\nb;y\n");
    assert_eq!(h.levels(), 3);
    assert_eq!(h.path(0).collect::<Vec<_>>(), ["a", "x", "*"]);
}

#[test]
fn hierarchy_rejects_ragged_rows_duplicates_and_non_trees() {
    for (text, needle) in [
        ("a,x,*\nb,*\n", "line 2: ragged row"),
        ("a,x,*\na,x,*\n", "line 2: leaf \"a\" appears twice"),
        ("a,x,p\nb,x,q\n", "line 2: not a tree"),
    ] {
        let err = Hierarchy::from_reader(text.as_bytes(), Path::new("h.csv"))
            .expect_err("must be rejected")
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn table_drops_missing_rows_and_names_ragged_lines() {
    let t = table("a,b\n1,x\n?,y\n3,z\n");
    assert_eq!(t.len(), 2);
    assert_eq!(t.dropped(), 1);
    assert_eq!(t.line(1), 4);
    assert_eq!(t.columns()[1].value(1), Some("z"));
    let err = Table::from_reader("a,b\n1,x\n2\n".as_bytes(), Path::new("in.csv"), None)
        .expect_err("ragged")
        .to_string();
    assert_eq!(
        err,
        "in.csv: line 3: ragged row: 1 fields where the header has 2"
    );
    let err = Table::from_reader("a,a\n1,2\n".as_bytes(), Path::new("in.csv"), None)
        .expect_err("duplicate header");
    assert!(matches!(err, AnonymizeError::DuplicateColumn { .. }));
    let err =
        Table::from_reader("a,b\n".as_bytes(), Path::new("in.csv"), None).expect_err("no rows");
    assert!(matches!(err, AnonymizeError::Empty { .. }));
}

#[test]
fn pseudonyms_are_deterministic_keyed_and_hex() {
    let key = PseudonymKey::from_bytes(&[7u8; 32]).expect("key");
    let again = PseudonymKey::from_bytes(&[7u8; 32]).expect("key");
    let other = PseudonymKey::from_bytes(&[8u8; 32]).expect("key");
    let p = key.pseudonym("alice@example.com");
    assert_eq!(p.len(), 64);
    assert!(
        p.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(p, again.pseudonym("alice@example.com"));
    assert_ne!(p, other.pseudonym("alice@example.com"));
    assert_ne!(p, key.pseudonym("bob@example.com"));
    assert!(matches!(
        PseudonymKey::from_bytes(&[1u8; 31]),
        Err(AnonymizeError::KeyTooShort { len: 31, .. })
    ));
}

#[test]
fn short_key_file_error_names_the_file_not_the_key() {
    let dir = dir_with(&[("k", "secret-but-short")]);
    let err = PseudonymKey::from_file(&dir.path().join("k"))
        .err()
        .expect("too short")
        .to_string();
    assert!(err.contains("16 bytes") && !err.contains("secret"), "{err}");
}

#[test]
fn toml_config_parses_every_role_and_resolves_paths() {
    let text = r#"
        k = 5
        l = 2
        l_kind = "entropy"
        missing = "?"
        key_file = "default.key"
        [columns.name]
        role = "identifier"
        [columns.ssn]
        role = "drop"
        [columns.age]
        role = "quasi"
        numeric = true
        [columns.color]
        role = "quasi"
        hierarchy = "h/color.csv"
        [columns.disease]
        role = "sensitive"
        [columns.note]
        role = "keep"
    "#;
    let c = AnonymizeConfig::from_toml_str(text, Path::new("/base")).expect("parses");
    assert_eq!(c.k, 5);
    assert_eq!(c.diversity, Some(Diversity::Entropy(2.0)));
    let role = |n: &str| {
        c.columns
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, r)| r.clone())
    };
    assert_eq!(
        role("name"),
        Some(ColumnRole::Identifier {
            key_file: PathBuf::from("/base/default.key")
        })
    );
    assert_eq!(
        role("color"),
        Some(ColumnRole::Quasi(QuasiKind::Hierarchy(PathBuf::from(
            "/base/h/color.csv"
        ))))
    );
    assert_eq!(role("ssn"), Some(ColumnRole::Drop));
}

#[test]
fn toml_config_rejects_bad_roles_and_values() {
    for (text, needle) in [
        ("k = 2\n[columns.a]\nrole = \"secret\"\n", "unknown role"),
        (
            "k = 2\n[columns.a]\nrole = \"quasi\"\n",
            "needs either a hierarchy",
        ),
        (
            "k = 0\n[columns.a]\nrole = \"quasi\"\nnumeric = true\n",
            "k must be",
        ),
        (
            "k = 2\n[columns.a]\nrole = \"identifier\"\n",
            "needs a key_file",
        ),
        (
            "k = 2\nl = 2\n[columns.a]\nrole = \"quasi\"\nnumeric = true\n",
            "sensitive",
        ),
        ("k = 2\nbogus = 1\n", "unknown field"),
    ] {
        let err = AnonymizeConfig::from_toml_str(text, Path::new("."))
            .expect_err(text)
            .to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn small_table_is_two_anonymous_and_cells_cover_originals() {
    let dir = dir_with(&[("color.csv", COLOR)]);
    let t = table(SMALL);
    let release = Anonymizer::new(small_config(dir.path(), 2))
        .expect("config")
        .run(&t)
        .expect("runs");
    let r = release.report();
    assert!(r.stats.k >= 2);
    assert_eq!(r.released, 8);
    let mut out = Vec::new();
    release.write_csv(&mut out).expect("writes");
    let out = String::from_utf8(out).expect("utf8");
    let h = hierarchy(COLOR);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("id,age,color,disease"));
    for (row, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let orig = t.columns()[2].value(row).expect("row");
        assert!(h.covers(f[2], h.code(orig).expect("leaf")), "{line}");
        let age: f64 = t.columns()[1]
            .value(row)
            .expect("row")
            .parse()
            .expect("num");
        let (lo, hi) = f[1].split_once('-').unwrap_or((f[1], f[1]));
        let (lo, hi): (f64, f64) = (lo.parse().expect("lo"), hi.parse().expect("hi"));
        assert!(lo <= age && age <= hi, "{line}");
        assert_eq!(
            f[0],
            t.columns()[0].value(row).expect("id"),
            "id passes through"
        );
    }
}

#[test]
fn l_diversity_is_enforced_while_partitioning() {
    let dir = dir_with(&[("color.csv", COLOR)]);
    let t = table(SMALL);
    let mut config = small_config(dir.path(), 2);
    let plain = Anonymizer::new(config.clone())
        .expect("config")
        .run(&t)
        .expect("runs");
    config.diversity = Some(Diversity::Distinct(3));
    let diverse = Anonymizer::new(config.clone())
        .expect("config")
        .run(&t)
        .expect("runs");
    assert!(diverse.report().stats.l_distinct.expect("l") >= 3);
    assert!(diverse.report().stats.k >= 2);
    assert!(plain.report().partitions >= diverse.report().partitions);
    config.diversity = Some(Diversity::Entropy(2.5));
    let diverse = Anonymizer::new(config.clone())
        .expect("config")
        .run(&t)
        .expect("runs");
    assert!(diverse.report().stats.l_entropy.expect("l") >= 2.5 - 1e-9);
    config.diversity = Some(Diversity::Distinct(4));
    let err = Anonymizer::new(config)
        .expect("config")
        .run(&t)
        .expect_err("3 values only");
    assert!(matches!(err, AnonymizeError::NotDiverse { .. }), "{err}");
}

#[test]
fn bad_inputs_name_the_line_and_column() {
    let dir = dir_with(&[("color.csv", COLOR)]);
    let anonymizer = Anonymizer::new(small_config(dir.path(), 2)).expect("config");
    let t = table("id,age,color,disease\n1,20,red,flu\n2,21,purple,flu\n");
    let err = anonymizer.run(&t).expect_err("purple").to_string();
    assert_eq!(
        err,
        "line 3, column \"color\": value \"purple\" is not in the hierarchy"
    );
    let t = table("id,age,color,disease\n1,20,red,flu\n2,old,red,flu\n");
    let err = anonymizer.run(&t).expect_err("old").to_string();
    assert_eq!(err, "line 3, column \"age\": value \"old\" is not a number");
    let t = table("id,age,color,disease\n1,20,red,flu\n");
    let err = anonymizer.run(&t).expect_err("k").to_string();
    assert_eq!(err, "k = 2 is larger than the table (1 records)");
    let t = table("id,years,color,disease\n1,20,red,flu\n");
    assert!(matches!(
        anonymizer.run(&t),
        Err(AnonymizeError::UnknownColumn { .. })
    ));
}

#[test]
fn identifiers_become_pseudonyms_and_dropped_columns_vanish() {
    let dir = dir_with(&[("color.csv", COLOR), ("id.key", &"k".repeat(32))]);
    let mut config = small_config(dir.path(), 4);
    config.columns.push((
        "id".into(),
        ColumnRole::Identifier {
            key_file: dir.path().join("id.key"),
        },
    ));
    config.columns.push(("disease".into(), ColumnRole::Drop));
    config
        .columns
        .retain(|(n, r)| !(n == "disease" && *r == ColumnRole::Sensitive));
    let t = table(SMALL);
    let release = Anonymizer::new(config.clone())
        .expect("config")
        .run(&t)
        .expect("runs");
    let mut out = Vec::new();
    release.write_csv(&mut out).expect("writes");
    let out = String::from_utf8(out).expect("utf8");
    let key = PseudonymKey::from_bytes("k".repeat(32).as_bytes()).expect("key");
    assert!(out.starts_with("id,age,color\n"));
    assert!(out.contains(&key.pseudonym("1")));
    assert!(!out.contains("flu"));
    // Same key, same table: same output (joins still work).
    let mut again = Vec::new();
    Anonymizer::new(config)
        .expect("config")
        .run(&t)
        .expect("runs")
        .write_csv(&mut again)
        .expect("writes");
    assert_eq!(out.as_bytes(), &again[..]);
}

#[test]
fn suppression_peels_outliers_within_the_limit() {
    let dir = dir_with(&[("color.csv", COLOR)]);
    // Twenty records of age 30 and one far outlier: without suppression the outlier widens the
    // whole class to 30-90.
    let mut csv = String::from("id,age,color,disease\n");
    for i in 0..20 {
        csv.push_str(&format!("{i},30,red,flu\n"));
    }
    csv.push_str("99,90,red,flu\n");
    let t = table(&csv);
    let mut config = small_config(dir.path(), 5);
    let plain = Anonymizer::new(config.clone())
        .expect("config")
        .run(&t)
        .expect("runs");
    assert_eq!(plain.report().suppressed, 0);
    config.suppression_limit = 0.05;
    let peeled = Anonymizer::new(config)
        .expect("config")
        .run(&t)
        .expect("runs");
    assert_eq!(peeled.report().suppressed, 1);
    assert_eq!(peeled.report().released, 20);
    assert!(peeled.report().ncp_percent < plain.report().ncp_percent);
}

#[test]
fn check_measures_k_l_and_t() {
    // Two classes: {a: flu, cold} and {b: flu, flu}; the table is half flu... 3/4 flu.
    let t = table("q,s\na,flu\na,cold\nb,flu\nb,flu\n");
    let stats = check(&t, &["q".into()], &["s".into()]).expect("check");
    assert_eq!(stats.k, 2);
    assert_eq!(stats.classes, 2);
    assert_eq!(stats.l_distinct, Some(1));
    // Class a: p = (1/2, 1/2) vs q = (3/4, 1/4): EMD = 1/4; class b: (1, 0): 1/4.
    assert!((stats.t.expect("t") - 0.25).abs() < 1e-12);
    // Numeric sensitive values use the ordered distance.
    let t = table("q,s\na,1\na,2\nb,3\nb,3\n");
    let stats = check(&t, &["q".into()], &["s".into()]).expect("check");
    // Table over ranks (1,2,3) = (1/4, 1/4, 1/2); class a = (1/2, 1/2, 0):
    // cumulative differences 1/4, 1/2 -> (1/4 + 1/2) / 2 = 3/8.
    assert!((stats.t.expect("t") - 0.375).abs() < 1e-12, "{stats:?}");
}
