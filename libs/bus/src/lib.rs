//! The bus port: how room events travel between processes.
//!
//! A gateway publishes an event for a room and receives the events of the
//! rooms its local sockets are in. [`Bus`] is the port, free of any
//! broker's types: [`InProcessBus`] serves the all-in-one run; [`NatsBus`]
//! (NATS JetStream, the `nats` module family, one module per concern)
//! serves clusters; [`RedisBus`] (Redis streams, a Lua publish script and
//! pub/sub, the `redis` module family) serves clusters without NATS.
//!
//! [`subjects`] holds the room <-> NATS subject mapping and the names of the
//! streams and headers, shared with the membership service (which owns
//! stream `MEMBERSHIP`; the bus sets up only `ROOMS`).

mod fresh;
mod gap;
mod in_process;
mod log_store;
mod nats;
mod redis;
mod stall;
pub mod subjects;
mod timeout;
pub mod trace;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use confab_events::RoomId;
use futures::Stream;
use serde::Serialize;

pub use gap::{GapDecision, GapTracker};
pub use in_process::{InProcessBus, InProcessLimits};
pub use log_store::{LoadedLog, LogRecord, LogStore};
pub use nats::{
    MAX_DIRECT_REPLAYS, MAX_REPAIR_MESSAGES, NatsBus, NatsBusStats, NatsConfig, RECOVERY_WINDOW,
    ordered, parse_server_version,
};
pub use redis::{RedisBus, RedisConfig, TopicSubscription};
pub use stall::end_when_stalled;
pub use timeout::AdaptiveTimeout;

/// The NATS client library [`NatsBus`] is built on, for services that use
/// [`NatsBus::client`] or [`NatsBus::jetstream`] directly.
pub use async_nats;

/// One event for one room, its arguments serialized once.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// Socket.IO event name, e.g. `message:new`.
    pub event: Arc<str>,
    /// The event's arguments as a compact JSON array, e.g. `[{"id":"m1"}]`.
    pub args_json: Arc<str>,
    /// The event's sequence in the durable log, when it was stored (e.g. a
    /// JetStream stream sequence, or the in-process log's sequence); `None`
    /// for volatile events.
    pub seq: Option<u64>,
    /// Extra headers carried along (W3C `traceparent`, ...).
    pub headers: Arc<[(String, String)]>,
    /// De-duplication id (e.g. NATS `Nats-Msg-Id`): publishing the same id
    /// again within the duplicate window stores and delivers nothing new and
    /// reports [`Published::duplicate`]. Use an id that is stable across
    /// retries of the same logical event (e.g. the chat message id).
    pub msg_id: Option<Arc<str>>,
    /// Volatile events (typing, presence) are delivered live only: never
    /// stored, no sequence, not repaired after a loss.
    pub volatile: bool,
}

impl BusMessage {
    /// Builds a durable message with a single JSON argument.
    pub fn new(event: &str, data: &serde_json::Value) -> Self {
        let args = serde_json::to_string(&[data]).unwrap_or_else(|_| "[]".into());
        Self::from_args_json(event, args)
    }

    /// Builds a durable message from an already serialized JSON array of
    /// arguments.
    pub fn from_args_json(event: &str, args_json: String) -> Self {
        Self {
            event: event.into(),
            args_json: args_json.into(),
            seq: None,
            headers: Arc::from(Vec::new()),
            msg_id: None,
            volatile: false,
        }
    }

    /// Sets the de-duplication id (see [`BusMessage::msg_id`]).
    pub fn with_msg_id(mut self, msg_id: impl Into<Arc<str>>) -> Self {
        self.msg_id = Some(msg_id.into());
        self
    }

