//! Errors from training and evaluation.

use crate::engine::EngineError;
use crate::privacy::PrivacyError;

/// Everything that can go wrong reading data, training or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The CSV could not be read at all (I/O, encoding, no header).
    #[error("{source_name}: {reason}")]
    Read {
        /// The file (or stream) name.
        source_name: String,
        /// What failed.
        reason: String,
    },
    /// One cell or row of the CSV is unusable. `line` counts from 1 and includes the header.
    #[error("{source_name}: line {line}{}: {reason}", column_suffix(column.as_deref()))]
    Cell {
        /// The file (or stream) name.
        source_name: String,
        /// The 1-based line number (the header is line 1).
        line: u64,
        /// The column name, where one cell is at fault.
        column: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A column the command needs is not in the header.
    #[error("{source_name}: no column {column:?} in the header (columns: {available})")]
    MissingColumn {
        /// The file (or stream) name.
        source_name: String,
        /// The column asked for.
        column: String,
        /// The header's columns, abbreviated.
        available: String,
    },
    /// The data as a whole cannot be used (no rows, one class, too many classes).
    #[error("{source_name}: {reason}")]
    Data {
        /// The file (or stream) name.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A training parameter is out of range. `name` is the command-line flag, without `--`.
    #[error("--{name} {value}: {reason}")]
    Parameter {
        /// The parameter (as its command-line flag, without `--`).
        name: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// Training diverged: a loss or a weight became NaN or infinite.
    #[error("training diverged at step {step} (a weight is not finite); lower --lr or --clip")]
    Diverged {
        /// The step (from 1) at which it was noticed.
        step: u64,
    },
    /// The accountant or the DP random generator failed.
    #[error("privacy accounting: {0}")]
    Privacy(#[from] PrivacyError),
    /// The engine refused the model or failed in the forward pass.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The encoder cannot be used to train a text classifier.
    #[error("--encoder: {0}")]
    Encoder(String),
    /// Writing the safetensors file failed.
    #[error("safetensors: {0}")]
    Safetensors(String),
}

fn column_suffix(column: Option<&str>) -> String {
    column.map_or_else(String::new, |c| format!(", column {c:?}"))
}

/// Shorthand for results in this module.
pub type Result<T> = std::result::Result<T, TrainError>;
