//! A CSV table held column-wise and dictionary-encoded: each column keeps its distinct values
//! once and a `u32` code per row. Reading allocates per distinct value, not per record, and
//! memory is bounded by 4 bytes per cell plus the distinct values (no streaming: the
//! partitioner needs every record at once).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::AnonymizeError;

/// One dictionary-encoded column.
#[derive(Debug, Clone)]
pub struct Column {
    name: String,
    dict: Vec<Box<str>>,
    codes: Vec<u32>,
}

impl Column {
    /// The header name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The distinct values, in order of first appearance.
    pub fn dictionary(&self) -> &[Box<str>] {
        &self.dict
    }

    /// The dictionary code of each row.
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// The value of `row`, or `None` past the end.
    pub fn value(&self, row: usize) -> Option<&str> {
        let code = *self.codes.get(row)?;
        self.dict.get(code as usize).map(|b| &**b)
    }
}

/// A CSV table with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    source: PathBuf,
    columns: Vec<Column>,
    /// 1-based file line of each kept row, for error messages.
    lines: Vec<u64>,
    dropped: usize,
}

impl Table {
    /// Reads a CSV file. Rows where any field equals `missing` (for example `?` in UCI data)
    /// are dropped and counted.
    pub fn read_csv(path: &Path, missing: Option<&str>) -> Result<Self, AnonymizeError> {
        let file = std::fs::File::open(path).map_err(|e| AnonymizeError::io(path, e))?;
        Self::from_reader(
            std::io::BufReader::with_capacity(1 << 16, file),
            path,
            missing,
        )
    }

    /// Reads CSV from any reader; `source` only names it in errors.
    pub fn from_reader<R: Read>(
        reader: R,
        source: &Path,
        missing: Option<&str>,
    ) -> Result<Self, AnonymizeError> {
        let csv_error = |e: csv::Error| AnonymizeError::Csv {
            path: source.to_path_buf(),
            line: e.position().map_or(0, csv::Position::line),
            message: e.to_string(),
        };
        // Flexible, so that a ragged row reaches our own check and its clearer message.
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let header = rdr.headers().map_err(csv_error)?.clone();
        if header.is_empty() || (header.len() == 1 && header.get(0) == Some("")) {
            return Err(AnonymizeError::Empty {
                path: source.to_path_buf(),
                what: "no header row",
            });
        }
        let mut columns: Vec<Column> = Vec::with_capacity(header.len());
        for name in &header {
            if columns.iter().any(|c| c.name == name) {
                return Err(AnonymizeError::DuplicateColumn {
                    path: source.to_path_buf(),
                    column: name.to_owned(),
                });
            }
            columns.push(Column {
                name: name.to_owned(),
                dict: Vec::new(),
                codes: Vec::new(),
            });
        }
        let mut maps: Vec<HashMap<Box<str>, u32>> = vec![HashMap::new(); columns.len()];
        let mut lines = Vec::new();
        let mut dropped = 0usize;
        let mut record = csv::StringRecord::new();
        while rdr.read_record(&mut record).map_err(csv_error)? {
            let line = record.position().map_or(0, csv::Position::line);
            if record.len() != columns.len() {
                return Err(AnonymizeError::RaggedRow {
                    path: source.to_path_buf(),
                    line,
                    expected: columns.len(),
                    found: record.len(),
                });
            }
            if let Some(m) = missing
                && record.iter().any(|f| f == m)
            {
                dropped += 1;
                continue;
            }
            for ((field, column), map) in record.iter().zip(&mut columns).zip(&mut maps) {
                let code = match map.get(field) {
                    Some(&c) => c,
                    None => {
                        let c = u32::try_from(column.dict.len()).map_err(|_| {
                            AnonymizeError::Config(format!(
                                "column {:?} has more than 2^32 distinct values",
                                column.name
                            ))
                        })?;
                        map.insert(field.into(), c);
                        column.dict.push(field.into());
                        c
                    }
                };
                column.codes.push(code);
            }
            lines.push(line);
        }
        if lines.is_empty() {
            return Err(AnonymizeError::Empty {
                path: source.to_path_buf(),
                what: "no data rows",
            });
        }
        Ok(Self {
            source: source.to_path_buf(),
            columns,
            lines,
            dropped,
        })
    }

    /// Where the table was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of rows kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the table has no rows (never true for a table that was read successfully).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Rows dropped because they held the missing-value token.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The columns, in header order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The index of a column by name.
    pub fn column_index(&self, name: &str) -> Result<usize, AnonymizeError> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| AnonymizeError::UnknownColumn {
                column: name.to_owned(),
            })
    }

    /// The 1-based file line of a kept row (0 if out of range).
    pub fn line(&self, row: usize) -> u64 {
        self.lines.get(row).copied().unwrap_or(0)
    }

    /// The file line of the first row whose column `col` has dictionary code `code`.
    pub(crate) fn first_line_with(&self, col: usize, code: u32) -> u64 {
        self.columns
            .get(col)
            .and_then(|c| c.codes.iter().position(|&x| x == code))
            .map_or(0, |row| self.line(row))
    }
}
