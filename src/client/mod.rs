//! The Rust client: a TLS channel to a Confidant server, Predict and ListModels.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confidant::client::ClientError> {
//! let ca = std::fs::read("confidant-data/tls/cert.pem").unwrap_or_default();
//! let mut client = confidant::client::Client::connect("https://127.0.0.1:50051", &ca).await?;
//! let p = client.predict("demo", &[vec![0.0; 30]]).await?;
//! println!("{:?}", p.labels);
//! # Ok(()) }
//! ```

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::proto::confidant::v1 as pb;
use pb::inference_client::InferenceClient;

pub mod attested;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not a usable URL.
    #[error("invalid server address {addr:?}: {problem}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        problem: String,
    },
    /// The connection or TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The server refused or failed the call.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    /// Rows of different widths.
    #[error("row {row} has {found} values, row 0 has {expected}")]
    RaggedRows {
        /// The row.
        row: usize,
        /// Its width.
        found: usize,
        /// Row 0's width.
        expected: usize,
    },
    /// An API key or purpose that cannot be sent.
    #[error("{0}")]
    Credentials(String),
    /// The server's attestation did not verify, or does not bind this connection; nothing
    /// was sent.
    #[error("attestation refused, nothing was sent: {0}")]
    Attestation(String),
    /// The server's answer is malformed.
    #[error("malformed response: {0}")]
    Response(String),
}

// Not `#[from]`: that would also make the status the error's source, and error chains would
// print it twice.
impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

pub use crate::proto::code_name;

/// A prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The model id.
    pub model: String,
    /// The model version.
    pub model_version: String,
    /// The server's request id.
    pub request_id: String,
    /// One output row per input row.
    pub outputs: Vec<Vec<f32>>,
    /// The argmax label per row.
    pub labels: Vec<String>,
    /// Rows that the server's adversarial-sensitivity screening flagged.
    pub flagged_rows: Vec<u32>,
    /// The differential-privacy receipt, for models with an output privacy policy.
    #[serde(skip)]
    pub privacy: Option<pb::PrivacyReceipt>,
    /// What `outputs` hold: `scores` (with `labels`) or `embedding` (a text embedding
    /// model's vectors).
    pub output_kind: String,
    /// Tokens of a text request, after truncation (0 for rows).
    pub tokens: u64,
    /// The answer's receipt (a tagged COSE_Sign1), when one was asked for or the server
    /// requires them.
    #[serde(skip)]
    pub receipt: Option<Vec<u8>>,
    /// The salt that keys the receipt's request digest: this client's
    /// ([`Client::with_receipt_salt`]) or, when it sent none, the one the server drew.
    #[serde(skip)]
    pub receipt_salt: Option<Vec<u8>>,
}

