//! What a front end hands the pipeline (the caller's context, a prediction call) and what
//! it gets back (outcomes, receipts), plus the bounds on Explain's work.

use super::*;

/// The request headers the guards read.
pub(super) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(super) const X_PURPOSE: HeaderName = HeaderName::from_static("x-purpose");
pub(super) const X_SUBJECT_ID: HeaderName = HeaderName::from_static("x-subject-id");

/// What a front end knows about the caller: its request metadata and, over mutual TLS, the
/// certificate chain it presented (already verified by the TLS layer).
#[derive(Debug, Default)]
pub struct CallContext {
    /// The request metadata (headers).
    pub metadata: MetadataMap,
    /// The client's certificate chain, leaf first, when it presented one.
    pub peer_certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
}

/// The client's verified certificate chain, from the connection's
/// [`crate::tls::grpc::TlsPeer`] (the gRPC port terminates TLS itself).
fn peer_certs<T>(
    request: &tonic::Request<T>,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    request
        .extensions()
        .get::<crate::tls::grpc::TlsPeer>()
        .and_then(|peer| peer.certs.clone())
}

impl CallContext {
    /// Splits a tonic request into the caller's context and the message.
    pub fn split<T>(request: tonic::Request<T>) -> (Self, T) {
        let peer_certs = peer_certs(&request);
        let (metadata, _, message) = request.into_parts();
        (
            Self {
                metadata,
                peer_certs,
            },
            message,
        )
    }

    /// The context of a request, keeping the message in place.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            metadata: request.metadata().clone(),
            peer_certs: peer_certs(request),
        }
    }

    /// A header as text, looked up by a parsed name (a `&str` would be parsed and
    /// validated again on every lookup).
    pub(super) fn header(&self, name: &HeaderName) -> Option<&str> {
        AsRef::<http::HeaderMap>::as_ref(&self.metadata)
            .get(name)
            .and_then(|v| v.to_str().ok())
    }
}

/// One prediction, as any front end asks for it.
#[derive(Debug, Clone, Default)]
pub struct PredictCall {
    /// The model id.
    pub model: String,
    /// The version the caller requires, or empty for whatever is loaded.
    pub version: String,
    /// The input shape, `[rows, features]`.
    pub shape: Vec<u64>,
    /// The input values, row-major.
    pub values: Vec<f32>,
    /// A text model's input: one text per element, as the caller sent its bytes (the
    /// pipeline checks that each is UTF-8, so that every front door refuses alike).
    pub texts: Vec<Vec<u8>>,
    /// The front door serves embeddings only (OpenAI's `/v1/embeddings`): a model whose
    /// outputs are class scores is refused (INVALID_ARGUMENT) before anything is spent.
    pub embeddings_only: bool,
    /// The API call, as receipts name it.
    pub api: Api,
}

/// Which API call a prediction came through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Api {
    /// `confidant.v1.Inference/Predict`.
    #[default]
    Predict,
    /// The Open Inference Protocol's `ModelInfer`.
    ModelInfer,
    /// OpenAI's `POST /v1/embeddings`.
    Embeddings,
    /// `confidant.v1.Inference/Explain`.
    Explain,
}

impl Api {
    /// The name receipts state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::ModelInfer => "model_infer",
            Self::Embeddings => "embeddings",
            Self::Explain => "explain",
        }
    }
}

/// A prediction, ready for a front end to encode.
#[derive(Clone)]
pub struct PredictOutcome {
    /// The model that answered.
    pub model: Arc<LoadedModel>,
    /// The server-generated request id (also in the audit log).
    pub request_id: String,
    /// Rows predicted.
    pub rows: usize,
    /// Outputs per row.
    pub width: usize,
    /// `rows × width` scores, row-major.
    pub values: Vec<f32>,
    /// The argmax per row.
    pub label_indices: Vec<u32>,
    /// The argmax label per row.
    pub labels: Vec<String>,
    /// Rows that adversarial-sensitivity screening flagged (ascending). Empty under a
    /// differential-privacy policy: a flag is a non-private function of the scores, so it
    /// goes to the audit record only.
    pub flagged_rows: Vec<u32>,
    /// What the release cost, when the model has an output policy other than `none`.
    pub receipt: Option<Receipt>,
    /// Tokens of a text model's request, after truncation (0 for rows).
    pub tokens: usize,
    /// The answer's receipt, when it was asked for or is required.
    pub signed_receipt: Option<super::receipts::SignedReceipt>,
}

