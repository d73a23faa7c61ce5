//! The in-process bus: rooms are broadcast channels inside this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use confab_events::RoomId;
use tokio::sync::broadcast;

use crate::{Bus, BusError, BusMessage, BusStatus, BusSubscription, Published};

/// The in-process bus: rooms are broadcast channels inside this process.
///
/// It serves one process only; readiness says so. It keeps no log:
/// [`Published::seq`] is always `None`, `msg_id` is not de-duplicated and
/// durable and volatile messages are treated alike.
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
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = rooms.get(room)
            && tx.send(msg).is_err()
        {
            // Nobody listens any more.
            rooms.remove(room);
        }
        // No log: no sequence, no de-duplication.
        Ok(Published::default())
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
        let published = bus
            .publish(&a, BusMessage::new("x", &serde_json::json!(1)))
            .await
            .unwrap();
        assert_eq!(published, Published::default());
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
