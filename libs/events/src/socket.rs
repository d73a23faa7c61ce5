//! The typed Socket.IO events exchanged between browsers and the gateway.
//!
//! These types are the contract with front ends. [`typescript`] renders
//! them as TypeScript declarations (`ClientToServerEvents`,
//! `ServerToClientEvents`, and the payload types) for `socket.io-client`'s
//! typed `Socket<ServerToClientEvents, ClientToServerEvents>`; the rendered
//! file is checked in at `libs/events/typescript/socket-events.ts` and a
//! test fails when it is stale.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::{RoomId, UserId};

mod typescript;

pub use typescript::typescript;

/// Event names, in one place.
pub mod names {
    /// Client asks to join a room (ack: [`super::RoomAck`]).
    pub const ROOM_JOIN: &str = "room:join";
    /// Client asks to leave a room (ack: [`super::RoomAck`]).
    pub const ROOM_LEAVE: &str = "room:leave";
    /// Client presents a fresh token before the current one expires
    /// (ack: [`super::RefreshAck`]).
    pub const AUTH_REFRESH: &str = "auth:refresh";
    /// Server tells a socket its session expired, right before
    /// disconnecting it.
    pub const SESSION_EXPIRED: &str = "session:expired";
    /// Server tells a socket right after CONNECT that the session it asked
    /// to resume could not be recovered: it has a fresh session and should
    /// refetch what it shows.
    pub const RECOVERY_FAILED: &str = "recovery:failed";
    /// Client sends a message (ack: [`super::SendAck`]).
    pub const MESSAGE_SEND: &str = "message:send";
    /// Client starts typing in a room (volatile).
    pub const TYPING_START: &str = "typing:start";
    /// Client stopped typing (volatile).
    pub const TYPING_STOP: &str = "typing:stop";
    /// Server tells a room who is typing (volatile, never stored).
    pub const TYPING: &str = "typing";
    /// A new message in a room.
    pub const MESSAGE_NEW: &str = "message:new";
    /// A message was edited.
    pub const MESSAGE_UPDATED: &str = "message:updated";
    /// A message was deleted.
    pub const MESSAGE_DELETED: &str = "message:deleted";
    /// Client edits one of its messages (ack: [`super::ChangeAck`]).
    pub const MESSAGE_EDIT: &str = "message:edit";
    /// Client deletes a message (ack: [`super::ChangeAck`]).
    pub const MESSAGE_DELETE: &str = "message:delete";
    /// Client asks for a page of a room's history (ack:
    /// [`super::HistoryAck`]).
    pub const MESSAGE_HISTORY: &str = "message:history";
    /// Client sets its presence, `away` or `online` (ack: `{ok: true}`).
    pub const PRESENCE_SET: &str = "presence:set";
    /// Client asks the presence of users (ack: [`super::PresenceQueryAck`]).
    pub const PRESENCE_QUERY: &str = "presence:query";
    /// Server tells a workspace room a user's presence changed (volatile).
    pub const PRESENCE_UPDATE: &str = "presence:update";
    /// Server tells a user's sockets (room `user:{id}`) that the user now
    /// belongs to a room; the gateway has put the sockets in it.
    pub const ROOM_JOINED: &str = "room:joined";
    /// Server tells a user's sockets (room `user:{id}`) that the user left
    /// or was removed from a room; the gateway has taken the sockets out.
    pub const ROOM_LEFT: &str = "room:left";
    /// Server tells a room a user joined it.
    pub const MEMBER_JOINED: &str = "member:joined";
    /// Server tells a room a user left it.
    pub const MEMBER_LEFT: &str = "member:left";
    /// Server tells a channel it was archived (read-only, no new members).
    pub const CHANNEL_ARCHIVED: &str = "channel:archived";

    /// Control event (never sent to sockets): the sockets of the room it is
    /// published to join the rooms it names (`@socket.io/redis-emitter`'s
    /// `socketsJoin`), each as far as the authority lets its user.
    pub const SOCKETS_JOIN: &str = "sockets:join";
    /// Control event (never sent to sockets): the sockets of the room leave
    /// the rooms it names (`socketsLeave`).
    pub const SOCKETS_LEAVE: &str = "sockets:leave";
    /// Control event (never sent to sockets): the sockets of the room are
    /// disconnected (`disconnectSockets`).
    pub const SOCKETS_DISCONNECT: &str = "sockets:disconnect";

