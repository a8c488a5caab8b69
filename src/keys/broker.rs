//! The key broker: a KBS (RCAR 0.4.0) over HTTPS, with an authenticated admin API.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /kbs/v0/auth` | TEE | a session cookie and a single-use nonce |
//! | `POST /kbs/v0/attest` | TEE | evidence binding the nonce and the TEE key; verified |
//! | `GET /kbs/v0/resource/<repo>/<type>/<tag>` | TEE | the resource as a JWE to the TEE key, if the resource's release policy accepts the evidence |
//! | `POST /kbs/v0/resource/<repo>/<type>/<tag>` | admin | store a resource (the raw bytes) |
//! | `POST /kbs/v0/resource-policy/<repo>/<type>/<tag>` | admin | set its release policy (attestation-policy TOML) |
//!
//! At attest the evidence is verified for integrity (signatures, chain, report_data binding
//! the runtime data) under a permissive base policy; at each resource request it is verified
//! again under that resource's release policy (measurement, TCB floor, debug,
//! allow_simulated). A resource without a policy is never released, a policy that does not pin
//! what it accepts is refused when it is set (and at start, if one was stored before), and
//! every release under a deliberately open policy logs a warning. Every release and every
//! refusal is logged with its reason.
//!
//! TDX quotes are judged with the broker's own collateral ([`BrokerConfig::tdx_collateral`],
//! see [`super::collateral`]); collateral carried in the evidence is dropped unread.
//!
//! Nonces are single-use: a session attests once, and a challenge expires after
//! [`BrokerConfig::challenge_ttl`]; an attested session expires after
//! [`BrokerConfig::session_ttl`]. The admin API takes `Authorization: Bearer <admin key>`,
//! the key being the contents of `<data-dir>/admin.key`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use confidant_attestation::policy::TDX_STATUSES;
use confidant_attestation::{Evidence, Policy, TeeKind, Timestamp, Verdict, verify};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::collateral::{CollateralSource, for_evidence};
use super::error::{BrokerError, BrokerStartError};
use super::jwe::{self, TeePubKey};
use super::protocol::{
    AttestRequest, AttestResponse, AuthRequest, Challenge, ERROR_TYPE_PREFIX, ErrorBody,
    PROTOCOL_VERSION, SESSION_COOKIE, report_data, runtime_data_digest,
};
use super::store::{MAX_RESOURCE_BYTES, ResourceStore};
use crate::storage::Database;

/// Default lifetime of an unanswered challenge (nonce).
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Default lifetime of an attested session.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(300);
/// Default largest request body (evidence with a certificate chain is a few KiB; a TDX
/// quote with collateral tens of KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Most sessions (challenged or attested) held at once.
pub const MAX_SESSIONS: usize = 10_000;

/// The broker's configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory: `tls/`, `admin.key`, `master.key`, `confidant.db`.
    pub data_dir: PathBuf,
    /// Lifetime of a challenge's nonce.
    pub challenge_ttl: Duration,
    /// Lifetime of an attested session.
    pub session_ttl: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// The broker's TDX collateral: a QuoteCollateralV3 JSON file or a directory of them,
    /// re-read at each TDX verification. Without it TDX evidence is refused.
    pub tdx_collateral: Option<PathBuf>,
}

impl BrokerConfig {
    /// The defaults, listening on `listen` with data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            challenge_ttl: DEFAULT_CHALLENGE_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tdx_collateral: None,
        }
    }

    /// `<data-dir>/tls/cert.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// `<data-dir>/admin.key`.
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}

/// Where a session is in the handshake.
enum Session {
    /// `auth` answered; waiting for `attest`.
    Challenged {
        nonce: String,
        tee: String,
        expires: Instant,
    },
    /// `attest` verified the evidence.
    Attested {
        evidence: Box<Evidence>,
        tee_pubkey: TeePubKey,
        report_data: [u8; 64],
        expires: Instant,
    },
}

impl Session {
    fn expires(&self) -> Instant {
        match self {
            Self::Challenged { expires, .. } | Self::Attested { expires, .. } => *expires,
        }
    }
}

struct Shared {
    store: ResourceStore,
    sessions: Mutex<HashMap<String, Session>>,
    admin_key_sha256: [u8; 32],
    token_key: EcdsaKeyPair,
    config: BrokerConfig,
    rng: SystemRandom,
}

