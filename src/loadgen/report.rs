//! Results: the stdout table, `results.json`, `results.csv`, the comparison with a baseline
//! run, and the latency-against-throughput plot (hand-written SVG; see [`plot_svg`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::BenchError;
use super::stats::Window;
use super::target::Protocol;

/// One point of a run. The first nine fields are the `results.json` contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Rows per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Successful rows per second (`requests_per_s × batch`).
    pub inferences_per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests in the reported windows.
    pub errors: u64,
    /// Failed requests by gRPC status code name.
    #[serde(default)]
    pub errors_by_code: BTreeMap<String, u64>,
    /// Mean latency, ms.
    #[serde(default)]
    pub mean_ms: f64,
    /// Successful requests in the reported windows.
    #[serde(default)]
    pub requests: u64,
    /// Seconds the reported windows lasted.
    #[serde(default)]
    pub seconds: f64,
    /// Windows run before stopping.
    #[serde(default)]
    pub windows: usize,
    /// Whether the last three windows agreed within ±10 %.
    #[serde(default)]
    pub stable: bool,
    /// HTTP/2 connections used.
    #[serde(default)]
    pub connections: usize,
    /// `oip` or `confidant`.
    #[serde(default)]
    pub protocol: String,
    /// Whether every answer was asked for (and carried) a receipt (`--receipts`).
    #[serde(default)]
    pub receipts: bool,
    /// 99.9th percentile latency, ms: the tail where a server's periodic stalls show.
    #[serde(default)]
    pub p999_ms: f64,
    /// The slowest successful request, ms.
    #[serde(default)]
    pub max_ms: f64,
}

impl Measurement {
    /// The measurement of `merged` (the reported windows).
    pub fn new(
        protocol: Protocol,
        batch: usize,
        concurrency: usize,
        connections: usize,
        merged: &Window,
        windows: usize,
        stable: bool,
    ) -> Self {
        let rps = merged.requests_per_s();
        Self {
            batch,
            concurrency,
            requests_per_s: rps,
            inferences_per_s: rps * batch as f64,
            p50_ms: merged.percentile_ms(50.0),
            p90_ms: merged.percentile_ms(90.0),
            p95_ms: merged.percentile_ms(95.0),
            p99_ms: merged.percentile_ms(99.0),
            errors: merged.error_count(),
            errors_by_code: merged.errors.clone(),
            mean_ms: merged.mean_ms(),
            requests: merged.latencies_ns.len() as u64,
            seconds: merged.duration.as_secs_f64(),
            windows,
            stable,
            connections,
            protocol: protocol.as_str().into(),
            receipts: false,
            p999_ms: merged.percentile_ms(99.9),
            max_ms: merged.percentile_ms(100.0),
        }
    }
}

/// The table header printed before the first point.
pub fn table_header() -> String {
    format!(
        "{:>6} {:>6} {:>12} {:>14} {:>9} {:>9} {:>9} {:>9} {:>7}  {}",
        "batch",
        "conc",
        "requests/s",
        "inferences/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "stable",
        "errors"
    )
}

/// One table row.
pub fn table_row(m: &Measurement) -> String {
    let errors = if m.errors_by_code.is_empty() {
        "0".to_string()
    } else {
        m.errors_by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{:>6} {:>6} {:>12.0} {:>14.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}  {}",
        m.batch,
        m.concurrency,
        m.requests_per_s,
        m.inferences_per_s,
        m.p50_ms,
        m.p90_ms,
        m.p95_ms,
        m.p99_ms,
        if m.stable { "yes" } else { "no" },
        errors
    )
}

/// `results.csv`.
pub fn csv(results: &[Measurement]) -> String {
    let mut out = String::from(
        "batch,concurrency,requests_per_s,inferences_per_s,p50_ms,p90_ms,p95_ms,p99_ms,errors,\
         mean_ms,requests,seconds,windows,stable,connections,protocol,errors_by_code,p999_ms,\
         max_ms\n",
    );
    for m in results {
        let by_code = m
            .errors_by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(";");
        let _ = writeln!(
            out,
            "{},{},{:.3},{:.3},{:.4},{:.4},{:.4},{:.4},{},{:.4},{},{:.3},{},{},{},{},{},{:.4},{:.4}",
            m.batch,
            m.concurrency,
            m.requests_per_s,
            m.inferences_per_s,
            m.p50_ms,
            m.p90_ms,
            m.p95_ms,
            m.p99_ms,
            m.errors,
            m.mean_ms,
            m.requests,
            m.seconds,
            m.windows,
            m.stable,
            m.connections,
            m.protocol,
            by_code,
            m.p999_ms,
            m.max_ms
        );
    }
    out
}

/// Reads another run's `results.json` (the baseline of a comparison).
pub fn read_results(path: &Path) -> Result<Vec<Measurement>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Baseline {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}

/// A Markdown table of `candidate` against `baseline` at the points both measured.
pub fn comparison(
    candidate_label: &str,
    candidate: &[Measurement],
    baseline_label: &str,
    baseline: &[Measurement],
) -> String {
    let mut out = format!(
        "| batch | concurrency | {c} req/s | {b} req/s | req/s ratio | {c} p50 ms | {b} p50 ms \
         | {c} p99 ms | {b} p99 ms |\n|---|---|---|---|---|---|---|---|---|\n",
        c = candidate_label,
        b = baseline_label
    );
    for m in candidate {
        let Some(b) = baseline
            .iter()
            .find(|b| b.batch == m.batch && b.concurrency == m.concurrency)
        else {
            continue;
        };
        let ratio = if b.requests_per_s > 0.0 {
            format!("{:.1}×", m.requests_per_s / b.requests_per_s)
        } else {
            "—".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | **{}** | {:.3} | {:.3} | {:.3} | {:.3} |",
            m.batch,
            m.concurrency,
            m.requests_per_s,
            b.requests_per_s,
            ratio,
            m.p50_ms,
            b.p50_ms,
            m.p99_ms,
            b.p99_ms
        );
    }
    out
}

