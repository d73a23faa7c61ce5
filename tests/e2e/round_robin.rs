//! [`RoundRobin`]: an HTTP-level load balancer with no stickiness at all.
//! Every HTTP request (and every WebSocket) goes to the next gateway in
//! turn, on a connection of its own: the answer says `Connection: close`,
//! so a client's next request is a new connection, hence the next gateway.
//! A test may send every WebSocket to one gateway instead
//! ([`RoundRobin::websockets_to`]), e.g. one that owns no session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A round-robin HTTP proxy in front of some gateways.
pub struct RoundRobin {
    addr: SocketAddr,
    /// How many requests went through.
    pub requests: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    websockets: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(targets: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let targets = Arc::new(Mutex::new(targets));
        let shared = Arc::clone(&targets);
        let websockets = Arc::new(Mutex::new(None));
        let ws_shared = Arc::clone(&websockets);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let targets = shared.lock().unwrap().clone();
                let ws = *ws_shared.lock().unwrap();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let _ = relay(client, &targets, ws, &counter).await;
                });
            }
        });
        RoundRobin {
            addr,
            requests,
            targets,
            websockets,
            task,
        }
    }

    /// Sends every WebSocket to `target` (`None`: round robin again).
    pub fn websockets_to(&self, target: Option<SocketAddr>) {
        *self.websockets.lock().unwrap() = target;
    }

    /// Where the next requests go.
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        *self.targets.lock().unwrap() = targets;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request: its head (and body) to the next gateway, then both ways
/// until either side closes (the rest of a WebSocket, or the answer).
async fn relay(
    mut client: TcpStream,
    targets: &[SocketAddr],
    websockets: Option<SocketAddr>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut upgrade = false;
    let mut kept = Vec::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        kept.push(line.to_owned());
    }
    let mut out = format!("{request_line}\r\n");
    for line in &kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(if upgrade {
        "Connection: Upgrade\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let target = match websockets {
        Some(ws) if upgrade => ws,
        _ => targets[n % targets.len()],
    };
    let mut server = TcpStream::connect(target).await?;
    server.write_all(out.as_bytes()).await?;
    // The body read so far; the rest follows through the copy.
    server.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