/// A running broker.
pub struct RunningBroker {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (or the bound IP).
    pub url: String,
    /// The TLS certificate (PEM) clients must trust.
    pub cert_pem: String,
    state: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Stores a resource directly (the in-process path of the embedded demo).
    pub fn put_resource(&self, path: &str, bytes: &[u8]) -> Result<(), BrokerError> {
        check_path(path)?;
        self.state.store.put(path, bytes)
    }

    /// Sets a release policy directly (the in-process path of the embedded demo).
    pub fn set_policy(&self, path: &str, toml: &str) -> Result<(), BrokerError> {
        check_path(path)?;
        self.state.store.set_policy(path, toml).map(|_| ())
    }

    /// Whether a resource exists at `path`.
    pub fn has_resource(&self, path: &str) -> Result<bool, BrokerError> {
        self.state.store.contains(path)
    }

    /// Stops accepting connections.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerStartError {
    let what = what.into();
    move |source| BrokerStartError::Io { what, source }
}

/// Reads `<data-dir>/admin.key` (64 hex digits), creating it on first start.
fn load_or_create_admin_key(path: &Path) -> Result<Zeroizing<String>, BrokerStartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = Zeroizing::new(text.trim().to_owned());
            if key.len() < 32 {
                return Err(BrokerStartError::Key(format!(
                    "{}: the admin key is shorter than 32 characters",
                    path.display()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = Zeroizing::new([0u8; 32]);
            getrandom::fill(raw.as_mut()).map_err(|e| BrokerStartError::Key(e.to_string()))?;
            let key = Zeroizing::new(hex::encode(raw.as_ref()));
            crate::files::write_file(path, format!("{}\n", key.as_str()).as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), "broker: admin key created");
            Ok(key)
        }
        Err(e) => Err(io(path.display().to_string())(e)),
    }
}

/// Reads `<data-dir>/tls/{cert,key}.pem`, or makes a self-signed pair on first start.
fn load_or_create_tls(
    dir: &Path,
    listen: &SocketAddr,
) -> Result<(String, Zeroizing<String>), BrokerStartError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert =
            std::fs::read_to_string(&cert_path).map_err(io(cert_path.display().to_string()))?;
        let key = Zeroizing::new(
            std::fs::read_to_string(&key_path).map_err(io(key_path.display().to_string()))?,
        );
        return Ok((cert, key));
    }
    crate::files::create_private_dir(dir)?;
    let id = crate::tls::TlsIdentity::self_signed(&crate::tls::default_names(listen))?;
    crate::files::write_file(&key_path, id.key_pem.as_bytes(), 0o600)?;
    crate::files::write_file(&cert_path, id.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "broker: self-signed TLS certificate written");
    Ok((id.cert_pem, id.key_pem))
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, BrokerStartError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BrokerStartError::Key(format!("broker TLS certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| BrokerStartError::Key(format!("broker TLS key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BrokerStartError::Key(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| BrokerStartError::Key(format!("broker TLS identity: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Starts the broker: opens (or initializes) its data directory, binds, and serves until
/// the returned handle is shut down or dropped.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerStartError> {
    crate::files::create_private_dir(&config.data_dir)?;
    let admin_key = load_or_create_admin_key(&config.admin_key_path())?;
    let master = crate::files::load_or_create_key(&config.data_dir.join("master.key"))?;
    let db = Arc::new(Database::open_in(&config.data_dir)?);
    let store =
        ResourceStore::new(db, &master).map_err(|e| BrokerStartError::Key(e.to_string()))?;
    drop(master);
    // A policy stored before policies had to pin what they accept is refused here, at load,
    // rather than at the first release.
    if let Some((path, reason)) = store
        .first_refused_policy()
        .map_err(|e| BrokerStartError::Key(e.to_string()))?
    {
        return Err(BrokerStartError::StoredPolicy { path, reason });
    }
    if let Some(path) = &config.tdx_collateral {
        let set = CollateralSource::new(path).load()?;
        tracing::info!(
            path = %path.display(),
            platforms = set.len(),
            "broker: TDX collateral loaded (re-read at each TDX verification)"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listen on {}", config.listen)))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let (cert_pem, key_pem) = load_or_create_tls(&config.data_dir.join("tls"), &addr)?;
    let tls = tls_config(&cert_pem, &key_pem)?;
    drop(key_pem);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| BrokerStartError::Key("token signing key".into()))?;
    let token_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| BrokerStartError::Key("token signing key".into()))?;
    let state = Arc::new(Shared {
        store,
        sessions: Mutex::new(HashMap::new()),
        admin_key_sha256: Sha256::digest(admin_key.as_bytes()).into(),
        token_key,
        config: config.clone(),
        rng,
    });
    drop(admin_key);
    let router = router(Arc::clone(&state));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let task = tokio::spawn(serve_tls(listener, acceptor, router, stop_rx));
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        "broker: listening (KBS RCAR 0.4.0 over HTTPS)"
    );
    Ok(RunningBroker {
        addr,
        url: format!("https://{host}:{}", addr.port()),
        cert_pem,
        state,
        stop: Some(stop_tx),
        task,
    })
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "broker: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "broker: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "broker: connection ended with an error");
            }
        });
    }
}

