//! Serving an axum router over HTTPS (HTTP/1.1 on rustls), for the key broker and the
//! OpenAI-compatible door; and the accept loop with concurrent, bounded TLS handshakes that
//! they and the gRPC port ([`super::grpc`]) share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;

/// Serves `router` over TLS on `listener` until `stop` fires. Each request carries the
/// peer's address as `ConnectInfo<SocketAddr>` (for per-peer limits); `name` prefixes the
/// log lines. A handshake gets 10 s. Each connection counts in `open` while it lasts.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    name: &'static str,
    open: super::OpenConnections,
) {
    let mut connections = handshakes(listener, tls, HANDSHAKE_TIMEOUT, name, move |tls, peer| {
        (tls, peer, open.connection())
    });
    loop {
        let (tls, peer, counted) = tokio::select! {
            c = connections.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = &mut stop => return,
        };
        let router = router
            .clone()
            .map_request(move |mut request: hyper::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        tokio::spawn(async move {
            let mut counted = counted;
            counted.in_use();
            let service = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "{name}: connection ended with an error");
            }
        });
    }
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` (TCP_NODELAY on each) and runs their TLS handshakes
/// concurrently, each bounded by `timeout`; what `make` makes of each completed one arrives
/// on the returned channel. A failed or slow handshake is logged (at debug) and dropped.
/// Accepting stops once the receiver is dropped.
pub(super) fn handshakes<T: Send + 'static>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    timeout: Duration,
    name: &'static str,
    make: impl Fn(TlsStream<TcpStream>, SocketAddr) -> T + Clone + Send + 'static,
) -> tokio::sync::mpsc::Receiver<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "{name}: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // Without TCP_NODELAY, Nagle holds back the second of two small TLS records
            // (headers, then data) until the peer's delayed ACK: +40 ms per response.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, make) = (acceptor.clone(), tx.clone(), make.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(make(tls, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "{name}: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "{name}: TLS handshake timed out"),
                }
            });
        }
    });
    rx
}
