//! One connection: Engine.IO framing and heartbeat, Socket.IO namespaces,
//! and the outbound queue, all driven by a single task. Generic over its
//! [`Transport`]: a WebSocket, or a long-polling session (which may move to
//! a WebSocket on the way).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use confab_protocol::engineio;
use confab_protocol::socketio::{Decoder, Packet, PacketType};
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::gate::Gate;
use super::queue::{OutQueue, Outbound};
use super::socket::ConnShared;
use super::transport::Transport;
use super::{
    Ack, CloseReason, ConnId, ConnectRequest, DisconnectReason, Engine, Expiry, Handler,
    IncomingEvent, SocketRef,
};

/// Frames written per wake-up before flushing, so one busy socket cannot
/// starve its own reads.
const WRITE_BATCH: usize = 64;

struct NsSocket<S> {
    socket: SocketRef,
    session: S,
    expires_at: Option<Instant>,
}

enum Flow {
    Continue,
    Stop(DisconnectReason),
}

struct Conn<H: Handler, T> {
    engine: Arc<Engine<H>>,
    ws: T,
    shared: Arc<ConnShared>,
    /// Frames taken from the queue and not yet written (reused buffer).
    batch: Vec<Outbound>,
    decoder: Decoder,
    /// Boxed: the table's buckets then stay small (one namespace is usual).
    sockets: HashMap<String, Box<NsSocket<H::Session>>>,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    /// When this connection closes during a shutdown: spread over
    /// [`EngineConfig::shutdown_spread`](super::EngineConfig) so that the
    /// clients do not all reconnect elsewhere in the same instant.
    closing_at: Option<Instant>,
}

pub(super) fn new_sid() -> String {
    super::polling::new_sid("")
}

fn close_frame(reason: &CloseReason) -> Message {
    let mut text = reason.reason.clone();
    if text.len() > 123 {
        let mut cut = 123;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Message::Close(Some(CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from(text),
    }))
}

/// Runs a connection to completion; `open` is the Engine.IO open packet
/// to write first, if it was not sent already.
pub(super) async fn run<H: Handler, T: Transport>(
    engine: Arc<Engine<H>>,
    ws: T,
    open: Option<String>,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
) {
    engine.hooks.connection_opened();
    let cfg = engine.config.clone();
    let shared = Arc::new(ConnShared {
        conn: ConnId::next(),
        queue: OutQueue::new(cfg.outbound_queue),
        kill: CancellationToken::new(),
        kill_reason: OnceLock::new(),
        capacity: cfg.outbound_queue,
        offsets: Default::default(),
    });
    let now = Instant::now();
    let mut conn = Conn {
        engine: Arc::clone(&engine),
        ws,
        shared,
        batch: Vec::new(),
        decoder: Decoder::new(cfg.max_attachments),
        sockets: HashMap::new(),
        headers,
        remote,
        next_ping: now + cfg.ping_interval,
        pong_deadline: None,
        connect_deadline: Some(now + cfg.connect_timeout),
        closing_at: None,
    };
    // Written here, not kept in `Conn`: the connection's state stays as
    // small as it was (a polling session's open packet went out as the
    // handshake's answer).
    let opened = match open {
        Some(open) => conn.write(vec![Message::Text(open.into())]).await.is_ok(),
        None => true,
    };
    let reason = if opened {
        conn.serve().await
    } else {
        DisconnectReason::TransportClose
    };
    conn.shared.queue.close();
    conn.finish(reason).await;
    engine.hooks.connection_closed();
}

