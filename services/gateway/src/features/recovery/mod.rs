//! Connection-state recovery, compatible with `socket.io-client` 4.6+.
//!
//! * Every durable room event is sent with its log sequence as a last,
//!   string argument (the offset); the CONNECT reply carries a private
//!   session id (`pid`). The client remembers both.
//! * A client that reconnects presents `{pid, offset}` in its CONNECT
//!   payload. Any gateway looks the session up in the [`SessionStore`]
//!   (NATS KV in a cluster), checks it belongs to the same user and that
//!   the disconnect is less than the window old, joins the socket's rooms
//!   with live events held back, replays what the rooms stored after the
//!   offset (one bounded [`Bus::replay`]), then releases the held live
//!   events that the replay did not cover. The reply carries the old `sid`
//!   and the same `pid`, so `socket.recovered` is `true`.
//! * Otherwise the client gets a fresh session and `recovery:failed`
//!   `{reason, message}`.
//!
//! The window counts from the disconnect the holding gateway recorded, or,
//! when that gateway died without recording it, from its last liveness
//! heartbeat.
//!
//! # The whole flow
//!
//! A client that loses its connection and comes back within
//! `recovery.window` (two minutes by default), to any gateway, continues
//! its session (this module, `hub/dispatch.rs`, `engine/socket.rs`):
//!
//! 1. **Offsets.** Every durable room event goes to sockets with its log
//!    sequence (JetStream stream sequence of `ROOMS`, or the in-process log's)
//!    as an extra last argument, a string: `42["message:new",{...},"1234"]`.
//!    `socket.io-client` (4.6+) remembers the last one. Volatile events carry
//!    none and are never stored, so never replayed.
//! 2. **Sessions.** The CONNECT reply is `{sid, pid}`. Right after it the
//!    gateway writes a record under `pid` in the NATS KV bucket
//!    `CONFAB_SESSIONS`: `{sid, user, gateway, offset, rooms, joined, left,
//!    disconnected_at_ms}` (`offset` = the log position the session started
//!    at, for a client that received nothing: the highest sequence this
//!    gateway has seen, from its own publishes and live events and refreshed
//!    from the stream every heartbeat; live events at or below it are not
//!    sent to the new socket, so nothing is both skipped and replayed). On a transport drop, ping
//!    timeout, slow-consumer close or shutdown it records
//!    `disconnected_at_ms` (that record then expires when the window has
//!    passed, [`Expiry`]); a deliberate disconnect deletes the record. Writes
//!    after the first are compare-and-set on the revision, so a gateway that
//!    notices a drop late never overwrites a session already resumed
//!    elsewhere. Records of live sockets are rewritten once they are half
//!    `recovery.session_max_age` old (at most 2,000 per heartbeat), so a
//!    connection of any age stays recoverable. Every gateway also writes its
//!    liveness to `CONFAB_GATEWAYS`
//!    each `recovery.heartbeat`: the sessions of a gateway that died
//!    without recording their drops count from its last heartbeat.
//! 3. **Resume.** The client reconnects with CONNECT `{token, pid, offset}`.
//!    The gateway holds live events back for the socket (`SocketRef::hold`)
//!    and, at the same time: reads the record (a KV get, no consumer) and
//!    checks the user, the window (the old gateway's last heartbeat, when it
//!    recorded no drop, is read once for all of its sessions) and the offset;
//!    joins the user room, then asks the membership service for the user's
//!    rooms (the user room first, so that no membership change slips in
//!    between). It then joins the rooms (the membership service's answer now,
//!    plus/minus the rooms the client joined/left itself), all at once, and
//!    replays the events stored after `max(offset, record.offset)` in those
//!    rooms and the record's rooms, in one `Bus::replay`. Membership changes
//!    in the gap apply: a room's events count from its `room:joined` and stop
//!    at its `room:left` (both are in the user room, so replayed too). The
//!    reply carries the old `sid` and the same `pid`
//!    (`socket.recovered === true`); the replayed events follow, then the held
//!    live events above the last replayed sequence
//!    (`SocketRef::release_waiting`: queued as the connection drains, so a
//!    long recovery's backlog does not overflow the outbound queue), then
//!    live traffic.
//!
//!    On NATS a replay creates no consumer (`libs/bus/src/direct_get.rs`). It
//!    reads the log's first and last sequence (one stream info request that
//!    started after the replay did, shared by all replays waiting for one),
//!    refuses a start below the first retained sequence (`Trimmed`: a direct
//!    get would silently skip to the first), then sends one batched direct get
//!    per room at once (`$JS.API.DIRECT.GET.ROOMS` with `{seq, next_by_subj,
//!    batch, max_bytes}`, nats-server 2.11+), asks again for rooms with more
//!    than a batch, and merges the rooms by sequence, up to that last
//!    sequence and at most `max_replay_events + 1` events. Every batch is
//!    checked: each message names the previous one of its batch
//!    (`Nats-Last-Sequence`) and the final `204 EOB` status the last one sent,
//!    so a message dropped on the way is noticed. The replay reads through one
//!    ordered consumer filtered on the rooms (deleted afterwards) instead when
//!    the server is older than 2.11, stream `ROOMS` has more than one replica
//!    (a replica may answer a direct get before it holds the newest messages),
//!    `bus.nats.direct_replay` is off, or a batch came back incomplete;
//!    `confab_gateway_replays_total{path}` counts both kinds. A consumer the
//!    client recreates before its first message (a cluster moving its
//!    leaders) starts again at the log's first message: the replay skips
//!    everything below its start (`libs/bus/src/nats/log.rs`), or the
//!    client would get every event of its rooms since the log began again.
//! 4. **Failure.** Unknown, foreign, malformed or expired sessions, a replay
//!    of more than `recovery.max_replay_events`, a log trimmed past the
//!    offset, or an unreadable store: the client gets a fresh session and
//!    `recovery:failed` `{reason, message}` right after CONNECT. A session
//!    that missed too much or expired is deleted (asking again reads
//!    nothing), and one session may be asked for at most
//!    `recovery.max_attempts` times per window on a gateway (`rate_limited`,
//!    `attempts.rs`): a client resuming from offset 0 in a loop does not
//!    make the gateway read the log each time.
//! 5. **Order.** The offset means "everything before it was delivered" only
//!    if a socket receives events in log order across all its rooms. One
//!    dispatcher task per gateway reads every room feed (`hub/dispatch.rs`):
//!    it pulls everything that has arrived, from every woken feed, then sorts
//!    by sequence; since NATS writes stored events to the connection in stream
//!    order, that is log order. An event repaired after a NATS loss (slow
//!    consumer, reconnect) arrives late by nature: it is sent with the
//!    socket's current offset so the client's offset never moves back (no
//!    duplicate on recovery).
//! 6. **Rolling deploys.** SIGTERM turns readiness false and closes the
//!    sockets at random moments within `shutdown_spread` (close 1001, not a
//!    Socket.IO DISCONNECT, so clients reconnect), recording each drop; they
//!    reconnect to other gateways and recover.
//!
//! **The JetStream consumer bound.** Recovery replays normally hold no
//! consumer at all (direct gets, above). Those that read through a consumer
//! (the fallback) are the only per-client consumers, and each gateway runs at
//! most `recovery.max_concurrent_replays` (default 16) of them at once (a
//! semaphore in the NATS bus; later ones wait). A cluster of G gateways
//! therefore never holds more than **G × `recovery.max_concurrent_replays`**
//! recovery consumers however many clients reconnect at once (tested with 120
//! simultaneous recoveries forced onto consumers and a bound of 2 per
//! gateway, and with the same 120 on direct gets, all counted as direct).
//! Direct-get replays are bounded separately: at most 64 at once per gateway
//! (`MAX_DIRECT_REPLAYS`), each with at most a quarter of the NATS
//! subscription buffer in flight, for memory, not consumers. Besides these:
//! one ordered consumer per gap repair in progress, and the membership
//! service's tails (a constant handful). Session reads and writes use KV
//! direct gets and puts, no consumers.
//!
//! On Redis (`bus.kind = "redis"`) the same records and liveness entries
//! live in Redis (`redis.rs`: expiring keys, compare-and-set by a Lua
//! script on a revision field) and replays read the room streams
//! (`XRANGE` per room, merged by sequence): no consumers exist there.
//!
//! The all-in-one keeps sessions in memory (`MemorySessions`) and replays
//! from its in-process log with the same semantics; a gateway on a shared bus
//! refuses to start with in-memory sessions.

