//! Prometheus metrics: lock-free counters and histograms, and the text exposition format.
//!
//! Every request-path update is a handful of relaxed atomic adds; nothing allocates or
//! locks after a model's series exist. Series carry only model ids and status-code names,
//! never inputs, outputs, principals or keys. Each Triton-named metric
//! (`nv_inference_request_success`, `nv_inference_request_failure`, `nv_inference_count`,
//! `nv_inference_exec_count`, `nv_inference_queue_duration_us`,
//! `nv_inference_compute_infer_duration_us`) is exported with Triton's semantics next to our
//! own `confidant_*` series, so dashboards built for Triton work unchanged.

pub mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The label used for requests naming a model that is not loaded (so that clients cannot
/// grow the series set without bound).
pub const UNKNOWN_MODEL: &str = "_unknown";

/// Latency bucket bounds, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Batch-size bucket bounds, in rows.
pub const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// A cumulative histogram with fixed bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, in millionths of the unit (µs for seconds), so that it stays an integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = (value * 1e6).max(0.0).round() as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Renders the sum of `parts` (histograms over the same bounds) as one histogram.
    fn render_merged(parts: &[&Histogram], out: &mut String, name: &str, labels: &str) {
        let Some(first) = parts.first() else {
            return;
        };
        let merged = Histogram::new(first.bounds);
        for h in parts {
            for (m, b) in merged.buckets.iter().zip(&h.buckets) {
                m.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            merged.count.fetch_add(h.count(), Ordering::Relaxed);
            merged
                .sum_micros
                .fetch_add(h.sum_micros.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        merged.render(out, name, labels);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// gRPC status codes, in code order, as Prometheus label values.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Shards per model's series: each thread records into one (chosen once per thread), so
/// that two cores serving the same model do not bounce the same cache lines on every
/// request; readers sum the shards.
const SHARDS: usize = 4;

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS as u64) as usize;
    }
    SHARD.with(|s| *s)
}

/// One model's request-side series.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    shards: [ModelShard; SHARDS],
}

/// One shard of a model's series (on its own cache lines).
#[derive(Debug)]
#[repr(align(128))]
struct ModelShard {
    by_code: [AtomicU64; 17],
    /// Rows inferred by successful requests (Triton's inference count).
    inferences: AtomicU64,
    /// Summed queue time of successful requests, µs.
    queue_us: AtomicU64,
    /// Summed compute time of successful requests, µs.
    compute_us: AtomicU64,
    /// Rows flagged by sensitivity screening.
    flagged_rows: AtomicU64,
    /// Text tokens of successful requests.
    tokens: AtomicU64,
    /// Padded tokens computed for successful requests.
    padded_tokens: AtomicU64,
    /// ε spent, in millionths.
    epsilon_micros: AtomicU64,
    /// End-to-end request latency in the server.
    pub request_seconds: Histogram,
    /// Time in the batch queue.
    pub queue_seconds: Histogram,
    /// Forward-pass time.
    pub compute_seconds: Histogram,
}

impl Default for ModelShard {
    fn default() -> Self {
        Self {
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            inferences: AtomicU64::new(0),
            queue_us: AtomicU64::new(0),
            compute_us: AtomicU64::new(0),
            flagged_rows: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            padded_tokens: AtomicU64::new(0),
            epsilon_micros: AtomicU64::new(0),
            request_seconds: Histogram::new(&LATENCY_BUCKETS),
            queue_seconds: Histogram::new(&LATENCY_BUCKETS),
            compute_seconds: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// What one finished request contributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSample {
    /// The gRPC status code (0 for OK).
    pub code: i32,
    /// Server-side latency.
    pub latency: Duration,
    /// Rows inferred (successes only).
    pub rows: u64,
    /// Queue and compute time, when the request reached the engine.
    pub engine: Option<(Duration, Duration)>,
    /// Rows flagged by screening.
    pub flagged_rows: u64,
    /// ε charged.
    pub epsilon: f64,
    /// Tokens of a text model's request (after truncation).
    pub tokens: u64,
    /// Tokens its forward passes computed, padding included.
    pub padded_tokens: u64,
}

impl ModelMetrics {
    /// Records one finished request.
    pub fn record(&self, s: &RequestSample) {
        self.shards[shard()].record(s);
    }

    /// Requests finished with `code` so far.
    pub fn count(&self, code: tonic::Code) -> u64 {
        let i = (code as usize).min(16);
        self.total(|s| &s.by_code[i])
    }

    fn successes(&self) -> u64 {
        self.total(|s| &s.by_code[0])
    }

    fn failures(&self) -> u64 {
        (1..17).map(|i| self.total(|s| &s.by_code[i])).sum()
    }

    /// The sum over the shards of one counter.
    fn total(&self, counter: impl Fn(&ModelShard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }

    /// One histogram, merged over the shards.
    fn render_histogram(
        &self,
        out: &mut String,
        name: &str,
        labels: &str,
        which: impl Fn(&ModelShard) -> &Histogram,
    ) {
        let parts: Vec<&Histogram> = self.shards.iter().map(which).collect();
        Histogram::render_merged(&parts, out, name, labels);
    }
}

impl ModelShard {
    fn record(&self, s: &RequestSample) {
        let code = usize::try_from(s.code).unwrap_or(2).min(16);
        self.by_code[code].fetch_add(1, Ordering::Relaxed);
        self.request_seconds.observe_duration(s.latency);
        if code == 0 {
            self.inferences.fetch_add(s.rows, Ordering::Relaxed);
            if s.tokens > 0 {
                self.tokens.fetch_add(s.tokens, Ordering::Relaxed);
                self.padded_tokens
                    .fetch_add(s.padded_tokens, Ordering::Relaxed);
            }
        }
        if let Some((queue, compute)) = s.engine {
            self.queue_seconds.observe_duration(queue);
            self.compute_seconds.observe_duration(compute);
            if code == 0 {
                self.queue_us
                    .fetch_add(queue.as_micros() as u64, Ordering::Relaxed);
                self.compute_us
                    .fetch_add(compute.as_micros() as u64, Ordering::Relaxed);
            }
        }
        if s.flagged_rows > 0 {
            self.flagged_rows
                .fetch_add(s.flagged_rows, Ordering::Relaxed);
        }
        if s.epsilon > 0.0 {
            let micros = (s.epsilon * 1e6).round() as u64;
            self.epsilon_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// The engine side of a model: executions and batch sizes (updated by the batch worker).
#[derive(Debug)]
pub struct ExecMetrics {
    executions: AtomicU64,
    /// Request rows per forward pass.
    pub batch_rows: Histogram,
}

impl Default for ExecMetrics {
    fn default() -> Self {
        Self {
            executions: AtomicU64::new(0),
            batch_rows: Histogram::new(&BATCH_BUCKETS),
        }
    }
}

impl ExecMetrics {
    /// Records one forward pass over `rows` request rows.
    pub fn record(&self, rows: usize) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.batch_rows.observe(rows as f64);
    }

    /// Forward passes so far.
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }
}

/// A loaded model's engine-side state, read at scrape time.
#[derive(Debug, Clone)]
pub struct EngineGauge {
    /// The model id.
    pub model: String,
    /// The model version (Triton's `version` label).
    pub version: String,
    /// Requests waiting in the batch queue.
    pub queue_depth: usize,
    /// Executions and batch sizes.
    pub exec: Arc<ExecMetrics>,
}

/// A source of per-model gauges read at scrape time.
pub trait ModelGauges: Send + Sync {
    /// One gauge per loaded model.
    fn gauges(&self) -> Vec<EngineGauge>;
}

/// All series. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Metrics {
    models: RwLock<BTreeMap<String, Arc<ModelMetrics>>>,
    /// The receipts' counts, read at scrape time, once the server has a receipt signer.
    receipts: std::sync::OnceLock<Box<dyn Fn() -> ReceiptSeries + Send + Sync>>,
}

/// The receipts' series: receipts signed, and the signatures over their groups by how the
/// nonce was made (ahead, on idle CPU; or whole, when none was ready). Receipts over
/// signatures is the groups' mean size.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiptSeries {
    /// Receipts signed.
    pub receipts: u64,
    /// Groups signed with a nonce made ahead.
    pub signatures_nonce_ahead: u64,
    /// Groups signed whole.
    pub signatures_whole: u64,
}

impl Metrics {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The series of `model` (created on first use; callers pass only loaded model ids or
    /// [`UNKNOWN_MODEL`]).
    pub fn model(&self, model: &str) -> Arc<ModelMetrics> {
        if let Some(m) = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
        {
            return Arc::clone(m);
        }
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(models.entry(model.to_string()).or_default())
    }

    /// From now on, `/metrics` shows the receipts' series, read from `counts` at each scrape
    /// (once; later calls are ignored).
    pub fn receipts_from(&self, counts: impl Fn() -> ReceiptSeries + Send + Sync + 'static) {
        let _ = self.receipts.set(Box::new(counts));
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, gauges: &dyn ModelGauges) -> String {
        let models: Vec<(String, Arc<ModelMetrics>)> = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let engines = gauges.gauges();
        let mut out = String::with_capacity(8192);
        let label = |m: &str| format!("model=\"{}\"", escape(m));

        header(
            &mut out,
            "confidant_requests_total",
            "counter",
            "Requests finished, by model and gRPC status code.",
        );
        for (m, s) in &models {
            for (i, code) in CODES.iter().enumerate() {
                let n = s.total(|x| &x.by_code[i]);
                if n > 0 || *code == "OK" {
                    let _ = writeln!(
                        out,
                        "confidant_requests_total{{{},code=\"{code}\"}} {n}",
                        label(m)
                    );
                }
            }
        }
        header(
            &mut out,
            "confidant_request_duration_seconds",
            "histogram",
            "Server-side request latency.",
        );
        for (m, s) in &models {
            s.render_histogram(
                &mut out,
                "confidant_request_duration_seconds",
                &label(m),
                |x| &x.request_seconds,
            );
        }
        header(
            &mut out,
            "confidant_queue_duration_seconds",
            "histogram",
            "Time requests waited in the batch queue.",
        );
        for (m, s) in &models {
            s.render_histogram(
                &mut out,
                "confidant_queue_duration_seconds",
                &label(m),
                |x| &x.queue_seconds,
            );
        }
        header(
            &mut out,
            "confidant_compute_duration_seconds",
            "histogram",
            "Forward-pass time of the batch that served each request.",
        );
        for (m, s) in &models {
            s.render_histogram(
                &mut out,
                "confidant_compute_duration_seconds",
                &label(m),
                |x| &x.compute_seconds,
            );
        }
        header(
            &mut out,
            "confidant_batch_rows",
            "histogram",
            "Request rows per forward pass.",
        );
        for g in &engines {
            g.exec
                .batch_rows
                .render(&mut out, "confidant_batch_rows", &label(&g.model));
        }
        header(
            &mut out,
            "confidant_queue_depth",
            "gauge",
            "Requests waiting in the batch queue.",
        );
        for g in &engines {
            let _ = writeln!(
                out,
                "confidant_queue_depth{{{}}} {}",
                label(&g.model),
                g.queue_depth
            );
        }
        // Text models: tokens per second is the rate of the first; the padded-token ratio is
        // the second over the first.
        for (name, help, which) in [
            (
                "confidant_text_tokens_total",
                "Text tokens (after truncation) of successful requests to text models.",
                (|x: &ModelShard| &x.tokens) as fn(&ModelShard) -> &AtomicU64,
            ),
            (
                "confidant_text_padded_tokens_total",
                "Tokens computed for those requests, padding included (their share of each \
                 length-grouped forward pass).",
                |x: &ModelShard| &x.padded_tokens,
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (m, s) in &models {
                let _ = writeln!(out, "{name}{{{}}} {}", label(m), s.total(which));
            }
        }
        header(
            &mut out,
            "confidant_sensitivity_flagged_rows_total",
            "counter",
            "Rows flagged (or rejected) by adversarial-sensitivity screening.",
        );
        for (m, s) in &models {
            let _ = writeln!(
                out,
                "confidant_sensitivity_flagged_rows_total{{{}}} {}",
                label(m),
                s.total(|x| &x.flagged_rows)
            );
        }
        header(
            &mut out,
            "confidant_privacy_epsilon_spent_total",
            "counter",
            "Differential-privacy epsilon charged to all principals, summed.",
        );
        for (m, s) in &models {
            let eps = s.total(|x| &x.epsilon_micros) as f64 / 1e6;
            let _ = writeln!(
                out,
                "confidant_privacy_epsilon_spent_total{{{}}} {eps}",
                label(m)
            );
        }

        // Triton-compatible names, with Triton's semantics.
        let version = |m: &str| {
            engines
                .iter()
                .find(|g| g.model == m)
                .map_or(String::new(), |g| escape(&g.version))
        };
        let triton =
            |out: &mut String, name: &str, help: &str, value: &dyn Fn(&ModelMetrics) -> u64| {
                header(out, name, "counter", help);
                for (m, s) in &models {
                    if m != UNKNOWN_MODEL {
                        let _ = writeln!(
                            out,
                            "{name}{{{},version=\"{}\"}} {}",
                            label(m),
                            version(m),
                            value(s)
                        );
                    }
                }
            };
        triton(
            &mut out,
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes.",
            &|s| s.successes(),
        );
        triton(
            &mut out,
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes.",
            &|s| s.failures(),
        );
        triton(
            &mut out,
            "nv_inference_count",
            "Number of inferences performed (rows; does not include cached requests).",
            &|s| s.total(|x| &x.inferences),
        );
        triton(
            &mut out,
            "nv_inference_queue_duration_us",
            "Cumulative inference queuing duration in microseconds.",
            &|s| s.total(|x| &x.queue_us),
        );
        triton(
            &mut out,
            "nv_inference_compute_infer_duration_us",
            "Cumulative compute inference duration in microseconds.",
            &|s| s.total(|x| &x.compute_us),
        );
        header(
            &mut out,
            "nv_inference_exec_count",
            "counter",
            "Number of model executions performed (does not include cached requests).",
        );
        for g in &engines {
            let _ = writeln!(
                out,
                "nv_inference_exec_count{{{},version=\"{}\"}} {}",
                label(&g.model),
                escape(&g.version),
                g.exec.executions()
            );
        }
        if let Some(counts) = self.receipts.get() {
            let c = counts();
            header(
                &mut out,
                "confidant_receipts_total",
                "counter",
                "Receipts signed for answers.",
            );
            let _ = writeln!(out, "confidant_receipts_total {}", c.receipts);
            header(
                &mut out,
                "confidant_receipt_signatures_total",
                "counter",
                "Signatures over receipts' groups, by how the nonce was made: ahead, on idle \
                 CPU; or whole, when none was ready.",
            );
            for (nonce, n) in [
                ("ahead", c.signatures_nonce_ahead),
                ("whole", c.signatures_whole),
            ] {
                let _ = writeln!(
                    out,
                    "confidant_receipt_signatures_total{{nonce=\"{nonce}\"}} {n}"
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