    /// Every event Confab's own servers send to sockets. Each has an owner
    /// (the gateway for `message:new` and `typing`, the membership service
    /// for edits, deletes, presence and the control events, a gateway for
    /// its own sockets' `session:expired` / `recovery:failed`): apps may
    /// not emit them through the emit API, so nobody can forge chat
    /// history or move sockets between rooms.
    pub const SERVER_EVENTS: &[&str] = &[
        MESSAGE_NEW,
        MESSAGE_UPDATED,
        MESSAGE_DELETED,
        TYPING,
        PRESENCE_UPDATE,
        ROOM_JOINED,
        ROOM_LEFT,
        MEMBER_JOINED,
        MEMBER_LEFT,
        CHANNEL_ARCHIVED,
        SESSION_EXPIRED,
        RECOVERY_FAILED,
        SOCKETS_JOIN,
        SOCKETS_LEAVE,
        SOCKETS_DISCONNECT,
    ];
}

/// Argument of `room:join` / `room:leave`: a room name such as
/// `channel:42`. A bare string is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum RoomRequest {
    /// `"channel:42"`
    Name(String),
    /// `{ "room": "channel:42" }`
    Object {
        /// The room name.
        room: String,
    },
}

impl RoomRequest {
    /// The requested room name, unvalidated.
    pub fn room(&self) -> &str {
        match self {
            RoomRequest::Name(r) | RoomRequest::Object { room: r } => r,
        }
    }
}

/// A refusal carried in an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct AckError {
    /// Stable machine code, e.g. `invalid_room`, `forbidden`.
    pub code: String,
    /// What went wrong, for a developer.
    pub message: String,
    /// For `rate_limited`: how long to wait before retrying, ms.
    #[serde(
        rename = "retryAfterMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[ts(rename = "retryAfterMs", optional, type = "number")]
    pub retry_after_ms: Option<u64>,
}

impl AckError {
    /// Builds an error.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Acknowledgement of `room:join` / `room:leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum RoomAck {
    /// Done.
    Ok {
        /// Always `true`.
        #[ts(type = "true")]
        ok: bool,
        /// The room, normalized.
        room: String,
    },
    /// Refused.
    Err {
        /// Why.
        error: AckError,
    },
}

/// Argument of `message:send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename_all = "camelCase")]
pub struct SendRequest {
    /// The room, `channel:{id}` or `dm:{id}`.
    pub room: String,
    /// The text; not empty, at most the configured size.
    pub body: String,
    /// The client's id for this message (1 to 64 of `[A-Za-z0-9_-]`).
    /// Sending again with the same id (a retry after a lost ack) returns
    /// the same ack and never creates a second message.
    pub client_msg_id: String,
    /// The thread's root message id, for a reply.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// Acknowledgement of `message:send`, sent once the message is durably
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum SendAck {
    /// Stored.
    Ok {
        /// Message id.
        id: String,
        /// Position in the room log (the event's offset).
        #[ts(type = "number")]
        seq: u64,
        /// Creation time, RFC 3339.
        #[serde(rename = "createdAt")]
        #[ts(rename = "createdAt")]
        created_at: String,
    },
    /// Refused; nothing was stored.
    Err {
        /// Why.
        error: AckError,
    },
}

/// Payload of the volatile `typing` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct Typing {
    /// The room.
    pub room: String,
    /// Who types.
    pub user_id: String,
    /// `true` on start, `false` on stop.
    pub typing: bool,
    /// While typing: drop the indicator after this many ms unless renewed
    /// (a stop may never come: a closed tab, a lost connection).
    #[ts(optional, type = "number")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// Argument of `auth:refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct RefreshRequest {
    /// The new JWT, for the same user.
    pub token: String,
}

