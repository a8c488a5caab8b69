//! The registry of loaded models, addressed by id.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::batcher::{BatchConfig, BatchOutput, Batcher};
use super::config::ModelConfig;
use super::error::ConfigError;
use super::error::EngineError;
use super::mlp::Mlp;
use super::screening::{Screener, ScreeningSpec};
use crate::metrics::{EngineGauge, ExecMetrics, ModelGauges};
use crate::privacy::policy::PrivacyPolicy;

/// Where a loaded model came from: the signed facts that clients may want to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Hex SHA-256 of the plaintext weights, as signed in the manifest.
    pub weights_sha256: String,
    /// Hex key id of the publisher that signed the manifest.
    pub publisher_key_id: String,
}

/// A model ready to serve.
pub struct LoadedModel {
    config: ModelConfig,
    /// `id@version`, as audit records name the model.
    label: String,
    /// This model's request metrics, bound on first use to the series of the one pipeline
    /// that serves this registry (see [`metrics_cell`](Self::metrics_cell)).
    metrics: std::sync::OnceLock<Arc<crate::metrics::ModelMetrics>>,
    provenance: Provenance,
    screening: Option<ScreeningSpec>,
    privacy: PrivacyPolicy,
    mlp: Arc<Mlp>,
    batcher: Batcher,
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

    /// The signed config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
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

    /// The network itself (for explanations, which bypass the batcher).
    pub fn mlp(&self) -> &Arc<Mlp> {
        &self.mlp
    }

    /// Runs `rows` rows through the batcher.
    pub async fn infer(&self, values: Vec<f32>, rows: usize) -> Result<BatchOutput, EngineError> {
        self.batcher.infer(values, rows).await
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }

    /// Executions and batch sizes so far.
    pub fn exec_metrics(&self) -> &Arc<ExecMetrics> {
        self.batcher.exec_metrics()
    }

    /// This version's Triton statistics (`ModelStatistics`).
    pub fn stats(&self) -> &Arc<crate::metrics::stats::InferStats> {
        self.batcher.stats()
    }

    /// Its batching settings.
    pub fn batch_config(&self) -> &BatchConfig {
        self.batcher.config()
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
        let model = Arc::new(LoadedModel {
            label: format!("{}@{}", config.id, config.version),
            metrics: std::sync::OnceLock::new(),
            config,
            provenance,
            screening,
            privacy,
            mlp,
            batcher,
        });
        models.insert(model.config.id.clone(), Arc::clone(&model));
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
                model: m.config.id.clone(),
                version: m.config.version.clone(),
                queue_depth: m.queue_depth(),
                exec: Arc::clone(m.exec_metrics()),
            })
            .collect()
    }
}
