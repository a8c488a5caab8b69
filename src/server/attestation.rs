//! `confidant.v1.Attestation`: evidence binding the server's TLS key to this TEE.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::confidant::v1 as pb;
use crate::tee::Attester;
use crate::tls::tls_report_data;

/// The Attestation service.
#[derive(Clone)]
pub struct AttestationService {
    attester: Arc<dyn Attester>,
    spki_sha256: [u8; 32],
}

impl AttestationService {
    /// The service for a server whose TLS leaf certificate has this SPKI hash.
    pub fn new(attester: Arc<dyn Attester>, spki_sha256: [u8; 32]) -> Self {
        Self {
            attester,
            spki_sha256,
        }
    }
}

#[tonic::async_trait]
impl pb::attestation_server::Attestation for AttestationService {
    async fn get_evidence(
        &self,
        request: Request<pb::GetEvidenceRequest>,
    ) -> Result<Response<pb::GetEvidenceResponse>, Status> {
        let nonce = request.into_inner().nonce;
        if !(16..=64).contains(&nonce.len()) {
            return Err(Status::invalid_argument(format!(
                "the nonce must be 16 to 64 bytes, got {}",
                nonce.len()
            )));
        }
        let report_data = tls_report_data(&nonce, &self.spki_sha256);
        let attester = Arc::clone(&self.attester);
        let evidence = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
            .await
            .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, "the TEE refused to produce evidence");
                Status::unavailable(format!("the TEE could not produce evidence: {e}"))
            })?;
        let evidence_json = evidence.to_json().map_err(|e| {
            tracing::error!(error = %e, "evidence does not serialize");
            Status::internal("internal error; see server logs")
        })?;
        Ok(Response::new(pb::GetEvidenceResponse {
            evidence_json,
            tls_spki_sha256: hex::encode(self.spki_sha256),
        }))
    }
}
