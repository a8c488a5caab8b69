//! Why a benchmark could not run.

/// Benchmark errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A flag value is unusable.
    #[error("{0}")]
    Config(String),
    /// The address is not a usable URL.
    #[error("invalid server address {addr:?}: {problem}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        problem: String,
    },
    /// The connection or TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Discovering the model (its width and feature ranges) failed.
    #[error("model {model}: {problem}")]
    Model {
        /// The model id.
        model: String,
        /// Why.
        problem: String,
    },
    /// Reading or writing a result file.
    #[error("{what}: {source}")]
    Io {
        /// The file.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A baseline results file that does not parse.
    #[error("{path}: {problem}")]
    Baseline {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
}
