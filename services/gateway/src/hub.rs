//! Local rooms and fan-out, with routing by interest.
//!
//! The hub maps each room to the local sockets in it. The first local socket
//! to join a room opens one bus subscription for the room; the last to leave
//! closes it. There is never a subscription per socket. A bus message is
//! encoded into a Socket.IO frame once, and that one buffer is handed to
//! every member's outbound queue.
//!
//! One dispatcher task (`hub/dispatch.rs`) reads every room feed of the
//! gateway and delivers in log order across rooms, so that a socket's last
//! offset always covers everything before it (connection-state recovery).
//!
//! Slow-consumer policy: queues are bounded and never waited on. A socket
//! whose queue is full is disconnected (close code 1008) and the frame is
//! counted as dropped; the client reconnects.
//!
//! Membership changes arrive as control events in the user's own room
//! (`room:joined` / `room:left` in `user:{id}`, published by the membership
//! service): every local socket of that user joins or leaves the room
//! before the event is forwarded to it, on every gateway at once. A
//! [`ChangeObserver`] (the gateway's membership cache) hears of each change,
//! and of `channel:archived`, before any socket moves.
//!
//! Events of the membership service's `@socket.io/redis-emitter` bridge
//! (`hub/emitted.rs`): an emit to several rooms (`Confab-Rooms`) reaches a
//! socket only from the first of them it is in, one with `Confab-Except`
//! no socket in an except room, one with `Confab-Attachments` goes out as a
//! BINARY_EVENT; the socket control events (`sockets:join` / `leave` /
//! `disconnect`) act on the room's local sockets and are never forwarded.

mod dispatch;
mod emitted;

pub(crate) use emitted::{JoinGate, event_frame_of, takes};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use confab_events::socket::{RoomChange, names};
use confab_events::{RoomId, RoomKind, UserId};
use confab_protocol::socketio::{event_frame, event_frame_with_offset};
use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::engine::{ConnId, SendError, SocketRef};
use crate::metrics::Metrics;
use confab_bus::{Bus, BusError, BusMessage, BusSubscription, Published};

/// A change to the dispatcher's set of room feeds.
enum Feed {
    /// A room's subscription is live: dispatch its messages.
    Add(u64, RoomId, BusSubscription),
    /// The room has no local member left: drop its subscription.
    Remove(u64),
}

type Ready = Shared<BoxFuture<'static, Result<(), String>>>;

/// Hears of the membership changes the hub applies, before any socket
/// moves: what keeps a cached view of the authority current.
pub(crate) trait ChangeObserver: Send + Sync + 'static {
    /// `user` joined (`joined`) or left `room` (`room:joined` /
    /// `room:left` in the user's room).
    fn room_change(&self, user: &UserId, room: &RoomId, joined: bool);
    /// `room` (a channel) was archived: it is read-only from now on.
    fn archived(&self, room: &RoomId);
}

struct Room {
    members: HashMap<ConnId, SocketRef>,
    ready: Ready,
    /// The subscription's key in the dispatcher.
    key: u64,
    /// Sets up the subscription until it is handed to the dispatcher.
    setup: AbortHandle,
}

/// Local rooms, their members, and their bus subscriptions.
pub struct Hub {
    rooms: DashMap<RoomId, Room>,
    /// The rooms of each registered connection; a connection joins rooms
    /// only while registered, so nothing can join a room for a socket that
    /// is already gone.
    conns: DashMap<ConnId, HashSet<RoomId>>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    /// Whether durable events carry their offset (connection-state
    /// recovery on).
    offsets: bool,
    /// Hands room feeds to (and takes them from) the dispatcher.
    feeds: mpsc::UnboundedSender<Feed>,
    next_key: AtomicU64,
    /// Told of membership changes first (set once).
    observer: OnceLock<Arc<dyn ChangeObserver>>,
    /// Asked before a `sockets:join` puts a socket in a room (set once;
    /// without it such joins are refused).
    gate: OnceLock<Arc<dyn JoinGate>>,
    /// `messaging.system` of the bus, for consumer spans.
    system: &'static str,
}

