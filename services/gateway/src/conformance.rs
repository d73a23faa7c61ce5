//! A server for the official Socket.IO v5 and Engine.IO v4 protocol test
//! suites (their WebSocket cases), built on the gateway's engine with no
//! authentication.
//!
//! Configured as the suites' READMEs prescribe for a server under test:
//! port 3000 (or `PORT`), ping interval 300 ms, ping timeout 200 ms,
//! connect timeout 1 s, max payload 1e6.
//!
//! * `/socket.io/`: Socket.IO. Namespaces `/` and `/custom`; on connect the
//!   server emits `auth` with the CONNECT payload; `/` echoes `message` as
//!   `message-back` and acks `message-with-ack` with its arguments.
//! * `/engine.io/`: bare Engine.IO; every message is echoed.
//!
//! Run: `cargo run -p confab-gateway --example conformance`, then point the
//! suites at `http://localhost:3000`. Long-polling cases fail by design:
//! the gateway serves WebSocket only. The e2e tests run the suites'
//! WebSocket cases against [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{
    Accepted, Ack, ConnectRefusal, ConnectRequest, DisconnectReason, Engine, EngineConfig,
    EventOutcome, Handler, IncomingEvent, NoHooks, SocketRef,
};
use async_trait::async_trait;
use axum::Router;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use confab_protocol::engineio::{self, OpenPacket, Transport};
use confab_protocol::socketio::Packet;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// The suites' expected Socket.IO behaviour.
struct SuiteHandler;

#[async_trait]
impl Handler for SuiteHandler {
    type Session = Value;

    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    async fn on_connect(
        &self,
        _socket: &SocketRef,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<Value>, ConnectRefusal> {
        Ok(Accepted {
            pid: None,
            session: req.auth.cloned().unwrap_or_else(|| json!({})),
            expires_at: None,
        })
    }

    async fn on_connected(&self, socket: &SocketRef, auth: &mut Value) {
        let _ = socket.emit("auth", vec![auth.clone()]);
    }

    async fn on_event(
        &self,
        socket: &SocketRef,
        _auth: &mut Value,
        event: IncomingEvent,
    ) -> EventOutcome {
        if socket.nsp() != "/" {
            return EventOutcome::default();
        }
        match event.name.as_str() {
            "message" => {
                let p = Packet::event("/", "message-back", event.args, None)
                    .with_attachments(event.attachments);
                let _ = socket.send_packet(&p);
                EventOutcome::default()
            }
            "message-with-ack" => Ack {
                args: event.args,
                attachments: event.attachments,
            }
            .into(),
            _ => EventOutcome::default(),
        }
    }

    async fn on_disconnect(&self, _s: &SocketRef, _auth: Value, _r: DisconnectReason) {}
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine<SuiteHandler>>,
}

async fn socket_io(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    state
        .engine
        .handle_request(query.as_deref(), headers, Some(remote), upgrade.ok())
}

async fn engine_io(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let error = |e: engineio::HandshakeError| {
        (
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_json(),
        )
            .into_response()
    };
    match engineio::parse_handshake(query.as_deref()) {
        Ok(h) if h.transport == Transport::WebSocket && h.sid.is_none() => {}
        Ok(_) => return error(engineio::HandshakeError::UnknownTransport),
        Err(e) => return error(e),
    }
    let Ok(upgrade) = upgrade else {
        return error(engineio::HandshakeError::BadRequest);
    };
    let cfg = state.engine.config().clone();
    upgrade.on_upgrade(move |ws| echo(ws, cfg))
}

/// Bare Engine.IO over WebSocket: heartbeat, and every message echoed.
async fn echo(mut ws: WebSocket, cfg: EngineConfig) {
    let open = engineio::Packet::Open(OpenPacket {
        sid: format!("{:x}", rand_id()),
        upgrades: vec![],
        ping_interval: cfg.ping_interval.as_millis() as u64,
        ping_timeout: cfg.ping_timeout.as_millis() as u64,
        max_payload: cfg.max_payload as u64,
    });
    if ws
        .send(Message::Text(open.encode_text().unwrap_or_default().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut next_ping = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    loop {
        let timer = pong_deadline.unwrap_or(next_ping);
        tokio::select! {
            msg = ws.recv() => {
                let reply = match msg {
                    Some(Ok(Message::Text(t))) => match engineio::Packet::decode_text(t.as_str()) {
                        Ok(engineio::Packet::Message(_)) => Some(Message::Text(t)),
                        Ok(engineio::Packet::Pong(_)) => {
                            pong_deadline = None;
                            next_ping = Instant::now() + cfg.ping_interval;
                            None
                        }
                        Ok(engineio::Packet::Ping(p)) => engineio::Packet::Pong(p)
                            .encode_text()
                            .map(|s| Message::Text(s.into())),
                        Ok(engineio::Packet::Upgrade | engineio::Packet::Noop) => None,
                        _ => break, // close packet, invalid packet
                    },
                    Some(Ok(Message::Binary(b))) => Some(Message::Binary(b)),
                    Some(Ok(_)) => None,
                    _ => return,
                };
                if let Some(m) = reply
                    && ws.send(m).await.is_err()
                {
                    return;
                }
            }
            _ = sleep_until(timer) => {
                if pong_deadline.is_some() {
                    break;
                }
                pong_deadline = Some(Instant::now() + cfg.ping_timeout);
                if ws.send(Message::Text("2".into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

fn rand_id() -> u128 {
    rand::random()
}

/// The suites' engine settings.
pub fn suite_config() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(1000),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    }
}

/// Serves both suites on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let engine = Engine::new(
        suite_config(),
        Arc::new(SuiteHandler),
        token.clone(),
        Arc::new(NoHooks),
    );
    let app = Router::new()
        .route("/socket.io/", any(socket_io))
        .route("/engine.io/", any(engine_io))
        .with_state(AppState { engine });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        token.cancel();
    })
    .await
}
