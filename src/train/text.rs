//! Text classifiers: a DP-SGD head over a sealed encoder's embeddings.
//!
//! [`TextDataset`] reads a CSV with a text column and a label column (class names).
//! [`train_text`] computes each text's embedding with the encoder's own tokenizer, pooling
//! and normalization (the code the server runs), trains an MLP head on those vectors with
//! the same DP-SGD and accountant as [`train`](super::train), and returns a classifier config
//! whose `architecture.head` describes the head's weights. The embeddings are not
//! standardized: the head reads exactly the pooled vectors the server computes, and nothing
//! computed from the training data is published outside the (ε, δ) guarantee except the
//! class names. [`evaluate_text`] measures accuracy through a loaded classifier.
//!
//! What the guarantee covers: the head's weights, for the rows of the training CSV. The
//! encoder is public to this computation (it is not trained).

use super::data::data_line;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::dpsgd::{Plan, TrainOptions};
use super::error::{Result, TrainError};
use super::network::Network;
use super::{Progress, fit, guarantee};
use crate::engine::config::{
    EncoderArchitecture, EncoderConfig, HeadKind, OutputKind, TextHead, TextTask,
};
use crate::engine::text::{DEFAULT_MAX_PADDED_TOKENS, DEFAULT_MAX_ROWS, TextEncoder};
use crate::engine::{ConfigError, EngineError};
use crate::privacy::rng::ChaChaDpRng;

/// Most classes a text label column may hold.
pub const MAX_TEXT_CLASSES: usize = super::data::MAX_CLASSES;
/// Texts embedded per call into the encoder (a bound on memory, not on batching).
const EMBED_CHUNK: usize = 256;

/// Labelled texts: one text and one class per row.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDataset {
    source_name: String,
    texts: Vec<String>,
    labels: Vec<usize>,
    classes: Vec<String>,
    lines: Vec<u64>,
}

impl TextDataset {
    /// Reads a CSV file with a header; see [`TextDataset::from_csv_reader`].
    pub fn read_csv(
        path: &Path,
        text_column: &str,
        label: &str,
        classes: Option<&[String]>,
    ) -> Result<Self> {
        let source_name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| TrainError::Read {
            source_name: source_name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_csv_reader(file, &source_name, text_column, label, classes)
    }

    /// Reads a CSV whose first line is a header. `text_column` names the texts (UTF-8; a
    /// cell may be empty or span lines when quoted); `label` names the class of each row,
    /// written as its name. With `classes`, every label must be one of them and the
    /// classifier's outputs follow their order; without, the classes are the distinct
    /// labels in sorted order. Other columns are ignored.
    pub fn from_csv_reader<R: Read>(
        reader: R,
        source_name: &str,
        text_column: &str,
        label: &str,
        classes: Option<&[String]>,
    ) -> Result<Self> {
        let read_err = |reason: String| TrainError::Read {
            source_name: source_name.to_string(),
            reason,
        };
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::Headers)
            .from_reader(reader);
        let header: Vec<String> = match csv.headers() {
            Ok(h) => h.iter().map(str::to_string).collect(),
            Err(e) => return Err(record_error(source_name, &[], e)),
        };
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
                available: super::data::abbreviate(&header),
            })
        };
        let text_col = find(text_column)?;
        let label_col = find(label)?;
        if text_col == label_col {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: format!("column {label:?} cannot be both the text and the label"),
            });
        }
        let mut texts = Vec::new();
        let mut names = Vec::new();
        let mut lines = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            match csv.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(record_error(source_name, &header, e)),
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
            let name = record.get(label_col).unwrap_or_default().trim();
            if name.is_empty() {
                return Err(cell_err(Some(label), "the label is empty".into()));
            }
            texts.push(record.get(text_col).unwrap_or_default().to_string());
            names.push(name.to_string());
            lines.push(line);
        }
        if texts.is_empty() {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: "no data rows after the header".into(),
            });
        }
        let classes: Vec<String> = match classes {
            Some(given) => given.to_vec(),
            None => {
                let set: std::collections::BTreeSet<&String> = names.iter().collect();
                set.into_iter().cloned().collect()
            }
        };
        if classes.len() > MAX_TEXT_CLASSES {
            return Err(TrainError::Data {
                source_name: source_name.to_string(),
                reason: format!(
                    "{} classes; at most {MAX_TEXT_CLASSES} are supported",
                    classes.len()
                ),
            });
        }
        let mut labels = Vec::with_capacity(names.len());
        for (name, line) in names.iter().zip(&lines) {
            let index = classes
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| TrainError::Cell {
                    source_name: source_name.to_string(),
                    line: *line,
                    column: Some(label.to_string()),
                    reason: format!(
                        "unknown label {name:?}: the classes are {}",
                        super::data::abbreviate(&classes)
                    ),
                })?;
            labels.push(index);
        }
        Ok(Self {
            source_name: source_name.to_string(),
            texts,
            labels,
            classes,
            lines,
        })
    }

    /// The name errors use for this data (usually its path).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The texts, in file order.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The class index of each text.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The class names, in output order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.texts.len()
    }
}