/// Acknowledgement of `auth:refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum RefreshAck {
    /// Accepted.
    Ok {
        /// Always `true`.
        #[ts(type = "true")]
        ok: bool,
        /// New expiry, Unix seconds.
        #[serde(rename = "expiresAt")]
        #[ts(rename = "expiresAt", type = "number")]
        expires_at: u64,
    },
    /// Refused; the current token stays in force until it expires.
    Err {
        /// Why.
        error: AckError,
    },
}

/// Payload of `session:expired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SessionExpired {
    /// Stable machine code: `token_expired` (the JWT's `exp` passed) or
    /// `session_expired` (session auth: the app no longer vouches for the
    /// session: signed out, expired or revoked).
    pub code: String,
    /// What happened and what to do (reconnect with a fresh token, or sign
    /// in again).
    pub message: String,
}

/// Payload of `recovery:failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct RecoveryFailed {
    /// Stable machine code: `expired` (the window passed), `unknown_session`,
    /// `foreign_session` (another user's), `invalid_session` (malformed pid
    /// or offset), `too_many_missed`, `rate_limited` (asked to recover too
    /// often), `unavailable` (the session store or
    /// the log could not be read).
    pub reason: String,
    /// What happened; the app should refetch what it shows.
    pub message: String,
}

/// A chat message as clients render it (`message:new`, `message:updated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct Message {
    /// Message id.
    pub id: String,
    /// Room name, e.g. `channel:42`.
    pub room: String,
    /// Author's user id.
    pub author_id: String,
    /// Message text.
    pub body: String,
    /// Thread root message id, for replies.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last edit time, RFC 3339.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Payload of `message:deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct MessageDeleted {
    /// Message id.
    pub id: String,
    /// Room name.
    pub room: String,
}

/// A user's presence in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// At least one socket of the user is connected and not away.
    Online,
    /// Every connected socket of the user is away.
    Away,
    /// No socket of the user is connected (or its gateway went silent).
    Offline,
}

/// Argument of `presence:set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct PresenceSet {
    /// `online` or `away` (`offline` is refused: disconnect instead).
    pub status: PresenceStatus,
}

/// Argument of `presence:query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// User ids, at most [`MAX_PRESENCE_QUERY`].
    pub users: Vec<String>,
}

/// Most users one `presence:query` may ask about.
pub const MAX_PRESENCE_QUERY: usize = 500;

/// Acknowledgement of `presence:query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum PresenceQueryAck {
    /// The presence of every asked user, by user id.
    Ok {
        /// User id → status.
        #[ts(type = "Record<string, PresenceStatus>")]
        presence: std::collections::BTreeMap<String, PresenceStatus>,
    },
    /// Refused.
    Err {
        /// Why.
        error: AckError,
    },
}

/// Payload of the volatile `presence:update` event, sent to the user's
/// `workspace:{id}` rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct PresenceUpdate {
    /// Whose presence changed.
    pub user_id: String,
    /// The new presence.
    pub status: PresenceStatus,
}

/// Argument of `message:edit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The message's room.
    pub room: String,
    /// The message id.
    pub id: String,
    /// The new text; not empty, at most 8 KiB.
    pub body: String,
}

/// Argument of `message:delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The message's room.
    pub room: String,
    /// The message id.
    pub id: String,
}

/// Argument of `message:history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// The room.
    pub room: String,
    /// Cursor: a `nextCursor` of the previous page.
    #[ts(optional)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1 to 100 (default 50).
    #[ts(optional, type = "number")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// Acknowledgement of `message:edit` / `message:delete`, sent once the
/// `message:updated` / `message:deleted` event is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum ChangeAck {
    /// Stored.
    Ok {
        /// Always `true`.
        #[ts(type = "true")]
        ok: bool,
        /// Position of the event in the room log.
        #[ts(type = "number")]
        seq: u64,
    },
    /// Refused (`not_found`, `forbidden`, `invalid_body`, ...).
    Err {
        /// Why.
        error: AckError,
    },
}

/// Acknowledgement of `message:history`: a page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum HistoryAck {
    /// A page.
    Ok {
        /// Messages, newest first.
        messages: Vec<Message>,
        /// Pass as `before` for the next (older) page; absent on the last.
        #[serde(
            rename = "nextCursor",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        #[ts(rename = "nextCursor", optional)]
        next_cursor: Option<String>,
    },
    /// Refused (`forbidden` for non-members, ...).
    Err {
        /// Why.
        error: AckError,
    },
}

