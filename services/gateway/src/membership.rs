//! The membership port: which rooms a user belongs to.
//!
//! The membership service is the authority (next issue); the gateway only
//! asks. [`StaticMembership`] is the in-process implementation used by the
//! all-in-one run and tests.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use confab_events::{RoomId, RoomKind, UserId};

/// A membership lookup failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    /// The authority could not be asked.
    #[error("membership service unavailable: {0}")]
    Unavailable(String),
}

/// The answer to "may this user put a socket in this room?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Yes.
    Allowed,
    /// No; the reason is for the developer (`not a member of channel:42`).
    Refused(String),
}

impl Access {
    /// From the membership service's decision (`allowed`, optional reason).
    pub fn from_decision(
        allowed: bool,
        reason: Option<String>,
        user: &UserId,
        room: &RoomId,
    ) -> Self {
        if allowed {
            Access::Allowed
        } else {
            Access::Refused(reason.unwrap_or_else(|| format!("{user} is not a member of {room}")))
        }
    }
}

/// The membership port.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Every room (channel, DM, workspace) the user belongs to, not counting
    /// the personal `user:{id}` room.
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, MembershipError>;

    /// Whether the user may join the room now.
    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<Access, MembershipError>;
}

/// Memberships held in memory, set through [`StaticMembership::grant`].
#[derive(Default)]
pub struct StaticMembership {
    grants: RwLock<HashMap<UserId, BTreeSet<RoomId>>>,
}

impl StaticMembership {
    /// An empty membership table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `user` into `room`.
    pub fn grant(&self, user: &UserId, room: &RoomId) {
        let mut g = self.grants.write().unwrap_or_else(|p| p.into_inner());
        g.entry(user.clone()).or_default().insert(room.clone());
    }

    /// Takes `room` away from `user`.
    pub fn revoke(&self, user: &UserId, room: &RoomId) {
        let mut g = self.grants.write().unwrap_or_else(|p| p.into_inner());
        if let Some(rooms) = g.get_mut(user) {
            rooms.remove(room);
        }
    }
}

#[async_trait]
impl Membership for StaticMembership {
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, MembershipError> {
        let g = self.grants.read().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(user)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<Access, MembershipError> {
        let allowed = if room.kind() == RoomKind::User {
            room.id() == user.as_str()
        } else {
            let g = self.grants.read().unwrap_or_else(|p| p.into_inner());
            g.get(user).is_some_and(|r| r.contains(room))
        };
        Ok(Access::from_decision(allowed, None, user, room))
    }
}
