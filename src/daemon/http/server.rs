//! The connection loop: accept, (TLS handshake,) serve HTTP/1.1 with hyper, shut down
//! gracefully. It exists (rather than `axum::serve`) for the limits a server on a network needs:
//!
//! - at most [`Limits::max_connections`] connections at once: past that, the loop stops
//!   accepting until one closes (the kernel's backlog holds the rest), so memory and file
//!   descriptors stay bounded whatever a client opens;
//! - a TLS handshake must finish within [`Limits::handshake_timeout`], and a request's head must
//!   arrive within [`Limits::header_timeout`] — also the longest an idle keep-alive connection is
//!   kept — so connections that send nothing (or a byte at a time) are dropped (slowloris);
//! - request heads larger than [`MAX_HEAD`] are refused by hyper (431) before any handler runs;
//! - every request except `/download`'s stream must be answered within
//!   [`Limits::request_timeout`] (a body trickled in byte by byte ends in a 408).
//!
//! Each request carries the peer's address ([`Peer`]) for the auth checks and the audit log.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::tls::Tls;

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 64 * 1024;

/// The server's limits; the defaults are the daemon's.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a request head may take to arrive (and an idle connection may stay open).
    pub header_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a request may take to be answered (downloads: until their stream starts —
    /// they are exempt, as fetching a large backup takes time).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The TCP peer of a request (before `X-Forwarded-For`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Accept and serve until `shutdown` resolves; then stop accepting, let requests in flight
/// finish and close idle connections.
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection errors (reset before accept) are routine; running out of
                    // file descriptors is not: say so and give connections time to close.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            connection(tcp, peer, tls, router, limits, stop).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Tls>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_http(tcp, peer, router, limits, stop).await;
    };
    let handshake = tokio::time::timeout(limits.handshake_timeout, tls.acceptor().accept(tcp));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake timed out: connection dropped");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    serve_http(stream, peer, router, limits, stop).await;
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut router = router.clone();
        async move {
            let response: Result<_, Infallible> =
                tower_service::Service::call(&mut router, req).await;
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once the server stops (the guard `wait_for` returns is not kept across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