/// Payload of `room:joined` (in `user:{id}`): the user now belongs to the
/// room (a workspace, channel or DM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct RoomJoined {
    /// The room, e.g. `channel:42`.
    #[ts(type = "string")]
    pub room: RoomId,
}

/// Why a user is no longer in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They left by themselves.
    Left,
    /// A workspace admin removed them from the channel.
    Kicked,
    /// They were removed from the workspace (and so from its channels).
    RemovedFromWorkspace,
}

/// Payload of `room:left` (in `user:{id}`): the user no longer belongs to
/// the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct RoomLeft {
    /// The room, e.g. `channel:42`.
    #[ts(type = "string")]
    pub room: RoomId,
    /// Why.
    pub reason: LeaveReason,
}

/// Payload of `member:joined` (in the room): a user joined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct MemberJoined {
    /// The room.
    #[ts(type = "string")]
    pub room: RoomId,
    /// Who joined.
    #[ts(type = "string")]
    pub user: UserId,
}

/// Payload of `member:left` (in the room): a user left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct MemberLeft {
    /// The room.
    #[ts(type = "string")]
    pub room: RoomId,
    /// Who left.
    #[ts(type = "string")]
    pub user: UserId,
    /// Why.
    pub reason: LeaveReason,
}

/// Payload of `channel:archived` (in the channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ChannelArchived {
    /// The channel's room, `channel:{id}`.
    #[ts(type = "string")]
    pub room: RoomId,
    /// Who archived it.
    #[ts(type = "string")]
    pub by: UserId,
}

/// A membership change announced in a user room, which moves every socket
/// of the user: `room:joined` or `room:left`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    /// `room:joined`.
    Joined(RoomJoined),
    /// `room:left`.
    Left(RoomLeft),
}

impl RoomChange {
    /// Reads an event of a user room from its name and JSON array of
    /// arguments: `None` when it is no room change, an error when its
    /// argument is not the documented payload.
    pub fn parse(event: &str, args_json: &str) -> Option<Result<Self, serde_json::Error>> {
        fn first<T: serde::de::DeserializeOwned>(args_json: &str) -> Result<T, serde_json::Error> {
            let mut args: Vec<serde_json::Value> = serde_json::from_str(args_json)?;
            if args.is_empty() {
                return Err(serde::de::Error::custom("expected one argument"));
            }
            serde_json::from_value(args.swap_remove(0))
        }
        match event {
            names::ROOM_JOINED => Some(first(args_json).map(Self::Joined)),
            names::ROOM_LEFT => Some(first(args_json).map(Self::Left)),
            _ => None,
        }
    }

    /// The room joined or left.
    pub fn room(&self) -> &RoomId {
        match self {
            Self::Joined(e) => &e.room,
            Self::Left(e) => &e.room,
        }
    }

    /// Whether the user joined (`true`) or left the room.
    pub fn joined(&self) -> bool {
        matches!(self, Self::Joined(_))
    }
}

/// An event a client may emit, parsed from its Socket.IO name and args.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientToServer {
    /// `room:join`.
    RoomJoin(RoomRequest),
    /// `room:leave`.
    RoomLeave(RoomRequest),
    /// `auth:refresh`.
    AuthRefresh(RefreshRequest),
    /// `message:send`.
    MessageSend(SendRequest),
    /// `typing:start`.
    TypingStart(RoomRequest),
    /// `typing:stop`.
    TypingStop(RoomRequest),
    /// `presence:set`.
    PresenceSet(PresenceSet),
    /// `presence:query`.
    PresenceQuery(PresenceQuery),
    /// `message:edit`.
    MessageEdit(EditRequest),
    /// `message:delete`.
    MessageDelete(DeleteRequest),
    /// `message:history`.
    MessageHistory(HistoryRequest),
}

