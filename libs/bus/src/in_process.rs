//! The in-process bus: an in-memory log of room events plus a live queue
//! per room subscription, inside this process.
//!
//! **Surviving restarts.** Built with [`InProcessBus::persistent`], every
//! durable message is written to a [`LogStore`] before it is delivered or
//! acknowledged, and a start loads the retained window (within `max_age`
//! and `max_messages`), the de-duplication ids still within their window,
//! and continues the sequence where the last run stopped. The log keeps one
//! identity ([`LogInfo::id`]) for its life, so a projection can tell its
//! checkpoint belongs to this log. A persisted log was chosen over a log
//! epoch carried by every checkpoint and offset: offsets stay plain
//! sequences (the wire format of connection-state recovery does not
//! change), a client's offset from before a restart stays meaningful, and
//! the semantics are those of stream `ROOMS` on NATS, which also survives
//! restarts. Durable publishes are written one at a time (one SQL write
//! each), which bounds the all-in-one's message rate by the database's, in
//! exchange for never acking what a restart would lose.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_events::RoomId;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, watch};

use crate::{
    Bus, BusError, BusMessage, BusStatus, BusSubscription, BusTail, LogInfo, LogRecord, LogStore,
    Published, TailItem,
};

/// A persistent log trims its store every this many durable publishes.
const STORE_TRIM_EVERY: u64 = 1024;

/// How many stored messages a lagged subscription takes from the log at a
/// time while it repairs.
const REPAIR_CHUNK: usize = 1024;

/// Limits of the in-process log ([`InProcessBus::with_limits`]).
///
/// The defaults mirror the NATS bus (stream `ROOMS`): messages are kept 24
/// hours, `msg_id`s are de-duplicated for 2 minutes; on top of that at most
/// 1,000,000 messages are kept (the oldest are dropped first) so that memory
/// stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProcessLimits {
    /// How long stored messages are kept. `Duration::ZERO` keeps them until
    /// the count limit drops them. Default 24 hours.
    pub max_age: Duration,
    /// Most messages kept (over all rooms); publishing more drops the oldest.
    /// At least 1. Default 1,000,000.
    pub max_messages: usize,
    /// A second durable publish with the same [`BusMessage::msg_id`] within
    /// this long after the first is a duplicate: not stored, not delivered.
    /// `Duration::ZERO` turns de-duplication off. Default 2 minutes.
    pub duplicate_window: Duration,
    /// Messages buffered per room for live subscribers before a slow one
    /// lags (and is then repaired from the log). At least 1. Default 4096.
    pub capacity: usize,
}

impl Default for InProcessLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_messages: 1_000_000,
            duplicate_window: Duration::from_secs(120),
            capacity: 4096,
        }
    }
}

/// One stored (durable) message.
struct Stored {
    room: RoomId,
    /// When it was stored, for retention by age.
    timestamp: Instant,
    /// The message, its `seq` set.
    msg: BusMessage,
}

/// Everything behind the one lock: the log, the de-duplication index and
/// the live channels. Sequences are assigned and messages sent to the live
/// channel under the lock, so every room's live feed is in sequence order.
struct State {
    /// Sequence the next stored message gets (starts at 1).
    next_seq: u64,
    /// Stored messages, oldest first, with consecutive sequences (the first
    /// one's is `next_seq - log.len()`).
    log: VecDeque<Stored>,
    /// `msg_id` -> (sequence, first publish time).
    ids: HashMap<Arc<str>, (u64, Instant)>,
    /// The `ids` entries in the order they were added, for expiry.
    id_order: VecDeque<(Instant, Arc<str>)>,
    /// Each room's live subscriptions.
    rooms: HashMap<RoomId, Vec<Subscriber>>,
    /// Id of the next subscription.
    next_subscriber: u64,
}

/// One live subscription: a bounded queue that publishes fill under the
/// lock. A queue allocates as it fills (in blocks of 32 messages) and
/// frees as it drains, so an idle subscription costs a few hundred bytes.
/// A broadcast channel per room allocated its whole capacity up front:
/// about 450 KiB for every room with a subscriber, every connected user's
/// `user:{id}` room among them.
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<BusMessage>>,
    lag: Arc<Lag>,
}

/// Set by a publish that found a subscription's queue full. From then on
/// publishes skip it (counting what they skip) until the subscriber, its
/// queue drained, takes what it missed from the log.
#[derive(Default)]
struct Lag {
    lagging: AtomicBool,
    skipped: AtomicU64,
}

