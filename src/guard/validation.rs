//! Input validation against the signed input schema: shape, finiteness, per-feature range.

use crate::engine::ModelConfig;
use crate::engine::config::RangePolicy;

/// Why an input was refused. Messages name the row and the feature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// No input tensor.
    #[error("request has no input tensor")]
    Missing,
    /// The shape is not `[rows, features]`.
    #[error("input shape must be [rows, features], got {0:?}")]
    Rank(Vec<u64>),
    /// Zero rows.
    #[error("input batch is empty (0 rows)")]
    Empty,
    /// Too many rows.
    #[error("input has {rows} rows; at most {max} are accepted per request")]
    TooManyRows {
        /// Rows sent.
        rows: u64,
        /// The limit.
        max: usize,
    },
    /// Row width differs from the model's feature count.
    #[error("input rows have {found} features, model {model} expects {expected}")]
    Width {
        /// The model id.
        model: String,
        /// Width sent.
        found: u64,
        /// Width expected.
        expected: usize,
    },
    /// The number of values does not match the shape.
    #[error("input shape {shape:?} needs {expected} values, got {found}")]
    Count {
        /// The shape.
        shape: Vec<u64>,
        /// Values expected.
        expected: u64,
        /// Values sent.
        found: usize,
    },
    /// A NaN or infinite value.
    #[error("row {row}, feature {feature} ({name}): value is {value} (must be finite)")]
    NotFinite {
        /// The row index.
        row: usize,
        /// The feature index.
        feature: usize,
        /// The feature name.
        name: String,
        /// The value, as text.
        value: String,
    },
    /// A value outside the feature's signed range.
    #[error("row {row}, feature {feature} ({name}): value {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The row index.
        row: usize,
        /// The feature index.
        feature: usize,
        /// The feature name.
        name: String,
        /// The value.
        value: f32,
        /// The minimum.
        min: f32,
        /// The maximum.
        max: f32,
    },
}

/// Checks a `[rows, features]` input against the model's schema and returns the row count.
/// Where the schema says `clip`, out-of-range values are clamped in place (only once every
/// value has been checked, so a refused request leaves `values` as it came).
pub fn validate_rows(
    config: &ModelConfig,
    shape: &[u64],
    values: &mut [f32],
    max_rows: usize,
) -> Result<usize, InputError> {
    let [rows, width] = shape else {
        return Err(InputError::Rank(shape.to_vec()));
    };
    if *rows == 0 {
        return Err(InputError::Empty);
    }
    if *rows > max_rows as u64 {
        return Err(InputError::TooManyRows {
            rows: *rows,
            max: max_rows,
        });
    }
    let expected_width = config.feature_count();
    if *width != expected_width as u64 {
        return Err(InputError::Width {
            model: config.id.clone(),
            found: *width,
            expected: expected_width,
        });
    }
    let expected = rows.saturating_mul(*width);
    if expected != values.len() as u64 {
        return Err(InputError::Count {
            shape: shape.to_vec(),
            expected,
            found: values.len(),
        });
    }
    let schema = &config.input;
    let clip = schema.out_of_range == RangePolicy::Clip;
    let mut needs_clip = false;
    for (r, row) in values.chunks_exact(expected_width).enumerate() {
        for (f, &v) in row.iter().enumerate() {
            let (lo, hi) = (schema.min[f], schema.max[f]);
            if !v.is_finite() {
                return Err(InputError::NotFinite {
                    row: r,
                    feature: f,
                    name: schema.features[f].clone(),
                    value: v.to_string(),
                });
            }
            if v < lo || v > hi {
                if clip {
                    needs_clip = true;
                    continue;
                }
                return Err(InputError::OutOfRange {
                    row: r,
                    feature: f,
                    name: schema.features[f].clone(),
                    value: v,
                    min: lo,
                    max: hi,
                });
            }
        }
    }
    if needs_clip {
        for row in values.chunks_exact_mut(expected_width) {
            for ((v, lo), hi) in row.iter_mut().zip(&schema.min).zip(&schema.max) {
                *v = v.clamp(*lo, *hi);
            }
        }
    }
    Ok(*rows as usize)
}
