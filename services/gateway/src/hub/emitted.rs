//! What the hub does with the events of the membership service's
//! `@socket.io/redis-emitter` bridge.
//!
//! * **Addressing.** An emit to several rooms is published once per room,
//!   each copy naming every target room in `Confab-Rooms` (in one order);
//!   a socket takes a copy only from the first target room it is in, so it
//!   gets the event once however many of the rooms it is in. `Confab-Except`
//!   names rooms whose sockets take no copy. The rule looks only at the
//!   socket's rooms on this gateway when the copy is delivered: a socket
//!   that joins or leaves a target room between two copies may get the
//!   event twice or not at all, as with Socket.IO's adapter during a move.
//! * **Binary.** `Confab-Attachments` carries the binary attachments
//!   (base64, [`BusMessage::attachments`]); the copy goes out as a
//!   BINARY_EVENT, with its offset as the last argument when it is durable
//!   and recovery is on, and a recovery replays it like any other event
//!   ([`event_frame_of`], used by both).
//! * **Control events** (`sockets:join` / `sockets:leave` /
//!   `sockets:disconnect`) act on the room's local sockets that the
//!   addressing selects and are never forwarded. A join asks the
//!   authority first ([`JoinGate`], the membership cache): the bridge
//!   cannot put a socket in a room its user may not read. A leave never
//!   takes a socket out of its own user room. A disconnect sends the
//!   Socket.IO DISCONNECT packet (the client does not reconnect), takes the
//!   socket out of every room at once, and closes the connection shortly
//!   after (at once with `close`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use confab_bus::BusMessage;
use confab_bus::subjects::{HEADER_ATTACHMENTS, HEADER_EXCEPT_ROOMS, HEADER_TARGET_ROOMS};
use confab_contracts::sockets::SocketsControl;
use confab_events::socket::names;
use confab_events::{RoomId, RoomKind, UserId};
use confab_protocol::socketio::Packet;
use futures::future::BoxFuture;
use serde_json::Value;

use super::Hub;
use crate::engine::{CloseReason, EventFrame, SocketRef};

/// How long a socket told to disconnect keeps its connection, so that the
/// DISCONNECT packet reaches the client before the connection closes.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// The same with `close`: just long enough to write the packet.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// Whether the authority lets a user put a socket in a room (asked before a
/// `sockets:join` moves a socket).
pub(crate) trait JoinGate: Send + Sync + 'static {
    /// `true` when `user` may read `room` now.
    fn may_join<'a>(&'a self, user: &'a UserId, room: &'a RoomId) -> BoxFuture<'a, bool>;
}

/// Whether `event` is one of the socket control events.
pub(super) fn is_control(event: &str) -> bool {
    matches!(
        event,
        names::SOCKETS_JOIN | names::SOCKETS_LEAVE | names::SOCKETS_DISCONNECT
    )
}

/// Whether `msg` carries addressing or attachments (an emitter bridge
/// event), so that its delivery looks at each socket.
pub(super) fn is_addressed(msg: &BusMessage) -> bool {
    msg.headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case(HEADER_TARGET_ROOMS)
            || k.eq_ignore_ascii_case(HEADER_EXCEPT_ROOMS)
            || k.eq_ignore_ascii_case(HEADER_ATTACHMENTS)
    })
}

