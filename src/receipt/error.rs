//! Why a receipt could not be made or read.

/// Receipt errors (verification failures are [`super::verify::Check`]s, not errors).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt key could not be made or bound.
    #[error("receipt key: {0}")]
    Key(String),
    /// A salt that is not hex of the right length.
    #[error("{0}")]
    Salt(String),
    /// Bytes that are not a receipt, a statement, a request or a response.
    #[error("malformed: {0}")]
    Malformed(String),
}
