//! The registry of loaded models, addressed by id.
//!
//! A [`LoadedModel`] is one model of any kind: its signed config and one
//! [`ServedEngine`] (an MLP over numeric rows, or any [`TextEncoder`]). Everything above the
//! engine (guards, audit, metrics, the protocols) reads a model through the kind-neutral
//! accessors here (id, version, purposes, labels, output width, tensor names, statistics)
//! and hands it a [`ModelInput`]; only where an input's form matters (row validation,
//! tokenization, Explain) does it ask for the kind.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::batcher::{BatchConfig, BatchOutput, Batcher};
use super::config::{EncoderConfig, ModelConfig, ModelSpec, OutputKind, TextTask};
use super::error::ConfigError;
use super::error::EngineError;
use super::mlp::Mlp;
use super::screening::{Screener, ScreeningSpec};
use super::served::{MlpEngine, ServedEngine, TextEngine};
use super::text::{TextBatcher, TextEncoder, Tokens};
use crate::metrics::{EngineGauge, ExecMetrics, ModelGauges};
use crate::privacy::policy::PrivacyPolicy;

/// Where a loaded model came from: the signed facts that clients may want to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Hex SHA-256 of the plaintext weights, as signed in the manifest.
    pub weights_sha256: String,
    /// Hex key id of the publisher that signed the manifest.
    pub publisher_key_id: String,
    /// The manifest digest the publisher signed ([`crate::sealed::Manifest::digest`]), as
    /// receipts state it.
    pub manifest_sha256: [u8; 32],
}

/// A model ready to serve.
pub struct LoadedModel {
    spec: ModelSpec,
    /// `id@version`, as audit records name the model.
    label: String,
    /// This model's request metrics, bound on first use to the series of the one pipeline
    /// that serves this registry (see [`metrics_cell`](Self::metrics_cell)).
    metrics: std::sync::OnceLock<Arc<crate::metrics::ModelMetrics>>,
    provenance: Provenance,
    screening: Option<ScreeningSpec>,
    privacy: PrivacyPolicy,
    engine: Box<dyn ServedEngine>,
}

/// What a model is asked to compute: numeric rows for an MLP, tokenized texts for a text
/// model.
pub enum ModelInput {
    /// `rows` rows, row-major.
    Rows {
        /// The values.
        values: Vec<f32>,
        /// Rows.
        rows: usize,
    },
    /// Texts tokenized by the model's own tokenizer ([`TextEncoder::tokenize`]).
    Tokens(Vec<Tokens>),
}

impl LoadedModel {
    /// `id@version`, as audit records name the model.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where the serving pipeline keeps this model's request series once it has looked
    /// them up, so that a request records without a registry lookup or a reference count.
    pub fn metrics_cell(&self) -> &std::sync::OnceLock<Arc<crate::metrics::ModelMetrics>> {
        &self.metrics
    }

    /// The signed config, of whatever kind.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The signed config of an MLP (`None` for other kinds).
    pub fn mlp_config(&self) -> Option<&ModelConfig> {
        match &self.spec {
            ModelSpec::Mlp(c) => Some(c),
            ModelSpec::Bert(_) => None,
        }
    }

    /// The signed config of a text model (`None` for other kinds).
    pub fn text_config(&self) -> Option<&EncoderConfig> {
        match &self.spec {
            ModelSpec::Bert(c) => Some(c),
            ModelSpec::Mlp(_) => None,
        }
    }

    /// The model id.
    pub fn id(&self) -> &str {
        self.spec.id()
    }

    /// The model version.
    pub fn version(&self) -> &str {
        self.spec.version()
    }

    /// The purposes the model may be used for (empty: any, none declared).
    pub fn purposes(&self) -> &[String] {
        match &self.spec {
            ModelSpec::Mlp(c) => &c.purposes,
            ModelSpec::Bert(c) => &c.purposes,
        }
    }

    /// Class labels, one per output (empty for an embedding model).
    pub fn labels(&self) -> &[String] {
        match &self.spec {
            ModelSpec::Mlp(c) => &c.labels,
            ModelSpec::Bert(c) => c.labels(),
        }
    }

    /// Whether the outputs are class scores (an MLP or a text classifier), as opposed to
    /// embeddings.
    pub fn has_classes(&self) -> bool {
        match &self.spec {
            ModelSpec::Mlp(_) => true,
            ModelSpec::Bert(c) => c.architecture.task == TextTask::Classification,
        }
    }

