//! The server under test: connections, model discovery and the request each worker sends.

use std::sync::Arc;

use rand_core::{RngCore, SeedableRng};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::error::BenchError;
use crate::proto::confidant::v1 as cpb;
use crate::proto::inference as ipb;
use cpb::inference_client::InferenceClient;
use ipb::grpc_inference_service_client::GrpcInferenceServiceClient;

/// The wire protocol to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `inference.GRPCInferenceService/ModelInfer`, raw FP32 inputs (as tritonclient sends).
    Oip,
    /// `confidant.v1.Inference/Predict`.
    Confidant,
}

impl Protocol {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oip => "oip",
            Self::Confidant => "confidant",
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port` (TLS) or `http://host:port` (plaintext, for peers without TLS).
    pub addr: String,
    /// PEM CA or server certificate, for `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// A client attestation policy: each connection is attested (and its TLS key bound to
    /// the evidence) instead of checked against a CA.
    pub policy: Option<std::sync::Arc<crate::client::attested::ChannelPolicy>>,
    /// Sent as `x-api-key`.
    pub api_key: Option<String>,
    /// Sent as `x-purpose`.
    pub purpose: Option<String>,
    /// The protocol.
    pub protocol: Protocol,
    /// The model id.
    pub model: String,
    /// Feature range used when the server does not publish one (OIP peers).
    pub fallback_range: (f32, f32),
    /// Ask for a receipt with every answer, and count one without as an error.
    pub receipts: bool,
}

/// What the benchmark learned about the model.
#[derive(Debug, Clone)]
pub struct ModelShape {
    /// The input tensor name (OIP).
    pub input_name: String,
    /// Whether the model takes texts (a text model: `kind` "bert" in `ListModels`, a BYTES
    /// input in `ModelMetadata`) rather than numeric rows.
    pub takes_texts: bool,
    /// Per-feature minimum.
    pub min: Vec<f32>,
    /// Per-feature maximum.
    pub max: Vec<f32>,
    /// Where the ranges came from.
    pub ranges_from: &'static str,
}

impl ModelShape {
    /// Input features per row.
    pub fn features(&self) -> usize {
        self.min.len()
    }
}

/// Opens one HTTP/2 connection.
pub async fn connect(target: &Target) -> Result<Channel, BenchError> {
    let addr = &target.addr;
    let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| BenchError::Address {
        addr: addr.clone(),
        problem: e.to_string(),
    })?;
    if let (Some("https"), Some(policy)) = (endpoint.uri().scheme_str(), &target.policy) {
        return crate::client::attested::connect_attested_channel(addr, policy)
            .await
            .map(|(channel, _)| channel)
            .map_err(|e| BenchError::Config(format!("{addr}: {e}")));
    }
    let endpoint = match endpoint.uri().scheme_str() {
        Some("https") => {
            let ca = target
                .ca_pem
                .as_deref()
                .ok_or_else(|| BenchError::Config("an https:// address needs --tls-ca".into()))?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            endpoint
                .tls_config(tls)
                .map_err(|source| BenchError::Connect {
                    addr: addr.clone(),
                    source,
                })?
        }
        Some("http") => endpoint,
        _ => {
            return Err(BenchError::Address {
                addr: addr.clone(),
                problem: "the scheme must be https:// or http://".into(),
            });
        }
    };
    endpoint
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.clone(),
            source,
        })
}

/// Request metadata shared by every call.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    api_key: Option<MetadataValue<Ascii>>,
    purpose: Option<MetadataValue<Ascii>>,
    /// `x-confidant-receipt`: the run's salt, hex.
    receipt: Option<MetadataValue<Ascii>>,
}

