//! What the APIs carry into the domain besides the
//! [`Command`](confab_contracts::membership::Command) itself: the
//! [`Actor`] issuing it, and the [`CommandError`] of a refusal.

use confab_events::UserId;

/// Longest workspace or channel name, in characters.
const MAX_NAME_CHARS: usize = 80;

/// Who issues a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An end user, authenticated by their token: every rule applies.
    User(UserId),
    /// The service credential (an app backend), acting on behalf of a
    /// user when it names one: may bootstrap workspaces and passes the
    /// authority checks (see `Actor::is_service`).
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
            Actor::User(u) => Some(u),
            Actor::Service { on_behalf_of } => on_behalf_of.as_ref(),
        }
    }

    /// Whether the caller may bootstrap workspaces: create them for any
    /// owner, and add or remove members without being a workspace admin.
    /// Only the service credential may: no user token is trusted beyond
    /// the roles the membership authority gives it in each workspace (a
    /// JWT's `"admin": true` claim means nothing to Confab).
    pub(crate) fn may_bootstrap(&self) -> bool {
        self.is_service()
    }

    /// Whether the caller is the service credential, which also passes the
    /// authority checks of channels and DMs (an app backend applies its own
    /// permissions): invite without being a member, kick or archive without
    /// being an admin, add DM participants without being one.
    pub(crate) fn is_service(&self) -> bool {
        matches!(self, Actor::Service { .. })
    }

    /// The user, or an error naming the command that needs one.
    pub(super) fn require_user(&self, command: &'static str) -> Result<&UserId, CommandError> {
        self.user().ok_or_else(|| CommandError::Invalid {
            field: "actor",
            message: format!(
                "{command} needs the user it acts for: with the service token, set \"actor\" to a user id"
            ),
        })
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

/// The name trimmed, or why it cannot name a workspace or channel.
pub(super) fn check_name(name: &str) -> Result<String, CommandError> {
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
