//! Membership: which rooms a user belongs to, and `room:join` /
//! `room:leave`.
//!
//! The membership service is the authority; the gateway only asks, through
//! the [`Membership`] port. [`StaticMembership`] (`memory.rs`) is the
//! in-process adapter used by tests and static setups, [`NatsMembership`]
//! (`nats.rs`) asks the membership service over NATS; the all-in-one
//! process plugs in its embedded service. [`AccessCache`] (`cache.rs`) is
//! the gateway's view of the authority for writes, kept current by
//! membership events.

mod cache;
mod memory;
mod nats;

use std::sync::Arc;

use async_trait::async_trait;
use confab_events::socket::{RoomAck, RoomRequest};
use confab_events::{RoomId, UserId};

pub(crate) use cache::{AccessCache, CacheLimits};
pub use memory::StaticMembership;
pub(crate) use nats::NatsMembership;

use crate::engine::SocketRef;
use crate::hub::Hub;
use crate::reply::{Code, Reply};

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
    /// Yes, to read only: the room is an archived channel, where sends,
    /// edits and deletes are refused. The text says so for the developer.
    ReadOnly(String),
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

    /// Marks an allowed room read-only when the authority says so (the
    /// membership service's `read_only` flag of an archived channel).
    pub fn read_only_if(self, read_only: bool, room: &RoomId) -> Self {
        match self {
            Access::Allowed if read_only => Access::ReadOnly(format!(
                "{room} is archived: it is read-only (no sends, edits or deletes)"
            )),
            other => other,
        }
    }

    /// Whether a socket may be in the room (to read at least).
    pub fn may_read(&self) -> bool {
        matches!(self, Access::Allowed | Access::ReadOnly(_))
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

fn parse_room(req: &RoomRequest) -> Result<RoomId, Reply> {
    RoomId::parse(req.room())
        .map_err(|e| Reply::error(Code::InvalidRoom, format!("invalid room name: {e}")))
}

/// The ack of a room joined or left.
pub(crate) fn room_ok(room: &RoomId) -> Reply {
    Reply::ok(&RoomAck::Ok {
        ok: true,
        room: room.to_string(),
    })
}

/// Handles `room:join`: asks the authority, then puts the socket in the
/// room. Returns the room joined (the caller acks it with [`room_ok`]).
///
/// A kick can land between the authority's answer and the socket's move:
/// its `room:left` then finds no socket to take out. So when a membership
/// change of the user came in meanwhile, the join asks again and undoes
/// itself if the user may no longer read the room.
pub(crate) async fn join(
    access: &AccessCache,
    hub: &Arc<Hub>,
    socket: &SocketRef,
    user: &UserId,
    req: &RoomRequest,
) -> Result<RoomId, Reply> {
    let room = parse_room(req)?;
    let before = access.generation(user);
    may_read(access.ask(user, &room).await)?;
    hub.join(&room, socket)
        .await
        .map_err(|e| Reply::error(Code::Unavailable, e.to_string()))?;
    if access.generation(user) != before
        && let Err(refusal) = may_read(access.recheck(user, &room).await)
    {
        hub.leave(&room, socket.conn());
        return Err(refusal);
    }
    Ok(room)
}

fn may_read(answer: Result<Access, MembershipError>) -> Result<(), Reply> {
    match answer {
        Ok(Access::Allowed | Access::ReadOnly(_)) => Ok(()),
        Ok(Access::Refused(reason)) => Err(Reply::error(Code::Forbidden, reason)),
        Err(e) => Err(Reply::error(Code::Unavailable, e.to_string())),
    }
}

/// Handles `room:leave`: takes the socket out of the room, never out of
/// its own user room. Returns the room left.
pub(crate) fn leave(
    hub: &Hub,
    socket: &SocketRef,
    user: &UserId,
    req: &RoomRequest,
) -> Result<RoomId, Reply> {
    let room = parse_room(req)?;
    if room == RoomId::user(user) {
        return Err(Reply::error(
            Code::Forbidden,
            "a socket always stays in its own user room",
        ));
    }
    hub.leave(&room, socket.conn());
    Ok(room)
}
