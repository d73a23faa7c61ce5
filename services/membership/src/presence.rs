//! The presence tracker: who is online, away or offline, from the
//! gateways' heartbeats.
//!
//! Gateways report changes (`changes` heartbeats: the users whose local
//! status changed), an empty report as a sign of life every few seconds,
//! and, rarely, their whole local state in parts (`sync`). The tracker
//! keeps, per gateway, the users it listed with their status and when it
//! was last heard from; per user, the gateways listing them. A user is
//! `online` if any gateway lists them online, `away` if every gateway
//! listing them says away, `offline` otherwise.
//!
//! The work of a heartbeat is proportional to the users it lists, never to
//! the number of users a gateway has: a change touches only its users; a
//! sign of life touches the gateway's clock; a completed sync drops the
//! users the gateway no longer listed. A gateway that stops reporting
//! (crashed, partitioned) loses its users when the sweeper (which looks at
//! gateways, not users) finds it silent for `ttl`, so its users go offline
//! at most `ttl` + [`PresenceTracker::sweep_interval`] after its last
//! heartbeat. A gap in a gateway's `seq` (a lost report) is repaired by its
//! next sync.
//!
//! Changes are computed under the state lock (no I/O there) and handed, in
//! order, to one publisher task through a bounded queue; the publisher
//! takes them in batches, looks up the batch's workspaces in one query and
//! publishes, in order, the volatile
//! `presence:update` `{userId, status}` to each `workspace:{id}` room.
//!
//! With several membership instances each tracks every heartbeat (no queue
//! group), so clients may see an update once per instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_bus::BusMessage;
use confab_contracts::presence::{Heartbeat, HeartbeatKind, Heartbeats};
use confab_contracts::{AUTHORIZATION_HEADER, Topic};
use confab_events::socket::{PresenceStatus, PresenceUpdate, names};
use confab_events::{RoomId, RoomKind, UserId};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::auth::Authenticator;
use crate::service::MembershipService;

/// Default time-to-live of a gateway's report: 3 default heartbeats.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// Presence changes waiting for the publisher; when full, heartbeat
/// handling waits (nothing is dropped).
/// The Redis topic gateways publish their heartbeats on (the NATS subject
/// of [`Heartbeats`]: one name, versioned with the contract).
pub const HEARTBEAT_TOPIC: &str = Heartbeats::SUBJECT;

/// Heartbeats waiting in the Redis topic subscription (more are dropped
/// and repaired by the gateways' next full sync).
pub const HEARTBEAT_BUFFER: usize = 4096;

const PUBLISH_QUEUE: usize = 16 * 1024;
/// Most updates published per workspace lookup (one query per batch).
const PUBLISH_BATCH: usize = 512;

/// One gateway as the tracker knows it.
struct Gateway {
    /// Its users and their status there.
    users: HashMap<UserId, PresenceStatus>,
    /// When it was last heard from.
    seen: Instant,
    /// Its last `seq`.
    seq: u64,
    /// The sync being received: its id, the next part expected, and the
    /// users listed so far.
    sync: Option<(u64, u32, HashSet<UserId>)>,
}

#[derive(Default)]
struct State {
    gateways: HashMap<String, Gateway>,
    /// User → gateways listing them (with the status there).
    entries: HashMap<UserId, HashMap<String, PresenceStatus>>,
    /// Last published presence; absent = offline.
    published: HashMap<UserId, PresenceStatus>,
    /// How many users heartbeats listed (work done), for tests and metrics.
    listed: u64,
    /// Users in `published` online and away (kept as they change, for the
    /// metrics).
    online: u64,
    away: u64,
}

impl State {
    fn presence(&self, user: &UserId) -> PresenceStatus {
        let mut status = PresenceStatus::Offline;
        for s in self.entries.get(user).into_iter().flat_map(|e| e.values()) {
            match s {
                PresenceStatus::Online => return PresenceStatus::Online,
                PresenceStatus::Away => status = PresenceStatus::Away,
                PresenceStatus::Offline => {}
            }
        }
        status
    }

