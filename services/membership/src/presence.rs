//! The presence tracker: who is online, away or offline, from the
//! gateways' heartbeats.
//!
//! Every gateway reports its full local state ([`Heartbeat`]) every few
//! seconds and at once on a change. The tracker keeps one entry per
//! (gateway, user) with an expiry of now + `ttl`. A user is `online` if any
//! live entry is online, `away` if every live entry is away, `offline`
//! otherwise. A user a gateway stops listing loses that entry at once; a
//! gateway that stops reporting (crashed, partitioned) loses its entries
//! when the sweeper finds them expired, so its users go offline at most
//! `ttl` + [`PresenceTracker::sweep_interval`] after its last heartbeat.
//!
//! On a change the tracker publishes the volatile `presence:update`
//! `{userId, status}` to each `workspace:{id}` room of the user.
//!
//! With several membership instances each tracks every heartbeat (no queue
//! group), so clients may see an update once per instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_bus::BusMessage;
use confab_contracts::presence::{Heartbeat, Heartbeats};
use confab_contracts::{AUTHORIZATION_HEADER, Topic};
use confab_events::socket::{PresenceStatus, PresenceUpdate, names};
use confab_events::{RoomKind, UserId};
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::auth::Authenticator;
use crate::service::MembershipService;

/// Default time-to-live of a gateway's report: 3 default heartbeats.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

#[derive(Default)]
struct State {
    /// User → gateway → (status, expiry).
    entries: HashMap<UserId, HashMap<String, (PresenceStatus, Instant)>>,
    /// Gateway → users it listed last.
    by_gateway: HashMap<String, HashSet<UserId>>,
    /// Last published presence; absent = offline.
    published: HashMap<UserId, PresenceStatus>,
}

impl State {
    fn presence(&self, user: &UserId, now: Instant) -> PresenceStatus {
        let mut status = PresenceStatus::Offline;
        for (s, expiry) in self.entries.get(user).into_iter().flat_map(|e| e.values()) {
            if *expiry <= now {
                continue;
            }
            match s {
                PresenceStatus::Online => return PresenceStatus::Online,
                PresenceStatus::Away => status = PresenceStatus::Away,
                PresenceStatus::Offline => {}
            }
        }
        status
    }

    /// Users among `affected` whose presence changed, with the new one.
    fn changes(
        &mut self,
        affected: impl IntoIterator<Item = UserId>,
        now: Instant,
    ) -> Vec<(UserId, PresenceStatus)> {
        let mut out = Vec::new();
        for user in affected {
            let now_status = self.presence(&user, now);
            let before = self
                .published
                .get(&user)
                .copied()
                .unwrap_or(PresenceStatus::Offline);
            if now_status != before {
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
}

/// Presence per user, fed by gateway heartbeats.
pub struct PresenceTracker {
    state: Mutex<State>,
    ttl: Duration,
    service: Arc<MembershipService>,
}

impl std::fmt::Debug for PresenceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceTracker")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PresenceTracker {
    /// A tracker whose entries live `ttl` after each heartbeat; updates go
    /// to the workspace rooms `service` knows, on its bus.
    pub fn new(service: Arc<MembershipService>, ttl: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ttl,
            service,
        }
    }

    /// How long a report lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often expired entries are swept: a fifth of the TTL, between
    /// 50 ms and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.ttl / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Applies a gateway's full local state.
    pub async fn heartbeat(&self, hb: &Heartbeat) {
        let now = Instant::now();
        let expiry = now + self.ttl;
        let mut state = self.state.lock().await;
        let listed: HashSet<UserId> = hb.users.iter().map(|u| u.user.clone()).collect();
        let before = state
            .by_gateway
            .insert(hb.gateway.clone(), listed.clone())
            .unwrap_or_default();
        for gone in before.difference(&listed) {
            if let Some(e) = state.entries.get_mut(gone) {
                e.remove(&hb.gateway);
                if e.is_empty() {
                    state.entries.remove(gone);
                }
            }
        }
        if listed.is_empty() {
            state.by_gateway.remove(&hb.gateway);
        }
        for u in &hb.users {
            state
                .entries
                .entry(u.user.clone())
                .or_default()
                .insert(hb.gateway.clone(), (u.status, expiry));
        }
        let affected: Vec<UserId> = before.union(&listed).cloned().collect();
        let changes = state.changes(affected, now);
        // Published under the lock: updates of one user keep their order.
        self.publish(changes).await;
    }

    /// Drops expired entries and announces the users who went offline.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let mut affected = Vec::new();
        let State {
            entries,
            by_gateway,
            ..
        } = &mut *state;
        entries.retain(|user, gateways| {
            gateways.retain(|gateway, (_, expiry)| {
                let live = *expiry > now;
                if !live {
                    affected.push(user.clone());
                    if let Some(users) = by_gateway.get_mut(gateway) {
                        users.remove(user);
                        if users.is_empty() {
                            by_gateway.remove(gateway);
                        }
                    }
                }
                live
            });
            !gateways.is_empty()
        });
        let changes = state.changes(affected, now);
        self.publish(changes).await;
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
        let now = Instant::now();
        let state = self.state.lock().await;
        users
            .iter()
            .map(|u| {
                let status = if visible.contains(u) {
                    state.presence(u, now)
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

    async fn publish(&self, changes: Vec<(UserId, PresenceStatus)>) {
        for (user, status) in changes {
            let rooms = match self.service.rooms_of(&user).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%user, error = %e, "presence: cannot look up workspaces");
                    continue;
                }
            };
            let payload = PresenceUpdate {
                user_id: user.to_string(),
                status,
            };
            let data = serde_json::to_value(&payload).unwrap_or_default();
            for room in rooms.iter().filter(|r| r.kind() == RoomKind::Workspace) {
                let msg = BusMessage::new(names::PRESENCE_UPDATE, &data).into_volatile();
                if let Err(e) = self.service.bus().publish(room, msg).await {
                    tracing::warn!(%room, error = %e, "presence: cannot publish an update");
                }
            }
        }
    }

    /// Sweeps every [`sweep_interval`](Self::sweep_interval) until
    /// `shutdown` completes.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(self.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => self.sweep().await,
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
