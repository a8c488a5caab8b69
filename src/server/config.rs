//! The server's configuration: the TOML file (`--config`), the settings it holds, and the
//! validated [`ServeConfig`] that `run` takes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ServerError;
use crate::engine::{BatchConfig, ScreeningSpec};
use crate::guard::RateDefaults;
use crate::privacy::budget::BudgetConfig;
use crate::privacy::policy::PrivacyPolicy;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory (relative to the working directory), unless `CONFIDANT_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "confidant-data";
/// Default largest gRPC message, in bytes (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Default OpenAI-compatible embeddings endpoint (HTTPS), loopback only.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:50052";
/// Default Prometheus endpoint (Triton's metrics port), loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:8002";
/// Default most rows per Predict request.
pub const DEFAULT_MAX_ROWS: usize = 4096;
/// Default seconds a stop waits for open connections to end (`serve --drain-secs`).
pub const DEFAULT_DRAIN_SECS: u64 = 10;

/// A sealed model, and where its data key comes from: the key broker (attested key
/// release, the manifest's resource path), or a key file (the development path).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// The sealed file.
    pub sealed: PathBuf,
    /// The data-key file (32 raw bytes): a development path that bypasses attestation;
    /// absent means the key broker releases the key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[broker]`: the key broker (ours or a Trustee KBS) that releases data keys after
/// attestation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// `https://HOST:PORT` (or `http://` for a development KBS).
    pub url: String,
    /// The CA or self-signed certificate (PEM) the broker's TLS certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// A configured TLS identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The serve config file (TOML). Every key is optional; command-line flags override it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Listen address, `host:port`.
    pub listen: Option<String>,
    /// Prometheus `/metrics` listen address, `host:port`, or `off`.
    pub metrics_listen: Option<String>,
    /// OpenAI-compatible embeddings API (HTTPS) listen address, `host:port`, or `off`.
    pub http_listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// TLS certificate and key; absent means self-signed at start.
    pub tls: Option<TlsFiles>,
    /// CA (PEM) for mutual TLS: clients may authenticate with a certificate it issued and
    /// that is registered to a principal.
    pub client_ca: Option<PathBuf>,
    /// Sealed models to load.
    #[serde(default)]
    pub models: Vec<ModelSource>,
    /// The key broker that releases the models' data keys.
    pub broker: Option<BrokerSettings>,
    /// The deployment whose state key (broker resource `default/state/<deployment>`) keys
    /// everything the server persists; `default` when absent.
    pub deployment: Option<String>,
    /// Serve without rollback protection (no freshness anchor at the broker); see
    /// `serve --without-freshness-anchor`.
    pub without_freshness_anchor: Option<bool>,
    /// Trusted publisher public keys (PEM files).
    #[serde(default)]
    pub publisher_keys: Vec<PathBuf>,
    /// Batching.
    pub batch: Option<BatchConfig>,
    /// Largest gRPC message in bytes.
    pub max_message_bytes: Option<usize>,
    /// Most rows per request.
    pub max_rows_per_request: Option<usize>,
    /// Seconds a stop waits for open connections to end (1..=3600, default 10); see
    /// `serve --drain-secs`.
    pub drain_secs: Option<u64>,
    /// Recompute both SHA-256 digests of every model at load (on by default).
    pub verify_digests: Option<bool>,
    /// Default per-principal rate limits (keys may override them).
    pub rate: Option<RateDefaults>,
    /// Adversarial-sensitivity screening by model id (`[screening.<model-id>]`). Applies
    /// where the signed manifest declares none; otherwise it can only tighten the manifest's.
    #[serde(default)]
    pub screening: BTreeMap<String, ScreeningSpec>,
    /// Differential privacy: budgets, and output policies by model id.
    #[serde(default)]
    pub privacy: PrivacySettings,
    /// The audit log: segment size and retention.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Explanations: the most work one request may cost, and the workers of all.
    #[serde(default)]
    pub explain: crate::pipeline::ExplainLimits,
    /// Text models: the most bytes per text and per request.
    #[serde(default)]
    pub text: crate::guard::TextLimits,
    /// Verifiable responses: whether every answer carries a receipt.
    #[serde(default)]
    pub receipts: ReceiptSettings,
}