impl Subscriber {
    /// Queues `msg` unless lagging; false once the subscription is gone.
    fn offer(&self, msg: &Arc<BusMessage>) -> bool {
        if self.lag.lagging.load(Ordering::Acquire) {
            self.lag.skipped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match self.tx.try_send(Arc::clone(msg)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.lag.skipped.fetch_add(1, Ordering::Relaxed);
                self.lag.lagging.store(true, Ordering::Release);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

impl State {
    /// An empty log whose next message gets `next_seq`.
    fn empty(next_seq: u64) -> Self {
        Self {
            next_seq,
            log: VecDeque::new(),
            ids: HashMap::new(),
            id_order: VecDeque::new(),
            rooms: HashMap::new(),
            next_subscriber: 0,
        }
    }

    /// Sequence of the oldest stored message (or `next_seq` when empty).
    fn first_seq(&self) -> u64 {
        self.next_seq - self.log.len() as u64
    }

    /// Drops messages older than `max_age` and expired `msg_id`s.
    fn trim(&mut self, limits: &InProcessLimits, now: Instant) {
        if !limits.max_age.is_zero() {
            while self
                .log
                .front()
                .is_some_and(|s| now.saturating_duration_since(s.timestamp) >= limits.max_age)
            {
                self.log.pop_front();
            }
        }
        while let Some((at, _)) = self.id_order.front() {
            if now.saturating_duration_since(*at) < limits.duplicate_window {
                break;
            }
            let (at, id) = self.id_order.pop_front().expect("front exists");
            // Only if not re-added since (then the newer entry stays).
            if self.ids.get(&id).is_some_and(|(_, t)| *t == at) {
                self.ids.remove(&id);
            }
        }
    }

    /// The answer to a durable publish whose `msg_id` was already published
    /// within the duplicate window.
    fn duplicate_of(&self, msg: &BusMessage) -> Option<Published> {
        let (seq, _) = self.ids.get(msg.msg_id.as_ref()?)?;
        Some(Published {
            seq: Some(*seq),
            duplicate: true,
        })
    }

    /// The stored message with sequence `seq`, if still retained.
    fn get(&self, seq: u64) -> Option<&Stored> {
        let index = seq.checked_sub(self.first_seq())?;
        self.log.get(usize::try_from(index).ok()?)
    }

    /// Stored messages with sequences in `from..=to` for which `keep`
    /// holds, in order, at most `max`.
    fn scan(
        &self,
        from: u64,
        to: u64,
        max: usize,
        keep: impl Fn(&RoomId) -> bool,
    ) -> Vec<TailItem> {
        let start = from.saturating_sub(self.first_seq());
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        self.log
            .iter()
            .skip(start)
            .take_while(|s| s.msg.seq.is_some_and(|seq| seq <= to))
            .filter(|s| keep(&s.room))
            .take(max)
            .map(|s| TailItem {
                room: s.room.clone(),
                msg: s.msg.clone(),
            })
            .collect()
    }
}

/// The durable side of a persistent log.
struct Persist {
    store: Arc<dyn LogStore>,
    /// Held across a durable publish's write, so that sequences are stored
    /// in order; counts the publishes since the store was last trimmed.
    writer: tokio::sync::Mutex<u64>,
}

struct Shared {
    state: Mutex<State>,
    limits: InProcessLimits,
    /// [`LogInfo::id`].
    log_id: String,
    persist: Option<Persist>,
    /// The sequence of the last stored message, for [`Bus::tail`] feeds.
    stored: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks and applies retention first.
    fn lock_trimmed(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.trim(&self.limits, Instant::now());
        state
    }
}

/// The in-process bus: an in-memory log of room events with the semantics
/// of the NATS bus's stream `ROOMS`, plus a live queue per room subscription.
///
/// * Durable messages get one sequence over all rooms (from 1, like a
///   JetStream stream sequence), are stored with their room and delivered
///   with [`BusMessage::seq`] set. A `msg_id` already published within the
///   duplicate window is not stored or delivered again; the publish reports
///   the first message's sequence with [`Published::duplicate`].
/// * Stored messages are kept for [`InProcessLimits::max_age`], and at most
///   [`InProcessLimits::max_messages`] of them (the oldest are dropped).
///   Retention is applied on every call, without a background task.
/// * Volatile messages are delivered live only: never stored, no sequence.
/// * A subscription delivers a room's messages in sequence order. When it
///   falls more than [`InProcessLimits::capacity`] messages behind, it takes
///   the durable messages it missed from the log (in order; volatile ones
///   are lost), like the NATS bus's gap repair.
///
/// It serves one process only; readiness says so.
pub struct InProcessBus {
    shared: Arc<Shared>,
    lagged: Arc<dyn Fn(u64) + Send + Sync>,
}

impl InProcessBus {
    /// A bus with the default limits whose per-room live buffers hold
    /// `capacity` messages; `lagged` is told how many messages a slow
    /// subscriber skipped in its live buffer (the durable ones among them are
    /// then repaired from the log).
    pub fn new(capacity: usize, lagged: Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        Self::with_limits(InProcessLimits {
            capacity,
            ..InProcessLimits::default()
        })
        .on_lagged(lagged)
    }

    /// A bus with the given limits (values below the minimum are raised to
    /// it), its log kept in memory only: a restart starts a new log (with a
    /// new [`LogInfo::id`]) at sequence 1.
    pub fn with_limits(limits: InProcessLimits) -> Self {
        Self::assemble(limits, memory_log_id(), None, State::empty(1))
    }

    /// A bus with the given limits whose log lives in `store`: the retained
    /// window is loaded and the sequence continues after the last stored
    /// message; every durable publish is stored before it is delivered (a
    /// failed write fails the publish with [`BusError::Unavailable`]).
    pub async fn persistent(
        limits: InProcessLimits,
        store: Arc<dyn LogStore>,
    ) -> Result<Self, BusError> {
        let limits = Self::raised(limits);
        let now_ms = unix_ms();
        let since_ms = if limits.max_age.is_zero() {
            0
        } else {
            now_ms.saturating_sub(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX))
        };
        let loaded = store.open(since_ms, limits.max_messages).await?;
        let mut state = State::empty(loaded.last_seq + 1);
        let now = Instant::now();
        for record in loaded.records {
            let age = Duration::from_millis(now_ms.saturating_sub(record.stored_at_ms));
            let timestamp = now.checked_sub(age).unwrap_or(now);
            let msg = BusMessage {
                event: record.event.into(),
                args_json: record.args_json.into(),
                seq: Some(record.seq),
                headers: record.headers.into(),
                msg_id: record.msg_id.map(Into::into),
                volatile: false,
            };
            if let Some(id) = &msg.msg_id
                && age < limits.duplicate_window
            {
                state.ids.insert(Arc::clone(id), (record.seq, timestamp));
                state.id_order.push_back((timestamp, Arc::clone(id)));
            }
            state.log.push_back(Stored {
                room: record.room,
                timestamp,
                msg,
            });
        }
        // Keep the invariant of consecutive sequences ending at next_seq - 1
        // even if the store handed back a broken window.
        if state
            .log
            .iter()
            .zip(state.first_seq()..)
            .any(|(s, seq)| s.msg.seq != Some(seq))
        {
            return Err(BusError::Unsupported(format!(
                "the stored log {} is not a window of consecutive sequences ending at {}",
                loaded.log_id, loaded.last_seq
            )));
        }
        tracing::info!(
            log = %loaded.log_id, last_seq = loaded.last_seq, retained = state.log.len(),
            "in-process log loaded"
        );
        let persist = Persist {
            store,
            writer: tokio::sync::Mutex::new(0),
        };
        Ok(Self::assemble(limits, loaded.log_id, Some(persist), state))
    }

    fn raised(limits: InProcessLimits) -> InProcessLimits {
        InProcessLimits {
            max_messages: limits.max_messages.max(1),
            capacity: limits.capacity.max(1),
            ..limits
        }
    }

    fn assemble(
        limits: InProcessLimits,
        log_id: String,
        persist: Option<Persist>,
        state: State,
    ) -> Self {
        let last = state.next_seq - 1;
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                limits: Self::raised(limits),
                log_id,
                persist,
                stored: watch::channel(last).0,
            }),
            lagged: Arc::new(|_| {}),
        }
    }

