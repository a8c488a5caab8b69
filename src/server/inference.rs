//! `confidant.v1.Inference`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::audit::{AuditLog, Event};
use crate::engine::{Registry, argmax_rows};
use crate::guard::{Credentials, Guard, InputError, KeyRecord, Scope, validate_rows};
use crate::proto::confidant::v1 as pb;

/// The Inference service.
#[derive(Clone)]
pub struct InferenceService {
    registry: Registry,
    guard: Arc<Guard>,
    audit: Option<Arc<AuditLog>>,
    ready: Arc<AtomicBool>,
    max_rows: usize,
}

impl InferenceService {
    /// A service over `registry`; it answers UNAVAILABLE until `ready` is set.
    pub fn new(
        registry: Registry,
        guard: Arc<Guard>,
        audit: Option<Arc<AuditLog>>,
        ready: Arc<AtomicBool>,
        max_rows: usize,
    ) -> Self {
        Self {
            registry,
            guard,
            audit,
            ready,
            max_rows,
        }
    }

    fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::Unavailable(
                "server is not ready: models are still loading".into(),
            ))
        }
    }

    /// Authenticates the caller and checks the scope.
    fn caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        scope: Scope,
    ) -> Result<KeyRecord, ApiError> {
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        let key = self.guard.authenticate(Credentials {
            api_key: header("x-api-key"),
            authorization: header("authorization"),
        })?;
        self.guard.authorize(&key, scope)?;
        Ok(key)
    }

    async fn predict_inner(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        req: pb::PredictRequest,
        ctx: &mut AuditContext,
    ) -> Result<pb::PredictResponse, ApiError> {
        self.ensure_ready()?;
        let key = self.caller(metadata, Scope::Predict)?;
        ctx.principal.clone_from(&key.principal);
        ctx.model.clone_from(&req.model);
        if req.model.is_empty() {
            return Err(ApiError::BadRequest("model must be set".into()));
        }
        let model = self.registry.get(&req.model)?;
        let config = model.config();
        ctx.model = format!("{}@{}", config.id, config.version);
        if !req.version.is_empty() && req.version != config.version {
            return Err(ApiError::Precondition(format!(
                "model {} is at version {}, request asked for {}",
                config.id, config.version, req.version
            )));
        }
        let declared = metadata.get("x-purpose").and_then(|v| v.to_str().ok());
        let purpose = self
            .guard
            .check_purpose(&key, declared, &config.id, &config.purposes)?;
        ctx.purpose.clone_from(&purpose);
        let input = req.input.ok_or(InputError::Missing)?;
        if let Some(audit) = &self.audit {
            ctx.input_hmac = Some(audit.input_hmac(&input.values));
        }
        let rows = validate_rows(config, &input.shape, &input.values, self.max_rows)?;
        ctx.rows = rows as u64;
        // The only step that spends a counter comes last, and is handed back on failure.
        let admission = self.guard.admit(&key, unix_now())?;
        let request_id = uuid::Uuid::new_v4().to_string();
        ctx.request_id.clone_from(&request_id);
        let out = match model.infer(input.values, rows).await {
            Ok(out) => out,
            Err(e) => {
                self.guard.limiter().refund(admission);
                return Err(e.into());
            }
        };
        let width = config.output_count();
        let indices = argmax_rows(&out.values, width);
        ctx.output_argmax = indices.iter().map(|&i| i as u32).collect();
        let labels = indices
            .iter()
            .map(|&i| config.labels.get(i).cloned().unwrap_or_default())
            .collect();
        tracing::debug!(
            request_id = %request_id,
            principal = %key.principal,
            purpose = purpose.as_deref().unwrap_or("-"),
            model = %config.id,
            rows,
            batch_rows = out.batch_rows,
            queue_us = out.queue_time.as_micros() as u64,
            compute_us = out.compute_time.as_micros() as u64,
            "predict"
        );
        Ok(pb::PredictResponse {
            model: config.id.clone(),
            model_version: config.version.clone(),
            request_id,
            output: Some(pb::Tensor {
                shape: vec![rows as u64, width as u64],
                values: out.values,
            }),
            labels,
            label_indices: indices.into_iter().map(|i| i as u32).collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::inference_server::Inference for InferenceService {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let started = std::time::Instant::now();
        let (metadata, _, req) = request.into_parts();
        let mut ctx = AuditContext::default();
        let result = self.predict_inner(&metadata, req, &mut ctx).await;
        let result = result.map_err(Status::from);
        if let Some(audit) = &self.audit {
            let (decision, reason) = match &result {
                Ok(_) => ("allow", "OK".to_string()),
                Err(s) => ("refuse", crate::client::code_name(s.code()).to_string()),
            };
            audit.append(Event::Predict {
                request_id: ctx.request_id,
                principal: ctx.principal,
                model: ctx.model,
                purpose: ctx.purpose,
                subject: None,
                input_hmac: ctx.input_hmac,
                output_argmax: ctx.output_argmax,
                rows: ctx.rows,
                latency_us: started.elapsed().as_micros() as u64,
                decision: decision.into(),
                reason,
                epsilon: 0.0,
            });
        }
        Ok(Response::new(result?))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.ensure_ready()?;
        self.caller(request.metadata(), Scope::Predict)?;
        let models = self
            .registry
            .list()
            .into_iter()
            .map(|m| {
                let c = m.config();
                pb::ModelInfo {
                    id: c.id.clone(),
                    version: c.version.clone(),
                    features: c.input.features.clone(),
                    feature_min: c.input.min.clone(),
                    feature_max: c.input.max.clone(),
                    labels: c.labels.clone(),
                    output: c.architecture.output.as_str().to_string(),
                    weights_sha256: m.provenance().weights_sha256.clone(),
                    publisher_key_id: m.provenance().publisher_key_id.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the audit record of one Predict call learns as the call proceeds.
#[derive(Default)]
struct AuditContext {
    request_id: String,
    principal: String,
    model: String,
    purpose: Option<String>,
    input_hmac: Option<String>,
    output_argmax: Vec<u32>,
    rows: u64,
}