    /// Marks the message volatile (see [`BusMessage::volatile`]).
    pub fn into_volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Replaces the extra headers.
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers.into();
        self
    }

    /// The value of the first extra header named `name` (ASCII
    /// case-insensitive), e.g. `traceparent`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Carries binary attachments with the event (a Socket.IO
    /// BINARY_EVENT): the arguments must already hold the matching
    /// placeholders (`{"_placeholder":true,"num":N}`). They travel in the
    /// [`subjects::HEADER_ATTACHMENTS`] header (base64, comma-separated, in
    /// placeholder order), which every bus stores and delivers with the
    /// other headers: a binary event gets a sequence, is stored and is
    /// replayed like any durable event. Replaces earlier attachments; none
    /// leaves the header out. This and [`BusMessage::attachments`] are the
    /// one definition of the format (the emitter bridge writes it, gateways
    /// read it).
    pub fn with_attachments<A: AsRef<[u8]>>(mut self, attachments: &[A]) -> Self {
        use base64::Engine as _;
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(subjects::HEADER_ATTACHMENTS))
            .cloned()
            .collect();
        if !attachments.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            let parts: Vec<String> = attachments.iter().map(|a| b64.encode(a)).collect();
            headers.push((subjects::HEADER_ATTACHMENTS.to_owned(), parts.join(",")));
        }
        self.headers = headers.into();
        self
    }

    /// The binary attachments set by [`BusMessage::with_attachments`]:
    /// `Ok(None)` for an event without any, `Err` when the header is
    /// unreadable (not base64, more than [`MAX_ATTACHMENTS`]).
    pub fn attachments(&self) -> Result<Option<Vec<bytes::Bytes>>, AttachmentsError> {
        use base64::Engine as _;
        let Some(value) = self.header(subjects::HEADER_ATTACHMENTS) else {
            return Ok(None);
        };
        let parts: Vec<&str> = value.split(',').collect();
        if parts.len() > MAX_ATTACHMENTS {
            return Err(AttachmentsError(format!(
                "more than {MAX_ATTACHMENTS} attachments"
            )));
        }
        parts
            .into_iter()
            .map(|p| {
                base64::engine::general_purpose::STANDARD
                    .decode(p.trim())
                    .map(bytes::Bytes::from)
                    .map_err(|e| AttachmentsError(format!("attachment is not base64: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Most binary attachments one room event may carry
/// ([`BusMessage::attachments`]).
pub const MAX_ATTACHMENTS: usize = 64;

/// Why an event's [`subjects::HEADER_ATTACHMENTS`] header is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable attachments: {0}")]
pub struct AttachmentsError(String);

/// What the bus says about a publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The sequence the message got in the durable log; `None` for volatile
    /// messages.
    pub seq: Option<u64>,
    /// Whether the log already held a message with the same
    /// [`BusMessage::msg_id`]: nothing was stored or delivered again, and
    /// `seq` is the first message's sequence.
    pub duplicate: bool,
}

/// A live feed of one room's messages.
pub type BusSubscription = Pin<Box<dyn Stream<Item = BusMessage> + Send>>;

/// One stored message of [`Bus::tail`] or [`Bus::replay`], with its room.
#[derive(Debug, Clone)]
pub struct TailItem {
    /// The room the message was published to.
    pub room: RoomId,
    /// The message; its [`BusMessage::seq`] is always set.
    pub msg: BusMessage,
}

/// The feed of [`Bus::tail`]: every stored message of every room, in
/// sequence order, then live. An `Err` ends the feed (resume from the last
/// sequence received + 1).
pub type BusTail = Pin<Box<dyn Stream<Item = Result<TailItem, BusError>> + Send>>;

/// How a [`Bus::replay`] read the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayPath {
    /// A log in this process (no broker).
    Log,
    /// Reads of the broker's log that hold no reader state on the broker
    /// (NATS: batched direct gets, no consumer).
    Direct,
    /// A reader created on the broker for the replay and deleted afterwards
    /// (NATS: an ordered consumer).
    Consumer,
}

impl ReplayPath {
    /// `log`, `direct` or `consumer`, e.g. for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayPath::Log => "log",
            ReplayPath::Direct => "direct",
            ReplayPath::Consumer => "consumer",
        }
    }
}

/// A bus failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached (or did not answer in time); retrying
    /// later may work.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The broker or the bus refused this message (invalid event name or
    /// header, too large, wrong expected sequence, ...); retrying the same
    /// message will not help.
    #[error("bus refused the message: {0}")]
    Rejected(String),
    /// The broker is unsuitable (e.g. a nats-server older than 2.10, or
    /// without JetStream) or its streams cannot be set up.
    #[error("bus broker unsupported: {0}")]
    Unsupported(String),
    /// The bus configuration is invalid.
    #[error("bus configuration invalid: {0}")]
    Config(String),
    /// Messages asked for are no longer retained (the log was trimmed past
    /// them by age or count).
    #[error("no longer retained: {0}")]
    Trimmed(String),
}

/// Which durable log a bus reads and how far it reaches: what a projection
/// checks its checkpoint against before it tails ([`Bus::log_info`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogInfo {
    /// The log's identity, stable for the log's life and different for a
    /// new log (NATS: stream `ROOMS`'s creation time; in-process: the id the
    /// [`LogStore`] keeps, or a fresh one for a log kept in memory only). A
    /// checkpoint taken on another log is meaningless on this one.
    pub id: String,
    /// The first sequence still retained (`last + 1` when none is).
    pub first_seq: u64,
    /// The last sequence stored (0 when nothing ever was).
    pub last_seq: u64,
}

