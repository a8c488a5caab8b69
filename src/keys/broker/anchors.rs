//! Freshness anchors (see [`crate::state::anchor`]): per deployment, the latest position the
//! server reported, signed by the deployment's checkpoint key, and the lease of the one live
//! instance.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /kbs/v0/anchor/<deployment>` | server | a signed claim, advance, reset or release |
//! | `GET /kbs/v0/anchor/<deployment>` | admin | the anchor as JSON (`confidant broker anchor`) |
//! | `POST /kbs/v0/anchor-reset/<deployment>` | admin | authorize a reset (`confidant state reset`) |
//! | `GET /kbs/v0/audit-key/<deployment>` | admin | the audit-records subkey and checkpoint key (`audit export --key-from-broker`) |
//!
//! The broker verifies each server request with the checkpoint key it derives from the
//! deployment's state key (the resource `default/state/<deployment>`, which it holds): only
//! an attested server has that key. A request is also refused if its signed time is more
//! than [`MAX_CLOCK_SKEW_SECS`] from the broker's clock, so an old request cannot be
//! replayed much later. Each change is one database transaction (read, check, write).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};
use rusqlite::OptionalExtension as _;

use super::Shared;
use super::admin::check_admin;
use super::http::{json_response, parse_json, read_body, refuse};
use crate::keys::error::BrokerError;
use crate::state::anchor::{
    Anchor, AnchorAnswer, AnchorRequest, MAX_CLOCK_SKEW_SECS, Position, ResetRecord, Step,
};
use crate::state::{Source, StateKey};

/// Largest anchor request body.
const MAX_ANCHOR_BODY: usize = 4 << 10;
/// Longest reset reason.
const MAX_REASON: usize = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn check_deployment(deployment: &str) -> Result<(), BrokerError> {
    crate::state::check_deployment(deployment).map_err(|e| BrokerError::BadRequest(e.to_string()))
}

/// The stored text of the deployment's anchor (in a transaction, or a plain read).
fn load(db: &rusqlite::Connection, deployment: &str) -> rusqlite::Result<Option<String>> {
    db.query_row(
        "SELECT anchor FROM broker_anchors WHERE deployment = ?1",
        [deployment],
        |r| r.get(0),
    )
    .optional()
}

fn parse(deployment: &str, text: &str) -> Result<Anchor, BrokerError> {
    serde_json::from_str(text).map_err(|e| {
        BrokerError::Internal(format!(
            "the stored anchor of {deployment} does not parse: {e}"
        ))
    })
}

fn save(db: &rusqlite::Transaction<'_>, anchor: &Anchor) -> rusqlite::Result<()> {
    let text = serde_json::to_string(anchor)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    db.execute(
        "INSERT INTO broker_anchors (deployment, anchor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(deployment) DO UPDATE SET anchor = ?2, updated_at = ?3",
        rusqlite::params![anchor.deployment, text, crate::unix_now()],
    )?;
    Ok(())
}

/// Runs `f` on the deployment's anchor (if any) in one transaction; what `f` returns is
/// saved. Errors of `f` abort the transaction.
fn update(
    state: &Shared,
    deployment: &str,
    f: impl FnOnce(Option<Anchor>) -> Result<Anchor, BrokerError>,
) -> Result<Anchor, BrokerError> {
    let mut outcome: Option<Result<Anchor, BrokerError>> = None;
    let stored = state.store.db().transaction(|tx| {
        let current = match load(tx, deployment)?
            .map(|t| parse(deployment, &t))
            .transpose()
        {
            Ok(a) => a,
            Err(e) => {
                outcome = Some(Err(e));
                return Ok(());
            }
        };
        let next = f(current);
        if let Ok(anchor) = &next {
            save(tx, anchor)?;
        }
        outcome = Some(next);
        Ok(())
    });
    stored.map_err(|e| BrokerError::Internal(e.to_string()))?;
    outcome.unwrap_or_else(|| Err(BrokerError::Internal("anchor update did not run".into())))
}

/// The deployment's anchor, if any.
fn read(state: &Shared, deployment: &str) -> Result<Option<Anchor>, BrokerError> {
    let text = state
        .store
        .db()
        .read(|c| load(c, deployment))
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    text.map(|t| parse(deployment, &t)).transpose()
}

/// The deployment's state key, which the broker holds as `default/state/<deployment>`.
fn state_key(state: &Shared, deployment: &str) -> Result<StateKey, BrokerError> {
    let path = crate::state::resource_path(deployment)
        .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
    let bytes = state.store.get(&path)?.ok_or_else(|| {
        BrokerError::NotFound(format!(
            "no state key at {path}: the broker keeps anchors only for deployments whose \
             state key it holds (`confidant broker put-resource --path {path} --generate`)"
        ))
    })?;
    StateKey::from_bytes(&bytes, Source::Broker, &path)
        .map_err(|e| BrokerError::Internal(e.to_string()))
}

