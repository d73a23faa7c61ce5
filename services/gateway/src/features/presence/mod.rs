//! Presence: which users have sockets here, and the port to the presence
//! tracker.
//!
//! [`LocalPresence`] keeps, per user, the local sockets and whether each is
//! away. [`LocalPresence::run`] (driven by [`crate::App::run`]) sends the
//! full local state as a [`Heartbeat`] every `presence.heartbeat` and at
//! once when a user's local status changes (first socket, last socket,
//! online ↔ away). The tracker (membership service) expires a gateway's
//! entries when its heartbeats stop, so a dead gateway's users go offline
//! within the tracker's TTL plus its sweep interval.

mod nats;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_contracts::presence::{Heartbeat, LocalPresence as UserPresence};
use confab_events::UserId;
use confab_events::socket::PresenceStatus;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) use nats::NatsPresence;

use crate::engine::{ConnId, SocketRef};
use crate::features::messages::Bucket;
use crate::identity::GatewayId;
use crate::reply::{Code, Reply};
use confab_events::socket::{MAX_PRESENCE_QUERY, PresenceQuery, PresenceQueryAck, PresenceSet};

/// A presence port failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PresenceError {
    /// The tracker could not be reached or refused.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// The port to the presence tracker.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Reports this gateway's full local state.
    async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError>;
    /// The presence of `users`, by user id, as `asker` may see it (the
    /// tracker reveals only users sharing a workspace with the asker).
    async fn query(
        &self,
        asker: &UserId,
        users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError>;
}

/// No tracker (static membership): heartbeats go nowhere, queries are
/// refused.
pub struct NoPresence;

#[async_trait]
impl Presence for NoPresence {
    async fn heartbeat(&self, _hb: &Heartbeat) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn query(
        &self,
        _asker: &UserId,
        _users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
        Err(PresenceError::Unavailable(
            "presence needs the membership service (membership.kind = \"nats\" or the all-in-one)"
                .into(),
        ))
    }
}

/// This gateway's sockets per user, reported to the tracker.
pub(crate) struct LocalPresence {
    gateway: GatewayId,
    /// User → (connection → away).
    users: Mutex<HashMap<UserId, HashMap<ConnId, bool>>>,
    changed: Notify,
    port: Arc<dyn Presence>,
    heartbeat: Duration,
}

fn status_of(conns: Option<&HashMap<ConnId, bool>>) -> PresenceStatus {
    match conns {
        None => PresenceStatus::Offline,
        Some(c) if c.is_empty() => PresenceStatus::Offline,
        Some(c) if c.values().all(|away| *away) => PresenceStatus::Away,
        Some(_) => PresenceStatus::Online,
    }
}

impl LocalPresence {
    /// Local presence reported through `port` every `heartbeat`, as
    /// `gateway`.
    pub(crate) fn new(
        port: Arc<dyn Presence>,
        heartbeat: Duration,
        gateway: GatewayId,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            users: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            port,
            heartbeat,
        })
    }

    fn update(&self, user: &UserId, f: impl FnOnce(&mut HashMap<ConnId, bool>)) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let before = status_of(users.get(user));
        let conns = users.entry(user.clone()).or_default();
        f(conns);
        if conns.is_empty() {
            users.remove(user);
        }
        if status_of(users.get(user)) != before {
            self.changed.notify_one();
        }
    }

    /// A socket of `user` connected (online).
    pub(crate) fn connected(&self, user: &UserId, conn: ConnId) {
        self.update(user, |c| {
            c.insert(conn, false);
        });
    }

    /// A socket of `user` says it is away (`true`) or back online.
    pub(crate) fn set_away(&self, user: &UserId, conn: ConnId, away: bool) {
        self.update(user, |c| {
            if let Some(a) = c.get_mut(&conn) {
                *a = away;
            }
        });
    }

    /// A socket of `user` disconnected.
    pub(crate) fn disconnected(&self, user: &UserId, conn: ConnId) {
        self.update(user, |c| {
            c.remove(&conn);
        });
    }

    /// The full local state.
    pub(crate) fn snapshot(&self) -> Heartbeat {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        Heartbeat {
            gateway: self.gateway.to_string(),
            users: users
                .iter()
                .map(|(user, conns)| UserPresence {
                    user: user.clone(),
                    status: status_of(Some(conns)),
                })
                .collect(),
        }
    }

    async fn send(&self, hb: &Heartbeat) {
        if let Err(e) = self.port.heartbeat(hb).await {
            tracing::warn!(error = %e, "cannot send a presence heartbeat");
        }
    }

    /// Sends heartbeats until `stop` is cancelled, then a last, empty one
    /// (this gateway's users go offline at once on a graceful shutdown).
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                () = self.changed.notified() => {}
            }
            self.send(&self.snapshot()).await;
        }
        self.send(&Heartbeat {
            gateway: self.gateway.to_string(),
            users: Vec::new(),
        })
        .await;
    }
}

