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

mod nats_store;
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use confab_bus::{Bus, BusError, TailItem};
use confab_events::socket::RecoveryFailed;
use confab_events::{RoomId, UserId};
use confab_protocol::socketio::event_frame_with_offset;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use nats_store::{GATEWAYS_BUCKET, NatsSessions, SESSIONS_BUCKET};
pub use store::{MemorySessions, SessionRecord, SessionStore, StoreError};

use crate::config::RecoverySettings;
use crate::engine::DisconnectReason;
use crate::hub::{ROOM_JOINED, ROOM_LEFT};
use crate::metrics::Metrics;

/// Most old session records rewritten per heartbeat (spreads the writes).
const REFRESH_PER_BEAT: usize = 2_000;

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
    /// Frames to send, in log order, each with its sequence.
    pub frames: Vec<(u64, Utf8Bytes)>,
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
    gateway: String,
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
        gateway: String,
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
        })
    }

    /// This gateway's id in session records.
    pub fn gateway(&self) -> &str {
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
        let items = {
            // The bus bounds concurrent replays (on NATS: those that need a
            // consumer by recovery.max_concurrent_replays).
            self.metrics.replays_running.inc();
            let result = self
                .bus
                .replay_via(&rooms, found.from + 1, self.max_replay + 1)
                .await;
            self.metrics.replays_running.dec();
            result
                .map(|(items, path)| {
                    self.metrics.replay_path(path.as_str());
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
                })?
        };
        if items.len() > self.max_replay {
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
            .filter_map(|item| {
                let seq = item.msg.seq?;
                let frame = event_frame_with_offset("/", &item.msg.event, &item.msg.args_json, seq);
                Some((seq, Utf8Bytes::from(frame)))
            })
            .collect::<Vec<_>>();
        self.metrics.recovery("recovered");
        self.metrics.replayed.inc_by(frames.len() as u64);
        Ok(Replay { frames, floor })
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
    pub async fn update(&self, tracked: &Tracked, change: impl FnOnce(&mut SessionRecord) -> bool) {
        let mut state = tracked.0.lock().await;
        if change(&mut state.record) {
            self.write(&mut state).await;
        }
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
            if let Err(error) = self.store.beat(&self.gateway, unix_ms()).await {
                tracing::warn!(%error, "cannot record gateway liveness for recovery");
            }
            if let Err(error) = self.bus.refresh_high_water().await {
                tracing::debug!(%error, "cannot refresh the log position");
            }
            self.refresh_old(REFRESH_PER_BEAT).await;
        }
    }
}

fn membership_target(item: &TailItem) -> Option<(RoomId, bool)> {
    let joined = match &*item.msg.event {
        ROOM_JOINED => true,
        ROOM_LEFT => false,
        _ => return None,
    };
    let v: Value = serde_json::from_str(&item.msg.args_json).ok()?;
    let room = RoomId::parse(v.get(0)?.get("room")?.as_str()?).ok()?;
    Some((room, joined))
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
mod tests {
    use super::*;
    use confab_bus::BusMessage;
    use serde_json::json;

    fn item(room: &str, seq: u64, event: &str, data: Value) -> TailItem {
        let mut msg = BusMessage::new(event, &data);
        msg.seq = Some(seq);
        TailItem {
            room: RoomId::parse(room).unwrap(),
            msg,
        }
    }

    #[tokio::test]
    async fn long_lived_sessions_are_rewritten_before_they_expire() {
        let max_age = Duration::from_millis(300);
        let store = Arc::new(MemorySessions::new(max_age));
        let settings = RecoverySettings {
            session_max_age: Duration::from_millis(300),
            ..RecoverySettings::default()
        };
        let recovery = Recovery::new(
            &settings,
            Arc::clone(&store) as Arc<dyn SessionStore>,
            Arc::new(confab_bus::InProcessBus::default()),
            Arc::new(Metrics::new()),
            "g1".into(),
        );
        let record = SessionRecord {
            v: 1,
            sid: "s".into(),
            user: "u1".into(),
            gateway: "g1".into(),
            offset: 0,
            rooms: vec![],
            joined: vec![],
            left: vec![],
            disconnected_at_ms: None,
        };
        let tracked = recovery.started("p1".into(), record).await;
        assert_eq!(recovery.refresh_old(10).await, 0, "not due yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(recovery.refresh_old(10).await, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // 400 ms after the first write, older than the store keeps records.
        assert!(store.get("p1").await.unwrap().is_some());
        // An ended session is no longer refreshed.
        recovery
            .ended(tracked, &DisconnectReason::ClientDisconnect)
            .await;
        assert!(store.get("p1").await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(recovery.refresh_old(10).await, 0);
    }

    #[test]
    fn parses_resume_requests() {
        assert_eq!(parse_resume(None), Ok(None));
        assert_eq!(parse_resume(Some(&json!({"token": "t"}))), Ok(None));
        assert_eq!(
            parse_resume(Some(&json!({"token": "t", "pid": "abc_-1"}))),
            Ok(Some(Resume {
                pid: "abc_-1".into(),
                offset: None
            }))
        );
        assert_eq!(
            parse_resume(Some(&json!({"pid": "abc", "offset": "42"}))),
            Ok(Some(Resume {
                pid: "abc".into(),
                offset: Some(42)
            }))
        );
        for bad in [
            json!({"pid": "a.b"}),
            json!({"pid": "a b"}),
            json!({"pid": ""}),
            json!({"pid": 5}),
            json!({"pid": "x".repeat(65)}),
            json!({"pid": "abc", "offset": "-1"}),
            json!({"pid": "abc", "offset": "1e3"}),
            json!({"pid": "abc", "offset": 5}),
            json!({"pid": "abc", "offset": "99999999999999999999999"}),
        ] {
            let err = parse_resume(Some(&bad)).unwrap_err();
            assert_eq!(err.reason, "invalid_session", "{bad}");
        }
    }

    #[test]
    fn replay_follows_membership_changes_in_the_gap() {
        let me = RoomId::parse("user:u1").unwrap();
        let now: HashSet<RoomId> = ["channel:stay", "channel:new"]
            .iter()
            .map(|r| RoomId::parse(r).unwrap())
            .collect();
        let items = vec![
            item("channel:stay", 1, "message:new", json!({"id": "s1"})),
            item("channel:gone", 2, "message:new", json!({"id": "g1"})),
            item("channel:new", 3, "message:new", json!({"id": "n1"})),
            item("user:u1", 4, ROOM_LEFT, json!({"room": "channel:gone"})),
            item("channel:gone", 5, "message:new", json!({"id": "g2"})),
            item("user:u1", 6, ROOM_JOINED, json!({"room": "channel:new"})),
            item("channel:new", 7, "message:new", json!({"id": "n2"})),
            item("channel:other", 8, "message:new", json!({"id": "o1"})),
        ];
        let kept: Vec<u64> = filter_membership(&me, &now, items)
            .iter()
            .map(|i| i.msg.seq.unwrap())
            .collect();
        // g1 before the removal, n2 after the join; not g2, n1, o1.
        assert_eq!(kept, vec![1, 2, 4, 6, 7]);
    }
}
