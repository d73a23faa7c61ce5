//! The HTTP listener of every Confab binary (the gateway, the membership
//! API): an axum router on hyper's HTTP/1.1 with a header read timeout, so
//! that a client dribbling its request headers (slowloris), or sending
//! none, is closed after the timeout instead of holding a connection
//! forever (`axum::serve` configures no timer, so hyper's timeout never
//! fires).
//!
//! Otherwise it serves as `axum::serve` does: `ConnectInfo<SocketAddr>` on
//! every request, upgrades (WebSocket), and a graceful shutdown that stops
//! accepting, lets requests in flight finish and waits for every HTTP
//! connection task.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Serves `router` on `listener` until `stop` resolves, then shuts down
/// gracefully (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    // Each connection task holds a receiver of `closing`: once they are all
    // gone, every connection ended.
    let (closing, closed) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            tcp,
            remote,
            router.clone(),
            header_read_timeout,
            closed.clone(),
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    drop(closed);
    closing.closed().await;
}

/// Serves one connection until it ends, or finishes what it is doing once
/// `closed` turns true.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    mut closed: watch::Receiver<bool>,
) {
    // Chat frames are small and latency-bound: no Nagle delay behind a
    // client's delayed ACK.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let closing = async move {
        let _ = closed.wait_for(|c| *c).await;
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = closing => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = ended {
        tracing::trace!(%error, "HTTP connection ended with an error");
    }
}
