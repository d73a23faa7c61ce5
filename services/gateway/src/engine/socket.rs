//! Handles to a connection: its outbound queue and its kill switch.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use confab_protocol::socketio::{self, Packet};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Process-unique id of a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A frame waiting in a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame, already encoded (Engine.IO prefix included). Cloning is
    /// a reference-count increment, so one encoding serves every recipient.
    Text(Utf8Bytes),
    /// A binary frame (an attachment of the preceding binary packet).
    Binary(Bytes),
}

/// Why the server closed a connection; becomes the WebSocket close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason text (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseReason {
    /// The outbound queue was full: the client does not read fast enough.
    pub fn slow_consumer(capacity: usize) -> Self {
        Self {
            code: 1008,
            reason: format!("slow consumer: outbound queue of {capacity} frames full"),
        }
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue was full; the connection is being closed as a slow consumer.
    #[error("slow consumer")]
    SlowConsumer,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
}

/// What all sockets of one connection share: the queue and the kill switch.
pub(crate) struct ConnShared {
    pub(crate) conn: ConnId,
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) kill: CancellationToken,
    pub(crate) kill_reason: OnceLock<CloseReason>,
    pub(crate) capacity: usize,
}

impl ConnShared {
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.kill_reason.set(reason);
        self.kill.cancel();
    }
}

struct Inner {
    nsp: Arc<str>,
    sid: Arc<str>,
    shared: Arc<ConnShared>,
}

/// A cheap, cloneable handle to one socket (a connection joined to one
/// namespace). Sending never blocks: a full queue closes the connection.
#[derive(Clone)]
pub struct SocketRef(Arc<Inner>);

impl fmt::Debug for SocketRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketRef")
            .field("conn", &self.0.shared.conn)
            .field("nsp", &self.0.nsp)
            .field("sid", &self.0.sid)
            .finish()
    }
}

impl SocketRef {
    pub(crate) fn new(shared: Arc<ConnShared>, nsp: Arc<str>, sid: Arc<str>) -> Self {
        Self(Arc::new(Inner { nsp, sid, shared }))
    }

    /// The connection's id.
    pub fn conn(&self) -> ConnId {
        self.0.shared.conn
    }

    /// The namespace.
    pub fn nsp(&self) -> &str {
        &self.0.nsp
    }

    /// The Socket.IO session id given to the client.
    pub fn sid(&self) -> &str {
        &self.0.sid
    }

    /// Queues a pre-encoded text frame.
    pub fn send_frame(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        self.push(Outbound::Text(frame))
    }

    /// Encodes and queues an event for this socket alone.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), SendError> {
        let (text, attachments) = Packet::event(&self.0.nsp, event, args, None).encode_frame();
        debug_assert!(attachments.is_empty());
        self.send_frame(Utf8Bytes::from(text))
    }

    /// Queues an encoded packet and its binary attachments.
    pub fn send_packet(&self, packet: &socketio::Packet) -> Result<(), SendError> {
        let (text, attachments) = packet.encode_frame();
        self.push(Outbound::Text(Utf8Bytes::from(text)))?;
        for a in attachments {
            self.push(Outbound::Binary(a))?;
        }
        Ok(())
    }

    fn push(&self, frame: Outbound) -> Result<(), SendError> {
        match self.0.shared.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::slow_consumer(self.0.shared.capacity));
                Err(SendError::SlowConsumer)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Closes the whole connection with a reason (first reason wins).
    pub fn close(&self, reason: CloseReason) {
        self.0.shared.close(reason);
    }

    /// Whether the connection was told to close.
    pub fn is_closing(&self) -> bool {
        self.0.shared.kill.is_cancelled()
    }
}
