//! The official Socket.IO Admin UI (`@socket.io/admin-ui`) against a
//! Confab cluster: the `/admin` namespace speaks the protocol of the UI's
//! own server (`instrument()` of `@socket.io/admin-ui` 0.5), so the UI's
//! prebuilt pages show every gateway, its sockets and their rooms.
//!
//! How it works:
//! * every gateway with `admin.enabled` builds a [`wire::Snapshot`] of
//!   itself every `admin.stats_interval` (its `server_stats` and at most
//!   `admin.max_sockets` sockets with their rooms) and publishes it on core
//!   NATS ([`wire::SNAPSHOTS`]); without NATS (the all-in-one, Redis) it
//!   only knows itself;
//! * every gateway keeps the latest snapshot of each gateway (at most
//!   `admin.max_gateways`; one not heard from for [`Admin::expiry`] is
//!   dropped) and, when an operator is connected to it, turns the
//!   difference between two snapshots of a gateway into the UI's events
//!   (`socket_connected`, `socket_disconnected`, `room_joined`,
//!   `room_left`), after the gateway's `server_stats`. A change shows up
//!   within one interval; a socket that came and went within one is not
//!   seen;
//! * an operator connects with `{username, password}` (bcrypt, checked off
//!   the async runtime, one check at a time per gateway) or with the
//!   session id the UI got at its last login (kept in this gateway's
//!   memory only);
//! * actions (`join`, `leave`, `_disconnect` of one socket) are taken only
//!   when the gateway the operator is logged in on has `admin.mode =
//!   "actions"`; otherwise the UI is told no action is supported (it hides
//!   them) and any sent anyway is refused and logged. An action on another
//!   gateway's socket is published to that gateway
//!   ([`wire::action_subject`]), which takes it: the operator's gateway
//!   decided, and only gateways may publish there (NATS permissions). A
//!   join goes through the membership check a client's `room:join` goes
//!   through.

pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confab_events::UserId;
use futures::StreamExt;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminMode, AdminSettings};
use crate::engine::{ConnId, PollingSessions, SocketRef};
use crate::hub::Hub;
use crate::identity::GatewayId;
use crate::metrics::Metrics;
use wire::{Action, AggregatedEvent, NamespaceCount, ServerStats, Snapshot, UiSocket};

/// The namespace the Admin UI connects to (its default).
pub(crate) const NSP: &str = "/admin";

/// Most operator sessions remembered per gateway (the oldest go first).
const MAX_SESSIONS: usize = 256;
/// How long an operator session id stays valid.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What the handler does for an operator's action on one of its sockets.
#[async_trait]
pub(crate) trait Operate: Send + Sync + 'static {
    /// Makes the socket of `user` join `room`, as its own `room:join`
    /// would (membership checked). `Err` says why not.
    async fn admin_join(&self, socket: &SocketRef, user: &UserId, room: &str)
    -> Result<(), String>;
    /// Makes the socket leave `room`.
    async fn admin_leave(
        &self,
        socket: &SocketRef,
        user: &UserId,
        room: &str,
    ) -> Result<(), String>;
}

/// A socket of this gateway, as the Admin UI lists it.
struct Local {
    socket: SocketRef,
    user: UserId,
    address: Option<IpAddr>,
    /// Unix milliseconds of the CONNECT.
    since: u64,
}

/// What this gateway knows of one gateway.
struct Known {
    snapshot: Snapshot,
    heard: Instant,
}

/// Why an operator's CONNECT was refused: the message the UI shows.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

