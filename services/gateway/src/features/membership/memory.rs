//! The membership port's in-memory adapter: grants set by hand (tests,
//! static setups).

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use confab_events::{RoomId, RoomKind, UserId};

use super::{Access, Membership, MembershipError};

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
