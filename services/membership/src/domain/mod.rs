//! The membership domain: aggregate states folded from events, the
//! commands, and [`decide`], which checks a command against the current
//! state and answers the one event it produces or why it is refused.
//!
//! # Aggregates
//!
//! Each workspace, channel and DM is an aggregate with its own event
//! stream (its room name: `workspace:w`, `channel:42`, `dm:7`). A command
//! targets exactly one aggregate ([`Command::aggregate`]); checks that need
//! another aggregate (is the user a member of the channel's workspace?)
//! read that aggregate's state, given to [`decide`] in [`Facts`].
//!
//! # Who may do what
//!
//! | Command | Allowed for |
//! |---|---|
//! | `create_workspace` | a user for themselves (they become its owner); bootstrappers for any owner |
//! | `add_workspace_member`, `remove_workspace_member` | workspace owners and admins; bootstrappers; a member may remove themselves; never the owner |
//! | `create_channel` | workspace members (the creator becomes a member) |
//! | `join_channel` | workspace members, public channels only |
//! | `leave_channel` | channel members |
//! | `invite` | channel members (the service too), for workspace members |
//! | `kick` | workspace owners and admins (the service too) |
//! | `archive_channel` | workspace owners and admins, the channel's creator (the service too) |
//! | `open_dm` | workspace members, with workspace members; 2 participants = DM, 3+ = group DM |
//! | `add_dm_participant` | participants of a group DM (the service too) |
//!
//! *Bootstrappers* are the service credential (an app backend) only
//! (`Actor::may_bootstrap`): no user token is trusted across workspaces;
//! a user's rights are their role in each workspace, as the log records
//! it. The service credential also passes the channel and DM authority
//! checks (`Actor::is_service`): the app backend applies its own
//! permissions.
//! Nobody passes the state rules (archived channels take no members,
//! members must belong to the workspace, ...). Commands that record who did
//! something (`created_by`, `by`, the joining user) need a user even from
//! the service credential, which then names the user it acts for.
//!
//! # Layout
//!
//! The [`Command`] itself is part of the wire contract
//! (`confab_contracts::membership`); `command.rs` holds the rest of what the
//! APIs carry in ([`Actor`], [`CommandError`]); `workspace.rs`, `channel.rs`
//! and `dm.rs` each hold one aggregate's state and the rules of its
//! commands; this module folds events into an [`AggregateState`] and
//! dispatches a command to its rule ([`decide`]).

mod channel;
mod command;
mod dm;
mod workspace;

use confab_events::membership::MembershipEvent;
use confab_events::{UserId, WorkspaceId};

pub use channel::Channel;
pub use command::{Actor, CommandError};
pub use confab_contracts::membership::Command;
pub use dm::Dm;
use workspace::Scope;
pub use workspace::Workspace;

/// The state of one aggregate, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AggregateState {
    /// No events yet: the aggregate does not exist.
    #[default]
    Empty,
    /// A workspace.
    Workspace(Workspace),
    /// A channel.
    Channel(Channel),
    /// A DM or group DM.
    Dm(Dm),
}

impl AggregateState {
    /// Folds a sequence of events.
    pub(crate) fn fold<'a>(events: impl IntoIterator<Item = &'a MembershipEvent>) -> Self {
        let mut state = AggregateState::Empty;
        for e in events {
            state.apply(e);
        }
        state
    }

    /// Applies the next event of the aggregate. Creation events create the
    /// state; other events change it. Events that do not fit (another
    /// aggregate kind, a second creation) are ignored.
    pub fn apply(&mut self, event: &MembershipEvent) {
        match self {
            AggregateState::Empty => {
                if let Some(created) = Self::created(event) {
                    *self = created;
                }
            }
            AggregateState::Workspace(w) => w.apply(event),
            AggregateState::Channel(c) => c.apply(event),
            AggregateState::Dm(d) => d.apply(event),
        }
    }

    /// The aggregate a creation event creates; `None` for other events.
    fn created(event: &MembershipEvent) -> Option<Self> {
        Workspace::created(event)
            .map(AggregateState::Workspace)
            .or_else(|| Channel::created(event).map(AggregateState::Channel))
            .or_else(|| Dm::created(event).map(AggregateState::Dm))
    }

    /// The workspace this aggregate belongs to (itself for a workspace).
    pub fn workspace_id(&self) -> Option<&WorkspaceId> {
        match self {
            AggregateState::Empty => None,
            AggregateState::Workspace(w) => Some(&w.id),
            AggregateState::Channel(c) => Some(&c.workspace),
            AggregateState::Dm(d) => Some(&d.workspace),
        }
    }

    /// Whether the aggregate exists.
    pub fn exists(&self) -> bool {
        !matches!(self, AggregateState::Empty)
    }
}

