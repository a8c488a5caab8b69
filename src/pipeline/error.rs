//! Why a request was refused, and the one place where refusals become gRPC status codes.

use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::guard::{GuardError, InputError};

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
    /// Something the request names (other than a model) does not exist.
    #[error("{0}")]
    NotFound(String),
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
            ApiError::NotFound(_) => Code::NotFound,
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
