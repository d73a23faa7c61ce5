//! The DM aggregate (two-person and group DMs): its state, folded from its
//! events, and the rules of the DM commands.

use std::collections::BTreeSet;

use confab_events::membership::{LeftBecause, MembershipEvent};
use confab_events::{DmId, UserId, WorkspaceId};

use super::command::{Actor, CommandError};
use super::workspace::{Scope, require_member};

/// Most participants of a (group) DM, opener included.
const MAX_DM_PARTICIPANTS: usize = 32;

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
    /// The DM a creation event creates; `None` for other events.
    pub(super) fn created(event: &MembershipEvent) -> Option<Self> {
        let MembershipEvent::DmOpened {
            dm,
            workspace,
            participants,
            ..
        } = event
        else {
            return None;
        };
        Some(Dm {
            id: dm.clone(),
            workspace: workspace.clone(),
            participants: participants.iter().cloned().collect(),
            group: participants.len() >= 3,
        })
    }

    /// Applies one of the DM's events.
    pub(crate) fn apply(&mut self, event: &MembershipEvent) {
        match event {
            MembershipEvent::DmParticipantAdded { user, .. } => {
                self.participants.insert(user.clone());
            }
            MembershipEvent::DmParticipantRemoved { user, .. } => {
                self.participants.remove(user);
            }
            _ => {}
        }
    }

    /// The follow-up of a workspace removal: the event taking `user` out
    /// of the DM, or `None` when they are not in it (any more). A DM whose
    /// participant left the workspace must not stay a private line into it.
    pub(super) fn removed_from_workspace(&self, user: &UserId) -> Option<MembershipEvent> {
        self.participants
            .contains(user)
            .then(|| MembershipEvent::DmParticipantRemoved {
                dm: self.id.clone(),
                user: user.clone(),
                because: LeftBecause::RemovedFromWorkspace,
            })
    }
}

/// `open_dm`: the opener is a participant whether listed or not.
pub(super) fn open(
    scope: Scope<'_, Dm>,
    dm: &DmId,
    workspace: &WorkspaceId,
    participants: &[UserId],
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("open_dm")?;
    if scope.exists {
        return Err(CommandError::AlreadyExists(format!(
            "dm {dm} already exists"
        )));
    }
    let ws = scope.workspace(workspace)?;
    let mut everyone: BTreeSet<UserId> = participants.iter().cloned().collect();
    everyone.insert(me.clone());
    if everyone.len() < 2 {
        return Err(CommandError::Invalid {
            field: "participants",
            message: "a DM needs at least one participant besides the opener".into(),
        });
    }
    if everyone.len() > MAX_DM_PARTICIPANTS {
        return Err(too_many("participants"));
    }
    for p in &everyone {
        require_member(ws, p)?;
    }
    Ok(MembershipEvent::DmOpened {
        dm: dm.clone(),
        workspace: workspace.clone(),
        participants: everyone.into_iter().collect(),
        opened_by: me.clone(),
    })
}

/// `add_dm_participant`: group DMs only.
pub(super) fn add_participant(
    scope: Scope<'_, Dm>,
    dm: &DmId,
    user: &UserId,
    actor: &Actor,
) -> Result<MembershipEvent, CommandError> {
    let me = actor.require_user("add_dm_participant")?;
    let conv = match scope.target {
        Some(d) if &d.id == dm => d,
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
        return Err(too_many("user"));
    }
    require_member(scope.workspace(&conv.workspace)?, user)?;
    Ok(MembershipEvent::DmParticipantAdded {
        dm: dm.clone(),
        user: user.clone(),
        by: me.clone(),
    })
}

fn too_many(field: &'static str) -> CommandError {
    CommandError::Invalid {
        field,
        message: format!("a group DM has at most {MAX_DM_PARTICIPANTS} participants"),
    }
}