impl ClientToServer {
    /// Parses an incoming event. Unknown names and malformed arguments
    /// give an [`AckError`] to send back (`unknown_event`,
    /// `invalid_request`).
    pub fn parse(name: &str, args: &[serde_json::Value]) -> Result<Self, AckError> {
        fn first<T: serde::de::DeserializeOwned>(
            args: &[serde_json::Value],
            expected: &str,
        ) -> Result<T, AckError> {
            args.first()
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| AckError::new("invalid_request", format!("expected {expected}")))
        }
        const ROOM: &str = "a room name such as \"channel:42\" or {\"room\": \"channel:42\"}";
        match name {
            names::ROOM_JOIN => Ok(Self::RoomJoin(first(args, ROOM)?)),
            names::ROOM_LEAVE => Ok(Self::RoomLeave(first(args, ROOM)?)),
            names::AUTH_REFRESH => Ok(Self::AuthRefresh(first(args, "{\"token\": \"...\"}")?)),
            names::TYPING_START => Ok(Self::TypingStart(first(args, ROOM)?)),
            names::TYPING_STOP => Ok(Self::TypingStop(first(args, ROOM)?)),
            names::PRESENCE_SET => Ok(Self::PresenceSet(first(
                args,
                "{\"status\": \"away\"} or {\"status\": \"online\"}",
            )?)),
            names::PRESENCE_QUERY => Ok(Self::PresenceQuery(first(
                args,
                "{\"users\": [\"alice\", \"bob\"]}",
            )?)),
            names::MESSAGE_SEND => Ok(Self::MessageSend(first(
                args,
                "{\"room\": \"channel:42\", \"body\": \"...\", \"clientMsgId\": \"...\"} (threadId optional)",
            )?)),
            names::MESSAGE_EDIT => Ok(Self::MessageEdit(first(
                args,
                "{\"room\": \"channel:42\", \"id\": \"...\", \"body\": \"...\"}",
            )?)),
            names::MESSAGE_DELETE => Ok(Self::MessageDelete(first(
                args,
                "{\"room\": \"channel:42\", \"id\": \"...\"}",
            )?)),
            names::MESSAGE_HISTORY => Ok(Self::MessageHistory(first(
                args,
                "{\"room\": \"channel:42\"} (before and limit optional)",
            )?)),
            other => {
                let shown: String = other.chars().take(64).collect();
                Err(AckError::new(
                    "unknown_event",
                    format!("unknown event {shown:?}"),
                ))
            }
        }
    }
}

/// An event the server emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerToClient {
    /// `message:new`.
    MessageNew(Message),
    /// `message:updated`.
    MessageUpdated(Message),
    /// `message:deleted`.
    MessageDeleted(MessageDeleted),
    /// `session:expired`.
    SessionExpired(SessionExpired),
    /// `recovery:failed`.
    RecoveryFailed(RecoveryFailed),
    /// `room:joined`.
    RoomJoined(RoomJoined),
    /// `room:left`.
    RoomLeft(RoomLeft),
    /// `member:joined`.
    MemberJoined(MemberJoined),
    /// `member:left`.
    MemberLeft(MemberLeft),
    /// `channel:archived`.
    ChannelArchived(ChannelArchived),
}

