//! The listener against real TCP clients: slow headers are cut off,
//! requests in time are served with the client's address, and a shutdown
//! lets a request in flight finish.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

async fn start(
    timeout: Duration,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router =
        Router::new()
            .route(
                "/who",
                get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move {
                    remote.ip().to_string()
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(confab_http::serve(listener, router, timeout, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Whether the server closed (or answered) `tcp` within `within`, while
/// the client keeps sending a header line every 100 ms.
async fn cut_off(tcp: &mut TcpStream, within: Duration, dribble: bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if dribble && tcp.write_all(b"X-Slow: a\r\n").await.is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
        {
            // Read anything (a 408, an EOF, an error): the server is done
            // with this connection.
            let _ = read;
            return true;
        }
    }
    false
}

#[tokio::test]
async fn slow_or_silent_headers_are_cut_off_and_prompt_requests_served() {
    let (addr, stop, task) = start(Duration::from_millis(400)).await;
    let mut dribbler = TcpStream::connect(addr).await.unwrap();
    dribbler.write_all(b"GET /who HTTP/1.1\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        cut_off(&mut dribbler, Duration::from_secs(6), true).await,
        "dribbler kept"
    );
    assert!(
        cut_off(&mut silent, Duration::from_secs(6), false).await,
        "silent kept"
    );

    let who = reqwest::get(format!("http://{addr}/who")).await.unwrap();
    assert_eq!(who.text().await.unwrap(), "127.0.0.1");

    // A request in flight when the shutdown starts still gets its answer.
    let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let answer = slow.await.unwrap().unwrap().text().await.unwrap();
    assert_eq!(answer, "done");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once its connections ended")
        .unwrap();
}
