//! The attested channel: trust from evidence, not from a CA.
//!
//! The client opens TLS with a verifier that accepts any certificate but proves the server
//! holds its key (the handshake signature is checked) and records the certificate's
//! SubjectPublicKeyInfo. It then sends a fresh nonce to `Attestation.GetEvidence`, verifies
//! the evidence against the caller's policy (measurement, TCB, debug, simulated), and checks
//! that the evidence's report_data is `SHA-512("confidant-tls-v1" ‖ nonce ‖ SHA-256(SPKI))`
//! for the SPKI of *this* connection. Only then does it hand back a [`Client`]; until then
//! no credential and no data has left it. The SPKI is then pinned: if the channel ever
//! reconnects to a server with another key, the handshake fails.
//!
//! A relay that terminates TLS with its own key and forwards the attestation call is caught:
//! the evidence binds the real server's key, and the client sees the relay's.
//!
//! # GPUs
//!
//! A server that serves on GPUs answers with their evidence as well (`gpu_evidence_json`),
//! each GPU answering `SHA-256("confidant/v1/nvidia-gpu-nonce" ‖ 0x00 ‖ nonce)`, and its CPU
//! report binds `SHA-512("confidant-tls-gpu-v1" ‖ nonce ‖ SHA-256(SPKI) ‖ SHA-384(GPU
//! evidence))` instead ([`channel_report_data`]). The client judges the GPUs exactly as the key
//! broker does, with the same code ([`verify_gpus`], then [`judge_gpus`]) and the RIMs and
//! OCSP responses it holds ([`ChannelPolicy::gpu_references`]), fail closed: a policy with a
//! `[gpu]` section needs passing evidence from its number of GPUs, and a policy without one
//! accepts only a server that serves on CPU and sent none. GPU evidence from another session
//! does not answer this nonce; GPU evidence added to, removed from or swapped into a report
//! that bound something else breaks the binding.

use std::sync::{Arc, Mutex};

use confidant_attestation::nvidia::{
    GpuEvidenceSet, HeldReferences, gpu_nonce, judge_gpus, verify_gpus,
};
use confidant_attestation::{Evidence, Policy, Timestamp, Verdict};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::Endpoint;

use super::{Client, ClientError};
use crate::proto::confidant::v1 as pb;
use crate::tls::{channel_report_data, spki_sha256};

/// What a client requires of a server before it sends anything: its attestation policy
/// (`[gpu]` included) and, for the GPU measurements, the NVIDIA references it holds.
#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    /// The attestation policy (CPU claims, and its `[gpu]` section for the GPUs).
    pub policy: Policy,
    /// The driver and VBIOS RIMs and the OCSP responses this client holds (never what the
    /// server sends). Without RIMs for a GPU its measurements are not compared, so a policy
    /// with `cc_mode = "on"` refuses it.
    pub gpu_references: HeldReferences,
}

impl ChannelPolicy {
    /// `policy`, holding no GPU references.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            gpu_references: HeldReferences::default(),
        }
    }

    /// The same policy, holding `references` for GPU evidence.
    pub fn with_gpu_references(mut self, references: HeldReferences) -> Self {
        self.gpu_references = references;
        self
    }
}

impl From<Policy> for ChannelPolicy {
    fn from(policy: Policy) -> Self {
        Self::new(policy)
    }
}

/// What the attested channel verified: the CPU TEE's verdict and one per GPU the server
/// serves on (judged by the policy's `[gpu]` section; empty for a server on CPU).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelVerdict {
    /// The CPU TEE's verdict (its fields at the top level of the JSON form).
    #[serde(flatten)]
    pub cpu: Verdict,
    /// One verdict per GPU, in the TEE-wide form `confidant attest verify` prints.
    pub gpus: Vec<Verdict>,
}

#[derive(Debug, Default)]
struct Binding {
    /// SHA-256 of the SPKI the last handshake presented.
    seen: Option<[u8; 32]>,
    /// Once attested, the only SPKI accepted.
    pinned: Option<[u8; 32]>,
}

