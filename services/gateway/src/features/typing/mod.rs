//! Typing indicators: volatile events, never stored nor replayed.
//!
//! `typing:start` / `typing:stop` from a socket become a `typing` event in
//! the room (`{room, userId, typing, expiresInMs}`), published as volatile
//! on the bus. Starts are throttled per socket and room: a start repeated
//! within [`TYPING_THROTTLE`] is absorbed. Indicators expire by themselves
//! after [`TYPING_TTL`] unless renewed; a socket that disconnects or leaves
//! while typing publishes the stop itself.

use std::collections::HashMap;
use std::time::Duration;

use confab_bus::BusMessage;
use confab_events::socket::{Typing, names};
use confab_events::{RoomId, UserId};
use tokio::time::Instant;

use crate::engine::SocketRef;
use crate::hub::Hub;
use crate::reply::{Code, Reply};

/// Least time between two published starts of one socket in one room.
const TYPING_THROTTLE: Duration = Duration::from_secs(2);
/// How long an indicator lives without renewal.
const TYPING_TTL: Duration = Duration::from_secs(6);
/// Most rooms a socket may be typing in at once.
const MAX_TYPING_ROOMS: usize = 8;

/// The rooms a socket is typing in, with when it last published a start.
#[derive(Debug, Default)]
pub(crate) struct TypingState {
    rooms: HashMap<RoomId, Instant>,
}

impl TypingState {
    /// Rooms whose indicator is still alive.
    fn active(&self) -> Vec<RoomId> {
        let now = Instant::now();
        self.rooms
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < TYPING_TTL)
            .map(|(r, _)| r.clone())
            .collect()
    }
}

fn event(room: &RoomId, user: &UserId, typing: bool) -> BusMessage {
    let payload = Typing {
        room: room.to_string(),
        user_id: user.to_string(),
        typing,
        expires_in_ms: typing.then_some(TYPING_TTL.as_millis() as u64),
    };
    BusMessage::new(
        names::TYPING,
        &serde_json::to_value(payload).unwrap_or_default(),
    )
    .into_volatile()
}

/// Handles `typing:start` (`typing = true`) or `typing:stop`.
pub(crate) async fn on_typing(
    hub: &Hub,
    socket: &SocketRef,
    user: &UserId,
    state: &mut TypingState,
    room: &str,
    typing: bool,
) -> Reply {
    match publish(hub, socket, user, state, room, typing).await {
        Ok(()) => Reply::done(),
        Err(reply) => reply,
    }
}

async fn publish(
    hub: &Hub,
    socket: &SocketRef,
    user: &UserId,
    state: &mut TypingState,
    room: &str,
    typing: bool,
) -> Result<(), Reply> {
    let room = RoomId::parse(room)
        .map_err(|e| Reply::error(Code::InvalidRoom, format!("invalid room name: {e}")))?;
    if !hub.is_in(socket.conn(), &room) {
        return Err(Reply::error(
            Code::Forbidden,
            format!("not a member of {room} (this socket is not in the room)"),
        ));
    }
    let now = Instant::now();
    state
        .rooms
        .retain(|_, at| now.duration_since(*at) < TYPING_TTL);
    if typing {
        if let Some(at) = state.rooms.get(&room)
            && now.duration_since(*at) < TYPING_THROTTLE
        {
            return Ok(()); // absorbed: the indicator is fresh
        }
        if !state.rooms.contains_key(&room) && state.rooms.len() >= MAX_TYPING_ROOMS {
            return Err(Reply::error(
                Code::RateLimited,
                format!("typing in more than {MAX_TYPING_ROOMS} rooms at once"),
            ));
        }
        state.rooms.insert(room.clone(), now);
    } else if state.rooms.remove(&room).is_none() {
        return Ok(()); // not typing there: nothing to stop
    }
    hub.publish(&room, event(&room, user, typing))
        .await
        .map(|_| ())
        .map_err(|e| Reply::error(Code::Unavailable, e.to_string()))
}

/// Publishes a stop for every room the socket is still typing in.
pub(crate) async fn stop_all(hub: &Hub, user: &UserId, state: &mut TypingState) {
    for room in state.active() {
        let _ = hub.publish(&room, event(&room, user, false)).await;
    }
    state.rooms.clear();
}