/// The Admin UI side of one gateway.
pub(crate) struct Admin {
    settings: AdminSettings,
    gateway: GatewayId,
    hostname: String,
    started: Instant,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    polling: OnceLock<Arc<PollingSessions>>,
    operate: OnceLock<Weak<dyn Operate>>,
    nats: Option<async_nats::Client>,
    local: Mutex<BTreeMap<ConnId, Local>>,
    known: Mutex<HashMap<String, Known>>,
    operators: Mutex<Vec<SocketRef>>,
    sessions: Mutex<HashMap<String, Instant>>,
    /// One bcrypt check at a time: a login flood costs one core at most.
    login: Semaphore,
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// Packet counters at the previous snapshot.
    last_in: AtomicU64,
    last_out: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_rfc3339() -> Value {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Admin {
    /// The admin side of a gateway, or `None` when `admin.enabled` is off.
    /// `nats`: the cluster's connection (every gateway then shows in the
    /// UI), `None` on a bus without one.
    pub(crate) fn new(
        settings: &AdminSettings,
        gateway: GatewayId,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        nats: Option<async_nats::Client>,
    ) -> Option<Arc<Admin>> {
        if !settings.enabled {
            return None;
        }
        let last_in = metrics.events_in.get();
        let last_out = metrics.events_out.get();
        Some(Arc::new(Admin {
            settings: settings.clone(),
            gateway,
            hostname: hostname(),
            started: Instant::now(),
            hub,
            metrics,
            polling: OnceLock::new(),
            operate: OnceLock::new(),
            nats,
            local: Mutex::new(BTreeMap::new()),
            known: Mutex::new(HashMap::new()),
            operators: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            login: Semaphore::new(1),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            last_in: AtomicU64::new(last_in),
            last_out: AtomicU64::new(last_out),
        }))
    }

    /// Gives the engine's polling sessions (counted in `server_stats`) and
    /// the handler that acts on sockets, once both are built.
    pub(crate) fn wire(&self, polling: Arc<PollingSessions>, operate: Weak<dyn Operate>) {
        let _ = self.polling.set(polling);
        let _ = self.operate.set(operate);
    }

    /// How long a gateway stays listed after its last snapshot.
    fn expiry(&self) -> Duration {
        (self.settings.stats_interval * 5).max(Duration::from_secs(10))
    }

    // --- the sockets of this gateway ----------------------------------------

    /// A socket of the main namespace connected.
    pub(crate) fn socket_connected(
        &self,
        socket: &SocketRef,
        user: &UserId,
        address: Option<IpAddr>,
    ) {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let local = Local {
            socket: socket.clone(),
            user: user.clone(),
            address,
            since: unix_ms(),
        };
        self.lock_local().insert(socket.conn(), local);
    }

    /// A socket of the main namespace left.
    pub(crate) fn socket_disconnected(&self, conn: ConnId) {
        if self.lock_local().remove(&conn).is_some() {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConnId, Local>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This gateway's snapshot now; counters restart from here.
    fn snapshot(&self) -> Snapshot {
        let gateway = self.gateway.as_str().to_owned();
        let (count, sockets) = {
            let local = self.lock_local();
            let sockets: Vec<UiSocket> = local
                .values()
                .take(self.settings.max_sockets)
                .map(|l| self.ui_socket(l))
                .collect();
            (local.len(), sockets)
        };
        let now_s = unix_ms() / 1000 * 1000;
        let events_in = self.metrics.events_in.get();
        let events_out = self.metrics.events_out.get();
        let deltas = [
            ("rawConnection", self.connects.swap(0, Ordering::Relaxed)),
            (
                "rawDisconnection",
                self.disconnects.swap(0, Ordering::Relaxed),
            ),
            (
                "packetsIn",
                events_in.saturating_sub(self.last_in.swap(events_in, Ordering::Relaxed)),
            ),
            (
                "packetsOut",
                events_out.saturating_sub(self.last_out.swap(events_out, Ordering::Relaxed)),
            ),
        ];
        let aggregated_events = deltas
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, count)| AggregatedEvent {
                timestamp: now_s,
                kind: kind.into(),
                count,
            })
            .collect();
        let operators = self.lock_operators().len();
        let stats = ServerStats {
            server_id: gateway.clone(),
            hostname: self.hostname.clone(),
            pid: std::process::id(),
            uptime: self.started.elapsed().as_secs_f64(),
            clients_count: u64::try_from(self.metrics.connections.get()).unwrap_or(0),
            polling_clients_count: self
                .polling
                .get()
                .map_or(0, |p| u64::try_from(p.len()).unwrap_or(u64::MAX)),
            aggregated_events,
            namespaces: vec![
                NamespaceCount {
                    name: "/".into(),
                    sockets_count: count as u64,
                },
                NamespaceCount {
                    name: NSP.into(),
                    sockets_count: operators as u64,
                },
            ],
        };
        Snapshot {
            gateway,
            stats,
            sockets,
        }
    }

    fn ui_socket(&self, l: &Local) -> UiSocket {
        let mut rooms: Vec<String> = self
            .hub
            .rooms_of(l.socket.conn())
            .iter()
            .map(ToString::to_string)
            .collect();
        rooms.sort();
        let unlisted = rooms.len().saturating_sub(wire::MAX_ROOMS_LISTED);
        rooms.truncate(wire::MAX_ROOMS_LISTED);
        let mut data = json!({ "userId": l.user.to_string(), "gateway": self.gateway.as_str() });
        if unlisted > 0 {
            data["roomsNotListed"] = json!(unlisted);
        }
        let issued = l.since;
        UiSocket {
            id: l.socket.sid().to_string(),
            client_id: format!("{}/{}", self.gateway.as_str(), l.socket.conn()),
            transport: None,
            nsp: "/".into(),
            data,
            handshake: json!({
                "address": l.address.map(|a| a.to_string()),
                "issued": issued,
                "time": time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(issued) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            }),
            rooms,
        }
    }

    /// The snapshot's wire form, cut until it fits a NATS message.
    fn encode(mut snapshot: Snapshot) -> Option<Vec<u8>> {
        loop {
            let bytes = serde_json::to_vec(&snapshot).ok()?;
            if bytes.len() <= wire::MAX_SNAPSHOT_BYTES {
                return Some(bytes);
            }
            if snapshot.sockets.is_empty() {
                return None;
            }
            let keep = snapshot.sockets.len() / 2;
            snapshot.sockets.truncate(keep);
        }
    }

    // --- the cluster view --------------------------------------------------

    /// Publishes this gateway's snapshot every interval and takes in the
    /// others' (and the actions on its sockets), until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut snapshots = None;
        let mut actions = None;
        if let Some(nats) = &self.nats {
            match nats.subscribe(wire::SNAPSHOTS).await {
                Ok(s) => snapshots = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "admin: cannot subscribe to the cluster's snapshots; the Admin UI shows this gateway only")
                }
            }
            match nats
                .subscribe(wire::action_subject(self.gateway.as_str()))
                .await
            {
                Ok(s) => actions = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "admin: cannot subscribe to actions; operators on other gateways cannot act on this one's sockets")
                }
            }
        }
        let mut tick = tokio::time::interval(self.settings.stats_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.publish().await,
                Some(msg) = async { snapshots.as_mut()?.next().await }, if snapshots.is_some() => {
                    match serde_json::from_slice::<Snapshot>(&msg.payload) {
                        Ok(s) if s.gateway != self.gateway.as_str() => self.absorb(s),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "admin: unreadable snapshot ignored"),
                    }
                }
                Some(msg) = async { actions.as_mut()?.next().await }, if actions.is_some() => {
                    // The operator's gateway checked its `admin.mode`; only
                    // gateways may publish here (NATS permissions).
                    match serde_json::from_slice::<Action>(&msg.payload) {
                        Ok(a) => self.perform(a).await,
                        Err(e) => tracing::debug!(error = %e, "admin: unreadable action ignored"),
                    }
                }
            }
        }
    }

    async fn publish(&self) {
        let snapshot = self.snapshot();
        if let Some(nats) = &self.nats
            && let Some(bytes) = Self::encode(snapshot.clone())
            && let Err(e) = nats.publish(wire::SNAPSHOTS, bytes.into()).await
        {
            tracing::debug!(error = %e, "admin: snapshot not published");
        }
        self.absorb(snapshot);
        self.expire();
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_operators(&self) -> std::sync::MutexGuard<'_, Vec<SocketRef>> {
        self.operators.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a gateway's snapshot: tells the operators what changed.
    fn absorb(&self, mut snapshot: Snapshot) {
        snapshot.sockets.truncate(self.settings.max_sockets);
        let events = {
            let mut known = self.lock_known();
            if !known.contains_key(&snapshot.gateway) && known.len() >= self.settings.max_gateways {
                return;
            }
            let before = known.get(&snapshot.gateway).map(|k| &k.snapshot.sockets);
            let mut events = vec![(
                "server_stats",
                vec![serde_json::to_value(&snapshot.stats).unwrap_or(Value::Null)],
            )];
            diff(
                before.map(Vec::as_slice).unwrap_or(&[]),
                &snapshot.sockets,
                &mut events,
            );
            known.insert(
                snapshot.gateway.clone(),
                Known {
                    snapshot,
                    heard: Instant::now(),
                },
            );
            events
        };
        self.tell_operators(&events);
    }

    /// Drops the gateways not heard from: their sockets leave the UI (the
    /// UI keeps the gateway itself, marked unhealthy).
    fn expire(&self) {
        let expiry = self.expiry();
        let mut events = Vec::new();
        self.lock_known().retain(|_, k| {
            let alive = k.heard.elapsed() < expiry;
            if !alive {
                diff(&k.snapshot.sockets, &[], &mut events);
            }
            alive
        });
        self.tell_operators(&events);
    }

    fn tell_operators(&self, events: &[(&str, Vec<Value>)]) {
        if events.is_empty() {
            return;
        }
        let operators = self.lock_operators().clone();
        for op in operators {
            for (name, args) in events {
                // A slow operator is closed by its queue; nothing waits.
                let _ = op.emit(name, args.clone());
            }
        }
    }

    /// The owner of a listed socket, and its snapshot entry.
    fn locate(&self, sid: &str) -> Option<String> {
        let known = self.lock_known();
        known
            .values()
            .find(|k| k.snapshot.sockets.iter().any(|s| s.id == sid))
            .map(|k| k.snapshot.gateway.clone())
    }

    // --- operators -----------------------------------------------------------

    /// Decides an operator's CONNECT: `{username, password}` or
    /// `{sessionId}`. Returns the new session id to give the UI, if any.
    pub(crate) async fn authenticate(
        &self,
        auth: Option<&Value>,
    ) -> Result<Option<String>, Refused> {
        let invalid = || Refused("invalid credentials".into());
        if self.lock_operators().len() >= self.settings.max_operators {
            return Err(Refused(format!(
                "this gateway already serves {} Admin UI connections (admin.max_operators)",
                self.settings.max_operators
            )));
        }
        let auth = auth.ok_or_else(invalid)?;
        if let Some(id) = auth.get("sessionId").and_then(Value::as_str) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|_, t| t.elapsed() < SESSION_TTL);
            if sessions.contains_key(id) {
                return Ok(None);
            }
        }
        let user = auth.get("username").and_then(Value::as_str).unwrap_or("");
        let password = auth.get("password").and_then(Value::as_str).unwrap_or("");
        let hash = match &self.settings.password_hash {
            Some(h) => h.expose().to_owned(),
            None => return Err(invalid()),
        };
        let user_ok: bool = user
            .as_bytes()
            .ct_eq(self.settings.username.as_bytes())
            .into();
        // bcrypt reads at most 72 bytes; a longer "password" is refused
        // before it costs a check.
        if password.is_empty() || password.len() > 72 {
            return Err(invalid());
        }
        let Ok(_permit) = self.login.try_acquire() else {
            return Err(Refused("another login is being checked; retry".into()));
        };
        let password = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if !(verified && user_ok) {
            tracing::warn!("admin: refused an operator login (invalid credentials)");
            return Err(invalid());
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Instant::now());
        tracing::info!("admin: operator logged in");
        Ok(Some(id))
    }

    /// An operator's socket is connected: sends it the configuration and
    /// the whole cluster view.
    pub(crate) fn operator_connected(&self, socket: &SocketRef, session: Option<String>) {
        if let Some(id) = session {
            let _ = socket.emit("session", vec![json!(id)]);
        }
        let mut features = vec!["AGGREGATED_EVENTS", "ALL_EVENTS"];
        if self.settings.mode == AdminMode::Actions {
            features.extend(["JOIN", "LEAVE", "DISCONNECT"]);
        }
        let _ = socket.emit("config", vec![json!({ "supportedFeatures": features })]);
        let (all, stats): (Vec<UiSocket>, Vec<Value>) = {
            let known = self.lock_known();
            let all = known
                .values()
                .flat_map(|k| k.snapshot.sockets.iter().cloned())
                .collect();
            let stats = known
                .values()
                .map(|k| serde_json::to_value(&k.snapshot.stats).unwrap_or(Value::Null))
                .collect();
            (all, stats)
        };
        let _ = socket.emit(
            "all_sockets",
            vec![serde_json::to_value(all).unwrap_or(Value::Null)],
        );
        for s in stats {
            let _ = socket.emit("server_stats", vec![s]);
        }
        self.lock_operators().push(socket.clone());
    }

    /// An operator's socket left.
    pub(crate) fn operator_disconnected(&self, socket: &SocketRef) {
        self.lock_operators().retain(|s| s.conn() != socket.conn());
    }

    /// An event from an operator: an action, routed to the socket's
    /// gateway. Returns the refusal, if any (logged here too).
    pub(crate) async fn on_operator_event(&self, name: &str, args: &[Value]) -> Result<(), String> {
        let result = self.route(name, args).await;
        if let Err(e) = &result {
            tracing::warn!(event = name, reason = %e, "admin: action refused");
        }
        result
    }

    async fn route(&self, name: &str, args: &[Value]) -> Result<(), String> {
        if self.settings.mode != AdminMode::Actions {
            return Err("admin.mode is \"readonly\": actions are off".into());
        }
        let action = Action::from_event(name, args)?;
        let owner = self
            .locate(action.sid())
            .ok_or_else(|| format!("socket {} is not listed on any gateway", action.sid()))?;
        tracing::info!(?action, gateway = %owner, "admin: operator action");
        if owner == self.gateway.as_str() {
            self.perform(action).await;
            return Ok(());
        }
        let nats = self.nats.as_ref().ok_or("no cluster connection")?;
        let bytes = serde_json::to_vec(&action).map_err(|e| e.to_string())?;
        nats.publish(wire::action_subject(&owner), bytes.into())
            .await
            .map_err(|e| format!("not sent to gateway {owner}: {e}"))
    }

    /// Acts on one of this gateway's sockets.
    async fn perform(&self, action: Action) {
        let found = {
            let local = self.lock_local();
            local
                .values()
                .find(|l| &*l.socket.sid() == action.sid())
                .map(|l| (l.socket.clone(), l.user.clone()))
        };
        let Some((socket, user)) = found else {
            tracing::info!(?action, "admin: the socket is gone");
            return;
        };
        let operate = self.operate.get().and_then(Weak::upgrade);
        let result = match (&action, operate) {
            (Action::Join { room, .. }, Some(op)) => op.admin_join(&socket, &user, room).await,
            (Action::Leave { room, .. }, Some(op)) => op.admin_leave(&socket, &user, room).await,
            (Action::Disconnect { close: true, .. }, _) => {
                socket.close(crate::engine::CloseReason {
                    code: 1000,
                    reason: "closed by an operator".into(),
                });
                Ok(())
            }
            (Action::Disconnect { close: false, .. }, _) => {
                // The client's `io server disconnect`: it does not come
                // back. Its connection then has no socket left; closed
                // soon if the client does not close it itself.
                let _ = socket.send_packet(&confab_protocol::socketio::Packet::disconnect("/"));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    socket.close(crate::engine::CloseReason {
                        code: 1000,
                        reason: "disconnected by an operator".into(),
                    });
                });
                Ok(())
            }
            (_, None) => Err("the gateway is stopping".into()),
        };
        match result {
            Ok(()) => tracing::info!(?action, "admin: action taken"),
            Err(e) => tracing::warn!(?action, reason = %e, "admin: action failed"),
        }
    }
}

