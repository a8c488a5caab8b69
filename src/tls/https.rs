//! Serving an axum router over HTTPS (HTTP/1.1 on rustls): the accept loop the key broker
//! and the OpenAI-compatible door share.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Serves `router` over TLS on `listener` until `stop` fires. Each request carries the
/// peer's address as `ConnectInfo<SocketAddr>` (for per-peer limits); `name` prefixes the
/// log lines. A handshake gets 10 s.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    name: &'static str,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "{name}: accept failed");
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
                        tracing::debug!(error = %e, "{name}: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let router = router.map_request(move |mut request: hyper::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
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
