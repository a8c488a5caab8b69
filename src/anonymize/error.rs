//! Errors of the anonymization pipeline. Every error about the data names the file line and the
//! column, so that a data steward can fix the input without reading the code.

use std::path::PathBuf;

/// Why an anonymization (or a check) could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnonymizeError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CSV parser rejected the input (bad quoting, invalid UTF-8, ...).
    #[error("{path}: line {line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line of the file (the header is line 1).
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// A row has more or fewer fields than the header.
    #[error("{path}: line {line}: ragged row: {found} fields where the header has {expected}")]
    RaggedRow {
        /// The file.
        path: PathBuf,
        /// 1-based line of the file.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// The input has no header row or no data row.
    #[error("{path}: {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: &'static str,
    },
    /// Two header fields have the same name.
    #[error("{path}: column {column:?} appears twice in the header")]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        column: String,
    },
    /// The config or the flags name a column that the input does not have.
    #[error("column {column:?} is not in the input header")]
    UnknownColumn {
        /// The name.
        column: String,
    },
    /// A quasi-identifier value is not a leaf of its hierarchy.
    #[error("line {line}, column {column:?}: value {value:?} is not in the hierarchy")]
    NotInHierarchy {
        /// 1-based line of the input file.
        line: u64,
        /// The column.
        column: String,
        /// The value.
        value: String,
    },
    /// A numeric quasi-identifier value is not a finite number.
    #[error("line {line}, column {column:?}: value {value:?} is not a number")]
    NotNumeric {
        /// 1-based line of the input file.
        line: u64,
        /// The column.
        column: String,
        /// The value.
        value: String,
    },
    /// A hierarchy file is malformed.
    #[error("hierarchy {path}: line {line}: {message}")]
    Hierarchy {
        /// The hierarchy file.
        path: PathBuf,
        /// 1-based line of the hierarchy file (0 for the file as a whole).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// k is larger than the number of records, so no release can be k-anonymous.
    #[error("k = {k} is larger than the table ({rows} records)")]
    KTooLarge {
        /// The requested k.
        k: usize,
        /// Records in the table (after dropping rows with missing values).
        rows: usize,
    },
    /// The table as a whole is not l-diverse, so no partition of it can be.
    #[error("the whole table is not {l}-diverse ({kind}) in column {column:?}")]
    NotDiverse {
        /// The requested l.
        l: f64,
        /// "distinct" or "entropy".
        kind: &'static str,
        /// The sensitive column.
        column: String,
    },
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A pseudonym key file is too short to be a key.
    #[error("key file {path}: {len} bytes; a pseudonym key needs at least {min}")]
    KeyTooShort {
        /// The key file (the key itself is never shown).
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

impl AnonymizeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
