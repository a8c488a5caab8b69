//! The TLS identity of the server and the broker, and its attestation binding.
//!
//! A leaf module: the identity (configured files, or a key pair made in memory with a
//! self-signed certificate) and the binding of its SubjectPublicKeyInfo into attestation
//! evidence ([`tls_report_data`]), which the server's Attestation service produces and the
//! client's attested channel checks.

mod gather;
pub mod grpc;
mod https;

pub use https::serve_https;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

/// Why a TLS identity could not be read or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A configured file holds no PEM item of the expected kind.
    #[error("{} holds no PEM {expected}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        expected: &'static str,
    },
    /// The self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    SelfSigned(String),
    /// A certificate does not parse.
    #[error("the certificate does not parse: {0}")]
    Certificate(String),
    /// The identity or the client CA does not make a TLS configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

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

/// The domain tag of the TLS binding of a server that serves on GPUs.
pub const TLS_GPU_BINDING_DOMAIN: &[u8] = b"confidant-tls-gpu-v1";

/// The report_data of channel evidence: [`tls_report_data`] for a server on CPU (`gpu` is
/// `None`); for a server on GPUs, `SHA-512("confidant-tls-gpu-v1" ‖ nonce ‖ spki_sha256 ‖
/// gpu)`, where `gpu` is the SHA-384 of the canonical GPU evidence it sends with the report
/// (`GpuEvidenceSet::digest`). The two domain tags differ and every field after the nonce has a
/// fixed length, so no binding of one form is one of the other: GPU evidence can be neither
/// added to, removed from, nor swapped into a report that bound something else.
pub fn channel_report_data(
    nonce: &[u8],
    spki_sha256: &[u8; 32],
    gpu: Option<&[u8; 48]>,
) -> [u8; 64] {
    match gpu {
        None => tls_report_data(nonce, spki_sha256),
        Some(gpu) => Sha512::new()
            .chain_update(TLS_GPU_BINDING_DOMAIN)
            .chain_update(nonce)
            .chain_update(spki_sha256)
            .chain_update(gpu)
            .finalize()
            .into(),
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], TlsError> {
    let der = rustls::pki_types::CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| TlsError::Certificate(format!("{e:?}")))?;
    Ok(Sha256::digest(cert.subject_public_key_info().as_ref()).into())
}

/// Where a TLS private key was born: what attestation evidence may vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Made in this process's memory and never written out: inside the TEE when the
    /// process is. Evidence binding it vouches that the TLS peer is this process.
    InProcess,
    /// Read from files the operator gave (`--tls-cert`/`--tls-key`, `[tls]`): whoever else
    /// holds a copy (a relay, a load balancer) can present it, so evidence must not bind it.
    OperatorFiles,
}

/// A certificate chain and its private key, in PEM.
pub struct TlsIdentity {
    /// The certificate chain.
    pub cert_pem: String,
    /// The private key. Never written to disk by the server.
    pub key_pem: Zeroizing<String>,
    origin: KeyOrigin,
}

impl TlsIdentity {
    /// Reads a configured certificate and key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = Zeroizing::new(read(key)?);
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(TlsError::NotPem {
                path: cert.to_path_buf(),
                expected: "certificate",
            });
        }
        if !key_pem.contains("PRIVATE KEY-----") {
            return Err(TlsError::NotPem {
                path: key.to_path_buf(),
                expected: "private key",
            });
        }
        Ok(Self {
            cert_pem,
            key_pem,
            origin: KeyOrigin::OperatorFiles,
        })
    }

    /// Where the private key was born.
    pub fn origin(&self) -> KeyOrigin {
        self.origin
    }

    /// Makes a fresh key pair in memory and a self-signed certificate for `names` (DNS
    /// names or IP addresses). The key never leaves the process.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
        Ok(Self {
            cert_pem: ck.cert.pem(),
            key_pem: Zeroizing::new(ck.signing_key.serialize_pem()),
            origin: KeyOrigin::InProcess,
        })
    }
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3) for the chain and key in
/// `cert_pem` and `key_pem`, offering `alpn`; with `client_ca_pem`, client certificates are
/// verified against it (optional: clients without one authenticate otherwise). The gRPC
/// port, the key broker and the embeddings door all take theirs from here.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&[u8]>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(std::sync::Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Certificate(format!("client CA: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Certificate(format!("client CA: {e}")))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Config(format!("the private key: {e}")))?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The names a self-signed certificate covers: localhost, the loopback addresses, and the
/// listen address when it is a specific IP.
pub fn default_names(listen: &std::net::SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    if let Ok(host) = std::env::var("HOSTNAME")
        && !host.is_empty()
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

/// How many connections a server's ports hold open, counted by the accept loops: each is a
/// task of the runtime that is not a call, which the receipts' gathering tells apart from
/// calls in flight (`audit::AuditLog::receipts_serving` is given the count). Clones share
/// it.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Connections counted now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// One connection, its handshake done: counted from its first use by the task that
    /// serves it ([`OpenConnection::in_use`]) until it drops, so that the count never
    /// exceeds the runtime's tasks that serve connections (the handshake's task has ended by
    /// then, and the connection's has begun).
    pub fn connection(&self) -> OpenConnection {
        OpenConnection {
            count: Arc::clone(&self.0),
            counted: false,
        }
    }
}

/// One connection of [`OpenConnections`].
#[derive(Debug)]
pub struct OpenConnection {
    count: Arc<AtomicUsize>,
    counted: bool,
}

impl OpenConnection {
    /// Its task serves it now: counted from here on (once).
    pub fn in_use(&mut self) {
        if !self.counted {
            self.counted = true;
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.counted {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
