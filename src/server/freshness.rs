//! Rollback protection: the server's side of the freshness anchor
//! ([`crate::state::anchor`]).
//!
//! At boot, before anything is written to the database, the server claims its deployment at
//! the broker, compares its local state with the anchor, and refuses every request (health
//! NOT_SERVING, UNAVAILABLE naming the rollback) if the local audit log or database is older
//! than the anchor or another history. Serving, it advances the anchor at every durable
//! audit checkpoint and at least once a second, off the request path; if the anchor cannot
//! advance for half the broker's lease, it refuses requests until it can (so that a second
//! instance that takes the deployment over never serves beside it). At shutdown it anchors
//! the final checkpoint and releases the deployment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use super::ServerError;
use crate::audit::{AuditLog, Checkpointed};
use crate::keys::{BrokerEndpoint, RcarError, anchor_request};
use crate::state::anchor::{AnchorAnswer, AnchorRequest, Gate, GateReason, Position, Step};
use crate::storage::Database;

/// How often an idle server renews its lease.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where this server's freshness stands after boot.
pub(super) enum Boot {
    /// No anchor is kept (development key file, demo, or `--without-freshness-anchor`).
    Off,
    /// The local state covers the anchor: serve, and advance it.
    Fresh(Box<Anchorer>),
    /// The local state is older than the anchor: the gate is closed; do not serve.
    RolledBack,
}

/// What advances the anchor while the server runs.
pub(super) struct Anchorer {
    endpoint: BrokerEndpoint,
    key: SigningKey,
    deployment: String,
    instance: String,
    lease: Duration,
    last: Position,
}

fn unix_secs() -> u64 {
    crate::unix_now().max(0) as u64
}

fn is_refusal(e: &RcarError, status: u16, kind: &str) -> bool {
    matches!(e, RcarError::Refused { status: s, kind: k, .. } if *s == status && (kind.is_empty() || k == kind))
}

/// The local position as found at boot (before any write).
fn local_position(audit: &AuditLog, db_version: u64) -> Position {
    let (seq, head) = audit.opened_at();
    Position {
        audit_seq: seq,
        audit_head: head.to_owned(),
        db_version,
    }
}

/// Warns at every checkpoint that rollback protection is off (`--without-freshness-anchor`).
fn warn_at_every_checkpoint(audit: &AuditLog) {
    let mut rx = audit.checkpoints();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            tracing::warn!(
                "ROLLBACK PROTECTION OFF (--without-freshness-anchor): this checkpoint is not \
                 anchored at the broker; the host can restore an older data directory unnoticed"
            );
        }
    });
}