impl Hub {
    /// A hub whose durable events carry their log sequence as the
    /// connection-state-recovery offset (last argument) when `offsets`.
    pub fn with_offsets(bus: Arc<dyn Bus>, metrics: Arc<Metrics>, offsets: bool) -> Arc<Self> {
        let (feeds, rx) = mpsc::unbounded_channel();
        let system = match bus.status().kind {
            "nats" => confab_bus::trace::SYSTEM_NATS,
            "redis" => confab_bus::trace::SYSTEM_REDIS,
            _ => confab_bus::trace::SYSTEM_IN_PROCESS,
        };
        let hub = Arc::new(Self {
            system,
            rooms: DashMap::new(),
            conns: DashMap::new(),
            bus,
            metrics,
            offsets,
            feeds,
            next_key: AtomicU64::new(1),
            observer: OnceLock::new(),
            gate: OnceLock::new(),
        });
        tokio::spawn(dispatch::run(Arc::downgrade(&hub), rx).in_current_span());
        hub
    }

    /// Sets the observer told of every membership change and archive this
    /// hub sees (once; later calls are ignored).
    pub(crate) fn observe(&self, observer: Arc<dyn ChangeObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Sets the authority check of `sockets:join` (once; later calls are
    /// ignored).
    pub(crate) fn gate(&self, gate: Arc<dyn JoinGate>) {
        let _ = self.gate.set(gate);
    }

    /// The bus the hub routes through.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Registers a connection so that it may join rooms.
    pub fn register(&self, conn: ConnId) {
        self.conns.entry(conn).or_default();
    }

    /// Takes a connection out of every room and unregisters it.
    pub fn unregister(&self, conn: ConnId) {
        if let Some((_, rooms)) = self.conns.remove(&conn) {
            for room in rooms {
                self.remove_member(&room, conn);
            }
        }
    }

    /// The rooms a connection is in.
    pub fn rooms_of(&self, conn: ConnId) -> Vec<RoomId> {
        self.conns
            .get(&conn)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many rooms a connection is in (its user room included).
    pub fn room_count_of(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |r| r.len())
    }

    /// Whether a connection is in a room.
    pub fn is_in(&self, conn: ConnId, room: &RoomId) -> bool {
        self.conns.get(&conn).is_some_and(|r| r.contains(room))
    }

    /// Puts a socket in a room (idempotent); resolves once the room's bus
    /// subscription is live, so events published afterwards reach the
    /// socket. Does nothing for an unregistered connection.
    pub async fn join(self: &Arc<Self>, room: &RoomId, socket: &SocketRef) -> Result<(), BusError> {
        let ready = {
            let Some(mut rooms) = self.conns.get_mut(&socket.conn()) else {
                return Ok(());
            };
            if !rooms.insert(room.clone()) {
                return Ok(());
            }
            // Lock order: connection entry, then room entry (leave too).
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

    /// Opens the room's bus subscription in the background and hands it to
    /// the dispatcher; `ready` resolves once it is live.
    fn subscribe(self: &Arc<Self>, room: &RoomId) -> Room {
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        let bus = Arc::clone(&self.bus);
        let feeds = self.feeds.clone();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let room_id = room.clone();
        let setup = tokio::spawn(async move {
            match bus.subscribe(&room_id).await {
                Ok(sub) => {
                    let _ = feeds.send(Feed::Add(key, room_id, sub));
                    let _ = tx.send(Ok(()));
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
        let ready = rx
            .map(|r| r.unwrap_or_else(|_| Err("subscription task ended".into())))
            .boxed()
            .shared();
        Room {
            members: HashMap::new(),
            ready,
            key,
            setup: setup.abort_handle(),
        }
    }

    /// Handles one bus message of a room: membership changes first (for a
    /// user room), then the fan-out. When spans are exported and the
    /// message carries a trace context: inside one consumer span
    /// (`process rooms.{kind}.{id}`) per message on this gateway, linked to
    /// the publisher's producer span (never one per socket).
    async fn on_message(self: &Arc<Self>, room: &RoomId, msg: &BusMessage) {
        let span = confab_bus::trace::process_span(self.system, room, msg);
        if span.is_none() {
            self.handle(room, msg).await;
            return;
        }
        let sockets = self.handle(room, msg).instrument(span.clone()).await;
        span.record("confab.sockets", sockets);
    }

    /// [`on_message`](Self::on_message) without the span; returns how many
    /// local sockets took the event.
    async fn handle(self: &Arc<Self>, room: &RoomId, msg: &BusMessage) -> usize {
        if emitted::is_control(&msg.event) {
            self.apply_control(room, msg).await;
            return 0;
        }
        if room.kind() == RoomKind::User {
            self.apply_membership(room, msg).await;
        } else if &*msg.event == names::CHANNEL_ARCHIVED
            && room.kind() == RoomKind::Channel
            && let Some(observer) = self.observer.get()
        {
            observer.archived(room);
        }
        self.deliver(room, msg)
    }

    /// Takes a socket out of a room; the last one out closes the room's
    /// subscription.
    pub fn leave(&self, room: &RoomId, conn: ConnId) {
        if let Some(mut rooms) = self.conns.get_mut(&conn) {
            rooms.remove(room);
            self.remove_member(room, conn);
        }
    }

    fn remove_member(&self, room: &RoomId, conn: ConnId) {
        let removed = self.rooms.remove_if_mut(room, |_, r| {
            r.members.remove(&conn);
            r.members.is_empty()
        });
        if let Some((_, r)) = removed {
            r.setup.abort();
            let _ = self.feeds.send(Feed::Remove(r.key));
            self.metrics.rooms.dec();
        }
    }

    /// Applies a membership change announced in a user room to every local
    /// socket of that user.
    async fn apply_membership(self: &Arc<Self>, user_room: &RoomId, msg: &BusMessage) {
        let change = match RoomChange::parse(&msg.event, &msg.args_json) {
            None => return,
            Some(Ok(change)) => change,
            Some(Err(error)) => {
                tracing::warn!(room = %user_room, event = &*msg.event, %error, "membership change without a valid room");
                return;
            }
        };
        let (joined, target) = (change.joined(), change.room());
        if target.kind() == RoomKind::User {
            return;
        }
        if let (Some(observer), Ok(user)) = (self.observer.get(), UserId::parse(user_room.id())) {
            observer.room_change(&user, target, joined);
        }
        let sockets: Vec<SocketRef> = self
            .rooms
            .get(user_room)
            .map(|r| r.members.values().cloned().collect())
            .unwrap_or_default();
        // Inside a traced message's consumer span only (see `on_message`).
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "gateway.move_sockets",
                confab.room = %target,
                confab.joined = joined,
                confab.sockets = sockets.len(),
            )
        };
        async {
            for socket in sockets {
                if joined {
                    if let Err(e) = self.join(target, &socket).await {
                        tracing::warn!(%target, error = %e, "cannot join socket after membership change");
                    }
                } else {
                    self.leave(target, socket.conn());
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Encodes a bus message once (with its offset, when it is durable and
    /// recovery is on) and queues it for every local member.
    pub fn deliver(&self, room: &RoomId, msg: &BusMessage) -> usize {
        if emitted::is_addressed(msg) {
            return self.deliver_addressed(room, msg);
        }
        let frame = match msg.seq {
            Some(seq) if self.offsets => {
                event_frame_with_offset("/", &msg.event, &msg.args_json, seq)
            }
            _ => event_frame("/", &msg.event, &msg.args_json),
        };
        self.broadcast(room, &Utf8Bytes::from(frame), msg.seq)
    }

    /// Queues one encoded frame, the event with log sequence `seq` (`None`
    /// for volatile events), for every local member of a room. Returns how
    /// many sockets took it.
    pub fn broadcast(&self, room: &RoomId, frame: &Utf8Bytes, seq: Option<u64>) -> usize {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        for socket in r.members.values() {
            match socket.deliver(frame, seq) {
                Ok(_) => delivered += 1,
                Err(SendError::SlowConsumer) => {
                    self.metrics.dropped("slow_consumer");
                }
                Err(SendError::Closed) => {}
            }
        }
        delivered
    }

    /// Publishes an event to a room through the bus (every gateway).
    pub async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
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
