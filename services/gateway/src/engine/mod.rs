//! A Socket.IO v5 server over Engine.IO v4: WebSocket, and HTTP
//! long-polling with the upgrade to WebSocket ([`polling`]).
//!
//! The engine knows the protocols and nothing about Confab: authentication,
//! rooms and events are the [`Handler`]'s business. One tokio task runs each
//! connection ([`conn`]); everything else talks to a connection through its
//! bounded outbound queue via a [`SocketRef`].
//!
//! Invariants:
//! * every frame, payload and queue is bounded (see [`EngineConfig`]);
//! * malformed input never panics a task: the peer gets the protocol's error
//!   or a close frame with a reason;
//! * connection tasks are tracked, so shutdown can close every socket with a
//!   close frame and wait for the tasks to end.

mod conn;
mod gate;
pub mod polling;
mod queue;
mod socket;
pub(crate) mod transport;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use confab_protocol::engineio::{self, HandshakeError, OpenPacket, Transport};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::limits::{Counter, Held};

pub use polling::PollingSessions;
pub use socket::{CloseReason, ConnId, EventFrame, SendError, SocketRef};

/// Protocol limits and timings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Interval between two server pings.
    pub ping_interval: Duration,
    /// How long the client has to answer a ping.
    pub ping_timeout: Duration,
    /// How long a new connection may stay without joining a namespace.
    pub connect_timeout: Duration,
    /// Largest message (and frame) accepted from a client, in bytes.
    pub max_payload: usize,
    /// Most binary attachments one packet may carry.
    pub max_attachments: usize,
    /// Largest message accepted before the connection's first Socket.IO
    /// CONNECT succeeded (a CONNECT and its auth payload); a larger one, or
    /// binary data (attachments), closes the connection: nothing is
    /// buffered for a client that has not authenticated.
    pub max_connect_payload: usize,
    /// Capacity of each connection's outbound queue, in frames. When it is
    /// full the connection is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Initial WebSocket read buffer per connection, in bytes: kept for the
    /// connection's life and the most one read takes in (a larger message
    /// is read in pieces of this size). Small by default: an idle
    /// connection pays for it, and chat messages rarely exceed it.
    pub ws_read_buffer: usize,
    /// WebSocket write buffer per connection before a flush, in bytes.
    pub ws_write_buffer: usize,
    /// Longest a single write to a client may block before the connection is
    /// considered dead.
    pub write_timeout: Duration,
    /// On shutdown, each connection closes after a random delay below this,
    /// so that its clients reconnect elsewhere spread out, not all at once.
    pub shutdown_spread: Duration,
    /// Most open connections (WebSockets and polling sessions) from one IP
    /// address; 0: no limit.
    pub connections_per_ip: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_millis(45_000),
            max_payload: 1_000_000,
            max_attachments: 10,
            max_connect_payload: 16 * 1024,
            outbound_queue: 256,
            ws_read_buffer: 256,
            ws_write_buffer: 8 * 1024,
            write_timeout: Duration::from_secs(10),
            shutdown_spread: Duration::ZERO,
            connections_per_ip: 0,
        }
    }
}

/// What a client sent with its CONNECT packet, plus the HTTP handshake.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The CONNECT packet's payload (`auth` option of the client).
    pub auth: Option<&'a Value>,
    /// The headers of the WebSocket upgrade request that were handed to
    /// [`Engine::serve`] (the connection keeps them for its life,
    /// so callers pass only those CONNECT handling needs).
    pub headers: &'a HeaderMap,
    /// The client's address (the TCP peer), when known.
    pub remote: Option<SocketAddr>,
}

/// A refused CONNECT: sent to the client as CONNECT_ERROR
/// `{"message": ..., "data": ...}`.
#[derive(Debug, Clone)]
pub struct ConnectRefusal {
    /// Human-readable reason (the client's `err.message`).
    pub message: String,
    /// Extra machine-readable detail (the client's `err.data`).
    pub data: Option<Value>,
    /// Close the whole connection instead of answering CONNECT_ERROR. A
    /// CONNECT_ERROR ends a `socket.io-client` socket for good; a closed
    /// transport makes its Manager reconnect with backoff, which is what a
    /// temporary failure (the auth backend is down) needs.
    pub retry: bool,
}