#[derive(Debug)]
struct BindingVerifier {
    binding: Arc<Mutex<Binding>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for BindingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let spki = spki_sha256(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut b = self.binding.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pinned) = b.pinned
            && pinned != spki
        {
            return Err(rustls::Error::General(
                "the server's TLS key is not the one its attestation bound".into(),
            ));
        }
        b.seen = Some(spki);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Connects to `addr` (`https://HOST:PORT`), verifies the server's attestation against
/// `policy` and its binding to this TLS connection, and returns a client and the verdict.
/// Nothing but the attestation request is sent before both checks pass.
pub async fn connect_attested(
    addr: &str,
    policy: &ChannelPolicy,
) -> Result<(Client, ChannelVerdict), ClientError> {
    let (channel, verdict) = connect_attested_channel(addr, policy).await?;
    Ok((Client::from_channel(channel), verdict))
}

/// Like [`connect_attested`], returning the verified HTTP/2 channel itself (for other
/// protocols on the same port, such as the Open Inference Protocol).
pub async fn connect_attested_channel(
    addr: &str,
    policy: &ChannelPolicy,
) -> Result<(tonic::transport::Channel, ChannelVerdict), ClientError> {
    let bad = |problem: &str| ClientError::Address {
        addr: addr.to_string(),
        problem: problem.to_string(),
    };
    let rest = addr
        .strip_prefix("https://")
        .ok_or_else(|| bad("the scheme must be https:// (Confidant only speaks TLS)"))?;
    let authority = rest.trim_end_matches('/');
    let uri: tonic::codegen::http::Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| bad(&format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| bad(&format!("server name: {e}")))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let binding = Arc::new(Mutex::new(Binding::default()));
    let verifier = Arc::new(BindingVerifier {
        binding: Arc::clone(&binding),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider) as Arc<CryptoProvider>)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (connector, host, server_name) = (connector.clone(), host.clone(), server_name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from(uri)
        .connect_with_connector(connect)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;

    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)
        .map_err(|e| ClientError::Attestation(format!("no randomness: {e}")))?;
    let response = pb::attestation_client::AttestationClient::new(channel.clone())
        .get_evidence(pb::GetEvidenceRequest {
            nonce: nonce.to_vec(),
        })
        .await
        .map_err(|s| match s.code() {
            // A server that will not vouch for its TLS key (one the operator gave it) is a
            // refusal of attestation, not a transport failure.
            tonic::Code::FailedPrecondition => ClientError::Attestation(format!(
                "the server gives no evidence for this channel: {}",
                s.message()
            )),
            _ => ClientError::Status(s),
        })?
        .into_inner();
    let seen = binding
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .seen
        .ok_or_else(|| ClientError::Attestation("no TLS certificate was seen".into()))?;
    let now = Timestamp::from_unix_seconds(crate::unix_now().max(0) as u64);
    let verdict = check_evidence(
        &response,
        &Expected {
            nonce: &nonce,
            spki_sha256: seen,
            gpu_nonce: gpu_nonce(&nonce),
            now,
            gpu_now: now,
        },
        policy,
    )?;
    binding.lock().unwrap_or_else(|p| p.into_inner()).pinned = Some(seen);
    Ok((channel, verdict))
}

/// What one `GetEvidence` answer must show.
#[derive(Debug)]
struct Expected<'a> {
    /// The nonce the client sent.
    nonce: &'a [u8],
    /// SHA-256 of the SPKI this connection's handshake presented.
    spki_sha256: [u8; 32],
    /// The nonce every GPU must answer: [`gpu_nonce`] of `nonce` (tests pass the one that
    /// recorded evidence answers).
    gpu_nonce: [u8; 32],
    /// The time the CPU evidence is judged at.
    now: Timestamp,
    /// The time the GPU evidence is judged at: `now` (tests pass one at which recorded
    /// evidence's certificates are valid).
    gpu_now: Timestamp,
}

/// Verifies one `GetEvidence` answer: the CPU evidence against the policy, its binding of
/// this connection's key, the nonce and the GPU evidence sent with it; then the GPUs'
/// integrity against the GPU nonce and the policy's `[gpu]` section (fail closed). Pure: no
/// I/O, the time is in `expected`.
fn check_evidence(
    response: &pb::GetEvidenceResponse,
    expected: &Expected<'_>,
    policy: &ChannelPolicy,
) -> Result<ChannelVerdict, ClientError> {
    let refuse = |what: String| ClientError::Attestation(what);
    let evidence = Evidence::from_json(response.evidence_json.as_bytes())
        .map_err(|e| refuse(format!("the evidence does not parse: {e}")))?;
    let gpus = GpuEvidenceSet::from_canonical_json(&response.gpu_evidence_json)
        .map_err(|e| refuse(format!("the GPU evidence does not parse: {e}")))?;
    let gpu_digest = gpus
        .as_ref()
        .map(GpuEvidenceSet::digest)
        .transpose()
        .map_err(|e| refuse(format!("the GPU evidence does not encode: {e}")))?;
    let verdict = confidant_attestation::verify(&evidence, None, &policy.policy, expected.now);
    if !verdict.failures.is_empty() {
        let reasons: Vec<String> = verdict.failures.iter().map(|f| f.to_string()).collect();
        return Err(refuse(format!(
            "the evidence does not meet the policy: {}",
            reasons.join("; ")
        )));
    }
    let bound = channel_report_data(expected.nonce, &expected.spki_sha256, gpu_digest.as_ref());
    if verdict.report_data.as_deref() != Some(hex::encode(bound).as_str()) {
        return Err(refuse(
            "the evidence does not bind this TLS connection's key (a relay or a \
             man-in-the-middle terminates TLS), or it answers another nonce, or it bound other \
             GPU evidence than the evidence sent with it"
                .into(),
        ));
    }
    // The GPUs: each authentic and answering this channel's GPU nonce, then the policy's
    // `[gpu]` section, fail closed (no `[gpu]`: only a server on CPU passes).
    let set = gpus.map(|s| s.nvidia_gpus).unwrap_or_default();
    let verified = verify_gpus(
        &set,
        &expected.gpu_nonce,
        &policy.gpu_references,
        expected.gpu_now,
    )
    .map_err(|e| refuse(e.to_string()))?;
    let failures = judge_gpus(&policy.policy, &verified.verdicts);
    if !failures.is_empty() {
        let reasons: Vec<String> = failures
            .iter()
            .map(|f| format!("{}: {}", f.check, f.detail))
            .collect();
        let held = if verified.without_rims.is_empty() {
            String::new()
        } else {
            let missing: Vec<String> = verified
                .without_rims
                .iter()
                .map(|(gpu, reason)| format!("GPU {gpu}: {reason}"))
                .collect();
            format!(" (no RIMs held: {})", missing.join("; "))
        };
        return Err(refuse(format!(
            "the GPU evidence does not meet the policy: {}{held}",
            reasons.join("; ")
        )));
    }
    Ok(ChannelVerdict {
        cpu: verdict,
        gpus: verified
            .verdicts
            .iter()
            .map(|v| v.judge(&policy.policy))
            .collect(),
    })
}

#[cfg(test)]
mod tests;
