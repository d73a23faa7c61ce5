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
//! *Bootstrappers* are the service credential (an app backend) and users
//! whose token carries `"admin": true` ([`Actor::may_bootstrap`]). The
//! service credential also passes the channel and DM authority checks
//! ([`Actor::is_service`]): the app backend applies its own permissions.
//! Nobody passes the state rules (archived channels take no members,
//! members must belong to the workspace, ...). Commands that record who did
//! something (`created_by`, `by`, the joining user) need a user even from
//! the service credential, which then names the user it acts for.

use std::collections::{BTreeSet, HashMap, HashSet};

use confab_events::membership::{JoinedVia, LeftBecause, MembershipEvent, Role, Visibility};
use confab_events::{ChannelId, DmId, RoomId, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

/// Longest workspace or channel name, in characters.
pub const MAX_NAME_CHARS: usize = 80;

/// Most participants of a (group) DM, opener included.
pub const MAX_DM_PARTICIPANTS: usize = 32;

/// Who issues a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An end user, authenticated by their token: every rule applies.
    User(UserId),
    /// A user whose token carries `"admin": true`: may bootstrap workspaces
    /// (see [`Actor::may_bootstrap`]); otherwise bound by the rules.
    Admin(UserId),
    /// The service credential (an app backend), acting on behalf of a
    /// user when it names one: may bootstrap workspaces and passes the
    /// authority checks (see [`Actor::is_service`]).
    Service {
        /// The user the backend acts for; required by commands that record
        /// a user (`join_channel`, `invite`, `create_channel`, ...).
        on_behalf_of: Option<UserId>,
    },
}

impl Actor {
    /// The user the command is issued by or for, if any.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Actor::User(u) | Actor::Admin(u) => Some(u),
            Actor::Service { on_behalf_of } => on_behalf_of.as_ref(),
        }
    }

    /// Whether the caller may bootstrap workspaces: create them for any
    /// owner, and add or remove members without being a workspace admin.
    /// The service credential and admin tokens may.
    pub fn may_bootstrap(&self) -> bool {
        matches!(self, Actor::Admin(_) | Actor::Service { .. })
    }

    /// Whether the caller is the service credential, which also passes the
    /// authority checks of channels and DMs (an app backend applies its own
    /// permissions): invite without being a member, kick or archive without
    /// being an admin, add DM participants without being one.
    pub fn is_service(&self) -> bool {
        matches!(self, Actor::Service { .. })
    }

    /// The user, or an error naming the command that needs one.
    fn require_user(&self, command: &'static str) -> Result<&UserId, CommandError> {
        self.user().ok_or_else(|| CommandError::Invalid {
            field: "actor",
            message: format!(
                "{command} needs the user it acts for: with the service token, set \"actor\" to a user id"
            ),
        })
    }
}

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

/// Why a command was refused. [`CommandError::code`] is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The workspace, channel or DM does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already, or the user is a member already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The actor may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The channel is archived.
    #[error("{0}")]
    Archived(String),
    /// A user who must be a member (of the workspace, channel or DM) is not.
    #[error("{0}")]
    NotAMember(String),
    /// The command itself is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl CommandError {
    /// A stable machine code: `not_found`, `already_exists`, `forbidden`,
    /// `archived`, `not_a_member` or `invalid`.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::NotFound(_) => "not_found",
            CommandError::AlreadyExists(_) => "already_exists",
            CommandError::Forbidden(_) => "forbidden",
            CommandError::Archived(_) => "archived",
            CommandError::NotAMember(_) => "not_a_member",
            CommandError::Invalid { .. } => "invalid",
        }
    }

    /// The input field at fault, for `invalid`.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            CommandError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A workspace: its members and their roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Its owner.
    pub owner: UserId,
    /// Members and roles, the owner included.
    pub members: HashMap<UserId, Role>,
}