/// The checkpoint key of `deployment`, from its state key.
fn verifying_key(
    state: &Shared,
    deployment: &str,
) -> Result<ed25519_dalek::VerifyingKey, BrokerError> {
    Ok(state_key(state, deployment)?
        .checkpoint_key()
        .verifying_key())
}

/// Whether `holder` holds the lease at `now_ms`.
fn lease_live(anchor: &Anchor, lease_ms: u64, now_ms: u64) -> bool {
    anchor.lease_holder.is_some() && now_ms.saturating_sub(anchor.lease_renewed_ms) < lease_ms
}

/// Applies a verified request to the anchor.
fn apply(
    current: Option<Anchor>,
    req: &AnchorRequest,
    public_key: &str,
    lease_ms: u64,
    now_ms: u64,
) -> Result<Anchor, BrokerError> {
    let set_position = |a: &mut Anchor| {
        a.position = req.position.clone();
        a.step = req.step;
        a.instance.clone_from(&req.instance);
        a.at = req.at;
        a.signature.clone_from(&req.signature);
    };
    let Some(mut anchor) = current else {
        if req.step != Step::Claim {
            return Err(BrokerError::Conflict(format!(
                "deployment {} has no anchor yet: a server claims it first",
                req.deployment
            )));
        }
        // The first claim of a deployment anchors the state the server starts from.
        return Ok(Anchor {
            deployment: req.deployment.clone(),
            public_key: public_key.to_owned(),
            position: req.position.clone(),
            step: req.step,
            instance: req.instance.clone(),
            at: req.at,
            signature: req.signature.clone(),
            epoch: 0,
            reset_pending: false,
            resets: Vec::new(),
            lease_holder: Some(req.instance.clone()),
            lease_renewed_ms: now_ms,
        });
    };
    let holder = anchor.lease_holder.as_deref() == Some(req.instance.as_str());
    match req.step {
        Step::Claim => {
            if !holder && lease_live(&anchor, lease_ms, now_ms) {
                return Err(BrokerError::LeaseHeld(format!(
                    "deployment {} is served by another live instance ({}), which renewed its \
                     lease {} ms ago; a second server is refused until that instance stops or \
                     its {} s lease runs out",
                    anchor.deployment,
                    anchor.lease_holder.as_deref().unwrap_or("-"),
                    now_ms.saturating_sub(anchor.lease_renewed_ms),
                    lease_ms / 1000
                )));
            }
            anchor.lease_holder = Some(req.instance.clone());
            anchor.lease_renewed_ms = now_ms;
        }
        Step::Advance | Step::Reset | Step::Release => {
            if !holder {
                return Err(BrokerError::LeaseHeld(format!(
                    "instance {} does not hold deployment {} (held by {}); it must stop serving",
                    req.instance,
                    anchor.deployment,
                    anchor.lease_holder.as_deref().unwrap_or("nobody")
                )));
            }
            match req.step {
                Step::Release => anchor.lease_holder = None,
                Step::Reset => {
                    if !anchor.reset_pending {
                        return Err(BrokerError::Conflict(format!(
                            "no reset of deployment {} is authorized (`confidant state reset`)",
                            anchor.deployment
                        )));
                    }
                    anchor.reset_pending = false;
                    if let Some(last) = anchor.resets.last_mut() {
                        last.accepted = Some(req.position.clone());
                    }
                    set_position(&mut anchor);
                    anchor.lease_renewed_ms = now_ms;
                }
                _ => {
                    if anchor.reset_pending {
                        return Err(BrokerError::Conflict(format!(
                            "a reset of deployment {} is pending: the server takes it up at \
                             its next start",
                            anchor.deployment
                        )));
                    }
                    check_forward(&anchor.position, &req.position)?;
                    set_position(&mut anchor);
                    anchor.lease_renewed_ms = now_ms;
                }
            }
        }
    }
    Ok(anchor)
}

/// The broker's own check that an advance moves forward on the same history (the server
/// checks the history at the anchored record itself, at boot).
fn check_forward(anchor: &Position, next: &Position) -> Result<(), BrokerError> {
    if next.audit_seq < anchor.audit_seq || next.db_version < anchor.db_version {
        return Err(BrokerError::Rollback(format!(
            "the anchor is at audit record {} and state version {}; a position at record {} \
             and version {} would move it back",
            anchor.audit_seq, anchor.db_version, next.audit_seq, next.db_version
        )));
    }
    if next.audit_seq == anchor.audit_seq && next.audit_head != anchor.audit_head {
        return Err(BrokerError::Rollback(format!(
            "audit record {} has another hash than the anchored one: the anchor never forks",
            anchor.audit_seq
        )));
    }
    Ok(())
}

