//! Training and evaluation tables: numeric CSV with a header and an integer label column,
//! standardization fitted on the training rows, and the input ranges the schema declares.

use std::io::Read;
use std::path::Path;

use super::error::{Result, TrainError};

/// Most classes a label column may hold (labels are class indices `0..MAX_CLASSES`).
pub const MAX_CLASSES: usize = 1024;

/// A numeric table: feature columns as `f32`, and one integer label per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    source_name: String,
    features: Vec<String>,
    values: Vec<f32>,
    labels: Vec<usize>,
}

impl Dataset {
    /// Reads a CSV file. The first line is a header. `label` names the label column; its
    /// cells must be integer class indices (`1` or `1.0`). `features`, when given, picks the
    /// feature columns by name and in that order (the order of a model's schema); otherwise
    /// every other column is a feature, in file order.
    pub fn read_csv(path: &Path, label: &str, features: Option<&[String]>) -> Result<Self> {
        let source_name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| TrainError::Read {
            source_name: source_name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_csv_reader(file, &source_name, label, features)
    }

    /// Like [`Dataset::read_csv`], from any reader; `source_name` names it in errors.
    pub fn from_csv_reader<R: Read>(
        reader: R,
        source_name: &str,
        label: &str,
        features: Option<&[String]>,
    ) -> Result<Self> {
        let read_err = |reason: String| TrainError::Read {
            source_name: source_name.to_string(),
            reason,
        };
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = csv
            .headers()
            .map_err(|e| read_err(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(read_err("no header line".into()));
        }
        let find = |name: &str| -> Result<usize> {
            let mut hits = header.iter().enumerate().filter(|(_, h)| *h == name);
            let first = hits.next().map(|(i, _)| i);
            if hits.next().is_some() {
                return Err(TrainError::Data {
                    source_name: source_name.to_string(),
                    reason: format!("the header names column {name:?} more than once"),
                });
            }
            first.ok_or_else(|| TrainError::MissingColumn {
                source_name: source_name.to_string(),
                column: name.to_string(),
                available: abbreviate(&header),
            })
        };
        let label_col = find(label)?;
        let feature_cols: Vec<usize> = match features {
            Some(names) => names.iter().map(|n| find(n)).collect::<Result<_>>()?,
            None => {
                for h in &header {
                    find(h)?;
                }
                (0..header.len()).filter(|&c| c != label_col).collect()
            }
        };
        if feature_cols.is_empty() {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: "no feature columns besides the label".into(),
            });
        }
        let mut values = Vec::new();
        let mut labels = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            let more = csv.read_record(&mut record).map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                TrainError::Cell {
                    source_name: source_name.to_string(),
                    line,
                    column: None,
                    reason: e.to_string(),
                }
            })?;
            if !more {
                break;
            }
            let Some(line) = data_line(&record, source_name, header.len())? else {
                continue; // a blank line
            };
            let cell_err = |column: Option<&str>, reason: String| TrainError::Cell {
                source_name: source_name.to_string(),
                line,
                column: column.map(str::to_string),
                reason,
            };
            for &c in &feature_cols {
                let name = header.get(c).map(String::as_str);
                let cell = record.get(c).unwrap_or_default();
                let v: f32 = cell
                    .parse()
                    .map_err(|_| cell_err(name, format!("{cell:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(cell_err(name, format!("{cell:?} is not a finite f32")));
                }
                values.push(v);
            }
            let cell = record.get(label_col).unwrap_or_default();
            labels.push(
                parse_label(cell).map_err(|reason| cell_err(Some(label), reason.to_string()))?,
            );
        }
        if labels.is_empty() {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: "no data rows after the header".into(),
            });
        }
        Ok(Self {
            source_name: source_name.to_string(),
            features: feature_cols
                .iter()
                .filter_map(|&c| header.get(c).cloned())
                .collect(),
            values,
            labels,
        })
    }

    /// A dataset from values already in memory (`rows × features.len()`, row-major).
    pub fn from_parts(
        source_name: &str,
        features: Vec<String>,
        values: Vec<f32>,
        labels: Vec<usize>,
    ) -> Result<Self> {
        let ok = !features.is_empty()
            && !labels.is_empty()
            && values.len() == labels.len() * features.len()
            && values.iter().all(|v| v.is_finite())
            && labels.iter().all(|&l| l < MAX_CLASSES);
        if !ok {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: "values must be rows × features finite numbers, labels < 1024".into(),
            });
        }
        Ok(Self {
            source_name: source_name.to_string(),
            features,
            values,
            labels,
        })
    }

    /// The name errors use for this data (usually its path).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The feature names, in column order.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The number of feature columns.
    pub fn width(&self) -> usize {
        self.features.len()
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// The feature values, row-major `rows × width`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The class index of each row.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// One more than the largest label: the number of outputs a model of this data needs.
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }
}

