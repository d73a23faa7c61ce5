//! The one way a socket handler answers: [`Reply`], the acknowledgement of
//! a client event.
//!
//! A reply is a success value (whatever the event's ack type says, e.g.
//! `{ok: true, room}`), or a refusal `{error: {code, message}}` with a
//! stable snake_case [`Code`], plus `retryAfterMs` when a rate limiter says
//! when to retry. Every feature's handlers return a `Reply`; the handler
//! turns it into the engine's [`EventOutcome`].

use confab_events::socket::AckError;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Ack, EventOutcome};

/// The stable codes of the refusals the gateway makes itself (codes from
/// elsewhere, such as the token verifier's, pass through
/// [`Reply::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The room name does not parse, or names a room of the wrong kind.
    InvalidRoom,
    /// The user may not do this (not a member, own user room).
    Forbidden,
    /// A backing service or the bus failed; retrying may work.
    Unavailable,
    /// The request is malformed.
    InvalidRequest,
    /// Too many; `retryAfterMs` says when to retry, where known.
    RateLimited,
    /// A message body is empty.
    InvalidBody,
    /// A message body is over the limit.
    BodyTooLarge,
    /// A `clientMsgId` is malformed.
    InvalidClientMsgId,
    /// A `threadId` is malformed.
    InvalidThreadId,
    /// A refreshed token names another user.
    WrongUser,
    /// Something the gateway stored cannot be read back.
    Internal,
    /// The room is an archived channel: read-only.
    Archived,
    /// The socket is in as many rooms as it may be.
    TooManyRooms,
}

impl Code {
    /// The code on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRoom => "invalid_room",
            Code::Forbidden => "forbidden",
            Code::Unavailable => "unavailable",
            Code::InvalidRequest => "invalid_request",
            Code::RateLimited => "rate_limited",
            Code::InvalidBody => "invalid_body",
            Code::BodyTooLarge => "body_too_large",
            Code::InvalidClientMsgId => "invalid_client_msg_id",
            Code::InvalidThreadId => "invalid_thread_id",
            Code::WrongUser => "wrong_user",
            Code::Internal => "internal",
            Code::Archived => "archived",
            Code::TooManyRooms => "too_many_rooms",
        }
    }
}

/// The acknowledgement of one client event.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub(crate) struct Reply(Value);

impl Reply {
    /// Success: `value` as the event's ack type serializes it.
    pub(crate) fn ok(value: &impl Serialize) -> Self {
        Self(serde_json::to_value(value).unwrap_or(Value::Null))
    }

    /// Success with nothing to say: `{ok: true}`.
    pub(crate) fn done() -> Self {
        Self(json!({ "ok": true }))
    }

    /// A refusal: `{error: {code, message}}`.
    pub(crate) fn error(code: Code, message: impl Into<String>) -> Self {
        Self::refused(AckError::new(code.as_str(), message))
    }

    /// A rate-limit refusal: `{error: {code: "rate_limited", message,
    /// retryAfterMs}}`.
    pub(crate) fn retry_after(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self::refused(AckError {
            retry_after_ms: Some(retry_after_ms),
            ..AckError::new(Code::RateLimited.as_str(), message)
        })
    }

    /// A refusal whose code comes from elsewhere (the token verifier, the
    /// event parser).
    pub(crate) fn refused(error: AckError) -> Self {
        Self(json!({ "error": error }))
    }
}

impl From<Reply> for EventOutcome {
    fn from(reply: Reply) -> Self {
        Ack::one(reply.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_events::socket::{RoomAck, SendAck};

    /// The bodies are the ones the typed acks of `confab_events` produce.
    #[test]
    fn refusals_match_the_typed_acks() {
        let typed = serde_json::to_string(&RoomAck::Err {
            error: AckError::new("forbidden", "no"),
        })
        .unwrap();
        let reply = Reply::error(Code::Forbidden, "no").0.to_string();
        assert_eq!(reply, typed);
        let typed = serde_json::to_string(&SendAck::Err {
            error: AckError {
                retry_after_ms: Some(5),
                ..AckError::new("rate_limited", "slow down")
            },
        })
        .unwrap();
        let reply = Reply::retry_after("slow down", 5).0.to_string();
        assert_eq!(reply, typed);
        assert_eq!(
            reply,
            r#"{"error":{"code":"rate_limited","message":"slow down","retryAfterMs":5}}"#
        );
        assert_eq!(Reply::done().0.to_string(), r#"{"ok":true}"#);
    }
}
