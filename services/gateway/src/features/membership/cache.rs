//! [`AccessCache`]: the gateway's cached view of the membership authority
//! for writes ("may this user still write in this room?"), so that a
//! `message:send` costs no request to the membership service and keeps
//! working while that service is down.
//!
//! How it stays current: the membership events that already reach every
//! gateway with a socket of the user (`room:joined` / `room:left` in
//! `user:{id}`, `channel:archived` in the channel) update it through the
//! hub ([`ChangeObserver`]) before any socket moves. Those events are
//! stored in the room log before the membership command answers (the
//! service waits for its notifier), the notifier retries a publish until
//! it is stored, and room feeds repair gaps (after a NATS reconnect or a
//! slow consumer) from the log, so a `room:left` is late at worst, never
//! lost. What the events cannot cover is bounded by `ttl`: an answer older
//! than that is asked again (and kept while the authority is unreachable).
//!
//! Filling on a miss races with the events: an answer asked before a
//! `room:left` may arrive after it. Each user has a generation, bumped by
//! every change of that user (an archive bumps a global one); an answer is
//! kept only when neither moved while it was asked.
//!
//! Bounded: only users with a socket on this gateway are cached (the
//! handler forgets a user with their last socket), at most `max_users` of
//! them and `rooms_per_user` rooms each (the oldest answer goes first).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use confab_events::{RoomId, UserId};
use dashmap::DashMap;

use super::{Access, Membership, MembershipError};
use crate::hub::{ChangeObserver, JoinGate};

/// Bounds and lifetime of the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheLimits {
    /// How long an answer is used before it is asked again.
    pub(crate) ttl: Duration,
    /// Most rooms per user.
    pub(crate) rooms_per_user: usize,
    /// Most users.
    pub(crate) max_users: usize,
}

#[derive(Debug, Clone)]
struct Answer {
    access: Access,
    at: Instant,
}

#[derive(Debug, Default)]
struct UserEntry {
    generation: u64,
    rooms: HashMap<RoomId, Answer>,
}

/// Where an answer came from (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// From the cache, no request.
    Cached,
    /// Asked the authority.
    Asked,
    /// The authority could not be asked; an answer older than the TTL was
    /// used.
    Stale,
}

/// The cached view; see the [module docs](self).
pub(crate) struct AccessCache {
    authority: Arc<dyn Membership>,
    limits: CacheLimits,
    users: DashMap<UserId, UserEntry>,
    /// Bumped by every archive (a change of a room for every user).
    global: AtomicU64,
    asked: AtomicU64,
}

impl AccessCache {
    /// A cache in front of `authority`.
    pub(crate) fn new(authority: Arc<dyn Membership>, limits: CacheLimits) -> Self {
        Self {
            authority,
            limits,
            users: DashMap::new(),
            global: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        }
    }

    /// How many requests went to the authority.
    #[cfg(test)]
    pub(crate) fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Whether `user` may write in `room`: the cached answer when it is
    /// younger than the TTL, else the authority's (cached); an older answer
    /// when the authority cannot be asked.
    pub(crate) async fn check(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<(Access, Source), MembershipError> {
        let cached = self.cached(user, room);
        if let Some(answer) = &cached
            && answer.at.elapsed() < self.limits.ttl
        {
            return Ok((answer.access.clone(), Source::Cached));
        }
        match self.ask(user, room).await {
            Ok(access) => Ok((access, Source::Asked)),
            Err(e) => match cached {
                Some(answer) => {
                    tracing::debug!(%user, %room, error = %e, "membership authority unreachable; using an older answer");
                    Ok((answer.access, Source::Stale))
                }
                None => Err(e),
            },
        }
    }

    /// Asks the authority (always) and caches its answer unless a change
    /// of the user or an archive came in meanwhile.
    pub(crate) async fn ask(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Access, MembershipError> {
        let before = (self.generation(user), self.global.load(Ordering::Acquire));
        self.asked.fetch_add(1, Ordering::Relaxed);
        let access = self.authority.may_join(user, room).await?;
        if self.users.len() >= self.limits.max_users && !self.users.contains_key(user) {
            return Ok(access);
        }
        let mut entry = self.users.entry(user.clone()).or_default();
        // Checked under the entry's lock: a change applied after this point
        // bumps the generation after our insert and overwrites it.
        if entry.generation == before.0 && self.global.load(Ordering::Acquire) == before.1 {
            self.put(&mut entry, room, access.clone());
        }
        Ok(access)
    }

    /// Forgets a user (their last socket here is gone: no more events
    /// about them reach this gateway).
    pub(crate) fn forget(&self, user: &UserId) {
        self.users.remove(user);
    }

    /// The user's generation: it moves with every membership change of
    /// the user this gateway hears of.
    pub(crate) fn generation(&self, user: &UserId) -> u64 {
        self.users.get(user).map(|e| e.generation).unwrap_or(0)
    }

    /// Asks the authority again after a change raced with a join; when it
    /// cannot be asked, the answer the events left in the cache decides.
    pub(crate) async fn recheck(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Access, MembershipError> {
        match self.ask(user, room).await {
            Ok(access) => Ok(access),
            Err(e) => self.cached(user, room).map(|a| a.access).ok_or(e),
        }
    }

    /// The answer cached for `user` in `room`, whatever its age.
    fn cached(&self, user: &UserId, room: &RoomId) -> Option<Answer> {
        self.users
            .get(user)
            .and_then(|e| e.rooms.get(room).cloned())
    }

    fn put(&self, entry: &mut UserEntry, room: &RoomId, access: Access) {
        if entry.rooms.len() >= self.limits.rooms_per_user && !entry.rooms.contains_key(room) {
            let oldest = entry
                .rooms
                .iter()
                .min_by_key(|(_, a)| a.at)
                .map(|(r, _)| r.clone());
            if let Some(oldest) = oldest {
                entry.rooms.remove(&oldest);
            }
        }
        let answer = Answer {
            access,
            at: Instant::now(),
        };
        entry.rooms.insert(room.clone(), answer);
    }
}

/// A `sockets:join` of the emitter bridge asks the authority like a
/// `room:join` does: read access (member, or read-only) lets the socket in.
impl JoinGate for AccessCache {
    fn may_join<'a>(
        &'a self,
        user: &'a UserId,
        room: &'a RoomId,
    ) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            matches!(
                self.ask(user, room).await,
                Ok(Access::Allowed | Access::ReadOnly(_))
            )
        })
    }
}