mod attempts;
mod memory;
mod nats;
mod redis;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

use async_trait::async_trait;
use base64::Engine as _;
use confab_bus::{Bus, BusError, TailItem};
use confab_events::socket::{RecoveryFailed, RoomChange};
use confab_events::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub(crate) use memory::MemorySessions;
pub(crate) use nats::NatsSessions;
pub(crate) use redis::RedisSessions;

use crate::config::RecoverySettings;
use crate::engine::DisconnectReason;
use crate::identity::GatewayId;
use crate::metrics::Metrics;

/// What a gateway records about a session so that any gateway can resume
/// it. Serialized as JSON, versioned (`v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Schema version (1).
    pub v: u8,
    /// The Socket.IO session id the client had; a recovery restores it.
    pub sid: String,
    /// The user the session belongs to; only this user may resume it.
    pub user: String,
    /// The gateway that holds (or held) the connection.
    pub gateway: String,
    /// Log position when the session started: a client that received
    /// nothing resumes from here.
    pub offset: u64,
    /// The rooms the socket was in when the record was written (the replay
    /// reads them, to deliver what came before a removal).
    pub rooms: Vec<String>,
    /// Rooms the client joined itself (`room:join`).
    pub joined: Vec<String>,
    /// Rooms the client left itself (`room:leave`).
    pub left: Vec<String>,
    /// When the gateway saw the connection drop (Unix ms); `None` while
    /// connected, or when the gateway died first.
    pub disconnected_at_ms: Option<u64>,
}

