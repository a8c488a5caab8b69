//! Why a request was refused, and the one place where refusals become gRPC status codes.

use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::guard::{GuardError, InputError};
use crate::privacy::budget::BudgetError;
use crate::privacy::subjects::SubjectError;

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
    /// The request asks for more work than the server allows one request, or the bounded
    /// pool that would run it is busy (RESOURCE_EXHAUSTED, with no retry delay: a smaller
    /// request, or a later one, may pass).
    #[error("{0}")]
    Exhausted(String),
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
            ApiError::Exhausted(_) => Code::ResourceExhausted,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Internal(_) => Code::Internal,
            // Every variant is named: a new refusal must choose its code here.
            ApiError::Guard(guard) => match guard {
                GuardError::Unauthenticated(_) => Code::Unauthenticated,
                GuardError::PermissionDenied(_) => Code::PermissionDenied,
                GuardError::RateLimited { .. } => Code::ResourceExhausted,
                GuardError::InvalidConfig(_) | GuardError::Storage(_) | GuardError::Internal(_) => {
                    Code::Internal
                }
            },
            ApiError::Engine(engine) => match engine {
                EngineError::UnknownModel(_) => Code::NotFound,
                EngineError::Width { .. }
                | EngineError::WrongInput { .. }
                | EngineError::Tokenize { .. }
                | EngineError::TooManyTokens { .. }
                | EngineError::ExplainTarget { .. } => Code::InvalidArgument,
                EngineError::WrongTask { .. } | EngineError::NotExplainable { .. } => {
                    Code::FailedPrecondition
                }
                EngineError::QueueFull { .. } => Code::ResourceExhausted,
                EngineError::ShuttingDown { .. } => Code::Unavailable,
                EngineError::Config(_)
                | EngineError::Safetensors(_)
                | EngineError::MissingTensor { .. }
                | EngineError::Shape { .. }
                | EngineError::Dtype { .. }
                | EngineError::NonFinite { .. }
                | EngineError::DuplicateModel(_)
                | EngineError::ModelFile { .. }
                | EngineError::MissingEntry(_)
                | EngineError::Tokenizer(_)
                | EngineError::Compute(_) => Code::Internal,
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

impl From<SubjectError> for ApiError {
    fn from(e: SubjectError) -> Self {
        match e {
            SubjectError::Invalid(m) => ApiError::BadRequest(m),
            e @ SubjectError::NoConsent { .. } => ApiError::Precondition(e.to_string()),
            e @ SubjectError::Storage(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> Self {
        let now = crate::unix_now();
        match e {
            BudgetError::Exhausted {
                ref principal,
                needed,
                remaining,
                budget,
                window_end,
            } => ApiError::Guard(GuardError::RateLimited {
                what: format!(
                    "privacy budget of {principal} is exhausted: this request needs epsilon \
                     {needed:.6} and {remaining:.6} of {budget} remains in this window"
                ),
                retry_after: std::time::Duration::from_secs((window_end - now).max(1) as u64),
            }),
            e @ BudgetError::SubjectExhausted { window_end, .. } => {
                ApiError::Guard(GuardError::RateLimited {
                    what: e.to_string(),
                    retry_after: std::time::Duration::from_secs((window_end - now).max(1) as u64),
                })
            }
            e @ BudgetError::Storage(_) => ApiError::Internal(e.to_string()),
        }
    }
}
