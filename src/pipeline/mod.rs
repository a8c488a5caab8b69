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

mod call;
pub mod error;
mod explain;
pub mod request_id;
#[cfg(test)]
mod tests;

pub use call::{CallContext, ExplainLimits, ExplainOutcome, PredictCall, PredictOutcome, Receipt};
use call::{X_API_KEY, X_PURPOSE, X_SUBJECT_ID};
pub use error::ApiError;

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
        let result = self.predict_inner(ctx, call, &mut record).await;
        let result = result.map_err(Status::from);
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
                Ok(out) => m
                    .stats()
                    .record_success(latency, out.rows as u64, &record.engine_times),
                Err(_) => m.stats().record_failure(latency),
            }
        }
        let durable = match &result {
            // The record's argmax is the response's: no second copy.
            Ok(out) => self.audit_call(record, None, &out.label_indices, latency, None),
            Err(refusal) => self.audit_call(record, Some(refusal), &[], latency, None),
        };
        Self::deliver(result, durable).await
    }

    /// Returns an answer once its audit record is on disk: a crash after this point cannot
    /// lose the record of an answer the caller has. An answer whose record cannot be written
    /// is withheld (UNAVAILABLE); what it spent stays spent.
    async fn deliver<T>(
        result: Result<T, Status>,
        durable: Option<Result<crate::audit::Durable, crate::audit::AuditError>>,
    ) -> Result<T, Status> {
        let written = match durable {
            Some(Ok(d)) => Some(d.wait().await),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        match (result, written) {
            (Ok(out), Some(w)) => match w {
                Ok(()) => Ok(out),
                Err(e) => Err(Status::unavailable(format!(
                    "the audit record of this answer could not be written ({e}); the answer \
                     is withheld"
                ))),
            },
            (result, _) => result,
        }
    }

    /// Queues the call's audit record. For an answer (no refusal) it returns what to await
    /// before the answer leaves ([`Pipeline::deliver`]); a refusal's record is not waited
    /// for (it reaches disk with the next group).
    fn audit_call(
        &self,
        record: AuditContext<'_>,
        refusal: Option<&Status>,
        output_argmax: &[u32],
        latency: std::time::Duration,
        rpc: Option<&'static str>,
    ) -> Option<Result<crate::audit::Durable, crate::audit::AuditError>> {
        if let Some(audit) = &self.audit
            && !record.unrecordable
        {
            let (decision, reason) = match refusal {
                None => ("allow", "OK"),
                Some(s) => ("refuse", crate::proto::code_name(s.code())),
            };
            let model = match &record.loaded_model {
                Some(m) if record.model_resolved => m.label(),
                _ => record.model.as_str(),
            };
            let event = PredictEvent {
                request_id: record.request_id.as_ref().map_or("", request_id::as_str),
                principal: record.key.as_ref().map_or("", |k| k.principal.as_str()),
                model,
                purpose: record.purpose,
                subject: record.subject.as_deref(),
                input_hmac: record
                    .input_hmac
                    .as_ref()
                    .and_then(|h| std::str::from_utf8(h).ok()),
                output_argmax,
                flagged_rows: &record.flagged_rows,
                rows: record.rows,
                latency_us: latency.as_micros() as u64,
                decision,
                reason,
                epsilon: record.epsilon,
                rpc,
            };
            if refusal.is_some() {
                audit.append_predict(&event);
                return None;
            }
            return Some(audit.append_predict_durable(&event));
        }
        None
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
        })
    }

    /// The guards every inference RPC shares, in order, up to (not including) the steps
    /// that spend: ready, identity and `scope`, model and version, purpose, data-subject
    /// consent, input validation.
    fn admit_call<'c>(
        &self,
        ctx: &'c CallContext,
        scope: Scope,
        call: PredictCall,
        record: &mut AuditContext<'c>,
    ) -> Result<Admitted, ApiError> {
        // What the caller named is checked against its rule before anything records or
        // echoes it (the audit record, a NOT_FOUND message, a log line).
        check_model_ref(&call.model, &call.version)?;
        let declared_purpose = ctx
            .header(&X_PURPOSE)
            .map(str::trim)
            .filter(|p| !p.is_empty());
        if let Some(p) = declared_purpose {
            validate_name("purpose (x-purpose)", p).map_err(bad_name)?;
        }
        // The metrics label: the model named, when it is loaded, even if a guard refuses.
        let found = self.registry.get(&call.model);
        if let Ok(m) = &found {
            record.loaded_model = Some(Arc::clone(m));
        }
        self.ensure_ready()?;
        if let Err(e) = self.ensure_audit_writable() {
            // Not recorded either: the log cannot take it, and a flood of such refusals
            // must not pile up in the writer's memory while the disk is failing.
            record.unrecordable = true;
            return Err(e);
        }
        let key = self.caller(ctx, scope)?;
        record.key = Some(Arc::clone(&key));
        let model = match found {
            Ok(m) => m,
            Err(e) => {
                record.model.clone_from(&call.model);
                return Err(e.into());
            }
        };
        record.model_resolved = true;
        if !call.version.is_empty() && call.version != model.version() {
            return Err(ApiError::Precondition(format!(
                "model {} is at version {}, request asked for {}",
                model.id(),
                model.version(),
                call.version
            )));
        }
        record.version_matched = true;
        let purpose =
            self.guard
                .check_purpose(&key, declared_purpose, model.id(), model.purposes())?;
        record.purpose = purpose;
        let mut subject_budget = None;
        if let Some(subject) = ctx.header(&X_SUBJECT_ID) {
            let Some(purpose) = record.purpose else {
                return Err(ApiError::Precondition(
                    "a request naming a data subject (x-subject-id) must declare its purpose \
                     (x-purpose)"
                        .into(),
                ));
            };
            let subjects = self.subjects.as_ref().ok_or_else(|| {
                ApiError::Precondition("this server keeps no consent records".into())
            })?;
            match subjects
                .check_consent(subject, purpose)
                .and_then(|pseudonym| Ok((pseudonym, subjects.budget_key(subject)?)))
            {
                Ok((pseudonym, budget_key)) => {
                    record.subject = Some(pseudonym);
                    subject_budget = Some(budget_key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (input, rows) = self.admit_input(&model, call, record)?;
        Ok(Admitted {
            key,
            model: Arc::clone(&model),
            input,
            rows,
            subject_budget,
        })
    }

    /// Validates the call's input for the model's kind: numeric rows against an MLP's
    /// schema, or texts (count, bytes, UTF-8, then the model's own tokenizer and token
    /// limit) for a text model. The audit record gets the input's keyed digest.
    fn admit_input(
        &self,
        model: &LoadedModel,
        call: PredictCall,
        record: &mut AuditContext<'_>,
    ) -> Result<(ModelInput, usize), ApiError> {
        if call.embeddings_only && model.has_classes() {
            return Err(InputError::NotEmbedding {
                model: model.id().to_string(),
            }
            .into());
        }
        let has_rows = !call.shape.is_empty() || !call.values.is_empty();
        let has_texts = !call.texts.is_empty();
        let expected = model.spec().kind().input_form();
        match (model.mlp_config(), model.encoder()) {
            (Some(config), _) => {
                if has_texts {
                    return Err(InputError::WrongForm {
                        model: config.id.clone(),
                        expected,
                        found: "texts",
                    }
                    .into());
                }
                if !has_rows {
                    return Err(InputError::Missing.into());
                }
                if let Some(audit) = &self.audit {
                    record.input_hmac = Some(audit.input_hmac_hex(&call.values));
                }
                let mut values = call.values;
                let rows = validate_rows(config, &call.shape, &mut values, self.max_rows)?;
                record.rows = rows as u64;
                Ok((ModelInput::Rows { values, rows }, rows))
            }
            (None, Some(encoder)) => {
                if has_rows {
                    return Err(InputError::WrongForm {
                        model: model.id().to_string(),
                        expected,
                        found: "numeric rows",
                    }
                    .into());
                }
                if let Some(audit) = &self.audit {
                    record.input_hmac = Some(audit.input_hmac_hex_texts(&call.texts));
                }
                let texts = validate_texts(&call.texts, &self.text_limits, self.max_rows)?;
                record.rows = texts.len() as u64;
                // Tokenized here, before anything is spent: a text over a `refuse` limit is
                // refused (INVALID_ARGUMENT, naming the text, its tokens and the limit) with
                // no quota or budget taken.
                let bytes: usize = texts.iter().map(|t| t.len()).sum();
                let tokens = off_the_reactor(bytes, || encoder.tokenize(&texts))?;
                record.tokens = tokens.iter().map(|t| t.len() as u64).sum();
                Ok((ModelInput::Tokens(tokens), texts.len()))
            }
            (None, None) => Err(ApiError::Internal(format!(
                "model {} has no engine",
                model.id()
            ))),
        }
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
        })
    }
}

/// Texts of more bytes than this are tokenized with the runtime told that the thread blocks.
const BLOCKING_TOKENIZE_BYTES: usize = 16 << 10;

/// Runs `f` (CPU-bound work of `bytes` of input, such as tokenization) on the calling async
/// worker; past [`BLOCKING_TOKENIZE_BYTES`], on a multi-threaded runtime, with
/// `block_in_place`, so that the worker's other requests move to another thread rather than
/// wait behind a megabyte of text.
fn off_the_reactor<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h)
            if bytes > BLOCKING_TOKENIZE_BYTES
                && h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
        {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Checks a model id and version that a caller named (an empty version means any) against
/// the id rule, before anything records or echoes them: INVALID_ARGUMENT, and the message
/// gives the length, never the value.
pub fn check_model_ref(model: &str, version: &str) -> Result<(), ApiError> {
    if model.is_empty() {
        return Err(ApiError::BadRequest("model must be set".into()));
    }
    validate_id("model name", model).map_err(bad_name)?;
    if !version.is_empty() {
        validate_id("model version", version).map_err(bad_name)?;
    }
    Ok(())
}

fn bad_name(e: NameError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// The refusal of a row that sensitivity screening flags under `action = "reject"`.
fn screening_refusal(row: u32) -> ApiError {
    ApiError::BadRequest(format!(
        "row {row} was refused by adversarial-sensitivity screening: its prediction is \
         unstable under small perturbations of the input"
    ))
}

impl AuditContext<'_> {
    /// Makes the call's request id, keeps it for the record and returns it for the response.
    fn new_request_id(&mut self) -> String {
        let id = request_id::new_bytes();
        self.request_id = Some(id);
        request_id::as_str(&id).to_string()
    }
}

/// A call that passed every non-spending guard.
struct Admitted {
    key: Arc<KeyRecord>,
    model: Arc<LoadedModel>,
    input: ModelInput,
    rows: usize,
    /// The data subject's budget key ([`Subjects::budget_key`]), when the call names one.
    subject_budget: Option<String>,
}

/// What the audit record of one call learns as the call proceeds. It borrows or holds fixed
/// buffers where it can, so that recording costs no allocation beyond the record itself.
#[derive(Default)]
struct AuditContext<'c> {
    request_id: Option<[u8; 36]>,
    /// The authenticated caller.
    key: Option<Arc<KeyRecord>>,
    /// The model named, when it is not loaded.
    model: String,
    /// Whether the record names `loaded_model` (once the caller is authenticated and the
    /// model resolved), by its label.
    model_resolved: bool,
    /// Whether the model's loaded version is the one asked for (and the caller is
    /// authenticated): the call counts in that version's Triton statistics.
    version_matched: bool,
    /// The declared purpose, once checked (borrowed from the call's metadata).
    purpose: Option<&'c str>,
    input_hmac: Option<[u8; 64]>,
    flagged_rows: Vec<u32>,
    rows: u64,
    /// Tokens of a text model's request (after truncation).
    tokens: u64,
    /// Tokens its forward passes computed, padding included (its share of its batches).
    padded_tokens: u64,
    /// The loaded model the request named (its id is the metrics label).
    loaded_model: Option<Arc<LoadedModel>>,
    /// Queue and compute time, once the engine answered.
    engine: Option<(std::time::Duration, std::time::Duration)>,
    /// The engine's timing of the request, for the Triton statistics.
    engine_times: EngineTimes,
    /// ε charged (at the budget's δ).
    epsilon: f64,
    /// The data subject's pseudonym, when the request named one with consent.
    subject: Option<String>,
    /// Refused because the audit log cannot be written: no record is queued.
    unrecordable: bool,
}