/// A CSV reading error, with the line and (for invalid UTF-8) the column.
fn record_error(source_name: &str, header: &[String], e: csv::Error) -> TrainError {
    let line = e.position().map_or(0, csv::Position::line);
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => TrainError::Cell {
            source_name: source_name.to_string(),
            line,
            column: header.get(err.field()).cloned(),
            reason: "the cell is not valid UTF-8".into(),
        },
        csv::ErrorKind::Io(io) => TrainError::Read {
            source_name: source_name.to_string(),
            reason: io.to_string(),
        },
        _ => TrainError::Cell {
            source_name: source_name.to_string(),
            line,
            column: None,
            reason: e.to_string(),
        },
    }
}

/// The identity and description of a trained text classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct TextModelInfo {
    /// The model id (`[A-Za-z0-9._-]`).
    pub id: String,
    /// The model version.
    pub version: String,
    /// A description; `None` writes one that states the guarantee.
    pub description: Option<String>,
}

/// A trained text classifier head.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedTextHead {
    /// The classifier's config: the encoder's, with `task: classification`, the labels,
    /// `architecture.head` and `dp_training` (validated).
    pub config: EncoderConfig,
    /// The head.
    pub network: Network,
    /// The schedule followed, σ included.
    pub plan: Plan,
    /// The running mean training loss at the end.
    pub final_loss: f64,
    /// Tokens the training texts had after truncation, in all.
    pub tokens: usize,
    /// Training texts the encoder truncated.
    pub truncated: usize,
}

impl TrainedTextHead {
    /// The head's weights as F32 safetensors (the bundle entry `head.safetensors`).
    pub fn weights(&self) -> Result<Vec<u8>> {
        self.network.to_safetensors()
    }
}

/// Embeddings of `data`'s texts (row-major `rows × width`) with the encoder's tokenizer,
/// truncation policy, pooling and normalization, and the token counts (all, truncated).
/// A text the encoder refuses fails the call, naming its line.
pub fn embed_texts(
    encoder: &dyn TextEncoder,
    data: &TextDataset,
) -> Result<(Vec<f32>, usize, usize)> {
    require_embedding(encoder)?;
    let width = encoder.embedding_width();
    let mut values = Vec::with_capacity(data.rows() * width);
    let (mut tokens, mut truncated) = (0, 0);
    for (chunk, lines) in data
        .texts
        .chunks(EMBED_CHUNK)
        .zip(data.lines.chunks(EMBED_CHUNK))
    {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let tokenized = encoder.tokenize(&texts).map_err(|e| match &e {
            EngineError::TooManyTokens { index, .. } => TrainError::Cell {
                source_name: data.source_name.clone(),
                line: lines.get(*index).copied().unwrap_or(0),
                column: None,
                reason: e.to_string(),
            },
            _ => TrainError::Engine(e),
        })?;
        tokens += tokenized.iter().map(|t| t.len()).sum::<usize>();
        truncated += tokenized.iter().filter(|t| t.truncated()).count();
        let out =
            encoder.infer_tokenized(&tokenized, DEFAULT_MAX_PADDED_TOKENS, DEFAULT_MAX_ROWS)?;
        if out.width != width || out.rows != texts.len() {
            return Err(TrainError::Encoder(format!(
                "the encoder gave {} rows of {} values for {} texts, expected width {width}",
                out.rows,
                out.width,
                texts.len()
            )));
        }
        if !out.values.iter().all(|v| v.is_finite()) {
            return Err(TrainError::Encoder(
                "the encoder gave a non-finite embedding".into(),
            ));
        }
        values.extend_from_slice(&out.values);
    }
    Ok((values, tokens, truncated))
}

/// Refuses an encoder that is not an embedding model.
fn require_embedding(encoder: &dyn TextEncoder) -> Result<()> {
    let config = encoder.config();
    if config.architecture.task != TextTask::Embedding {
        return Err(TrainError::Encoder(format!(
            "model {} is a {} model: a head is trained on an embedding model (task \
             \"embedding\"), not on one that already classifies",
            config.id,
            config.architecture.task.as_str()
        )));
    }
    Ok(())
}

