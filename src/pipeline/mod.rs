//! The protocol-neutral request pipeline that every inference front end shares.
//!
//! `confidant.v1.Inference` and the Open Inference Protocol service translate their wire
//! messages into a [`PredictCall`] and hand it here, so that both run exactly the same
//! guards, in the same order, with the same audit record and the same metrics:
//!
//! names (model, version, purpose: refused before anything records or echoes them) →
//! ready → audit log writable → authenticate → scope → model and version → purpose →
//! consent → validate input → privacy charge → rate limits (an [`Admission`] that refunds
//! itself unless committed) → privacy budget reservation → engine (batcher, screening) →
//! release (output policy) → metrics → audit record. `docs/architecture.md` walks through
//! it function by function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::Status;
use tonic::codegen::http::{
    self,
    header::{AUTHORIZATION, HeaderName},
};
use tonic::metadata::MetadataMap;

use crate::audit::{AuditLog, PredictEvent};
use crate::engine::explain::{
    Attribution, ExplanationSpec, MAX_POINTS_PER_ROW, integrated_gradients,
};
use crate::engine::{LoadedModel, ModelInput, Registry, ScreenAction, argmax_rows};
use crate::guard::{
    Admission, Credentials, Guard, InputError, KeyRecord, Scope, TextLimits, validate_rows,
    validate_texts,
};
use crate::metrics::stats::EngineTimes;
use crate::metrics::{Metrics, RequestSample, UNKNOWN_MODEL};
use crate::names::{NameError, validate_id, validate_name};
use crate::privacy::budget::{BudgetStatus, Budgets, Reservation};
use crate::privacy::policy::{Charge, PrivacyPolicy, Released};
use crate::privacy::rng::ChaChaDpRng;
use crate::privacy::subjects::Subjects;
use crate::unix_now;

mod admit;
mod call;
pub mod error;
mod explain;
mod explain_text;
mod receipts;
mod record;
pub mod request_id;
#[cfg(test)]
mod tests;

use admit::Admitted;
pub use admit::check_model_ref;
pub use call::{
    Api, CallContext, ExplainLimits, ExplainLimitsError, ExplainOutcome, ExplainedText,
    PredictCall, PredictOutcome, Receipt,
};
use call::{X_API_KEY, X_PURPOSE, X_SUBJECT_ID};
pub use error::ApiError;
pub use receipts::SignedReceipt;
use record::AuditContext;

/// The shared pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    registry: Registry,
    guard: Arc<Guard>,
    audit: Option<Arc<AuditLog>>,
    ready: Arc<AtomicBool>,
    /// Closed while the server's state cannot be trusted to be fresh (a rollback, or an
    /// anchor that stopped advancing): every request is refused, naming why.
    freshness: Option<Arc<crate::state::anchor::Gate>>,
    max_rows: usize,
    text_limits: TextLimits,
    metrics: Arc<Metrics>,
    unguarded: bool,
    budgets: Option<Budgets>,
    /// The noise generator, seeded from the OS by [`Pipeline::with_privacy`]. There is no
    /// default seed: without it, a model with any output policy other than `none` is
    /// refused (every policy's release goes through the generator).
    dp_rng: Option<Arc<Mutex<ChaChaDpRng>>>,
    subjects: Option<Subjects>,
    explain_limits: ExplainLimits,
    /// The explanation pool's free workers.
    explain_slots: Arc<tokio::sync::Semaphore>,
    /// The threads explanations run on (candle's parallel kernels included), made at the
    /// first explanation; `None` if they could not be started.
    explain_pool: Arc<std::sync::OnceLock<Option<rayon::ThreadPool>>>,
    /// Receipts: the signer, and whether every answer carries one.
    receipts: receipts::ReceiptSettings,
}

impl Pipeline {
    /// A pipeline over `registry`; it answers UNAVAILABLE until `ready` is set.
    pub fn new(
        registry: Registry,
        guard: Arc<Guard>,
        audit: Option<Arc<AuditLog>>,
        ready: Arc<AtomicBool>,
        max_rows: usize,
    ) -> Self {
        Self {
            registry,
            guard,
            audit,
            ready,
            freshness: None,
            max_rows,
            text_limits: TextLimits::default(),
            metrics: Arc::new(Metrics::new()),
            unguarded: false,
            budgets: None,
            dp_rng: None,
            subjects: None,
            explain_limits: ExplainLimits::default(),
            explain_slots: Arc::new(tokio::sync::Semaphore::new(
                ExplainLimits::default().workers,
            )),
            explain_pool: Arc::default(),
            receipts: receipts::ReceiptSettings::default(),
        }
    }

