//! Admission: the guards every inference RPC passes before anything is spent (the names the
//! caller gave, identity and scope, model and version, purpose, consent, the input).

use super::*;

impl Pipeline {
    /// The guards every inference RPC shares, in order, up to (not including) the steps
    /// that spend: ready, identity and `scope`, model and version, purpose, data-subject
    /// consent, input validation.
    pub(super) fn admit_call<'c>(
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
    pub(super) fn admit_input(
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
}

/// A call that passed every non-spending guard.
pub(super) struct Admitted {
    pub(super) key: Arc<KeyRecord>,
    pub(super) model: Arc<LoadedModel>,
    pub(super) input: ModelInput,
    pub(super) rows: usize,
    /// The data subject's budget key ([`Subjects::budget_key`]), when the call names one.
    pub(super) subject_budget: Option<String>,
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
