//! Presence: which users have sockets here, and the port to the presence
//! tracker.
//!
//! [`LocalPresence`] keeps, per user, the local sockets and whether each is
//! away. [`LocalPresence::run`] (driven by [`crate::App::run`]) reports to
//! the tracker with [`Heartbeat`]s: at once, the users whose local status
//! changed (first socket, last socket, online ↔ away; a flip and its
//! flip back between two reports cancel out); every `presence.heartbeat`
//! an empty report as a sign of life; every `presence.full_sync_every` the
//! whole local state in parts (the rare repair of a tracker that missed a
//! report or restarted). A report costs what changed, never the number of
//! local users. The tracker (membership service) expires a gateway's users
//! when its heartbeats stop, so a dead gateway's users go offline within
//! the tracker's TTL plus its sweep interval.

mod nats;
mod redis;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_contracts::presence::{
    Heartbeat, HeartbeatKind, LocalPresence as UserPresence, MAX_USERS_PER_HEARTBEAT, SyncPart,
};
use confab_events::UserId;
use confab_events::socket::PresenceStatus;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) use nats::NatsPresence;
pub(crate) use redis::RedisPresence;

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

/// The local state and what the tracker has not heard yet.
#[derive(Default)]
struct Local {
    /// User → (connection → away).
    users: HashMap<UserId, HashMap<ConnId, bool>>,
    /// Users whose status changed since the last report → the status that
    /// report gave (at most one entry per local or just-gone user).
    pending: HashMap<UserId, PresenceStatus>,
}

