//! `inference.GRPCInferenceService`: a thin translation onto the shared [`Pipeline`].
//!
//! Authentication, as Triton draws the line: `ServerLive` and `ServerReady` answer anyone
//! (they say no more than the standard gRPC health service, which is also open, and
//! orchestrators probe them without credentials). Everything that names or uses a model —
//! `ModelReady`, `ModelMetadata`, `ModelInfer` — and `ServerMetadata` need a key with the
//! `predict` scope, as `confidant.v1.ListModels` and `Predict` do, so that a caller without a
//! key cannot learn which models a server holds. So do Triton's extensions `ModelConfig`,
//! `ModelStatistics` and `RepositoryIndex`, which perf_analyzer calls with the key it infers
//! with (the statistics are aggregates over every caller, as the `/metrics` endpoint shows).

use tonic::{Request, Response, Status};

use super::error::TensorError;
use super::tensor::{self, InputTensor};
use crate::engine::LoadedModel;
use crate::guard::Scope;
use crate::metrics::stats::{StatDuration, StatsSnapshot};
use crate::names::validate_id;
use crate::pipeline::{ApiError, CallContext, Pipeline, PredictCall, check_model_ref};
use crate::proto::inference as pb;

/// The `platform` reported in model metadata.
pub const PLATFORM: &str = "confidant_mlp";
/// The server name reported in server metadata.
pub const SERVER_NAME: &str = "confidant";
/// The response parameter carrying the server's request id (the one in the audit log).
pub const REQUEST_ID_PARAMETER: &str = "confidant_request_id";
/// The `backend` reported in model configurations.
pub const BACKEND: &str = "confidant";
/// The protocol extensions announced in server metadata (Triton's names).
pub const EXTENSIONS: [&str; 3] = [
    "model_configuration",
    "statistics",
    "model_repository(index)",
];
/// A model's state in the repository index when it serves.
pub const STATE_READY: &str = "READY";
/// A model's state in the repository index while the server is not ready.
pub const STATE_UNAVAILABLE: &str = "UNAVAILABLE";

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
        if !version.is_empty() && version != model.version() {
            return Err(ApiError::Precondition(format!(
                "model {} is at version {}, request asked for {version}",
                model.id(),
                model.version()
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
                .is_ok_and(|m| req.version.is_empty() || req.version == m.version());
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
            // Of Triton's optional extensions, the model configuration, the statistics and the
            // repository index (not load/unload, shared memory, tracing or logging).
            extensions: EXTENSIONS.iter().map(|e| (*e).to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let model = self.model(&ctx, &req.name, &req.version)?;
        let tensor = |name: &str, datatype: &str, width: usize| {
            pb::model_metadata_response::TensorMetadata {
                name: name.to_string(),
                datatype: datatype.into(),
                shape: vec![-1, width as i64],
            }
        };
        // A text model takes one BYTES element (a UTF-8 text) per row.
        let input = match model.mlp_config() {
            Some(c) => tensor(c.input_tensor_name(), "FP32", c.feature_count()),
            None => tensor(model.input_tensor_name(), "BYTES", 1),
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.id().to_string(),
            versions: vec![model.version().to_string()],
            platform: PLATFORM.into(),
            inputs: vec![input],
            outputs: vec![tensor(
                model.output_tensor_name(),
                "FP32",
                model.output_width(),
            )],
        }))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let model = self.model(&ctx, &req.name, &req.version)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(model_config(&model, self.pipeline.max_rows())),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let models = if req.name.is_empty() {
            self.pipeline.ensure_ready()?;
            self.pipeline.caller(&ctx, Scope::Predict)?;
            if !req.version.is_empty() {
                return Err(ApiError::BadRequest(
                    "a version without a model name: name the model".into(),
                )
                .into());
            }
            self.pipeline.registry().list()
        } else {
            vec![self.model(&ctx, &req.name, &req.version)?]
        };
        let model_stats = models
            .iter()
            .map(|m| statistics(m.id(), triton_version(m.version()), &m.stats().snapshot()))
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        self.pipeline.caller(&ctx, Scope::Predict)?;
        if !req.repository_name.is_empty() {
            // One repository, the server's own, which has no name.
            return Err(ApiError::NotFound(format!(
                "no model repository named {:?}: this server has one, unnamed",
                req.repository_name
            ))
            .into());
        }
        let ready = self.pipeline.is_ready();
        if req.ready && !ready {
            return Ok(Response::new(pb::RepositoryIndexResponse {
                models: Vec::new(),
            }));
        }
        let models = self
            .pipeline
            .registry()
            .list()
            .iter()
            .map(|m| pb::repository_index_response::ModelIndex {
                name: m.id().to_string(),
                version: m.version().to_string(),
                state: if ready {
                    STATE_READY
                } else {
                    STATE_UNAVAILABLE
                }
                .into(),
                reason: if ready {
                    String::new()
                } else {
                    "the server is not ready: models are still loading".into()
                },
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
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
        let input = match decode_request(&model, &req) {
            Ok(input) => input,
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
        let mut call = PredictCall {
            model: req.model_name,
            version: req.model_version,
            api: crate::pipeline::Api::ModelInfer,
            ..PredictCall::default()
        };
        match input {
            Decoded::Rows(rows) => {
                call.shape = rows.shape;
                call.values = rows.values;
            }
            Decoded::Texts(texts) => call.texts = texts,
        }
        let mut out = self.pipeline.predict(&ctx, call).await?;
        let signed = out.signed_receipt.take();
        let mut output = pb::model_infer_response::InferOutputTensor {
            name: out.model.output_tensor_name().to_string(),
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
        let response = Response::new(pb::ModelInferResponse {
            model_name: out.model.id().to_string(),
            model_version: out.model.version().to_string(),
            id: req.id,
            parameters,
            outputs: vec![output],
            raw_output_contents,
        });
        Ok(crate::server::inference::with_receipt(response, signed))
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

/// The model's configuration as Triton describes one: batched (`max_batch_size` is the most
/// rows a request may carry, so dims leave out the batch dimension), FP32 in and out, one
/// instance on the model's device, the dynamic batcher with its queue delay.
fn model_config(model: &LoadedModel, max_rows: usize) -> pb::ModelConfig {
    use pb::model_instance_group::Kind;
    let device = model.device_location();
    let (kind, gpus) = match device {
        candle_core::DeviceLocation::Cuda { gpu_id } => {
            (Kind::Gpu, vec![i32::try_from(gpu_id).unwrap_or(i32::MAX)])
        }
        _ => (Kind::Cpu, Vec::new()),
    };
    // Under a label-only policy the response carries no scores: zero values per row.
    let released = if model.privacy().releases_scores() {
        model.output_width()
    } else {
        0
    };
    // A text model takes one string per row (TYPE_STRING is the BYTES datatype).
    let (input_type, input_dims) = match model.mlp_config() {
        Some(c) => (pb::DataType::TypeFp32, c.feature_count() as i64),
        None => (pb::DataType::TypeString, 1),
    };
    pb::ModelConfig {
        name: model.id().to_string(),
        platform: PLATFORM.into(),
        backend: BACKEND.into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::Latest(
                pb::model_version_policy::Latest { num_versions: 1 },
            )),
        }),
        max_batch_size: i32::try_from(max_rows).unwrap_or(i32::MAX),
        input: vec![pb::ModelInput {
            name: model.input_tensor_name().to_string(),
            data_type: input_type.into(),
            dims: vec![input_dims],
            ..Default::default()
        }],
        output: vec![pb::ModelOutput {
            name: model.output_tensor_name().to_string(),
            data_type: pb::DataType::TypeFp32.into(),
            dims: vec![released as i64],
        }],
        scheduling_choice: Some(pb::model_config::SchedulingChoice::DynamicBatching(
            pb::ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: model.batch_config().max_wait_us,
                preserve_ordering: false,
            },
        )),
        instance_group: vec![pb::ModelInstanceGroup {
            name: format!("{}_0", model.id()),
            kind: kind.into(),
            count: 1,
            gpus,
        }],
        model_transaction_policy: Some(pb::ModelTransactionPolicy { decoupled: false }),
    }
}

/// A version as Triton numbers versions: Triton's are decimal integers, and its clients parse
/// the `version` of a statistics entry as one (perf_analyzer looks its model up under
/// `to_string(stoll(version))`, so "1.0.0" would never be found). A semantic version is
/// reported by its major number ("1.0.0" → "1"); a registry holds one version of a model
/// at a time, so the number names it as well as the full version does. A version that does
/// not start with a canonical decimal number is reported as it is.
pub fn triton_version(version: &str) -> &str {
    let end = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    let (number, rest) = version.split_at(end);
    let canonical = !number.is_empty()
        && (number == "0" || !number.starts_with('0'))
        && number.parse::<i64>().is_ok();
    if canonical && (rest.is_empty() || rest.starts_with('.')) {
        number
    } else {
        version
    }
}

fn duration(d: StatDuration) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// One version's statistics on the wire.
fn statistics(name: &str, version: &str, s: &StatsSnapshot) -> pb::ModelStatistics {
    pb::ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(s.compute_input),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(s.compute_output),
            // No response cache.
            cache_hit: duration(StatDuration::default()),
            cache_miss: duration(StatDuration::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|b| pb::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: duration(b.compute_input),
                compute_infer: duration(b.compute_infer),
                compute_output: duration(b.compute_output),
            })
            .collect(),
    }
}

/// A request's one input, decoded for the model's kind.
enum Decoded {
    /// Numeric rows (an MLP).
    Rows(tensor::Rows),
    /// Texts as sent (a text model); the pipeline checks their size and UTF-8.
    Texts(Vec<Vec<u8>>),
}

/// Checks the request's tensors against the model's names and decodes its one input.
fn decode_request(
    model: &LoadedModel,
    req: &pb::ModelInferRequest,
) -> Result<Decoded, TensorError> {
    check_fields(req)?;
    let expected = model.input_tensor_name();
    for out in &req.outputs {
        if out.name != model.output_tensor_name() {
            return Err(TensorError::UnknownOutput {
                model: model.id().to_string(),
                name: out.name.clone(),
                expected: model.output_tensor_name().to_string(),
            });
        }
    }
    let [input] = req.inputs.as_slice() else {
        return Err(TensorError::InputCount {
            model: model.id().to_string(),
            expected: expected.to_string(),
            found: req.inputs.len(),
        });
    };
    if input.name != expected {
        return Err(TensorError::UnknownInput {
            model: model.id().to_string(),
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
    let tensor = InputTensor {
        name: &input.name,
        datatype: &input.datatype,
        shape: &input.shape,
        contents: input.contents.as_ref(),
        raw,
    };
    if model.encoder().is_some() {
        tensor::decode_bytes(&tensor).map(Decoded::Texts)
    } else {
        tensor::decode(&tensor).map(Decoded::Rows)
    }
}
