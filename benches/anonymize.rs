//! Mondrian on UCI Adult, config A (8 quasi-identifiers, income sensitive, 30,162 complete
//! rows), k = 10, one thread. The table is read once; each iteration encodes the
//! quasi-identifiers, partitions, builds the released labels and measures k, l, t and NCP.
//! The baseline in the same run is LeFevre's median rule on the same data.

use std::hint::black_box;
use std::path::Path;

use confidant::anonymize::{AnonymizeConfig, Anonymizer, SplitRule, Table};
use criterion::Criterion;

fn adult(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adult");
    let config =
        AnonymizeConfig::from_toml_file(&dir.join("anon-config-a.toml")).expect("config A");
    let table = Table::read_csv(&dir.join("adult.csv"), config.missing.as_deref()).expect("adult");
    let mut group = c.benchmark_group("anonymize/adult-config-a-k10");
    for (name, rule) in [("gain", SplitRule::Gain), ("median", SplitRule::Median)] {
        let anonymizer = Anonymizer::new(config.clone())
            .expect("hierarchies")
            .with_split_rule(rule);
        let r = anonymizer.run(&table).expect("runs");
        let report = r.report();
        eprintln!(
            "{name}: records {}, k {}, classes {}, NCP {:.3}%, discernibility {:.0}, t {:.4}",
            report.records,
            report.stats.k,
            report.stats.classes,
            report.ncp_percent,
            report.discernibility,
            report.stats.t.unwrap_or(f64::NAN),
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(anonymizer.run(black_box(&table))))
        });
    }
    group.finish();
}

fn main() {
    // Written out rather than through `criterion_main!`, whose generated function has no docs.
    let mut c = Criterion::default().configure_from_args();
    adult(&mut c);
    c.final_summary();
}
