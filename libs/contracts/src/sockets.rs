//! The body of the socket control events (`sockets:join`, `sockets:leave`,
//! `sockets:disconnect` in `confab_events::socket::names`) that the
//! membership service's emitter bridge publishes, volatile, to the rooms
//! whose sockets they act on (`@socket.io/redis-emitter`'s `socketsJoin`,
//! `socketsLeave`, `disconnectSockets`). Gateways apply them to their local
//! sockets and never forward them. Rooms no socket of the selection may be
//! in travel in the `Confab-Except` header, as for emits.

use confab_events::RoomId;
use serde::{Deserialize, Serialize};

/// What the sockets of the room the event reached do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketsControl {
    /// The rooms to join or leave (empty for a disconnect).
    #[serde(default)]
    pub rooms: Vec<RoomId>,
    /// For a disconnect: also close the underlying connection at once
    /// (`disconnectSockets(true)`); otherwise the client is told to
    /// disconnect and the connection is closed shortly after.
    #[serde(default)]
    pub close: bool,
}
