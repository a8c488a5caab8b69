//! Input validation against the signed input schema: shape, finiteness, per-feature range;
//! for text models, the texts' count, sizes and encoding.

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
    /// A text model was sent numeric rows, or an MLP texts.
    #[error("model {model} takes {expected}; the request sent {found}")]
    WrongForm {
        /// The model id.
        model: String,
        /// What the model takes.
        expected: &'static str,
        /// What the request sent.
        found: &'static str,
    },
    /// An embeddings request (OpenAI's `/v1/embeddings`) named a model that gives class
    /// scores.
    #[error(
        "model {model} gives class scores and labels, not embeddings: call Predict (confidant.v1 \
         or the Open Inference Protocol)"
    )]
    NotEmbedding {
        /// The model id.
        model: String,
    },
    /// A text model's request carries no text.
    #[error("request has no texts")]
    NoTexts,
    /// A text is not valid UTF-8.
    #[error("text {index} is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The text's index in the request.
        index: usize,
        /// Where the first invalid sequence starts.
        offset: usize,
    },
    /// A text is longer than one text may be.
    #[error("text {index} is {bytes} bytes; at most {max} are accepted per text")]
    TextTooLong {
        /// The text's index in the request.
        index: usize,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The texts together are longer than one request may carry.
    #[error("the request's texts are {bytes} bytes; at most {max} are accepted per request")]
    RequestTooLarge {
        /// Their total length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// `[text]`: bounds on the texts one request may carry, checked before tokenization (the
/// tokens per text are the model's own limit, `architecture.max_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextLimits {
    /// Most bytes in one text (UTF-8).
    pub max_text_bytes: usize,
    /// Most bytes in all the texts of one request.
    pub max_request_bytes: usize,
}

impl Default for TextLimits {
    /// 64 KiB per text, 1 MiB per request (under tonic's 4 MiB message limit).
    fn default() -> Self {
        Self {
            max_text_bytes: 64 << 10,
            max_request_bytes: 1 << 20,
        }
    }
}

impl TextLimits {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), TextLimitsError> {
        if !(1..=16 << 20).contains(&self.max_text_bytes) {
            return Err(TextLimitsError::MaxTextBytes(self.max_text_bytes));
        }
        if !(self.max_text_bytes..=64 << 20).contains(&self.max_request_bytes) {
            return Err(TextLimitsError::MaxRequestBytes(self.max_request_bytes));
        }
        Ok(())
    }
}

/// Why a `[text]` section was refused ([`TextLimits::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextLimitsError {
    /// `max_text_bytes` outside 1 to 16 MiB.
    #[error("text.max_text_bytes must be 1 to 16777216, got {0}")]
    MaxTextBytes(usize),
    /// `max_request_bytes` below `max_text_bytes` or above 64 MiB.
    #[error("text.max_request_bytes must be text.max_text_bytes to 67108864, got {0}")]
    MaxRequestBytes(usize),
}

/// Checks a text model's input: at least one text and at most `max_rows`, each within
/// `limits.max_text_bytes` and valid UTF-8, all within `limits.max_request_bytes`. Returns
/// the texts as `&str`, in order. Messages name the text by index, never its content.
pub fn validate_texts<'a>(
    texts: &'a [Vec<u8>],
    limits: &TextLimits,
    max_rows: usize,
) -> Result<Vec<&'a str>, InputError> {
    if texts.is_empty() {
        return Err(InputError::NoTexts);
    }
    if texts.len() > max_rows {
        return Err(InputError::TooManyRows {
            rows: texts.len() as u64,
            max: max_rows,
        });
    }
    let total: usize = texts.iter().map(Vec::len).sum();
    if total > limits.max_request_bytes {
        return Err(InputError::RequestTooLarge {
            bytes: total,
            max: limits.max_request_bytes,
        });
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            if t.len() > limits.max_text_bytes {
                return Err(InputError::TextTooLong {
                    index,
                    bytes: t.len(),
                    max: limits.max_text_bytes,
                });
            }
            std::str::from_utf8(t).map_err(|e| InputError::NotUtf8 {
                index,
                offset: e.valid_up_to(),
            })
        })
        .collect()
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