fn router(state: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/kbs/v0/auth", post(auth))
        .route("/kbs/v0/attest", post(attest))
        .route("/kbs/v0/resource/{*path}", get(resource).post(put_resource))
        .route("/kbs/v0/resource-policy/{*path}", post(put_policy))
        .fallback(|uri: Uri| async move {
            error_response(&BrokerError::NotFound(format!("endpoint {}", uri.path())))
        })
        .with_state(state)
}

fn error_response(e: &BrokerError) -> Response<Body> {
    let body = ErrorBody {
        kind: format!("{ERROR_TYPE_PREFIX}{}", e.kind()),
        detail: match e {
            BrokerError::Internal(_) => "internal error; see the broker's log".to_owned(),
            other => other.to_string(),
        },
    };
    json_response(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Logs a refusal with its reason and turns it into the error response.
fn refuse(step: &str, session: Option<&str>, e: &BrokerError) -> Response<Body> {
    match e {
        BrokerError::Internal(detail) => {
            tracing::error!(
                step,
                session = session.map(session_tag),
                reason = %detail,
                "broker: internal error"
            )
        }
        other => tracing::warn!(
            step,
            session = session.map(session_tag),
            status = other.status(),
            reason = %other,
            "broker: refused"
        ),
    }
    error_response(e)
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, BrokerError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BrokerError::TooLarge { limit });
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(BrokerError::TooLarge { limit })
            } else {
                Err(BrokerError::BadRequest(format!(
                    "reading the request body: {e}"
                )))
            }
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| BrokerError::BadRequest(format!("{what}: malformed JSON: {e}")))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .map(str::to_owned)
}

/// The first 8 hex digits of a session id: enough to follow a session through the log,
/// not enough to present its cookie.
fn session_tag(id: &str) -> &str {
    id.get(..8).unwrap_or("-")
}

fn now_timestamp() -> Timestamp {
    Timestamp::from_unix_seconds(crate::unix_now().max(0) as u64)
}

fn failures(verdict: &Verdict) -> String {
    verdict
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.check, f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a KBS resource path: `repository/type/tag`.
fn check_path(path: &str) -> Result<(), BrokerError> {
    crate::sealed::manifest::validate_resource_path(path).map_err(BrokerError::BadRequest)
}

fn resource_path<'a>(uri: &'a Uri, prefix: &str) -> Result<&'a str, BrokerError> {
    let path = uri
        .path()
        .strip_prefix(prefix)
        .ok_or_else(|| BrokerError::BadRequest("resource path".into()))?;
    check_path(path)?;
    Ok(path)
}

// ---- RCAR ----