/// One line family of the plot: a label and its points.
pub struct Series<'a> {
    /// Legend text (the server, say).
    pub label: &'a str,
    /// Its points.
    pub points: &'a [Measurement],
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// p50 (solid) and p99 (dashed) latency against inferences/s, log-log, one colour per
/// series × batch size, each point labelled with its concurrency.
///
/// Hand-written rather than `plotters`: one chart of lines on log axes is about a hundred
/// lines of SVG, and the crate (with its font and colour dependencies) would cost build time
/// on every CI run for that.
pub fn plot_svg(title: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (900.0, 560.0);
    let (left, right, top, bottom) = (80.0, 230.0, 50.0, 60.0);
    let all: Vec<&Measurement> = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|m| m.inferences_per_s > 0.0 && m.p50_ms > 0.0)
        .collect();
    let bounds = |f: &dyn Fn(&Measurement) -> f64| {
        let lo = all.iter().map(|m| f(m)).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(|m| f(m)).fold(0.0, f64::max);
        if lo.is_finite() && hi > 0.0 {
            (
                10f64.powf(lo.log10().floor()),
                10f64.powf(hi.log10().ceil()),
            )
        } else {
            (1.0, 10.0)
        }
    };
    let (x_lo, mut x_hi) = bounds(&|m| m.inferences_per_s);
    let (y_lo, mut y_hi) = bounds(&|m| m.p50_ms.min(m.p99_ms.max(m.p50_ms)));
    let (_, y_top) = bounds(&|m| m.p99_ms);
    y_hi = y_hi.max(y_top);
    if x_hi <= x_lo {
        x_hi = x_lo * 10.0;
    }
    if y_hi <= y_lo {
        y_hi = y_lo * 10.0;
    }
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x = |v: f64| left + (v.log10() - x_lo.log10()) / (x_hi.log10() - x_lo.log10()) * plot_w;
    let y =
        |v: f64| top + plot_h - (v.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        escape(title)
    );
    // Decade grid lines and labels.
    let mut v = x_lo;
    while v <= x_hi * 1.0001 {
        let px = x(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            number(v)
        );
        v *= 10.0;
    }
    let mut v = y_lo;
    while v <= y_hi * 1.0001 {
        let py = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            number(v)
        );
        v *= 10.0;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">inferences/s (rows/s, log scale)</text>"#,
        left + plot_w / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle">latency, ms (log scale): p50 solid, p99 dashed</text>"#,
        top + plot_h / 2.0
    );
    let mut legend_y = top + 10.0;
    let mut color = 0;
    for s in series {
        let mut batches: Vec<usize> = s.points.iter().map(|m| m.batch).collect();
        batches.sort_unstable();
        batches.dedup();
        for batch in batches {
            let c = COLORS[color % COLORS.len()];
            color += 1;
            let mut pts: Vec<&Measurement> = s
                .points
                .iter()
                .filter(|m| m.batch == batch && m.inferences_per_s > 0.0 && m.p50_ms > 0.0)
                .collect();
            pts.sort_by_key(|m| m.concurrency);
            for (dash, f) in [
                ("", (|m: &Measurement| m.p50_ms) as fn(&Measurement) -> f64),
                (r#" stroke-dasharray="6,4""#, |m: &Measurement| m.p99_ms),
            ] {
                let path: Vec<String> = pts
                    .iter()
                    .map(|m| format!("{:.1},{:.1}", x(m.inferences_per_s), y(f(m).max(y_lo))))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
                    path.join(" ")
                );
                for m in &pts {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                        x(m.inferences_per_s),
                        y(f(m).max(y_lo))
                    );
                }
            }
            for m in &pts {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">c{}</text>"#,
                    x(m.inferences_per_s) + 4.0,
                    y(m.p50_ms.max(y_lo)) + 12.0,
                    m.concurrency
                );
            }
            let lx = left + plot_w + 15.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{} batch {batch}</text>"#,
                lx + 25.0,
                lx + 32.0,
                legend_y + 4.0,
                escape(s.label)
            );
            legend_y += 20.0;
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="10">cN: concurrency N</text>"#,
        left + plot_w + 15.0,
        legend_y + 10.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn number(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `results.json`, `results.csv` and `latency_throughput.svg` into `dir`, with a
/// baseline run beside this one in the plot when there is one.
pub fn write_dir(
    dir: &Path,
    title: &str,
    series: &[Series<'_>],
    results: &[Measurement],
) -> Result<(), BenchError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| BenchError::Io { what, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| BenchError::Config(format!("results.json: {e}")))?;
    let p = dir.join("results.json");
    std::fs::write(&p, json + "\n").map_err(io(&p))?;
    let p = dir.join("results.csv");
    std::fs::write(&p, csv(results)).map_err(io(&p))?;
    let p = dir.join("latency_throughput.svg");
    std::fs::write(&p, plot_svg(title, series)).map_err(io(&p))?;
    Ok(())
}
