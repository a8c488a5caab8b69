//! `confidant bench`: a closed-loop gRPC load generator for Confidant and for any Open
//! Inference Protocol server (a Python peer, Triton).
//!
//! A numeric model (an MLP) gets random rows in its published feature ranges; a text model
//! gets the texts given (`--text`, `--input-jsonl`), `batch` per request, as
//! `PredictRequest.texts` over confidant.v1 or one BYTES tensor over OIP.
//!
//! For each batch size × concurrency, `concurrency` workers each keep one request in flight,
//! spread over several HTTP/2 connections (one connection serializes its frames on one
//! socket and caps throughput). After a warm-up, measurement windows repeat until three in a
//! row agree within ±10 % in throughput and mean latency, as perf_analyzer does, or until
//! `max_trials` windows; the report covers those last three windows. Total time is bounded by
//! `warm-up + max_trials × window` per point.
//!
//! - [`target`]: connections, model discovery, the request pool.
//! - [`stats`]: windows, percentiles, the stability rule.
//! - [`report`]: the table, `results.json`, `results.csv` and the SVG plot.

pub mod error;
pub mod report;
pub mod stats;
pub mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use error::BenchError;
pub use report::Measurement;
pub use target::{Protocol, Target};

use stats::{Sample, Window};
use target::{Caller, Headers, Requests};

/// Windows that must agree.
pub const STABLE_WINDOWS: usize = 3;
/// How closely they must agree (±10 %).
pub const STABLE_TOLERANCE: f64 = 0.10;
/// Workers per HTTP/2 connection, when `connections` is not set.
pub const WORKERS_PER_CONNECTION: usize = 4;
/// Most connections opened for one point.
pub const MAX_CONNECTIONS: usize = 16;

/// A validated benchmark plan.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server.
    pub target: Target,
    /// Rows per request, one point per value.
    pub batches: Vec<usize>,
    /// Requests in flight, one point per value.
    pub concurrencies: Vec<usize>,
    /// One measurement window.
    pub window: Duration,
    /// Warm-up before the first window of each point.
    pub warmup: Duration,
    /// Most windows per point (at least [`STABLE_WINDOWS`]).
    pub max_trials: usize,
    /// HTTP/2 connections per point; `None`: one per [`WORKERS_PER_CONNECTION`] workers.
    pub connections: Option<usize>,
    /// Seed of the input rows.
    pub seed: u64,
    /// The texts a text model is driven with, taken in turn, `batch` per request. Empty for
    /// a numeric model (random rows); a text model needs at least one.
    pub texts: Vec<String>,
}

impl BenchConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Config(m));
        if self.batches.is_empty() || self.batches.iter().any(|&b| !(1..=1 << 20).contains(&b)) {
            return bad(format!(
                "--batch values must be 1..=1048576, got {:?}",
                self.batches
            ));
        }
        if self.concurrencies.is_empty()
            || self.concurrencies.iter().any(|&c| !(1..=4096).contains(&c))
        {
            return bad(format!(
                "--concurrency values must be 1..=4096, got {:?}",
                self.concurrencies
            ));
        }
        if self.window < Duration::from_millis(100) || self.window > Duration::from_secs(600) {
            return bad(format!(
                "--window must be 100ms..=600s, got {:?}",
                self.window
            ));
        }
        if self.max_trials < STABLE_WINDOWS || self.max_trials > 1000 {
            return bad(format!(
                "--max-trials must be {STABLE_WINDOWS}..=1000, got {}",
                self.max_trials
            ));
        }
        if let Some(c) = self.connections
            && !(1..=256).contains(&c)
        {
            return bad(format!("--connections must be 1..=256, got {c}"));
        }
        Ok(())
    }

    /// The longest the whole plan can take (warm-ups and every window).
    pub fn time_bound(&self) -> Duration {
        let points = (self.batches.len() * self.concurrencies.len()) as u32;
        (self.warmup + self.window * self.max_trials as u32) * points
    }
}

