//! Sealing a Hugging Face model directory: the weights, the tokenizer and the model's own
//! config files go into one bundle under one signature, so that nothing the server needs is
//! read from outside the sealed file at serve time.

use std::path::Path;

use zeroize::Zeroizing;

use super::error::SealedError;
use super::file::Unsealed;
use super::publisher::PublisherSigningKey;
use super::sealing::{SealOptions, Sealed, seal_bundle};
use crate::engine::bert::{BertEncoder, BertFiles};
use crate::engine::{EncoderConfig, EngineError, ModelSpec};

/// The weights.
pub const WEIGHTS: &str = "model.safetensors";
/// The network's shapes.
pub const CONFIG: &str = "config.json";
/// The tokenizer.
pub const TOKENIZER: &str = "tokenizer.json";
/// sentence-transformers' pooling config.
pub const POOLING: &str = "1_Pooling/config.json";
/// sentence-transformers' module list (it says whether the model normalizes).
pub const MODULES: &str = "modules.json";
/// The weights of a classifier head over the pooled embedding (`architecture.head`), as
/// `confidant train --encoder` writes them.
pub const HEAD: &str = crate::engine::bert::HEAD_FILE;
/// The files every encoder bundle holds.
pub const REQUIRED: [&str; 3] = [WEIGHTS, CONFIG, TOKENIZER];
/// The files sealed too when the directory has them: the model's own configs, so that the
/// sealed file records everything the publisher shipped about tokenization and pooling.
pub const OPTIONAL: [&str; 7] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    MODULES,
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    POOLING,
    HEAD,
];
/// Largest config or tokenizer file read (the weights have no limit but memory).
pub const MAX_CONFIG_FILE: u64 = 64 << 20;

/// The files of a model directory, in bundle order (required first, then optional ones in
/// [`OPTIONAL`]'s order). The plaintext is zeroized on drop.
pub struct ModelDirectory {
    files: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl ModelDirectory {
    /// Reads the required files and the optional ones present. Other files (a README,
    /// `pytorch_model.bin`, ...) are not sealed.
    pub fn read(dir: &Path) -> Result<Self, SealedError> {
        let mut files = Vec::new();
        for name in REQUIRED.iter().chain(OPTIONAL.iter()) {
            let path = dir.join(name);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !REQUIRED.contains(name) => {
                    continue;
                }
                Err(e) => return Err(SealedError::io(&path, e)),
            };
            if *name != WEIGHTS && meta.len() > MAX_CONFIG_FILE {
                return Err(SealedError::ManifestInvalid(format!(
                    "{}: {} bytes is more than the {MAX_CONFIG_FILE} a config file may have",
                    path.display(),
                    meta.len()
                )));
            }
            let bytes = std::fs::read(&path).map_err(|e| SealedError::io(&path, e))?;
            files.push(((*name).to_string(), Zeroizing::new(bytes)));
        }
        Ok(Self { files })
    }

    /// A directory from files already in memory (name, bytes), in the given order.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            files: files
                .into_iter()
                .map(|(n, b)| (n, Zeroizing::new(b)))
                .collect(),
        }
    }

    /// The bytes of file `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// The files as bundle entries.
    pub fn entries(&self) -> Vec<(&str, &[u8])> {
        self.files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect()
    }

    /// The files a BERT encoder is built from.
    pub fn bert_files(&self) -> Result<BertFiles<'_>, EngineError> {
        bert_files(|name| self.file(name))
    }
}

/// Picks a BERT encoder's files out of a bundle by name.
pub fn bert_files<'a>(
    file: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<BertFiles<'a>, EngineError> {
    let need = |name: &str| file(name).ok_or_else(|| EngineError::MissingEntry(name.into()));
    Ok(BertFiles {
        weights: need(WEIGHTS)?,
        config: need(CONFIG)?,
        tokenizer: need(TOKENIZER)?,
        pooling: file(POOLING),
        modules: file(MODULES),
        head: file(HEAD),
    })
}

/// Seals a text encoder: builds it from the directory first (the tokenizer parses, every
/// tensor matches the network's shapes, the config fits the model), so that a model that
/// cannot be served is never sealed, then seals every file of the directory as one bundle.
pub fn seal_encoder(
    config: &EncoderConfig,
    dir: &ModelDirectory,
    signing: &PublisherSigningKey,
    options: &SealOptions,
) -> Result<Sealed<ModelSpec>, SealedError> {
    drop(BertEncoder::load(
        config,
        dir.bert_files()?,
        &candle_core::Device::Cpu,
    )?);
    seal_bundle(
        &ModelSpec::Bert(config.clone()),
        &dir.entries(),
        signing,
        options,
    )
}

/// Builds the encoder of an unsealed bundle, from its locked plaintext.
pub fn load_encoder(
    unsealed: &Unsealed<ModelSpec>,
    device: &candle_core::Device,
) -> Result<BertEncoder, SealedError> {
    let ModelSpec::Bert(config) = &unsealed.manifest.model else {
        return Err(SealedError::ManifestInvalid(format!(
            "model {} is not a text encoder",
            unsealed.manifest.model.id()
        )));
    };
    let files = bert_files(|name| unsealed.entry(name))?;
    Ok(BertEncoder::load(config, files, device)?)
}

/// Seals a text classifier built on a sealed encoder: every entry of the (already verified
/// and decrypted) `encoder` bundle, unchanged, plus the classifier head's weights `head` as
/// [`HEAD`], under `config` (a classifier whose `architecture.head` describes `head`). The
/// classifier is built from these entries first, as [`seal_encoder`] does, so that a model
/// that cannot be served is never sealed. The encoder must be an embedding model.
pub fn seal_text_classifier(
    encoder: &Unsealed<ModelSpec>,
    config: &EncoderConfig,
    head: &[u8],
    signing: &PublisherSigningKey,
    options: &SealOptions,
) -> Result<Sealed<ModelSpec>, SealedError> {
    let base = match &encoder.manifest.model {
        ModelSpec::Bert(c) => c,
        other => {
            return Err(SealedError::ManifestInvalid(format!(
                "model {} is not a text encoder",
                other.id()
            )));
        }
    };
    if base.architecture.task != crate::engine::config::TextTask::Embedding {
        return Err(SealedError::ManifestInvalid(format!(
            "model {} is a {} model; a head is trained on an embedding model",
            base.id,
            base.architecture.task.as_str()
        )));
    }
    if config.architecture.head.is_none() {
        return Err(SealedError::ManifestInvalid(format!(
            "model {}: the config declares no architecture.head for {HEAD}",
            config.id
        )));
    }
    let mut entries: Vec<(&str, &[u8])> = Vec::with_capacity(encoder.manifest.entries.len() + 1);
    for info in &encoder.manifest.entries {
        if info.name == HEAD {
            return Err(SealedError::ManifestInvalid(format!(
                "model {} already holds a {HEAD}",
                base.id
            )));
        }
        let bytes = encoder
            .entry(&info.name)
            .ok_or_else(|| EngineError::MissingEntry(info.name.clone()))?;
        entries.push((info.name.as_str(), bytes));
    }
    entries.push((HEAD, head));
    let lookup = |name: &str| entries.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
    drop(BertEncoder::load(
        config,
        bert_files(lookup)?,
        &candle_core::Device::Cpu,
    )?);
    seal_bundle(&ModelSpec::Bert(config.clone()), &entries, signing, options)
}
