//! The presence contract between gateways and the presence tracker (in
//! the membership service): heartbeats and queries.
//!
//! Every gateway publishes a [`Heartbeat`] with its full local state every
//! `presence.heartbeat` and at once on a change, on [`HEARTBEAT_SUBJECT`]
//! ([`Heartbeats`]: core NATS, every tracker instance reads it, carrying
//! the service token). Presence queries go to [`QUERY_SUBJECT`]
//! ([`Query`]: request/reply, service token) as a [`QueryRequest`] and are
//! answered with a [`QueryResponse`].

use std::collections::BTreeMap;

use confab_events::UserId;
use confab_events::socket::PresenceStatus;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, Topic};
use crate::error::{ApiError, codes};

/// Subject of gateway heartbeats (core NATS publish).
pub const HEARTBEAT_SUBJECT: &str = "confab.presence.v1.heartbeat";
/// Subject of presence queries (request/reply).
pub const QUERY_SUBJECT: &str = "confab.presence.v1.query";

/// The heartbeats a gateway publishes.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeats;

impl Topic for Heartbeats {
    const SUBJECT: &'static str = HEARTBEAT_SUBJECT;
    type Message = Heartbeat;
}

/// `query`: the presence of some users.
#[derive(Debug, Clone, Copy)]
pub struct Query;

impl Endpoint for Query {
    const SUBJECT: &'static str = QUERY_SUBJECT;
    type Request = QueryRequest;
    type Response = QueryResponse;

    fn malformed(error: &serde_json::Error) -> ApiError {
        ApiError::new(codes::INVALID_REQUEST, error.to_string())
    }
}

/// One user's status on one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPresence {
    /// The user.
    pub user: UserId,
    /// `online` if any of the user's sockets on the gateway is not away,
    /// `away` otherwise.
    pub status: PresenceStatus,
}

/// A gateway's full local presence state. A user the gateway listed before
/// and no longer lists has no socket there any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Random id of the gateway process.
    pub gateway: String,
    /// Every user with at least one socket on the gateway.
    pub users: Vec<LocalPresence>,
}

/// A presence query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// Who asks: only users sharing a workspace with them are revealed,
    /// everyone else is answered `offline`.
    pub asker: UserId,
    /// The users asked about.
    pub users: Vec<UserId>,
}

/// The answer to a [`QueryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// Every asked user's presence, by user id.
    pub presence: BTreeMap<String, PresenceStatus>,
}
