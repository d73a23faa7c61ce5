//! The gateway's features, each in one shape.
//!
//! A feature lives in `features/<name>/`:
//!
//! * `mod.rs`: the feature's port (the trait it needs from the outside
//!   world, with its error type), the adapter that has nothing behind it
//!   (`No*`, where the feature can be off), the feature's logic, and its
//!   socket handlers: functions that take a parsed request and return a
//!   [`Reply`](crate::reply::Reply);
//! * `memory.rs`: the in-process adapter of the port (the all-in-one
//!   process and tests);
//! * `nats.rs`: the adapter that reaches a Confab service (through
//!   `confab_contracts::ServiceClient`: service token, trace context,
//!   timeout) or
//!   NATS KV.
//!
//! A feature without a port of its own (messages, typing: they go through
//! the hub's bus) has only `mod.rs`, plus a file per further concept
//! (`messages/ratelimit.rs`). Features never import the handler
//! (`crate::handler`): it calls them, with the pieces of the session they
//! need, so there is no import circle between the two.
//!
//! | feature | port | adapters | client events |
//! |---|---|---|---|
//! | [`messages`] | (the bus) | | `message:send` |
//! | [`typing`] | (the bus) | | `typing:start`, `typing:stop` |
//! | [`history`] | `MessageCalls` | none, NATS (in-process: the all-in-one) | `message:edit`, `message:delete`, `message:history` |
//! | [`presence`] | `Presence` | none, NATS (in-process: the all-in-one) | `presence:set`, `presence:query` |
//! | [`membership`] | `Membership` | memory, NATS | `room:join`, `room:leave` |
//! | [`recovery`] | `SessionStore` | memory, NATS KV | (CONNECT `{pid, offset}`) |

pub(crate) mod history;
pub(crate) mod membership;
pub(crate) mod messages;
pub(crate) mod presence;
pub(crate) mod recovery;
pub(crate) mod typing;