/// Handles `presence:set` from a socket of `user`.
pub(crate) fn on_set(
    presence: &LocalPresence,
    socket: &SocketRef,
    user: &UserId,
    req: &PresenceSet,
) -> Reply {
    let away = match req.status {
        PresenceStatus::Online => false,
        PresenceStatus::Away => true,
        PresenceStatus::Offline => {
            return Reply::error(
                Code::InvalidRequest,
                "status must be \"online\" or \"away\"; disconnect to go offline",
            );
        }
    };
    presence.set_away(user, socket.conn(), away);
    Reply::done()
}

/// `presence:query`s a socket may make per second, sustained.
const QUERY_RATE_PER_SEC: f64 = 2.0;
/// `presence:query`s a socket may make at once.
const QUERY_BURST: u32 = 10;

/// A fresh per-socket `presence:query` budget.
pub(crate) fn query_bucket() -> Bucket {
    Bucket::new(QUERY_RATE_PER_SEC, QUERY_BURST)
}

/// Handles `presence:query` of `asker`: rate-limited per socket by
/// `bucket`, then asks the tracker.
pub(crate) async fn on_query(
    presence: &LocalPresence,
    asker: &UserId,
    bucket: &mut Bucket,
    req: &PresenceQuery,
) -> Reply {
    if let Err(wait) = bucket.take(Instant::now()) {
        let ms = wait.as_millis().max(1) as u64;
        return Reply::retry_after(
            format!("too many presence queries from this connection; retry in {ms} ms"),
            ms,
        );
    }
    if req.users.len() > MAX_PRESENCE_QUERY {
        return Reply::error(
            Code::InvalidRequest,
            format!("at most {MAX_PRESENCE_QUERY} users per presence:query"),
        );
    }
    let mut users = Vec::with_capacity(req.users.len());
    for u in &req.users {
        match UserId::parse(u) {
            Ok(id) => users.push(id),
            Err(e) => {
                return Reply::error(Code::InvalidRequest, format!("invalid user id {u:?}: {e}"));
            }
        }
    }
    match presence.port.query(asker, &users).await {
        Ok(map) => Reply::ok(&PresenceQueryAck::Ok { presence: map }),
        Err(e) => Reply::error(Code::Unavailable, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_online_while_any_local_socket_is_not_away() {
        let p = LocalPresence::new(
            Arc::new(NoPresence),
            Duration::from_secs(5),
            GatewayId::from("gw-test"),
        );
        let alice = UserId::parse("alice").unwrap();
        let status = |p: &LocalPresence| {
            p.snapshot()
                .users
                .iter()
                .find(|u| u.user == alice)
                .map(|u| u.status)
        };
        p.connected(&alice, ConnId(1));
        p.connected(&alice, ConnId(2));
        assert_eq!(status(&p), Some(PresenceStatus::Online));
        p.set_away(&alice, ConnId(1), true);
        assert_eq!(status(&p), Some(PresenceStatus::Online));
        p.set_away(&alice, ConnId(2), true);
        assert_eq!(status(&p), Some(PresenceStatus::Away));
        p.disconnected(&alice, ConnId(1));
        p.disconnected(&alice, ConnId(2));
        assert_eq!(status(&p), None);
    }
}
