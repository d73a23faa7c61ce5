//! Validated identifiers.
//!
//! Ids arrive from clients (room names in `room:join`), from tokens (the
//! `sub` claim) and from app backends. They end up as keys in room
//! registries and, once the bus is NATS, as subject tokens
//! (`channel:42` <-> `rooms.channel.42`). A subject token must never carry
//! `.`, `*`, `>` or whitespace, and must not be empty, so ids are restricted
//! to a conservative alphabet: ASCII letters, digits, `_` and `-`, at most
//! [`MAX_ID_LEN`] bytes. Parsing is the only way to build these types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id or room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id was empty.
    #[error("id is empty")]
    Empty,
    /// The id was longer than [`MAX_ID_LEN`].
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// The id held a character outside `[A-Za-z0-9_-]`.
    #[error("id contains {0:?}; only ASCII letters, digits, '_' and '-' are allowed")]
    BadChar(char),
    /// A room name had no `kind:` prefix.
    #[error("room name must look like `kind:id` (channel:, dm:, workspace: or user:)")]
    MissingKind,
    /// A room name had a prefix Confab does not know.
    #[error("unknown room kind {0:?}; expected channel, dm, workspace or user")]
    UnknownKind(String),
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A user id (the JWT `sub` claim), safe to use in a room name or subject.
    UserId
);

string_id!(
    /// A workspace id (`workspace:{id}`).
    WorkspaceId
);

string_id!(
    /// A channel id (`channel:{id}`).
    ChannelId
);

string_id!(
    /// A DM or group-DM conversation id (`dm:{id}`).
    DmId
);

/// The four kinds of room, by name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomKind {
    /// `channel:{id}`: a channel of a workspace.
    Channel,
    /// `dm:{id}`: a direct message or group DM conversation.
    Dm,
    /// `workspace:{id}`: everyone in a workspace (presence, announcements).
    Workspace,
    /// `user:{id}`: every socket of one user.
    User,
}

impl RoomKind {
    /// The prefix used in room names and subject tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Channel => "channel",
            RoomKind::Dm => "dm",
            RoomKind::Workspace => "workspace",
            RoomKind::User => "user",
        }
    }

    /// Parses a kind prefix.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s {
            "channel" => Ok(RoomKind::Channel),
            "dm" => Ok(RoomKind::Dm),
            "workspace" => Ok(RoomKind::Workspace),
            "user" => Ok(RoomKind::User),
            other => Err(IdError::UnknownKind(other.chars().take(32).collect())),
        }
    }
}

/// A room name such as `channel:42`, parsed and validated.
///
/// The text form is kept alongside the parts so that hot paths (fan-out,
/// registry lookups) never re-format it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId {
    name: String,
    kind: RoomKind,
}

impl RoomId {
    /// Parses `kind:id`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (kind, id) = s.split_once(':').ok_or(IdError::MissingKind)?;
        let kind = RoomKind::parse(kind)?;
        check_id(id)?;
        Ok(Self {
            name: s.to_owned(),
            kind,
        })
    }

    /// Builds a room from a kind and an already validated id.
    pub fn new(kind: RoomKind, id: &str) -> Result<Self, IdError> {
        check_id(id)?;
        Ok(Self {
            name: format!("{}:{id}", kind.as_str()),
            kind,
        })
    }

    /// The personal room of a user, `user:{id}`.
    pub fn user(user: &UserId) -> Self {
        Self {
            name: format!("user:{user}"),
            kind: RoomKind::User,
        }
    }

    /// The room of a channel, `channel:{id}`.
    pub fn channel(id: &ChannelId) -> Self {
        Self {
            name: format!("channel:{id}"),
            kind: RoomKind::Channel,
        }
    }

    /// The room of a DM conversation, `dm:{id}`.
    pub fn dm(id: &DmId) -> Self {
        Self {
            name: format!("dm:{id}"),
            kind: RoomKind::Dm,
        }
    }

    /// The room of a workspace, `workspace:{id}`.
    pub fn workspace(id: &WorkspaceId) -> Self {
        Self {
            name: format!("workspace:{id}"),
            kind: RoomKind::Workspace,
        }
    }

    /// The room's kind.
    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// The id part, after the `kind:` prefix.
    pub fn id(&self) -> &str {
        &self.name[self.kind.as_str().len() + 1..]
    }

    /// The full room name, `kind:id`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl FromStr for RoomId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for RoomId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_room_names() {
        let r = RoomId::parse("channel:42").unwrap();
        assert_eq!(r.kind(), RoomKind::Channel);
        assert_eq!(r.id(), "42");
        assert_eq!(r.as_str(), "channel:42");
        assert_eq!(
            RoomId::parse("user:alice-1_x").unwrap().kind(),
            RoomKind::User
        );
        assert_eq!(RoomId::new(RoomKind::Dm, "7").unwrap().as_str(), "dm:7");
    }

    #[test]
    fn refuses_subject_injection() {
        for bad in [
            "channel:4.2",
            "channel:*",
            "channel:>",
            "channel:a b",
            "channel:a\tb",
            "channel:",
            "channel:a\nb",
            "channel:é",
            "channel:42:1",
        ] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", "a.b", "*", ">", " x", "x\u{0}"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(UserId::parse(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(UserId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn refuses_unknown_kinds_and_missing_prefix() {
        assert_eq!(RoomId::parse("42"), Err(IdError::MissingKind));
        assert!(matches!(
            RoomId::parse("room:42"),
            Err(IdError::UnknownKind(_))
        ));
    }

    #[test]
    fn serde_validates() {
        let r: RoomId = serde_json::from_str("\"dm:9\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"dm:9\"");
        assert!(serde_json::from_str::<RoomId>("\"dm:9.1\"").is_err());
        assert!(serde_json::from_str::<UserId>("\"a>b\"").is_err());
    }
}