async fn auth(State(state): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response<Body> {
    match auth_inner(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => refuse("auth", None, &e),
    }
}

async fn auth_inner(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, BrokerError> {
    let bytes = read_body(headers, body, state.config.max_body_bytes).await?;
    let request: AuthRequest = parse_json("auth request", &bytes)?;
    if request.version != PROTOCOL_VERSION {
        return Err(BrokerError::Attestation(format!(
            "protocol version {:?}; this broker speaks {PROTOCOL_VERSION}",
            request.version
        )));
    }
    if !matches!(request.tee.as_str(), "snp" | "tdx") {
        return Err(BrokerError::Attestation(format!(
            "TEE {:?} is not supported (snp or tdx; simulated evidence travels as snp)",
            request.tee
        )));
    }
    let mut id = [0u8; 16];
    let mut nonce = [0u8; 32];
    state
        .rng
        .fill(&mut id)
        .and_then(|()| state.rng.fill(&mut nonce))
        .map_err(|_| BrokerError::Internal("random session".into()))?;
    let id = hex::encode(id);
    let nonce = B64.encode(nonce);
    let now = Instant::now();
    {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires() > now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(BrokerError::Busy(sessions.len()));
            }
        }
        sessions.insert(
            id.clone(),
            Session::Challenged {
                nonce: nonce.clone(),
                tee: request.tee.clone(),
                expires: now + state.config.challenge_ttl,
            },
        );
    }
    tracing::info!(session = session_tag(&id), tee = %request.tee, "broker: challenge issued");
    let body = serde_json::to_vec(&Challenge {
        nonce,
        extra_params: serde_json::Value::String(String::new()),
    })
    .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, body);
    set_cookie(&mut response, &id, state.config.challenge_ttl)?;
    Ok(response)
}

fn set_cookie(response: &mut Response<Body>, id: &str, ttl: Duration) -> Result<(), BrokerError> {
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/kbs/v0; Max-Age={}; Secure; HttpOnly",
        ttl.as_secs()
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| BrokerError::Internal(e.to_string()))?,
    );
    Ok(())
}

async fn attest(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let id = session_id(&headers);
    match attest_inner(&state, id.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => refuse("attest", id.as_deref(), &e),
    }
}

async fn attest_inner(
    state: &Shared,
    id: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, BrokerError> {
    let id = id.ok_or_else(|| {
        BrokerError::Attestation(format!(
            "no {SESSION_COOKIE} cookie: call /kbs/v0/auth first"
        ))
    })?;
    // The challenge is taken out of the table before anything else: whatever happens next,
    // its nonce is spent. An attested session stays (a repeated attest does not end it).
    let session = {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            Some(Session::Attested { .. }) => {
                return Err(BrokerError::Attestation(
                    "this session has already attested and its nonce is spent; start again \
                     at /kbs/v0/auth"
                        .into(),
                ));
            }
            _ => sessions.remove(id),
        }
    };
    let (nonce, tee) = match session {
        None => {
            return Err(BrokerError::Attestation(
                "unknown session (never issued, expired, or its nonce already spent)".into(),
            ));
        }
        Some(Session::Challenged { expires, .. }) if expires <= Instant::now() => {
            return Err(BrokerError::Attestation(
                "the challenge expired; start again at /kbs/v0/auth".into(),
            ));
        }
        Some(Session::Challenged { nonce, tee, .. }) => (nonce, tee),
        Some(Session::Attested { .. }) => {
            return Err(BrokerError::Internal("session state changed".into()));
        }
    };
    let bytes = read_body(headers, body, state.config.max_body_bytes).await?;
    let request: AttestRequest = parse_json("attest request", &bytes)?;
    let runtime = &request.runtime_data;
    if !bool::from(runtime.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(BrokerError::Attestation(
            "the runtime-data nonce is not this session's challenge (replayed or stale evidence)"
                .into(),
        ));
    }
    // This broker encrypts only to P-256 keys; say so now rather than at the resource.
    runtime
        .tee_pubkey
        .p256_point()
        .map_err(|e| BrokerError::BadRequest(format!("runtime-data.tee-pubkey: {e}")))?;
    let evidence = parse_evidence(&request.tee_evidence.primary_evidence, &tee)?;
    let digest = runtime_data_digest(
        &runtime.nonce,
        &runtime.tee_pubkey,
        &request.tee_evidence.additional_evidence,
    )
    .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
    let expected = report_data(&digest);
    let (evidence, verdict) =
        verify_integrity(&state.config, evidence, &expected, now_timestamp())?;
    let token = issue_token(state, &verdict, &request)?;
    tracing::info!(
        session = session_tag(id),
        tee = %verdict.tee,
        measurement = verdict.measurement.as_deref().unwrap_or("-"),
        debug = ?verdict.debug,
        "broker: evidence verified; session attested"
    );
    state
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id.to_owned(),
            Session::Attested {
                evidence: Box::new(evidence),
                tee_pubkey: request.runtime_data.tee_pubkey,
                report_data: expected,
                expires: Instant::now() + state.config.session_ttl,
            },
        );
    let body = serde_json::to_vec(&AttestResponse { token })
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, body);
    set_cookie(&mut response, id, state.config.session_ttl)?;
    Ok(response)
}

