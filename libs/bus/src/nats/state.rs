//! What every part of one NATS bus connection shares ([`Inner`]): the
//! client, its settings and counters, the re-check signal, the shared user
//! room subscription, the shared reads of the log's bounds and the bounds
//! on concurrent replays.
//!
//! Room feeds, replays and the tail hold an `Arc` of it;
//! [`NatsBus`](super::NatsBus) is a handle on it. It sits below all of them
//! so that none of them needs another (or the bus itself).

use std::sync::atomic::AtomicBool;

use async_nats::jetstream;
use tokio::sync::{Semaphore, watch};

use super::config::NatsConfig;
use super::log::{self, LogState};
use super::shared_feed::SharedFeed;
use super::stats::Counters;
use crate::AdaptiveTimeout;
use crate::BusError;
use crate::fresh::Fresh;

/// The shared state of one connection.
pub(super) struct Inner {
    pub(super) client: async_nats::Client,
    pub(super) jetstream: jetstream::Context,
    pub(super) config: NatsConfig,
    /// The server list without credentials, for messages.
    pub(super) url: String,
    pub(super) counters: Counters,
    /// Bumped after every (re)connect and (debounced) slow-consumer warning:
    /// subscriptions then look for messages they missed.
    pub(super) recheck: watch::Receiver<u64>,
    /// Bumped after every (re)connect: tails end so that their callers
    /// resume from their checkpoints ([`tail`](super::tail)).
    pub(super) reconnects: watch::Receiver<u64>,
    /// The shared subscription of user rooms (see
    /// [`NatsConfig::shared_user_rooms`]).
    pub(super) user_rooms: SharedFeed,
    /// Reads of the room log's bounds, shared by concurrent callers.
    pub(super) log_state: Fresh<Result<LogState, BusError>>,
    /// Replays reading through a consumer ([`NatsConfig::max_replay_consumers`]).
    pub(super) replay_consumers: Semaphore,
    /// Replays reading with direct gets
    /// ([`MAX_DIRECT_REPLAYS`](super::MAX_DIRECT_REPLAYS)).
    pub(super) direct_replays: Semaphore,
    /// Whether the bus already warned that direct gets cannot serve replays.
    pub(super) warned_direct: AtomicBool,
    /// The bound on setting up a tail ([`tail`](super::tail)).
    pub(super) tail_setup: AdaptiveTimeout,
}

impl Inner {
    /// The room log's first and last sequences and its replicas, from a
    /// stream info request sent after this call began (shared with
    /// concurrent callers).
    pub(super) async fn log_state(&self) -> Result<LogState, BusError> {
        self.log_state
            .get(|| log::read_log_state(&self.jetstream))
            .await
    }
}
