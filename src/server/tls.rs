//! The server's TLS identity: configured files, or a self-signed certificate made at start.

use std::path::Path;

use zeroize::Zeroizing;

use super::error::ServerError;

/// A certificate chain and its private key, in PEM.
pub struct TlsIdentity {
    /// The certificate chain.
    pub cert_pem: String,
    /// The private key. Never written to disk by the server.
    pub key_pem: Zeroizing<String>,
}

impl TlsIdentity {
    /// Reads a configured certificate and key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, ServerError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ServerError::Io {
                what: p.display().to_string(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = Zeroizing::new(read(key)?);
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ServerError::Tls(format!(
                "{} holds no PEM certificate",
                cert.display()
            )));
        }
        if !key_pem.contains("PRIVATE KEY-----") {
            return Err(ServerError::Tls(format!(
                "{} holds no PEM private key",
                key.display()
            )));
        }
        Ok(Self { cert_pem, key_pem })
    }

    /// Makes a fresh key pair in memory and a self-signed certificate for `names` (DNS
    /// names or IP addresses). The key never leaves the process.
    pub fn self_signed(names: &[String]) -> Result<Self, ServerError> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| ServerError::Tls(format!("self-signed certificate: {e}")))?;
        Ok(Self {
            cert_pem: ck.cert.pem(),
            key_pem: Zeroizing::new(ck.signing_key.serialize_pem()),
        })
    }

    /// The tonic identity.
    pub fn to_tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, self.key_pem.as_bytes())
    }
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