/// Claims the deployment and checks the local state against the anchor. `db_version` is the
/// database's state version read before any write of this start.
pub(super) async fn boot(
    config: &super::ServeConfig,
    key: SigningKey,
    source: crate::state::Source,
    audit: &AuditLog,
    db_version: u64,
    gate: &Gate,
) -> Result<Boot, ServerError> {
    let broker = match (&config.broker, source) {
        (Some(b), crate::state::Source::Broker) => b,
        _ => {
            tracing::warn!(
                "no freshness anchor (the state key is not from a key broker): restoring an \
                 older copy of the data directory is not detected"
            );
            return Ok(Boot::Off);
        }
    };
    if config.without_freshness_anchor {
        tracing::warn!(
            deployment = %config.deployment,
            "ROLLBACK PROTECTION OFF (--without-freshness-anchor): no freshness anchor is kept \
             at the broker; the host can restore an older data directory (privacy budgets, \
             quotas, consent, erasures) unnoticed"
        );
        warn_at_every_checkpoint(audit);
        return Ok(Boot::Off);
    }
    let endpoint = super::models::broker_endpoint(broker)?;
    let mut instance = [0u8; 16];
    getrandom::fill(&mut instance).map_err(|e| ServerError::Random(e.to_string()))?;
    let instance = hex::encode(instance);
    let local = local_position(audit, db_version);
    let deployment = config.deployment.clone();
    let sign = |step: Step, position: Position| {
        AnchorRequest::sign(&key, step, &deployment, &instance, unix_secs(), position)
    };
    // Claim, waiting out another instance's lease (a crashed predecessor's runs out).
    let (mut wait, longest) = crate::keys::client::RETRY_BACKOFF;
    let answer: AnchorAnswer = loop {
        match anchor_request(&endpoint, &sign(Step::Claim, local.clone())).await {
            Ok(a) => break a,
            Err(e) if is_refusal(&e, 404, "") => {
                return Err(ServerError::Freshness(format!(
                    "the broker at {} keeps no freshness anchor for deployment {deployment} \
                     ({e}); without one a restored data directory goes unnoticed. Use a \
                     Confidant broker, or say `--without-freshness-anchor` to serve without \
                     rollback protection",
                    endpoint.url()
                )));
            }
            Err(e) => {
                let held = is_refusal(&e, 409, "LeaseHeld");
                tracing::warn!(
                    deployment,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "{}",
                    if held {
                        "the deployment is held by another live instance; waiting for its lease"
                    } else {
                        "cannot claim the deployment at the broker; retrying"
                    }
                );
                tokio::time::sleep(if held { Duration::from_secs(1) } else { wait }).await;
                wait = (wait * 2).min(longest);
            }
        }
    };
    let lease = Duration::from_secs(answer.lease_secs.max(2));
    let anchor = answer.anchor;
    if anchor.reset_pending {
        let reason = anchor
            .resets
            .last()
            .map(|r| r.reason.clone())
            .unwrap_or_default();
        let answer = anchor_request(&endpoint, &sign(Step::Reset, local.clone())).await?;
        tracing::warn!(
            deployment,
            epoch = answer.anchor.epoch,
            reason,
            previous_audit_seq = anchor.position.audit_seq,
            previous_db_version = anchor.position.db_version,
            audit_seq = local.audit_seq,
            db_version = local.db_version,
            "STATE RESET authorized at the broker: the local state is accepted as the new \
             freshness anchor"
        );
        audit.append(crate::audit::Event::Admin {
            actor: "broker".into(),
            action: "state reset".into(),
            detail: format!(
                "epoch {}: {reason}; anchor was audit record {} and state version {}, local \
                 state is audit record {} and state version {}",
                answer.anchor.epoch,
                anchor.position.audit_seq,
                anchor.position.db_version,
                local.audit_seq,
                local.db_version
            ),
        });
    } else {
        let head_at_anchor = if anchor.position.audit_seq == local.audit_seq {
            Some(local.audit_head.clone())
        } else if anchor.position.audit_seq < local.audit_seq {
            audit.hash_at(anchor.position.audit_seq)?
        } else {
            None
        };
        if let Err(e) = local.covers(&anchor.position, head_at_anchor.as_deref()) {
            let text = format!(
                "the server's state was rolled back: {e}. It refuses to serve; only \
                 `confidant state reset` (authorized at the broker, and recorded in the \
                 anchor) lets deployment {deployment} serve again"
            );
            tracing::error!(deployment, "{text}");
            gate.close(GateReason::Rollback, text);
            // Give the deployment back: this instance will not advance it.
            let _ = anchor_request(&endpoint, &sign(Step::Release, anchor.position.clone())).await;
            return Ok(Boot::RolledBack);
        }
        tracing::info!(
            deployment,
            anchor_audit_seq = anchor.position.audit_seq,
            anchor_db_version = anchor.position.db_version,
            audit_seq = local.audit_seq,
            db_version = local.db_version,
            "freshness anchor checked: the local state covers it"
        );
    }
    Ok(Boot::Fresh(Box::new(Anchorer {
        endpoint,
        key,
        deployment,
        instance,
        lease,
        last: local,
    })))
}

impl Anchorer {
    fn request(&self, step: Step, position: Position) -> AnchorRequest {
        AnchorRequest::sign(
            &self.key,
            step,
            &self.deployment,
            &self.instance,
            unix_secs(),
            position,
        )
    }

