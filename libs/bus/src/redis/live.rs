//! Live delivery: one pub/sub subscription per room per process, by
//! interest, on a RESP3 connection whose pushes are routed here. User
//! rooms (with [`super::RedisConfig::shared_user_rooms`]) share one
//! pattern subscription per process, `{prefix}:live:user:*`, made at the
//! first user room and kept: one channel subscription per connected user
//! would cost a subscription (and a SUBSCRIBE round trip) per user, while
//! the pattern costs every process every user room's messages, dropped
//! at once when no local feed wants them (as NATS's `rooms.user.*`).
//!
//! The connection manager resubscribes every channel after a reconnect;
//! then every feed catches up from its room's stream (messages published
//! while the connection was down were never pushed), as it does after its
//! own `subscribe` confirmation. A feed also repairs what its
//! previous-sequence field says is missing (a full buffer drops messages).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use confab_events::{RoomId, RoomKind};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};

use super::codec::{self, Live};
use super::keys::Keys;
use super::log;
use crate::nats::MAX_REPAIR_MESSAGES;
use crate::{BusError, BusMessage, BusSubscription, GapDecision, GapTracker};

/// What a feed receives.
#[derive(Debug)]
pub(super) enum Event {
    /// A live message.
    Live(Live),
    /// The room's channel was (re)subscribed: catch up from the stream.
    Subscribed,
}

/// One feed's route: its queue, and the signal that the queue overflowed
/// (the feed then catches up from the room stream once it drained the
/// queue, even when no later message arrives to reveal the gap).
struct Route {
    id: u64,
    tx: mpsc::Sender<Event>,
    overflowed: Arc<Notify>,
}

type Routes = HashMap<RoomId, Vec<Route>>;

/// The routing table shared by the push sender and the feeds.
#[derive(Default)]
pub(super) struct Router {
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    /// Whether the pub/sub connection is up (cleared on a disconnection,
    /// set on a subscribe confirmation).
    pub(super) connected: AtomicBool,
    /// Live messages dropped because a feed's buffer was full.
    pub(super) dropped: AtomicU64,
    /// Times the pub/sub connection came back after a disconnection.
    pub(super) reconnects: AtomicU64,
    /// Signalled on a disconnection of the pub/sub connection.
    pub(super) disconnected: Notify,
}

impl Router {
    /// Tells every feed to catch up from its room stream.
    fn catch_up_all(&self) {
        let routes = self.routes.lock().expect("routes lock");
        for route in routes.values().flatten() {
            if route.tx.try_send(Event::Subscribed).is_err() {
                route.overflowed.notify_one();
            }
        }
    }
}