    /// Sets what is told how many messages a slow subscriber skipped in its
    /// live buffer (see [`InProcessBus::new`]).
    pub fn on_lagged(mut self, lagged: Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        self.lagged = lagged;
        self
    }

    /// The limits in effect.
    pub fn limits(&self) -> InProcessLimits {
        self.shared.limits
    }

    /// How many messages the log holds now (after applying retention).
    pub fn stored_messages(&self) -> usize {
        self.shared.lock_trimmed().log.len()
    }

    /// How many rooms have live subscriptions now.
    pub fn subscribed_rooms(&self) -> usize {
        self.shared.lock().rooms.len()
    }
}

/// Now, Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh identity for a log kept in memory only: unique per start.
fn memory_log_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "memory:{}:{nanos}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::with_limits(InProcessLimits::default())
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        // The producer span lives until the publish returns; its context
        // travels in the message's headers, as on the brokers.
        let span = crate::trace::send_span(crate::trace::SYSTEM_IN_PROCESS, room, &msg);
        let mut msg = span.in_scope(|| crate::trace::with_current_context(msg));
        // Durable publishes of a persistent log are written one at a time,
        // so `next_seq` cannot move between the write and the append below.
        let mut writer = match &self.shared.persist {
            Some(p) if !msg.volatile => Some((p, p.writer.lock().await)),
            _ => None,
        };
        let limits = &self.shared.limits;
        let now = Instant::now();
        if let Some((persist, _)) = &writer {
            let record = {
                let mut state = self.shared.lock();
                state.trim(limits, now);
                if let Some(duplicate) = state.duplicate_of(&msg) {
                    return Ok(duplicate);
                }
                LogRecord {
                    seq: state.next_seq,
                    room: room.clone(),
                    event: msg.event.to_string(),
                    args_json: msg.args_json.to_string(),
                    headers: msg.headers.to_vec(),
                    msg_id: msg.msg_id.as_deref().map(str::to_owned),
                    stored_at_ms: unix_ms(),
                }
            };
            persist.store.append(&record).await?;
        }
        let (seq, first_seq) = {
            let mut state = self.shared.lock();
            state.trim(limits, now);
            let seq = if msg.volatile {
                msg.seq = None;
                None
            } else {
                if let Some(duplicate) = state.duplicate_of(&msg) {
                    return Ok(duplicate);
                }
                let seq = state.next_seq;
                state.next_seq += 1;
                msg.seq = Some(seq);
                if let Some(id) = &msg.msg_id
                    && !limits.duplicate_window.is_zero()
                {
                    state.ids.insert(Arc::clone(id), (seq, now));
                    state.id_order.push_back((now, Arc::clone(id)));
                }
                state.log.push_back(Stored {
                    room: room.clone(),
                    timestamp: now,
                    msg: msg.clone(),
                });
                while state.log.len() > limits.max_messages {
                    state.log.pop_front();
                }
                self.shared.stored.send_replace(seq);
                Some(seq)
            };
            if let Some(subscribers) = state.rooms.get_mut(room) {
                let msg = Arc::new(msg);
                subscribers.retain(|s| s.offer(&msg));
                if subscribers.is_empty() {
                    state.rooms.remove(room);
                }
            }
            (seq, state.first_seq())
        };
        if let Some((persist, since_trim)) = &mut writer {
            **since_trim += 1;
            if **since_trim >= STORE_TRIM_EVERY {
                **since_trim = 0;
                if let Err(e) = persist.store.trim(first_seq).await {
                    tracing::warn!(error = %e, "cannot trim the stored in-process log; retrying later");
                }
            }
        }
        Ok(Published {
            seq,
            duplicate: false,
        })
    }

    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError> {
        let (tx, rx) = mpsc::channel(self.shared.limits.capacity);
        let lag = Arc::new(Lag::default());
        let (id, last) = {
            let mut state = self.shared.lock();
            let id = state.next_subscriber;
            state.next_subscriber += 1;
            state
                .rooms
                .entry(room.clone())
                .or_default()
                .push(Subscriber {
                    id,
                    tx,
                    lag: Arc::clone(&lag),
                });
            // Everything stored from here on goes to this subscriber too.
            (id, state.next_seq - 1)
        };
        let feed = Feed {
            shared: Arc::clone(&self.shared),
            lagged: Arc::clone(&self.lagged),
            room: room.clone(),
            id,
            rx,
            lag,
            last,
            repair_to: None,
            ready: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(feed, Feed::next)))
    }

    async fn fetch(&self, room: &RoomId, seq: u64) -> Result<Option<BusMessage>, BusError> {
        let state = self.shared.lock_trimmed();
        Ok(state
            .get(seq)
            .filter(|s| s.room == *room)
            .map(|s| s.msg.clone()))
    }

    async fn replay(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<TailItem>, BusError> {
        if rooms.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let rooms: HashSet<&RoomId> = rooms.iter().collect();
        let state = self.shared.lock_trimmed();
        if from_seq.max(1) < state.first_seq() {
            return Err(BusError::Trimmed(format!(
                "messages from {from_seq} on were asked for, the log starts at {}",
                state.first_seq()
            )));
        }
        Ok(state.scan(from_seq, u64::MAX, max, |r| rooms.contains(r)))
    }

    fn high_water(&self) -> u64 {
        self.shared.lock().next_seq - 1
    }

    async fn tail(&self, from_seq: u64) -> Result<BusTail, BusError> {
        let tail = Tail {
            shared: Arc::clone(&self.shared),
            next: from_seq.max(1),
            ready: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(tail, Tail::next)))
    }

    async fn log_info(&self) -> Result<LogInfo, BusError> {
        let state = self.shared.lock_trimmed();
        Ok(LogInfo {
            id: self.shared.log_id.clone(),
            first_seq: state.first_seq(),
            last_seq: state.next_seq - 1,
        })
    }

    fn status(&self) -> BusStatus {
        BusStatus {
            kind: "in-process",
            connected: true,
            reconnects: 0,
            shared: false,
            detail: if self.shared.persist.is_some() {
                "single-process bus with its log kept in the database: serves this process \
                 only (all-in-one mode)"
            } else {
                "single-process bus with an in-memory log: serves this process only \
                 (all-in-one mode)"
            }
            .into(),
        }
    }
}