/// A session store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached; retrying later may work.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Someone else wrote the record since (compare-and-set failed).
    #[error("the session record changed since it was read")]
    Conflict,
}

/// The session store port. Keys are `pid`s (private session ids, safe
/// characters only).
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Writes a record; returns its revision.
    async fn put(&self, pid: &str, record: &SessionRecord) -> Result<u64, StoreError>;
    /// Overwrites a record only if it is still at `revision`.
    async fn update(
        &self,
        pid: &str,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, StoreError>;
    /// The record and its revision, if it exists and has not expired.
    async fn get(&self, pid: &str) -> Result<Option<(SessionRecord, u64)>, StoreError>;
    /// Removes a record (best effort).
    async fn delete(&self, pid: &str) -> Result<(), StoreError>;
    /// Records that `gateway` is alive at `now_ms` (Unix ms).
    async fn beat(&self, gateway: &str, now_ms: u64) -> Result<(), StoreError>;
    /// The last time `gateway` recorded it was alive, if still known.
    async fn last_beat(&self, gateway: &str) -> Result<Option<u64>, StoreError>;
    /// What readiness says about the store.
    fn kind(&self) -> &'static str;
}

/// Most old session records rewritten per heartbeat (spreads the writes).
const REFRESH_PER_BEAT: usize = 2_000;

/// How long past the window a record whose drop was recorded is kept: it
/// covers clock skew between the gateway that recorded the drop and the one
/// asked to resume, and the stores' whole-second expiries (NATS's
/// `Nats-TTL`). A client asking within it is told `expired`, after it
/// `unknown_session`; either way it gets a fresh session.
pub const CLOSED_GRACE: Duration = Duration::from_secs(5);

/// How long the stores keep a record after a write. A session whose drop
/// was recorded can only be resumed within the window, so its record goes
/// then (`window + CLOSED_GRACE`) rather than after `session_max_age`: with
/// one record per connection ever dropped kept for a day, a store under
/// connection churn grows all day (issue #16's soak: 19,092 records after
/// an hour). Records of live sockets (no drop recorded) are kept
/// `session_max_age` and rewritten when half as old; a deliberate
/// disconnect removes its record outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// `recovery.window`.
    pub window: Duration,
    /// `recovery.session_max_age`.
    pub session_max_age: Duration,
}

impl Expiry {
    /// How long `record`, written now, is kept.
    pub fn of(&self, record: &SessionRecord) -> Duration {
        match record.disconnected_at_ms {
            Some(_) => (self.window + CLOSED_GRACE).min(self.session_max_age),
            None => self.session_max_age,
        }
    }
}

/// What a reconnecting client asked to resume (from its CONNECT payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The private session id the client was given.
    pub pid: String,
    /// The offset of the last event it received, if any.
    pub offset: Option<u64>,
}

/// Why a session was not recovered; sent as `recovery:failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code (see [`RecoveryFailed::reason`]).
    pub reason: &'static str,
    /// What happened.
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The `recovery:failed` payload.
    pub fn event(&self) -> RecoveryFailed {
        RecoveryFailed {
            reason: self.reason.into(),
            message: format!(
                "{}; this is a fresh session: refetch what the app shows",
                self.message
            ),
        }
    }
}