impl Headers {
    /// The headers of `target`.
    pub fn of(target: &Target) -> Result<Self, BenchError> {
        let value = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    s.parse::<MetadataValue<Ascii>>().map_err(|_| {
                        BenchError::Config(format!("{what} has characters not allowed in a header"))
                    })
                })
                .transpose()
        };
        let receipt = match target.receipts {
            true => {
                let salt = crate::receipt::new_salt()
                    .map_err(|e| BenchError::Config(format!("a receipt salt: {e}")))?;
                value("the receipt salt", &Some(hex::encode(salt)))?
            }
            false => None,
        };
        Ok(Self {
            api_key: value("the API key", &target.api_key)?,
            purpose: value("the purpose", &target.purpose)?,
            receipt,
        })
    }

    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(k) = &self.api_key {
            r.metadata_mut().insert("x-api-key", k.clone());
        }
        if let Some(p) = &self.purpose {
            r.metadata_mut().insert("x-purpose", p.clone());
        }
        if let Some(s) = &self.receipt {
            r.metadata_mut()
                .insert(crate::receipt::SALT_HEADER, s.clone());
        }
        r
    }
}

/// Finds the model's width and feature ranges: from `ListModels` (confidant.v1, which
/// Confidant also serves beside OIP), else from `ModelMetadata` and the fallback range.
pub async fn discover(
    target: &Target,
    channel: Channel,
    headers: &Headers,
) -> Result<ModelShape, BenchError> {
    let model_err = |problem: String| BenchError::Model {
        model: target.model.clone(),
        problem,
    };
    let mut input_name = crate::engine::config::DEFAULT_INPUT_TENSOR.to_string();
    let mut width = None;
    let mut bytes_input = false;
    if target.protocol == Protocol::Oip {
        let md = GrpcInferenceServiceClient::new(channel.clone())
            .model_metadata(headers.request(ipb::ModelMetadataRequest {
                name: target.model.clone(),
                version: String::new(),
            }))
            .await
            .map_err(|s| model_err(format!("ModelMetadata: {}", status_text(&s))))?
            .into_inner();
        let [input] = md.inputs.as_slice() else {
            return Err(model_err(format!(
                "ModelMetadata lists {} inputs; the benchmark drives single-input models",
                md.inputs.len()
            )));
        };
        // A text model's input: one BYTES element (a UTF-8 text) per row, `[-1, 1]` or `[-1]`.
        if input.datatype == "BYTES" {
            if !matches!(input.shape.as_slice(), [_] | [_, 1]) {
                return Err(model_err(format!(
                    "BYTES input {:?} has shape {:?}; the benchmark sends texts as [batch, 1]",
                    input.name, input.shape
                )));
            }
            bytes_input = true;
        }
        let features = match *input.shape.as_slice() {
            [_, features] => features,
            [_] if bytes_input => 1,
            _ => {
                return Err(model_err(format!(
                    "input shape {:?} is not [rows, features]",
                    input.shape
                )));
            }
        };
        input_name.clone_from(&input.name);
        width = Some(
            usize::try_from(features).map_err(|_| model_err(format!("input width {features}")))?,
        );
    }
    let listed = InferenceClient::new(channel)
        .list_models(headers.request(cpb::ListModelsRequest {}))
        .await;
    match listed {
        Ok(list) => {
            let m = list
                .into_inner()
                .models
                .into_iter()
                .find(|m| m.id == target.model)
                .ok_or_else(|| model_err("not in ListModels".into()))?;
            let takes_texts = match m.kind.as_str() {
                // Servers from before text models leave `kind` empty.
                "" | "mlp" => false,
                "bert" => true,
                other => {
                    return Err(model_err(format!(
                        "ListModels says kind {other:?}; the benchmark drives \"mlp\" and \"bert\""
                    )));
                }
            };
            if target.protocol == Protocol::Oip && takes_texts != bytes_input {
                return Err(model_err(format!(
                    "ListModels says kind {:?} but ModelMetadata's input is {}",
                    m.kind,
                    if bytes_input { "BYTES" } else { "numeric" }
                )));
            }
            Ok(ModelShape {
                input_name,
                takes_texts,
                min: m.feature_min,
                max: m.feature_max,
                ranges_from: "ListModels",
            })
        }
        Err(s) if s.code() == tonic::Code::Unimplemented && width.is_some() => {
            let n = width.unwrap_or_default();
            let (lo, hi) = target.fallback_range;
            Ok(ModelShape {
                input_name,
                takes_texts: bytes_input,
                min: vec![lo; n],
                max: vec![hi; n],
                ranges_from: "--input-range",
            })
        }
        Err(s) => Err(model_err(format!("ListModels: {}", status_text(&s)))),
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{}: {}", crate::client::code_name(s.code()), s.message())
}

/// A fixed pool of requests with random rows in the feature ranges, cycled through by the
/// workers so that no randomness runs on the hot path.
#[derive(Clone)]
pub enum Requests {
    /// confidant.v1 requests.
    Confidant(Arc<Vec<cpb::PredictRequest>>),
    /// OIP requests.
    Oip(Arc<Vec<ipb::ModelInferRequest>>),
}

/// Requests in the pool.
pub const POOL: usize = 32;

impl Requests {
    /// `POOL` requests of `batch` rows each, drawn with a ChaCha20 stream seeded by `seed`.
    pub fn generate(target: &Target, shape: &ModelShape, batch: usize, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let mut rows = || -> Vec<f32> {
            let mut v = Vec::with_capacity(batch * shape.features());
            for _ in 0..batch {
                for (lo, hi) in shape.min.iter().zip(&shape.max) {
                    // 24 random bits: every value in [0, 1) that f32 spaces evenly.
                    let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                    v.push((lo + (hi - lo) * u).clamp(*lo, *hi));
                }
            }
            v
        };
        match target.protocol {
            Protocol::Confidant => Self::Confidant(Arc::new(
                (0..POOL)
                    .map(|_| cpb::PredictRequest {
                        model: target.model.clone(),
                        version: String::new(),
                        input: Some(cpb::Tensor {
                            shape: vec![batch as u64, shape.features() as u64],
                            values: rows(),
                        }),
                        texts: Vec::new(),
                    })
                    .collect(),
            )),
            Protocol::Oip => Self::Oip(Arc::new(
                (0..POOL)
                    .map(|_| ipb::ModelInferRequest {
                        model_name: target.model.clone(),
                        inputs: vec![ipb::model_infer_request::InferInputTensor {
                            name: shape.input_name.clone(),
                            datatype: "FP32".into(),
                            shape: vec![batch as i64, shape.features() as i64],
                            ..Default::default()
                        }],
                        raw_input_contents: vec![crate::oip::tensor::encode_raw(&rows())],
                        ..Default::default()
                    })
                    .collect(),
            )),
        }
    }

    /// The requests of a text model: `batch` texts each, taken in turn from `texts` (wrapping
    /// around). The pool holds `lcm(texts, batch) / batch` requests, so that cycling through
    /// it sends every text equally often (a batch padded to its longest text costs more, so a
    /// skewed mix would skew the figures); where that would exceed [`MAX_TEXT_SLOTS`] texts in
    /// all, as many requests as it takes to send every text once. Over
    /// confidant.v1 they are `PredictRequest.texts`; over OIP one BYTES tensor of shape
    /// `[batch, 1]` in Triton's raw encoding (each element a 4-byte little-endian length and
    /// its bytes), as tritonclient and perf_analyzer send it.
    pub fn of_texts(
        target: &Target,
        shape: &ModelShape,
        batch: usize,
        texts: &[String],
    ) -> Result<Self, BenchError> {
        if texts.is_empty() || batch == 0 {
            return Err(BenchError::Config(format!(
                "{} texts at {batch} per request: nothing to send",
                texts.len()
            )));
        }
        let n = texts.len();
        let equal = n / gcd(n, batch);
        let count = if equal.saturating_mul(batch) <= MAX_TEXT_SLOTS {
            equal
        } else {
            n.div_ceil(batch)
        };
        let mut next = texts.iter().cycle();
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            groups.push(next.by_ref().take(batch).cloned().collect::<Vec<String>>());
        }
        Ok(match target.protocol {
            Protocol::Confidant => Self::Confidant(Arc::new(
                groups
                    .into_iter()
                    .map(|texts| cpb::PredictRequest {
                        model: target.model.clone(),
                        texts,
                        ..Default::default()
                    })
                    .collect(),
            )),
            Protocol::Oip => {
                let mut pool = Vec::with_capacity(count);
                for group in groups {
                    pool.push(ipb::ModelInferRequest {
                        model_name: target.model.clone(),
                        inputs: vec![ipb::model_infer_request::InferInputTensor {
                            name: shape.input_name.clone(),
                            datatype: "BYTES".into(),
                            shape: vec![batch as i64, 1],
                            ..Default::default()
                        }],
                        raw_input_contents: vec![encode_bytes(&group)?],
                        ..Default::default()
                    });
                }
                Self::Oip(Arc::new(pool))
            }
        })
    }
}