impl ChangeObserver for AccessCache {
    fn room_change(&self, user: &UserId, room: &RoomId, joined: bool) {
        // Only users with a socket here get events; an entry is made even
        // when empty, so that the generation check sees this change.
        let mut entry = self.users.entry(user.clone()).or_default();
        entry.generation += 1;
        let access = if joined {
            Access::Allowed
        } else {
            Access::Refused(format!("{user} is no longer a member of {room}"))
        };
        self.put(&mut entry, room, access);
    }

    fn archived(&self, room: &RoomId) {
        self.global.fetch_add(1, Ordering::AcqRel);
        for mut entry in self.users.iter_mut() {
            if let Some(answer) = entry.rooms.get_mut(room)
                && answer.access == Access::Allowed
            {
                answer.access = Access::Allowed.read_only_if(true, room);
                answer.at = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::membership::StaticMembership;

    fn ids() -> (UserId, RoomId) {
        (
            UserId::parse("bob").unwrap(),
            RoomId::parse("channel:general").unwrap(),
        )
    }

    fn cache(authority: Arc<StaticMembership>, ttl: Duration) -> AccessCache {
        let limits = CacheLimits {
            ttl,
            rooms_per_user: 2,
            max_users: 10,
        };
        AccessCache::new(authority, limits)
    }

    #[tokio::test]
    async fn answers_from_the_cache_until_an_event_changes_it() {
        let (bob, general) = ids();
        let authority = Arc::new(StaticMembership::new());
        authority.grant(&bob, &general);
        let c = cache(Arc::clone(&authority), Duration::from_secs(60));
        assert_eq!(c.check(&bob, &general).await.unwrap().1, Source::Asked);
        assert_eq!(
            c.check(&bob, &general).await.unwrap(),
            (Access::Allowed, Source::Cached)
        );
        c.room_change(&bob, &general, false);
        let (access, source) = c.check(&bob, &general).await.unwrap();
        assert!(matches!(access, Access::Refused(_)), "{access:?}");
        assert_eq!(source, Source::Cached);
        c.room_change(&bob, &general, true);
        c.archived(&general);
        let (access, _) = c.check(&bob, &general).await.unwrap();
        assert!(matches!(access, Access::ReadOnly(_)), "{access:?}");
        assert_eq!(c.asked(), 1);
    }

    #[tokio::test]
    async fn an_expired_answer_is_asked_again() {
        let (bob, general) = ids();
        let authority = Arc::new(StaticMembership::new());
        authority.grant(&bob, &general);
        let c = cache(Arc::clone(&authority), Duration::ZERO);
        c.check(&bob, &general).await.unwrap();
        authority.revoke(&bob, &general);
        let (access, source) = c.check(&bob, &general).await.unwrap();
        assert!(matches!(access, Access::Refused(_)), "{access:?}");
        assert_eq!(source, Source::Asked);
    }

    #[tokio::test]
    async fn rooms_per_user_are_bounded() {
        let (bob, _) = ids();
        let authority = Arc::new(StaticMembership::new());
        let c = cache(Arc::clone(&authority), Duration::from_secs(60));
        for n in 0..5 {
            let room = RoomId::parse(&format!("channel:c{n}")).unwrap();
            c.check(&bob, &room).await.unwrap();
        }
        assert_eq!(c.users.get(&bob).unwrap().rooms.len(), 2);
    }

    /// Answers "allowed" once released.
    struct Slow(tokio::sync::Notify);

    #[async_trait::async_trait]
    impl Membership for Slow {
        async fn rooms_of(&self, _: &UserId) -> Result<Vec<RoomId>, MembershipError> {
            Ok(Vec::new())
        }
        async fn may_join(&self, _: &UserId, _: &RoomId) -> Result<Access, MembershipError> {
            self.0.notified().await;
            Ok(Access::Allowed)
        }
    }

    #[tokio::test]
    async fn an_answer_asked_across_a_change_is_not_kept() {
        let (bob, general) = ids();
        let slow = Arc::new(Slow(tokio::sync::Notify::new()));
        let limits = CacheLimits {
            ttl: Duration::from_secs(60),
            rooms_per_user: 2,
            max_users: 10,
        };
        let c = Arc::new(AccessCache::new(Arc::clone(&slow) as _, limits));
        let asking = tokio::spawn({
            let (c, bob, general) = (Arc::clone(&c), bob.clone(), general.clone());
            async move { c.check(&bob, &general).await }
        });
        while c.asked() == 0 {
            tokio::task::yield_now().await;
        }
        // The kick lands while the (stale, allowed) answer is on its way.
        c.room_change(&bob, &general, false);
        slow.0.notify_one();
        assert_eq!(asking.await.unwrap().unwrap().1, Source::Asked);
        let (access, source) = c.check(&bob, &general).await.unwrap();
        assert!(matches!(access, Access::Refused(_)), "{access:?}");
        assert_eq!(source, Source::Cached);
    }
}
