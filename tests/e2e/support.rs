//! Spawning gateways and talking to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_bus::InProcessBus;
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::membership::StaticMembership;
use confab_gateway::{App, AppError, AppHandle, Deps, GatewayConfig};
use confab_test_support::NodeClient;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "e2e-secret-0123456789abcdef0123456789abcdef";
pub const ISSUER: &str = "https://auth.confab.test";
pub const AUDIENCE: &str = "confab-e2e";

/// A gateway running in this test process on a free port.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub handle: AppHandle,
    pub membership: Arc<StaticMembership>,
    task: JoinHandle<Result<(), AppError>>,
}

pub fn test_config() -> GatewayConfig {
    let mut cfg = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace: Duration::from_secs(5),
        shutdown_spread: Duration::from_millis(200),
        ..GatewayConfig::default()
    };
    cfg.auth.hs256_secret = Some(SECRET.into());
    cfg.auth.issuer = Some(ISSUER.into());
    cfg.auth.audience = Some(AUDIENCE.into());
    cfg.auth.cookie_name = Some("confab_token".into());
    cfg.bus.kind = BusKind::InProcess;
    cfg.membership.kind = MembershipKind::Static;
    cfg
}

pub async fn spawn_gateway(tweak: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
    let mut cfg = test_config();
    tweak(&mut cfg);
    cfg.validate().expect("test config is valid");
    let membership = Arc::new(StaticMembership::new());
    let deps = Deps {
        bus: Arc::new(InProcessBus::default()),
        membership: Arc::clone(&membership) as _,
        presence: Arc::new(confab_gateway::presence::NoPresence),
        history: Arc::new(confab_gateway::history::NoHistory),
        sessions: None,
        forwarding: None,
    };
    let app = App::build(cfg, deps).await.expect("gateway builds");
    let addr = app.local_addr();
    let handle = app.handle();
    let task = tokio::spawn(app.run(std::future::pending()));
    TestGateway {
        addr,
        handle,
        membership,
        task,
    }
}

impl TestGateway {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("gateway stops within 10 s")
            .expect("gateway task")
            .expect("gateway ran cleanly");
    }
}

pub fn token(user: &str) -> String {
    token_ttl(user, Duration::from_secs(3600))
}

pub fn token_ttl(user: &str, ttl: Duration) -> String {
    confab_auth::mint_hs256(SECRET, user, ttl, Some(ISSUER), Some(AUDIENCE)).unwrap()
}

/// socket.io-client options for a WebSocket-only client with a token.
pub fn opts(token: &str) -> Value {
    json!({
        "transports": ["websocket"],
        "auth": { "token": token },
        "forceNew": true,
        "reconnection": false,
    })
}

/// Connects socket `socket` of `user` (with a fresh token) to `url` and
/// waits (up to 15 s) for its CONNECT, which it returns.
pub async fn connect_as(node: &NodeClient, socket: &str, user: &str, url: &str) -> Value {
    node.connect(socket, url, opts(&token(user))).await;
    node.expect(socket, is_type("connect"), Duration::from_secs(15))
        .await
}

pub fn is_type(t: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == t
}

pub fn is_event(name: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == "event" && m["event"] == name
}

/// Waits until `cond` holds, polling.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw WebSocket client, for protocol-level checks.
pub struct RawWs {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a raw client observed.
#[derive(Debug)]
pub enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Closed(Option<CloseFrame>),
    Timeout,
}

impl RawWs {
    pub async fn connect(url: &str) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        RawWs { ws }
    }

    /// Connects to `ws://{addr}{path}` with a receive buffer of about
    /// `rcvbuf` bytes set before the handshake (so the TCP window stays that
    /// small): a client that stops reading then holds up the server's
    /// writes at once instead of after megabytes of kernel buffering.
    pub async fn connect_small_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: u32) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        let stream = socket.connect(addr).await.expect("tcp connects");
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}{path}"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("websocket connects");
        RawWs { ws }
    }

    /// Connects, or `None` if the server refused the handshake.
    pub async fn try_connect(url: &str) -> Option<RawWs> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        Some(RawWs { ws })
    }

    /// Connects and fails the test if the server accepts.
    pub async fn connect_err(url: &str) -> String {
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => panic!("{url} accepted a websocket"),
            Err(e) => e.to_string(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send");
    }

    /// The next frame (pings included), or Timeout.
    pub async fn next(&mut self, timeout: Duration) -> Seen {
        loop {
            match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return Seen::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Seen::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => return Seen::Text(t.to_string()),
                Ok(Some(Ok(Message::Binary(b)))) => return Seen::Binary(b.to_vec()),
                Ok(Some(Ok(Message::Close(f)))) => return Seen::Closed(f),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next text frame that is not an Engine.IO ping.
    pub async fn text(&mut self) -> String {
        loop {
            match self.next(Duration::from_secs(5)).await {
                Seen::Text(t) if t == "2" => continue,
                Seen::Text(t) => return t,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Waits for the server to close; returns the close frame.
    pub async fn closed(&mut self, within: Duration) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Seen::Closed(f) => return f,
                Seen::Timeout => panic!("server did not close within {within:?}"),
                _ => continue,
            }
        }
    }

    /// Engine.IO open, then Socket.IO CONNECT with `auth`; returns the
    /// CONNECT reply.
    pub async fn socket_io_connect(&mut self, auth: Option<&Value>) -> String {
        let open = self.text().await;
        assert!(open.starts_with("0{"), "{open}");
        match auth {
            Some(a) => self.send(&format!("40{a}")).await,
            None => self.send("40").await,
        }
        self.text().await
    }
}

/// Checks an Engine.IO open packet as the official suites do, with the
/// conformance server's settings (ping 300 ms / timeout 200 ms, maxPayload
/// 1e6) and the given `upgrades`.
pub fn assert_open(frame: &str, upgrades: &[&str]) {
    assert!(frame.starts_with('0'), "{frame}");
    let v: Value = serde_json::from_str(&frame[1..]).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert!(v["sid"].is_string());
    assert_eq!(v["upgrades"], json!(upgrades));
    assert_eq!(v["pingInterval"], 300);
    assert_eq!(v["pingTimeout"], 200);
    assert_eq!(v["maxPayload"], 1_000_000);
}
