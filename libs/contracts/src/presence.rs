//! The presence contract between gateways and the presence tracker (in
//! the membership service): heartbeats and queries.
//!
//! Every gateway publishes [`Heartbeat`]s on [`HEARTBEAT_SUBJECT`]
//! ([`Heartbeats`]: core NATS, every tracker instance reads it, carrying
//! the service token): the users whose local status changed, at once on a
//! change (`changes`); an empty `changes` every `presence.heartbeat` as
//! its sign of life; and, rarely (`presence.full_sync_every`), its whole
//! local state in parts of at most [`MAX_USERS_PER_HEARTBEAT`] users
//! (`sync`), which repairs a tracker that missed changes or restarted.
//! What a heartbeat costs grows with the changes it carries, never with
//! the number of connected users. Presence queries go to [`QUERY_SUBJECT`]
//! ([`Query`]: request/reply, service token) as a [`QueryRequest`] and are
//! answered with a [`QueryResponse`].

use std::collections::BTreeMap;

use confab_events::UserId;
use confab_events::socket::PresenceStatus;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, Topic};
use crate::error::{ApiError, codes};

/// Subject of gateway heartbeats (core NATS publish). `v2`: changes and
/// sync parts ([`Heartbeat`]); `v1` carried the full state every time.
pub const HEARTBEAT_SUBJECT: &str = "confab.presence.v2.heartbeat";
/// Most users one heartbeat lists (changes or a sync part), so that a
/// heartbeat stays far below NATS's default 1 MiB payload limit.
pub const MAX_USERS_PER_HEARTBEAT: usize = 2_000;
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

/// What a [`Heartbeat`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatKind {
    /// The users whose local status changed since the previous heartbeat
    /// (`offline`: no socket here any more). Empty: only a sign of life.
    Changes,
    /// One part of the gateway's whole local state ([`SyncPart`]).
    Sync,
}

/// Which part of a full state a `sync` heartbeat is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPart {
    /// The sync's id (the `seq` of its first part); parts of one sync
    /// share it.
    pub id: u64,
    /// This part's number, from 0.
    pub part: u32,
    /// How many parts the sync has.
    pub parts: u32,
}

/// A gateway's presence report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Random id of the gateway process.
    pub gateway: String,
    /// +1 per heartbeat of this gateway process: a tracker that sees a gap
    /// knows it missed changes (the next sync repairs them).
    pub seq: u64,
    /// Changes or a sync part.
    pub kind: HeartbeatKind,
    /// `changes`: the changed users; `sync`: the users of this part, at
    /// most [`MAX_USERS_PER_HEARTBEAT`].
    pub users: Vec<LocalPresence>,
    /// Which part of which sync (`sync` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPart>,
}

impl Heartbeat {
    /// A `changes` heartbeat (empty: a sign of life).
    pub fn changes(gateway: &str, seq: u64, users: Vec<LocalPresence>) -> Self {
        Self {
            gateway: gateway.to_owned(),
            seq,
            kind: HeartbeatKind::Changes,
            users,
            sync: None,
        }
    }
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
