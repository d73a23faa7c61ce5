//! A server for the official Socket.IO v5 and Engine.IO v4 protocol test
//! suites (WebSocket and long-polling), built on the gateway's engine with
//! no authentication.
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
//! Both accept any origin (CORS `*`: the origin echoed) and answer
//! preflights. Run: `cargo run -p confab-gateway --example conformance`,
//! then point the suites at `http://localhost:3000`. The e2e tests run the
//! suites' cases against [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cors;
use crate::engine::transport::Transport;
use crate::engine::{
    Accepted, Ack, ConnectRefusal, ConnectRequest, DisconnectReason, Engine, EngineConfig,
    EventOutcome, Handler, IncomingEvent, NoHooks, PollingSessions, SocketRef, open_packet,
    polling,
};
use async_trait::async_trait;
use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::response::Response;
use axum::routing::any;
use confab_protocol::engineio::{self, Transport as EngineTransport};
use confab_protocol::socketio::Packet;
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
    /// The bare Engine.IO echo's polling sessions.
    echo: Arc<PollingSessions>,
}

async fn socket_io(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    with_cors(req, |req| async move {
        let kept = req.headers().clone();
        state.engine.serve(req, kept, Some(remote)).await
    })
    .await
}

async fn engine_io(State(state): State<AppState>, req: Request) -> Response {
    with_cors(req, |req| echo_request(state, req)).await
}

/// The suites' CORS (`*`): every origin allowed, preflights answered.
async fn with_cors<F>(req: Request, serve: impl FnOnce(Request) -> F) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    if req.method() == http::Method::OPTIONS {
        return cors::preflight(origin.as_ref(), req.headers());
    }
    let mut response = serve(req).await;
    cors::allow(origin.as_ref(), response.headers_mut());
    response
}

async fn echo_request(state: AppState, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let handshake = match engineio::parse_handshake(parts.uri.query()) {
        Ok(h) => h,
        Err(e) => return polling::error(e),
    };
    let cfg = state.engine.config().clone();
    match handshake.transport {
        EngineTransport::WebSocket => {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .ok();
            if let Some(sid) = handshake.sid {
                // No forwarder here: nothing is relayed, nothing tracked.
                let (tasks, shutdown) = (Default::default(), Default::default());
                let cx = polling::UpgradeContext {
                    configure: |u| u,
                    tasks: &tasks,
                    shutdown: &shutdown,
                };
                return polling::upgrade(&state.echo, &sid, upgrade, cx).await;
            }
            let Some(upgrade) = upgrade else {
                return polling::error(engineio::HandshakeError::BadRequest);
            };
            let open = open_packet(&cfg, &format!("{:x}", rand_id()), false);
            upgrade.on_upgrade(move |ws| echo(ws, cfg, Some(open)))
        }
        EngineTransport::Polling => {
            let sessions = Arc::clone(&state.echo);
            let open = || {
                let (sid, transport) = sessions.open();
                let packet = open_packet(&cfg, &sid, true);
                tokio::spawn(echo(transport, cfg, None));
                packet
            };
            let sid = handshake.sid.as_deref();
            polling::handle(&state.echo, &parts.method, sid, &parts.headers, body, open).await
        }
    }
}

/// Bare Engine.IO: heartbeat, and every message echoed. `open` is the open
/// packet to send first (a polling session's went out as the handshake's
/// answer).
async fn echo<T: Transport>(mut ws: T, cfg: EngineConfig, open: Option<String>) {
    if let Some(open) = open
        && ws.send(Message::Text(open.into())).await.is_err()
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
    let cfg = suite_config();
    let echo = PollingSessions::new("", cfg.outbound_queue, cfg.max_payload);
    let app = Router::new()
        .route("/socket.io/", any(socket_io))
        .route("/engine.io/", any(engine_io))
        .with_state(AppState { engine, echo });
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