/// What happens when a socket's session expiry passes.
#[derive(Debug)]
pub enum Expiry {
    /// Still valid: keep the socket, look again at this instant.
    Extend(Instant),
    /// Over: send this event (name, args), if any, then disconnect.
    Disconnect(Option<(String, Vec<Value>)>),
}

/// An accepted CONNECT.
#[derive(Debug)]
pub struct Accepted<S> {
    /// Per-socket state owned by the connection task.
    pub session: S,
    /// The private session id for connection-state recovery, sent in the
    /// CONNECT reply (`{"sid", "pid"}`); `None` when recovery is off.
    pub pid: Option<String>,
    /// When the session expires (e.g. the token's `exp`); the engine then
    /// calls [`Handler::on_expired`] and disconnects the socket.
    pub expires_at: Option<Instant>,
}

/// An EVENT received from a client.
#[derive(Debug)]
pub struct IncomingEvent {
    /// Event name (first element of the array).
    pub name: String,
    /// The remaining arguments.
    pub args: Vec<Value>,
    /// Binary attachments referenced by placeholders in `args`.
    pub attachments: Vec<Bytes>,
    /// Whether the client asked for an acknowledgement.
    pub wants_ack: bool,
}

/// An acknowledgement to send back for an event.
#[derive(Debug, Default)]
pub struct Ack {
    /// Arguments handed to the client's ack callback.
    pub args: Vec<Value>,
    /// Binary attachments referenced by placeholders in `args`.
    pub attachments: Vec<Bytes>,
}

impl Ack {
    /// An ack with one JSON argument.
    pub fn one(value: Value) -> Self {
        Self {
            args: vec![value],
            attachments: Vec::new(),
        }
    }
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The transport closed (network drop, client closed the WebSocket).
    TransportClose,
    /// The client missed a pong.
    PingTimeout,
    /// The server closed the socket; the text says why.
    Server(String),
    /// The server is shutting down; the client reconnects elsewhere.
    Shutdown,
    /// The client did not read fast enough (outbound queue full).
    SlowConsumer,
}

impl DisconnectReason {
    /// Whether the client will reconnect on its own and may recover its
    /// session: the transport was lost, not a deliberate disconnect.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Self::TransportClose | Self::PingTimeout | Self::Shutdown | Self::SlowConsumer
        )
    }
}

/// The application side of the engine.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Per-socket state.
    type Session: Send + 'static;

    /// Whether a namespace is served; others get CONNECT_ERROR
    /// `Invalid namespace`.
    fn has_namespace(&self, nsp: &str) -> bool;

    /// Decides a CONNECT. Runs before the CONNECT reply is written, so it
    /// must not emit to `socket` (use [`Handler::on_connected`]).
    async fn on_connect(
        &self,
        socket: &SocketRef,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<Self::Session>, ConnectRefusal>;

    /// Runs right after the CONNECT reply was written.
    async fn on_connected(&self, _socket: &SocketRef, _session: &mut Self::Session) {}

    /// Handles an event. The returned ack is sent only if the client asked
    /// for one. Returns the session's new expiry when it changed (e.g. after
    /// a token refresh).
    async fn on_event(
        &self,
        socket: &SocketRef,
        session: &mut Self::Session,
        event: IncomingEvent,
    ) -> EventOutcome;

    /// The session's expiry passed: extend it, or disconnect the socket
    /// (after the returned event, if any).
    async fn on_expired(&self, _socket: &SocketRef, _session: &mut Self::Session) -> Expiry {
        Expiry::Disconnect(None)
    }

    /// The socket left (for any reason); release what it held.
    async fn on_disconnect(
        &self,
        socket: &SocketRef,
        session: Self::Session,
        reason: DisconnectReason,
    );
}

