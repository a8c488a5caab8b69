//! Explain: integrated gradients behind every guard Predict passes, with its work capped
//! per request and run on its own bounded pool.

use super::*;

impl Pipeline {
    /// The explanation threads: `workers` of them, so that explanations (and the parallel
    /// kernels candle runs inside them, which use the pool they are called from) never
    /// occupy more cores than that.
    fn explain_pool(&self) -> Result<&rayon::ThreadPool, ApiError> {
        self.explain_pool
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.explain_limits.workers.max(1))
                    .thread_name(|i| format!("explain-{i}"))
                    .panic_handler(|_| tracing::error!("an explanation panicked"))
                    .build()
                    .inspect_err(|e| tracing::error!(error = %e, "no explanation threads"))
                    .ok()
            })
            .as_ref()
            .ok_or_else(|| ApiError::Internal("the explanation threads could not start".into()))
    }

    /// Explains rows by integrated gradients, through the same guards as Predict (with the
    /// explain scope), audited whatever the outcome.
    pub async fn explain(
        &self,
        ctx: &CallContext,
        call: PredictCall,
        target: Option<u32>,
    ) -> Result<ExplainOutcome, Status> {
        let started = Instant::now();
        let mut record = AuditContext::default();
        // As for Predict: the request digest before the input is consumed, and a receipt that
        // cannot be given refused before anything is spent.
        let mut result = match self.receipt_ask(ctx, &call) {
            Ok(ask) => self
                .explain_inner(ctx, call, target, &mut record)
                .await
                .map(|out| (out, ask)),
            Err(e) => Err(e),
        }
        .map_err(Status::from);
        let targets: Vec<u32> = match &result {
            Ok((out, _)) => out.attributions.iter().map(|a| a.target as u32).collect(),
            Err(_) => Vec::new(),
        };
        let expected = match &mut result {
            Ok((_, Some(ask))) => ask.expected.take(),
            _ => None,
        };
        let draft = match &result {
            Ok((out, Some(ask))) => Some((Self::explanation_draft(ask, out), expected)),
            _ => None,
        };
        let durable = self.audit_call(
            record,
            result.as_ref().err(),
            &targets,
            started.elapsed(),
            Some("explain"),
            draft,
        );
        let ((mut out, ask), receipt) = Self::deliver(result, durable).await?;
        if let (Some(ask), Some(cose)) = (ask, receipt) {
            out.signed_receipt = Some(SignedReceipt {
                cose,
                drawn_salt: ask.drawn_salt,
            });
        }
        Ok(out)
    }

    async fn explain_inner<'c>(
        &self,
        ctx: &'c CallContext,
        call: PredictCall,
        target: Option<u32>,
        record: &mut AuditContext<'c>,
    ) -> Result<ExplainOutcome, ApiError> {
        let Admitted {
            key, model, input, ..
        } = self.admit_call(ctx, Scope::Explain, call, record)?;
        let policy = model.privacy();
        if *policy != PrivacyPolicy::None {
            return Err(ApiError::Precondition(format!(
                "model {} releases outputs only under its {} privacy policy; explanations \
                 would reveal what the policy hides",
                model.id(),
                policy.name()
            )));
        }
        let (config, values, rows) = match (model.mlp_config(), input) {
            (Some(config), ModelInput::Rows { values, rows }) => (config, values, rows),
            (None, ModelInput::Tokens(tokens)) => {
                return self
                    .explain_texts(&key, model, tokens, target, record)
                    .await;
            }
            _ => {
                return Err(ApiError::Internal(format!(
                    "model {} was admitted with an input of another kind",
                    model.id()
                )));
            }
        };
        let baseline = match (&config.explanation, &config.input.normalization) {
            (Some(ExplanationSpec { baseline: Some(b) }), _) => b.clone(),
            (_, Some(norm)) => norm.mean.clone(),
            _ => {
                return Err(ApiError::Precondition(format!(
                    "model {} declares no explanation baseline (explanation.baseline in its \
                     config) and no normalization mean to fall back on",
                    config.id
                )));
            }
        };
        if let Some(t) = target
            && t as usize >= config.output_count()
        {
            return Err(ApiError::BadRequest(format!(
                "target {t} does not exist: model {} has {} outputs",
                config.id,
                config.output_count()
            )));
        }
        // The work is bounded before anything is spent: the worst case of every row.
        let points = (rows as u64).saturating_mul(MAX_POINTS_PER_ROW);
        if points > self.explain_limits.max_points_per_request {
            return Err(ApiError::Exhausted(format!(
                "an explanation of {rows} rows may cost {points} path points; this server \
                 allows at most {} per request (explain.max_points_per_request): send fewer \
                 rows",
                self.explain_limits.max_points_per_request
            )));
        }
        let admission = self.guard.admit(&key, unix_now())?;
        let request_id = record.new_request_id();
        // The model's screening, as Predict runs it: a row Predict refuses is not explained,
        // and a flagged row is reported.
        let flagged = match model.screening() {
            Some(spec) => {
                let out = model
                    .infer(ModelInput::Rows {
                        values: values.clone(),
                        rows,
                    })
                    .await?;
                record.engine = Some((out.queue_time, out.compute_time));
                let Some(scores) = out.sensitivity else {
                    return Err(ApiError::Internal(format!(
                        "model {} declares screening but its engine returned no scores",
                        config.id
                    )));
                };
                let flagged: Vec<u32> = scores
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| spec.is_flagged(**s))
                    .map(|(i, _)| i as u32)
                    .collect();
                record.flagged_rows.clone_from(&flagged);
                if let Some(first) = flagged.first()
                    && spec.action == ScreenAction::Reject
                {
                    return Err(screening_refusal(*first));
                }
                flagged
            }
            None => Vec::new(),
        };
        let Some(mlp) = model.mlp().map(Arc::clone) else {
            return Err(ApiError::Internal(format!(
                "model {} has an MLP config but no MLP",
                config.id
            )));
        };
        let features = config.feature_count();
        let b = baseline.clone();
        let rows_out = self
            .on_explain_pool(move || {
                values
                    .chunks_exact(features)
                    .map(|x| integrated_gradients(&mlp, x, &b, target.map(|t| t as usize)))
                    .collect::<Result<Vec<Attribution>, _>>()
            })
            .await?;
        admission.commit();
        Ok(ExplainOutcome {
            model: Arc::clone(&model),
            request_id,
            rows,
            features,
            baseline,
            attributions: rows_out,
            flagged_rows: flagged,
            texts: Vec::new(),
            signed_receipt: None,
        })
    }

    /// Runs an explanation on the bounded pool: a request that finds every worker busy is
    /// refused (its admission, dropped by the caller, refunds itself), and a worker stays
    /// taken until its computation ends, even if the caller goes away.
    pub(super) async fn on_explain_pool<T: Send + 'static>(
        &self,
        explain: impl FnOnce() -> Result<T, crate::engine::EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = Arc::clone(&self.explain_slots)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::Exhausted(format!(
                    "all {} explanation workers are busy; retry later",
                    self.explain_limits.workers
                ))
            })?;
        let (done, explained) = tokio::sync::oneshot::channel();
        self.explain_pool()?.spawn(move || {
            let result = explain();
            // The worker is free before the caller hears back (so a caller's next request
            // finds it free); the caller may have gone, which changes nothing.
            drop(slot);
            let _ = done.send(result);
        });
        match explained.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ApiError::Internal(
                "an explanation worker ended without an answer".into(),
            )),
        }
    }
}