impl ServerToClient {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageNew(_) => names::MESSAGE_NEW,
            Self::MessageUpdated(_) => names::MESSAGE_UPDATED,
            Self::MessageDeleted(_) => names::MESSAGE_DELETED,
            Self::SessionExpired(_) => names::SESSION_EXPIRED,
            Self::RecoveryFailed(_) => names::RECOVERY_FAILED,
            Self::RoomJoined(_) => names::ROOM_JOINED,
            Self::RoomLeft(_) => names::ROOM_LEFT,
            Self::MemberJoined(_) => names::MEMBER_JOINED,
            Self::MemberLeft(_) => names::MEMBER_LEFT,
            Self::ChannelArchived(_) => names::CHANNEL_ARCHIVED,
        }
    }

    /// The event's arguments.
    pub fn args(&self) -> Vec<serde_json::Value> {
        vec![self.data()]
    }

    /// The event's single argument.
    pub fn data(&self) -> serde_json::Value {
        let v = match self {
            Self::MessageNew(m) | Self::MessageUpdated(m) => serde_json::to_value(m),
            Self::MessageDeleted(m) => serde_json::to_value(m),
            Self::SessionExpired(m) => serde_json::to_value(m),
            Self::RecoveryFailed(m) => serde_json::to_value(m),
            Self::RoomJoined(m) => serde_json::to_value(m),
            Self::RoomLeft(m) => serde_json::to_value(m),
            Self::MemberJoined(m) => serde_json::to_value(m),
            Self::MemberLeft(m) => serde_json::to_value(m),
            Self::ChannelArchived(m) => serde_json::to_value(m),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// What the gateway keeps per socket (`socket.data` in the old server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct SocketData {
    /// The authenticated user.
    pub user_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_events_parse_or_explain() {
        use serde_json::json;
        assert_eq!(
            ClientToServer::parse("room:join", &[json!("channel:1")]),
            Ok(ClientToServer::RoomJoin(RoomRequest::Name(
                "channel:1".into()
            )))
        );
        assert_eq!(
            ClientToServer::parse("room:join", &[json!(7)])
                .unwrap_err()
                .code,
            "invalid_request"
        );
        assert_eq!(
            ClientToServer::parse("auth:refresh", &[]).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            ClientToServer::parse("nope", &[]).unwrap_err().code,
            "unknown_event"
        );
        let e = ServerToClient::MessageDeleted(MessageDeleted {
            id: "m".into(),
            room: "dm:1".into(),
        });
        assert_eq!(e.name(), "message:deleted");
        assert_eq!(e.args(), vec![json!({"id": "m", "room": "dm:1"})]);
    }

    #[test]
    fn room_request_accepts_both_shapes() {
        let a: RoomRequest = serde_json::from_str("\"channel:1\"").unwrap();
        let b: RoomRequest = serde_json::from_str("{\"room\":\"channel:1\"}").unwrap();
        assert_eq!(a.room(), "channel:1");
        assert_eq!(b.room(), "channel:1");
    }

    #[test]
    fn acks_serialize_as_documented() {
        let ok = RoomAck::Ok {
            ok: true,
            room: "dm:1".into(),
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"room":"dm:1"}"#
        );
        let err = RefreshAck::Err {
            error: AckError::new("forbidden", "no"),
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":"forbidden","message":"no"}}"#
        );
        let ok = RefreshAck::Ok {
            ok: true,
            expires_at: 5,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"expiresAt":5}"#
        );
    }

    #[test]
    fn control_events_have_one_shape() {
        use serde_json::json;
        let room = RoomId::parse("channel:42").unwrap();
        let user = UserId::parse("bob").unwrap();
        let left = ServerToClient::MemberLeft(MemberLeft {
            room: room.clone(),
            user: user.clone(),
            reason: LeaveReason::RemovedFromWorkspace,
        });
        assert_eq!(left.name(), "member:left");
        assert_eq!(
            left.data(),
            json!({"room": "channel:42", "user": "bob", "reason": "removed_from_workspace"})
        );
        let archived = ServerToClient::ChannelArchived(ChannelArchived {
            room: room.clone(),
            by: user,
        });
        assert_eq!(
            archived.args(),
            vec![json!({"room": "channel:42", "by": "bob"})]
        );

        let joined = RoomChange::parse("room:joined", r#"[{"room":"channel:42"}]"#)
            .unwrap()
            .unwrap();
        assert!(joined.joined());
        assert_eq!(joined.room(), &room);
        let gone = RoomChange::parse("room:left", r#"[{"room":"dm:7","reason":"kicked"}]"#)
            .unwrap()
            .unwrap();
        assert!(!gone.joined());
        assert_eq!(
            gone,
            RoomChange::Left(RoomLeft {
                room: RoomId::parse("dm:7").unwrap(),
                reason: LeaveReason::Kicked
            })
        );
        assert!(RoomChange::parse("message:new", "[{}]").is_none());
        for bad in [
            r#"[{"room":"a.b"}]"#,
            "[]",
            "{}",
            r#"[{"rooms":"channel:1"}]"#,
        ] {
            assert!(
                RoomChange::parse("room:joined", bad).unwrap().is_err(),
                "{bad}"
            );
        }
    }
}