fn valid_pid(pid: &str) -> bool {
    (1..=64).contains(&pid.len())
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads `{pid, offset}` from a CONNECT payload. `Ok(None)`: no recovery
/// asked for. A malformed pid or offset is a [`Failure`] (the client then
/// gets a fresh session), never a refused connection.
pub fn parse_resume(auth: Option<&Value>) -> Result<Option<Resume>, Failure> {
    let Some(obj) = auth.and_then(Value::as_object) else {
        return Ok(None);
    };
    let pid = match obj.get("pid") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(p)) if valid_pid(p) => p.clone(),
        Some(_) => {
            return Err(Failure::new(
                "invalid_session",
                "the session id (pid) is malformed",
            ));
        }
    };
    let offset = match obj.get("offset") {
        None | Some(Value::Null) => None,
        Some(Value::String(o)) if !o.is_empty() && o.len() <= 20 => {
            Some(o.parse::<u64>().map_err(|_| {
                Failure::new("invalid_session", "the offset is not one this server gave")
            })?)
        }
        Some(_) => {
            return Err(Failure::new(
                "invalid_session",
                "the offset is not one this server gave",
            ));
        }
    };
    Ok(Some(Resume { pid, offset }))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new random private session id (22 URL-safe characters).
pub fn new_pid() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A session found for a resume request.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its pid.
    pub pid: String,
    /// Its record.
    pub record: SessionRecord,
    /// Replay events after this sequence.
    pub from: u64,
}

/// The events a recovered socket missed, encoded, and the sequence the
/// replay covered up to.
#[derive(Debug, Default)]
pub struct Replay {
    /// Frames to send, in log order, each with its sequence (a binary
    /// event with its attachments).
    pub frames: Vec<(u64, crate::engine::EventFrame)>,
    /// Live events at or below this sequence were covered by the replay.
    pub floor: u64,
}

/// A socket's session record, kept with the socket and known to the
/// recovery service (which rewrites records before the store expires them).
#[derive(Debug, Clone)]
pub struct Tracked(Arc<tokio::sync::Mutex<TrackedState>>);

#[derive(Debug)]
struct TrackedState {
    pid: String,
    /// The record as last written.
    record: SessionRecord,
    /// Its revision in the store; `None` once a write failed or lost.
    revision: Option<u64>,
    /// When it was last written.
    written: Instant,
}

/// The recovery service of one gateway.
pub struct Recovery {
    store: Arc<dyn SessionStore>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    gateway: GatewayId,
    window: Duration,
    heartbeat: Duration,
    max_replay: usize,
    /// Records expire this long after their last write.
    session_max_age: Duration,
    /// The sessions of this gateway's sockets, by pid.
    live: Mutex<HashMap<String, Tracked>>,
    /// Other gateways' last heartbeats as read lately (or being read): when
    /// a gateway dies, all its sessions come back at once and need the same
    /// answer, read once.
    beats: Mutex<HashMap<String, (Instant, Beat)>>,
    /// Recovery attempts per session lately.
    attempts: attempts::Attempts,
}

/// A gateway's last heartbeat, once read (`None`: unknown).
type Beat = Arc<OnceCell<Option<u64>>>;

/// How long a gateway's last heartbeat, once read, answers for it.
const BEAT_CACHE: Duration = Duration::from_secs(1);

