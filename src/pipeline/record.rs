//! The audit record of a call: what it learns as the call proceeds, queuing it, and holding
//! an answer until its record is safe from a crash (journaled, or else written).

use super::*;

impl Pipeline {
    /// Returns an answer once its audit record is safe from a crash of the process: at once
    /// when the record is in the audit journal, else once the writer has written it to the
    /// log file (and, when the record was queued with a receipt, with that receipt). An
    /// answer whose record cannot be written is withheld (UNAVAILABLE); what it spent stays
    /// spent.
    pub(super) async fn deliver<T>(
        result: Result<T, Status>,
        durable: Option<Result<crate::audit::Durable, crate::audit::AuditError>>,
    ) -> Result<(T, Option<Vec<u8>>), Status> {
        let written = match durable {
            Some(Ok(d)) => Some(d.wait_for_receipt().await),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        match (result, written) {
            (Ok(out), Some(w)) => match w {
                Ok(receipt) => Ok((out, receipt)),
                Err(e) => Err(Status::unavailable(format!(
                    "the audit record of this answer could not be written ({e}); the answer \
                     is withheld"
                ))),
            },
            (result, _) => result.map(|out| (out, None)),
        }
    }

    /// Queues the call's audit record. For an answer (no refusal) it returns what to await
    /// before the answer leaves ([`Pipeline::deliver`]); a refusal's record is not waited
    /// for (it reaches disk with the next group).
    pub(super) fn audit_call(
        &self,
        record: AuditContext<'_>,
        refusal: Option<&Status>,
        output_argmax: &[u32],
        latency: std::time::Duration,
        rpc: Option<&'static str>,
        receipt: Option<(
            crate::receipt::Draft<'_>,
            Option<crate::audit::ReceiptExpected>,
        )>,
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
            return Some(match receipt {
                Some((draft, expected)) => {
                    audit.append_predict_with_receipt(&event, draft, expected)
                }
                None => audit.append_predict_durable(&event),
            });
        }
        None
    }
}

impl AuditContext<'_> {
    /// Makes the call's request id, keeps it for the record and returns it for the response.
    pub(super) fn new_request_id(&mut self) -> String {
        let id = request_id::new_bytes();
        self.request_id = Some(id);
        request_id::as_str(&id).to_string()
    }
}

/// What the audit record of one call learns as the call proceeds. It borrows or holds fixed
/// buffers where it can, so that recording costs no allocation beyond the record itself.
#[derive(Default)]
pub(super) struct AuditContext<'c> {
    pub(super) request_id: Option<[u8; 36]>,
    /// The authenticated caller.
    pub(super) key: Option<Arc<KeyRecord>>,
    /// The model named, when it is not loaded.
    pub(super) model: String,
    /// Whether the record names `loaded_model` (once the caller is authenticated and the
    /// model resolved), by its label.
    pub(super) model_resolved: bool,
    /// Whether the model's loaded version is the one asked for (and the caller is
    /// authenticated): the call counts in that version's Triton statistics.
    pub(super) version_matched: bool,
    /// The declared purpose, once checked (borrowed from the call's metadata).
    pub(super) purpose: Option<&'c str>,
    pub(super) input_hmac: Option<[u8; 64]>,
    pub(super) flagged_rows: Vec<u32>,
    pub(super) rows: u64,
    /// Tokens of a text model's request (after truncation).
    pub(super) tokens: u64,
    /// Tokens its forward passes computed, padding included (its share of its batches).
    pub(super) padded_tokens: u64,
    /// The loaded model the request named (its id is the metrics label).
    pub(super) loaded_model: Option<Arc<LoadedModel>>,
    /// Queue and compute time, once the engine answered.
    pub(super) engine: Option<(std::time::Duration, std::time::Duration)>,
    /// The engine's timing of the request, for the Triton statistics.
    pub(super) engine_times: EngineTimes,
    /// ε charged (at the budget's δ).
    pub(super) epsilon: f64,
    /// The data subject's pseudonym, when the request named one with consent.
    pub(super) subject: Option<String>,
    /// Refused because the audit log cannot be written: no record is queued.
    pub(super) unrecordable: bool,
}