/// The attest step's check: integrity only (signatures, chain, dates, report_data binding
/// the runtime data), under a permissive base policy; the release policy is judged per
/// resource. Collateral the attester carries is dropped: TDX quotes are judged with the
/// broker's own. Returns the evidence as kept for the session, and the verdict.
pub(crate) fn verify_integrity(
    config: &BrokerConfig,
    evidence: Evidence,
    expected_report_data: &[u8; 64],
    now: Timestamp,
) -> Result<(Evidence, Verdict), BrokerError> {
    let evidence = evidence.without_tdx_collateral();
    let collateral = for_evidence(config.tdx_collateral.as_deref(), &evidence)?;
    let mut base = Policy::dangerous_authenticity_only();
    base.dangerous_allow_simulated = true;
    base.allow_debug = true;
    base.allow_migration_agent = true;
    base.tdx_statuses = TDX_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    base.report_data = Some(*expected_report_data);
    let verdict = verify(&evidence, collateral.as_ref(), &base, now);
    if !verdict.is_accept() {
        return Err(BrokerError::Attestation(format!(
            "evidence rejected: {}",
            failures(&verdict)
        )));
    }
    Ok((evidence, verdict))
}

/// Reads `primary_evidence`: this crate's tagged evidence, or Trustee's untagged SNP/TDX
/// form (tagged here with the session's TEE).
fn parse_evidence(value: &serde_json::Value, tee: &str) -> Result<Evidence, BrokerError> {
    let mut value = value.clone();
    let obj = value.as_object_mut().ok_or_else(|| {
        BrokerError::BadRequest("tee-evidence.primary_evidence must be a JSON object".into())
    })?;
    obj.entry("tee")
        .or_insert_with(|| serde_json::Value::String(tee.to_owned()));
    let evidence: Evidence = serde_json::from_value(value)
        .map_err(|e| BrokerError::BadRequest(format!("tee-evidence.primary_evidence: {e}")))?;
    let consistent = match evidence.tee() {
        TeeKind::Snp | TeeKind::Simulated => tee == "snp",
        TeeKind::Tdx => tee == "tdx",
        _ => false,
    };
    if !consistent {
        return Err(BrokerError::Attestation(format!(
            "the evidence is {} but the session was opened for {tee}",
            evidence.tee()
        )));
    }
    Ok(evidence)
}

/// An ES256 JWT naming the verified claims (the KBS attest response). The client need not
/// read it: resources are released on the session cookie.
fn issue_token(
    state: &Shared,
    verdict: &Verdict,
    request: &AttestRequest,
) -> Result<String, BrokerError> {
    let point = state.token_key.public_key().as_ref();
    let (x, y) = point
        .get(1..33)
        .zip(point.get(33..65))
        .ok_or_else(|| BrokerError::Internal("token key".into()))?;
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "jwk": {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": B64URL.encode(x),
            "y": B64URL.encode(y),
        },
    });
    let iat = crate::unix_now();
    let claims = serde_json::json!({
        "iss": "confidant-broker",
        "iat": iat,
        "exp": iat + state.config.session_ttl.as_secs() as i64,
        "tee": verdict.tee,
        "measurement": verdict.measurement,
        "debug": verdict.debug,
        "runtime_data_claims": {
            "nonce": request.runtime_data.nonce,
            "tee-pubkey": request.runtime_data.tee_pubkey,
            "additional-evidence": request.tee_evidence.additional_evidence,
        },
    });
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let signature = state
        .token_key
        .sign(&state.rng, signing_input.as_bytes())
        .map_err(|_| BrokerError::Internal("token signature".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        B64URL.encode(signature.as_ref())
    ))
}

async fn resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    let id = session_id(&headers);
    let path = uri
        .path()
        .strip_prefix("/kbs/v0/resource/")
        .unwrap_or("")
        .to_owned();
    match resource_inner(&state, id.as_deref(), &uri) {
        Ok(r) => r,
        Err(e) => refuse(&format!("resource {path}"), id.as_deref(), &e),
    }
}