    /// Sets `user`'s status on `gateway` (`offline`: not listed there).
    fn set(&mut self, gateway: &str, user: &UserId, status: PresenceStatus) {
        let listed = self.gateways.get_mut(gateway).map(|g| &mut g.users);
        if status == PresenceStatus::Offline {
            if let Some(users) = listed {
                users.remove(user);
            }
            if let Some(e) = self.entries.get_mut(user) {
                e.remove(gateway);
                if e.is_empty() {
                    self.entries.remove(user);
                }
            }
        } else {
            if let Some(users) = listed {
                users.insert(user.clone(), status);
            }
            self.entries
                .entry(user.clone())
                .or_default()
                .insert(gateway.to_owned(), status);
        }
    }

    /// Drops a gateway and every user it listed; returns those users.
    fn drop_gateway(&mut self, gateway: &str) -> Vec<UserId> {
        let Some(g) = self.gateways.remove(gateway) else {
            return Vec::new();
        };
        let users: Vec<UserId> = g.users.into_keys().collect();
        for user in &users {
            if let Some(e) = self.entries.get_mut(user) {
                e.remove(gateway);
                if e.is_empty() {
                    self.entries.remove(user);
                }
            }
        }
        users
    }

    /// Users among `affected` whose presence changed, with the new one.
    fn changes(
        &mut self,
        affected: impl IntoIterator<Item = UserId>,
    ) -> Vec<(UserId, PresenceStatus)> {
        let mut out = Vec::new();
        for user in affected {
            let now_status = self.presence(&user);
            let before = self
                .published
                .get(&user)
                .copied()
                .unwrap_or(PresenceStatus::Offline);
            if now_status != before {
                for (status, up) in [(before, false), (now_status, true)] {
                    let count = match status {
                        PresenceStatus::Online => &mut self.online,
                        PresenceStatus::Away => &mut self.away,
                        PresenceStatus::Offline => continue,
                    };
                    *count = if up {
                        *count + 1
                    } else {
                        count.saturating_sub(1)
                    };
                }
                if now_status == PresenceStatus::Offline {
                    self.published.remove(&user);
                } else {
                    self.published.insert(user.clone(), now_status);
                }
                out.push((user, now_status));
            }
        }
        out
    }

    /// Applies one heartbeat; returns the users it may have changed.
    fn apply(&mut self, hb: &Heartbeat, now: Instant) -> Vec<UserId> {
        self.listed += hb.users.len() as u64;
        let gateway = self
            .gateways
            .entry(hb.gateway.clone())
            .or_insert_with(|| Gateway {
                users: HashMap::new(),
                seen: now,
                seq: hb.seq.saturating_sub(1),
                sync: None,
            });
        gateway.seen = now;
        if hb.seq != gateway.seq + 1 {
            tracing::debug!(gateway = %hb.gateway, expected = gateway.seq + 1, got = hb.seq, "presence: heartbeats missed; the next sync repairs them");
        }
        gateway.seq = hb.seq;
        let mut affected: Vec<UserId> = hb.users.iter().map(|u| u.user.clone()).collect();
        for u in &hb.users {
            self.set(&hb.gateway, &u.user, u.status);
        }
        if hb.kind == HeartbeatKind::Sync {
            affected.extend(self.sync_part(hb));
        }
        affected
    }

    /// Follows a sync; when its last part arrived, drops the gateway's
    /// users it did not list and returns them.
    fn sync_part(&mut self, hb: &Heartbeat) -> Vec<UserId> {
        let (Some(part), Some(gateway)) = (hb.sync, self.gateways.get_mut(&hb.gateway)) else {
            return Vec::new();
        };
        let listed = hb.users.iter().map(|u| u.user.clone());
        match &mut gateway.sync {
            Some((id, next, seen)) if *id == part.id && *next == part.part => {
                seen.extend(listed);
                *next += 1;
            }
            // A part was missed (or this is a new sync): start over here.
            _ if part.part == 0 => gateway.sync = Some((part.id, 1, listed.collect())),
            _ => {
                gateway.sync = None;
                return Vec::new();
            }
        }
        if part.part + 1 < part.parts {
            return Vec::new();
        }
        let Some((_, _, seen)) = gateway.sync.take() else {
            return Vec::new();
        };
        let gone: Vec<UserId> = gateway
            .users
            .keys()
            .filter(|u| !seen.contains(*u))
            .cloned()
            .collect();
        for user in &gone {
            self.set(&hb.gateway, user, PresenceStatus::Offline);
        }
        if self
            .gateways
            .get(&hb.gateway)
            .is_some_and(|g| g.users.is_empty())
        {
            self.gateways.remove(&hb.gateway);
        }
        gone
    }
}