    async fn advance(
        &mut self,
        checkpoint: Option<&Checkpointed>,
        db: &Arc<Database>,
    ) -> Result<(), RcarError> {
        let db_version = {
            let db = Arc::clone(db);
            tokio::task::spawn_blocking(move || db.state_version())
                .await
                .ok()
                .and_then(Result::ok)
        };
        let mut next = self.last.clone();
        if let Some(c) = checkpoint
            && c.seq >= next.audit_seq
        {
            next.audit_seq = c.seq;
            next.audit_head.clone_from(&c.head);
        }
        if let Some(v) = db_version {
            next.db_version = next.db_version.max(v);
        }
        anchor_request(&self.endpoint, &self.request(Step::Advance, next.clone())).await?;
        self.last = next;
        Ok(())
    }

    /// Advances the anchor at every checkpoint and heartbeat until `stop`; then anchors the
    /// final checkpoint (after `close` has written it) and releases the deployment.
    pub(super) fn spawn(
        mut self,
        audit: Arc<AuditLog>,
        db: Arc<Database>,
        gate: Arc<Gate>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut checkpoints = audit.checkpoints();
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_ok = Instant::now();
            let mut lost = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = checkpoints.changed() => if r.is_err() { break },
                    _ = &mut stop => break,
                }
                if lost {
                    continue;
                }
                let checkpoint = checkpoints.borrow_and_update().clone();
                match self.advance(checkpoint.as_ref(), &db).await {
                    Ok(()) => {
                        last_ok = Instant::now();
                        if gate.is_closed_for(GateReason::Unanchored) {
                            gate.open(GateReason::Unanchored);
                            tracing::warn!(
                                deployment = %self.deployment,
                                "the freshness anchor advances again; requests are served"
                            );
                        }
                    }
                    Err(e)
                        if is_refusal(&e, 409, "LeaseHeld") || is_refusal(&e, 409, "Rollback") =>
                    {
                        lost = true;
                        let text = format!(
                            "this server no longer holds deployment {} at the broker ({e}); it \
                             stops serving (restart it to claim the deployment again)",
                            self.deployment
                        );
                        tracing::error!("{text}");
                        gate.close(GateReason::Unanchored, text);
                    }
                    Err(e) => {
                        let silent = last_ok.elapsed();
                        if silent >= self.lease / 2 {
                            if !gate.is_closed_for(GateReason::Unanchored) {
                                tracing::error!(
                                    deployment = %self.deployment,
                                    error = %e,
                                    "the freshness anchor has not advanced for {} ms; requests are refused until it does",
                                    silent.as_millis()
                                );
                            }
                            gate.close(
                                GateReason::Unanchored,
                                format!(
                                    "the freshness anchor at the key broker has not advanced for {} s ({e}); requests are refused until it does",
                                    silent.as_secs()
                                ),
                            );
                        } else {
                            tracing::warn!(deployment = %self.deployment, error = %e, "the freshness anchor did not advance; retrying");
                        }
                    }
                }
            }
            if lost {
                return;
            }
            // Shutdown. `stop` is sent only after `AuditLog::close` has returned, and `close`
            // publishes the final checkpoint before it returns (its fsync), so the latest
            // checkpoint is the final one. Waiting for a checkpoint later than the one last
            // anchored would stall every stop by the wait's length: the loop above has usually
            // anchored the final checkpoint already, woken by its arrival before `stop`.
            let checkpoint = checkpoints.borrow().clone();
            match self.advance(checkpoint.as_ref(), &db).await {
                Ok(()) => tracing::info!(
                    deployment = %self.deployment,
                    audit_seq = self.last.audit_seq,
                    db_version = self.last.db_version,
                    "final checkpoint anchored"
                ),
                Err(e) => tracing::warn!(
                    deployment = %self.deployment,
                    error = %e,
                    "the final checkpoint could not be anchored: a restart will find the local state ahead of the anchor (which is not a rollback)"
                ),
            }
            let _ = anchor_request(
                &self.endpoint,
                &self.request(Step::Release, self.last.clone()),
            )
            .await;
        })
    }
}