    /// Bounds explanations: the work of one request and the workers of all.
    pub fn with_explain_limits(mut self, limits: ExplainLimits) -> Self {
        self.explain_slots = Arc::new(tokio::sync::Semaphore::new(limits.workers.max(1)));
        self.explain_pool = Arc::default();
        self.explain_limits = limits;
        self
    }

    /// Refuses every request while `gate` is closed (see [`crate::state::anchor::Gate`]).
    pub fn with_freshness_gate(mut self, gate: Arc<crate::state::anchor::Gate>) -> Self {
        self.freshness = Some(gate);
        self
    }

    /// Bounds the texts of text models' requests (bytes per text and per request).
    pub fn with_text_limits(mut self, limits: TextLimits) -> Self {
        self.text_limits = limits;
        self
    }

    /// Checks consent for requests that name a data subject (`x-subject-id`).
    pub fn with_subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = Some(subjects);
        self
    }

    /// The subject store, when configured.
    pub fn subjects(&self) -> Option<&Subjects> {
        self.subjects.as_ref()
    }

    /// The audit log, when configured.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Enforces differential-privacy budgets from `budgets`, with noise from a generator
    /// seeded from the OS. Without this, a model with a private policy is refused.
    pub fn with_privacy(mut self, budgets: Budgets) -> Result<Self, ApiError> {
        let rng = ChaChaDpRng::from_os()
            .map_err(|e| ApiError::Unavailable(format!("no OS randomness for DP noise: {e}")))?;
        self.dp_rng = Some(Arc::new(Mutex::new(rng)));
        self.budgets = Some(budgets);
        Ok(self)
    }

    /// The budgets, when enforced.
    pub fn budgets(&self) -> Option<&Budgets> {
        self.budgets.as_ref()
    }

    /// Benchmarks only: a pipeline with every guard off (see
    /// [`ServeConfig::unguarded_benchmark_baseline`](super::ServeConfig)).
    #[doc(hidden)]
    pub fn unguarded_benchmark_baseline(mut self) -> Self {
        self.unguarded = true;
        self
    }

    /// Records into `metrics` (shared with the `/metrics` endpoint).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this pipeline records.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The loaded models.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The most rows one request may carry.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Whether the models are loaded, the state is fresh, and the server answers requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .freshness
                .as_ref()
                .is_none_or(|g| g.refusal().is_none())
    }

    /// Refuses with UNAVAILABLE while the freshness gate is closed (for calls that change
    /// state without a model: consent, erasure).
    pub fn ensure_fresh(&self) -> Result<(), ApiError> {
        match self.freshness.as_ref().and_then(|g| g.refusal()) {
            Some(reason) => Err(ApiError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// Refuses with UNAVAILABLE until the models are loaded, and while the freshness gate
    /// is closed (naming why: a rollback, or an anchor that stopped advancing).
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        self.ensure_fresh()?;
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::Unavailable(
                "server is not ready: models are still loading".into(),
            ))
        }
    }

    /// Refuses with UNAVAILABLE while the audit log cannot be written: a request that
    /// cannot be recorded is not served.
    pub fn ensure_audit_writable(&self) -> Result<(), ApiError> {
        match &self.audit {
            Some(audit) if !audit.is_writable() => Err(ApiError::Unavailable(
                "the audit log cannot be written; requests are refused until it can".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Authenticates the caller and checks that it holds `scope`.
    pub fn caller(&self, ctx: &CallContext, scope: Scope) -> Result<Arc<KeyRecord>, ApiError> {
        let key = self.guard.authenticate(Credentials {
            api_key: ctx.header(&X_API_KEY),
            authorization: ctx.header(&AUTHORIZATION),
            client_cert: ctx
                .peer_certs
                .as_ref()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
        })?;
        self.guard.authorize(&key, scope)?;
        Ok(key)
    }

    /// Runs one prediction through every guard, and audits it whatever the outcome.
    pub async fn predict(
        &self,
        ctx: &CallContext,
        call: PredictCall,
    ) -> Result<PredictOutcome, Status> {
        if self.unguarded {
            return self.predict_unguarded(call).await.map_err(Status::from);
        }
        let started = Instant::now();
        let mut record = AuditContext::default();
        // A receipt's request digest is taken before the input is consumed; a request that
        // asks for a receipt this server cannot give is refused before anything is spent.
        let result = match self.receipt_ask(ctx, &call) {
            Ok(ask) => self
                .predict_inner(ctx, call, &mut record)
                .await
                .map(|out| (out, ask)),
            Err(e) => Err(e),
        };
        let mut result = result.map_err(Status::from);
        let latency = started.elapsed();
        // A flag is a non-private function of the scores: under a private output policy
        // it goes to the audit record only, never to a public counter.
        let flags_public = record
            .loaded_model
            .as_ref()
            .is_none_or(|m| !m.privacy().is_private());
        let sample = RequestSample {
            code: result.as_ref().map_or_else(|s| s.code() as i32, |_| 0),
            latency,
            rows: record.rows,
            engine: record.engine,
            flagged_rows: if flags_public {
                record.flagged_rows.len() as u64
            } else {
                0
            },
            epsilon: record.epsilon,
            tokens: record.tokens,
            padded_tokens: record.padded_tokens,
        };
        match &record.loaded_model {
            Some(m) => m
                .metrics_cell()
                .get_or_init(|| self.metrics.model(m.id()))
                .record(&sample),
            None => self.metrics.model(UNKNOWN_MODEL).record(&sample),
        }
        // Triton's statistics count what reached this model version: authenticated calls
        // that named it (a stranger's refused call moves no figure of the model).
        if let (true, Some(m)) = (record.version_matched, &record.loaded_model) {
            match &result {
                Ok((out, _)) => {
                    m.stats()
                        .record_success(latency, out.rows as u64, &record.engine_times)
                }
                Err(_) => m.stats().record_failure(latency),
            }
        }
        let durable = match &mut result {
            // The record's argmax is the response's: no second copy.
            Ok((out, ask)) => {
                let draft = ask.as_mut().map(|a| {
                    (
                        Self::receipt_draft(a, out, record.epsilon),
                        a.expected.take(),
                    )
                });
                self.audit_call(record, None, &out.label_indices, latency, None, draft)
            }
            Err(refusal) => self.audit_call(record, Some(refusal), &[], latency, None, None),
        };
        let (mut out, ask, receipt) = match Self::deliver(result, durable).await {
            Ok(((out, ask), receipt)) => (out, ask, receipt),
            Err(status) => return Err(status),
        };
        if let (Some(ask), Some(cose)) = (ask, receipt) {
            out.signed_receipt = Some(SignedReceipt {
                cose,
                drawn_salt: ask.drawn_salt,
            });
        }
        Ok(out)
    }

    /// The benchmark baseline: the same engine path with no guard, audit or metrics.
    async fn predict_unguarded(&self, call: PredictCall) -> Result<PredictOutcome, ApiError> {
        self.ensure_ready()?;
        let model = self.registry.get(&call.model)?;
        let (input, rows) = match (model.mlp_config(), model.encoder()) {
            (Some(config), _) => {
                let width = config.feature_count();
                let rows = call.shape.first().copied().unwrap_or(0) as usize;
                if rows == 0 || call.values.len() != rows * width {
                    return Err(InputError::Empty.into());
                }
                let values = call.values;
                (ModelInput::Rows { values, rows }, rows)
            }
            (None, Some(encoder)) => {
                let texts = validate_texts(&call.texts, &self.text_limits, self.max_rows)?;
                let tokens = encoder.tokenize(&texts)?;
                (ModelInput::Tokens(tokens), texts.len())
            }
            (None, None) => return Err(ApiError::Internal("a model with no engine".into())),
        };
        let out = model.infer(input).await?;
        let out_width = model.output_width();
        let indices = if model.has_classes() {
            argmax_rows(&out.values, out_width)
        } else {
            Vec::new()
        };
        let labels = model.labels();
        Ok(PredictOutcome {
            model: Arc::clone(&model),
            request_id: String::new(),
            rows,
            width: out_width,
            values: out.values,
            labels: indices
                .iter()
                .map(|&i| labels.get(i).cloned().unwrap_or_default())
                .collect(),
            label_indices: indices.into_iter().map(|i| i as u32).collect(),
            flagged_rows: Vec::new(),
            receipt: None,
            tokens: 0,
            signed_receipt: None,
        })
    }

    async fn predict_inner<'c>(
        &self,
        ctx: &'c CallContext,
        call: PredictCall,
        record: &mut AuditContext<'c>,
    ) -> Result<PredictOutcome, ApiError> {
        let Admitted {
            key,
            model,
            input,
            rows,
            subject_budget,
        } = self.admit_call(ctx, Scope::Predict, call, record)?;
        let model_id = model.id();
        // The steps that spend come last, and are handed back if nothing is released.
        let policy = *model.privacy();
        let softmax = model.softmax();
        let width = model.output_width();
        let per_row = policy
            .per_row(softmax, width)
            .map_err(|e| ApiError::Internal(format!("privacy policy of {model_id}: {e}")))?;
        let charge = Charge::of(&per_row, rows);
        let dp_rng = match (policy, &self.dp_rng) {
            (PrivacyPolicy::None, _) => None,
            (_, Some(rng)) => Some(rng),
            (_, None) => {
                return Err(ApiError::Internal(format!(
                    "model {model_id} has the {} privacy policy, but this pipeline has no \
                     noise generator seeded from the OS (Pipeline::with_privacy)",
                    policy.name()
                )));
            }
        };
        let now = unix_now();
        // A text request counts its tokens where the limits count tokens (`[rate] unit`).
        let admission = if model.encoder().is_some() {
            self.guard.admit_text(&key, now, record.tokens)?
        } else {
            self.guard.admit(&key, now)?
        };
        let reservation = if charge.is_zero() {
            None
        } else {
            let Some(budgets) = &self.budgets else {
                return Err(ApiError::Internal(
                    "a model with a privacy policy is served without budgets".into(),
                ));
            };
            Some(budgets.reserve_for(&key.principal, subject_budget.as_deref(), charge, now)?)
        };
        // The admission refunds its day unit when dropped; the budget reservation is
        // handed back here.
        let refund = |reservation: Option<Reservation>, admission: Admission<'_>| {
            if let (Some(r), Some(b)) = (reservation, &self.budgets) {
                b.refund(r);
            }
            drop(admission);
        };
        let request_id = record.new_request_id();
        let out = match model.infer(input).await {
            Ok(out) => out,
            Err(e) => {
                refund(reservation, admission);
                return Err(e.into());
            }
        };
        record.engine = Some((out.queue_time, out.compute_time));
        record.padded_tokens = out.padded_tokens as u64;
        record.engine_times = EngineTimes {
            queue: out.queue_time,
            compute_input: out.input_time,
            compute_infer: out.compute_time,
            compute_output: out.output_time,
        };
        let flagged = match (model.screening(), &out.sensitivity) {
            (Some(spec), Some(scores)) => {
                let flagged: Vec<u32> = scores
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| spec.is_flagged(**s))
                    .map(|(i, _)| i as u32)
                    .collect();
                if !flagged.is_empty() && spec.action == ScreenAction::Reject {
                    // A refused request spends nothing; the audit record keeps the rows.
                    refund(reservation, admission);
                    record.flagged_rows.clone_from(&flagged);
                    return Err(screening_refusal(flagged[0]));
                }
                flagged
            }
            _ => Vec::new(),
        };
        record.flagged_rows.clone_from(&flagged);
        let released = match dp_rng {
            // Nothing to add: no copy, no lock on the noise generator.
            None => Ok(Released {
                // An embedding has no classes: no argmax.
                labels: if model.has_classes() {
                    argmax_rows(&out.values, width)
                } else {
                    Vec::new()
                },
                values: Some(out.values),
                charge: Charge::default(),
            }),
            Some(rng) => {
                let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
                policy.apply(&mut *rng, &out.values, width, softmax)
            }
        };
        let released = match released {
            Ok(r) => r,
            Err(e) => {
                refund(reservation, admission);
                return Err(ApiError::Internal(format!("privacy mechanism: {e}")));
            }
        };
        admission.commit();
        let indices = released.labels;
        let labels = indices
            .iter()
            .map(|&i| model.labels().get(i).cloned().unwrap_or_default())
            .collect();
        let budget_status = reservation.as_ref().map(Reservation::status);
        let delta = self.budgets.as_ref().map_or(1e-6, |b| b.config().delta);
        record.epsilon = charge.epsilon_at(delta);
        let receipt = (policy != PrivacyPolicy::None).then_some(Receipt {
            mechanism: policy.name(),
            charge,
            budget: budget_status,
        });
        let (values, width) = match released.values {
            Some(v) => (v, width),
            None => (Vec::new(), 0),
        };
        let flagged = if policy.is_private() {
            Vec::new()
        } else {
            flagged
        };
        tracing::debug!(
            request_id = %request_id,
            principal = %key.principal,
            purpose = record.purpose.unwrap_or("-"),
            model = %model_id,
            rows,
            batch_rows = out.batch_rows,
            queue_us = out.queue_time.as_micros() as u64,
            compute_us = out.compute_time.as_micros() as u64,
            "predict"
        );
        Ok(PredictOutcome {
            model: Arc::clone(&model),
            request_id,
            rows,
            width,
            values,
            label_indices: indices.into_iter().map(|i| i as u32).collect(),
            labels,
            flagged_rows: flagged,
            receipt,
            tokens: record.tokens as usize,
            signed_receipt: None,
        })
    }
}

/// The refusal of a row that sensitivity screening flags under `action = "reject"`.
fn screening_refusal(row: u32) -> ApiError {
    ApiError::BadRequest(format!(
        "row {row} was refused by adversarial-sensitivity screening: its prediction is \
         unstable under small perturbations of the input"
    ))
}
