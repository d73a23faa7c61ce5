//! The bus port: how room events travel between processes.
//!
//! A gateway publishes an event for a room and receives the events of the
//! rooms its local sockets are in. The in-process implementation serves the
//! all-in-one run; the NATS implementation (next) serves clusters. A Redis
//! implementation fits the same two calls.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use confab_events::RoomId;
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

/// One event for one room, its arguments serialized once.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// Socket.IO event name, e.g. `message:new`.
    pub event: Arc<str>,
    /// The event's arguments as a JSON array, e.g. `[{"id":"m1"}]`.
    pub args_json: Arc<str>,
}

impl BusMessage {
    /// Builds a message with a single JSON argument.
    pub fn new(event: &str, data: &serde_json::Value) -> Self {
        let args = serde_json::to_string(&[data]).unwrap_or_else(|_| "[]".into());
        Self {
            event: event.into(),
            args_json: args.into(),
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

/// The in-process bus: rooms are broadcast channels inside this process.
///
/// It serves one process only; readiness says so.
pub struct InProcessBus {
    rooms: Mutex<HashMap<RoomId, broadcast::Sender<BusMessage>>>,
    capacity: usize,
    lagged: Arc<dyn Fn(u64) + Send + Sync>,
}

impl InProcessBus {
    /// A bus whose per-room buffers hold `capacity` messages; `lagged` is
    /// told how many messages a slow subscriber skipped.
    pub fn new(capacity: usize, lagged: Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            lagged,
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(4096, Arc::new(|_| {}))
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<(), BusError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = rooms.get(room)
            && tx.send(msg).is_err()
        {
            // Nobody listens any more.
            rooms.remove(room);
        }
        Ok(())
    }

    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError> {
        let rx = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .entry(room.clone())
                .or_insert_with(|| broadcast::channel(self.capacity).0)
                .subscribe()
        };
        let lagged = Arc::clone(&self.lagged);
        let room = room.clone();
        Ok(Box::pin(futures::stream::unfold(rx, move |mut rx| {
            let lagged = Arc::clone(&lagged);
            let room = room.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(m) => return Some((m, rx)),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(%room, skipped = n, "in-process bus subscriber lagged");
                            lagged(n);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })))
    }

    fn status(&self) -> BusStatus {
        BusStatus {
            kind: "in-process",
            connected: true,
            shared: false,
            detail: "single-process bus: serves this process only (all-in-one mode)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn delivers_to_subscribers_of_the_room_only() {
        let bus = InProcessBus::default();
        let a = RoomId::parse("channel:a").unwrap();
        let b = RoomId::parse("channel:b").unwrap();
        let mut sa = bus.subscribe(&a).await.unwrap();
        let mut sb = bus.subscribe(&b).await.unwrap();
        bus.publish(&a, BusMessage::new("x", &serde_json::json!(1)))
            .await
            .unwrap();
        let m = sa.next().await.unwrap();
        assert_eq!(&*m.event, "x");
        assert_eq!(&*m.args_json, "[1]");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sb.next())
                .await
                .is_err()
        );
    }
}
