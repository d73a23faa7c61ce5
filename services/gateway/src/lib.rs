//! The Confab connection gateway.
//!
//! Browsers connect with the official `socket.io-client` (WebSocket
//! transport). The gateway authenticates the handshake with a JWT, puts the
//! socket in its rooms, and fans room events out to sockets.
//!
//! * `admin`: the Socket.IO Admin UI's `/admin` namespace, cluster-wide.
//! * `engine`: Engine.IO v4 / Socket.IO v5 server (protocol only).
//! * `handler`: Confab's application on the engine: CONNECT in named steps
//!   (`handler/connect.rs`), client events routed to their feature.
//! * `features`: one directory per feature (messages, typing, history,
//!   presence, membership, recovery), each a port, its adapters and its
//!   socket handlers, laid out the same way (see `features/mod.rs`).
//! * `reply`: the one builder of acks (success value or `{error: {code,
//!   message}}`).
//! * `hub`: local rooms, fan-out, routing by interest over the bus
//!   (`confab_bus`).
//! * `identity`: the gateway's one id (recovery, presence, logs, readiness).
//! * `limits`: counted limits (connections per address and per user).
//! * [`app`]: HTTP wiring, health, readiness, metrics, shutdown (served by
//!   `confab_http`: header read timeout, graceful shutdown).
//! * [`config`]: typed configuration.
//! * [`conformance`]: the protocol test suites' server under test.
//!
//! Modules are private unless listed below as public: a `pub` item inside
//! a private module is visible to the crate only, so the compiler flags
//! what nothing uses. The public surface is what the all-in-one process
//! (`services/confab`), the tests and the binaries use.

mod admin;
pub mod app;
pub mod config;
pub mod conformance;
mod cors;
mod engine;
mod features;
mod forwarding;
mod handler;
mod hub;
mod identity;
mod limits;
mod metrics;
mod reply;

pub use app::{App, AppError, AppHandle, Deps, Forwarding};
pub use config::GatewayConfig;
pub use metrics::{Metrics, ReasonLabel};

/// The membership port, for embedders that answer it in-process, and its
/// in-memory adapter.
pub mod membership {
    pub use crate::features::membership::{Access, Membership, MembershipError, StaticMembership};
}

/// The presence port, for embedders that answer it in-process, and its
/// adapter that reports nowhere.
pub mod presence {
    pub use crate::features::presence::{NoPresence, Presence, PresenceError};
}

/// The message history port, for embedders that answer it in-process, and
/// its adapter that refuses.
pub mod history {
    pub use crate::features::history::{MessageCalls, NoHistory};
}

/// The session store of connection-state recovery ([`Deps::sessions`]).
pub mod recovery {
    pub use crate::features::recovery::{SessionRecord, SessionStore, StoreError};
}
