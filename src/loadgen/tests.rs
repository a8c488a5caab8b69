#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::report::{self, Measurement, Series};
use super::stats::{Sample, Window, stable};
use super::{parse_duration, parse_list};

fn window(secs: u64, latencies_ms: &[u64]) -> Window {
    Window::new(
        Duration::from_secs(secs),
        latencies_ms.iter().map(|&l| Sample {
            latency_ns: l * 1_000_000,
            code: None,
        }),
    )
}

#[test]
fn percentiles_use_nearest_rank() {
    let w = window(1, &(1..=100).collect::<Vec<_>>());
    assert_eq!(w.percentile_ms(50.0), 50.0);
    assert_eq!(w.percentile_ms(99.0), 99.0);
    assert_eq!(w.percentile_ms(100.0), 100.0);
    assert_eq!(w.requests_per_s(), 100.0);
    assert_eq!(w.mean_ms(), 50.5);
    assert_eq!(window(1, &[]).percentile_ms(99.0), 0.0);
    assert_eq!(window(1, &[7]).percentile_ms(1.0), 7.0);
}

#[test]
fn errors_are_counted_by_code_name_and_not_as_latencies() {
    let w = Window::new(
        Duration::from_secs(1),
        [
            Sample {
                latency_ns: 5,
                code: Some(tonic::Code::Unavailable),
            },
            Sample {
                latency_ns: 5,
                code: Some(tonic::Code::Unavailable),
            },
            Sample {
                latency_ns: 9,
                code: None,
            },
        ],
    );
    assert_eq!(w.error_count(), 2);
    assert_eq!(w.errors["UNAVAILABLE"], 2);
    assert_eq!(w.latencies_ns, [9]);
}

#[test]
fn three_windows_within_ten_percent_are_stable() {
    let steady = [
        window(1, &[1; 100]),
        window(1, &[1; 105]),
        window(1, &[1; 95]),
    ];
    assert!(stable(&steady, 3, 0.10));
    assert!(!stable(&steady[..2], 3, 0.10), "needs three windows");
    let drifting = [
        window(1, &[1; 100]),
        window(1, &[1; 100]),
        window(1, &[1; 130]),
    ];
    assert!(!stable(&drifting, 3, 0.10));
    let slower = [
        window(1, &[1; 100]),
        window(1, &[1; 100]),
        window(1, &[2; 100]),
    ];
    assert!(!stable(&slower, 3, 0.10), "latency must agree too");
}

#[test]
fn flags_parse() {
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("-1s").is_err());
    assert_eq!(parse_list("--batch", "1, 32").unwrap(), [1, 32]);
    assert!(parse_list("--batch", "1,x").is_err());
}

fn measurement(batch: usize, concurrency: usize, rps: f64) -> Measurement {
    Measurement::new(
        super::Protocol::Oip,
        batch,
        concurrency,
        1,
        &window(1, &vec![1; rps as usize]),
        3,
        true,
    )
}

#[test]
fn results_json_has_the_contract_fields_and_round_trips() {
    let m = measurement(32, 8, 1000.0);
    let v = serde_json::to_value([&m]).unwrap();
    for field in [
        "batch",
        "concurrency",
        "requests_per_s",
        "inferences_per_s",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "errors",
    ] {
        assert!(v[0].get(field).is_some(), "{field}");
    }
    assert_eq!(v[0]["inferences_per_s"], 32000.0);
    let back: Vec<Measurement> = serde_json::from_value(v).unwrap();
    assert_eq!(back, [m]);
    let csv = report::csv(&back);
    assert!(csv.starts_with("batch,concurrency,requests_per_s,"));
    assert_eq!(csv.lines().count(), 2);
}

#[test]
fn comparison_and_plot_cover_both_runs() {
    let ours = [measurement(1, 32, 2000.0), measurement(1, 8, 1000.0)];
    let peer = [measurement(1, 32, 100.0)];
    let table = report::comparison("confidant", &ours, "peer", &peer);
    assert!(
        table.contains("| 1 | 32 | 2000 | 100 | **20.0×**"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "only points both measured");
    let svg = report::plot_svg(
        "t<1>",
        &[
            Series {
                label: "confidant",
                points: &ours,
            },
            Series {
                label: "peer",
                points: &peer,
            },
        ],
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("t&lt;1&gt;") && svg.contains("peer batch 1"));
    assert!(!svg.contains("NaN") && !svg.contains("\"inf"), "{svg}");
}
