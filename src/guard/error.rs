//! Guard errors. Each maps to one gRPC status in `server::error`.

use std::time::Duration;

use crate::storage::StorageError;

/// Why a guard refused a request, or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// No credentials, or unknown or revoked ones.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed (scope or purpose).
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-minute or per-day limit is spent.
    #[error("{what}; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// Which limit, in words.
        what: String,
        /// How long until a request would pass.
        retry_after: Duration,
    },
    /// A bad value given to an admin command.
    #[error("{0}")]
    InvalidConfig(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something that should not happen.
    #[error("internal guard failure: {0}")]
    Internal(String),
}