impl<H: Handler, T: Transport> Conn<H, T> {
    async fn serve(&mut self) -> DisconnectReason {
        tracing::debug!(conn = %self.shared.conn, remote = ?self.remote, "engine.io session opened");

        // Long-lived futures, polled again on every turn of the loop rather
        // than re-created: re-creating them registers a timer and two
        // cancellation waiters per frame written. The kill switch and the
        // shutdown are also gated: polled only once they woke, not on every
        // frame (each poll of a cancellation future takes a mutex).
        let kill = std::pin::pin!(self.shared.kill.clone().cancelled_owned());
        let shutdown = std::pin::pin!(self.engine.shutdown.clone().cancelled_owned());
        let gate = Gate::new();
        let (mut kill, mut shutdown) = (gate.gate(kill), gate.gate(shutdown));
        let mut timer = std::pin::pin!(sleep_until(self.next_deadline()));
        // Whether the deadlines may have changed (not after a write).
        let mut recompute = false;
        loop {
            if std::mem::take(&mut recompute) {
                let deadline = self.next_deadline();
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            let queue = &self.shared.queue;
            let batch = &mut self.batch;
            tokio::select! {
                biased;
                () = &mut kill => {
                    let reason = self.shared.kill_reason.get().cloned().unwrap_or(CloseReason {
                        code: 1008,
                        reason: "closed by server".into(),
                    });
                    let slow = reason.is_slow_consumer();
                    if slow {
                        self.engine.hooks.closed_for("slow_consumer");
                    }
                    let text = reason.reason.clone();
                    self.close(reason).await;
                    return if slow {
                        DisconnectReason::SlowConsumer
                    } else {
                        DisconnectReason::Server(text)
                    };
                }
                () = &mut shutdown, if self.closing_at.is_none() => {
                    recompute = true;
                    let spread = self.engine.config.shutdown_spread.as_millis() as u64;
                    let delay = if spread == 0 { 0 } else { rand::random_range(0..spread) };
                    self.closing_at = Some(Instant::now() + std::time::Duration::from_millis(delay));
                }
                () = std::future::poll_fn(|cx| queue.poll_take(cx, batch, WRITE_BATCH)) => {
                    if self.write_queued().await.is_err() {
                        return DisconnectReason::TransportClose;
                    }
                }
                msg = self.ws.recv() => {
                    recompute = true;
                    // Boxed: the handling of one message (handler calls and
                    // all) needs far more state than waiting does, and an
                    // idle connection should only pay for waiting.
                    let flow = match msg {
                        None => Flow::Stop(DisconnectReason::TransportClose),
                        Some(Err(e)) => Box::pin(self.on_transport_error(e)).await,
                        Some(Ok(m)) => Box::pin(self.on_message(m)).await,
                    };
                    if let Flow::Stop(reason) = flow {
                        return reason;
                    }
                }
                () = timer.as_mut() => {
                    recompute = true;
                    if let Flow::Stop(reason) = Box::pin(self.on_timer()).await {
                        return reason;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut t = self.pong_deadline.unwrap_or(self.next_ping);
        if let Some(c) = self.closing_at {
            t = t.min(c);
        }
        if let Some(d) = self.connect_deadline {
            t = t.min(d);
        }
        for s in self.sockets.values() {
            if let Some(e) = s.expires_at {
                t = t.min(e);
            }
        }
        t
    }

    async fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        if self.closing_at.is_some_and(|c| now >= c) {
            // A transport close, not a Socket.IO DISCONNECT: the client
            // reconnects (to another gateway) and recovers its session.
            self.close(CloseReason {
                code: 1001,
                reason: "server shutting down".into(),
            })
            .await;
            return Flow::Stop(DisconnectReason::Shutdown);
        }
        if let Some(deadline) = self.pong_deadline {
            if now >= deadline {
                self.engine.hooks.closed_for("ping_timeout");
                self.close(CloseReason {
                    code: 1000,
                    reason: "ping timeout".into(),
                })
                .await;
                return Flow::Stop(DisconnectReason::PingTimeout);
            }
        } else if now >= self.next_ping {
            self.pong_deadline = Some(now + self.engine.config.ping_timeout);
            if self.write(vec![Message::Text("2".into())]).await.is_err() {
                return Flow::Stop(DisconnectReason::TransportClose);
            }
        }
        if let Some(deadline) = self.connect_deadline
            && now >= deadline
        {
            self.engine.hooks.handshake_failed("connect_timeout");
            let ms = self.engine.config.connect_timeout.as_millis();
            self.close(CloseReason {
                code: 1008,
                reason: format!("no Socket.IO CONNECT within {ms} ms"),
            })
            .await;
            return Flow::Stop(DisconnectReason::Server("connect timeout".into()));
        }
        let expired: Vec<String> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|e| now >= e))
            .map(|(nsp, _)| nsp.clone())
            .collect();
        for nsp in expired {
            if let Some(mut s) = self.sockets.remove(&nsp) {
                let handler = Arc::clone(&self.engine.handler);
                let notice = match handler.on_expired(&s.socket, &mut s.session).await {
                    Expiry::Extend(until) => {
                        s.expires_at = Some(until);
                        self.sockets.insert(nsp, s);
                        continue;
                    }
                    Expiry::Disconnect(notice) => notice,
                };
                let mut frames = Vec::new();
                if let Some((event, args)) = notice {
                    frames.push(packet_text(&Packet::event(&nsp, &event, args, None)));
                }
                frames.push(packet_text(&Packet::disconnect(&nsp)));
                let _ = self.write(frames).await;
                handler
                    .on_disconnect(
                        &s.socket,
                        s.session,
                        DisconnectReason::Server("session expired".into()),
                    )
                    .await;
            }
        }
        Flow::Continue
    }

    async fn on_transport_error(&mut self, e: axum::Error) -> Flow {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::error::CapacityError;
        let inner = e.into_inner();
        match inner.downcast_ref::<WsError>() {
            Some(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                self.engine.hooks.closed_for("payload_too_large");
                self.close(CloseReason {
                    code: 1009,
                    reason: format!("message of {size} bytes exceeds maxPayload {max_size}"),
                })
                .await;
                Flow::Stop(DisconnectReason::Server("payload too large".into()))
            }
            Some(WsError::Protocol(p)) => {
                self.engine.hooks.closed_for("protocol_error");
                self.close(CloseReason {
                    code: 1002,
                    reason: format!("websocket protocol error: {p}"),
                })
                .await;
                Flow::Stop(DisconnectReason::TransportClose)
            }
            _ => {
                tracing::debug!(conn = %self.shared.conn, error = %inner, "transport error");
                Flow::Stop(DisconnectReason::TransportClose)
            }
        }
    }

    async fn protocol_error(&mut self, what: String) -> Flow {
        tracing::debug!(conn = %self.shared.conn, error = %what, "closing on protocol error");
        self.engine.hooks.closed_for("protocol_error");
        self.close(CloseReason {
            code: 1002,
            reason: what,
        })
        .await;
        Flow::Stop(DisconnectReason::Server("protocol error".into()))
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => {
                let packet = match engineio::Packet::decode_text(text.as_str()) {
                    Ok(p) => p,
                    Err(e) => {
                        return self
                            .protocol_error(format!("invalid Engine.IO packet: {e}"))
                            .await;
                    }
                };
                match packet {
                    engineio::Packet::Message(body) => {
                        let decoded = self.decoder.push_text(&body);
                        self.on_decoded(decoded).await
                    }
                    engineio::Packet::Pong(_) => {
                        self.pong_deadline = None;
                        self.next_ping = Instant::now() + self.engine.config.ping_interval;
                        Flow::Continue
                    }
                    engineio::Packet::Ping(payload) => {
                        let pong = engineio::Packet::Pong(payload)
                            .encode_text()
                            .unwrap_or_default();
                        match self.write(vec![Message::Text(pong.into())]).await {
                            Ok(()) => Flow::Continue,
                            Err(()) => Flow::Stop(DisconnectReason::TransportClose),
                        }
                    }
                    engineio::Packet::Close => {
                        self.close(CloseReason {
                            code: 1000,
                            reason: "client closed the session".into(),
                        })
                        .await;
                        Flow::Stop(DisconnectReason::TransportClose)
                    }
                    engineio::Packet::Upgrade | engineio::Packet::Noop => Flow::Continue,
                    engineio::Packet::Open(_) | engineio::Packet::Binary(_) => {
                        self.protocol_error("unexpected Engine.IO packet from client".into())
                            .await
                    }
                }
            }
            Message::Binary(data) => {
                let decoded = self.decoder.push_binary(data);
                self.on_decoded(decoded).await
            }
            Message::Close(_) => Flow::Stop(DisconnectReason::TransportClose),
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
        }
    }

    async fn on_decoded(
        &mut self,
        decoded: Result<Option<Packet>, confab_protocol::DecodeError>,
    ) -> Flow {
        self.engine.hooks.packet_in();
        match decoded {
            Err(e) => {
                self.protocol_error(format!("invalid Socket.IO packet: {e}"))
                    .await
            }
            Ok(None) => Flow::Continue,
            Ok(Some(packet)) => self.on_packet(packet).await,
        }
    }

    async fn on_packet(&mut self, packet: Packet) -> Flow {
        match packet.kind {
            PacketType::Connect => self.on_connect(packet).await,
            PacketType::Disconnect => {
                if let Some(s) = self.sockets.remove(&packet.nsp) {
                    let handler = Arc::clone(&self.engine.handler);
                    handler
                        .on_disconnect(&s.socket, s.session, DisconnectReason::ClientDisconnect)
                        .await;
                }
                Flow::Continue
            }
            PacketType::Event | PacketType::BinaryEvent => self.on_event(packet).await,
            // The server never asks clients for acks, so there is nothing to match.
            PacketType::Ack | PacketType::BinaryAck => Flow::Continue,
            PacketType::ConnectError => {
                self.protocol_error("CONNECT_ERROR is a server-to-client packet".into())
                    .await
            }
        }
    }

    async fn on_connect(&mut self, packet: Packet) -> Flow {
        let nsp = packet.nsp;
        let handler = Arc::clone(&self.engine.handler);
        if !handler.has_namespace(&nsp) {
            self.engine.hooks.handshake_failed("invalid_namespace");
            let p = Packet::connect_error(&nsp, "Invalid namespace");
            return self.write_flow(vec![packet_text(&p)]).await;
        }
        if self.sockets.contains_key(&nsp) {
            let p = Packet::connect_error(&nsp, "already connected to this namespace");
            return self.write_flow(vec![packet_text(&p)]).await;
        }
        let sid: Arc<str> = new_sid().into();
        let socket = SocketRef::new(Arc::clone(&self.shared), nsp.as_str().into(), sid.clone());
        let req = ConnectRequest {
            auth: packet.data.as_ref(),
            headers: &self.headers,
            remote: self.remote,
        };
        let span = tracing::info_span!("socket.connect", nsp = %nsp, sid = &*sid);
        match handler.on_connect(&socket, req).instrument(span).await {
            Ok(accepted) => {
                let mut data = json!({ "sid": &*socket.sid() });
                if let Some(pid) = &accepted.pid {
                    data["pid"] = json!(pid);
                }
                let reply = Packet::connect(&nsp, Some(data));
                if let Flow::Stop(r) = self.write_flow(vec![packet_text(&reply)]).await {
                    handler
                        .on_disconnect(&socket, accepted.session, r.clone())
                        .await;
                    return Flow::Stop(r);
                }
                self.connect_deadline = None;
                let mut session = accepted.session;
                handler.on_connected(&socket, &mut session).await;
                self.sockets.insert(
                    nsp,
                    Box::new(NsSocket {
                        socket,
                        session,
                        expires_at: accepted.expires_at,
                    }),
                );
                Flow::Continue
            }
            Err(refusal) if refusal.retry => {
                // A temporary failure: the client's Manager reconnects
                // with backoff after a closed transport, never after a
                // CONNECT_ERROR.
                self.close(CloseReason {
                    code: 1013,
                    reason: refusal.message,
                })
                .await;
                Flow::Stop(DisconnectReason::Server(
                    "connect refused, retry later".into(),
                ))
            }
            Err(refusal) => {
                let mut data = serde_json::Map::new();
                data.insert("message".into(), Value::String(refusal.message));
                if let Some(d) = refusal.data {
                    data.insert("data".into(), d);
                }
                let p = Packet {
                    kind: PacketType::ConnectError,
                    nsp,
                    id: None,
                    data: Some(Value::Object(data)),
                    attachments: Vec::new(),
                };
                self.write_flow(vec![packet_text(&p)]).await
            }
        }
    }

    async fn on_event(&mut self, packet: Packet) -> Flow {
        let Some(entry) = self.sockets.get_mut(&packet.nsp) else {
            // Events for a namespace the client has not joined are ignored,
            // as the reference server does.
            return Flow::Continue;
        };
        let Some(Value::Array(mut items)) = packet.data else {
            return Flow::Continue;
        };
        if items.is_empty() {
            return Flow::Continue;
        }
        let name = match items.remove(0) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let event = IncomingEvent {
            name,
            args: items,
            attachments: packet.attachments,
            wants_ack: packet.id.is_some(),
        };
        let handler = Arc::clone(&self.engine.handler);
        // One span per client event: the root of the trace that follows the
        // event through the bus and the membership service.
        let span = tracing::info_span!(
            "socket.event",
            event = %event.name,
            sid = &*entry.socket.sid(),
            ack = event.wants_ack
        );
        let outcome = handler
            .on_event(&entry.socket, &mut entry.session, event)
            .instrument(span)
            .await;
        if let Some(expiry) = outcome.new_expiry {
            entry.expires_at = Some(expiry);
        }
        match (packet.id, outcome.ack) {
            (Some(id), Some(Ack { args, attachments })) => {
                let p = Packet::ack(&packet.nsp, id, args).with_attachments(attachments);
                let (text, bins) = p.encode_frame();
                let mut frames = vec![Message::Text(text.into())];
                frames.extend(bins.into_iter().map(Message::Binary));
                self.write_flow(frames).await
            }
            _ => Flow::Continue,
        }
    }

    async fn write_flow(&mut self, frames: Vec<Message>) -> Flow {
        match self.write(frames).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop(DisconnectReason::TransportClose),
        }
    }

