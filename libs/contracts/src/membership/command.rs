//! [`Command`]: the body of `execute` (and of every HTTP command
//! endpoint), the membership commands as the APIs carry them. The rules
//! that decide them live with the domain in `confab-membership`.

use confab_events::membership::{Role, Visibility};
use confab_events::{ChannelId, DmId, RoomId, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

/// A membership command, as carried by the APIs: a JSON object tagged by
/// `type`, e.g. `{"type": "join_channel", "channel": "42"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Create a workspace; `owner` becomes its first member.
    CreateWorkspace {
        /// The new workspace's id.
        id: WorkspaceId,
        /// Display name.
        name: String,
        /// Its owner.
        owner: UserId,
    },
    /// Add a user to a workspace.
    AddWorkspaceMember {
        /// The workspace.
        workspace: WorkspaceId,
        /// The new member.
        user: UserId,
        /// Their role (`admin` or `member`; a workspace has one owner).
        role: Role,
    },
    /// Remove a user from a workspace (and from its channels).
    RemoveWorkspaceMember {
        /// The workspace.
        workspace: WorkspaceId,
        /// The member to remove.
        user: UserId,
    },
    /// Create a channel in a workspace; the actor becomes a member.
    CreateChannel {
        /// The new channel's id.
        channel: ChannelId,
        /// Its workspace.
        workspace: WorkspaceId,
        /// Display name.
        name: String,
        /// Public or private.
        visibility: Visibility,
    },
    /// The actor joins a public channel.
    JoinChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// The actor leaves a channel.
    LeaveChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// The actor, a channel member, adds another workspace member.
    Invite {
        /// The channel.
        channel: ChannelId,
        /// The invited user.
        user: UserId,
    },
    /// A workspace admin removes a member from a channel.
    Kick {
        /// The channel.
        channel: ChannelId,
        /// The member to remove.
        user: UserId,
    },
    /// Archive a channel: read-only, no new members.
    ArchiveChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// Open a DM (two participants) or group DM (three or more). The actor
    /// is a participant whether listed or not.
    OpenDm {
        /// The new conversation's id.
        dm: DmId,
        /// Its workspace.
        workspace: WorkspaceId,
        /// The participants.
        participants: Vec<UserId>,
    },
    /// Add a participant to a group DM.
    AddDmParticipant {
        /// The conversation.
        dm: DmId,
        /// The new participant.
        user: UserId,
    },
}

impl Command {
    /// The aggregate the command changes (its event stream).
    pub fn aggregate(&self) -> RoomId {
        use Command::*;
        match self {
            CreateWorkspace { id, .. } => RoomId::workspace(id),
            AddWorkspaceMember { workspace, .. } | RemoveWorkspaceMember { workspace, .. } => {
                RoomId::workspace(workspace)
            }
            CreateChannel { channel, .. }
            | JoinChannel { channel }
            | LeaveChannel { channel }
            | Invite { channel, .. }
            | Kick { channel, .. }
            | ArchiveChannel { channel } => RoomId::channel(channel),
            OpenDm { dm, .. } | AddDmParticipant { dm, .. } => RoomId::dm(dm),
        }
    }

    /// The workspace named by the command itself, when it targets another
    /// aggregate (channel or DM creation). Other channel and DM commands
    /// find their workspace in the target's state.
    pub fn workspace_hint(&self) -> Option<&WorkspaceId> {
        match self {
            Command::CreateChannel { workspace, .. } | Command::OpenDm { workspace, .. } => {
                Some(workspace)
            }
            _ => None,
        }
    }

    /// The command's `type` tag, e.g. `join_channel`.
    pub fn name(&self) -> &'static str {
        use Command::*;
        match self {
            CreateWorkspace { .. } => "create_workspace",
            AddWorkspaceMember { .. } => "add_workspace_member",
            RemoveWorkspaceMember { .. } => "remove_workspace_member",
            CreateChannel { .. } => "create_channel",
            JoinChannel { .. } => "join_channel",
            LeaveChannel { .. } => "leave_channel",
            Invite { .. } => "invite",
            Kick { .. } => "kick",
            ArchiveChannel { .. } => "archive_channel",
            OpenDm { .. } => "open_dm",
            AddDmParticipant { .. } => "add_dm_participant",
        }
    }
}
