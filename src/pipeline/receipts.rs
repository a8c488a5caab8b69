//! Receipts in the pipeline: who asked for one (and with what salt), the request's keyed
//! digest taken before the input is consumed, and the draft the audit writer finishes.
//!
//! A client asks with the `x-confidant-receipt` header (its salt, hex); `[receipts] require`
//! gives every answer one, drawing a salt for a client that sent none (returned in
//! `x-confidant-receipt-salt`). A request that asks for a receipt this server cannot give is
//! refused before anything is spent (FAILED_PRECONDITION), as is a malformed salt
//! (INVALID_ARGUMENT).

use super::*;
use crate::receipt::{Draft, ReceiptSigner, SALT_HEADER, digest};

/// The receipt settings of a pipeline.
#[derive(Clone)]
pub(super) struct ReceiptSettings {
    /// The signer, or why this server has none.
    pub(super) signer: Result<Arc<ReceiptSigner>, String>,
    /// Every answer carries a receipt.
    pub(super) require: bool,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Self {
            signer: Err("this server was started without a receipt key".into()),
            require: false,
        }
    }
}

/// A call that will carry a receipt.
pub(super) struct Ask {
    /// The salt the server drew (the client sent none), to return with the answer.
    pub(super) drawn_salt: Option<Vec<u8>>,
    /// The request's keyed digest.
    pub(super) request: [u8; 32],
    pub(super) signer: Arc<ReceiptSigner>,
    pub(super) rpc: &'static str,
    /// Tells the audit writer that this call's record is on its way (taken when it is
    /// queued; dropped with the call if it fails first).
    pub(super) expected: Option<crate::audit::ReceiptExpected>,
}

/// A receipt for a front end to return.
#[derive(Debug, Clone)]
pub struct SignedReceipt {
    /// The receipt (a tagged COSE_Sign1).
    pub cose: Vec<u8>,
    /// The salt the server drew, when the client sent none: the client needs it to prove
    /// which request the receipt is for.
    pub drawn_salt: Option<Vec<u8>>,
}

const X_RECEIPT: HeaderName = HeaderName::from_static(SALT_HEADER);

impl Pipeline {
    /// Signs receipts with `signer` (or, if it is an error, refuses requests that ask for
    /// one, saying why); with `require`, every answer carries one.
    pub fn with_receipts(
        mut self,
        signer: Result<Arc<ReceiptSigner>, String>,
        require: bool,
    ) -> Self {
        self.receipts = ReceiptSettings { signer, require };
        self
    }

    /// The receipt key, when this pipeline signs receipts.
    pub fn receipt_signer(&self) -> Option<&Arc<ReceiptSigner>> {
        self.receipts.signer.as_ref().ok()
    }

    /// Whether `call` will carry a receipt, with its request digest (taken now, before the
    /// input is consumed).
    pub(super) fn receipt_ask(
        &self,
        ctx: &CallContext,
        call: &PredictCall,
    ) -> Result<Option<Ask>, ApiError> {
        // One header lookup per request; none of the work below unless a receipt is due.
        let asked = AsRef::<http::HeaderMap>::as_ref(&ctx.metadata).get(&X_RECEIPT);
        if asked.is_none() && !self.receipts.require {
            // The receipts' gathering holds a group for the calls in flight that may bring
            // receipts: it learns what share of calls do.
            if let Some(audit) = &self.audit {
                audit.note_call_without_receipt();
            }
            return Ok(None);
        }
        let signer = match &self.receipts.signer {
            Ok(s) if self.audit.is_some() => Arc::clone(s),
            Ok(_) => {
                return Err(ApiError::Precondition(
                    "receipts state the call's audit record, and this server keeps no audit log"
                        .into(),
                ));
            }
            Err(why) => {
                return Err(ApiError::Precondition(format!(
                    "this server cannot sign receipts: {why}"
                )));
            }
        };
        // The client's salt is parsed onto the stack; a salt the server draws goes back to
        // the client with the answer.
        let mut parsed = [0u8; crate::receipt::MAX_SALT];
        let mut drawn = None;
        let salt: &[u8] = match asked.map(|v| v.to_str()) {
            Some(Ok(text)) => crate::receipt::parse_salt_into(text, &mut parsed)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
            Some(Err(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "{SALT_HEADER} must be the salt in hex"
                )));
            }
            None => drawn.insert(
                crate::receipt::new_salt().map_err(|e| ApiError::Unavailable(e.to_string()))?,
            ),
        };
        let input = if call.texts.is_empty() {
            digest::RequestInput::Rows {
                shape: &call.shape,
                values: &call.values,
            }
        } else {
            digest::RequestInput::Texts(&call.texts)
        };
        Ok(Some(Ask {
            request: digest::request(salt, input),
            drawn_salt: drawn,
            signer,
            rpc: call.api.as_str(),
            expected: self.audit.as_ref().map(|a| a.expect_receipt()),
        }))
    }

    /// The draft of an answer's receipt.
    pub(super) fn receipt_draft<'a>(ask: &Ask, out: &'a PredictOutcome, epsilon: f64) -> Draft<'a> {
        let response =
            digest::response(out.rows as u64, out.width as u64, &out.values, &out.labels);
        Self::draft(ask, &out.request_id, &out.model, response, epsilon)
    }

    /// The draft of an explanation's receipt (explanations spend no ε: they are refused
    /// under every output privacy policy).
    pub(super) fn explanation_draft<'a>(ask: &Ask, out: &'a ExplainOutcome) -> Draft<'a> {
        let items: Vec<digest::Explained<'_>> = out
            .attributions
            .iter()
            .enumerate()
            .map(|(i, a)| digest::Explained {
                target: a.target as u64,
                attributions: &a.attributions,
                output_at_input: a.output_at_input,
                output_at_baseline: a.output_at_baseline,
                completeness_error: a.completeness_error,
                steps: a.steps as u64,
                tokens: out.texts.get(i).map_or(&[][..], |t| &t.tokens[..]),
            })
            .collect();
        let baseline_token = out.texts.first().map_or("", |t| t.baseline_token.as_str());
        let response = digest::explanation(&items, &out.baseline, baseline_token);
        Self::draft(ask, &out.request_id, &out.model, response, 0.0)
    }

    fn draft<'a>(
        ask: &Ask,
        request_id: &'a str,
        model: &'a LoadedModel,
        response: [u8; 32],
        epsilon: f64,
    ) -> Draft<'a> {
        Draft {
            signer: Arc::clone(&ask.signer),
            rpc: ask.rpc,
            request_id: request_id.into(),
            request: ask.request,
            response,
            model: model.id().into(),
            version: model.version().into(),
            manifest: model.provenance().manifest_sha256,
            epsilon,
        }
    }
}