/// The UI events that turn the socket list `before` into `after`.
fn diff(before: &[UiSocket], after: &[UiSocket], events: &mut Vec<(&'static str, Vec<Value>)>) {
    let old: HashMap<&str, &UiSocket> = before.iter().map(|s| (s.id.as_str(), s)).collect();
    let new: HashMap<&str, &UiSocket> = after.iter().map(|s| (s.id.as_str(), s)).collect();
    let ts = now_rfc3339;
    for s in after {
        match old.get(s.id.as_str()) {
            None => events.push((
                "socket_connected",
                vec![serde_json::to_value(s).unwrap_or(Value::Null), ts()],
            )),
            Some(prev) => {
                for room in s.rooms.iter().filter(|r| !prev.rooms.contains(r)) {
                    events.push((
                        "room_joined",
                        vec![json!("/"), json!(room), json!(s.id), ts()],
                    ));
                }
                for room in prev.rooms.iter().filter(|r| !s.rooms.contains(r)) {
                    events.push((
                        "room_left",
                        vec![json!("/"), json!(room), json!(s.id), ts()],
                    ));
                }
            }
        }
    }
    for s in before.iter().filter(|s| !new.contains_key(s.id.as_str())) {
        events.push((
            "socket_disconnected",
            vec![json!("/"), json!(s.id), json!("gone"), ts()],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(id: &str, rooms: &[&str]) -> UiSocket {
        UiSocket {
            id: id.into(),
            client_id: "c".into(),
            transport: None,
            nsp: "/".into(),
            data: json!({}),
            handshake: json!({}),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn names(events: &[(&str, Vec<Value>)]) -> Vec<String> {
        events
            .iter()
            .map(|(n, a)| match *n {
                "room_joined" | "room_left" => format!("{n} {} {}", a[2], a[1]),
                "socket_disconnected" => format!("{n} {}", a[1]),
                _ => format!("{n} {}", a[0]["id"]),
            })
            .collect()
    }

    #[test]
    fn two_snapshots_differ_by_the_uis_events() {
        let before = [
            socket("a", &["user:1", "channel:1"]),
            socket("b", &["user:2"]),
        ];
        let after = [
            socket("a", &["user:1", "channel:2"]),
            socket("c", &["user:3"]),
        ];
        let mut events = Vec::new();
        diff(&before, &after, &mut events);
        assert_eq!(
            names(&events),
            [
                "room_joined \"a\" \"channel:2\"",
                "room_left \"a\" \"channel:1\"",
                "socket_connected \"c\"",
                "socket_disconnected \"b\"",
            ]
        );
        let mut none = Vec::new();
        diff(&after, &after, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn an_oversized_snapshot_is_cut_to_fit_a_nats_message() {
        let rooms: Vec<String> = (0..100).map(|i| format!("channel:{i:040}")).collect();
        let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
        let sockets = (0..1000)
            .map(|i| socket(&format!("s{i}"), &rooms))
            .collect();
        let snapshot = Snapshot {
            gateway: "gw".into(),
            stats: ServerStats {
                server_id: "gw".into(),
                hostname: "h".into(),
                pid: 1,
                uptime: 1.0,
                clients_count: 1000,
                polling_clients_count: 0,
                aggregated_events: Vec::new(),
                namespaces: Vec::new(),
            },
            sockets,
        };
        let bytes = Admin::encode(snapshot).unwrap();
        assert!(bytes.len() <= wire::MAX_SNAPSHOT_BYTES);
        let back: Snapshot = serde_json::from_slice(&bytes).unwrap();
        assert!(!back.sockets.is_empty() && back.sockets.len() < 1000);
    }
}
