//! Serving HTTP/1.1 connections on a listener: what `axum::serve` does, plus the limits a public listener
//! needs (interface.md `limits.header_timeout_s`, `limits.max_connections`).
//!
//! * A connection must send complete request headers within the header timeout — its TLS handshake
//!   included — or it is closed: half a request line cannot hold a connection. hyper's timer starts when it
//!   waits for a request head, so an idle keep-alive connection is closed after the same time.
//! * At most `max_connections` connections are open; the accept loop waits for one to close before it
//!   accepts again, and further clients wait in the kernel's backlog rather than costing memory here.
//! * On shutdown the listener closes at once, idle connections are closed, and the in-flight requests
//!   finish (the caller bounds how long that may take).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes, then waits for
/// the open connections to finish their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (tls, http, app, watcher) = (tls.clone(), Arc::clone(&http), app.clone(), connections.watcher());
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let served = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(tcp), service)).await,
                Some(acceptor) => match handshake(&acceptor, tcp, limits.header_timeout).await {
                    Some(stream) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                    None => Ok(()),
                },
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// The TLS handshake, within the header timeout; `None` (logged) when it fails or takes too long.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT (the graceful stop of `kps serve` and `kms-mock`).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
