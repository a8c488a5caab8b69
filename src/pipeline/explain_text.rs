//! Explain for text models: token attributions by integrated gradients over the input word
//! embeddings, behind the guards an MLP's explanation passes (the same scope, purposes,
//! refusal under any output privacy policy, quota and audit record) and the same bound on
//! its work, counted in tokens.

use super::*;
use crate::engine::Tokens;
use crate::engine::explain::text_points;

impl Pipeline {
    /// Explains admitted texts. The caller has checked the scope, the purpose, the input
    /// and the privacy policy; this checks the target and the cost, then spends.
    pub(super) async fn explain_texts(
        &self,
        key: &KeyRecord,
        model: Arc<LoadedModel>,
        tokens: Vec<Tokens>,
        target: Option<u32>,
        record: &mut AuditContext<'_>,
    ) -> Result<ExplainOutcome, ApiError> {
        let Some(encoder) = model.encoder().map(Arc::clone) else {
            return Err(ApiError::Internal(format!(
                "model {} takes texts but has no text encoder",
                model.id()
            )));
        };
        let width = model.output_width();
        match target {
            Some(t) if t as usize >= width => {
                return Err(ApiError::BadRequest(format!(
                    "target {t} does not exist: model {} has {width} outputs",
                    model.id()
                )));
            }
            None if !model.has_classes() => {
                return Err(ApiError::BadRequest(format!(
                    "model {} is an embedding model: it has no predicted class to explain by \
                     default; name the embedding dimension to explain as the target (0 to {})",
                    model.id(),
                    width.saturating_sub(1)
                )));
            }
            _ => {}
        }
        // The work is bounded before anything is spent: every path point of a text runs all
        // its tokens, so the worst case is its tokens times an MLP row's points.
        let total: usize = tokens.iter().map(Tokens::len).sum();
        let points = text_points(total);
        if points > self.explain_limits.max_points_per_request {
            return Err(ApiError::Exhausted(format!(
                "an explanation of {} texts of {total} tokens may cost {points} path points \
                 (tokens × {MAX_POINTS_PER_ROW}); this server allows at most {} per request \
                 (explain.max_points_per_request): send fewer or shorter texts",
                tokens.len(),
                self.explain_limits.max_points_per_request
            )));
        }
        // Quotas count what Predict counts for this model (requests or tokens).
        let admission = self.guard.admit_text(key, unix_now(), record.tokens)?;
        let request_id = record.new_request_id();
        let texts: Vec<(bool, usize)> = tokens.iter().map(|t| (t.truncated(), t.len())).collect();
        let target = target.map(|t| t as usize);
        let explained = self
            .on_explain_pool(move || encoder.explain_tokens(&tokens, target))
            .await?;
        if explained.len() != texts.len()
            || explained
                .iter()
                .zip(&texts)
                .any(|(e, (_, n))| e.attribution.attributions.len() != *n || e.tokens.len() != *n)
        {
            return Err(ApiError::Internal(format!(
                "model {}: the explanation does not match the texts",
                model.id()
            )));
        }
        admission.commit();
        let rows = explained.len();
        let (attributions, texts) = explained
            .into_iter()
            .zip(texts)
            .map(|(e, (truncated, _))| {
                (
                    e.attribution,
                    ExplainedText {
                        tokens: e.tokens,
                        special: e.special,
                        truncated,
                        baseline_token: e.baseline_token,
                    },
                )
            })
            .unzip();
        Ok(ExplainOutcome {
            model,
            rows,
            request_id,
            features: 0,
            baseline: Vec::new(),
            attributions,
            flagged_rows: Vec::new(),
            texts,
            signed_receipt: None,
        })
    }
}
