//! Local rooms and fan-out, with routing by interest.
//!
//! The hub maps each room to the local sockets in it. The first local socket
//! to join a room opens one bus subscription for the room; the last to leave
//! closes it. There is never a subscription per socket. A bus message is
//! encoded into a Socket.IO frame once, and that one buffer is handed to
//! every member's outbound queue.
//!
//! Slow-consumer policy: queues are bounded and never waited on. A socket
//! whose queue is full is disconnected (close code 1008) and the frame is
//! counted as dropped; the client reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use confab_events::RoomId;
use confab_protocol::socketio::event_frame;
use dashmap::DashMap;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::engine::{ConnId, SendError, SocketRef};
use crate::metrics::Metrics;
use confab_bus::{Bus, BusError, BusMessage};

type Ready = Shared<BoxFuture<'static, Result<(), String>>>;

struct Room {
    members: HashMap<ConnId, SocketRef>,
    ready: Ready,
    task: AbortHandle,
}

/// Local rooms, their members, and their bus subscriptions.
pub struct Hub {
    rooms: DashMap<RoomId, Room>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub over a bus.
    pub fn new(bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            rooms: DashMap::new(),
            bus,
            metrics,
        })
    }

    /// The bus the hub routes through.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Puts a socket in a room; resolves once the room's bus subscription
    /// is live, so events published afterwards reach the socket.
    pub async fn join(self: &Arc<Self>, room: &RoomId, socket: &SocketRef) -> Result<(), BusError> {
        let ready = {
            let mut entry = self.rooms.entry(room.clone()).or_insert_with(|| {
                self.metrics.rooms.inc();
                self.subscribe(room)
            });
            entry.members.insert(socket.conn(), socket.clone());
            entry.ready.clone()
        };
        match ready.await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.leave(room, socket.conn());
                Err(BusError::Unavailable(e))
            }
        }
    }

    fn subscribe(self: &Arc<Self>, room: &RoomId) -> Room {
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        let hub: Weak<Self> = Arc::downgrade(self);
        let bus = Arc::clone(&self.bus);
        let room_id = room.clone();
        let task = tokio::spawn(async move {
            let mut sub = match bus.subscribe(&room_id).await {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            while let Some(msg) = sub.next().await {
                let Some(hub) = hub.upgrade() else { return };
                hub.deliver(&room_id, &msg);
            }
        });
        let ready = rx
            .map(|r| r.unwrap_or_else(|_| Err("subscription task ended".into())))
            .boxed()
            .shared();
        Room {
            members: HashMap::new(),
            ready,
            task: task.abort_handle(),
        }
    }

    /// Takes a socket out of a room; the last one out closes the room's
    /// subscription.
    pub fn leave(&self, room: &RoomId, conn: ConnId) {
        let removed = self.rooms.remove_if_mut(room, |_, r| {
            r.members.remove(&conn);
            r.members.is_empty()
        });
        if let Some((_, r)) = removed {
            r.task.abort();
            self.metrics.rooms.dec();
        }
    }

    /// Encodes a bus message once and queues it for every local member.
    pub fn deliver(&self, room: &RoomId, msg: &BusMessage) -> usize {
        let frame = Utf8Bytes::from(event_frame("/", &msg.event, &msg.args_json));
        self.broadcast(room, &frame)
    }

    /// Queues one encoded frame for every local member of a room. Returns
    /// how many sockets took it.
    pub fn broadcast(&self, room: &RoomId, frame: &Utf8Bytes) -> usize {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        for socket in r.members.values() {
            match socket.send_frame(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(SendError::SlowConsumer) => {
                    self.metrics.dropped("slow_consumer");
                }
                Err(SendError::Closed) => {}
            }
        }
        delivered
    }

    /// Publishes an event to a room through the bus (every gateway).
    pub async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<(), BusError> {
        self.bus.publish(room, msg).await
    }

    /// How many local sockets are in a room.
    pub fn members(&self, room: &RoomId) -> usize {
        self.rooms.get(room).map(|r| r.members.len()).unwrap_or(0)
    }

    /// How many rooms have local members.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}
