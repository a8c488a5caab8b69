//! The TEE-facing handlers of RCAR: `auth`, `attest` and `GET resource`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use confidant_attestation::policy::TDX_STATUSES;
use confidant_attestation::{
    Appraised, Evidence, Policy, TeeKind, Timestamp, Verdict, verify_and_keep,
};
use ring::rand::SecureRandom as _;
use ring::signature::KeyPair as _;
use subtle::ConstantTimeEq as _;

use super::http::{
    failures, json_response, now_timestamp, parse_json, read_body, refuse, resource_path,
    session_id, session_tag, set_cookie,
};
use super::sessions::{Attested, NoChallenge, Peer};
use super::{BrokerConfig, MAX_AUTH_BODY_BYTES, MAX_CERT_ENTRIES, Shared};
use crate::keys::collateral::for_evidence;
use crate::keys::error::BrokerError;
use crate::keys::jwe;
use crate::keys::protocol::{
    AttestRequest, AttestResponse, AuthRequest, Challenge, GpuEvidenceSet, PROTOCOL_VERSION,
    SESSION_COOKIE, report_data, runtime_data_digest,
};
use confidant_attestation::nvidia::judge_gpus;

pub(super) async fn auth(
    State(state): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    match auth_inner(&state, Peer::of(addr.ip()), &headers, body).await {
        Ok(r) => r,
        Err(e) => refuse("auth", None, &e),
    }
}

async fn auth_inner(
    state: &Shared,
    peer: Peer,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, BrokerError> {
    // The rate comes first: a caller over it costs no more than this answer.
    state.sessions.admit_auth(peer, Instant::now())?;
    let limit = MAX_AUTH_BODY_BYTES.min(state.config.max_body_bytes);
    let bytes = read_body(headers, body, limit).await?;
    let request: AuthRequest = parse_json("auth request", &bytes)?;
    if request.version != PROTOCOL_VERSION {
        return Err(BrokerError::Attestation(format!(
            "protocol version {:?}; this broker speaks {PROTOCOL_VERSION}",
            request.version
        )));
    }
    if !matches!(request.tee.as_str(), "snp" | "tdx" | "sample") {
        return Err(BrokerError::Attestation(format!(
            "TEE {:?} is not supported (snp, tdx, or Trustee's development sample; simulated \
             evidence travels as snp)",
            request.tee
        )));
    }
    let mut id = [0u8; 16];
    let mut nonce = [0u8; 32];
    state
        .rng
        .fill(&mut id)
        .and_then(|()| state.rng.fill(&mut nonce))
        .map_err(|_| BrokerError::Internal("random session".into()))?;
    let id = hex::encode(id);
    let nonce = B64.encode(nonce);
    state.sessions.open_challenge(
        peer,
        id.clone(),
        nonce.clone(),
        request.tee.clone(),
        Instant::now(),
    )?;
    tracing::info!(session = session_tag(&id), tee = %request.tee, "broker: challenge issued");
    let body = serde_json::to_vec(&Challenge {
        nonce,
        extra_params: serde_json::Value::String(String::new()),
    })
    .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, body);
    set_cookie(&mut response, &id, state.config.challenge_ttl)?;
    Ok(response)
}

pub(super) async fn attest(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let id = session_id(&headers);
    match attest_inner(&state, id.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => refuse("attest", id.as_deref(), &e),
    }
}

