//! The OpenAI-compatible embeddings door: `POST /v1/embeddings` and `GET /v1/models` over
//! HTTPS (HTTP/1.1, hyper via axum), on the server's TLS identity and its own port.
//!
//! A request becomes the same [`PredictCall`] that `confidant.v1` and the Open Inference
//! Protocol make, so it runs exactly the same guards, audit record and metrics
//! ([`Pipeline::predict`]): the API key comes as `Authorization: Bearer <api key>` (or
//! `x-api-key`), the purpose as `x-purpose`, a data subject as `x-subject-id`. Refusals are
//! OpenAI error bodies (`{"error": {"message", "type", "param", "code"}}`) with the HTTP
//! status that matches the gRPC code. The stock `openai` Python client works unchanged
//! (its default `encoding_format` is `base64`: little-endian f32, as OpenAI sends it).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::guard::Scope;
use crate::pipeline::{CallContext, Pipeline, PredictCall};

#[cfg(test)]
mod tests;

/// Why the HTTPS door could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The TLS identity does not load into rustls.
    #[error("embeddings API TLS identity: {0}")]
    Tls(String),
}

/// The request body of `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    /// OpenAI's end-user id: accepted and ignored (never logged or stored).
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<serde::de::IgnoredAny>,
}

/// `input`: one text, or a list of texts. (Token arrays are refused: the model tokenizes.)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(serde::de::IgnoredAny),
}

/// The rustls server config of the door: the server's certificate and key, HTTP/1.1.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, OpenAiError> {
    crate::tls::server_config(cert_pem, key_pem, None, b"http/1.1")
        .map_err(|e| OpenAiError::Tls(e.to_string()))
}

/// The routes, over the shared pipeline. `max_body_bytes` bounds a request body.
pub fn router(pipeline: Pipeline, max_body_bytes: usize) -> axum::Router {
    axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .route("/v1/models", axum::routing::get(models))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "no such endpoint: this server serves POST /v1/embeddings and GET /v1/models",
                None,
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(pipeline)
}

/// Serves `router` over TLS on `listener` until `stop` fires; its connections count in
/// `open`.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: axum::Router,
    stop: tokio::sync::oneshot::Receiver<()>,
    open: crate::tls::OpenConnections,
) {
    crate::tls::serve_https(
        listener,
        Arc::new(tls),
        router,
        stop,
        "embeddings API",
        open,
    )
    .await;
}

/// The caller's context from the HTTP headers (API key, purpose, subject).
fn context(headers: HeaderMap) -> CallContext {
    CallContext {
        metadata: tonic::metadata::MetadataMap::from_headers(headers),
        peer_certs: None,
    }
}

async fn embeddings(
    State(pipeline): State<Pipeline>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let ctx = context(headers);
    let request: EmbeddingsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(&format!("the body is not an embeddings request: {e}"), None);
        }
    };
    let texts = match request.input {
        Input::One(t) => vec![t.into_bytes()],
        Input::Many(ts) => ts.into_iter().map(String::into_bytes).collect(),
        Input::Tokens(_) => {
            return invalid(
                "input must be a string or a list of strings (token arrays are not accepted: \
                 the model tokenizes inside the TEE)",
                Some("input"),
            );
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return invalid(
                "encoding_format must be \"float\" or \"base64\"",
                Some("encoding_format"),
            );
        }
    };
    // OpenAI's `dimensions` shortens Matryoshka embeddings; these models have one width.
    // Checked before anything is spent, and only for a caller that may use the model (a
    // stranger learns nothing about it).
    if let (Some(d), Ok(m)) = (request.dimensions, pipeline.registry().get(&request.model))
        && d != m.output_width() as u64
        && pipeline.caller(&ctx, Scope::Predict).is_ok()
    {
        return invalid(
            &format!(
                "model {} gives {}-dimensional embeddings; dimensions {d} is not available",
                m.id(),
                m.output_width()
            ),
            Some("dimensions"),
        );
    }
    let call = PredictCall {
        model: request.model,
        texts,
        embeddings_only: true,
        api: crate::pipeline::Api::Embeddings,
        ..PredictCall::default()
    };
    let mut out = match pipeline.predict(&ctx, call).await {
        Ok(out) => out,
        Err(status) => return status_response(&status),
    };
    if out.model.has_classes() {
        // The pipeline refuses classifiers for `embeddings_only` calls before spending.
        return status_response(&Status::internal("internal error; see server logs"));
    }
    let width = out.width.max(1);
    let data: Vec<serde_json::Value> = out
        .values
        .chunks(width)
        .enumerate()
        .map(|(index, row)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(row)
            };
            serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut response = json_response(
        StatusCode::OK,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "model": out.model.id(),
            "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
        }),
    );
    // The receipt (base64) and any salt the server drew (hex), as headers.
    if let Some(r) = out.signed_receipt.take() {
        let h = response.headers_mut();
        if let Ok(v) =
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(&r.cose))
        {
            h.insert(crate::receipt::RECEIPT_HEADER, v);
        }
        if let Some(salt) = r.drawn_salt
            && let Ok(v) = HeaderValue::from_str(&hex::encode(salt))
        {
            h.insert(crate::receipt::SALT_RESPONSE_HEADER, v);
        }
    }
    response
}

async fn models(State(pipeline): State<Pipeline>, headers: HeaderMap) -> Response<Body> {
    let ctx = context(headers);
    if let Err(e) = pipeline
        .ensure_ready()
        .and_then(|()| pipeline.caller(&ctx, Scope::Predict).map(drop))
    {
        return status_response(&Status::from(e));
    }
    let data: Vec<serde_json::Value> = pipeline
        .registry()
        .list()
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id(),
                "object": "model",
                "created": 0,
                "owned_by": m.provenance().publisher_key_id,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    )
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {
            "message": message, "type": kind, "param": param, "code": serde_json::Value::Null,
        }}),
    )
}

fn invalid(message: &str, param: Option<&str>) -> Response<Body> {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
    )
}

/// The HTTP status and OpenAI error type of a gRPC status code.
pub fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument | Code::OutOfRange => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_error"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::AlreadyExists
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    }
}

/// A refusal as an OpenAI error; a rate limit carries `Retry-After` (whole seconds, from
/// the status's `retry-after-ms`).
fn status_response(status: &Status) -> Response<Body> {
    let (http, kind) = http_status(status.code());
    let mut r = error_response(http, kind, status.message(), None);
    if let Some(ms) = status
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    r
}
