//! `confidant.v1.Attestation`: evidence binding the server's TLS key to this TEE.
//!
//! Evidence vouches only for a key born inside the TEE. When the TLS key came from files
//! the operator gave (`--tls-cert`/`--tls-key`, `[tls]`), anyone holding a copy could
//! terminate TLS and relay this call, and the binding would pass every client check: so
//! `GetEvidence` is refused (FAILED_PRECONDITION) and no evidence is produced at all.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pipeline::ApiError;

use crate::proto::confidant::v1 as pb;
use crate::tee::Attester;
use crate::tls::{KeyOrigin, tls_report_data};

/// The Attestation service.
#[derive(Clone)]
pub struct AttestationService {
    attester: Arc<dyn Attester>,
    spki_sha256: [u8; 32],
    key_origin: KeyOrigin,
    /// The receipt key, or why there is none.
    receipts: Result<Arc<crate::receipt::ReceiptSigner>, String>,
}

impl AttestationService {
    /// The service for a server whose TLS leaf certificate has this SPKI hash, and whose
    /// private key was born as `key_origin` says.
    pub fn new(attester: Arc<dyn Attester>, spki_sha256: [u8; 32], key_origin: KeyOrigin) -> Self {
        Self {
            attester,
            spki_sha256,
            key_origin,
            receipts: Err("receipts are not configured".into()),
        }
    }

    /// Also serves the receipt key's evidence (`GetReceiptEvidence`).
    pub fn with_receipts(
        mut self,
        receipts: Result<Arc<crate::receipt::ReceiptSigner>, String>,
    ) -> Self {
        self.receipts = receipts;
        self
    }
}

#[tonic::async_trait]
impl pb::attestation_server::Attestation for AttestationService {
    async fn get_evidence(
        &self,
        request: Request<pb::GetEvidenceRequest>,
    ) -> Result<Response<pb::GetEvidenceResponse>, Status> {
        // Every refusal is an ApiError, so its status code is chosen in the one place
        // (`pipeline::error`) that all services share.
        if self.key_origin != KeyOrigin::InProcess {
            return Err(ApiError::Precondition(
                "this server's TLS key was given by the operator (--tls-cert/--tls-key or \
                 [tls]), not made inside the TEE: evidence cannot vouch that the TLS peer is \
                 this server, so none is given. Serve without a configured TLS key to be \
                 attested."
                    .into(),
            )
            .into());
        }
        let nonce = request.into_inner().nonce;
        if !(16..=64).contains(&nonce.len()) {
            return Err(ApiError::BadRequest(format!(
                "the nonce must be 16 to 64 bytes, got {}",
                nonce.len()
            ))
            .into());
        }
        let report_data = tls_report_data(&nonce, &self.spki_sha256);
        let attester = Arc::clone(&self.attester);
        let evidence = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
            .await
            .map_err(|e| ApiError::Internal(format!("attestation task failed: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, "the TEE refused to produce evidence");
                ApiError::Unavailable(format!("the TEE could not produce evidence: {e}"))
            })?;
        let evidence_json = evidence
            .to_json()
            .map_err(|e| ApiError::Internal(format!("evidence does not serialize: {e}")))?;
        Ok(Response::new(pb::GetEvidenceResponse {
            evidence_json,
            tls_spki_sha256: hex::encode(self.spki_sha256),
        }))
    }

    async fn get_receipt_evidence(
        &self,
        _request: Request<pb::GetReceiptEvidenceRequest>,
    ) -> Result<Response<pb::GetReceiptEvidenceResponse>, Status> {
        let signer = self.receipts.as_ref().map_err(|why| {
            ApiError::Precondition(format!("this server signs no receipts: {why}"))
        })?;
        let evidence_json = String::from_utf8(signer.evidence_json().to_vec())
            .map_err(|_| ApiError::Internal("the receipt evidence is not UTF-8".into()))?;
        Ok(Response::new(pb::GetReceiptEvidenceResponse {
            evidence_json,
            public_key: hex::encode(signer.public_key()),
        }))
    }
}
