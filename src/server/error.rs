//! Why the server could not start.

use crate::engine::EngineError;
use crate::sealed::SealedError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A combination of flags or settings that cannot work (the message says what to give).
    #[error("configuration: {0}")]
    Config(String),
    /// A numeric setting outside its range.
    #[error("configuration: {setting} must be {allowed}, got {got}")]
    OutOfRange {
        /// The setting, as the config file names it.
        setting: &'static str,
        /// What it may be.
        allowed: &'static str,
        /// What it was.
        got: String,
    },
    /// The config file does not parse.
    #[error("configuration: {path}: {source}")]
    ConfigFile {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// `--deployment` (or `deployment`) breaks the name rule.
    #[error("configuration: --deployment: {0}")]
    Deployment(crate::state::StateError),
    /// An `[explain]` setting is out of range.
    #[error("configuration: {0}")]
    Explain(#[from] crate::pipeline::ExplainLimitsError),
    /// A `[text]` setting is out of range.
    #[error("configuration: {0}")]
    Text(#[from] crate::guard::TextLimitsError),
    /// A `[screening.<model>]` section is out of range.
    #[error("configuration: screening.{id}: {source}")]
    Screening {
        /// The model the section is for.
        id: String,
        /// Why.
        source: crate::engine::ConfigError,
    },
    /// A batching setting is out of range.
    #[error("configuration: [batch]: {0}")]
    Batch(#[from] crate::engine::batcher::BatchConfigError),
    /// A privacy-budget setting is out of range.
    #[error("configuration: [privacy.budget]: {0}")]
    Budget(#[from] crate::privacy::budget::BudgetConfigError),
    /// The serving device could not be opened.
    #[error("--device {spec}: {source}")]
    Device {
        /// The device asked for.
        spec: String,
        /// Why it could not be opened.
        source: crate::gpu::GpuError,
    },
    /// A model has neither a key file nor a broker to release its key.
    #[error("model {model} has no key file and no key broker")]
    NoKeySource {
        /// The sealed file.
        model: String,
    },
    /// The key broker's endpoint is unusable.
    #[error("key broker: {0}")]
    Broker(#[from] crate::keys::RcarError),
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// No attester could be found or started.
    #[error("attestation: {0}")]
    Tee(#[from] crate::tee::TeeError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The request pipeline could not be built.
    #[error("request pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::ApiError),
    /// gRPC reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
    /// A start-up or serving task panicked or was cancelled.
    #[error("{what} task failed: {reason}")]
    Task {
        /// Which task.
        what: &'static str,
        /// The join error.
        reason: String,
    },
    /// A sealed model could not be loaded.
    #[error("model {path}: {source}")]
    Model {
        /// The sealed file.
        path: String,
        /// Why.
        source: SealedError,
    },
    /// The engine refused a model.
    #[error("model {path}: {source}")]
    Engine {
        /// The sealed file.
        path: String,
        /// Why.
        source: EngineError,
    },
    /// A sealed model could not be loaded onto its device.
    #[error(transparent)]
    Load(#[from] crate::loading::LoadError),
    /// The embeddings API could not start.
    #[error(transparent)]
    OpenAi(#[from] crate::openai::OpenAiError),
    /// The demo's key-release chain failed.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// The freshness anchor cannot be kept (a broker without the anchor API).
    #[error("freshness anchor: {0}")]
    Freshness(String),
    /// The state key could not be had.
    #[error("state key: {0}")]
    State(#[from] crate::state::StateError),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A file in the data directory could not be read or written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// An I/O error, with what it concerns.
    #[error("{what}: {source}")]
    Io {
        /// The file, socket or directory.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}
