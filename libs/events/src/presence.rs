//! The presence wire contract between gateways and the presence tracker
//! (in the membership service): heartbeats and queries.
//!
//! Every gateway publishes a [`Heartbeat`] with its full local state every
//! `presence.heartbeat_ms` and at once on a change, on [`HEARTBEAT_SUBJECT`]
//! (core NATS, carrying the service token). Presence queries go to
//! [`QUERY_SUBJECT`] (request/reply, service token) as a [`QueryRequest`]
//! and are answered with a [`QueryResponse`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UserId;
use crate::socket::PresenceStatus;

/// Subject of gateway heartbeats (core NATS publish).
pub const HEARTBEAT_SUBJECT: &str = "confab.presence.v1.heartbeat";
/// Subject of presence queries (request/reply).
pub const QUERY_SUBJECT: &str = "confab.presence.v1.query";

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
    /// The users asked about.
    pub users: Vec<UserId>,
}

/// The answer to a [`QueryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// Every asked user's presence, by user id.
    pub presence: BTreeMap<String, PresenceStatus>,
}