/// What handling an event produced.
#[derive(Debug, Default)]
pub struct EventOutcome {
    /// Acknowledgement, sent if the client asked for one.
    pub ack: Option<Ack>,
    /// A new expiry for the session, if it changed.
    pub new_expiry: Option<Instant>,
}

impl From<Ack> for EventOutcome {
    fn from(ack: Ack) -> Self {
        Self {
            ack: Some(ack),
            new_expiry: None,
        }
    }
}

/// The engine: configuration, handler, and the bookkeeping shared by all
/// connection tasks.
pub struct Engine<H: Handler> {
    config: EngineConfig,
    handler: Arc<H>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    hooks: Arc<dyn EngineHooks>,
    polling: Arc<PollingSessions>,
    /// Open connections per client address.
    per_ip: Arc<Counter<IpAddr>>,
}

/// Observers for metrics; all methods default to no-ops.
pub trait EngineHooks: Send + Sync + 'static {
    /// A connection (a WebSocket, or a polling session) opened.
    fn connection_opened(&self) {}
    /// A connection (a WebSocket, or a polling session) closed.
    fn connection_closed(&self) {}
    /// A packet arrived from a client.
    fn packet_in(&self) {}
    /// A frame was written to a client.
    fn frame_out(&self) {}
    /// A handshake (HTTP or Socket.IO CONNECT) was refused.
    fn handshake_failed(&self, _reason: &str) {}
    /// A connection was closed for a reason worth counting.
    fn closed_for(&self, _reason: &str) {}
}

/// Hooks that record nothing.
pub struct NoHooks;
impl EngineHooks for NoHooks {}

impl<H: Handler> Engine<H> {
    /// Builds an engine. `shutdown` closes every connection when cancelled.
    pub fn new(
        config: EngineConfig,
        handler: Arc<H>,
        shutdown: CancellationToken,
        hooks: Arc<dyn EngineHooks>,
    ) -> Arc<Self> {
        Self::new_owned(config, handler, shutdown, hooks, "")
    }