/// Runs every point of the plan, calling `on_point` as each finishes.
pub async fn run(
    config: &BenchConfig,
    mut on_point: impl FnMut(&Measurement),
) -> Result<Vec<Measurement>, BenchError> {
    config.validate()?;
    let headers = Headers::of(&config.target)?;
    let first = target::connect(&config.target).await?;
    let shape = target::discover(&config.target, first, &headers).await?;
    tracing::info!(
        model = %config.target.model,
        features = shape.features(),
        takes_texts = shape.takes_texts,
        ranges_from = shape.ranges_from,
        "model discovered"
    );
    check_inputs(config, &shape)?;
    let mut results = Vec::new();
    for &batch in &config.batches {
        let requests = if shape.takes_texts {
            Requests::of_texts(&config.target, &shape, batch, &config.texts)?
        } else {
            Requests::generate(&config.target, &shape, batch, config.seed)
        };
        for &concurrency in &config.concurrencies {
            let m = point(config, &headers, &requests, batch, concurrency).await?;
            on_point(&m);
            results.push(m);
        }
    }
    Ok(results)
}

/// Refuses texts for a numeric model and a text model without texts.
pub fn check_inputs(config: &BenchConfig, shape: &target::ModelShape) -> Result<(), BenchError> {
    let model = &config.target.model;
    match (shape.takes_texts, config.texts.is_empty()) {
        (true, true) => Err(BenchError::Config(format!(
            "model {model} is a text model: give the texts to send with --text or --input-jsonl"
        ))),
        (false, false) => Err(BenchError::Config(format!(
            "model {model} takes numeric rows ({} features), not texts: drop --text and \
             --input-jsonl (its rows are drawn at random in its feature ranges)",
            shape.features()
        ))),
        _ => Ok(()),
    }
}

/// One batch size × concurrency.
async fn point(
    config: &BenchConfig,
    headers: &Headers,
    requests: &Requests,
    batch: usize,
    concurrency: usize,
) -> Result<Measurement, BenchError> {
    let connections = config
        .connections
        .unwrap_or_else(|| {
            concurrency
                .div_ceil(WORKERS_PER_CONNECTION)
                .min(MAX_CONNECTIONS)
        })
        .min(concurrency);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(target::connect(&config.target).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut sinks = Vec::with_capacity(concurrency);
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let sink = Arc::new(std::sync::Mutex::new(Vec::<Sample>::with_capacity(4096)));
        sinks.push(Arc::clone(&sink));
        let Some(channel) = channels.get(w % connections.max(1)).cloned() else {
            return Err(BenchError::Config("no connection".into()));
        };
        let mut caller = Caller::new(requests, channel);
        let (requests, headers, stop) = (requests.clone(), headers.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            // Workers start at different places in the pool.
            let mut i = w * 7;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = caller.call(&requests, &headers, i).await;
                let sample = Sample {
                    latency_ns: started.elapsed().as_nanos() as u64,
                    code: result.err().map(|s| s.code()),
                };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                i = i.wrapping_add(1);
            }
        }));
    }
    let drain = || -> Vec<Sample> {
        sinks
            .iter()
            .flat_map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|p| p.into_inner())))
            .collect()
    };
    tokio::time::sleep(config.warmup).await;
    drain();
    let mut windows = Vec::new();
    let mut mark = Instant::now();
    let mut is_stable = false;
    while windows.len() < config.max_trials {
        tokio::time::sleep(config.window).await;
        let samples = drain();
        let now = Instant::now();
        windows.push(Window::new(now - mark, samples));
        mark = now;
        if stats::stable(&windows, STABLE_WINDOWS, STABLE_TOLERANCE) {
            is_stable = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let last = windows.len().saturating_sub(STABLE_WINDOWS);
    let merged = Window::merge(windows.get(last..).unwrap_or_default());
    Ok(Measurement {
        receipts: config.target.receipts,
        ..Measurement::new(
            config.target.protocol,
            batch,
            concurrency,
            connections,
            &merged,
            windows.len(),
            is_stable,
        )
    })
}

/// Parses a duration such as `5s`, `500ms` or `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v * scale < 1e6)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| BenchError::Config(format!("{text:?} is not a duration like 5s or 500ms")))
}

/// Parses a comma-separated list of positive integers (`1,8,32`).
pub fn parse_list(what: &str, text: &str) -> Result<Vec<usize>, BenchError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| BenchError::Config(format!("{what}: {s:?} is not a whole number")))
        })
        .collect()
}

/// Parses a comma-separated list of numbers (`-1,1`).
pub fn parse_list_f32(text: &str) -> Result<Vec<f32>, BenchError> {
    text.split(',')
        .map(str::trim)
        .map(|s| {
            s.parse::<f32>()
                .map_err(|_| BenchError::Config(format!("{s:?} is not a number")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