/// Explanations, ready for a front end to encode.
#[derive(Clone)]
pub struct ExplainOutcome {
    /// The model explained.
    pub model: Arc<LoadedModel>,
    /// The request id (also in the audit log).
    pub request_id: String,
    /// Rows explained.
    pub rows: usize,
    /// Features per row.
    pub features: usize,
    /// The baseline used.
    pub baseline: Vec<f32>,
    /// One explanation per row.
    pub attributions: Vec<Attribution>,
    /// Rows that adversarial-sensitivity screening flagged (ascending), as Predict reports
    /// them. (Explanations are refused under any privacy policy, so nothing hides them.)
    pub flagged_rows: Vec<u32>,
    /// A text model's texts, parallel to `attributions` (whose values are then one per
    /// token); empty for rows.
    pub texts: Vec<ExplainedText>,
    /// The answer's receipt, when it was asked for or is required.
    pub signed_receipt: Option<super::receipts::SignedReceipt>,
}

/// One explained text's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedText {
    /// Each token as the tokenizer's vocabulary writes it.
    pub tokens: Vec<String>,
    /// Whether each token was added by the tokenizer's template (`[CLS]`, `[SEP]`).
    pub special: Vec<bool>,
    /// Whether the text was cut to the model's `max_tokens` (under `truncate`).
    pub truncated: bool,
    /// The token whose embedding stood for each of the text's own in the baseline.
    pub baseline_token: String,
}

/// `[explain]`: the bound on one Explain request's work and the pool that runs it.
///
/// Integrated gradients evaluates up to [`MAX_POINTS_PER_ROW`] path points per row (for a
/// text model, per token: each point runs all of a text's tokens); a request whose rows (or
/// tokens) × that bound exceeds `max_points_per_request` is refused with
/// RESOURCE_EXHAUSTED before anything is spent. Explanations run on a pool of `workers`
/// threads of their own (candle's parallel kernels inside them included), one request per
/// thread; a request that finds them all busy is refused with RESOURCE_EXHAUSTED, so
/// explanations can never occupy every core that Predict needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplainLimits {
    /// The most path points one request may cost (rows, or a text model's tokens, ×
    /// [`MAX_POINTS_PER_ROW`]).
    pub max_points_per_request: u64,
    /// Explanations computed at once (at least 1).
    pub workers: usize,
}

impl Default for ExplainLimits {
    /// 64 rows per request; half the cores (at least one) for explanations.
    fn default() -> Self {
        Self {
            max_points_per_request: 64 * MAX_POINTS_PER_ROW,
            workers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        }
    }
}

impl ExplainLimits {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ExplainLimitsError> {
        if self.max_points_per_request < MAX_POINTS_PER_ROW {
            return Err(ExplainLimitsError::PointsBelowOneRow(
                self.max_points_per_request,
            ));
        }
        if !(1..=1024).contains(&self.workers) {
            return Err(ExplainLimitsError::Workers(self.workers));
        }
        Ok(())
    }
}

/// An `[explain]` setting out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExplainLimitsError {
    /// `max_points_per_request` below one row's points.
    #[error(
        "explain.max_points_per_request must be at least {MAX_POINTS_PER_ROW} (one row), got {0}"
    )]
    PointsBelowOneRow(u64),
    /// `workers` outside 1 to 1024.
    #[error("explain.workers must be 1 to 1024, got {0}")]
    Workers(usize),
}

/// The privacy receipt of one prediction.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    /// The policy's name.
    pub mechanism: &'static str,
    /// What this request was charged.
    pub charge: Charge,
    /// The caller's budget after it (absent for policies that charge nothing).
    pub budget: Option<BudgetStatus>,
}