    /// Writes frames produced by this task, after whatever is already
    /// queued, so that a handler's emits and its ack keep their order.
    async fn write(&mut self, frames: Vec<Message>) -> Result<(), ()> {
        self.shared.queue.take(&mut self.batch, usize::MAX);
        self.write_batch(frames).await
    }

    /// Writes the batch taken from the queue, then flushes.
    async fn write_queued(&mut self) -> Result<(), ()> {
        self.write_batch(Vec::new()).await
    }

    /// Writes the batch taken from the queue, then `extra`, and flushes;
    /// the batch buffer is kept for the next time unless it grew large.
    async fn write_batch(&mut self, extra: Vec<Message>) -> Result<(), ()> {
        let timeout = self.engine.config.write_timeout;
        let ws = &mut self.ws;
        let hooks = &self.engine.hooks;
        let batch = &mut self.batch;
        let fut = async {
            let frames = batch.drain(..).map(outbound_message).chain(extra);
            for f in frames {
                ws.feed(f).await?;
                hooks.frame_out();
            }
            ws.flush().await
        };
        let result = bounded(timeout, fut).await;
        self.batch.clear();
        if self.batch.capacity() > WRITE_BATCH {
            self.batch = Vec::new();
        }
        result
    }

    /// Sends a close frame (best effort, bounded in time).
    async fn close(&mut self, reason: CloseReason) {
        let frame = close_frame(&reason);
        let _ = tokio::time::timeout(
            self.engine
                .config
                .write_timeout
                .min(std::time::Duration::from_secs(2)),
            async { self.ws.send(frame).await },
        )
        .await;
    }

    async fn finish(&mut self, reason: DisconnectReason) {
        let handler = Arc::clone(&self.engine.handler);
        for (_, s) in self.sockets.drain() {
            handler
                .on_disconnect(&s.socket, s.session, reason.clone())
                .await;
        }
        tracing::debug!(conn = %self.shared.conn, ?reason, "connection closed");
    }
}

/// Runs a write, bounded by `timeout`. A write that completes on its first
/// poll (the socket had room: the usual case) never touches the timer wheel.
async fn bounded<E>(
    timeout: std::time::Duration,
    fut: impl Future<Output = Result<(), E>>,
) -> Result<(), ()> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(r) = futures::poll!(fut.as_mut()) {
        return r.map_err(|_| ());
    }
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn outbound_message(o: Outbound) -> Message {
    match o {
        Outbound::Text(t) => Message::Text(t),
        Outbound::Binary(b) => Message::Binary(b),
    }
}

fn packet_text(p: &Packet) -> Message {
    let (text, _) = p.encode_frame();
    Message::Text(text.into())
}