/// `[receipts]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptSettings {
    /// Every Predict, ModelInfer and embeddings answer carries a receipt, whether or not the
    /// client asked (with a salt the server draws when the client sent none). Without it, a
    /// client asks per request with the `x-confidant-receipt` header.
    pub require: bool,
}

/// Default audit retention, in days.
pub const DEFAULT_RETENTION_DAYS: f64 = 366.0;
/// Default largest audit log, in bytes (64 GiB).
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 << 30;

/// `[audit]`: segment size and retention.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Delete audit segments whose newest record is older than this many days (fractions
    /// allowed, at least one second; default 366, at most 36600). A signed retention record
    /// keeps the rest of the chain verifiable.
    pub retention_days: Option<f64>,
    /// Delete the oldest audit segments while the log is larger than this many bytes
    /// (default 64 GiB; at least 1 MiB), behind a signed retention record as for age.
    pub max_bytes: u64,
    /// Records per segment file (10 to 10,000,000).
    pub segment_records: u64,
    /// How long the writer gathers records before it writes and fsyncs them as one group,
    /// in milliseconds (1 to 1000). Records reach disk within about this long plus one
    /// fsync; a longer group costs fewer fsyncs per record (see BENCHMARKS.md, guards).
    pub group_commit_ms: u64,
    /// Sign a checkpoint after this many records (1 to 1,000,000).
    pub checkpoint_records: u64,
    /// Sign a checkpoint at least this often while records arrive, in milliseconds (10 to
    /// 60,000). The freshness anchor advances at each checkpoint: records after the last one
    /// are the window a rollback can lose (SECURITY.md).
    pub checkpoint_ms: u64,
    /// The audit journal's size in MiB (0 to 4096; default 32): every record is journaled,
    /// sealed, the moment it is queued, so that an answer leaves without waiting for the
    /// writer and a crash still cannot lose its record. 0: no journal; each answer waits
    /// until its record is written to the log file.
    pub journal_mib: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: Some(DEFAULT_RETENTION_DAYS),
            max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            segment_records: crate::audit::SEGMENT_RECORDS,
            group_commit_ms: crate::audit::DEFAULT_GROUP_COMMIT_MS,
            checkpoint_records: crate::audit::DEFAULT_CHECKPOINT_RECORDS,
            checkpoint_ms: crate::audit::DEFAULT_CHECKPOINT_MS,
            journal_mib: (crate::audit::DEFAULT_JOURNAL_BYTES >> 20) as u64,
        }
    }
}

impl AuditSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ServerError> {
        if let Some(d) = self.retention_days
            && !(d.is_finite() && d * 86_400.0 >= 1.0 && d <= 36_600.0)
        {
            return Err(ServerError::OutOfRange {
                setting: "audit.retention_days",
                allowed: "between one second (1.16e-5) and 36600 days",
                got: d.to_string(),
            });
        }
        if self.max_bytes < 1 << 20 {
            return Err(ServerError::OutOfRange {
                setting: "audit.max_bytes",
                allowed: "at least 1048576 (1 MiB)",
                got: self.max_bytes.to_string(),
            });
        }
        if !(10..=10_000_000).contains(&self.segment_records) {
            return Err(ServerError::OutOfRange {
                setting: "audit.segment_records",
                allowed: "10 to 10000000",
                got: self.segment_records.to_string(),
            });
        }
        if !(1..=1000).contains(&self.group_commit_ms) {
            return Err(ServerError::OutOfRange {
                setting: "audit.group_commit_ms",
                allowed: "1 to 1000",
                got: self.group_commit_ms.to_string(),
            });
        }
        if !(1..=1_000_000).contains(&self.checkpoint_records) {
            return Err(ServerError::OutOfRange {
                setting: "audit.checkpoint_records",
                allowed: "1 to 1000000",
                got: self.checkpoint_records.to_string(),
            });
        }
        if !(10..=60_000).contains(&self.checkpoint_ms) {
            return Err(ServerError::OutOfRange {
                setting: "audit.checkpoint_ms",
                allowed: "10 to 60000",
                got: self.checkpoint_ms.to_string(),
            });
        }
        if self.journal_mib > 4096 {
            return Err(ServerError::OutOfRange {
                setting: "audit.journal_mib",
                allowed: "0 to 4096",
                got: self.journal_mib.to_string(),
            });
        }
        Ok(())
    }
}

