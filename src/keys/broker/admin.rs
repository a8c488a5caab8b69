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

pub(super) fn check_admin(state: &Shared, headers: &HeaderMap) -> Result<(), BrokerError> {
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

/// `DELETE /kbs/v0/resource/<path>` (Trustee's `kbs-client config delete-resource`): removes
/// the resource; its release policy stays, as Trustee keeps its resource policy. 404 when
/// there is nothing at the path (the admin is authenticated: no session to hide it from).
pub(super) async fn delete_resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource/")?;
        if !state.store.delete(path)? {
            return Err(BrokerError::NotFound(path.to_owned()));
        }
        tracing::info!(path, "broker: admin deleted a resource");
        Ok(json_response(StatusCode::OK, Vec::new()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin delete", None, &e))
}

/// `POST /kbs/v0/resource-policy` without a path: Trustee's one Rego resource policy
/// (`kbs-client config set-resource-policy`, body `{"policy": "<base64url Rego>"}`). This
/// broker evaluates no Rego: each resource has its own release policy, in the attestation
/// crate's TOML. The admin is checked first (401/403 as for every admin call), then the
/// request is refused with 400 saying where the policy goes instead.
pub(super) async fn trustee_resource_policy(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response<Body> {
    let refusal = check_admin(&state, &headers).err().unwrap_or_else(|| {
        BrokerError::BadRequest(
            "this broker does not evaluate Trustee's Rego resource policy: each resource has \
             its own release policy, in the attestation crate's TOML (measurements, TCB floor, \
             allow_debug, allow_simulated); set it with POST \
             /kbs/v0/resource-policy/<repository>/<type>/<tag> and the TOML as the body \
             (`confidant broker set-policy`)"
                .into(),
        )
    });
    refuse("admin policy", None, &refusal)
}

/// Stores 32 random bytes made here (a deployment's state key, `put-resource --generate`):
/// the key exists only in the broker and in attested servers. Never replaces a resource:
/// a new state key would make the deployment's state unreadable.
pub(super) async fn generate_resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource-generate/")?;
        if state.store.contains(path)? {
            return Err(BrokerError::Conflict(format!(
                "{path} exists; a generated key never replaces a resource (a new state key \
                 would make the deployment's state unreadable)"
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| BrokerError::Internal(format!("random generator: {e}")))?;
        state.store.put(path, bytes.as_ref())?;
        tracing::info!(path, bytes = 32, "broker: admin had a resource generated");
        Ok(json_response(
            StatusCode::OK,
            serde_json::json!({"generated": path, "bytes": 32})
                .to_string()
                .into_bytes(),
        ))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin generate", None, &e))
}