/// What readiness reports about the bus.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// Implementation name, e.g. `in-process` or `nats`.
    pub kind: &'static str,
    /// Whether publishes and subscriptions currently work.
    pub connected: bool,
    /// How many times a connection of the bus came back after it was lost,
    /// since the bus connected (NATS: reconnections of the client; Redis:
    /// of the command and the pub/sub connections; in-process: never).
    pub reconnects: u64,
    /// Whether several gateways can share this bus.
    pub shared: bool,
    /// Anything an operator should know.
    pub detail: String,
}

/// The bus port.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message to a room's subscribers. Durable messages are
    /// stored first (when the bus has a log) and resolve once stored.
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError>;
    /// Subscribes to a room. Messages published after this returns are
    /// delivered.
    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError>;
    /// The stored message with sequence `seq`, if it exists, is still
    /// retained and belongs to `room`; `None` otherwise (unknown, expired or
    /// another room's sequence). E.g. to answer a retried send with the
    /// message the first attempt stored.
    async fn fetch(&self, room: &RoomId, seq: u64) -> Result<Option<BusMessage>, BusError>;
    /// The stored messages of `rooms` with sequence `>= from_seq`, each with
    /// its room, in sequence order, at most `max`, up to the last message
    /// stored when the call started (later ones arrive through
    /// subscriptions). Volatile messages are never stored, so never
    /// replayed. [`BusError::Trimmed`] when the log no longer holds every
    /// message from `from_seq` on. Reads only those rooms' messages, never
    /// the whole log. E.g. for connection state recovery.
    async fn replay(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<TailItem>, BusError>;
    /// [`Bus::replay`], also saying how the log was read (for metrics).
    async fn replay_via(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<(Vec<TailItem>, ReplayPath), BusError> {
        Ok((self.replay(rooms, from_seq, max).await?, ReplayPath::Log))
    }
    /// The highest log sequence this process has seen stored (its own
    /// publishes, live messages, replays), without asking the broker: a
    /// sequence that exists, never ahead of the log. 0 when nothing was seen.
    fn high_water(&self) -> u64 {
        0
    }
    /// Brings [`Bus::high_water`] up to the log's current end by asking the
    /// broker (one request). Call it now and then, not per message.
    async fn refresh_high_water(&self) -> Result<u64, BusError> {
        Ok(self.high_water())
    }
    /// Every stored message of every room with sequence `>= from_seq`, in
    /// sequence order, then the ones stored later as they are stored, for
    /// as long as the feed is polled. Messages already dropped by retention
    /// are skipped. E.g. for projections of room events (message history).
    /// Buses without a log answer [`BusError::Unsupported`].
    async fn tail(&self, from_seq: u64) -> Result<BusTail, BusError> {
        let _ = from_seq;
        Err(BusError::Unsupported(
            "this bus keeps no log to tail".into(),
        ))
    }
    /// The identity and bounds of the durable log (one request to the
    /// broker). Buses without a log answer [`BusError::Unsupported`].
    async fn log_info(&self) -> Result<LogInfo, BusError> {
        Err(BusError::Unsupported("this bus keeps no log".into()))
    }
    /// Current state, for readiness.
    fn status(&self) -> BusStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_travel_in_their_header_and_come_back_intact() {
        let msg =
            BusMessage::from_args_json("app:bin", r#"[{"_placeholder":true,"num":0}]"#.into())
                .with_headers(vec![("traceparent".into(), "00-x".into())])
                .with_attachments(&[&[0u8, 1, 2, 255][..], b"hi"]);
        assert_eq!(
            msg.attachments().unwrap().unwrap(),
            vec![
                bytes::Bytes::from_static(&[0, 1, 2, 255]),
                bytes::Bytes::from_static(b"hi")
            ]
        );
        assert_eq!(
            msg.header("traceparent"),
            Some("00-x"),
            "other headers kept"
        );
        // The format events were stored with before: base64, comma-separated.
        let stored = BusMessage::from_args_json("app:bin", "[]".into()).with_headers(vec![(
            subjects::HEADER_ATTACHMENTS.into(),
            "AAEC/w==,aGk=".into(),
        )]);
        assert_eq!(stored.attachments(), msg.attachments());
        assert_eq!(
            BusMessage::from_args_json("x", "[]".into()).attachments(),
            Ok(None)
        );
        let none: &[&[u8]] = &[];
        assert_eq!(msg.clone().with_attachments(none).attachments(), Ok(None));
        let bad = BusMessage::from_args_json("x", "[]".into())
            .with_headers(vec![(subjects::HEADER_ATTACHMENTS.into(), "!!".into())]);
        assert!(bad.attachments().is_err());
    }
}