/// Most texts (with repeats) the request pool of a text model holds when every text is to
/// be sent equally often.
pub const MAX_TEXT_SLOTS: usize = 1 << 16;

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Triton's raw encoding of a BYTES tensor: each element a 4-byte little-endian length and
/// its bytes, back to back.
pub fn encode_bytes(texts: &[String]) -> Result<Vec<u8>, BenchError> {
    let mut raw = Vec::with_capacity(texts.iter().map(|t| 4 + t.len()).sum());
    for t in texts {
        let len = u32::try_from(t.len()).map_err(|_| {
            BenchError::Config(format!(
                "a text of {} bytes does not fit a BYTES element (at most 4 GiB)",
                t.len()
            ))
        })?;
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(t.as_bytes());
    }
    Ok(raw)
}

/// One worker's client.
pub enum Caller {
    /// confidant.v1.
    Confidant(InferenceClient<Channel>),
    /// OIP.
    Oip(GrpcInferenceServiceClient<Channel>),
}

impl Caller {
    /// A client of the pool's protocol on `channel`.
    pub fn new(requests: &Requests, channel: Channel) -> Self {
        match requests {
            Requests::Confidant(_) => {
                Self::Confidant(InferenceClient::new(channel).max_decoding_message_size(1 << 30))
            }
            Requests::Oip(_) => Self::Oip(
                GrpcInferenceServiceClient::new(channel).max_decoding_message_size(1 << 30),
            ),
        }
    }