/// One room's subscription: the live channel plus repair from the log.
struct Feed {
    shared: Arc<Shared>,
    lagged: Arc<dyn Fn(u64) + Send + Sync>,
    room: RoomId,
    /// Its [`Subscriber`]'s id.
    id: u64,
    rx: mpsc::Receiver<Arc<BusMessage>>,
    lag: Arc<Lag>,
    /// Sequence of the last durable message delivered (or, before the first,
    /// the last one stored before subscribing).
    last: u64,
    /// While repairing: the last sequence to take from the log (the log's end
    /// when the live channel lost messages; the channel was then reopened at
    /// its end, so later messages come live).
    repair_to: Option<u64>,
    ready: VecDeque<BusMessage>,
}

impl Feed {
    async fn next(mut self) -> Option<(BusMessage, Self)> {
        loop {
            if let Some(msg) = self.ready.pop_front() {
                if let Some(seq) = msg.seq {
                    self.last = seq;
                }
                return Some((msg, self));
            }
            if let Some(to) = self.repair_to {
                self.repair_chunk(to);
                continue;
            }
            let msg = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) if self.lag.lagging.load(Ordering::Acquire) => {
                    self.start_repair();
                    continue;
                }
                Err(TryRecvError::Empty) => match self.rx.recv().await {
                    Some(msg) => msg,
                    None => return None,
                },
                Err(TryRecvError::Disconnected) => return None,
            };
            match msg.seq {
                // Already delivered by a repair.
                Some(seq) if seq <= self.last => {}
                _ => self.ready.push_back(Arc::unwrap_or_clone(msg)),
            }
        }
    }

    /// After a lag, its queue drained: takes the durable messages it
    /// missed from the log, then the live ones again.
    fn start_repair(&mut self) {
        let state = self.shared.lock();
        // Publishes skip a lagging subscriber, and they run under this
        // lock: the queue is still empty, the log has everything up to
        // `next_seq - 1`, and the next publish comes live. The volatile
        // messages skipped are lost.
        let skipped = self.lag.skipped.swap(0, Ordering::Relaxed);
        self.lag.lagging.store(false, Ordering::Release);
        self.repair_to = Some(state.next_seq - 1);
        drop(state);
        tracing::warn!(
            room = %self.room, skipped,
            "in-process bus subscriber lagged; repairing from the log"
        );
        (self.lagged)(skipped);
    }

    /// Queues the next stored messages of the room after `last` up to `to`;
    /// ends the repair when there are none.
    fn repair_chunk(&mut self, to: u64) {
        let state = self.shared.lock_trimmed();
        if state.first_seq() > self.last + 1 {
            tracing::warn!(
                room = %self.room, from = self.last + 1, first_stored = state.first_seq(),
                "in-process bus subscriber lagged beyond the log's retention: messages may be missing"
            );
        }
        let room = &self.room;
        let chunk = state.scan(self.last + 1, to, REPAIR_CHUNK, |r| r == room);
        drop(state);
        if chunk.is_empty() {
            self.repair_to = None;
        } else {
            self.ready.extend(chunk.into_iter().map(|item| item.msg));
        }
    }
}