/// Presence per user, fed by gateway heartbeats.
pub struct PresenceTracker {
    state: Mutex<State>,
    ttl: Duration,
    service: Arc<MembershipService>,
    updates: mpsc::Sender<(UserId, PresenceStatus)>,
    /// Taken by [`run_sweeper`](Self::run_sweeper), which publishes.
    queue: std::sync::Mutex<Option<mpsc::Receiver<(UserId, PresenceStatus)>>>,
}

impl std::fmt::Debug for PresenceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceTracker")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PresenceTracker {
    /// A tracker whose gateways live `ttl` after each heartbeat; updates go
    /// to the workspace rooms `service` knows, on its bus, once
    /// [`run_sweeper`](Self::run_sweeper) runs.
    pub fn new(service: Arc<MembershipService>, ttl: Duration) -> Self {
        let (updates, queue) = mpsc::channel(PUBLISH_QUEUE);
        Self {
            state: Mutex::new(State::default()),
            ttl,
            service,
            updates,
            queue: std::sync::Mutex::new(Some(queue)),
        }
    }

    /// How long a report lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many users heartbeats listed so far: the tracker's work.
    pub async fn users_listed(&self) -> u64 {
        self.state.lock().await.listed
    }

    /// How often silent gateways are swept: a fifth of the TTL, between
    /// 50 ms and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Applies a gateway's heartbeat.
    pub async fn heartbeat(&self, hb: &Heartbeat) {
        let mut state = self.state.lock().await;
        let affected = state.apply(hb, Instant::now());
        let changes = state.changes(affected);
        self.report(&state);
        // Queued under the lock: updates of one user keep their order.
        self.queue_updates(changes).await;
    }

    /// Hands the counts to the metrics.
    fn report(&self, state: &State) {
        self.service
            .health()
            .set_presence(state.online, state.away, state.gateways.len() as u64);
    }

    /// Drops the gateways silent for longer than the TTL and announces
    /// their users who went offline.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let changes = {
            let silent: Vec<String> = state
                .gateways
                .iter()
                .filter(|(_, g)| now.duration_since(g.seen) >= self.ttl)
                .map(|(id, _)| id.clone())
                .collect();
            let mut affected = Vec::new();
            for gateway in silent {
                tracing::info!(%gateway, "presence: gateway silent; its users go offline");
                affected.extend(state.drop_gateway(&gateway));
            }
            state.changes(affected)
        };
        self.report(&state);
        self.queue_updates(changes).await;
    }

    /// Hands changes to the publisher, in order (callers hold the state
    /// lock); waits while the queue is full.
    async fn queue_updates(&self, changes: Vec<(UserId, PresenceStatus)>) {
        for change in changes {
            if self.updates.send(change).await.is_err() {
                return;
            }
        }
    }

    /// The presence of `users`, by user id, as `asker` may see it: users
    /// who share no workspace with the asker are answered `offline`, like
    /// anyone offline, so a query reveals nothing about strangers.
    pub async fn query(
        &self,
        asker: &UserId,
        users: &[UserId],
    ) -> BTreeMap<String, PresenceStatus> {
        let visible = self.visible_to(asker).await;
        let state = self.state.lock().await;
        users
            .iter()
            .map(|u| {
                let status = if visible.contains(u) {
                    state.presence(u)
                } else {
                    PresenceStatus::Offline
                };
                (u.to_string(), status)
            })
            .collect()
    }

    /// The asker and everyone sharing a workspace with them. A failed
    /// lookup hides (fails closed) rather than reveals.
    async fn visible_to(&self, asker: &UserId) -> HashSet<UserId> {
        let mut visible = HashSet::from([asker.clone()]);
        let rooms = match self.service.rooms_of(asker).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(%asker, error = %e, "presence: cannot look up the asker's workspaces");
                return visible;
            }
        };
        for ws in rooms.iter().filter(|r| r.kind() == RoomKind::Workspace) {
            match self.service.members_of(ws).await {
                Ok(members) => visible.extend(members),
                Err(e) => {
                    tracing::warn!(workspace = %ws, error = %e, "presence: cannot list a workspace");
                }
            }
        }
        visible
    }

    /// Publishes a batch of updates, in order, looking up the users'
    /// workspaces in one query.
    async fn publish(&self, batch: &[(UserId, PresenceStatus)]) {
        let users: Vec<UserId> = batch.iter().map(|(u, _)| u.clone()).collect();
        let pairs = match self.service.workspaces_of(&users).await {
            Ok(pairs) => pairs,
            Err(e) => {
                tracing::warn!(users = users.len(), error = %e, "presence: cannot look up workspaces; updates dropped");
                return;
            }
        };
        let mut workspaces: HashMap<&UserId, Vec<&RoomId>> = HashMap::new();
        for (user, ws) in &pairs {
            workspaces.entry(user).or_default().push(ws);
        }
        for (user, status) in batch {
            let payload = PresenceUpdate {
                user_id: user.to_string(),
                status: *status,
            };
            let data = serde_json::to_value(&payload).unwrap_or_default();
            for room in workspaces.get(user).into_iter().flatten() {
                let msg = BusMessage::new(names::PRESENCE_UPDATE, &data).into_volatile();
                if let Err(e) = self.service.bus().publish(room, msg).await {
                    tracing::warn!(%room, error = %e, "presence: cannot publish an update");
                }
            }
        }
    }

    /// Sweeps every [`sweep_interval`](Self::sweep_interval) and publishes
    /// the queued presence updates until `shutdown` completes.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let publisher = {
            let tracker = Arc::clone(&self);
            async move {
                let Some(mut queue) = queue else { return };
                let mut batch = Vec::with_capacity(PUBLISH_BATCH);
                while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
                    tracker.publish(&batch).await;
                    batch.clear();
                }
            }
        };
        let sweeper = async {
            let mut tick = tokio::time::interval(self.sweep_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.sweep().await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = publisher => {}
            () = sweeper => {}
        }
    }

    /// Feeds the tracker from the Redis heartbeat topic
    /// ([`HEARTBEAT_TOPIC`]) until `shutdown` completes. On Redis the
    /// topic carries no service token: who may publish on it is Redis'
    /// own access control (the same credential that may write the log).
    pub async fn serve_topic_heartbeats(
        self: Arc<Self>,
        mut heartbeats: confab_bus::TopicSubscription,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let payload = tokio::select! {
                () = &mut shutdown => break,
                p = heartbeats.next() => p,
            };
            let Some(payload) = payload else { break };
            match serde_json::from_slice::<Heartbeat>(&payload) {
                Ok(hb) => self.heartbeat(&hb).await,
                Err(e) => tracing::warn!(error = %e, "presence: bad heartbeat"),
            }
        }
    }

    /// Applies the heartbeats published on [`Heartbeats`]'s subject
    /// (every instance reads them all; the service token is required)
    /// until `shutdown` completes. Queries are an endpoint of
    /// [`crate::api_nats`].
    pub async fn serve_heartbeats(
        self: Arc<Self>,
        client: async_nats::Client,
        auth: Arc<Authenticator>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut heartbeats = client.subscribe(Heartbeats::SUBJECT).await?;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                () = &mut shutdown => break,
                msg = heartbeats.next() => msg,
            };
            let Some(msg) = msg else { break };
            let authorization = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(AUTHORIZATION_HEADER))
                .map(|v| v.as_str());
            if auth.require_service(authorization).is_err() {
                tracing::warn!("presence: heartbeat without a valid service token ignored");
                continue;
            }
            match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                Ok(hb) => self.heartbeat(&hb).await,
                Err(e) => tracing::warn!(error = %e, "presence: bad heartbeat"),
            }
        }
        Ok(())
    }
}
