//! Server errors, and the one place where errors become gRPC status codes.

use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::guard::{GuardError, InputError};
use crate::sealed::SealedError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A config value is unusable.
    #[error("configuration: {0}")]
    Config(String),
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
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
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

/// Why a request was refused. Converted to a [`Status`] in exactly one place (the `From`
/// impl below); messages never include inputs, outputs, keys or internal paths.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The input failed validation.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A field is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A precondition (for example the model version) does not hold.
    #[error("{0}")]
    Precondition(String),
    /// The server is not ready (still loading, or shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// A guard refused (identity, scope, purpose, rate limit).
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// A server-side failure: logged in full, reported without detail.
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        if let ApiError::Guard(GuardError::RateLimited { retry_after, .. }) = &e {
            return rate_limited(&e.to_string(), *retry_after);
        }
        let code = match &e {
            ApiError::Input(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::Precondition(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Guard(guard) => match guard {
                GuardError::Unauthenticated(_) => Code::Unauthenticated,
                GuardError::PermissionDenied(_) => Code::PermissionDenied,
                GuardError::RateLimited { .. } => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            ApiError::Engine(engine) => match engine {
                EngineError::UnknownModel(_) => Code::NotFound,
                EngineError::Width { .. } => Code::InvalidArgument,
                EngineError::QueueFull { .. } => Code::ResourceExhausted,
                EngineError::ShuttingDown { .. } => Code::Unavailable,
                _ => Code::Internal,
            },
        };
        if code == Code::Internal {
            // Internal failures are logged in full and reported without detail.
            tracing::error!(error = %e, "internal error");
            return Status::internal("internal error; see server logs");
        }
        Status::new(code, e.to_string())
    }
}

/// RESOURCE_EXHAUSTED with the retry delay in `retry-after-ms` metadata and in a
/// `google.rpc.RetryInfo` detail, so that both plain and rich-status clients can back off.
fn rate_limited(message: &str, retry_after: std::time::Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    let mut status = Status::with_error_details(Code::ResourceExhausted, message, details);
    if let Ok(v) = retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", v);
    }
    status
}
