//! The NATS subject tree, and the one-to-one mapping between rooms and
//! subjects.
//!
//! ```text
//! in.rooms.{kind}.{id}            durable room events are published here; stored in
//!                                 stream ROOMS, which republishes each stored message
//! rooms.{kind}.{id}               ... here, with Nats-Sequence / Nats-Last-Sequence;
//!                                 gateways hold core subscriptions on these. Volatile
//!                                 events (typing, presence) are published here directly.
//! membership.events.{kind}.{id}   the membership event log (stream MEMBERSHIP), one
//!                                 subject per aggregate (workspace:, channel:, dm:)
//! ```
//!
//! A [`RoomId`] can only hold `[A-Za-z0-9_-]` in its id and one of four
//! kinds, so every subject built here has exactly the expected tokens: no
//! `.`, `*`, `>` or whitespace can be smuggled in. The reverse mapping
//! ([`room_from_subject`]) re-validates everything and refuses subjects with
//! extra tokens or wildcards.

use confab_events::{IdError, RoomId};

/// The stream holding durable room events (`in.rooms.>`), republished to
/// `rooms.>`.
pub const ROOMS_STREAM: &str = "ROOMS";
/// The stream holding the membership event log (`membership.events.>`),
/// kept forever.
pub const MEMBERSHIP_STREAM: &str = "MEMBERSHIP";

/// Prefix of the live room subjects gateways subscribe to.
pub const ROOMS_LIVE_PREFIX: &str = "rooms";
/// Prefix of the subjects durable room events are published to.
pub const ROOMS_PUBLISH_PREFIX: &str = "in.rooms";
/// Prefix of the membership aggregate subjects.
pub const MEMBERSHIP_PREFIX: &str = "membership.events";

/// Every live room subject (the republish destination of [`ROOMS_STREAM`]).
pub const ROOMS_LIVE_WILDCARD: &str = "rooms.>";
/// Every durable room publish subject (the subjects of [`ROOMS_STREAM`]).
pub const ROOMS_PUBLISH_WILDCARD: &str = "in.rooms.>";
/// Every membership aggregate subject (the subjects of [`MEMBERSHIP_STREAM`]).
pub const MEMBERSHIP_WILDCARD: &str = "membership.events.>";

/// Header carrying the Socket.IO event name of a room message.
pub const HEADER_EVENT: &str = "Confab-Event";
/// JetStream de-duplication id: a second publish with the same id inside the
/// stream's duplicate window is acknowledged as a duplicate and not stored.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Stream sequence of a stored message, set by the server on republished
/// messages.
pub const HEADER_SEQUENCE: &str = "Nats-Sequence";
/// Stream sequence of the previous message on the same subject (`0` for the
/// first), set by the server on republished messages.
pub const HEADER_LAST_SEQUENCE: &str = "Nats-Last-Sequence";
/// Optimistic concurrency: the publish is refused unless the last message on
/// its subject has this stream sequence (`0`: the subject must be empty).
pub const HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Every room an event was addressed to at once, comma-separated, in the
/// order given (a `@socket.io/redis-emitter` emit to several rooms is
/// published once per room): a socket in several of them takes the event
/// only from the first of those rooms it is in, so it gets it once.
pub const HEADER_TARGET_ROOMS: &str = "Confab-Rooms";
/// Rooms whose sockets must not get the event (Socket.IO's `except`),
/// comma-separated.
pub const HEADER_EXCEPT_ROOMS: &str = "Confab-Except";
/// The binary attachments of an event, base64, comma-separated, in
/// placeholder order: the arguments hold Socket.IO placeholders
/// (`{"_placeholder":true,"num":N}`) and the gateway sends a BINARY_EVENT.
/// Stored with the event like any header (a binary event is durable and
/// replayed); written and read through [`crate::BusMessage::with_attachments`]
/// and [`crate::BusMessage::attachments`]. Set only by the emitter bridge
/// of the membership service.
pub const HEADER_ATTACHMENTS: &str = "Confab-Attachments";
/// W3C trace context: the parent span.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C trace context: vendor-specific state.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// Why a subject does not name a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject does not start with a known prefix.
    #[error(
        "subject {0:?} is not a room subject (expected rooms.{{kind}}.{{id}} or in.rooms.{{kind}}.{{id}})"
    )]
    UnknownPrefix(String),
    /// The subject has fewer or more tokens than `{prefix}.{kind}.{id}`.
    #[error("subject {0:?} must have exactly one kind token and one id token after the prefix")]
    TokenCount(String),
    /// The kind or id token is not valid.
    #[error("subject {subject:?} does not name a valid room: {source}")]
    InvalidRoom {
        /// The subject, truncated to 200 characters.
        subject: String,
        /// What was wrong with it.
        source: IdError,
    },
}

fn subject_of(prefix: &str, room: &RoomId) -> String {
    let kind = room.kind().as_str();
    let id = room.id();
    let mut s = String::with_capacity(prefix.len() + kind.len() + id.len() + 2);
    s.push_str(prefix);
    s.push('.');
    s.push_str(kind);
    s.push('.');
    s.push_str(id);
    s
}

/// The live subject of a room: `channel:42` -> `rooms.channel.42`.
pub fn live_subject(room: &RoomId) -> String {
    subject_of(ROOMS_LIVE_PREFIX, room)
}