async fn attest_inner(
    state: &Shared,
    id: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, BrokerError> {
    let id = id.ok_or_else(|| {
        BrokerError::Attestation(format!(
            "no {SESSION_COOKIE} cookie: call /kbs/v0/auth first"
        ))
    })?;
    // The challenge is taken out of the table before anything else: whatever happens next,
    // its nonce is spent. An attested session stays (a repeated attest does not end it).
    let (nonce, tee, peer) = match state.sessions.take_challenge(id, Instant::now()) {
        Ok(challenge) => challenge,
        Err(NoChallenge::Attested) => {
            return Err(BrokerError::Attestation(
                "this session has already attested and its nonce is spent; start again \
                 at /kbs/v0/auth"
                    .into(),
            ));
        }
        Err(NoChallenge::Unknown) => {
            return Err(BrokerError::Attestation(
                "unknown session (never issued, expired, or its nonce already spent)".into(),
            ));
        }
        Err(NoChallenge::Expired) => {
            return Err(BrokerError::Attestation(
                "the challenge expired; start again at /kbs/v0/auth".into(),
            ));
        }
    };
    // Room for one more session is checked before the evidence costs a verification.
    state.sessions.session_room(peer, Instant::now())?;
    let limit = state
        .config
        .max_evidence_bytes
        .min(state.config.max_body_bytes);
    let bytes = read_body(headers, body, limit).await?;
    let mut request: AttestRequest = parse_json("attest request", &bytes)?;
    drop(bytes);
    let runtime = &request.runtime_data;
    if !bool::from(runtime.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(BrokerError::Attestation(
            "the runtime-data nonce is not this session's challenge (replayed or stale evidence)"
                .into(),
        ));
    }
    // This broker encrypts only to P-256 keys; say so now rather than at the resource.
    runtime
        .tee_pubkey
        .p256_point()
        .map_err(|e| BrokerError::BadRequest(format!("runtime-data.tee-pubkey: {e}")))?;
    let evidence = parse_evidence(
        std::mem::take(&mut request.tee_evidence.primary_evidence),
        &tee,
    )?;
    let gpu_evidence =
        GpuEvidenceSet::from_canonical_json(&request.tee_evidence.additional_evidence)
            .map_err(|e| BrokerError::BadRequest(format!("tee-evidence: {e}")))?;
    let digest = runtime_data_digest(
        &runtime.nonce,
        &runtime.tee_pubkey,
        &request.tee_evidence.additional_evidence,
    )
    .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
    let expected = report_data(&digest);
    let (appraised, verdict) =
        verify_integrity(&state.config, evidence, &expected, now_timestamp())?;
    // The CPU report binds the GPU evidence (it is in the runtime data); now the GPUs must
    // have answered this session's GPU nonce.
    let gpus = match &gpu_evidence {
        Some(set) => super::gpu::verify(state, &nonce, set)?,
        None => Vec::new(),
    };
    let token = issue_token(state, &verdict, &request)?;
    tracing::info!(
        session = session_tag(id),
        tee = %verdict.tee,
        measurement = verdict.measurement.as_deref().unwrap_or("-"),
        debug = ?verdict.debug,
        gpus = gpus.len(),
        "broker: evidence verified; session attested"
    );
    state.sessions.attest(
        id,
        peer,
        Attested {
            appraised,
            tee_pubkey: request.runtime_data.tee_pubkey,
            report_data: expected,
            gpus,
        },
        Instant::now(),
    )?;
    let body = serde_json::to_vec(&AttestResponse { token })
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, body);
    set_cookie(&mut response, id, state.config.session_ttl)?;
    Ok(response)
}

/// The attest step's check: integrity only (signatures, chain, dates, report_data binding
/// the runtime data), under a permissive base policy; the release policy is judged per
/// resource on the claims kept. Collateral the attester carries is dropped: TDX quotes are
/// judged with the broker's own. Returns what the session keeps (the verified claims, not
/// the evidence), and the verdict.
pub(crate) fn verify_integrity(
    config: &BrokerConfig,
    evidence: Evidence,
    expected_report_data: &[u8; 64],
    now: Timestamp,
) -> Result<(Appraised, Verdict), BrokerError> {
    let evidence = evidence.without_tdx_collateral();
    let collateral = for_evidence(config.tdx_collateral.as_deref(), &evidence)?;
    let mut base = Policy::dangerous_authenticity_only();
    base.dangerous_allow_simulated = true;
    base.allow_debug = true;
    base.allow_migration_agent = true;
    base.tdx_statuses = TDX_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    base.report_data = Some(*expected_report_data);
    let (verdict, appraised) = verify_and_keep(&evidence, collateral.as_ref(), &base, now);
    match appraised.filter(|_| verdict.is_accept()) {
        Some(appraised) => Ok((appraised, verdict)),
        None => Err(BrokerError::Attestation(format!(
            "evidence rejected: {}",
            failures(&verdict)
        ))),
    }
}

/// Reads `primary_evidence`: this crate's tagged evidence, or Trustee's untagged SNP/TDX
/// form (tagged here with the session's TEE).
fn parse_evidence(mut value: serde_json::Value, tee: &str) -> Result<Evidence, BrokerError> {
    let obj = value.as_object_mut().ok_or_else(|| {
        BrokerError::BadRequest("tee-evidence.primary_evidence must be a JSON object".into())
    })?;
    obj.entry("tee")
        .or_insert_with(|| serde_json::Value::String(tee.to_owned()));
    let evidence: Evidence = serde_json::from_value(value)
        .map_err(|e| BrokerError::BadRequest(format!("tee-evidence.primary_evidence: {e}")))?;
    let entries = match &evidence {
        Evidence::Snp(e) | Evidence::Simulated(e) => e.cert_chain().len(),
        _ => 0,
    };
    if entries > MAX_CERT_ENTRIES {
        return Err(BrokerError::BadRequest(format!(
            "tee-evidence.primary_evidence.cert_chain has {entries} entries; at most \
             {MAX_CERT_ENTRIES} are accepted (ARK, ASK or ASVK, VCEK or VLEK)"
        )));
    }
    let consistent = match evidence.tee() {
        TeeKind::Snp | TeeKind::Simulated => tee == "snp",
        TeeKind::Tdx => tee == "tdx",
        // Judged like simulated evidence: refused by every release policy without
        // allow_simulated (see `Policy::evaluate`).
        TeeKind::Sample => tee == "sample",
        _ => false,
    };
    if !consistent {
        return Err(BrokerError::Attestation(format!(
            "the evidence is {} but the session was opened for {tee}",
            evidence.tee()
        )));
    }
    Ok(evidence)
}