impl Workspace {
    /// The user's role, if they are a member.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members.get(user).copied()
    }

    /// Whether the user is a member.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    /// Whether the user is an owner or admin.
    pub fn is_admin(&self, user: &UserId) -> bool {
        matches!(self.role_of(user), Some(Role::Owner | Role::Admin))
    }

    /// Applies one of the workspace's events.
    pub fn apply(&mut self, event: &MembershipEvent) {
        match event {
            MembershipEvent::WorkspaceMemberAdded { user, role, .. } => {
                self.members.insert(user.clone(), *role);
            }
            MembershipEvent::WorkspaceMemberRemoved { user, .. } => {
                self.members.remove(user);
            }
            _ => {}
        }
    }
}

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
    /// Applies one of the channel's events.
    pub fn apply(&mut self, event: &MembershipEvent) {
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
}

/// A DM or group DM: its workspace and participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dm {
    /// Its id.
    pub id: DmId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Participants.
    pub participants: BTreeSet<UserId>,
    /// Opened with three or more participants: a group DM, which can take
    /// new participants.
    pub group: bool,
}

impl Dm {
    /// Applies one of the DM's events.
    pub fn apply(&mut self, event: &MembershipEvent) {
        if let MembershipEvent::DmParticipantAdded { user, .. } = event {
            self.participants.insert(user.clone());
        }
    }
}

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
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a MembershipEvent>) -> Self {
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
        match (&mut *self, event) {
            (
                AggregateState::Empty,
                MembershipEvent::WorkspaceCreated {
                    workspace,
                    name,
                    owner,
                },
            ) => {
                *self = AggregateState::Workspace(Workspace {
                    id: workspace.clone(),
                    name: name.clone(),
                    owner: owner.clone(),
                    members: HashMap::from([(owner.clone(), Role::Owner)]),
                });
            }
            (
                AggregateState::Empty,
                MembershipEvent::ChannelCreated {
                    channel,
                    workspace,
                    name,
                    visibility,
                    created_by,
                },
            ) => {
                *self = AggregateState::Channel(Channel {
                    id: channel.clone(),
                    workspace: workspace.clone(),
                    name: name.clone(),
                    visibility: *visibility,
                    archived: false,
                    created_by: created_by.clone(),
                    members: HashSet::from([created_by.clone()]),
                });
            }
            (
                AggregateState::Empty,
                MembershipEvent::DmOpened {
                    dm,
                    workspace,
                    participants,
                    ..
                },
            ) => {
                *self = AggregateState::Dm(Dm {
                    id: dm.clone(),
                    workspace: workspace.clone(),
                    participants: participants.iter().cloned().collect(),
                    group: participants.len() >= 3,
                });
            }
            (AggregateState::Workspace(w), e) => w.apply(e),
            (AggregateState::Channel(c), e) => c.apply(e),
            (AggregateState::Dm(d), e) => d.apply(e),
            (AggregateState::Empty, _) => {}
        }
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

/// Checks a command against the current state and answers the event it
/// produces, or why it is refused.
pub fn decide(
    facts: &Facts<'_>,
    cmd: &Command,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    use Command::*;
    match cmd {
        CreateWorkspace { id, name, owner } => {
            if facts.target.exists() {
                return Err(CommandError::AlreadyExists(format!(
                    "workspace {id} already exists"
                )));
            }
            let name = check_name(name)?;
            if !actor.may_bootstrap() && actor.user() != Some(owner) {
                return Err(CommandError::Forbidden(
                    "users create workspaces they own: owner must be yourself".into(),
                ));
            }
            Ok(MembershipEvent::WorkspaceCreated {
                workspace: id.clone(),
                name,
                owner: owner.clone(),
            })
        }
        AddWorkspaceMember {
            workspace,
            user,
            role,
        } => {
            let ws = target_workspace(facts.target, workspace)?;
            if *role == Role::Owner {
                return Err(CommandError::Invalid {
                    field: "role",
                    message: "a workspace has one owner; add members as admin or member".into(),
                });
            }
            require_workspace_admin(ws, actor, "add members to")?;
            if ws.is_member(user) {
                return Err(CommandError::AlreadyExists(format!(
                    "{user} is already a member of workspace {workspace}"
                )));
            }
            Ok(MembershipEvent::WorkspaceMemberAdded {
                workspace: workspace.clone(),
                user: user.clone(),
                role: *role,
            })
        }
        RemoveWorkspaceMember { workspace, user } => {
            let ws = target_workspace(facts.target, workspace)?;
            if actor.user() != Some(user) {
                require_workspace_admin(ws, actor, "remove members from")?;
            }
            match ws.role_of(user) {
                None => Err(CommandError::NotAMember(format!(
                    "{user} is not a member of workspace {workspace}"
                ))),
                Some(Role::Owner) => Err(CommandError::Forbidden(format!(
                    "{user} owns workspace {workspace} and cannot be removed"
                ))),
                Some(_) => Ok(MembershipEvent::WorkspaceMemberRemoved {
                    workspace: workspace.clone(),
                    user: user.clone(),
                }),
            }
        }
        CreateChannel {
            channel,
            workspace,
            name,
            visibility,
        } => {
            let me = actor.require_user("create_channel")?;
            if facts.target.exists() {
                return Err(CommandError::AlreadyExists(format!(
                    "channel {channel} already exists"
                )));
            }
            let name = check_name(name)?;
            let ws = workspace_of(facts, workspace)?;
            require_workspace_member(ws, me)?;
            Ok(MembershipEvent::ChannelCreated {
                channel: channel.clone(),
                workspace: workspace.clone(),
                name,
                visibility: *visibility,
                created_by: me.clone(),
            })
        }
        JoinChannel { channel } => {
            let me = actor.require_user("join_channel")?;
            let ch = target_channel(facts.target, channel)?;
            if ch.members.contains(me) {
                return Err(CommandError::AlreadyExists(format!(
                    "{me} is already a member of channel {channel}"
                )));
            }
            require_not_archived(ch)?;
            require_workspace_member(workspace_of(facts, &ch.workspace)?, me)?;
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
        LeaveChannel { channel } => {
            let me = actor.require_user("leave_channel")?;
            let ch = target_channel(facts.target, channel)?;
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
        Invite { channel, user } => {
            let me = actor.require_user("invite")?;
            let ch = target_channel(facts.target, channel)?;
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
            require_workspace_member(workspace_of(facts, &ch.workspace)?, user)?;
            Ok(MembershipEvent::ChannelMemberJoined {
                channel: channel.clone(),
                user: user.clone(),
                via: JoinedVia::Invited { by: me.clone() },
            })
        }
        Kick { channel, user } => {
            let me = actor.require_user("kick")?;
            let ch = target_channel(facts.target, channel)?;
            if !actor.is_service() {
                let ws = workspace_of(facts, &ch.workspace)?;
                if !ws.is_admin(me) {
                    return Err(CommandError::Forbidden(format!(
                        "only owners and admins of workspace {} may kick; {me} is not one",
                        ch.workspace
                    )));
                }
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
        ArchiveChannel { channel } => {
            let me = actor.require_user("archive_channel")?;
            let ch = target_channel(facts.target, channel)?;
            if !actor.is_service() && &ch.created_by != me {
                let ws = workspace_of(facts, &ch.workspace)?;
                if !ws.is_admin(me) {
                    return Err(CommandError::Forbidden(format!(
                        "only the channel's creator and owners or admins of workspace {} may archive it",
                        ch.workspace
                    )));
                }
            }
            require_not_archived(ch)?;
            Ok(MembershipEvent::ChannelArchived {
                channel: channel.clone(),
                by: me.clone(),
            })
        }
        OpenDm {
            dm,
            workspace,
            participants,
        } => {
            let me = actor.require_user("open_dm")?;
            if facts.target.exists() {
                return Err(CommandError::AlreadyExists(format!(
                    "dm {dm} already exists"
                )));
            }
            let ws = workspace_of(facts, workspace)?;
            let mut everyone: BTreeSet<UserId> = participants.iter().cloned().collect();
            everyone.insert(me.clone());
            if everyone.len() < 2 {
                return Err(CommandError::Invalid {
                    field: "participants",
                    message: "a DM needs at least one participant besides the opener".into(),
                });
            }
            if everyone.len() > MAX_DM_PARTICIPANTS {
                return Err(CommandError::Invalid {
                    field: "participants",
                    message: format!("a group DM has at most {MAX_DM_PARTICIPANTS} participants"),
                });
            }
            for p in &everyone {
                require_workspace_member(ws, p)?;
            }
            Ok(MembershipEvent::DmOpened {
                dm: dm.clone(),
                workspace: workspace.clone(),
                participants: everyone.into_iter().collect(),
                opened_by: me.clone(),
            })
        }
        AddDmParticipant { dm, user } => {
            let me = actor.require_user("add_dm_participant")?;
            let conv = match facts.target {
                AggregateState::Dm(d) if &d.id == dm => d,
                _ => return Err(CommandError::NotFound(format!("no dm {dm}"))),
            };
            if !conv.group {
                return Err(CommandError::Invalid {
                    field: "dm",
                    message: format!(
                        "dm {dm} is a two-person DM; only group DMs take new participants (open a new group DM)"
                    ),
                });
            }
            if !actor.is_service() && !conv.participants.contains(me) {
                return Err(CommandError::Forbidden(format!(
                    "only participants of dm {dm} may add participants; {me} is not one"
                )));
            }
            if conv.participants.contains(user) {
                return Err(CommandError::AlreadyExists(format!(
                    "{user} is already a participant of dm {dm}"
                )));
            }
            if conv.participants.len() >= MAX_DM_PARTICIPANTS {
                return Err(CommandError::Invalid {
                    field: "user",
                    message: format!("a group DM has at most {MAX_DM_PARTICIPANTS} participants"),
                });
            }
            require_workspace_member(workspace_of(facts, &conv.workspace)?, user)?;
            Ok(MembershipEvent::DmParticipantAdded {
                dm: dm.clone(),
                user: user.clone(),
                by: me.clone(),
            })
        }
    }
}

/// The follow-up of a workspace removal for one channel: the event taking
/// `user` out of the channel, or `None` when they are not in it (any more).
pub fn decide_removed_from_workspace(
    channel: &AggregateState,
    user: &UserId,
) -> Option<MembershipEvent> {
    match channel {
        AggregateState::Channel(ch) if ch.members.contains(user) => {
            Some(MembershipEvent::ChannelMemberLeft {
                channel: ch.id.clone(),
                user: user.clone(),
                because: LeftBecause::RemovedFromWorkspace,
            })
        }
        _ => None,
    }
}

fn check_name(name: &str) -> Result<String, CommandError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(CommandError::Invalid {
            field: "name",
            message: "must not be empty".into(),
        });
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(CommandError::Invalid {
            field: "name",
            message: format!("must be at most {MAX_NAME_CHARS} characters"),
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(CommandError::Invalid {
            field: "name",
            message: "must not contain control characters".into(),
        });
    }
    Ok(trimmed.to_owned())
}

fn target_workspace<'a>(
    target: &'a AggregateState,
    id: &WorkspaceId,
) -> Result<&'a Workspace, CommandError> {
    match target {
        AggregateState::Workspace(w) if &w.id == id => Ok(w),
        _ => Err(CommandError::NotFound(format!("no workspace {id}"))),
    }
}

fn target_channel<'a>(
    target: &'a AggregateState,
    id: &ChannelId,
) -> Result<&'a Channel, CommandError> {
    match target {
        AggregateState::Channel(c) if &c.id == id => Ok(c),
        _ => Err(CommandError::NotFound(format!("no channel {id}"))),
    }
}

fn workspace_of<'a>(facts: &Facts<'a>, id: &WorkspaceId) -> Result<&'a Workspace, CommandError> {
    match facts.workspace {
        Some(w) if &w.id == id => Ok(w),
        _ => Err(CommandError::NotFound(format!("no workspace {id}"))),
    }
}

fn require_workspace_member(ws: &Workspace, user: &UserId) -> Result<(), CommandError> {
    if ws.is_member(user) {
        Ok(())
    } else {
        Err(CommandError::NotAMember(format!(
            "{user} is not a member of workspace {}",
            ws.id
        )))
    }
}

fn require_workspace_admin(ws: &Workspace, actor: &Actor, what: &str) -> Result<(), CommandError> {
    if actor.may_bootstrap() {
        return Ok(());
    }
    match actor.user() {
        Some(u) if ws.is_admin(u) => Ok(()),
        Some(u) => Err(CommandError::Forbidden(format!(
            "only owners and admins may {what} workspace {}; {u} is not one",
            ws.id
        ))),
        None => Err(CommandError::Forbidden(format!(
            "only owners and admins may {what} workspace {}",
            ws.id
        ))),
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

#[cfg(test)]
mod tests {
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