/// The subject durable events of a room are published to (and stored under
/// in [`ROOMS_STREAM`]): `channel:42` -> `in.rooms.channel.42`.
pub fn publish_subject(room: &RoomId) -> String {
    subject_of(ROOMS_PUBLISH_PREFIX, room)
}

/// The membership log subject of an aggregate (`workspace:`, `channel:` or
/// `dm:` room): `channel:42` -> `membership.events.channel.42`.
pub fn membership_subject(aggregate: &RoomId) -> String {
    subject_of(MEMBERSHIP_PREFIX, aggregate)
}

fn truncated(subject: &str) -> String {
    subject.chars().take(200).collect()
}

/// Parses `rest`, the `{kind}.{id}` part of `subject` after its prefix, into
/// a room.
fn room_from_tokens(subject: &str, rest: &str) -> Result<RoomId, SubjectError> {
    let mut tokens = rest.split('.');
    let (Some(kind), Some(id), None) = (tokens.next(), tokens.next(), tokens.next()) else {
        return Err(SubjectError::TokenCount(truncated(subject)));
    };
    let kind =
        confab_events::RoomKind::parse(kind).map_err(|source| SubjectError::InvalidRoom {
            subject: truncated(subject),
            source,
        })?;
    // RoomId::new validates the id: no wildcards, whitespace or dots.
    RoomId::new(kind, id).map_err(|source| SubjectError::InvalidRoom {
        subject: truncated(subject),
        source,
    })
}

/// The room a live (`rooms.{kind}.{id}`) or publish (`in.rooms.{kind}.{id}`)
/// subject belongs to.
///
/// Refuses anything else: other prefixes, missing or extra tokens
/// (`rooms.channel.a.b`), wildcards (`rooms.channel.*`, `rooms.>`), unknown
/// kinds and ids outside `[A-Za-z0-9_-]{1,128}`.
pub fn room_from_subject(subject: &str) -> Result<RoomId, SubjectError> {
    let rest = subject
        .strip_prefix("in.rooms.")
        .or_else(|| subject.strip_prefix("rooms."))
        .ok_or_else(|| SubjectError::UnknownPrefix(truncated(subject)))?;
    room_from_tokens(subject, rest)
}

/// The aggregate a membership subject (`membership.events.{kind}.{id}`)
/// belongs to, with the same validation as [`room_from_subject`].
pub fn aggregate_from_membership_subject(subject: &str) -> Result<RoomId, SubjectError> {
    let rest = subject
        .strip_prefix("membership.events.")
        .ok_or_else(|| SubjectError::UnknownPrefix(truncated(subject)))?;
    room_from_tokens(subject, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn maps_rooms_to_subjects_and_back() {
        for name in ["channel:42", "dm:a-b_C", "workspace:w1", "user:alice"] {
            let r = room(name);
            let live = live_subject(&r);
            let publish = publish_subject(&r);
            assert_eq!(live, format!("rooms.{}", name.replace(':', ".")));
            assert_eq!(publish, format!("in.{live}"));
            assert_eq!(room_from_subject(&live).unwrap(), r);
            assert_eq!(room_from_subject(&publish).unwrap(), r);
        }
        assert_eq!(live_subject(&room("channel:42")), "rooms.channel.42");
        assert_eq!(publish_subject(&room("channel:42")), "in.rooms.channel.42");
        assert_eq!(
            membership_subject(&room("channel:42")),
            "membership.events.channel.42"
        );
        assert_eq!(
            aggregate_from_membership_subject("membership.events.workspace.w9").unwrap(),
            room("workspace:w9")
        );
    }

    #[test]
    fn subjects_stay_inside_their_wildcards() {
        let r = room("channel:42");
        assert!(live_subject(&r).starts_with(ROOMS_LIVE_WILDCARD.trim_end_matches('>')));
        assert!(publish_subject(&r).starts_with(ROOMS_PUBLISH_WILDCARD.trim_end_matches('>')));
        assert!(membership_subject(&r).starts_with(MEMBERSHIP_WILDCARD.trim_end_matches('>')));
    }

    #[test]
    fn refuses_injection() {
        // These cannot even be rooms, so no subject is ever built from them.
        for bad in [
            "channel:a.b",
            "channel:*",
            "channel:>",
            "channel:a b",
            "channel: a",
            "channel:a\tb",
            "channel:a\r\nPUB x 1",
            "channel:",
        ] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?} accepted as a room");
        }
        for bad in [
            "rooms.channel.a.b",
            "in.rooms.channel.a.b",
            "rooms.channel.*",
            "rooms.channel.>",
            "rooms.*.42",
            "rooms.>",
            "rooms.channel",
            "rooms.channel.",
            "rooms..42",
            "rooms.channel. 42",
            "rooms.room.42",
            "rooms.channel.a b",
            "other.channel.42",
            "in.rooms",
            "xrooms.channel.42",
            "in.in.rooms.channel.42",
            "",
            "membership.events.channel.42",
        ] {
            assert!(room_from_subject(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            room_from_subject("rooms.channel.a.b"),
            Err(SubjectError::TokenCount(_))
        ));
        assert!(matches!(
            room_from_subject("rooms.channel.*"),
            Err(SubjectError::InvalidRoom { .. })
        ));
        assert!(aggregate_from_membership_subject("membership.events.channel.4.2").is_err());
        assert!(aggregate_from_membership_subject("rooms.channel.42").is_err());
    }
}