/// An ES256 JWT naming the verified claims (the KBS attest response). The client need not
/// read it: resources are released on the session cookie.
fn issue_token(
    state: &Shared,
    verdict: &Verdict,
    request: &AttestRequest,
) -> Result<String, BrokerError> {
    let point = state.token_key.public_key().as_ref();
    let (x, y) = point
        .get(1..33)
        .zip(point.get(33..65))
        .ok_or_else(|| BrokerError::Internal("token key".into()))?;
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "jwk": {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": B64URL.encode(x),
            "y": B64URL.encode(y),
        },
    });
    let iat = crate::unix_now();
    let claims = serde_json::json!({
        "iss": "confidant-broker",
        "iat": iat,
        "exp": iat + state.config.session_ttl.as_secs() as i64,
        "tee": verdict.tee,
        "measurement": verdict.measurement,
        "debug": verdict.debug,
        "runtime_data_claims": {
            "nonce": request.runtime_data.nonce,
            "tee-pubkey": request.runtime_data.tee_pubkey,
            // GPU evidence (tens of KiB) is named by its SHA-384, not repeated.
            "additional-evidence": additional_evidence_claim(&request.tee_evidence.additional_evidence),
        },
    });
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let signature = state
        .token_key
        .sign(&state.rng, signing_input.as_bytes())
        .map_err(|_| BrokerError::Internal("token signature".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        B64URL.encode(signature.as_ref())
    ))
}

/// What the token says of `additional_evidence`: `""` as sent, else `sha384:<hex>` of it.
fn additional_evidence_claim(additional_evidence: &str) -> String {
    use sha2::Digest as _;
    if additional_evidence.is_empty() {
        return String::new();
    }
    format!(
        "sha384:{}",
        hex::encode(sha2::Sha384::digest(additional_evidence.as_bytes()))
    )
}

pub(super) async fn resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    let id = session_id(&headers);
    let path = uri
        .path()
        .strip_prefix("/kbs/v0/resource/")
        .unwrap_or("")
        .to_owned();
    // Trustee's token client (passport mode) presents its attestation token as a bearer
    // token and no cookie; this broker releases on the attested session's cookie only.
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    match resource_inner(&state, id.as_deref(), bearer, &uri) {
        Ok(r) => r,
        Err(e) => refuse(&format!("resource {path}"), id.as_deref(), &e),
    }
}

fn resource_inner(
    state: &Shared,
    id: Option<&str>,
    bearer: bool,
    uri: &Uri,
) -> Result<Response<Body>, BrokerError> {
    let id = id.ok_or_else(|| {
        BrokerError::Session(if bearer {
            format!(
                "no {SESSION_COOKIE} cookie: this broker releases resources on an attested \
                 session's cookie only, not on a bearer token (auth and attest first)"
            )
        } else {
            format!("no {SESSION_COOKIE} cookie: attest first")
        })
    })?;
    let path = resource_path(uri, "/kbs/v0/resource/")?;
    let session = state.sessions.attested(id, Instant::now())?;
    // The policy first: the resource is neither decrypted nor even looked up until the
    // path's release policy admits this session's evidence. No policy, no resource, and a
    // policy that refuses all get the same answer (`BrokerError::public_detail`); the reason
    // goes to the log only.
    let Some(release) = state.store.policy(path)? else {
        let reason = if state.store.contains(path)? {
            "no release policy is set for this resource (broker set-policy)"
        } else {
            "no resource and no release policy at this path"
        };
        return Err(BrokerError::PolicyDeny {
            path: path.to_owned(),
            reason: reason.into(),
        });
    };
    let open = release.policy.deliberately_open();
    let mut policy = release.policy;
    policy.report_data = Some(session.report_data);
    let verdict = session.appraised.judge(&policy, now_timestamp());
    if !verdict.is_accept() {
        return Err(BrokerError::PolicyDeny {
            path: path.to_owned(),
            reason: failures(&verdict),
        });
    }
    // The GPUs, fail closed: `[gpu]` needs passing evidence, no `[gpu]` needs none.
    let gpu_failures = judge_gpus(&policy, &session.gpus);
    if !gpu_failures.is_empty() {
        return Err(BrokerError::PolicyDeny {
            path: path.to_owned(),
            reason: gpu_failures
                .iter()
                .map(|f| format!("{}: {}", f.check, f.detail))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    // Released: only now is the secret decrypted. A policy without a resource is said to a
    // caller the policy admits.
    let Some(secret) = state.store.get(path)? else {
        return Err(BrokerError::NotFound(path.to_owned()));
    };
    let jwe = jwe::encrypt(&session.tee_pubkey, &secret).map_err(|e| BrokerError::PolicyDeny {
        path: path.to_owned(),
        reason: format!("cannot encrypt to the TEE key: {e}"),
    })?;
    if !open.is_empty() {
        tracing::warn!(
            session = session_tag(id),
            path,
            accepts = open.join("; "),
            "broker: the release policy is deliberately open"
        );
    }
    tracing::info!(
        session = session_tag(id),
        path,
        tee = %verdict.tee,
        measurement = verdict.measurement.as_deref().unwrap_or("-"),
        gpus = session.gpus.len(),
        "broker: resource released"
    );
    Ok(json_response(StatusCode::OK, jwe))
}
