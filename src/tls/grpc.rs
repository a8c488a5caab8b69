//! The gRPC port's TLS: rustls in front of tonic, in place of tonic's own `tls_config`.
//!
//! One reason: the writes. h2 copies a DATA payload into its write buffer, with the other
//! streams' frames, only up to a threshold: 256 bytes when its transport takes vectored writes
//! (as rustls' stream says it does), 1 KiB when it does not. [`TlsConn`] says it does not
//! (rustls copies what it is given into records either way), so answers of a few hundred bytes
//! are written together with the ones around them. A larger payload is chained after the
//! buffer, and h2 flushes before its next frame; through tokio-rustls each of those writes was
//! a TLS record and a `write(2)`, three for an answer over the threshold (at batch 32, an
//! answer with its receipt). [`TlsConn`] gathers them into one (`Gathered`; BENCHMARKS.md,
//! "Receipts", sessions 12 and 25).
//!
//! The certificate chain a mutual-TLS client presented (verified by rustls) reaches each
//! request in a [`TlsPeer`] extension.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::gather::Gathered;
use super::{TlsError, TlsIdentity};

pub use super::https::HANDSHAKE_TIMEOUT;

/// Who is at the other end of a connection: in every request's extensions.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The certificate chain the client presented (leaf first), verified against the
    /// configured client CA; `None` without one.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The rustls configuration of the gRPC port: `identity`, HTTP/2 only, and with
/// `client_ca_pem`, client certificates verified against it (optional: clients without one
/// authenticate by API key).
pub fn server_config(
    identity: &TlsIdentity,
    client_ca_pem: Option<&[u8]>,
) -> Result<rustls::ServerConfig, TlsError> {
    super::server_config(&identity.cert_pem, &identity.key_pem, client_ca_pem, b"h2")
}

/// The connections accepted on `listener`, each through its TLS handshake (run
/// concurrently, [`HANDSHAKE_TIMEOUT`] each; a failed one is logged and dropped). Accepting
/// stops when the stream is dropped. Each connection counts in `open` until it closes.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    open: &super::OpenConnections,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    incoming_with(listener, config, HANDSHAKE_TIMEOUT, open)
}

fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    open: &super::OpenConnections,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let open = open.clone();
    let rx = super::https::handshakes(
        listener,
        config,
        handshake_timeout,
        "gRPC",
        move |io: TlsStream<TcpStream>, _| {
            let certs = io
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
            Ok(TlsConn {
                io: Gathered::with_capacity(WRITE_BUFFER, io),
                peer: TlsPeer { certs },
                counted: open.connection(),
            })
        },
    );
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How much of what h2 writes a connection gathers before encrypting it: one TLS record's
/// worth of plaintext (see [`Gathered`]).
const WRITE_BUFFER: usize = 16 * 1024;

/// One accepted connection, its handshake done. Writes are not vectored, and h2's forced
/// flushes wait for the rest of its turn (see the module).
pub struct TlsConn {
    io: Gathered<TlsStream<TcpStream>>,
    peer: TlsPeer,
    /// Counted as open from its first read until it closes.
    counted: super::OpenConnection,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The connection's own task reads first.
        self.counted.in_use();
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // h2 then copies payloads up to 1 KiB into its buffer (see `Gathered`).
        false
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio_stream::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_stalled_handshake_is_dropped_and_holds_up_no_one() {
        let identity = TlsIdentity::self_signed(&["localhost".to_string()]).unwrap();
        let config = Arc::new(server_config(&identity, None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = super::super::OpenConnections::default();
        let mut conns = incoming_with(listener, config, Duration::from_millis(300), &open);

        // A client that connects and never says a word.
        let mut stalled = TcpStream::connect(addr).await.unwrap();

        // Meanwhile a real client's handshake completes, and it gets HTTP/2.
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            rustls::pki_types::pem::PemObject::pem_slice_iter(identity.cert_pem.as_bytes())
                .map(|c: std::result::Result<CertificateDer<'static>, _>| c.unwrap()),
        );
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(
                "localhost".try_into().unwrap(),
                TcpStream::connect(addr).await.unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let conn = tokio::time::timeout(Duration::from_secs(5), conns.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // h2 copies payloads up to 1 KiB rather than 256 bytes; larger ones are gathered.
        assert!(!conn.is_write_vectored());
        assert!(conn.peer.certs.is_none());
        // Counted open once its task reads it; the silent one, still in its handshake, is not.
        assert_eq!(open.count(), 0);
        let (mut client_tls, mut conn) = (tls, conn);
        tokio::io::AsyncWriteExt::write_all(&mut client_tls, b"x")
            .await
            .unwrap();
        let mut x = [0u8; 1];
        conn.read_exact(&mut x).await.unwrap();
        assert_eq!(open.count(), 1);

        // The silent one is closed once its handshake times out.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut byte))
            .await
            .expect("the server closes a stalled handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(open.count(), 1);
        drop(conn);
        assert_eq!(open.count(), 0, "a closed connection no longer counts");
    }
}