/// `[privacy]`: per-principal budgets and per-model output policies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    /// `[privacy.budget]`: ε per principal per window, δ, window length.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// `[privacy.models.<model-id>]`: a policy that tightens (never weakens) the manifest's.
    #[serde(default)]
    pub models: BTreeMap<String, PrivacyPolicy>,
}

impl ServeFile {
    /// Reads and parses a TOML config file.
    pub fn read(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            what: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ServerError::ConfigFile {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where `/v1/embeddings` and `/v1/models` are served (HTTPS, the gRPC port's TLS
    /// identity), if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// Data directory (created 0700 if absent).
    pub data_dir: PathBuf,
    /// Configured TLS identity, else self-signed.
    pub tls: Option<TlsFiles>,
    /// CA for client certificates (mutual TLS), if enabled.
    pub client_ca: Option<PathBuf>,
    /// Models to load; empty (and no broker) means the embedded demo.
    pub models: Vec<ModelSource>,
    /// The key broker, for models without a key file.
    pub broker: Option<BrokerSettings>,
    /// Trusted publisher keys.
    pub publisher_keys: Vec<PathBuf>,
    /// Batching.
    pub batch: BatchConfig,
    /// Largest gRPC message in bytes.
    pub max_message_bytes: usize,
    /// Most rows per request.
    pub max_rows_per_request: usize,
    /// Seconds a stop waits for open connections to end before it drops them.
    pub drain_secs: u64,
    /// Recompute both SHA-256 digests at load.
    pub verify_digests: bool,
    /// Default per-principal rate limits.
    pub rate: RateDefaults,
    /// Server-side screening by model id.
    pub screening: BTreeMap<String, ScreeningSpec>,
    /// Privacy budgets and server-side output policies.
    pub privacy: PrivacySettings,
    /// Audit segment size and retention.
    pub audit: AuditSettings,
    /// The deployment whose state key keys everything the server persists: the broker (or
    /// the demo's embedded broker) releases it as `default/state/<deployment>`.
    pub deployment: String,
    /// With a broker: serve without a freshness anchor (no rollback protection), warning at
    /// every start and every checkpoint. Without it a broker that has no anchor API is
    /// refused.
    pub without_freshness_anchor: bool,
    /// Which evidence the server sends (`serve --tee`): this machine's TEE, or Trustee's
    /// development sample evidence (not confidential; needs a broker).
    pub tee: crate::tee::TeeChoice,
    /// Explanations: the most work one request may cost, and the workers of all.
    pub explain: crate::pipeline::ExplainLimits,
    /// Text models: the most bytes per text and per request.
    pub text: crate::guard::TextLimits,
    /// Receipts (`[receipts]`, `--require-receipts`).
    pub receipts: ReceiptSettings,
    /// Benchmarks only: serve with every guard off (no authentication, purposes, input
    /// validation, rate limits, screening or audit records), as the baseline that the
    /// guard-overhead benchmark compares against. Reachable from no flag and no config
    /// file; `run` refuses to start with it unless the models are the embedded demo.
    #[doc(hidden)]
    pub unguarded_benchmark_baseline: bool,
    /// Where models run (`--device auto|cpu|cuda:N`).
    pub device: crate::gpu::DeviceSpec,
    /// How sealed weights reach a CUDA device (`--gpu-load staged|device-decrypt`).
    pub gpu_load: crate::gpu::LoadPath,
    /// The park hooks of the runtime the server runs on ([`crate::audit::IdleWorkers::install`],
    /// as `confidant serve` installs them): receipts are then gathered while the runtime is
    /// busy with other calls, so that one signature covers more of them. `None`: no hooks
    /// (a group is signed as soon as no other receipt is expected).
    pub idle_workers: Option<std::sync::Arc<crate::audit::IdleWorkers>>,
}

impl ServeConfig {
    /// The embedded demo on `listen` with data in `data_dir`, every setting at its default,
    /// on the CPU, with no `/metrics` and no HTTPS door (in-process servers: benches, tests).
    pub fn embedded_demo(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            metrics_listen: None,
            data_dir,
            tls: None,
            client_ca: None,
            models: Vec::new(),
            broker: None,
            publisher_keys: Vec::new(),
            batch: BatchConfig::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_rows_per_request: DEFAULT_MAX_ROWS,
            drain_secs: DEFAULT_DRAIN_SECS,
            verify_digests: true,
            rate: RateDefaults::default(),
            screening: BTreeMap::new(),
            privacy: PrivacySettings::default(),
            audit: AuditSettings::default(),
            deployment: crate::state::DEFAULT_DEPLOYMENT.to_string(),
            explain: crate::pipeline::ExplainLimits::default(),
            receipts: ReceiptSettings::default(),
            without_freshness_anchor: false,
            tee: crate::tee::TeeChoice::Auto,
            text: Default::default(),
            http_listen: None,
            unguarded_benchmark_baseline: false,
            device: crate::gpu::DeviceSpec::Cpu,
            gpu_load: crate::gpu::LoadPath::Staged,
            idle_workers: None,
        }
    }

    /// Validates the ranges and combinations.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.batch.validate()?;
        if !(4096..=1 << 30).contains(&self.max_message_bytes) {
            return Err(ServerError::OutOfRange {
                setting: "max_message_bytes",
                allowed: "4096..=1073741824",
                got: self.max_message_bytes.to_string(),
            });
        }
        if !(1..=3600).contains(&self.drain_secs) {
            return Err(ServerError::OutOfRange {
                setting: "drain_secs",
                allowed: "1..=3600",
                got: self.drain_secs.to_string(),
            });
        }
        if !(1..=1 << 20).contains(&self.max_rows_per_request) {
            return Err(ServerError::OutOfRange {
                setting: "max_rows_per_request",
                allowed: "1..=1048576",
                got: self.max_rows_per_request.to_string(),
            });
        }
        self.privacy.budget.validate()?;
        self.audit.validate()?;
        crate::state::check_deployment(&self.deployment).map_err(ServerError::Deployment)?;
        self.explain.validate()?;
        self.text.validate()?;
        for (id, spec) in &self.screening {
            spec.validate().map_err(|source| ServerError::Screening {
                id: id.clone(),
                source,
            })?;
        }
        if self.tee == crate::tee::TeeChoice::Sample && self.broker.is_none() {
            return Err(ServerError::Config(
                "--tee sample sends Trustee's development sample evidence, for a Trustee KBS: \
                 give --broker (no broker of this server's own accepts it)"
                    .into(),
            ));
        }
        if self.broker.is_some() && self.models.is_empty() {
            return Err(ServerError::Config(
                "--broker releases the keys of sealed models: give at least one --model".into(),
            ));
        }
        if self.broker.is_none()
            && let Some(m) = self.models.iter().find(|m| m.key_file.is_none())
        {
            return Err(ServerError::Config(format!(
                "model {} has no key file and no key broker is configured (--broker URL)",
                m.sealed.display()
            )));
        }
        if let Some(b) = &self.broker {
            super::models::broker_endpoint(b)?;
        }
        if !self.models.is_empty() && self.publisher_keys.is_empty() {
            return Err(ServerError::Config(
                "sealed models need at least one trusted publisher key (--publisher-key P.pub)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The data directory's TLS certificate path.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }
}
