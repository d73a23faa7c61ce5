//! The read-model port: queries answered from the SQL projections.

use std::time::Duration;

use async_trait::async_trait;
use confab_events::{RoomId, UserId};

/// A query failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// The database cannot be reached or failed.
    #[error("read model unavailable: {0}")]
    Unavailable(String),
    /// The projections did not reach the awaited sequence in time.
    #[error("read model is behind: at {at}, waited for {wanted}")]
    Behind {
        /// Last applied sequence.
        at: u64,
        /// Awaited sequence.
        wanted: u64,
    },
}

pub use confab_contracts::membership::JoinDecision;

/// What a user created so far ([`ReadModel::created_by`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Created {
    /// Workspaces they own.
    pub workspaces: u64,
    /// Channels they created.
    pub channels: u64,
}

/// Queries over the membership projections.
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Every room (workspaces, channels, DMs) the user belongs to, not
    /// counting `user:{id}`.
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, QueryError>;
    /// The members of a room (workspace members, channel members, DM
    /// participants), sorted.
    async fn members_of(&self, room: &RoomId) -> Result<Vec<UserId>, QueryError>;
    /// Whether the user is a member of the room now.
    async fn is_member(&self, user: &UserId, room: &RoomId) -> Result<bool, QueryError>;
    /// Whether the user may put a socket in the room (`room:join`): their
    /// own `user:{id}` room, or a room they are a member of. Becoming a
    /// member is a command (`join`, `invite`, ...), not a socket event.
    /// When refused, `reason` says why (`no such room`, `not a member`).
    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<JoinDecision, QueryError>;
    /// The workspaces of each of `users`, as (user, workspace) pairs, in
    /// as few queries as the store allows (the presence publisher's batch).
    async fn workspaces_of(&self, users: &[UserId]) -> Result<Vec<(UserId, RoomId)>, QueryError>;
    /// How many workspaces `user` owns and how many channels they created
    /// (archived ones included): what the creation quotas count.
    async fn created_by(&self, user: &UserId) -> Result<Created, QueryError>;
    /// The last event sequence the projections applied.
    async fn checkpoint(&self) -> Result<u64, QueryError>;
    /// Waits until the projections applied `seq` (read-your-writes after a
    /// command).
    async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), QueryError>;
}