impl Drop for Feed {
    /// Leaves the room's subscriptions, and the room once it has none: a
    /// room nobody publishes to again (the `user:{id}` room of a user who
    /// left) must not keep its entry.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(subscribers) = state.rooms.get_mut(&self.room) {
            subscribers.retain(|s| s.id != self.id);
            if subscribers.is_empty() {
                state.rooms.remove(&self.room);
            }
        }
    }
}

/// A [`Bus::tail`] feed: reads the log in chunks, then waits for more.
struct Tail {
    shared: Arc<Shared>,
    /// The next sequence to deliver.
    next: u64,
    ready: VecDeque<TailItem>,
}

impl Tail {
    async fn next(mut self) -> Option<(Result<TailItem, BusError>, Self)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                if let Some(seq) = item.msg.seq {
                    self.next = seq + 1;
                }
                return Some((Ok(item), self));
            }
            // Watch before reading the log: a message stored after the read
            // then wakes the wait below.
            let mut stored = self.shared.stored.subscribe();
            {
                let state = self.shared.lock_trimmed();
                let start = self.next.saturating_sub(state.first_seq());
                let start = usize::try_from(start).unwrap_or(usize::MAX);
                self.ready
                    .extend(
                        state
                            .log
                            .iter()
                            .skip(start)
                            .take(REPAIR_CHUNK)
                            .map(|s| TailItem {
                                room: s.room.clone(),
                                msg: s.msg.clone(),
                            }),
                    );
            }
            if self.ready.is_empty() && stored.changed().await.is_err() {
                return None;
            }
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
        assert_eq!(
            published,
            Published {
                seq: Some(1),
                duplicate: false
            }
        );
        let m = sa.next().await.unwrap();
        assert_eq!(&*m.event, "x");
        assert_eq!(&*m.args_json, "[1]");
        assert_eq!(m.seq, Some(1));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sb.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn tail_reads_the_log_then_follows_live() {
        let bus = InProcessBus::default();
        let a = RoomId::parse("channel:a").unwrap();
        let b = RoomId::parse("dm:b").unwrap();
        for i in 0..3 {
            let room = if i % 2 == 0 { &a } else { &b };
            bus.publish(room, BusMessage::new("x", &serde_json::json!(i)))
                .await
                .unwrap();
        }
        bus.publish(
            &a,
            BusMessage::new("v", &serde_json::json!(0)).into_volatile(),
        )
        .await
        .unwrap();
        let mut tail = bus.tail(2).await.unwrap();
        let first = tail.next().await.unwrap().unwrap();
        assert_eq!((first.room.clone(), first.msg.seq), (b.clone(), Some(2)));
        let second = tail.next().await.unwrap().unwrap();
        assert_eq!((second.room, second.msg.seq), (a.clone(), Some(3)));
        let waiting = tokio::spawn(async move { tail.next().await.unwrap().unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        bus.publish(&b, BusMessage::new("y", &serde_json::json!(9)))
            .await
            .unwrap();
        let live = waiting.await.unwrap();
        assert_eq!(
            (&*live.msg.event, live.msg.seq, live.room),
            ("y", Some(4), b)
        );
    }

    #[tokio::test]
    async fn tail_skips_what_retention_dropped() {
        let bus = InProcessBus::with_limits(InProcessLimits {
            max_messages: 2,
            ..InProcessLimits::default()
        });
        let a = RoomId::parse("channel:a").unwrap();
        for i in 0..5 {
            bus.publish(&a, BusMessage::new("x", &serde_json::json!(i)))
                .await
                .unwrap();
        }
        let mut tail = bus.tail(1).await.unwrap();
        assert_eq!(tail.next().await.unwrap().unwrap().msg.seq, Some(4));
        assert_eq!(tail.next().await.unwrap().unwrap().msg.seq, Some(5));
    }

    #[test]
    fn first_seq_and_get_follow_the_log() {
        let bus = InProcessBus::with_limits(InProcessLimits {
            max_messages: 2,
            ..InProcessLimits::default()
        });
        let mut state = bus.shared.lock();
        assert_eq!(state.first_seq(), 1);
        assert!(state.get(0).is_none() && state.get(1).is_none());
        for seq in 1..=3 {
            state.next_seq = seq + 1;
            state.log.push_back(Stored {
                room: RoomId::parse("channel:a").unwrap(),
                timestamp: Instant::now(),
                msg: BusMessage::new("x", &serde_json::json!(seq)),
            });
        }
        state.log.pop_front();
        assert_eq!(state.first_seq(), 2);
        assert!(state.get(1).is_none());
        assert!(state.get(2).is_some() && state.get(3).is_some());
        assert!(state.get(4).is_none() && state.get(u64::MAX).is_none());
    }
}