/// This gateway's sockets per user, reported to the tracker.
pub(crate) struct LocalPresence {
    gateway: GatewayId,
    local: Mutex<Local>,
    changed: Notify,
    port: Arc<dyn Presence>,
    heartbeat: Duration,
    full_sync_every: Duration,
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
    /// Local presence reported through `port` (a sign of life every
    /// `heartbeat`, the whole state every `full_sync_every`), as `gateway`.
    pub(crate) fn new(
        port: Arc<dyn Presence>,
        heartbeat: Duration,
        full_sync_every: Duration,
        gateway: GatewayId,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            local: Mutex::new(Local::default()),
            changed: Notify::new(),
            port,
            heartbeat,
            full_sync_every,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, user: &UserId, f: impl FnOnce(&mut HashMap<ConnId, bool>)) {
        let mut local = self.lock();
        let Local { users, pending } = &mut *local;
        let before = status_of(users.get(user));
        let conns = users.entry(user.clone()).or_default();
        f(conns);
        if conns.is_empty() {
            users.remove(user);
        }
        if status_of(users.get(user)) != before {
            pending.entry(user.clone()).or_insert(before);
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

    /// The users whose status changed since the last call, with their
    /// status now (`offline`: gone); flips that came back are left out.
    fn take_changes(&self) -> Vec<UserPresence> {
        let mut local = self.lock();
        let Local { users, pending } = &mut *local;
        pending
            .drain()
            .filter_map(|(user, reported)| {
                let status = status_of(users.get(&user));
                (status != reported).then_some(UserPresence { user, status })
            })
            .collect()
    }

    /// The full local state.
    pub(crate) fn snapshot(&self) -> Vec<UserPresence> {
        let local = self.lock();
        local
            .users
            .iter()
            .map(|(user, conns)| UserPresence {
                user: user.clone(),
                status: status_of(Some(conns)),
            })
            .collect()
    }

    async fn send(&self, hb: &Heartbeat) {
        if let Err(e) = self.port.heartbeat(hb).await {
            tracing::warn!(error = %e, "cannot send a presence heartbeat");
        }
    }

    /// Reports the changes (in parts); an empty report when `alive` asks
    /// for a sign of life and nothing changed.
    async fn send_changes(&self, seq: &mut u64, alive: bool) {
        let changes = self.take_changes();
        if changes.is_empty() && !alive {
            return;
        }
        let mut parts = changes.chunks(MAX_USERS_PER_HEARTBEAT).peekable();
        if parts.peek().is_none() {
            *seq += 1;
            return self
                .send(&Heartbeat::changes(self.gateway.as_str(), *seq, Vec::new()))
                .await;
        }
        for part in parts {
            *seq += 1;
            let hb = Heartbeat::changes(self.gateway.as_str(), *seq, part.to_vec());
            self.send(&hb).await;
        }
    }

    /// Sends `users` as one full state, in parts.
    async fn send_sync(&self, seq: &mut u64, users: Vec<UserPresence>) {
        let chunks: Vec<&[UserPresence]> = if users.is_empty() {
            vec![&[]]
        } else {
            users.chunks(MAX_USERS_PER_HEARTBEAT).collect()
        };
        let id = *seq + 1;
        let parts = chunks.len() as u32;
        for (part, users) in chunks.into_iter().enumerate() {
            *seq += 1;
            let hb = Heartbeat {
                gateway: self.gateway.to_string(),
                seq: *seq,
                kind: HeartbeatKind::Sync,
                users: users.to_vec(),
                sync: Some(SyncPart {
                    id,
                    part: part as u32,
                    parts,
                }),
            };
            self.send(&hb).await;
        }
    }

    /// Reports until `stop` is cancelled, then a last, empty full state
    /// (this gateway's users go offline at once on a graceful shutdown).
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        let mut next_sync = tokio::time::Instant::now() + self.full_sync_every;
        loop {
            let alive = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => true,
                () = self.changed.notified() => false,
            };
            // Changes first: a sync must never overtake an older change.
            self.send_changes(&mut seq, alive).await;
            if tokio::time::Instant::now() >= next_sync {
                next_sync = tokio::time::Instant::now() + self.full_sync_every;
                let users = self.snapshot();
                self.send_sync(&mut seq, users).await;
            }
        }
        self.send_sync(&mut seq, Vec::new()).await;
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

    fn local() -> Arc<LocalPresence> {
        LocalPresence::new(
            Arc::new(NoPresence),
            Duration::from_secs(5),
            Duration::from_secs(60),
            GatewayId::from("gw-test"),
        )
    }

    #[test]
    fn a_user_is_online_while_any_local_socket_is_not_away() {
        let p = local();
        let alice = UserId::parse("alice").unwrap();
        let status = |p: &LocalPresence| {
            p.snapshot()
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

    /// Records every heartbeat it is given.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Heartbeat>>);

    #[async_trait]
    impl Presence for Recorded {
        async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError> {
            self.0.lock().unwrap().push(hb.clone());
            Ok(())
        }
        async fn query(
            &self,
            _: &UserId,
            _: &[UserId],
        ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
            Ok(BTreeMap::new())
        }
    }

    #[tokio::test]
    async fn a_flip_of_one_user_reports_that_user_only() {
        let port = Arc::new(Recorded::default());
        let p = LocalPresence::new(
            Arc::clone(&port) as _,
            Duration::from_secs(5),
            Duration::from_secs(60),
            GatewayId::from("gw-test"),
        );
        let mut seq = 0;
        for n in 0..5_000u64 {
            let user = UserId::parse(&format!("u{n}")).unwrap();
            p.connected(&user, ConnId(n));
        }
        p.send_changes(&mut seq, false).await;
        let sent: Vec<usize> = port
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.users.len())
            .collect();
        assert_eq!(sent, vec![2_000, 2_000, 1_000], "the connections, in parts");
        port.0.lock().unwrap().clear();

        let u7 = UserId::parse("u7").unwrap();
        p.set_away(&u7, ConnId(7), true);
        p.send_changes(&mut seq, false).await;
        // A flip and its flip back between two reports cancel out.
        let u8 = UserId::parse("u8").unwrap();
        p.set_away(&u8, ConnId(8), true);
        p.set_away(&u8, ConnId(8), false);
        p.send_changes(&mut seq, false).await;
        p.send_changes(&mut seq, true).await;
        let sent = port.0.lock().unwrap().clone();
        let shown: Vec<(HeartbeatKind, u64, Vec<UserPresence>)> =
            sent.into_iter().map(|h| (h.kind, h.seq, h.users)).collect();
        let away = UserPresence {
            user: u7,
            status: PresenceStatus::Away,
        };
        assert_eq!(
            shown,
            vec![
                (HeartbeatKind::Changes, 4, vec![away]),
                (HeartbeatKind::Changes, 5, vec![]),
            ]
        );
    }

    #[tokio::test]
    async fn a_sync_sends_the_whole_state_in_parts() {
        let port = Arc::new(Recorded::default());
        let p = LocalPresence::new(
            Arc::clone(&port) as _,
            Duration::from_secs(5),
            Duration::from_secs(60),
            GatewayId::from("gw-test"),
        );
        for n in 0..2_500u64 {
            p.connected(&UserId::parse(&format!("u{n}")).unwrap(), ConnId(n));
        }
        let mut seq = 10;
        p.send_sync(&mut seq, p.snapshot()).await;
        let sent = port.0.lock().unwrap().clone();
        let parts: Vec<(u64, Option<SyncPart>, usize)> = sent
            .iter()
            .map(|h| (h.seq, h.sync, h.users.len()))
            .collect();
        let part = |part| {
            Some(SyncPart {
                id: 11,
                part,
                parts: 2,
            })
        };
        assert_eq!(parts, vec![(11, part(0), 2_000), (12, part(1), 500)]);
    }
}
