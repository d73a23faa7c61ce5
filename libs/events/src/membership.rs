//! The membership domain: its versioned events (the append-only log in the
//! `MEMBERSHIP` stream) and the request/response types of its APIs.
//!
//! Events are stored as [`EventEnvelope`] JSON: `{"v":1,"type":"...",
//! "data":{...},"at":..., "actor":...}`. A stored event is never changed;
//! a new meaning gets a new `type` or a new schema version `v`, and readers
//! keep understanding every version they ever wrote.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, DmId, RoomId, UserId, WorkspaceId};

/// The schema version written by this code.
pub const SCHEMA_VERSION: u16 = 1;

/// A workspace member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the workspace; can do everything.
    Owner,
    /// Can manage channels and members.
    Admin,
    /// A regular member.
    Member,
}

/// Who can see and join a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Any workspace member may join.
    Public,
    /// Members join only by invitation of a member.
    Private,
}

/// How a user came into a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JoinedVia {
    /// Created the channel.
    Created,
    /// Joined a public channel by themselves.
    Joined,
    /// Invited by a member.
    Invited {
        /// The inviting member.
        by: UserId,
    },
}

/// Why a user left a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeftBecause {
    /// Left by themselves.
    Left,
    /// Removed by an admin.
    Kicked {
        /// Who removed them.
        by: UserId,
    },
    /// Removed from the workspace.
    RemovedFromWorkspace,
}

/// A membership domain event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum MembershipEvent {
    /// A workspace was created; `owner` is its first member.
    #[serde(rename = "workspace.created")]
    WorkspaceCreated {
        /// Workspace id.
        workspace: WorkspaceId,
        /// Display name.
        name: String,
        /// Its owner.
        owner: UserId,
    },
    /// A user became a workspace member.
    #[serde(rename = "workspace.member_added")]
    WorkspaceMemberAdded {
        /// Workspace id.
        workspace: WorkspaceId,
        /// The new member.
        user: UserId,
        /// Their role.
        role: Role,
    },
    /// A user stopped being a workspace member.
    #[serde(rename = "workspace.member_removed")]
    WorkspaceMemberRemoved {
        /// Workspace id.
        workspace: WorkspaceId,
        /// The former member.
        user: UserId,
    },
    /// A channel was created in a workspace.
    #[serde(rename = "channel.created")]
    ChannelCreated {
        /// Channel id.
        channel: ChannelId,
        /// Its workspace.
        workspace: WorkspaceId,
        /// Display name.
        name: String,
        /// Public or private.
        visibility: Visibility,
        /// Creator (becomes a member).
        created_by: UserId,
    },
    /// A user became a channel member.
    #[serde(rename = "channel.member_joined")]
    ChannelMemberJoined {
        /// Channel id.
        channel: ChannelId,
        /// The new member.
        user: UserId,
        /// How.
        via: JoinedVia,
    },
    /// A user stopped being a channel member.
    #[serde(rename = "channel.member_left")]
    ChannelMemberLeft {
        /// Channel id.
        channel: ChannelId,
        /// The former member.
        user: UserId,
        /// Why.
        because: LeftBecause,
    },
    /// A channel was archived: read-only, no new members.
    #[serde(rename = "channel.archived")]
    ChannelArchived {
        /// Channel id.
        channel: ChannelId,
        /// Who archived it.
        by: UserId,
    },
    /// A DM (two participants) or group DM (three or more) was opened.
    #[serde(rename = "dm.opened")]
    DmOpened {
        /// Conversation id.
        dm: DmId,
        /// Its workspace.
        workspace: WorkspaceId,
        /// Everyone in it, opener included.
        participants: Vec<UserId>,
        /// Who opened it.
        opened_by: UserId,
    },
    /// A participant was added to a group DM.
    #[serde(rename = "dm.participant_added")]
    DmParticipantAdded {
        /// Conversation id.
        dm: DmId,
        /// The new participant.
        user: UserId,
        /// Who added them.
        by: UserId,
    },
    /// A participant stopped being part of a DM or group DM (today only
    /// because they were removed from the DM's workspace).
    #[serde(rename = "dm.participant_removed")]
    DmParticipantRemoved {
        /// Conversation id.
        dm: DmId,
        /// The former participant.
        user: UserId,
        /// Why.
        because: LeftBecause,
    },
}

impl MembershipEvent {
    /// The aggregate the event belongs to, as a subject suffix:
    /// `workspace.{id}`, `channel.{id}` or `dm.{id}`. Events of one
    /// aggregate share the subject `membership.events.{suffix}`, which is
    /// what optimistic concurrency is checked on.
    pub fn aggregate(&self) -> RoomId {
        use MembershipEvent::*;
        match self {
            WorkspaceCreated { workspace, .. }
            | WorkspaceMemberAdded { workspace, .. }
            | WorkspaceMemberRemoved { workspace, .. } => RoomId::workspace(workspace),
            ChannelCreated { channel, .. }
            | ChannelMemberJoined { channel, .. }
            | ChannelMemberLeft { channel, .. }
            | ChannelArchived { channel, .. } => RoomId::channel(channel),
            DmOpened { dm, .. }
            | DmParticipantAdded { dm, .. }
            | DmParticipantRemoved { dm, .. } => RoomId::dm(dm),
        }
    }

    /// The stable type name, e.g. `channel.member_joined`.
    pub fn type_name(&self) -> &'static str {
        use MembershipEvent::*;
        match self {
            WorkspaceCreated { .. } => "workspace.created",
            WorkspaceMemberAdded { .. } => "workspace.member_added",
            WorkspaceMemberRemoved { .. } => "workspace.member_removed",
            ChannelCreated { .. } => "channel.created",
            ChannelMemberJoined { .. } => "channel.member_joined",
            ChannelMemberLeft { .. } => "channel.member_left",
            ChannelArchived { .. } => "channel.archived",
            DmOpened { .. } => "dm.opened",
            DmParticipantAdded { .. } => "dm.participant_added",
            DmParticipantRemoved { .. } => "dm.participant_removed",
        }
    }
}

/// A stored event: schema version, metadata and the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Schema version ([`SCHEMA_VERSION`] when written by this code).
    pub v: u16,
    /// Unique event id (also the JetStream `Nats-Msg-Id`, for dedup).
    pub id: String,
    /// When the command was accepted, Unix milliseconds.
    pub at: u64,
    /// Who issued the command (`None` for service credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// The event.
    #[serde(flatten)]
    pub event: MembershipEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_wire_format_is_stable() {
        let e = EventEnvelope {
            v: SCHEMA_VERSION,
            id: "e1".into(),
            at: 1,
            actor: Some(UserId::parse("alice").unwrap()),
            event: MembershipEvent::ChannelMemberJoined {
                channel: ChannelId::parse("42").unwrap(),
                user: UserId::parse("bob").unwrap(),
                via: JoinedVia::Invited {
                    by: UserId::parse("alice").unwrap(),
                },
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"id":"e1","at":1,"actor":"alice","type":"channel.member_joined","data":{"channel":"42","user":"bob","via":{"kind":"invited","by":"alice"}}}"#
        );
        assert_eq!(serde_json::from_str::<EventEnvelope>(&json).unwrap(), e);
        assert_eq!(e.event.aggregate().as_str(), "channel:42");
        assert_eq!(e.event.type_name(), "channel.member_joined");
    }

    #[test]
    fn ids_inside_events_are_validated() {
        let bad = r#"{"v":1,"id":"e","at":1,"type":"channel.archived","data":{"channel":"4.2","by":"a"}}"#;
        assert!(serde_json::from_str::<EventEnvelope>(bad).is_err());
    }
}
