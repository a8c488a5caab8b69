//! The broker's HTTP helpers: responses, refusals, bodies, cookies and resource paths.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use confidant_attestation::{Timestamp, Verdict};

use crate::keys::error::BrokerError;
use crate::keys::protocol::{ERROR_TYPE_PREFIX, ErrorBody, SESSION_COOKIE};

/// The error as a KBS error body, with `Retry-After` when the caller is over a limit.
pub(super) fn error_response(e: &BrokerError) -> Response<Body> {
    let body = ErrorBody {
        kind: format!("{ERROR_TYPE_PREFIX}{}", e.kind()),
        detail: e.public_detail(),
    };
    let mut response = json_response(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    if let BrokerError::TooManyRequests { retry_after, .. } = e {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Logs a refusal with its reason and turns it into the error response. A caller over its
/// limits is logged at debug level only, so that a flood does not flood the log.
pub(super) fn refuse(step: &str, session: Option<&str>, e: &BrokerError) -> Response<Body> {
    match e {
        BrokerError::Internal(detail) => {
            tracing::error!(
                step,
                session = session.map(session_tag),
                reason = %detail,
                "broker: internal error"
            )
        }
        BrokerError::TooManyRequests { what, .. } => tracing::debug!(
            step,
            reason = %what,
            "broker: refused a caller over its limits"
        ),
        other => tracing::warn!(
            step,
            session = session.map(session_tag),
            status = other.status(),
            reason = %other,
            "broker: refused"
        ),
    }
    error_response(e)
}

/// How much of an over-size body the broker reads and discards before it answers 413, so
/// that a client still uploading sees the answer rather than a reset connection. A body
/// declared larger than this is refused from its headers and the connection closed.
pub(super) const MAX_DRAIN_BYTES: u64 = 1 << 20;

/// Reads and discards up to `max` more bytes of `body` (bounded in time too).
async fn drain(body: Body, max: u64) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > max {
                    return;
                }
            }
        }
    })
    .await;
}

pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, BrokerError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        if len <= MAX_DRAIN_BYTES {
            drain(body, len).await;
        }
        return Err(BrokerError::TooLarge { limit });
    }
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut out = Vec::new();
    loop {
        match body.frame().await {
            None => return Ok(out),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if out.len() + data.len() > limit {
                        // A chunked body past the limit: discard a bounded rest, then answer.
                        drain(body, MAX_DRAIN_BYTES).await;
                        return Err(BrokerError::TooLarge { limit });
                    }
                    out.extend_from_slice(data);
                }
            }
            Some(Err(e)) => {
                return Err(BrokerError::BadRequest(format!(
                    "reading the request body: {e}"
                )));
            }
        }
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, BrokerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| BrokerError::BadRequest(format!("{what}: malformed JSON: {e}")))
}

pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .map(str::to_owned)
}

/// The first 8 hex digits of a session id: enough to follow a session through the log,
/// not enough to present its cookie.
pub(super) fn session_tag(id: &str) -> &str {
    id.get(..8).unwrap_or("-")
}

pub(super) fn now_timestamp() -> Timestamp {
    Timestamp::from_unix_seconds(crate::unix_now().max(0) as u64)
}

pub(super) fn failures(verdict: &Verdict) -> String {
    verdict
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.check, f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a KBS resource path: `repository/type/tag`.
pub(super) fn check_path(path: &str) -> Result<(), BrokerError> {
    crate::sealed::manifest::validate_resource_path(path)
        .map_err(|e| BrokerError::BadRequest(e.to_string()))
}

pub(super) fn resource_path<'a>(uri: &'a Uri, prefix: &str) -> Result<&'a str, BrokerError> {
    let path = uri
        .path()
        .strip_prefix(prefix)
        .ok_or_else(|| BrokerError::BadRequest("resource path".into()))?;
    check_path(path)?;
    Ok(path)
}

/// Sets the session cookie, valid for `ttl`.
pub(super) fn set_cookie(
    response: &mut Response<Body>,
    id: &str,
    ttl: Duration,
) -> Result<(), BrokerError> {
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/kbs/v0; Max-Age={}; Secure; HttpOnly",
        ttl.as_secs()
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| BrokerError::Internal(e.to_string()))?,
    );
    Ok(())
}
