//! The TEE side of RCAR, and the broker's admin client.
//!
//! [`fetch_resource`] runs the whole exchange for one resource: `auth`, a fresh
//! [`TeeKeyPair`], evidence binding the runtime data, `attest`, `GET resource`, and the JWE
//! decryption. It speaks to this crate's broker and to a Trustee KBS alike (HTTPS with a
//! pinned CA, or plain HTTP for a development KBS). The steps are public on
//! [`Connection`], so tests can replay or reorder them.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::error::RcarError;
use super::jwe::{TeeKeyPair, TeePubKey};
use super::protocol::{
    AttestRequest, AttestResponse, AuthRequest, Challenge, ERROR_TYPE_PREFIX, ErrorBody,
    PROTOCOL_VERSION, RuntimeData, SESSION_COOKIE, TeeEvidence, runtime_data_digest,
};
use crate::tee::Attester;
use confidant_attestation::TeeKind;

/// The largest response body read from a broker.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A broker's address and how to trust it.
#[derive(Clone)]
pub struct BrokerEndpoint {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for BrokerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerEndpoint")
            .field("url", &self.url)
            .finish()
    }
}

impl BrokerEndpoint {
    /// `https://HOST[:PORT][/PREFIX]` trusting the CA or self-signed certificate in
    /// `ca_pem`, or `http://…` (no TLS: a development KBS only).
    pub fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, RcarError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(RcarError::Config(format!(
                "broker URL {url:?} must start with https:// (or http:// for a development KBS)"
            )));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = split_authority(authority, if https { 443 } else { 80 })
            .ok_or_else(|| RcarError::Config(format!("broker URL {url:?}: bad HOST:PORT")))?;
        let tls = if https {
            let pem = ca_pem.ok_or_else(|| {
                RcarError::Config(format!(
                    "broker {url} is HTTPS: give the CA or certificate to trust (--broker-ca)"
                ))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| RcarError::Config(format!("broker CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| RcarError::Config(format!("broker CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(RcarError::Config(
                    "the broker CA file holds no PEM certificate".into(),
                ));
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| RcarError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())
                .map_err(|e| RcarError::Config(format!("broker host {host:?}: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            prefix: prefix.trim_end_matches('/').to_owned(),
            tls,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> RcarError {
        RcarError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Opens one HTTP/1.1 connection (kept alive across the RCAR steps).
    pub async fn connect(&self) -> Result<Connection, RcarError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| self.unreachable(format!("TLS: {e}{}", tls_hint(&e))))?;
                handshake(hyper_util::rt::TokioIo::new(tls)).await
            }
            None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
        }
        .map_err(|e| self.unreachable(e))?;
        let host_header = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        Ok(Connection {
            sender,
            host_header,
            prefix: self.prefix.clone(),
            url: self.url.clone(),
            cookie: None,
        })
    }
}

/// What to do about a certificate error that a broker's operator is likely to meet.
fn tls_hint(e: &std::io::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("CaUsedAsEndEntity") {
        " (the broker presents a CA certificate as its own, as `openssl req -x509` makes by \
         default: give --broker-ca the CA that issued the broker's certificate, or give the \
         broker a certificate without basicConstraints CA:TRUE)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (the broker's certificate does not chain to the --broker-ca certificate)"
    } else {
        ""
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "broker connection ended with an error");
        }
    });
    Ok(sender)
}

fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None if !authority.is_empty() => Some((authority.to_owned(), default_port)),
        None => None,
    }
}

/// The first bytes of a body for the debug log: at most 512 characters, then the length.
fn abbreviated(body: &[u8]) -> String {
    const SHOWN: usize = 512;
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!(
            "{}… ({} bytes)",
            text.get(..end).unwrap_or_default(),
            body.len()
        ),
        None => text.into_owned(),
    }
}

/// One connection to a broker, carrying the session cookie between steps.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host_header: String,
    prefix: String,
    url: String,
    cookie: Option<String>,
}

