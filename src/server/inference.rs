//! `confidant.v1.Inference`: a thin translation onto the shared [`Pipeline`].

use tonic::{Request, Response, Status};

use crate::guard::Scope;
use crate::pipeline::{Api, CallContext, Pipeline, PredictCall};
use crate::proto::confidant::v1 as pb;

/// The Inference service.
#[derive(Clone)]
pub struct InferenceService {
    pipeline: Pipeline,
}

impl InferenceService {
    /// The service over the shared pipeline.
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }
}

#[tonic::async_trait]
impl pb::inference_server::Inference for InferenceService {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let input = req.input.unwrap_or_default();
        let call = PredictCall {
            model: req.model,
            version: req.version,
            shape: input.shape,
            values: input.values,
            texts: req.texts.into_iter().map(String::into_bytes).collect(),
            embeddings_only: false,
            api: Api::Predict,
        };
        let mut out = self.pipeline.predict(&ctx, call).await?;
        let (receipt, receipt_salt) = receipt_fields(out.signed_receipt.take());
        let model = &out.model;
        let response = Response::new(pb::PredictResponse {
            model: model.id().to_string(),
            model_version: model.version().to_string(),
            output_kind: if model.has_classes() {
                "scores"
            } else {
                "embedding"
            }
            .into(),
            tokens: out.tokens as u64,
            request_id: out.request_id,
            output: Some(pb::Tensor {
                shape: vec![out.rows as u64, out.width as u64],
                values: out.values,
            }),
            labels: out.labels,
            label_indices: out.label_indices,
            flagged_rows: out.flagged_rows,
            privacy: out.receipt.map(|r| {
                let budget = r.budget;
                pb::PrivacyReceipt {
                    mechanism: r.mechanism.to_string(),
                    epsilon_charged: r.charge.epsilon,
                    rho_charged: r.charge.rho,
                    epsilon_spent: budget.map_or(0.0, |b| b.epsilon_spent),
                    epsilon_remaining: budget.map_or(0.0, |b| b.epsilon_remaining),
                    epsilon_budget: budget.map_or(0.0, |b| b.epsilon_budget),
                    delta: budget.map_or(0.0, |b| b.delta),
                    window_end: budget.map_or(0, |b| b.window_end),
                }
            }),
            receipt,
            receipt_salt,
        });
        Ok(response)
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let input = req.input.unwrap_or_default();
        let call = PredictCall {
            model: req.model,
            version: req.version,
            shape: input.shape,
            values: input.values,
            texts: req.texts.into_iter().map(String::into_bytes).collect(),
            embeddings_only: false,
            api: Api::Explain,
        };
        let mut out = self.pipeline.explain(&ctx, call, req.target).await?;
        let (receipt, receipt_salt) = receipt_fields(out.signed_receipt.take());
        let a = &out.attributions;
        let text_attributions: Vec<pb::TokenAttributions> = out
            .texts
            .iter()
            .zip(a)
            .map(|(t, r)| pb::TokenAttributions {
                tokens: t.tokens.clone(),
                attributions: r.attributions.clone(),
                special: t.special.clone(),
                truncated: t.truncated,
            })
            .collect();
        let is_text = out.model.encoder().is_some();
        Ok(Response::new(pb::ExplainResponse {
            model: out.model.id().to_string(),
            model_version: out.model.version().to_string(),
            request_id: out.request_id,
            attributions: (!is_text).then(|| pb::Tensor {
                shape: vec![out.rows as u64, out.features as u64],
                values: a
                    .iter()
                    .flat_map(|r| r.attributions.iter().copied())
                    .collect(),
            }),
            targets: a.iter().map(|r| r.target as u32).collect(),
            output_at_input: a.iter().map(|r| r.output_at_input).collect(),
            output_at_baseline: a.iter().map(|r| r.output_at_baseline).collect(),
            completeness_error: a.iter().map(|r| r.completeness_error).collect(),
            baseline: out.baseline,
            steps: a.iter().map(|r| r.steps as u32).collect(),
            flagged_rows: out.flagged_rows,
            text_attributions,
            baseline_token: out
                .texts
                .first()
                .map(|t| t.baseline_token.clone())
                .unwrap_or_default(),
            receipt,
            receipt_salt,
        }))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let ctx = CallContext::of(&request);
        self.pipeline.ensure_ready()?;
        self.pipeline.caller(&ctx, Scope::Predict)?;
        let models = self
            .pipeline
            .registry()
            .list()
            .into_iter()
            .map(|m| model_info(&m))
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

/// What `ListModels` says about one model, of either kind.
fn model_info(m: &crate::engine::LoadedModel) -> pb::ModelInfo {
    let mut info = pb::ModelInfo {
        id: m.id().to_string(),
        version: m.version().to_string(),
        labels: m.labels().to_vec(),
        weights_sha256: m.provenance().weights_sha256.clone(),
        publisher_key_id: m.provenance().publisher_key_id.clone(),
        kind: m.spec().kind().as_str().to_string(),
        output_width: u32::try_from(m.output_width()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    if let Some(c) = m.mlp_config() {
        info.features.clone_from(&c.input.features);
        info.feature_min.clone_from(&c.input.min);
        info.feature_max.clone_from(&c.input.max);
        info.output = c.architecture.output.as_str().to_string();
    }
    if let Some(c) = m.text_config() {
        let a = &c.architecture;
        info.task = a.task.as_str().to_string();
        info.max_tokens = u32::try_from(a.max_tokens).unwrap_or(u32::MAX);
        info.truncation = match a.truncation {
            crate::engine::config::Truncation::Truncate => "truncate",
            crate::engine::config::Truncation::Refuse => "refuse",
        }
        .to_string();
        info.output = if m.has_classes() {
            c.output_kind().as_str().to_string()
        } else {
            "embedding".to_string()
        };
    }
    info
}

/// A `confidant.v1` response's `receipt` and `receipt_salt` (empty without a receipt, or
/// when the client sent its own salt).
fn receipt_fields(signed: Option<crate::pipeline::SignedReceipt>) -> (Vec<u8>, Vec<u8>) {
    signed
        .map(|r| (r.cose, r.drawn_salt.unwrap_or_default()))
        .unwrap_or_default()
}