/// Trains a classifier head on `data` over `encoder` (an embedding model): embeds every
/// text as the server will, runs DP-SGD with `options` (`options.hidden` are the head's
/// hidden widths; none gives a linear head), and builds the classifier config from the
/// encoder's (same tokenizer limits, pooling, normalization, purposes and tensor names).
pub fn train_text(
    encoder: &dyn TextEncoder,
    data: &TextDataset,
    options: &TrainOptions,
    info: &TextModelInfo,
    rng: &mut ChaChaDpRng,
    progress: &mut dyn Progress,
) -> Result<TrainedTextHead> {
    require_embedding(encoder)?;
    if data.classes.len() < 2 {
        return Err(TrainError::Data {
            source_name: data.source_name.clone(),
            reason: format!(
                "{} class ({}); training needs at least two",
                data.classes.len(),
                super::data::abbreviate(&data.classes)
            ),
        });
    }
    options.validate(data.rows())?;
    let (embeddings, tokens, truncated) = embed_texts(encoder, data)?;
    let plan = options.plan(data.rows())?;
    let width = encoder.embedding_width();
    let x = embeddings.iter().map(|v| f64::from(*v)).collect();
    let (network, final_loss) = fit(
        x,
        &data.labels,
        width,
        data.classes.len(),
        options,
        plan,
        rng,
        progress,
    )?;
    let base = encoder.config();
    let dp_training = guarantee(options, &plan);
    let description = info.description.clone().unwrap_or_else(|| {
        let head = if options.hidden.is_empty() {
            "A linear head".to_string()
        } else {
            format!("An MLP head (hidden {:?})", options.hidden)
        };
        match &dp_training {
            Some(dp) => format!(
                "{head} over {} {}, trained by confidant train with DP-SGD: ({}, {})-DP for \
                 the head's weights",
                base.id, base.version, dp.epsilon, dp.delta
            ),
            None => format!(
                "{head} over {} {}, trained by confidant train without differential privacy",
                base.id, base.version
            ),
        }
    });
    let a = &base.architecture;
    let config = EncoderConfig {
        id: info.id.clone(),
        version: info.version.clone(),
        description: Some(description),
        architecture: EncoderArchitecture {
            kind: a.kind,
            task: TextTask::Classification,
            pooling: a.pooling,
            normalize: a.normalize,
            max_tokens: a.max_tokens,
            truncation: a.truncation,
            output: Some(OutputKind::Softmax),
            labels: Vec::new(),
            head: Some(TextHead {
                kind: HeadKind::Mlp,
                layers: network.layer_specs(),
            }),
        },
        labels: data.classes.clone(),
        input_tensor_name: base.input_tensor_name.clone(),
        output_tensor_name: None,
        purposes: base.purposes.clone(),
        dp_training,
        privacy: None,
    };
    config
        .validate()
        .map_err(|e: ConfigError| EngineError::from(e))?;
    Ok(TrainedTextHead {
        config,
        network,
        plan,
        final_loss,
        tokens,
        truncated,
    })
}

/// The result of [`evaluate_text`]: `{"accuracy", "rows"}` as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TextEvaluation {
    /// The fraction of texts whose highest score is their label.
    pub accuracy: f64,
    /// The number of texts evaluated.
    pub rows: usize,
}

/// Accuracy of `classifier` (a loaded text classifier) on `data`, whose classes must be
/// the classifier's labels in order (read it with `Some(classifier.config().labels())`).
pub fn evaluate_text(classifier: &dyn TextEncoder, data: &TextDataset) -> Result<TextEvaluation> {
    let config = classifier.config();
    if config.architecture.task != TextTask::Classification {
        return Err(TrainError::Encoder(format!(
            "model {} is not a classifier",
            config.id
        )));
    }
    if data.classes.as_slice() != config.labels() {
        return Err(TrainError::Data {
            source_name: data.source_name.clone(),
            reason: "the classes are not the model's labels in order".into(),
        });
    }
    let width = config.labels().len();
    let mut correct = 0usize;
    for (chunk, labels) in data
        .texts
        .chunks(EMBED_CHUNK)
        .zip(data.labels.chunks(EMBED_CHUNK))
    {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let out = classifier.infer(&texts)?;
        correct += crate::engine::argmax_rows(&out.values, width)
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
    }
    Ok(TextEvaluation {
        accuracy: correct as f64 / data.rows() as f64,
        rows: data.rows(),
    })
}

#[cfg(test)]
mod tests;