impl Recovery {
    /// Recovery through `store` over `bus`, as gateway `gateway`.
    pub fn new(
        settings: &RecoverySettings,
        store: Arc<dyn SessionStore>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        gateway: GatewayId,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            bus,
            metrics,
            gateway,
            window: settings.window,
            heartbeat: settings.heartbeat,
            max_replay: settings.max_replay_events,
            session_max_age: settings.session_max_age,
            live: Mutex::new(HashMap::new()),
            beats: Mutex::new(HashMap::new()),
            attempts: attempts::Attempts::new(settings.max_attempts, settings.window),
        })
    }

    /// This gateway's id in session records.
    pub fn gateway(&self) -> &GatewayId {
        &self.gateway
    }

    /// The store's kind, for readiness.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Where a fresh session starts: the log position this gateway knows
    /// of. Live events at or below it predate the session (never sent, never
    /// replayed).
    pub async fn start_position(&self) -> u64 {
        match self.bus.high_water() {
            // Nothing seen yet (a gateway that just started): ask, or a
            // client that receives nothing would later be replayed the
            // whole retained history of its rooms.
            0 => self.bus.refresh_high_water().await.unwrap_or(0),
            seen => seen,
        }
    }

    fn fail(&self, failure: Failure) -> Failure {
        self.metrics.recovery(failure.reason);
        failure
    }

    /// Counts a failure found before any lookup (a malformed request).
    pub fn refused(&self, failure: Failure) -> Failure {
        self.fail(failure)
    }

    /// Looks up the session `resume` names for `user` and checks it may be
    /// resumed now.
    pub async fn find(&self, user: &UserId, resume: &Resume) -> Result<Found, Failure> {
        let unavailable = |e: StoreError| {
            tracing::warn!(error = %e, "cannot read a session to recover");
            self.fail(Failure::new(
                "unavailable",
                "the session store cannot be read right now",
            ))
        };
        let Some((record, _)) = self.store.get(&resume.pid).await.map_err(unavailable)? else {
            return Err(self.fail(Failure::new(
                "unknown_session",
                "no such session: it ended, expired, or never existed",
            )));
        };
        if record.user != user.as_str() {
            return Err(self.fail(Failure::new(
                "foreign_session",
                "the session belongs to another user",
            )));
        }
        if !self.attempts.allow(&resume.pid, Instant::now()) {
            return Err(self.fail(Failure::new(
                "rate_limited",
                format!(
                    "this session was asked to be recovered too often (recovery.max_attempts per {} s); it stays as it is, this connection has a fresh one",
                    self.window.as_secs()
                ),
            )));
        }
        let now = unix_ms();
        let dropped_at = match record.disconnected_at_ms {
            Some(t) => t,
            // The gateway that held the connection never recorded the drop:
            // it died (count from its last heartbeat) or has not noticed yet
            // (it is alive: the drop is now).
            None => match self.last_beat(&record.gateway).await.map_err(unavailable)? {
                Some(beat) if now.saturating_sub(beat) <= 3 * self.heartbeat.as_millis() as u64 => {
                    now
                }
                Some(beat) => beat,
                None => 0,
            },
        };
        let away = Duration::from_millis(now.saturating_sub(dropped_at));
        if away > self.window {
            self.forget(&resume.pid).await;
            return Err(self.fail(Failure::new(
                "expired",
                format!(
                    "disconnected {} s ago, longer than the {} s recovery window",
                    away.as_secs(),
                    self.window.as_secs()
                ),
            )));
        }
        if let Some(offset) = resume.offset {
            let mut end = self.bus.high_water();
            if offset > end {
                end = self.bus.refresh_high_water().await.unwrap_or(end);
            }
            if offset > end {
                return Err(self.fail(Failure::new(
                    "invalid_session",
                    "the offset is ahead of the event log",
                )));
            }
        }
        let from = resume.offset.unwrap_or(0).max(record.offset);
        Ok(Found {
            pid: resume.pid.clone(),
            record,
            from,
        })
    }

    /// `gateway`'s last heartbeat, read at most once per [`BEAT_CACHE`]:
    /// concurrent callers wait for the same read.
    async fn last_beat(&self, gateway: &str) -> Result<Option<u64>, StoreError> {
        let cell = {
            let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
            beats.retain(|_, (at, _)| at.elapsed() < BEAT_CACHE);
            let (_, cell) = beats
                .entry(gateway.to_owned())
                .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())));
            Arc::clone(cell)
        };
        // A failed read leaves the cell empty: the next caller reads again.
        cell.get_or_try_init(|| self.store.last_beat(gateway))
            .await
            .copied()
    }

    /// Reads what the session missed in its rooms: `now` (the rooms the
    /// socket is in after reconnecting) and the rooms of its record. A room
    /// joined during the gap is replayed from its `room:joined`, a room left
    /// up to its `room:left`; volatile events were never stored.
    pub async fn replay(
        &self,
        user: &UserId,
        found: &Found,
        now: &HashSet<RoomId>,
    ) -> Result<Replay, Failure> {
        let user_room = RoomId::user(user);
        let mut rooms: BTreeSet<RoomId> = now.iter().cloned().collect();
        rooms.extend(
            found
                .record
                .rooms
                .iter()
                .filter_map(|r| RoomId::parse(r).ok()),
        );
        rooms.insert(user_room.clone());
        let rooms: Vec<RoomId> = rooms.into_iter().collect();
        // One consumer span for the replay's reads (`receive in.rooms`).
        let span = tracing::info_span!(
            "recovery.replay",
            otel.name = "receive in.rooms",
            otel.kind = "consumer",
            messaging.system = self.bus.status().kind,
            messaging.operation.type = "receive",
            messaging.operation.name = "replay",
            messaging.destination.name = "in.rooms",
            messaging.batch.message_count = tracing::field::Empty,
            confab.rooms = rooms.len(),
            confab.from = found.from + 1,
        );
        let items = async {
            // The bus bounds concurrent replays (on NATS: those that need a
            // consumer by recovery.max_concurrent_replays).
            self.metrics.replays_running.inc();
            let result = self
                .bus
                .replay_via(&rooms, found.from + 1, self.max_replay + 1)
                .await;
            self.metrics.replays_running.dec();
            if let Err(BusError::Trimmed(_)) = &result {
                self.forget(&found.pid).await;
            }
            result
                .map(|(items, path)| {
                    self.metrics.replay_path(path.as_str());
                    self.metrics.replay_reads.inc_by(items.len() as u64);
                    items
                })
                .map_err(|e| match e {
                    BusError::Trimmed(detail) => self.fail(Failure::new(
                        "expired",
                        format!("the missed events are no longer retained ({detail})"),
                    )),
                    e => {
                        tracing::warn!(error = %e, "cannot replay missed events");
                        self.fail(Failure::new(
                            "unavailable",
                            "the event log cannot be read right now",
                        ))
                    }
                })
        }
        .instrument(span.clone())
        .await?;
        span.record("messaging.batch.message_count", items.len());
        if items.len() > self.max_replay {
            self.forget(&found.pid).await;
            return Err(self.fail(Failure::new(
                "too_many_missed",
                format!(
                    "more than {} events were missed, more than one recovery replays",
                    self.max_replay
                ),
            )));
        }
        let floor = items
            .last()
            .and_then(|i| i.msg.seq)
            .unwrap_or(0)
            .max(found.from);
        let frames = filter_membership(&user_room, now, items)
            .into_iter()
            // Emitter bridge events: once per socket, never to an except
            // room; binary ones as a BINARY_EVENT with their offset, as live.
            .filter(|item| crate::hub::takes(&item.msg, &item.room, now))
            .filter_map(|item| {
                let seq = item.msg.seq?;
                match crate::hub::event_frame_of(&item.msg, Some(seq)) {
                    Ok(frame) => Some((seq, frame)),
                    Err(error) => {
                        tracing::warn!(room = %item.room, event = &*item.msg.event, %error, "replayed event with unreadable attachments skipped");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        self.metrics.recovery("recovered");
        self.metrics.replayed.inc_by(frames.len() as u64);
        Ok(Replay { frames, floor })
    }

    /// Deletes a session whose recovery failed for good (missed too much,
    /// expired): asking for it again reads nothing.
    async fn forget(&self, pid: &str) {
        self.attempts.forget(pid);
        if let Err(error) = self.store.delete(pid).await {
            tracing::debug!(%error, "cannot delete a session that cannot be recovered");
        }
    }

    /// Records a (new or resumed) session; the returned [`Tracked`] goes
    /// with the socket. A failed write is logged: the session then cannot
    /// be recovered, nothing else changes.
    pub async fn started(&self, pid: String, record: SessionRecord) -> Tracked {
        let revision = match self.store.put(&pid, &record).await {
            Ok(r) => Some(r),
            Err(error) => {
                tracing::warn!(%error, "cannot record a session: it will not be recoverable");
                None
            }
        };
        let tracked = Tracked(Arc::new(tokio::sync::Mutex::new(TrackedState {
            pid: pid.clone(),
            record,
            revision,
            written: Instant::now(),
        })));
        self.live_sessions().insert(pid, tracked.clone());
        tracked
    }

    fn live_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes a socket's record with `change` and writes it if `change`
    /// says it changed (compare-and-set on the last revision).
    async fn update(&self, tracked: &Tracked, change: impl FnOnce(&mut SessionRecord) -> bool) {
        let mut state = tracked.0.lock().await;
        if change(&mut state.record) {
            self.write(&mut state).await;
        }
    }

    /// Keeps a room the client joined (`joined`) or left itself in its
    /// session record, so that a recovery restores the choice.
    pub async fn remember_room(&self, tracked: &Tracked, room: &RoomId, joined: bool) {
        let name = room.to_string();
        self.update(tracked, |r| {
            let (add, remove) = if joined {
                (&mut r.joined, &mut r.left)
            } else {
                (&mut r.left, &mut r.joined)
            };
            let removed = remove.len();
            remove.retain(|x| *x != name);
            let mut changed = remove.len() != removed;
            if !add.contains(&name) && add.len() < 1024 {
                add.push(name);
                changed = true;
            }
            changed
        })
        .await;
    }

    async fn write(&self, state: &mut TrackedState) {
        let Some(revision) = state.revision else {
            return;
        };
        state.revision = match self.store.update(&state.pid, &state.record, revision).await {
            Ok(r) => {
                state.written = Instant::now();
                Some(r)
            }
            Err(error) => {
                tracing::debug!(%error, pid = %state.pid, "session record not updated");
                None
            }
        };
    }

    /// The socket is gone: a recoverable drop starts the window, anything
    /// else (the client disconnected, the server refused it) ends the
    /// session. A record someone else rewrote since (the client already
    /// resumed elsewhere) is left alone.
    pub async fn ended(&self, tracked: Tracked, reason: &DisconnectReason) {
        let mut state = tracked.0.lock().await;
        {
            let mut live = self.live_sessions();
            if live
                .get(&state.pid)
                .is_some_and(|t| Arc::ptr_eq(&t.0, &tracked.0))
            {
                live.remove(&state.pid);
            }
        }
        if reason.is_recoverable() {
            state.record.disconnected_at_ms = Some(unix_ms());
            self.write(&mut state).await;
        } else if state.revision.is_some()
            && let Err(error) = self.store.delete(&state.pid).await
        {
            tracing::debug!(%error, "cannot delete an ended session record");
        }
    }

    /// Rewrites the records of live sockets written more than half the
    /// store's expiry ago, so that a long-lived connection stays
    /// recoverable if its gateway crashes. At most `limit` per call.
    pub async fn refresh_old(&self, limit: usize) -> usize {
        let due = self.session_max_age / 2;
        let candidates: Vec<Tracked> = self.live_sessions().values().cloned().collect();
        let mut refreshed = 0;
        for tracked in candidates {
            if refreshed >= limit {
                break;
            }
            // A socket busy with its own record is written anyway.
            let Ok(mut state) = tracked.0.try_lock() else {
                continue;
            };
            if state.written.elapsed() >= due && state.revision.is_some() {
                self.write(&mut state).await;
                refreshed += 1;
            }
        }
        refreshed
    }

    /// Records this gateway's liveness every heartbeat and keeps the bus's
    /// idea of the log's end fresh, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = self.store.beat(self.gateway.as_str(), unix_ms()).await {
                tracing::warn!(%error, "cannot record gateway liveness for recovery");
            }
            if let Err(error) = self.bus.refresh_high_water().await {
                tracing::debug!(%error, "cannot refresh the log position");
            }
            self.refresh_old(REFRESH_PER_BEAT).await;
            self.attempts.prune(Instant::now());
        }
    }
}