fn resource_inner(
    state: &Shared,
    id: Option<&str>,
    uri: &Uri,
) -> Result<Response<Body>, BrokerError> {
    let id = id
        .ok_or_else(|| BrokerError::Session(format!("no {SESSION_COOKIE} cookie: attest first")))?;
    let path = resource_path(uri, "/kbs/v0/resource/")?;
    let (evidence, tee_pubkey, expected) = {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            None => {
                return Err(BrokerError::Session(
                    "unknown session (never issued or expired)".into(),
                ));
            }
            Some(Session::Challenged { .. }) => {
                return Err(BrokerError::Session(
                    "the session has not attested: POST /kbs/v0/attest first".into(),
                ));
            }
            Some(Session::Attested { expires, .. }) if *expires <= Instant::now() => {
                sessions.remove(id);
                return Err(BrokerError::Session(
                    "the session expired; attest again".into(),
                ));
            }
            Some(Session::Attested {
                evidence,
                tee_pubkey,
                report_data,
                ..
            }) => (evidence.clone(), tee_pubkey.clone(), *report_data),
        }
    };
    let release = state.store.policy(path)?;
    let Some(secret) = state.store.get(path)? else {
        return Err(BrokerError::NotFound(path.to_owned()));
    };
    let Some(release) = release else {
        return Err(BrokerError::PolicyDeny {
            path: path.to_owned(),
            reason: "no release policy is set for this resource (broker set-policy)".into(),
        });
    };
    let open = release.policy.deliberately_open();
    let mut policy = release.policy;
    policy.report_data = Some(expected);
    let collateral = for_evidence(state.config.tdx_collateral.as_deref(), &evidence)?;
    let verdict = verify(&evidence, collateral.as_ref(), &policy, now_timestamp());
    if !verdict.is_accept() {
        return Err(BrokerError::PolicyDeny {
            path: path.to_owned(),
            reason: failures(&verdict),
        });
    }
    let jwe = jwe::encrypt(&tee_pubkey, &secret).map_err(|e| BrokerError::PolicyDeny {
        path: path.to_owned(),
        reason: format!("cannot encrypt to the TEE key: {e}"),
    })?;
    if !open.is_empty() {
        tracing::warn!(
            session = session_tag(id),
            path,
            accepts = open.join("; "),
            "broker: the release policy is deliberately open"
        );
    }
    tracing::info!(
        session = session_tag(id),
        path,
        tee = %verdict.tee,
        measurement = verdict.measurement.as_deref().unwrap_or("-"),
        "broker: resource released"
    );
    Ok(json_response(StatusCode::OK, jwe))
}

// ---- admin ----

fn check_admin(state: &Shared, headers: &HeaderMap) -> Result<(), BrokerError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(BrokerError::AdminUnauthenticated)?;
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    if bool::from(digest.ct_eq(&state.admin_key_sha256)) {
        Ok(())
    } else {
        Err(BrokerError::AdminForbidden)
    }
}

async fn put_resource(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource/")?;
        let bytes = Zeroizing::new(
            read_body(
                &headers,
                body,
                MAX_RESOURCE_BYTES.min(state.config.max_body_bytes),
            )
            .await?,
        );
        if bytes.is_empty() {
            return Err(BrokerError::BadRequest("the resource is empty".into()));
        }
        state.store.put(path, &bytes)?;
        tracing::info!(path, bytes = bytes.len(), "broker: admin stored a resource");
        Ok(json_response(StatusCode::OK, Vec::new()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin resource", None, &e))
}

async fn put_policy(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response<Body> {
    let result = async {
        check_admin(&state, &headers)?;
        let path = resource_path(&uri, "/kbs/v0/resource-policy/")?;
        let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| BrokerError::BadRequest("the policy is not UTF-8 text".into()))?;
        let release = state.store.set_policy(path, &text)?;
        tracing::info!(
            path,
            allow_simulated = release.policy.dangerous_allow_simulated,
            measurements = release.policy.measurements.len(),
            "broker: admin set a release policy"
        );
        Ok(json_response(StatusCode::OK, Vec::new()))
    }
    .await;
    result.unwrap_or_else(|e| refuse("admin policy", None, &e))
}