/// The rooms of a comma-separated header; names that are not rooms are
/// left out (they can match no socket).
fn rooms_of_header(msg: &BusMessage, name: &str) -> Vec<RoomId> {
    msg.header(name)
        .map(|v| {
            v.split(',')
                .filter_map(|r| RoomId::parse(r.trim()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a socket in `rooms` takes the copy of `msg` published to
/// `room`: in no except room, and `room` is the first target room it is in.
pub(crate) fn takes(msg: &BusMessage, room: &RoomId, rooms: &HashSet<RoomId>) -> bool {
    let except = rooms_of_header(msg, HEADER_EXCEPT_ROOMS);
    if except.iter().any(|r| rooms.contains(r)) {
        return false;
    }
    for target in rooms_of_header(msg, HEADER_TARGET_ROOMS) {
        if &target == room {
            return true;
        }
        if rooms.contains(&target) {
            return false;
        }
    }
    true
}

/// The frame of a room event for a client: a BINARY_EVENT when it carries
/// attachments, an EVENT otherwise; with `offset` (its log sequence) as the
/// last argument when given. `Err` when the attachments are unreadable.
pub(crate) fn event_frame_of(msg: &BusMessage, offset: Option<u64>) -> Result<EventFrame, String> {
    let Some(attachments) = msg.attachments().map_err(|e| e.to_string())? else {
        let text = match offset {
            Some(seq) => confab_protocol::socketio::event_frame_with_offset(
                "/",
                &msg.event,
                &msg.args_json,
                seq,
            ),
            None => confab_protocol::socketio::event_frame("/", &msg.event, &msg.args_json),
        };
        return Ok(EventFrame::from(Utf8Bytes::from(text)));
    };
    let mut args: Vec<Value> = serde_json::from_str(&msg.args_json)
        .map_err(|e| format!("the arguments are not a JSON array: {e}"))?;
    if let Some(seq) = offset {
        // As for text events: `socket.io-client` takes a last string
        // argument of any event as its offset.
        args.push(Value::String(seq.to_string()));
    }
    // The placeholders are already in the arguments.
    let mut packet = Packet::event("/", &msg.event, args, None);
    packet.attachments = attachments;
    let (text, attachments) = packet.encode_frame();
    Ok(EventFrame {
        text: Utf8Bytes::from(text),
        attachments: Some(attachments.into()),
    })
}

impl Hub {
    /// A copy of a room's local sockets (no map entry held afterwards).
    fn members_of(&self, room: &RoomId) -> Vec<SocketRef> {
        self.rooms
            .get(room)
            .map(|r| r.members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A copy of a connection's rooms.
    fn room_set(&self, socket: &SocketRef) -> Option<HashSet<RoomId>> {
        self.conns.get(&socket.conn()).map(|r| r.clone())
    }

    /// Delivers an emitter bridge event to the sockets its addressing
    /// selects (see the module doc).
    pub(super) fn deliver_addressed(&self, room: &RoomId, msg: &BusMessage) -> usize {
        let offset = msg.seq.filter(|_| self.offsets);
        let frame = match event_frame_of(msg, offset) {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(%room, event = &*msg.event, %error, "emitted event with unreadable attachments dropped");
                self.metrics.dropped("invalid_attachments");
                return 0;
            }
        };
        let mut delivered = 0;
        for socket in self.members_of(room) {
            let Some(rooms) = self.room_set(&socket) else {
                continue;
            };
            if !takes(msg, room, &rooms) {
                continue;
            }
            match socket.deliver_event(&frame, msg.seq) {
                Ok(_) => delivered += 1,
                Err(crate::engine::SendError::SlowConsumer) => {
                    self.metrics.dropped("slow_consumer")
                }
                Err(crate::engine::SendError::Closed) => {}
            }
        }
        delivered
    }

    /// Applies a socket control event to the room's selected local sockets.
    pub(super) async fn apply_control(self: &Arc<Self>, room: &RoomId, msg: &BusMessage) {
        let action = match &*msg.event {
            names::SOCKETS_JOIN => "join",
            names::SOCKETS_LEAVE => "leave",
            _ => "disconnect",
        };
        let control = match serde_json::from_str::<(SocketsControl,)>(&msg.args_json) {
            Ok((c,)) => c,
            Err(error) => {
                tracing::warn!(%room, event = &*msg.event, %error, "unreadable socket control event ignored");
                self.metrics.socket_control(action, "invalid");
                return;
            }
        };
        for socket in self.members_of(room) {
            let Some(rooms) = self.room_set(&socket) else {
                continue;
            };
            if !takes(msg, room, &rooms) {
                continue;
            }
            let user = rooms
                .iter()
                .find(|r| r.kind() == RoomKind::User)
                .and_then(|r| UserId::parse(r.id()).ok());
            match action {
                "join" => self.control_join(&socket, user.as_ref(), &control).await,
                "leave" => {
                    for target in &control.rooms {
                        if target.kind() == RoomKind::User {
                            // A socket always stays in its own user room.
                            self.metrics.socket_control(action, "refused");
                            continue;
                        }
                        self.leave(target, socket.conn());
                        self.metrics.socket_control(action, "done");
                    }
                }
                _ => self.control_disconnect(&socket, control.close),
            }
        }
    }

    async fn control_join(
        self: &Arc<Self>,
        socket: &SocketRef,
        user: Option<&UserId>,
        control: &SocketsControl,
    ) {
        for target in &control.rooms {
            let allowed = match (user, self.gate.get()) {
                (Some(user), Some(gate)) if target.kind() != RoomKind::User => {
                    gate.may_join(user, target).await
                }
                _ => false,
            };
            if !allowed {
                tracing::debug!(%target, "sockets:join refused by the authority");
                self.metrics.socket_control("join", "refused");
                continue;
            }
            match self.join(target, socket).await {
                Ok(()) => self.metrics.socket_control("join", "done"),
                Err(error) => {
                    tracing::warn!(%target, %error, "sockets:join cannot subscribe the room");
                    self.metrics.socket_control("join", "refused");
                }
            }
        }
    }

    fn control_disconnect(&self, socket: &SocketRef, close: bool) {
        let _ = socket.send_packet(&Packet::disconnect(socket.nsp()));
        // No event reaches it any more, whatever the client does.
        self.unregister(socket.conn());
        self.metrics.socket_control("disconnect", "done");
        let socket = socket.clone();
        let grace = if close { CLOSE_GRACE } else { DISCONNECT_GRACE };
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            socket.close(CloseReason {
                code: 1000,
                reason: "disconnected by the app".into(),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: &[(&str, &str)]) -> BusMessage {
        BusMessage::from_args_json("x", "[]".into()).with_headers(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn set(rooms: &[&str]) -> HashSet<RoomId> {
        rooms.iter().map(|r| RoomId::parse(r).unwrap()).collect()
    }

    #[test]
    fn a_socket_takes_a_multi_room_event_from_its_first_target_room_only() {
        let m = msg(&[(HEADER_TARGET_ROOMS, "channel:a,channel:b")]);
        let (a, b) = (
            RoomId::parse("channel:a").unwrap(),
            RoomId::parse("channel:b").unwrap(),
        );
        let both = set(&["channel:a", "channel:b"]);
        assert!(takes(&m, &a, &both));
        assert!(!takes(&m, &b, &both));
        assert!(takes(&m, &b, &set(&["channel:b"])));
    }

    #[test]
    fn a_socket_in_an_except_room_takes_nothing() {
        let m = msg(&[(HEADER_EXCEPT_ROOMS, "user:bob")]);
        let a = RoomId::parse("channel:a").unwrap();
        assert!(!takes(&m, &a, &set(&["channel:a", "user:bob"])));
        assert!(takes(&m, &a, &set(&["channel:a", "user:carol"])));
    }
}
