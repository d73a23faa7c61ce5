//! The membership API: `confab.membership.v1.*` on the NATS micro-service
//! [`SERVICE_NAME`].
//!
//! | Subject | Endpoint | Request | Response |
//! |---|---|---|---|
//! | `confab.membership.v1.rooms_of` | [`RoomsOf`] | [`RoomsOfRequest`] | [`RoomsOfResponse`] |
//! | `confab.membership.v1.may_join` | [`MayJoin`] | [`MayJoinRequest`] | [`JoinDecision`] |
//! | `confab.membership.v1.members_of` | [`MembersOf`] | [`MembersOfRequest`] | [`MembersOfResponse`] |
//! | `confab.membership.v1.is_member` | [`IsMember`] | [`IsMemberRequest`] | [`IsMemberResponse`] |
//! | `confab.membership.v1.execute` | [`Execute`] | [`ExecuteRequest`] | [`ExecuteResponse`] |
//! | `confab.membership.v1.emit` | [`Emit`] | [`EmitRequest`] | [`EmitResponse`] |
//!
//! `execute` carries a [`Command`]; the rules deciding it live with the
//! domain in `confab-membership`.

use confab_events::membership::EventEnvelope;
use confab_events::{RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

mod command;

pub use command::Command;

/// The NATS micro-service name of the membership service (`$SRV.PING`,
/// `$SRV.INFO`, `$SRV.STATS` answer under it).
pub const SERVICE_NAME: &str = "confab-membership";

/// The subject prefix of every membership endpoint.
pub const SUBJECT_PREFIX: &str = "confab.membership.v1";

/// The endpoint subjects.
pub mod subjects {
    /// Rooms of a user.
    pub const ROOMS_OF: &str = "confab.membership.v1.rooms_of";
    /// May a user put a socket in a room?
    pub const MAY_JOIN: &str = "confab.membership.v1.may_join";
    /// Members of a room.
    pub const MEMBERS_OF: &str = "confab.membership.v1.members_of";
    /// Is a user a member of a room?
    pub const IS_MEMBER: &str = "confab.membership.v1.is_member";
    /// Run a command.
    pub const EXECUTE: &str = "confab.membership.v1.execute";
    /// Publish an app event to a room.
    pub const EMIT: &str = "confab.membership.v1.emit";
}

/// `rooms_of`: the rooms of a user.
#[derive(Debug, Clone, Copy)]
pub struct RoomsOf;

impl Endpoint for RoomsOf {
    const SUBJECT: &'static str = subjects::ROOMS_OF;
    type Request = RoomsOfRequest;
    type Response = RoomsOfResponse;
}

/// `rooms_of` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsOfRequest {
    /// The user.
    pub user: UserId,
}

/// `rooms_of` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsOfResponse {
    /// The user.
    pub user: UserId,
    /// Workspaces, channels and DMs the user belongs to (not `user:{id}`),
    /// sorted.
    pub rooms: Vec<RoomId>,
}

/// `may_join`: may a user put a socket in a room?
#[derive(Debug, Clone, Copy)]
pub struct MayJoin;

impl Endpoint for MayJoin {
    const SUBJECT: &'static str = subjects::MAY_JOIN;
    type Request = MayJoinRequest;
    type Response = JoinDecision;
}

/// `may_join` request. The response is a [`JoinDecision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MayJoinRequest {
    /// The user.
    pub user: UserId,
    /// The room a socket of theirs wants to join.
    pub room: RoomId,
}

/// Whether a user may join a room, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinDecision {
    /// Allowed?
    pub allowed: bool,
    /// When refused: why, for a developer (`not a member of the private channel`, `channel archived`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When allowed: the room is read-only (an archived channel). Members
    /// may still read it; sends, edits and deletes are refused. Absent on
    /// the wire when false, so older peers see the same bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// `members_of`: the members of a room.
#[derive(Debug, Clone, Copy)]
pub struct MembersOf;

impl Endpoint for MembersOf {
    const SUBJECT: &'static str = subjects::MEMBERS_OF;
    type Request = MembersOfRequest;
    type Response = MembersOfResponse;
}

/// `members_of` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersOfRequest {
    /// The room.
    pub room: RoomId,
}

/// `members_of` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersOfResponse {
    /// The room.
    pub room: RoomId,
    /// Its members, sorted.
    pub members: Vec<UserId>,
}

/// `is_member`: is a user a member of a room?
#[derive(Debug, Clone, Copy)]
pub struct IsMember;

impl Endpoint for IsMember {
    const SUBJECT: &'static str = subjects::IS_MEMBER;
    type Request = IsMemberRequest;
    type Response = IsMemberResponse;
}

/// `is_member` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsMemberRequest {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
}

/// `is_member` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsMemberResponse {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
    /// Whether the user is a member now.
    pub member: bool,
}

/// `execute`: run a command.
#[derive(Debug, Clone, Copy)]
pub struct Execute;

impl Endpoint for Execute {
    const SUBJECT: &'static str = subjects::EXECUTE;
    type Request = ExecuteRequest;
    type Response = ExecuteResponse;
}

/// `execute` request: a command, and the user the service acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The user the caller acts for; required by commands that record a
    /// user (everything but workspace creation and membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// The command, tagged by `type`, e.g.
    /// `{"type":"join_channel","channel":"42"}`.
    pub command: Command,
}

/// A command's answer (`execute`, and every HTTP command endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// The event's sequence in the membership log.
    pub seq: u64,
    /// The stored event.
    pub event: EventEnvelope,
    /// Whether queries already reflect it (read-your-writes); `false` when
    /// the projections were slow to catch up.
    pub projected: bool,
}

/// `emit`: publish an app event to a room.
#[derive(Debug, Clone, Copy)]
pub struct Emit;

impl Endpoint for Emit {
    const SUBJECT: &'static str = subjects::EMIT;
    type Request = EmitRequest;
    type Response = EmitResponse;
}

/// `emit` request: an app event for a room, published durably on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    /// The room, e.g. `channel:42`.
    pub room: RoomId,
    /// Socket.IO event name, e.g. `message:new` (ASCII letters, digits and
    /// `: _ - .`, at most 64; the membership notifications are reserved).
    pub event: String,
    /// The event's single argument.
    #[serde(default)]
    pub data: serde_json::Value,
    /// An idempotency id: a retry with the same id within the bus's
    /// duplicate window is not delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `emit` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitResponse {
    /// The message's sequence in the room log, when the bus keeps one.
    pub seq: Option<u64>,
    /// Whether it was a duplicate of an earlier emit with the same id.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_share_the_prefix() {
        for s in [
            subjects::ROOMS_OF,
            subjects::MAY_JOIN,
            subjects::MEMBERS_OF,
            subjects::IS_MEMBER,
            subjects::EXECUTE,
            subjects::EMIT,
        ] {
            assert!(s.starts_with(&format!("{SUBJECT_PREFIX}.")), "{s}");
        }
    }
}