    /// Whether the outputs are softmax probabilities.
    pub fn softmax(&self) -> bool {
        match &self.spec {
            ModelSpec::Mlp(c) => c.architecture.output == OutputKind::Softmax,
            ModelSpec::Bert(c) => {
                c.architecture.task == TextTask::Classification
                    && c.output_kind() == OutputKind::Softmax
            }
        }
    }

    /// Values per output row: scores per class, or an embedding's width.
    pub fn output_width(&self) -> usize {
        self.engine.output_width()
    }

    /// The input tensor's Open Inference Protocol name.
    pub fn input_tensor_name(&self) -> &str {
        match &self.spec {
            ModelSpec::Mlp(c) => c.input_tensor_name(),
            ModelSpec::Bert(c) => c.input_tensor_name(),
        }
    }

    /// The output tensor's Open Inference Protocol name.
    pub fn output_tensor_name(&self) -> &str {
        match &self.spec {
            ModelSpec::Mlp(c) => c.output_tensor_name(),
            ModelSpec::Bert(c) => c.output_tensor_name(),
        }
    }

    /// Where the model runs.
    pub fn device_location(&self) -> candle_core::DeviceLocation {
        self.engine.device_location()
    }

    /// Where it came from.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The sensitivity screening in force (the manifest's, tightened by the server's).
    pub fn screening(&self) -> Option<&ScreeningSpec> {
        self.screening.as_ref()
    }

    /// The output privacy policy in force (the manifest's, possibly tightened).
    pub fn privacy(&self) -> &PrivacyPolicy {
        &self.privacy
    }

    /// The MLP itself (for explanations, which bypass the batcher); `None` for other kinds.
    pub fn mlp(&self) -> Option<&Arc<Mlp>> {
        self.engine.mlp()
    }

    /// The text encoder (its tokenizer and limits); `None` for other kinds.
    pub fn encoder(&self) -> Option<&Arc<dyn TextEncoder>> {
        self.engine.encoder()
    }

    /// Runs an input through the model's batcher. An input of the wrong form for the model
    /// (rows for a text model, texts for an MLP) is refused.
    pub async fn infer(&self, input: ModelInput) -> Result<BatchOutput, EngineError> {
        self.engine.enqueue(input)?.outcome().await
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.engine.queue_depth()
    }

    /// Executions and batch sizes so far.
    pub fn exec_metrics(&self) -> &Arc<ExecMetrics> {
        self.engine.exec_metrics()
    }

    /// This version's Triton statistics (`ModelStatistics`).
    pub fn stats(&self) -> &Arc<crate::metrics::stats::InferStats> {
        self.engine.stats()
    }

    /// Its batching settings.
    pub fn batch_config(&self) -> &BatchConfig {
        self.engine.batch_config()
    }
}

/// What the server config adds to a model's signed manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServingOptions {
    /// Screening (applies where the manifest has none; otherwise may only tighten).
    pub screening: Option<ScreeningSpec>,
    /// Output privacy policy (may only tighten the manifest's).
    pub privacy: Option<PrivacyPolicy>,
}

/// Models by id. Cheap to clone; all clones share the same models.
#[derive(Clone, Default)]
pub struct Registry {
    models: Arc<RwLock<BTreeMap<String, Arc<LoadedModel>>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts serving `mlp` under its config's id, with no screening beyond the manifest's.
    pub fn insert(
        &self,
        config: ModelConfig,
        provenance: Provenance,
        mlp: Mlp,
        batch: BatchConfig,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        self.insert_with(config, provenance, mlp, batch, ServingOptions::default())
    }