    /// Builds an engine whose polling sids name `owner` (see
    /// [`polling::sid_owner`]), so that another node can tell where a
    /// session lives.
    pub fn new_owned(
        config: EngineConfig,
        handler: Arc<H>,
        shutdown: CancellationToken,
        hooks: Arc<dyn EngineHooks>,
        owner: &str,
    ) -> Arc<Self> {
        let polling = PollingSessions::new(owner, config.outbound_queue, config.max_payload);
        let per_ip = Counter::new(config.connections_per_ip);
        Arc::new(Self {
            per_ip,
            config,
            handler,
            tasks: TaskTracker::new(),
            shutdown,
            hooks,
            polling,
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The polling sessions this engine owns.
    pub fn polling(&self) -> &Arc<PollingSessions> {
        &self.polling
    }

    /// Answers a request to the Engine.IO endpoint: a WebSocket (new, or
    /// the upgrade of a polling session), or a long-polling handshake, GET
    /// or POST. `headers` are those the connection keeps for CONNECT
    /// handling.
    pub async fn serve(
        self: &Arc<Self>,
        req: http::Request<Body>,
        headers: HeaderMap,
        remote: Option<SocketAddr>,
    ) -> Response {
        let (mut parts, body) = req.into_parts();
        let handshake = match engineio::parse_handshake(parts.uri.query()) {
            Ok(h) => h,
            Err(e) => return self.handshake_error(e),
        };
        if handshake.sid.is_none() && self.shutdown.is_cancelled() {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
        }
        // A new session takes a place of its address for its whole life.
        let held = match (&handshake.sid, remote) {
            (None, Some(remote)) => match self.per_ip.acquire(remote.ip()) {
                Some(held) => Some(held),
                None => return self.too_many_connections(),
            },
            _ => None,
        };
        match (handshake.transport, handshake.sid) {
            (Transport::WebSocket, sid) => {
                let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                    .await
                    .ok();
                match sid {
                    Some(sid) => {
                        let cx = polling::UpgradeContext {
                            configure: |u| self.configure(u),
                            tasks: &self.tasks,
                            shutdown: &self.shutdown,
                        };
                        polling::upgrade(&self.polling, &sid, upgrade, cx).await
                    }
                    None => self.websocket(headers, remote, upgrade, held),
                }
            }
            (Transport::Polling, sid) => {
                let open = || self.open_polling(headers, remote, held);
                polling::handle(
                    &self.polling,
                    &parts.method,
                    sid.as_deref(),
                    &parts.headers,
                    body,
                    open,
                )
                .await
            }
        }
    }

    /// The refusal of a handshake from an address at its connection limit.
    fn too_many_connections(&self) -> Response {
        self.hooks.handshake_failed("too_many_connections");
        let body = serde_json::json!({ "error": {
            "code": "too_many_connections",
            "message": format!(
                "this address already has {} open connections to this gateway (limits.connections_per_ip); close one or retry later",
                self.per_ip.limit()
            ),
        }});
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    /// The engine's WebSocket limits.
    fn configure(&self, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
        let cfg = &self.config;
        upgrade
            .read_buffer_size(cfg.ws_read_buffer)
            .write_buffer_size(cfg.ws_write_buffer)
            .max_write_buffer_size(cfg.ws_write_buffer + cfg.max_payload * 2 + 64 * 1024)
            .max_message_size(cfg.max_payload)
            .max_frame_size(cfg.max_payload)
    }

    /// A new WebSocket connection.
    fn websocket(
        self: &Arc<Self>,
        headers: HeaderMap,
        remote: Option<SocketAddr>,
        upgrade: Option<WebSocketUpgrade>,
        held: Option<Held<IpAddr>>,
    ) -> Response {
        let Some(upgrade) = upgrade else {
            return self.handshake_error(HandshakeError::BadRequest);
        };
        let engine = Arc::clone(self);
        let open = open_packet(&self.config, &conn::new_sid(), false);
        // The connection task logs inside the caller's span (the gateway's).
        let span = tracing::Span::current();
        self.configure(upgrade).on_upgrade(move |ws| {
            let tasks = engine.tasks.clone();
            let run = conn::run(engine, ws, Some(open), headers, remote, held);
            tasks.track_future(run.instrument(span))
        })
    }

    /// A new polling session: starts its connection task and returns the
    /// open packet, the handshake's answer.
    fn open_polling(
        self: &Arc<Self>,
        headers: HeaderMap,
        remote: Option<SocketAddr>,
        held: Option<Held<IpAddr>>,
    ) -> String {
        let (sid, transport) = self.polling.open();
        let span = tracing::Span::current();
        let run = conn::run(Arc::clone(self), transport, None, headers, remote, held);
        self.tasks.spawn(run.instrument(span));
        open_packet(&self.config, &sid, true)
    }

    fn handshake_error(&self, e: HandshakeError) -> Response {
        self.hooks.handshake_failed(match e {
            HandshakeError::UnknownTransport => "unknown_transport",
            HandshakeError::UnsupportedProtocolVersion => "unsupported_protocol",
            HandshakeError::UnknownSid => "unknown_sid",
            _ => "bad_request",
        });
        polling::error(e)
    }

    /// Number of live connection tasks.
    pub fn connections(&self) -> usize {
        self.tasks.len()
    }

    /// Waits for every connection task to end (after `shutdown` was
    /// cancelled), at most `grace`. Returns whether all ended in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// The encoded open packet of a new session; a polling session may upgrade
/// to WebSocket.
pub(crate) fn open_packet(cfg: &EngineConfig, sid: &str, polling: bool) -> String {
    let upgrades = if polling {
        vec!["websocket".to_owned()]
    } else {
        Vec::new()
    };
    engineio::Packet::Open(OpenPacket {
        sid: sid.to_owned(),
        upgrades,
        ping_interval: cfg.ping_interval.as_millis() as u64,
        ping_timeout: cfg.ping_timeout.as_millis() as u64,
        max_payload: cfg.max_payload as u64,
    })
    .encode_text()
    .unwrap_or_default()
}
