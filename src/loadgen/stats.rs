//! Measurement windows: latency percentiles, throughput, and the stability rule.

use std::collections::BTreeMap;
use std::time::Duration;

/// One finished request, as a worker records it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Round-trip time, nanoseconds.
    pub latency_ns: u64,
    /// `None` for success, else the gRPC status code.
    pub code: Option<tonic::Code>,
}

/// What one measurement window saw.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The window's length.
    pub duration: Duration,
    /// Latencies of the successful requests, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Failed requests by status code name.
    pub errors: BTreeMap<String, u64>,
}

impl Window {
    /// A window from its samples.
    pub fn new(duration: Duration, samples: impl IntoIterator<Item = Sample>) -> Self {
        let mut w = Self {
            duration,
            ..Self::default()
        };
        for s in samples {
            match s.code {
                None => w.latencies_ns.push(s.latency_ns),
                Some(code) => {
                    *w.errors
                        .entry(crate::client::code_name(code).to_string())
                        .or_default() += 1;
                }
            }
        }
        w.latencies_ns.sort_unstable();
        w
    }

    /// Several windows as one (for the report over the stable windows).
    pub fn merge(windows: &[Window]) -> Self {
        let mut all = Self::default();
        for w in windows {
            all.duration += w.duration;
            all.latencies_ns.extend_from_slice(&w.latencies_ns);
            for (code, n) in &w.errors {
                *all.errors.entry(code.clone()).or_default() += n;
            }
        }
        all.latencies_ns.sort_unstable();
        all
    }

    /// Successful requests per second.
    pub fn requests_per_s(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.latencies_ns.len() as f64 / secs
        } else {
            0.0
        }
    }

    /// Mean latency of the successful requests, in milliseconds (0 when none).
    pub fn mean_ms(&self) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let sum: u128 = self.latencies_ns.iter().map(|&l| u128::from(l)).sum();
        sum as f64 / self.latencies_ns.len() as f64 / 1e6
    }

    /// The `p`-th percentile latency (nearest rank), in milliseconds (0 when none). The rank
    /// is computed in integers from `p` in thousandths of a percent, so that 99.9 % of 1,000
    /// is the 999th (in floating point it came out just above 999).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return 0.0;
        }
        let milli = (p.clamp(0.0, 100.0) * 1000.0).round() as u128;
        let rank = (milli * n as u128).div_ceil(100_000) as usize;
        let index = rank.clamp(1, n) - 1;
        self.latencies_ns
            .get(index)
            .map_or(0.0, |&l| l as f64 / 1e6)
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// perf_analyzer's rule: the last `count` windows are stable when each one's throughput and
/// mean latency lie within `tolerance` (0.10 = ±10 %) of those windows' average.
pub fn stable(windows: &[Window], count: usize, tolerance: f64) -> bool {
    if windows.len() < count || count == 0 {
        return false;
    }
    let last = &windows[windows.len() - count..];
    let within = |values: Vec<f64>| {
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        values
            .iter()
            .all(|v| (v - avg).abs() <= tolerance * avg.abs())
    };
    within(last.iter().map(Window::requests_per_s).collect())
        && within(last.iter().map(Window::mean_ms).collect())
}
