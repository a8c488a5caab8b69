//! The admin API: store a resource, set its release policy. Both take
//! `Authorization: Bearer <admin key>`, compared in constant time with the key's digest.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, Uri, header};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::Shared;
use super::http::{json_response, read_body, refuse, resource_path};
use crate::keys::error::BrokerError;
use crate::keys::store::MAX_RESOURCE_BYTES;

fn check_admin(state: &Shared, headers: &HeaderMap) -> Result<(), BrokerError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(BrokerError::AdminUnauthenticated)?;
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    if bool::from(digest.ct_eq(&state.admin_key_sha256)) {
        Ok(())
    } else {
        Err(BrokerError::AdminForbidden)
    }
}

pub(super) async fn put_resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource/")?;
        let bytes = Zeroizing::new(
            read_body(
                &headers,
                body,
                MAX_RESOURCE_BYTES.min(state.config.max_body_bytes),
            )
            .await?,
        );
        if bytes.is_empty() {
            return Err(BrokerError::BadRequest("the resource is empty".into()));
        }
        state.store.put(path, &bytes)?;
        tracing::info!(path, bytes = bytes.len(), "broker: admin stored a resource");
        Ok(json_response(StatusCode::OK, Vec::new()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin resource", None, &e))
}

pub(super) async fn put_policy(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource-policy/")?;
        let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| BrokerError::BadRequest("the policy is not UTF-8 text".into()))?;
        let release = state.store.set_policy(path, &text)?;
        tracing::info!(
            path,
            allow_simulated = release.policy.dangerous_allow_simulated,
            measurements = release.policy.measurements.len(),
            "broker: admin set a release policy"
        );
        Ok(json_response(StatusCode::OK, Vec::new()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin policy", None, &e))
}