fn membership_target(item: &TailItem) -> Option<(RoomId, bool)> {
    let change = RoomChange::parse(&item.msg.event, &item.msg.args_json)?.ok()?;
    Some((change.room().clone(), change.joined()))
}

/// Keeps the events a member would have received: everything of the user
/// room, and a room's events only while the user belonged to it. Whether
/// the user belonged to a room when the gap began follows from the first
/// membership change for it in the gap (`room:left` -> was a member), or,
/// without one, from whether the socket is in it now.
fn filter_membership(
    user_room: &RoomId,
    now: &HashSet<RoomId>,
    items: Vec<TailItem>,
) -> Vec<TailItem> {
    let changes: Vec<Option<(RoomId, bool)>> = items
        .iter()
        .map(|i| {
            if &i.room == user_room {
                membership_target(i)
            } else {
                None
            }
        })
        .collect();
    let mut member: HashMap<RoomId, bool> = HashMap::new();
    for (room, joined) in changes.iter().flatten() {
        member.entry(room.clone()).or_insert(!joined);
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, change) in items.into_iter().zip(changes) {
        if let Some((room, joined)) = change {
            member.insert(room, joined);
            out.push(item);
        } else if &item.room == user_room
            || *member
                .entry(item.room.clone())
                .or_insert_with(|| now.contains(&item.room))
        {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests;
