//! The channel aggregate: its state, folded from its events, and the rules
//! of the channel commands.

use std::collections::HashSet;

use confab_events::membership::{JoinedVia, LeftBecause, MembershipEvent, Visibility};
use confab_events::{ChannelId, UserId, WorkspaceId};

use super::command::{Actor, CommandError, check_name};
use super::workspace::{Scope, Workspace, require_member};

/// A channel: its workspace, visibility, archive flag and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Public or private.
    pub visibility: Visibility,
    /// Archived channels take no new members.
    pub archived: bool,
    /// Who created it.
    pub created_by: UserId,
    /// Current members.
    pub members: HashSet<UserId>,
}

impl Channel {
    /// The channel a creation event creates; `None` for other events.
    pub(super) fn created(event: &MembershipEvent) -> Option<Self> {
        let MembershipEvent::ChannelCreated {
            channel,
            workspace,
            name,
            visibility,
            created_by,
        } = event
        else {
            return None;
        };
        Some(Channel {
            id: channel.clone(),
            workspace: workspace.clone(),
            name: name.clone(),
            visibility: *visibility,
            archived: false,
            created_by: created_by.clone(),
            members: HashSet::from([created_by.clone()]),
        })
    }

    /// Applies one of the channel's events.
    pub(crate) fn apply(&mut self, event: &MembershipEvent) {
        match event {
            MembershipEvent::ChannelMemberJoined { user, .. } => {
                self.members.insert(user.clone());
            }
            MembershipEvent::ChannelMemberLeft { user, .. } => {
                self.members.remove(user);
            }
            MembershipEvent::ChannelArchived { .. } => self.archived = true,
            _ => {}
        }
    }

    /// The follow-up of a workspace removal: the event taking `user` out
    /// of the channel, or `None` when they are not in it (any more).
    pub(super) fn removed_from_workspace(&self, user: &UserId) -> Option<MembershipEvent> {
        self.members
            .contains(user)
            .then(|| MembershipEvent::ChannelMemberLeft {
                channel: self.id.clone(),
                user: user.clone(),
                because: LeftBecause::RemovedFromWorkspace,
            })
    }

    /// The channel's workspace, from the scope.
    fn workspace_in<'a>(&self, scope: Scope<'a, Channel>) -> Result<&'a Workspace, CommandError> {
        scope.workspace(&self.workspace)
    }
}

/// `create_channel`.
pub(super) fn create(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    workspace: &WorkspaceId,
    name: &str,
    visibility: Visibility,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("create_channel")?;
    if scope.exists {
        return Err(CommandError::AlreadyExists(format!(
            "channel {channel} already exists"
        )));
    }
    let name = check_name(name)?;
    require_member(scope.workspace(workspace)?, me)?;
    Ok(MembershipEvent::ChannelCreated {
        channel: channel.clone(),
        workspace: workspace.clone(),
        name,
        visibility,
        created_by: me.clone(),
    })
}

/// `join_channel`.
pub(super) fn join(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("join_channel")?;
    let ch = target(scope, channel)?;
    if ch.members.contains(me) {
        return Err(CommandError::AlreadyExists(format!(
            "{me} is already a member of channel {channel}"
        )));
    }
    require_not_archived(ch)?;
    require_member(ch.workspace_in(scope)?, me)?;
    if ch.visibility == Visibility::Private {
        return Err(CommandError::Forbidden(format!(
            "channel {channel} is private: a member must invite {me}"
        )));
    }
    Ok(MembershipEvent::ChannelMemberJoined {
        channel: channel.clone(),
        user: me.clone(),
        via: JoinedVia::Joined,
    })
}

/// `leave_channel`.
pub(super) fn leave(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("leave_channel")?;
    let ch = target(scope, channel)?;
    if !ch.members.contains(me) {
        return Err(CommandError::NotAMember(format!(
            "{me} is not a member of channel {channel}"
        )));
    }
    Ok(MembershipEvent::ChannelMemberLeft {
        channel: channel.clone(),
        user: me.clone(),
        because: LeftBecause::Left,
    })
}

/// `invite`.
pub(super) fn invite(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    user: &UserId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("invite")?;
    let ch = target(scope, channel)?;
    if !actor.is_service() && !ch.members.contains(me) {
        return Err(CommandError::Forbidden(format!(
            "only members of channel {channel} may invite; {me} is not one"
        )));
    }
    if ch.members.contains(user) {
        return Err(CommandError::AlreadyExists(format!(
            "{user} is already a member of channel {channel}"
        )));
    }
    require_not_archived(ch)?;
    require_member(ch.workspace_in(scope)?, user)?;
    Ok(MembershipEvent::ChannelMemberJoined {
        channel: channel.clone(),
        user: user.clone(),
        via: JoinedVia::Invited { by: me.clone() },
    })
}

/// `kick`.
pub(super) fn kick(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    user: &UserId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("kick")?;
    let ch = target(scope, channel)?;
    if !actor.is_service() && !ch.workspace_in(scope)?.is_admin(me) {
        return Err(CommandError::Forbidden(format!(
            "only owners and admins of workspace {} may kick; {me} is not one",
            ch.workspace
        )));
    }
    if me == user {
        return Err(CommandError::Invalid {
            field: "user",
            message: "you cannot kick yourself; leave the channel instead".into(),
        });
    }
    if !ch.members.contains(user) {
        return Err(CommandError::NotAMember(format!(
            "{user} is not a member of channel {channel}"
        )));
    }
    Ok(MembershipEvent::ChannelMemberLeft {
        channel: channel.clone(),
        user: user.clone(),
        because: LeftBecause::Kicked { by: me.clone() },
    })
}

/// `archive_channel`.
pub(super) fn archive(
    scope: Scope<'_, Channel>,
    channel: &ChannelId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("archive_channel")?;
    let ch = target(scope, channel)?;
    if !actor.is_service() && &ch.created_by != me && !ch.workspace_in(scope)?.is_admin(me) {
        return Err(CommandError::Forbidden(format!(
            "only the channel's creator and owners or admins of workspace {} may archive it",
            ch.workspace
        )));
    }
    require_not_archived(ch)?;
    Ok(MembershipEvent::ChannelArchived {
        channel: channel.clone(),
        by: me.clone(),
    })
}

/// The command's target, which must be channel `id`.
fn target<'a>(scope: Scope<'a, Channel>, id: &ChannelId) -> Result<&'a Channel, CommandError> {
    match scope.target {
        Some(c) if &c.id == id => Ok(c),
        _ => Err(CommandError::NotFound(format!("no channel {id}"))),
    }
}

fn require_not_archived(ch: &Channel) -> Result<(), CommandError> {
    if ch.archived {
        Err(CommandError::Archived(format!(
            "channel {} is archived and takes no new members",
            ch.id
        )))
    } else {
        Ok(())
    }
}