/// `POST /kbs/v0/anchor/<deployment>`: a server's signed request.
pub(super) async fn server_request(
    State(state): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_deployment(&deployment)?;
        let bytes = read_body(&headers, body, MAX_ANCHOR_BODY).await?;
        let req: AnchorRequest = parse_json("anchor request", &bytes)?;
        if req.deployment != deployment {
            return Err(BrokerError::BadRequest(format!(
                "the request names deployment {:?}, the path {deployment:?}",
                req.deployment
            )));
        }
        let now = now_ms();
        let skew = (now / 1000).abs_diff(req.at);
        if skew > MAX_CLOCK_SKEW_SECS {
            return Err(BrokerError::BadRequest(format!(
                "the request was signed at {} and the broker's clock says {}: more than {} s \
                 apart (a replayed request, or a clock to fix)",
                req.at,
                now / 1000,
                MAX_CLOCK_SKEW_SECS
            )));
        }
        let key = verifying_key(&state, &deployment)?;
        req.verify(&key).map_err(|e| match e {
            crate::state::anchor::AnchorError::Signature => BrokerError::AnchorSignature,
            other => BrokerError::BadRequest(other.to_string()),
        })?;
        let public_key = hex::encode(key.as_bytes());
        let lease = state.config.anchor_lease;
        let anchor = update(&state, &deployment, |current| {
            apply(current, &req, &public_key, lease.as_millis() as u64, now)
        })?;
        match req.step {
            Step::Advance => tracing::debug!(
                deployment,
                audit_seq = anchor.position.audit_seq,
                db_version = anchor.position.db_version,
                "broker: anchor advanced"
            ),
            Step::Claim => tracing::info!(
                deployment,
                instance = %req.instance,
                audit_seq = anchor.position.audit_seq,
                db_version = anchor.position.db_version,
                reset_pending = anchor.reset_pending,
                "broker: deployment claimed"
            ),
            Step::Reset => tracing::warn!(
                deployment,
                instance = %req.instance,
                audit_seq = anchor.position.audit_seq,
                db_version = anchor.position.db_version,
                epoch = anchor.epoch,
                "broker: the server took up the authorized reset; the anchor now starts from \
                 its local state"
            ),
            Step::Release => tracing::info!(deployment, "broker: deployment released"),
        }
        let answer = AnchorAnswer {
            anchor,
            lease_secs: lease.as_secs(),
        };
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&answer).map_err(|e| BrokerError::Internal(e.to_string()))?,
        ))
    }
    .await;
    result.unwrap_or_else(|e| refuse("anchor", None, &e))
}

/// `GET /kbs/v0/anchor/<deployment>` (admin).
pub(super) async fn get_anchor(
    State(state): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        check_deployment(&deployment)?;
        let anchor = read(&state, &deployment)?.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "no anchor for deployment {deployment}: no server has claimed it yet"
            ))
        })?;
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec_pretty(&anchor).map_err(|e| BrokerError::Internal(e.to_string()))?,
        ))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin anchor", None, &e))
}

/// `GET /kbs/v0/audit-key/<deployment>` (admin): the deployment's audit-records subkey (it
/// opens the audit events, nothing else: not the database, not the state key) and its
/// checkpoint public key, for an auditor outside the attested VM.
pub(super) async fn audit_key(
    State(state): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        check_deployment(&deployment)?;
        let key = state_key(&state, &deployment)?;
        let records = zeroize::Zeroizing::new(hex::encode(
            key.subkey(crate::state::Subkey::AuditRecords).as_ref(),
        ));
        let public = hex::encode(key.checkpoint_key().verifying_key().as_bytes());
        tracing::warn!(
            deployment,
            "broker: admin obtained the audit-records key of a deployment (audit export)"
        );
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "deployment": deployment,
                "records_key": records.as_str(),
                "checkpoint_public_key": public,
            }))
            .map_err(|e| BrokerError::Internal(e.to_string()))?,
        );
        Ok(json_response(StatusCode::OK, body.to_vec()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin audit key", None, &e))
}

/// The body of an admin reset.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    reason: String,
}

