//! The bus port: how room events travel between processes.
//!
//! A gateway publishes an event for a room and receives the events of the
//! rooms its local sockets are in. [`InProcessBus`] serves the all-in-one
//! run; the NATS implementation serves clusters. A Redis implementation
//! fits the same calls.

mod in_process;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use confab_events::RoomId;
use futures::Stream;
use serde::Serialize;

pub use in_process::InProcessBus;

/// One event for one room, its arguments serialized once.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// Socket.IO event name, e.g. `message:new`.
    pub event: Arc<str>,
    /// The event's arguments as a compact JSON array, e.g. `[{"id":"m1"}]`.
    pub args_json: Arc<str>,
    /// The event's sequence in the durable log, when it was stored
    /// (JetStream stream sequence); `None` for volatile events.
    pub seq: Option<u64>,
    /// Extra headers carried along (W3C `traceparent`, ...).
    pub headers: Arc<[(String, String)]>,
}

impl BusMessage {
    /// Builds a message with a single JSON argument.
    pub fn new(event: &str, data: &serde_json::Value) -> Self {
        let args = serde_json::to_string(&[data]).unwrap_or_else(|_| "[]".into());
        Self::from_args_json(event, args)
    }

    /// Builds a message from an already serialized JSON array of arguments.
    pub fn from_args_json(event: &str, args_json: String) -> Self {
        Self {
            event: event.into(),
            args_json: args_json.into(),
            seq: None,
            headers: Arc::from(Vec::new()),
        }
    }
}

/// A live feed of one room's messages.
pub type BusSubscription = Pin<Box<dyn Stream<Item = BusMessage> + Send>>;

/// A bus failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// What readiness reports about the bus.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// Implementation name, e.g. `in-process` or `nats`.
    pub kind: &'static str,
    /// Whether publishes and subscriptions currently work.
    pub connected: bool,
    /// Whether several gateways can share this bus.
    pub shared: bool,
    /// Anything an operator should know.
    pub detail: String,
}

/// The bus port.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message to a room's subscribers.
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<(), BusError>;
    /// Subscribes to a room. Messages published after this returns are
    /// delivered.
    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError>;
    /// Current state, for readiness.
    fn status(&self) -> BusStatus;
}