/// A label cell: an integer class index below [`MAX_CLASSES`], written `3` or `3.0`.
fn parse_label(cell: &str) -> std::result::Result<usize, String> {
    if let Ok(v) = cell.parse::<u64>() {
        return usize::try_from(v)
            .ok()
            .filter(|&v| v < MAX_CLASSES)
            .ok_or_else(|| too_many(cell));
    }
    let v: f64 = cell
        .parse()
        .map_err(|_| format!("label {cell:?} is not an integer class index"))?;
    if !(v.is_finite() && v.fract() == 0.0 && v >= 0.0) {
        return Err(format!(
            "label {cell:?} is not an integer class index (0, 1, 2, ...)"
        ));
    }
    if v >= MAX_CLASSES as f64 {
        return Err(too_many(cell));
    }
    Ok(v as usize)
}

fn too_many(cell: &str) -> String {
    format!(
        "label {cell:?} is too large: labels are class indices 0 to {} (at most {MAX_CLASSES} \
         classes)",
        MAX_CLASSES - 1
    )
}

/// The first few names of a header, for error messages.
pub(crate) fn abbreviate(header: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out: Vec<String> = header
        .iter()
        .take(SHOWN)
        .map(|h| format!("{h:?}"))
        .collect();
    if header.len() > SHOWN {
        out.push(format!("… {} more", header.len() - SHOWN));
    }
    out.join(", ")
}

/// Per-feature standardization `(x - mean) / std`, fitted on the training rows only.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardization {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature population standard deviation; 1 for a constant feature (the engine
    /// needs every value > 0, and a constant column carries no information either way).
    pub std: Vec<f32>,
}

impl Standardization {
    /// Fits the mean and standard deviation of each column (accumulated in f64).
    pub fn fit(data: &Dataset) -> Self {
        let d = data.width();
        let n = data.rows() as f64;
        let mut sum = vec![0.0f64; d];
        for row in data.values().chunks_exact(d) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0.0f64; d];
        for row in data.values().chunks_exact(d) {
            for ((s, v), m) in sq.iter_mut().zip(row).zip(&mean) {
                let dev = f64::from(*v) - m;
                *s += dev * dev;
            }
        }
        let std = sq
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt() as f32;
                if sd.is_finite() && sd > 1e-6 { sd } else { 1.0 }
            })
            .collect();
        Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            std,
        }
    }

    /// Standardizes `values` (row-major, `width` = `mean.len()`) with the engine's f32
    /// arithmetic, `(x - mean) * (1 / std)`, so the trainer sees exactly what the served
    /// model sees; returns f64 for training.
    pub fn apply(&self, values: &[f32]) -> Vec<f64> {
        let inv: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        let d = self.mean.len().max(1);
        values
            .chunks_exact(d)
            .flat_map(|row| {
                row.iter()
                    .zip(&self.mean)
                    .zip(&inv)
                    .map(|((x, m), i)| f64::from((x - m) * i))
            })
            .collect()
    }
}

/// The per-feature input range a served model accepts: the training minimum and maximum,
/// each widened by `margin` times the column's span (its magnitude, or 1, for a constant
/// column); a column that is never negative in training keeps a lower bound of at least 0.
pub fn feature_ranges(data: &Dataset, margin: f64) -> (Vec<f32>, Vec<f32>) {
    let d = data.width();
    let mut lo = vec![f32::INFINITY; d];
    let mut hi = vec![f32::NEG_INFINITY; d];
    for row in data.values().chunks_exact(d) {
        for ((l, h), v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            *l = l.min(*v);
            *h = h.max(*v);
        }
    }
    let mut min = Vec::with_capacity(d);
    let mut max = Vec::with_capacity(d);
    for (l, h) in lo.iter().zip(&hi) {
        let (l, h) = (f64::from(*l), f64::from(*h));
        let span = if h > l { h - l } else { l.abs().max(1.0) };
        let mut new_lo = l - margin * span;
        if l >= 0.0 {
            new_lo = new_lo.max(0.0);
        }
        let new_hi = h + margin * span;
        // Round outward so the f32 bounds still contain every training value.
        min.push(round_down_f32(new_lo));
        max.push(round_up_f32(new_hi));
    }
    (min, max)
}

fn round_down_f32(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) > x { f.next_down() } else { f }
}

fn round_up_f32(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

/// One record of a training CSV: `None` for a blank line, else its line number, once it is
/// known to have a cell for every column of the header.
pub(super) fn data_line(
    record: &csv::StringRecord,
    source_name: &str,
    columns: usize,
) -> Result<Option<u64>> {
    let line = record.position().map_or(0, csv::Position::line);
    if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
        return Ok(None);
    }
    if record.len() != columns {
        return Err(TrainError::Cell {
            source_name: source_name.to_string(),
            line,
            column: None,
            reason: format!(
                "the row has {} cells but the header has {columns} columns",
                record.len()
            ),
        });
    }
    Ok(Some(line))
}