/// A connected client.
#[derive(Clone)]
pub struct Client {
    inner: InferenceClient<Channel>,
    privacy: pb::privacy_client::PrivacyClient<Channel>,
    attestation: pb::attestation_client::AttestationClient<Channel>,
    receipt_salt: Option<Vec<u8>>,
    /// The salt as its header value, encoded once.
    receipt_header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    api_key: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    purpose: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    subject: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects over TLS, trusting `ca_pem` (the server's certificate or its CA).
    pub async fn connect(addr: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        Self::connect_with_identity(addr, ca_pem, None).await
    }

    /// Connects over TLS, and over mutual TLS when `identity` (a PEM certificate chain and
    /// its PEM private key) is given: a server configured with a client CA then maps the
    /// certificate to its registered principal.
    pub async fn connect_with_identity(
        addr: &str,
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<Self, ClientError> {
        let endpoint =
            Endpoint::from_shared(addr.to_string()).map_err(|e| ClientError::Address {
                addr: addr.to_string(),
                problem: e.to_string(),
            })?;
        if endpoint.uri().scheme_str() != Some("https") {
            return Err(ClientError::Address {
                addr: addr.to_string(),
                problem: "the scheme must be https:// (Confidant only speaks TLS)".into(),
            });
        }
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        let channel = endpoint
            .tls_config(tls)
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an established channel.
    pub(crate) fn from_channel(channel: Channel) -> Self {
        Self {
            inner: InferenceClient::new(channel.clone()).max_decoding_message_size(1 << 30),
            privacy: pb::privacy_client::PrivacyClient::new(channel.clone()),
            attestation: pb::attestation_client::AttestationClient::new(channel),
            receipt_salt: None,
            receipt_header: None,
            api_key: None,
            purpose: None,
            subject: None,
        }
    }

    /// Names a data subject (`x-subject-id`) in every call; the server then requires its
    /// consent for the declared purpose.
    pub fn with_subject(mut self, subject: &str) -> Result<Self, ClientError> {
        let v = subject
            .parse()
            .map_err(|_| ClientError::Response("the subject id is not valid header text".into()))?;
        self.subject = Some(v);
        Ok(self)
    }

    /// Sends this API key (`x-api-key`) with every call.
    pub fn with_api_key(mut self, key: &str) -> Result<Self, ClientError> {
        let mut v: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            key.parse().map_err(|_| {
                ClientError::Credentials(
                    "the API key has characters not allowed in a header".into(),
                )
            })?;
        v.set_sensitive(true);
        self.api_key = Some(v);
        Ok(self)
    }

    /// Declares this purpose (`x-purpose`) with every call.
    pub fn with_purpose(mut self, purpose: &str) -> Result<Self, ClientError> {
        self.purpose = Some(purpose.parse().map_err(|_| {
            ClientError::Credentials("the purpose has characters not allowed in a header".into())
        })?);
        Ok(self)
    }

    /// Asks for a receipt with every prediction, keying its request digest with `salt`
    /// (16 to 64 bytes; sent as `x-confidant-receipt`). Keep the salt with the request: the
    /// receipt does not contain it.
    pub fn with_receipt_salt(mut self, salt: &[u8]) -> Result<Self, ClientError> {
        if !crate::receipt::SALT_BYTES.contains(&salt.len()) {
            return Err(ClientError::Credentials(format!(
                "a receipt salt is 16 to 64 bytes, got {}",
                salt.len()
            )));
        }
        // Hex digits are always a valid header value.
        self.receipt_header = hex::encode(salt).parse().ok();
        self.receipt_salt = Some(salt.to_vec());
        Ok(self)
    }

    /// The server's receipt key and the evidence that binds it.
    pub async fn receipt_evidence(
        &mut self,
    ) -> Result<pb::GetReceiptEvidenceResponse, ClientError> {
        Ok(self
            .attestation
            .get_receipt_evidence(pb::GetReceiptEvidenceRequest {})
            .await?
            .into_inner())
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(v) = &self.receipt_header {
            req.metadata_mut()
                .insert(crate::receipt::SALT_HEADER, v.clone());
        }
        if let Some(k) = &self.api_key {
            req.metadata_mut().insert("x-api-key", k.clone());
        }
        if let Some(p) = &self.purpose {
            req.metadata_mut().insert("x-purpose", p.clone());
        }
        if let Some(s) = &self.subject {
            req.metadata_mut().insert("x-subject-id", s.clone());
        }
        req
    }

    /// Predicts `rows` (all the same width) with `model`.
    pub async fn predict(
        &mut self,
        model: &str,
        rows: &[Vec<f32>],
    ) -> Result<Prediction, ClientError> {
        let width = rows.first().map_or(0, Vec::len);
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(ClientError::RaggedRows {
                row,
                found: r.len(),
                expected: width,
            });
        }
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        self.predict_packed(model, values, rows.len(), width).await
    }

    /// Predicts packed row-major values of shape `[rows, width]`.
    pub async fn predict_packed(
        &mut self,
        model: &str,
        values: Vec<f32>,
        rows: usize,
        width: usize,
    ) -> Result<Prediction, ClientError> {
        let req = pb::PredictRequest {
            model: model.to_string(),
            version: String::new(),
            input: Some(pb::Tensor {
                shape: vec![rows as u64, width as u64],
                values,
            }),
            texts: Vec::new(),
        };
        self.predict_request(req, rows).await
    }

    /// Predicts from texts (a text model): embeddings, or a classifier's scores and labels,
    /// one row per text.
    pub async fn predict_texts(
        &mut self,
        model: &str,
        texts: Vec<String>,
    ) -> Result<Prediction, ClientError> {
        let rows = texts.len();
        let req = pb::PredictRequest {
            model: model.to_string(),
            version: String::new(),
            input: None,
            texts,
        };
        self.predict_request(req, rows).await
    }

    async fn predict_request(
        &mut self,
        req: pb::PredictRequest,
        rows: usize,
    ) -> Result<Prediction, ClientError> {
        let mut resp = self.inner.predict(self.request(req)).await?.into_inner();
        let receipt = (!resp.receipt.is_empty()).then(|| std::mem::take(&mut resp.receipt));
        let receipt_salt = if resp.receipt_salt.is_empty() {
            self.receipt_salt.clone().filter(|_| receipt.is_some())
        } else {
            Some(std::mem::take(&mut resp.receipt_salt))
        };
        let out = resp
            .output
            .ok_or_else(|| ClientError::Response("no output tensor".into()))?;
        let [out_rows, out_width] = out.shape[..] else {
            return Err(ClientError::Response(format!(
                "output shape {:?}",
                out.shape
            )));
        };
        if out_rows as usize != rows || out.values.len() as u64 != out_rows * out_width {
            return Err(ClientError::Response(
                "output size does not match its shape".into(),
            ));
        }
        let outputs = if out_width == 0 {
            vec![Vec::new(); rows]
        } else {
            out.values
                .chunks(out_width as usize)
                .map(<[f32]>::to_vec)
                .collect()
        };
        Ok(Prediction {
            model: resp.model,
            model_version: resp.model_version,
            request_id: resp.request_id,
            outputs,
            labels: resp.labels,
            flagged_rows: resp.flagged_rows,
            privacy: resp.privacy,
            output_kind: resp.output_kind,
            tokens: resp.tokens,
            receipt,
            receipt_salt,
        })
    }

    /// A principal's privacy budget (empty: the caller's own).
    pub async fn get_budget(&mut self, principal: &str) -> Result<pb::Budget, ClientError> {
        let req = self.request(pb::GetBudgetRequest {
            principal: principal.to_string(),
        });
        Ok(self.privacy.get_budget(req).await?.into_inner())
    }

    /// Grants or withdraws a data subject's consent for a purpose (admin scope).
    pub async fn set_consent(
        &mut self,
        subject: &str,
        purpose: &str,
        granted: bool,
        source: &str,
    ) -> Result<pb::ConsentReceipt, ClientError> {
        let req = self.request(pb::SetConsentRequest {
            subject: subject.to_string(),
            purpose: purpose.to_string(),
            granted,
            source: source.to_string(),
        });
        Ok(self.privacy.set_consent(req).await?.into_inner())
    }

    /// Forgets a data subject (admin scope); returns the signed erasure receipt.
    pub async fn forget(&mut self, subject: &str) -> Result<pb::ErasureReceipt, ClientError> {
        let req = self.request(pb::ForgetRequest {
            subject: subject.to_string(),
        });
        Ok(self.privacy.forget(req).await?.into_inner())
    }

    /// Explains `rows` by integrated gradients (explain scope); `target` is the output column
    /// (default: each row's argmax).
    pub async fn explain(
        &mut self,
        model: &str,
        rows: &[Vec<f32>],
        target: Option<u32>,
    ) -> Result<pb::ExplainResponse, ClientError> {
        let width = rows.first().map_or(0, Vec::len);
        let req = self.request(pb::ExplainRequest {
            model: model.to_string(),
            version: String::new(),
            input: Some(pb::Tensor {
                shape: vec![rows.len() as u64, width as u64],
                values: rows.iter().flatten().copied().collect(),
            }),
            target,
            texts: Vec::new(),
        });
        Ok(self.inner.explain(req).await?.into_inner())
    }

    /// Explains a text model's outputs for `texts`: per-token attributions in
    /// `text_attributions`.
    pub async fn explain_texts(
        &mut self,
        model: &str,
        texts: Vec<String>,
        target: Option<u32>,
    ) -> Result<pb::ExplainResponse, ClientError> {
        let req = self.request(pb::ExplainRequest {
            model: model.to_string(),
            version: String::new(),
            input: None,
            target,
            texts,
        });
        Ok(self.inner.explain(req).await?.into_inner())
    }

    /// Lists the loaded models.
    pub async fn list_models(&mut self) -> Result<Vec<pb::ModelInfo>, ClientError> {
        Ok(self
            .inner
            .list_models(self.request(pb::ListModelsRequest {}))
            .await?
            .into_inner()
            .models)
    }
}
