//! `inference.GRPCInferenceService`: a thin translation onto the shared [`Pipeline`].
//!
//! Authentication, as Triton draws the line: `ServerLive` and `ServerReady` answer anyone
//! (they say no more than the standard gRPC health service, which is also open, and
//! orchestrators probe them without credentials). Everything that names or uses a model —
//! `ModelReady`, `ModelMetadata`, `ModelInfer` — and `ServerMetadata` need a key with the
//! `predict` scope, as `confidant.v1.ListModels` and `Predict` do, so that a caller without a
//! key cannot learn which models a server holds.

use tonic::{Request, Response, Status};

use super::error::TensorError;
use super::tensor::{self, InputTensor};
use crate::engine::LoadedModel;
use crate::guard::Scope;
use crate::names::validate_id;
use crate::pipeline::{ApiError, CallContext, Pipeline, PredictCall, check_model_ref};
use crate::proto::inference as pb;

/// The `platform` reported in model metadata.
pub const PLATFORM: &str = "confidant_mlp";
/// The server name reported in server metadata.
pub const SERVER_NAME: &str = "confidant";
/// The response parameter carrying the server's request id (the one in the audit log).
pub const REQUEST_ID_PARAMETER: &str = "confidant_request_id";

/// The Open Inference Protocol service.
#[derive(Clone)]
pub struct OipService {
    pipeline: Pipeline,
}

impl OipService {
    /// The service over the shared pipeline.
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    /// Ready, authenticated with the predict scope, and the model exists at the version asked
    /// for (empty: any).
    fn model(
        &self,
        ctx: &CallContext,
        name: &str,
        version: &str,
    ) -> Result<std::sync::Arc<LoadedModel>, ApiError> {
        check_model_ref(name, version)?;
        self.pipeline.ensure_ready()?;
        self.pipeline.caller(ctx, Scope::Predict)?;
        let model = self.pipeline.registry().get(name)?;
        let config = model.config();
        if !version.is_empty() && version != config.version {
            return Err(ApiError::Precondition(format!(
                "model {} is at version {}, request asked for {version}",
                config.id, config.version
            )));
        }
        Ok(model)
    }
}

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.pipeline.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        self.pipeline.caller(&ctx, Scope::Predict)?;
        // Not loaded (or loading) is an answer, not an error: Triton's clients expect `false`.
        let ready = self.pipeline.is_ready()
            && self
                .pipeline
                .registry()
                .get(&req.name)
                .is_ok_and(|m| req.version.is_empty() || req.version == m.config().version);
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let ctx = CallContext::of(&request);
        self.pipeline.caller(&ctx, Scope::Predict)?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // No optional protocol extensions (statistics, shared memory, repository, …).
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let model = self.model(&ctx, &req.name, &req.version)?;
        let config = model.config();
        let tensor = |name: &str, width: usize| pb::model_metadata_response::TensorMetadata {
            name: name.to_string(),
            datatype: "FP32".into(),
            shape: vec![-1, width as i64],
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: config.id.clone(),
            versions: vec![config.version.clone()],
            platform: PLATFORM.into(),
            inputs: vec![tensor(config.input_tensor_name(), config.feature_count())],
            outputs: vec![tensor(config.output_tensor_name(), config.output_count())],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let Ok(model) = self.pipeline.registry().get(&req.model_name) else {
            // Unknown model: the pipeline refuses it with its own order of codes (not ready,
            // unauthenticated, … before NOT_FOUND) and audits the refusal.
            let call = PredictCall {
                model: req.model_name,
                version: req.model_version,
                ..PredictCall::default()
            };
            return match self.pipeline.predict(&ctx, call).await {
                Err(status) => Err(status),
                Ok(_) => Err(ApiError::from(crate::guard::InputError::Missing).into()),
            };
        };
        let rows = match decode_request(&model, &req) {
            Ok(rows) => rows,
            Err(e) => {
                // Hand the pipeline an empty call: it runs its guards in order (so a caller
                // that may not use the model learns nothing about its tensors), refuses the
                // empty input as INVALID_ARGUMENT before any rate counter is spent, and audits
                // the refusal. Only then does the caller see the precise tensor error.
                let empty = PredictCall {
                    model: req.model_name,
                    version: req.model_version,
                    ..PredictCall::default()
                };
                return match self.pipeline.predict(&ctx, empty).await {
                    Err(status) if status.code() != tonic::Code::InvalidArgument => Err(status),
                    _ => Err(ApiError::from(e).into()),
                };
            }
        };
        let raw = !req.raw_input_contents.is_empty();
        let call = PredictCall {
            model: req.model_name,
            version: req.model_version,
            shape: rows.shape,
            values: rows.values,
        };
        let out = self.pipeline.predict(&ctx, call).await?;
        let config = out.model.config();
        let mut output = pb::model_infer_response::InferOutputTensor {
            name: config.output_tensor_name().to_string(),
            datatype: "FP32".into(),
            shape: vec![out.rows as i64, out.width as i64],
            ..Default::default()
        };
        // Raw in, raw out: tritonclient reads numeric outputs only from raw contents, while
        // typed callers (grpcurl, hand-written JSON) get typed contents they can read.
        let raw_output_contents = if raw {
            vec![tensor::encode_raw(&out.values)]
        } else {
            output.contents = Some(pb::InferTensorContents {
                fp32_contents: out.values,
                ..Default::default()
            });
            Vec::new()
        };
        let string_param = |v: String| pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::StringParam(v)),
        };
        let mut parameters: std::collections::HashMap<String, pb::InferParameter> = [(
            REQUEST_ID_PARAMETER.to_string(),
            string_param(out.request_id),
        )]
        .into();
        // Under a label-only or private policy the scores are absent or noisy: the released
        // labels and the privacy receipt travel as response parameters.
        if let Some(r) = &out.receipt {
            parameters.insert("privacy_mechanism".into(), string_param(r.mechanism.into()));
            parameters.insert("labels".into(), string_param(out.labels.join(",")));
            parameters.insert(
                "epsilon_charged".into(),
                string_param(format!(
                    "{}",
                    r.charge.epsilon_at(r.budget.map_or(1e-6, |b| b.delta))
                )),
            );
            if let Some(b) = r.budget {
                parameters.insert(
                    "epsilon_remaining".into(),
                    string_param(format!("{}", b.epsilon_remaining)),
                );
            }
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: config.id.clone(),
            model_version: config.version.clone(),
            id: req.id,
            parameters,
            outputs: vec![output],
            raw_output_contents,
        }))
    }
}

