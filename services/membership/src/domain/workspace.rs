//! The workspace aggregate: its state, folded from its events, and the
//! rules of the workspace commands. Also the workspace checks that channel
//! and DM commands share ([`Scope::workspace`], [`require_member`]).

use std::collections::HashMap;

use confab_events::membership::{MembershipEvent, Role};
use confab_events::{UserId, WorkspaceId};

use super::command::{Actor, CommandError, check_name};

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
    pub(crate) fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members.get(user).copied()
    }

    /// Whether the user is a member.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    /// Whether the user is an owner or admin.
    pub(crate) fn is_admin(&self, user: &UserId) -> bool {
        matches!(self.role_of(user), Some(Role::Owner | Role::Admin))
    }

    /// The workspace a creation event creates; `None` for other events.
    pub(super) fn created(event: &MembershipEvent) -> Option<Self> {
        let MembershipEvent::WorkspaceCreated {
            workspace,
            name,
            owner,
        } = event
        else {
            return None;
        };
        Some(Workspace {
            id: workspace.clone(),
            name: name.clone(),
            owner: owner.clone(),
            members: HashMap::from([(owner.clone(), Role::Owner)]),
        })
    }

    /// Applies one of the workspace's events.
    pub(crate) fn apply(&mut self, event: &MembershipEvent) {
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

/// What the rules of one aggregate kind `T` look at, cut from
/// [`Facts`](super::Facts): the target when it is a `T`, whether the
/// target exists at all (of any kind), and the workspace involved.
#[derive(Debug)]
pub(super) struct Scope<'a, T> {
    /// The target, when it is a `T`.
    pub(super) target: Option<&'a T>,
    /// Whether the target aggregate exists.
    pub(super) exists: bool,
    /// The workspace of a channel or DM command, if it exists.
    pub(super) workspace: Option<&'a Workspace>,
}

// Derived `Clone`/`Copy` would require `T: Copy`; the fields are references.
impl<T> Clone for Scope<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Scope<'_, T> {}

impl<'a, T> Scope<'a, T> {
    /// The workspace involved, which must be `id`.
    pub(super) fn workspace(&self, id: &WorkspaceId) -> Result<&'a Workspace, CommandError> {
        match self.workspace {
            Some(w) if &w.id == id => Ok(w),
            _ => Err(CommandError::NotFound(format!("no workspace {id}"))),
        }
    }
}

/// Refuses a user who is not a member of `ws`.
pub(super) fn require_member(ws: &Workspace, user: &UserId) -> Result<(), CommandError> {
    if ws.is_member(user) {
        Ok(())
    } else {
        Err(CommandError::NotAMember(format!(
            "{user} is not a member of workspace {}",
            ws.id
        )))
    }
}

/// `create_workspace`.
pub(super) fn create(
    scope: Scope<'_, Workspace>,
    id: &WorkspaceId,
    name: &str,
    owner: &UserId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    if scope.exists {
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

/// `add_workspace_member`.
pub(super) fn add_member(
    scope: Scope<'_, Workspace>,
    workspace: &WorkspaceId,
    user: &UserId,
    role: Role,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let ws = target(scope, workspace)?;
    if role == Role::Owner {
        return Err(CommandError::Invalid {
            field: "role",
            message: "a workspace has one owner; add members as admin or member".into(),
        });
    }
    require_admin(ws, actor, "add members to")?;
    if ws.is_member(user) {
        return Err(CommandError::AlreadyExists(format!(
            "{user} is already a member of workspace {workspace}"
        )));
    }
    Ok(MembershipEvent::WorkspaceMemberAdded {
        workspace: workspace.clone(),
        user: user.clone(),
        role,
    })
}

/// `remove_workspace_member`.
pub(super) fn remove_member(
    scope: Scope<'_, Workspace>,
    workspace: &WorkspaceId,
    user: &UserId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let ws = target(scope, workspace)?;
    if actor.user() != Some(user) {
        require_admin(ws, actor, "remove members from")?;
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

/// The command's target, which must be workspace `id`.
fn target<'a>(
    scope: Scope<'a, Workspace>,
    id: &WorkspaceId,
) -> Result<&'a Workspace, CommandError> {
    match scope.target {
        Some(w) if &w.id == id => Ok(w),
        _ => Err(CommandError::NotFound(format!("no workspace {id}"))),
    }
}

/// Refuses an actor who may not manage `ws`'s members (`what`, e.g. "add
/// members to"): owners, admins and bootstrappers may.
fn require_admin(ws: &Workspace, actor: &Actor, what: &str) -> Result<(), CommandError> {
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