/// `POST /kbs/v0/anchor-reset/<deployment>` (admin): authorizes the next server start to
/// accept its local state as the new anchor, and records why.
pub(super) async fn reset(
    State(state): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        check_deployment(&deployment)?;
        let bytes = read_body(&headers, body, MAX_ANCHOR_BODY).await?;
        let body: ResetBody = parse_json("reset", &bytes)?;
        let reason = body.reason.trim().to_owned();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(BrokerError::BadRequest(format!(
                "reason: 1 to {MAX_REASON} characters, no control characters"
            )));
        }
        let anchor = update(&state, &deployment, |current| {
            let Some(mut a) = current else {
                return Err(BrokerError::NotFound(format!(
                    "no anchor for deployment {deployment}: nothing to reset"
                )));
            };
            a.epoch += 1;
            a.reset_pending = true;
            a.resets.push(ResetRecord {
                authorized_at: crate::unix_now().max(0) as u64,
                reason: reason.clone(),
                previous: a.position.clone(),
                accepted: None,
            });
            Ok(a)
        })?;
        tracing::warn!(
            deployment,
            epoch = anchor.epoch,
            reason,
            audit_seq = anchor.position.audit_seq,
            db_version = anchor.position.db_version,
            "broker: admin authorized a state reset; the next server start accepts its local \
             state as the anchor"
        );
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec_pretty(&anchor).map_err(|e| BrokerError::Internal(e.to_string()))?,
        ))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin reset", None, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(step: Step, instance: char, seq: u64, head: char, db: u64) -> AnchorRequest {
        AnchorRequest {
            step,
            deployment: "d".into(),
            instance: instance.to_string().repeat(32),
            at: 1,
            position: Position {
                audit_seq: seq,
                audit_head: head.to_string().repeat(64),
                db_version: db,
            },
            signature: String::new(),
        }
    }

    #[test]
    fn the_anchor_moves_only_forward_and_only_for_its_live_holder() {
        let lease = 10_000;
        let a = apply(None, &req(Step::Claim, 'a', 5, 'e', 2), "pk", lease, 1_000).unwrap();
        assert_eq!(a.lease_holder.as_deref(), Some("a".repeat(32).as_str()));
        // Forward on the same history.
        let a = apply(
            Some(a),
            &req(Step::Advance, 'a', 9, 'f', 3),
            "pk",
            lease,
            2_000,
        )
        .unwrap();
        assert_eq!(a.position.audit_seq, 9);
        // Back, or sideways, is refused.
        for bad in [
            req(Step::Advance, 'a', 8, 'f', 3),
            req(Step::Advance, 'a', 9, 'f', 2),
            req(Step::Advance, 'a', 9, 'c', 3),
        ] {
            let e = apply(Some(a.clone()), &bad, "pk", lease, 3_000).unwrap_err();
            assert!(matches!(e, BrokerError::Rollback(_)), "{e}");
        }
        // A second instance is refused while the first is live, and takes over after.
        let e = apply(
            Some(a.clone()),
            &req(Step::Claim, 'b', 9, 'f', 3),
            "pk",
            lease,
            5_000,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::LeaseHeld(_)), "{e}");
        let e = apply(
            Some(a.clone()),
            &req(Step::Advance, 'b', 10, 'f', 3),
            "pk",
            lease,
            5_000,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::LeaseHeld(_)), "{e}");
        let b = apply(
            Some(a),
            &req(Step::Claim, 'b', 9, 'f', 3),
            "pk",
            lease,
            12_001,
        )
        .unwrap();
        // The old holder can no longer advance.
        let e = apply(
            Some(b.clone()),
            &req(Step::Advance, 'a', 20, 'f', 9),
            "pk",
            lease,
            12_500,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::LeaseHeld(_)), "{e}");
        // A reset needs an authorization; with one, the holder's state becomes the anchor.
        let e = apply(
            Some(b.clone()),
            &req(Step::Reset, 'b', 1, '1', 1),
            "pk",
            lease,
            13_000,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::Conflict(_)), "{e}");
        let mut pending = b;
        pending.reset_pending = true;
        pending.resets.push(ResetRecord {
            authorized_at: 1,
            reason: "restore".into(),
            previous: pending.position.clone(),
            accepted: None,
        });
        let e = apply(
            Some(pending.clone()),
            &req(Step::Advance, 'b', 30, 'f', 9),
            "pk",
            lease,
            13_000,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::Conflict(_)), "{e}");
        let r = apply(
            Some(pending),
            &req(Step::Reset, 'b', 1, '1', 1),
            "pk",
            lease,
            13_000,
        )
        .unwrap();
        assert!(!r.reset_pending);
        assert_eq!(r.position.audit_seq, 1);
        assert_eq!(r.resets[0].accepted.as_ref().unwrap().audit_seq, 1);
        // Release frees the deployment at once.
        let r = apply(
            Some(r),
            &req(Step::Release, 'b', 1, '1', 1),
            "pk",
            lease,
            13_100,
        )
        .unwrap();
        apply(
            Some(r),
            &req(Step::Claim, 'c', 1, '1', 1),
            "pk",
            lease,
            13_200,
        )
        .unwrap();
    }
}