    /// Starts serving `mlp` under its config's id, with the server config's screening and
    /// privacy settings, which apply where the manifest declares none and can only tighten
    /// the manifest's.
    pub fn insert_with(
        &self,
        config: ModelConfig,
        provenance: Provenance,
        mlp: Mlp,
        batch: BatchConfig,
        options: ServingOptions,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        let server_screening = options.screening;
        let privacy = PrivacyPolicy::effective(
            config.privacy.as_ref(),
            options.privacy.as_ref(),
            config.architecture.output == super::OutputKind::Softmax,
            config.output_count(),
        )
        .map_err(|e| ConfigError::Invalid(format!("model {}: {e}", config.id)))?;
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        if models.contains_key(&config.id) {
            return Err(EngineError::DuplicateModel(config.id.clone()));
        }
        let screening =
            ScreeningSpec::effective(config.screening.as_ref(), server_screening.as_ref());
        let screener = screening
            .map(|spec| Screener::new(spec, &config.input))
            .transpose()?
            .map(|s| s.for_model(&mlp))
            .transpose()?;
        let mlp = Arc::new(mlp);
        let batcher = Batcher::spawn_screened(Arc::clone(&mlp), &config.id, batch, screener)
            .map_err(|e| EngineError::Compute(candle_core::Error::Msg(e.to_string())))?;
        let config_id = config.id.clone();
        let model = Arc::new(LoadedModel {
            label: format!("{}@{}", config.id, config.version),
            metrics: std::sync::OnceLock::new(),
            spec: ModelSpec::Mlp(config),
            provenance,
            screening,
            privacy,
            engine: Box::new(MlpEngine::new(&config_id, mlp, batcher)),
        });
        models.insert(model.id().to_string(), Arc::clone(&model));
        Ok(model)
    }

    /// Starts serving a text encoder under its config's id. The server config's privacy
    /// policy may only tighten a classifier's; an embedding model has no output policy (its
    /// outputs are vectors, not scores) and sensitivity screening applies to MLPs only, so
    /// either set for a text model is refused.
    pub fn insert_text(
        &self,
        encoder: Arc<dyn TextEncoder>,
        provenance: Provenance,
        batch: BatchConfig,
        options: ServingOptions,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        let config = encoder.config().clone();
        if options.screening.is_some() {
            return Err(ConfigError::Invalid(format!(
                "model {}: sensitivity screening applies to MLPs, not text models",
                config.id
            ))
            .into());
        }
        let privacy = match config.architecture.task {
            TextTask::Embedding => {
                if options.privacy.is_some_and(|p| p != PrivacyPolicy::None) {
                    return Err(ConfigError::Invalid(format!(
                        "model {}: an output privacy policy applies to classifiers, not to \
                         embedding models",
                        config.id
                    ))
                    .into());
                }
                PrivacyPolicy::None
            }
            TextTask::Classification => PrivacyPolicy::effective(
                config.privacy.as_ref(),
                options.privacy.as_ref(),
                config.output_kind() == OutputKind::Softmax,
                config.labels().len(),
            )
            .map_err(|e| ConfigError::Invalid(format!("model {}: {e}", config.id)))?,
        };
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        if models.contains_key(&config.id) {
            return Err(EngineError::DuplicateModel(config.id.clone()));
        }
        let batcher = TextBatcher::spawn(Arc::clone(&encoder), &config.id, batch)
            .map_err(|e| EngineError::Compute(candle_core::Error::Msg(e.to_string())))?;
        let config_id = config.id.clone();
        let model = Arc::new(LoadedModel {
            label: format!("{}@{}", config.id, config.version),
            metrics: std::sync::OnceLock::new(),
            spec: ModelSpec::Bert(config),
            provenance,
            screening: None,
            privacy,
            engine: Box::new(TextEngine::new(&config_id, encoder, batcher)),
        });
        models.insert(model.id().to_string(), Arc::clone(&model));
        Ok(model)
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Result<Arc<LoadedModel>, EngineError> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownModel(id.to_string()))
    }

    /// All models, by id.
    pub fn list(&self) -> Vec<Arc<LoadedModel>> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models.values().cloned().collect()
    }

    /// Removes a model; its worker drains and its weights are zeroed once the last request
    /// holding it finishes.
    pub fn remove(&self, id: &str) -> Option<Arc<LoadedModel>> {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        models.remove(id)
    }

    /// Removes every model (at shutdown).
    pub fn clear(&self) {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        models.clear();
    }
}

impl ModelGauges for Registry {
    fn gauges(&self) -> Vec<EngineGauge> {
        self.list()
            .into_iter()
            .map(|m| EngineGauge {
                model: m.id().to_string(),
                version: m.version().to_string(),
                queue_depth: m.queue_depth(),
                exec: Arc::clone(m.exec_metrics()),
            })
            .collect()
    }
}
