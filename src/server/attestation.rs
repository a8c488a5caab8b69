//! `confidant.v1.Attestation`: evidence binding the server's TLS key to this TEE.

use std::sync::Arc;

use sha2::{Digest, Sha256, Sha512};
use tonic::{Request, Response, Status};

use crate::proto::confidant::v1 as pb;
use crate::tee::Attester;

/// The domain tag of the TLS binding.
pub const TLS_BINDING_DOMAIN: &[u8] = b"confidant-tls-v1";

/// `SHA-512("confidant-tls-v1" ‖ nonce ‖ spki_sha256)`: the report_data of channel evidence.
pub fn tls_report_data(nonce: &[u8], spki_sha256: &[u8; 32]) -> [u8; 64] {
    Sha512::new()
        .chain_update(TLS_BINDING_DOMAIN)
        .chain_update(nonce)
        .chain_update(spki_sha256)
        .finalize()
        .into()
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], String> {
    let der = rustls::pki_types::CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("the certificate does not parse: {e:?}"))?;
    Ok(Sha256::digest(cert.subject_public_key_info().as_ref()).into())
}

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