/// After each disconnection of the pub/sub connection: waits until it is
/// back (a `PING` through it resolves once the manager reconnected and
/// resubscribed every channel), then has every feed catch up — what was
/// published meanwhile was never pushed. Aborted when the
/// [`Subscriptions`] are dropped.
pub(super) async fn watch_reconnects(router: Arc<Router>, mut pubsub: ConnectionManager) {
    loop {
        router.disconnected.notified().await;
        loop {
            let ping: Result<(), _> = redis::cmd("PING").query_async(&mut pubsub).await;
            if ping.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        router.connected.store(true, Ordering::Relaxed);
        router.reconnects.fetch_add(1, Ordering::Relaxed);
        router.catch_up_all();
    }
}

/// The push sender of the pub/sub connection: routes without blocking.
pub(super) struct PushRouter {
    pub(super) router: Arc<Router>,
    pub(super) keys: Keys,
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl PushRouter {
    fn room(&self, data: &[Value]) -> Option<RoomId> {
        self.room_at(data, 0)
    }

    /// The room of the channel name at `data[i]`.
    fn room_at(&self, data: &[Value], i: usize) -> Option<RoomId> {
        let channel = std::str::from_utf8(bytes(data.get(i)?)?).ok()?;
        self.keys.room_of_channel(channel)
    }

    /// Routes a published message: its channel at `data[i]`, its payload
    /// after it.
    fn message(&self, data: &[Value], i: usize) {
        let (Some(room), Some(payload)) = (self.room_at(data, i), data.get(i + 1).and_then(bytes))
        else {
            return;
        };
        if let Some(live) = codec::decode_live(payload) {
            // One decode per push; each feed gets its own copy.
            self.deliver(&room, || Event::Live(live.clone()));
        }
    }

    fn deliver(&self, room: &RoomId, event: impl Fn() -> Event) {
        let routes = self.router.routes.lock().expect("routes lock");
        for route in routes.get(room).into_iter().flatten() {
            if route.tx.try_send(event()).is_err() {
                self.router.dropped.fetch_add(1, Ordering::Relaxed);
                route.overflowed.notify_one();
            }
        }
    }
}

impl redis::aio::AsyncPushSender for PushRouter {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Message => self.message(&info.data, 0),
            // [pattern, channel, payload]: the shared user-room pattern.
            PushKind::PMessage => self.message(&info.data, 1),
            PushKind::PSubscribe => {
                self.router.connected.store(true, Ordering::Relaxed);
            }
            PushKind::Subscribe => {
                self.router.connected.store(true, Ordering::Relaxed);
                if let Some(room) = self.room(&info.data) {
                    self.deliver(&room, || Event::Subscribed);
                }
            }
            PushKind::Disconnection => {
                self.router.connected.store(false, Ordering::Relaxed);
                self.router.disconnected.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a feed needs to repair itself.
#[derive(Clone)]
pub(super) struct Reader {
    pub(super) conn: ConnectionManager,
    pub(super) keys: Keys,
    pub(super) high_water: Arc<AtomicU64>,
}

impl Reader {
    async fn room_last(&mut self, room: &RoomId) -> Result<u64, BusError> {
        let last: Option<u64> = redis::cmd("HGET")
            .arg(self.keys.last())
            .arg(room.to_string())
            .query_async(&mut self.conn)
            .await
            .map_err(|e| log::unavailable("read a room's last sequence", &e))?;
        Ok(last.unwrap_or(0))
    }
}

/// Subscriptions of one process.
pub(super) struct Subscriptions {
    pub(super) router: Arc<Router>,
    /// The pub/sub connection (RESP3, pushes to a [`PushRouter`]).
    pub(super) pubsub: ConnectionManager,
    /// Serialises SUBSCRIBE/UNSUBSCRIBE with the routing table, so a late
    /// unsubscribe never undoes a new subscriber's subscribe.
    pub(super) lock: tokio::sync::Mutex<()>,
    pub(super) capacity: usize,
    /// Whether user rooms share the pattern subscription.
    pub(super) shared_user_rooms: bool,
    /// Whether the pattern subscription was made (under `lock`; the
    /// connection manager makes it again after a reconnect).
    pub(super) pattern_on: AtomicBool,
    /// The [`watch_reconnects`] task.
    pub(super) watcher: tokio::task::JoinHandle<()>,
}

impl Subscriptions {
    /// Whether `room` goes through the shared user-room pattern.
    fn shared_users(&self, room: &RoomId) -> bool {
        self.shared_user_rooms && room.kind() == RoomKind::User
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Removes a feed's route when it is dropped; the last one of a room
/// unsubscribes.
struct RouteGuard {
    subs: Arc<Subscriptions>,
    keys: Keys,
    room: RoomId,
    id: u64,
    /// On the shared pattern: nothing to unsubscribe.
    shared: bool,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let empty = {
            let mut routes = self.subs.router.routes.lock().expect("routes lock");
            let list = routes.entry(self.room.clone()).or_default();
            list.retain(|route| route.id != self.id);
            let empty = list.is_empty();
            if empty {
                routes.remove(&self.room);
            }
            empty
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if empty && !self.shared {
            let (subs, channel, room) = (
                Arc::clone(&self.subs),
                self.keys.channel(&self.room),
                self.room.clone(),
            );
            rt.spawn(async move {
                let _held = subs.lock.lock().await;
                let still_empty = !subs
                    .router
                    .routes
                    .lock()
                    .expect("routes lock")
                    .contains_key(&room);
                if still_empty {
                    let mut conn = subs.pubsub.clone();
                    if let Err(e) = conn.unsubscribe(&channel).await {
                        tracing::debug!(%room, error = %e, "redis unsubscribe failed");
                    }
                }
            });
        }
    }
}

/// Subscribes to `room`: the route first, then the room's last sequence
/// (the feed's baseline), then `SUBSCRIBE`.
pub(super) async fn subscribe(
    subs: &Arc<Subscriptions>,
    mut reader: Reader,
    room: &RoomId,
) -> Result<BusSubscription, BusError> {
    let (tx, rx) = mpsc::channel(subs.capacity);
    let shared = subs.shared_users(room);
    // The pattern sends no confirmation per room: the feed catches up once
    // it is known to receive (below).
    let catch_up = tx.clone();
    let id = subs.router.next_id.fetch_add(1, Ordering::Relaxed);
    let overflowed = Arc::new(Notify::new());
    subs.router
        .routes
        .lock()
        .expect("routes lock")
        .entry(room.clone())
        .or_default()
        .push(Route {
            id,
            tx,
            overflowed: Arc::clone(&overflowed),
        });
    let guard = RouteGuard {
        subs: Arc::clone(subs),
        keys: reader.keys.clone(),
        room: room.clone(),
        id,
        shared,
    };
    let baseline = reader.room_last(room).await?;
    {
        let _held = subs.lock.lock().await;
        let mut conn = subs.pubsub.clone();
        if shared {
            if !subs.pattern_on.load(Ordering::Relaxed) {
                conn.psubscribe(reader.keys.user_pattern())
                    .await
                    .map_err(|e| log::unavailable("subscribe to the user rooms", &e))?;
                subs.pattern_on.store(true, Ordering::Relaxed);
            }
            // Receiving from here on: what came between the baseline and
            // now is read from the room stream.
            let _ = catch_up.try_send(Event::Subscribed);
        } else {
            conn.subscribe(reader.keys.channel(room))
                .await
                .map_err(|e| log::unavailable("subscribe to a room", &e))?;
        }
    }
    drop(catch_up);
    let feed = Feed {
        rx,
        overflowed,
        tracker: GapTracker::starting_after(baseline),
        pending: VecDeque::new(),
        reader,
        room: room.clone(),
        _guard: guard,
    };
    Ok(futures::stream::unfold(feed, |mut feed| async move {
        let msg = feed.next().await?;
        Some((msg, feed))
    })
    .boxed())
}

struct Feed {
    rx: mpsc::Receiver<Event>,
    overflowed: Arc<Notify>,
    tracker: GapTracker,
    pending: VecDeque<BusMessage>,
    reader: Reader,
    room: RoomId,
    _guard: RouteGuard,
}

impl Feed {
    async fn next(&mut self) -> Option<BusMessage> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Some(msg);
            }
            // Queued events first; an overflow is handled once the queue
            // is drained, as a catch-up.
            let event = tokio::select! {
                biased;
                event = self.rx.recv() => event?,
                () = self.overflowed.notified() => Event::Subscribed,
            };
            match event {
                Event::Live(Live::Volatile(msg)) => return Some(msg),
                Event::Live(Live::Stored { prev, msg }) => {
                    let seq = msg.seq.unwrap_or(0);
                    self.reader.high_water.fetch_max(seq, Ordering::Relaxed);
                    match self.tracker.observe(seq, Some(prev)) {
                        GapDecision::Deliver => return Some(msg),
                        GapDecision::Duplicate => {}
                        GapDecision::Repair { from, to } => {
                            self.repair(from, to).await;
                            self.pending.push_back(msg);
                        }
                    }
                }
                Event::Subscribed => match self.reader.room_last(&self.room).await {
                    Ok(last) if self.tracker.last_seen().is_some_and(|seen| last < seen) => {
                        // The room is behind what this feed delivered: the
                        // Redis was wiped (a new log). Everything in the new
                        // log came after the wipe: deliver it from its start.
                        tracing::warn!(room = %self.room, last, "redis bus: the room's log went back (Redis wiped?); following the new log");
                        self.tracker = GapTracker::starting_after(0);
                        if let Some((from, to)) = self.tracker.catch_up(last) {
                            self.repair(from, to).await;
                        }
                    }
                    Ok(last) => {
                        if let Some((from, to)) = self.tracker.catch_up(last) {
                            self.repair(from, to).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(room = %self.room, error = %e, "redis bus: cannot catch up after a resubscribe");
                    }
                },
            }
        }
    }

    /// Queues the stored messages of the room in `from..=to` (at most
    /// [`MAX_REPAIR_MESSAGES`]); a failed repair is logged, not retried.
    async fn repair(&mut self, from: u64, to: u64) {
        let Reader { conn, keys, .. } = &mut self.reader;
        match log::room_range(conn, keys, &self.room, from, Some(to), MAX_REPAIR_MESSAGES).await {
            Ok(msgs) => self.pending.extend(msgs),
            Err(e) => {
                tracing::warn!(room = %self.room, from, to, error = %e, "redis bus: gap repair failed, messages lost for this subscriber");
            }
        }
    }
}