/// A broker's HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Connection {
    /// The session id the broker set, if any.
    pub fn session(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// Replaces the session id sent with later requests (tests use this to replay).
    pub fn set_session(&mut self, session: Option<String>) {
        self.cookie = session;
    }

    /// Sends one request; records a `kbs-session-id` cookie if the broker sets one.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<Answer, RcarError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.host_header)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(id) = &self.cookie {
            builder = builder.header(header::COOKIE, format!("{SESSION_COOKIE}={id}"));
        }
        if let Some(token) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let what = format!("{method} {}{path}", self.prefix);
        let cookie_sent = self.cookie.is_some();
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RcarError::Config(format!("request: {e}")))?;
        let unreachable = |e: &dyn std::fmt::Display| RcarError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        self.sender.ready().await.map_err(|e| unreachable(&e))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let mut cookie_set = false;
        for value in response.headers().get_all(header::SET_COOKIE) {
            if let Some(id) = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
                .and_then(|v| v.split(';').next())
            {
                self.cookie = Some(id.trim().to_owned());
                cookie_set = true;
            }
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(&format!("reading the response: {e}")))?
            .to_bytes();
        // Response bodies carry no plaintext secret (a nonce, a token, a JWE, an error);
        // request bodies are logged only by `auth` and `attest` (admin bodies hold keys).
        tracing::debug!(
            request = %what,
            cookie_sent,
            bearer_sent = bearer.is_some(),
            status = status.as_u16(),
            cookie_set,
            body = %abbreviated(&body),
            "broker exchange"
        );
        Ok(Answer { status, body })
    }

    /// Sends one request and returns the body of a 200 answer; any other status is
    /// [`RcarError::Refused`] with the broker's reason.
    pub async fn step(
        &mut self,
        step: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<Bytes, RcarError> {
        let answer = self.send(method, path, body, bearer).await?;
        if answer.status == StatusCode::OK {
            return Ok(answer.body);
        }
        let (kind, detail) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(e) => (
                e.kind
                    .strip_prefix(ERROR_TYPE_PREFIX)
                    .unwrap_or(&e.kind)
                    .to_owned(),
                e.detail,
            ),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(
                    answer
                        .body
                        .get(..answer.body.len().min(512))
                        .unwrap_or_default(),
                )
                .into_owned(),
            ),
        };
        Err(RcarError::Refused {
            step: step.to_owned(),
            status: answer.status.as_u16(),
            kind,
            detail,
        })
    }

    /// `POST /kbs/v0/auth`: opens a session and returns its challenge.
    pub async fn auth(&mut self, tee: &str) -> Result<Challenge, RcarError> {
        let request = AuthRequest {
            version: PROTOCOL_VERSION.to_owned(),
            tee: tee.to_owned(),
            extra_params: serde_json::Value::String(String::new()),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| RcarError::Config(format!("auth request: {e}")))?;
        tracing::debug!(body = %abbreviated(&body), "broker auth request");
        let answer = self
            .step("auth", Method::POST, "/kbs/v0/auth", body, None)
            .await?;
        serde_json::from_slice(&answer).map_err(|e| RcarError::Protocol {
            step: "auth",
            reason: format!("the challenge does not parse: {e}"),
        })
    }

    /// `POST /kbs/v0/attest`.
    pub async fn attest(&mut self, request: &AttestRequest) -> Result<AttestResponse, RcarError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| RcarError::Config(format!("attest request: {e}")))?;
        tracing::debug!(body = %abbreviated(&body), "broker attest request");
        let answer = self
            .step("attest", Method::POST, "/kbs/v0/attest", body, None)
            .await?;
        serde_json::from_slice(&answer).map_err(|e| RcarError::Protocol {
            step: "attest",
            reason: format!("the response does not parse: {e}"),
        })
    }

    /// `GET /kbs/v0/resource/<path>`: the JWE body.
    pub async fn resource(&mut self, path: &str) -> Result<Bytes, RcarError> {
        self.step(
            &format!("resource {path}"),
            Method::GET,
            &format!("/kbs/v0/resource/{path}"),
            Vec::new(),
            None,
        )
        .await
    }

    /// An admin `POST` (resource or resource-policy) with the admin key.
    pub async fn admin_post(
        &mut self,
        endpoint: &str,
        admin_key: &str,
        body: Vec<u8>,
    ) -> Result<(), RcarError> {
        self.admin_call(Method::POST, endpoint, admin_key, body)
            .await
            .map(|_| ())
    }

    /// An admin request with the admin key; returns the body of the 200 answer.
    pub async fn admin_call(
        &mut self,
        method: Method,
        endpoint: &str,
        admin_key: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, RcarError> {
        self.step(endpoint, method, endpoint, body, Some(admin_key))
            .await
    }
}

/// Sends a signed freshness-anchor request (`POST /kbs/v0/anchor/<deployment>`) and returns
/// the broker's answer. A broker without the anchor API (an upstream Trustee KBS) answers
/// 404, which comes back as [`RcarError::Refused`] with status 404.
pub async fn anchor_request(
    endpoint: &BrokerEndpoint,
    request: &crate::state::anchor::AnchorRequest,
) -> Result<crate::state::anchor::AnchorAnswer, RcarError> {
    let mut conn = endpoint.connect().await?;
    let body = serde_json::to_vec(request)
        .map_err(|e| RcarError::Config(format!("anchor request: {e}")))?;
    let path = format!("/kbs/v0/anchor/{}", request.deployment);
    let answer = conn.step("anchor", Method::POST, &path, body, None).await?;
    serde_json::from_slice(&answer).map_err(|e| RcarError::Protocol {
        step: "anchor",
        reason: format!("the answer does not parse: {e}"),
    })
}