/// What [`decide`] may look at: the command's aggregate and, for channel
/// and DM commands, the state of the workspace involved.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The state of [`Command::aggregate`].
    pub target: &'a AggregateState,
    /// The workspace of a channel or DM command (from
    /// [`Command::workspace_hint`] or the target's state), if it exists.
    /// Ignored for workspace commands.
    pub workspace: Option<&'a Workspace>,
}

impl<'a> Facts<'a> {
    /// The facts as the rules of aggregate kind `T` see them; `pick` finds
    /// a `T` in the target.
    fn scope<T>(&self, pick: fn(&'a AggregateState) -> Option<&'a T>) -> Scope<'a, T> {
        Scope {
            target: pick(self.target),
            exists: self.target.exists(),
            workspace: self.workspace,
        }
    }

    fn workspace_scope(&self) -> Scope<'a, Workspace> {
        self.scope(|s| match s {
            AggregateState::Workspace(w) => Some(w),
            _ => None,
        })
    }

    fn channel_scope(&self) -> Scope<'a, Channel> {
        self.scope(|s| match s {
            AggregateState::Channel(c) => Some(c),
            _ => None,
        })
    }

    fn dm_scope(&self) -> Scope<'a, Dm> {
        self.scope(|s| match s {
            AggregateState::Dm(d) => Some(d),
            _ => None,
        })
    }
}

/// Checks a command against the current state and answers the event it
/// produces, or why it is refused.
pub fn decide(
    facts: &Facts<'_>,
    cmd: &Command,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    use Command::*;
    let (on_ws, on_ch, on_dm) = (
        facts.workspace_scope(),
        facts.channel_scope(),
        facts.dm_scope(),
    );
    match cmd {
        CreateWorkspace { id, name, owner } => workspace::create(on_ws, id, name, owner, actor),
        AddWorkspaceMember {
            workspace,
            user,
            role,
        } => workspace::add_member(on_ws, workspace, user, *role, actor),
        RemoveWorkspaceMember { workspace, user } => {
            workspace::remove_member(on_ws, workspace, user, actor)
        }
        CreateChannel {
            channel,
            workspace,
            name,
            visibility,
        } => channel::create(on_ch, channel, workspace, name, *visibility, actor),
        JoinChannel { channel } => channel::join(on_ch, channel, actor),
        LeaveChannel { channel } => channel::leave(on_ch, channel, actor),
        Invite { channel, user } => channel::invite(on_ch, channel, user, actor),
        Kick { channel, user } => channel::kick(on_ch, channel, user, actor),
        ArchiveChannel { channel } => channel::archive(on_ch, channel, actor),
        OpenDm {
            dm: id,
            workspace,
            participants,
        } => dm::open(on_dm, id, workspace, participants, actor),
        AddDmParticipant { dm: id, user } => dm::add_participant(on_dm, id, user, actor),
    }
}

/// The follow-up of a workspace removal for one channel or DM: the event
/// taking `user` out of it, or `None` when they are not in it (any more).
pub(crate) fn decide_removed_from_workspace(
    channel: &AggregateState,
    user: &UserId,
) -> Option<MembershipEvent> {
    match channel {
        AggregateState::Channel(ch) => ch.removed_from_workspace(user),
        AggregateState::Dm(dm) => dm.removed_from_workspace(user),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use confab_events::ChannelId;
    use confab_events::membership::Role;

    use super::*;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn commands_are_tagged_json() {
        let c: Command = serde_json::from_str(r#"{"type":"join_channel","channel":"42"}"#).unwrap();
        assert_eq!(
            c,
            Command::JoinChannel {
                channel: ChannelId::parse("42").unwrap()
            }
        );
        assert_eq!(c.aggregate().as_str(), "channel:42");
        assert_eq!(c.name(), "join_channel");
        assert!(
            serde_json::from_str::<Command>(r#"{"type":"join_channel","channel":"4.2"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<Command>(r#"{"type":"join_channel","channel":"4","x":1}"#)
                .is_err()
        );
    }

    #[test]
    fn folding_creates_and_changes_states() {
        let w = WorkspaceId::parse("w").unwrap();
        let s = AggregateState::fold(&[
            MembershipEvent::WorkspaceCreated {
                workspace: w.clone(),
                name: "W".into(),
                owner: u("o"),
            },
            MembershipEvent::WorkspaceMemberAdded {
                workspace: w.clone(),
                user: u("a"),
                role: Role::Member,
            },
            MembershipEvent::WorkspaceMemberRemoved {
                workspace: w,
                user: u("a"),
            },
        ]);
        let AggregateState::Workspace(ws) = s else {
            panic!("not a workspace")
        };
        assert_eq!(ws.role_of(&u("o")), Some(Role::Owner));
        assert!(!ws.is_member(&u("a")));
    }
}
