//! The Confab connection gateway.
//!
//! Browsers connect with the official `socket.io-client` (WebSocket
//! transport). The gateway authenticates the handshake with a JWT, puts the
//! socket in its rooms, and fans room events out to sockets.
//!
//! * [`engine`]: Engine.IO v4 / Socket.IO v5 server (protocol only).
//! * [`handler`]: Confab's application on the engine (auth, rooms, events).
//! * [`hub`]: local rooms, fan-out, routing by interest over the bus
//!   (`confab_bus`).
//! * [`membership`]: the port to the membership authority;
//!   [`membership_nats`] asks the membership service over NATS.
//! * [`messages`]: `message:send`, durable and idempotent; [`ratelimit`];
//!   [`typing`]: volatile typing indicators.
//! * [`presence`]: local presence and the port to the presence tracker.
//! * [`app`]: HTTP wiring, health, readiness, metrics, shutdown.
//! * [`config`]: typed configuration.
//! * [`conformance`]: the protocol test suites' server under test.

pub mod app;
pub mod config;
pub mod conformance;
pub mod engine;
pub mod handler;
pub mod history;
pub mod hub;
pub mod membership;
pub mod membership_nats;
pub mod messages;
pub mod metrics;
pub mod presence;
pub mod ratelimit;
pub mod recovery;
pub mod typing;

pub use app::{App, AppError, AppHandle, Deps};
pub use config::GatewayConfig;