    /// Sends request `i` of the pool (modulo its size).
    pub async fn call(
        &mut self,
        requests: &Requests,
        headers: &Headers,
        i: usize,
    ) -> Result<(), tonic::Status> {
        match (self, requests) {
            (Self::Confidant(c), Requests::Confidant(pool)) => {
                let Some(r) = pool.get(i % pool.len().max(1)) else {
                    return Err(tonic::Status::internal("empty request pool"));
                };
                let answer = c.predict(headers.request(r.clone())).await?;
                receipt_check(headers, !answer.get_ref().receipt.is_empty())
            }
            (Self::Oip(c), Requests::Oip(pool)) => {
                let Some(r) = pool.get(i % pool.len().max(1)) else {
                    return Err(tonic::Status::internal("empty request pool"));
                };
                let answer = c.model_infer(headers.request(r.clone())).await?;
                receipt_check(
                    headers,
                    answer
                        .get_ref()
                        .parameters
                        .contains_key(crate::oip::service::RECEIPT_PARAMETER),
                )
            }
            _ => Err(tonic::Status::internal("client and request pool disagree")),
        }
    }
}

/// With `--receipts`, an answer without a receipt is an error (the server did not do the
/// work being measured).
pub(super) fn receipt_check(headers: &Headers, carried: bool) -> Result<(), tonic::Status> {
    if headers.receipt.is_some() && !carried {
        return Err(tonic::Status::internal(
            "the answer carries no receipt (asked for with --receipts)",
        ));
    }
    Ok(())
}