/// The KBS `tee` name for evidence of this kind: simulated evidence is SNP-format and
/// travels as `snp` (a Trustee KBS then rejects its chain, as it should); Trustee's sample
/// evidence travels as `sample`.
pub fn tee_name(kind: TeeKind) -> &'static str {
    match kind {
        TeeKind::Tdx => "tdx",
        TeeKind::Sample => "sample",
        _ => "snp",
    }
}

/// The attest request for `nonce` and `tee_pubkey`: evidence from `attester` binding
/// `SHA-384(JCS(runtime data))`, the runtime data including the GPU evidence of a server on
/// GPUs ([`gpu_additional_evidence`]). Blocking (the TEE interface is file or ioctl I/O).
pub fn attest_request(
    attester: &dyn Attester,
    nonce: &str,
    tee_pubkey: &TeePubKey,
) -> Result<AttestRequest, RcarError> {
    let additional_evidence = gpu_additional_evidence(attester, nonce)?;
    let digest = runtime_data_digest(nonce, tee_pubkey, &additional_evidence).map_err(|e| {
        RcarError::Protocol {
            step: "attest",
            reason: e.to_string(),
        }
    })?;
    let evidence = attester.evidence_for_runtime_digest(&digest)?;
    let primary_evidence = serde_json::to_value(&evidence).map_err(|e| RcarError::Protocol {
        step: "attest",
        reason: format!("evidence does not serialize: {e}"),
    })?;
    Ok(AttestRequest {
        init_data: None,
        runtime_data: RuntimeData {
            nonce: nonce.to_owned(),
            tee_pubkey: tee_pubkey.clone(),
        },
        tee_evidence: TeeEvidence {
            primary_evidence,
            additional_evidence,
        },
    })
}

/// The `additional_evidence` for the challenge `nonce`: `""` for a server on CPU (as a
/// Trustee attester without devices sends), else the canonical [`GpuEvidenceSet`](super::protocol::GpuEvidenceSet) of every
/// GPU the attester serves on ([`crate::tee::gpu::collect`]), each answering
/// [`gpu_nonce`](confidant_attestation::nvidia::gpu_nonce) of the challenge's text. A server on
/// GPUs that cannot collect all of them gets an error, never `""` (fail closed).
pub fn gpu_additional_evidence(attester: &dyn Attester, nonce: &str) -> Result<String, RcarError> {
    match crate::tee::gpu::collect(attester, nonce.as_bytes())? {
        None => Ok(String::new()),
        Some(set) => Ok(set.to_canonical_json()?),
    }
}

/// Runs RCAR for one resource and returns its plaintext (zeroized on drop). The TEE key is
/// made here and consumed by the decryption.
pub async fn fetch_resource(
    endpoint: &BrokerEndpoint,
    attester: Arc<dyn Attester>,
    path: &str,
) -> Result<Zeroizing<Vec<u8>>, RcarError> {
    let mut conn = endpoint.connect().await?;
    let challenge = conn.auth(tee_name(attester.kind().tee())).await?;
    let key = TeeKeyPair::generate()?;
    let public = key.public_key().clone();
    let request = tokio::task::spawn_blocking(move || {
        attest_request(attester.as_ref(), &challenge.nonce, &public)
    })
    .await
    .map_err(|e| RcarError::Protocol {
        step: "attest",
        reason: format!("evidence task failed: {e}"),
    })??;
    conn.attest(&request).await?;
    let jwe = conn.resource(path).await?;
    Ok(key.decrypt(&jwe)?)
}

/// First and longest wait between attempts of [`fetch_resource_retrying`].
pub const RETRY_BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(30),
);

/// [`fetch_resource`], retried with exponential backoff ([`RETRY_BACKOFF`]) for as long as
/// the broker is unreachable or refuses; each refusal is logged with the broker's reason and
/// `what` (the model the resource is for).
pub async fn fetch_resource_retrying(
    endpoint: &BrokerEndpoint,
    attester: Arc<dyn Attester>,
    path: &str,
    what: &str,
) -> Zeroizing<Vec<u8>> {
    let (mut wait, longest) = RETRY_BACKOFF;
    loop {
        match fetch_resource(endpoint, Arc::clone(&attester), path).await {
            Ok(bytes) => return bytes,
            Err(e) => {
                tracing::warn!(
                    model = what,
                    resource = path,
                    broker = endpoint.url(),
                    error = %e,
                    gpu_evidence = %crate::tee::gpu::describe(attester.as_ref()),
                    retry_in_ms = wait.as_millis() as u64,
                    "no data key from the broker; not serving this model; retrying (a release \
                     policy without [gpu] releases only to servers on CPU; one with [gpu] \
                     needs GPU evidence that passes it)"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(longest);
            }
        }
    }
}