/// The most dimensions of a shape that an error message repeats.
const MAX_ECHOED_DIMS: usize = 8;

/// Checks every field of the request that a message may repeat (the request id, which the
/// response echoes; tensor names; datatypes; the shape's rank) against its bound, so that no
/// reply and no log line carries a caller's unbounded text. (The request's `parameters`
/// are neither read, logged nor echoed.)
fn check_fields(req: &pb::ModelInferRequest) -> Result<(), TensorError> {
    if !req.id.is_empty() {
        validate_id("request id", &req.id)?;
    }
    for out in &req.outputs {
        validate_id("output tensor name", &out.name)?;
    }
    for input in &req.inputs {
        validate_id("input tensor name", &input.name)?;
        validate_id("input datatype", &input.datatype)?;
        if input.shape.len() > MAX_ECHOED_DIMS {
            return Err(TensorError::Rank {
                name: input.name.clone(),
                dims: input.shape.len(),
            });
        }
    }
    Ok(())
}

/// Checks the request's tensors against the model's names and decodes its one input.
fn decode_request(
    model: &LoadedModel,
    req: &pb::ModelInferRequest,
) -> Result<tensor::Rows, TensorError> {
    check_fields(req)?;
    let config = model.config();
    let expected = config.input_tensor_name();
    for out in &req.outputs {
        if out.name != config.output_tensor_name() {
            return Err(TensorError::UnknownOutput {
                model: config.id.clone(),
                name: out.name.clone(),
                expected: config.output_tensor_name().to_string(),
            });
        }
    }
    let [input] = req.inputs.as_slice() else {
        return Err(TensorError::InputCount {
            model: config.id.clone(),
            expected: expected.to_string(),
            found: req.inputs.len(),
        });
    };
    if input.name != expected {
        return Err(TensorError::UnknownInput {
            model: config.id.clone(),
            name: input.name.clone(),
            expected: expected.to_string(),
        });
    }
    let raw = match req.raw_input_contents.as_slice() {
        [] => None,
        [raw] => Some(raw.as_slice()),
        more => {
            return Err(TensorError::RawCount {
                raw: more.len(),
                inputs: req.inputs.len(),
            });
        }
    };
    tensor::decode(&InputTensor {
        name: &input.name,
        datatype: &input.datatype,
        shape: &input.shape,
        contents: input.contents.as_ref(),
        raw,
    })
}
