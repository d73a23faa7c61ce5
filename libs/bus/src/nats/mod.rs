//! The NATS JetStream bus ([`NatsBus`]).
//!
//! Durable room events are published with JetStream to
//! `in.rooms.{kind}.{id}` and stored in stream `ROOMS`, which republishes
//! every stored message to `rooms.{kind}.{id}` with its stream sequence
//! (`Nats-Sequence`) and the previous sequence of the same subject
//! (`Nats-Last-Sequence`); gateways hold core subscriptions on those, no
//! JetStream consumer per room or socket. See [`crate::subjects`] for the
//! subject tree.
//!
//! The parts, from the bottom up (each uses only parts listed before it,
//! so no two import each other):
//!
//! * [`config`]: [`NatsConfig`], its duration grammar, the URL redactor.
//! * [`stats`]: the counters behind [`NatsBusStats`] and
//!   [`Bus::high_water`].
//! * [`codec`]: [`BusMessage`] to NATS headers and body and back.
//! * [`connection`]: connecting, the server version check, the re-check
//!   signal after reconnects and slow-consumer warnings.
//! * [`streams`]: stream `ROOMS` and the create-or-update step. Stream
//!   `MEMBERSHIP` is the membership service's.
//! * [`log`]: reads of the stored log (bounds, one message, ranges through
//!   ordered consumers).
//! * [`shared_feed`]: one `rooms.user.*` subscription shared by every user
//!   room of the process.
//! * [`direct_get`]: replays with batched direct gets (no consumer).
//! * [`state`]: what the parts below share per connection.
//! * [`publish`], [`feed`] (room feeds with gap repair), [`replay`] (direct
//!   gets or the consumer fallback) and [`tail`]: the [`Bus`] calls.
//!
//! This file only connects and hands each [`Bus`] call to its part.

mod codec;
mod config;
mod connection;
mod direct_get;
mod feed;
mod log;
pub mod ordered;
mod publish;
mod replay;
mod shared_feed;
mod state;
mod stats;
mod streams;
mod tail;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use confab_events::{RoomId, RoomKind};
use tokio::sync::Semaphore;

use crate::fresh::Fresh;
use crate::subjects::{ROOMS_LIVE_PREFIX, ROOMS_STREAM};
use crate::{
    Bus, BusError, BusMessage, BusStatus, BusSubscription, BusTail, LogInfo, Published, ReplayPath,
    TailItem,
};
use shared_feed::SharedFeed;
use state::Inner;
use stats::Counters;

pub use config::{NatsConfig, RECOVERY_WINDOW};
pub use connection::parse_server_version;
pub use feed::MAX_REPAIR_MESSAGES;
pub use replay::MAX_DIRECT_REPLAYS;
pub use stats::NatsBusStats;

/// The NATS JetStream bus. Cheap to clone; clones share the connection.
///
/// * Durable room events are stored in stream `ROOMS` first; `publish`
///   resolves once the event is stored.
/// * Volatile events (typing, presence) are published with core NATS
///   straight to `rooms.{kind}.{id}`: never stored.
/// * A subscription is one core NATS subscription on `rooms.{kind}.{id}`
///   that repairs what core NATS lost (slow consumer, reconnect) from the
///   stream.
/// * Replays read batched direct gets, or one short-lived ordered consumer
///   when the server or the stream cannot serve those.
///
/// A message's extra headers travel as NATS headers, except `Nats-*` ones
/// (set by the bus and the server) other than publish preconditions such as
/// `Nats-Expected-Last-Subject-Sequence`. Received messages carry every
/// header except `Confab-Event` and `Nats-*` (`Nats-Msg-Id` becomes
/// [`BusMessage::msg_id`], `Nats-Sequence` [`BusMessage::seq`]). NATS trims
/// header values, so event names, ids and header values must not start or
/// end with whitespace (event names and ids are refused if they do).
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("url", &self.inner.url)
            .field("state", &self.inner.client.connection_state())
            .finish()
    }
}

impl NatsBus {
    /// Connects, checks that the server is nats-server 2.10 or newer and
    /// creates or updates stream `ROOMS`
    /// ([`ensure_rooms_stream`](Self::ensure_rooms_stream)).
    ///
    /// Fails when the server cannot be reached now (no retry here: the
    /// caller decides), is too old ([`BusError::Unsupported`], naming the
    /// version found) or has no JetStream. Once connected, the client
    /// reconnects on its own for ever.
    pub async fn connect(cfg: NatsConfig) -> Result<NatsBus, BusError> {
        cfg.validate()?;
        let url = confab_config::redact_url(&cfg.url);
        let (client, recheck, reconnects) = connection::connect(&cfg, &url).await?;
        let jetstream = jetstream::new(client.clone());
        let bus = NatsBus {
            inner: Arc::new(Inner {
                client,
                jetstream,
                url,
                counters: Counters::default(),
                recheck,
                reconnects,
                user_rooms: SharedFeed::new(
                    format!("{ROOMS_LIVE_PREFIX}.{}.*", RoomKind::User.as_str()),
                    cfg.subscription_capacity,
                ),
                log_state: Fresh::new(),
                replay_consumers: Semaphore::new(cfg.max_replay_consumers),
                direct_replays: Semaphore::new(MAX_DIRECT_REPLAYS),
                warned_direct: AtomicBool::new(false),
                tail_setup: crate::AdaptiveTimeout::log_setup(),
                config: cfg,
            }),
        };
        bus.ensure_rooms_stream().await?;
        let version = bus.inner.client.server_info().version;
        tracing::info!(url = %bus.inner.url, %version, "NATS bus connected, stream ROOMS ready");
        Ok(bus)
    }

    /// Creates stream `ROOMS`, or updates it to the configured settings
    /// ([`NatsConfig::rooms_stream_config`]). Safe to run from several
    /// processes at once.
    pub async fn ensure_rooms_stream(&self) -> Result<(), BusError> {
        self.ensure_stream(self.inner.config.rooms_stream_config())
            .await
    }

    /// Creates the stream of `config`, or updates it to `config`, on this
    /// connection. Safe to run from several processes at once. E.g. the
    /// membership service sets up its event log, stream `MEMBERSHIP`, with
    /// its own settings.
    pub async fn ensure_stream(&self, config: stream::Config) -> Result<(), BusError> {
        streams::ensure_stream(&self.inner.jetstream, config).await
    }

    /// The underlying NATS client (core NATS), for other services.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// A signal bumped after every (re)connect of the client. A restarted
    /// nats-server has lost every ephemeral consumer, so a reader of the
    /// log (a tail) ends its consumer and resumes from its own checkpoint
    /// when it changes, instead of waiting for missed heartbeats.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reconnects.clone()
    }

    /// The JetStream context (e.g. for the membership log in stream
    /// `MEMBERSHIP`), for other services.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// The configuration the bus was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// Counters of repairs and dropped messages since connecting.
    pub fn stats(&self) -> NatsBusStats {
        self.inner.counters.snapshot()
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        publish::publish(&self.inner, room, msg).await
    }

    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError> {
        feed::subscribe(&self.inner, room).await
    }

    async fn fetch(&self, room: &RoomId, seq: u64) -> Result<Option<BusMessage>, BusError> {
        log::fetch(&self.inner.jetstream, &self.inner.counters, room, seq).await
    }

    async fn replay(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<TailItem>, BusError> {
        Ok(self.replay_via(rooms, from_seq, max).await?.0)
    }

    async fn replay_via(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<(Vec<TailItem>, ReplayPath), BusError> {
        replay::replay(&self.inner, rooms, from_seq, max).await
    }

    fn high_water(&self) -> u64 {
        self.inner.counters.high_water.load(Ordering::Relaxed)
    }

    async fn refresh_high_water(&self) -> Result<u64, BusError> {
        let last = self.inner.log_state().await?.last;
        let counters = &self.inner.counters;
        Ok(counters
            .high_water
            .fetch_max(last, Ordering::Relaxed)
            .max(last))
    }

    async fn tail(&self, from_seq: u64) -> Result<BusTail, BusError> {
        tail::tail(Arc::clone(&self.inner), from_seq).await
    }

    /// The id is stream `ROOMS`'s creation time: a store wiped (or the
    /// stream deleted) and created again is a new log, whatever its
    /// sequences say.
    async fn log_info(&self) -> Result<LogInfo, BusError> {
        let state = self.inner.log_state().await?;
        Ok(LogInfo {
            id: format!("nats:{ROOMS_STREAM}:{}", state.created_ns),
            first_seq: state.first,
            last_seq: state.last,
        })
    }

    fn status(&self) -> BusStatus {
        let inner = &self.inner;
        let connected = matches!(inner.client.connection_state(), State::Connected);
        let info = inner.client.server_info();
        let mut detail = format!(
            "NATS JetStream at {} (server {} {}), stream {ROOMS_STREAM}",
            inner.url, info.server_name, info.version
        );
        if !connected {
            detail.push_str("; disconnected, reconnecting");
        }
        BusStatus {
            kind: "nats",
            connected,
            // The first connect is not a reconnect.
            reconnects: inner
                .client
                .statistics()
                .connects
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(1),
            shared: true,
            detail,
        }
    }
}
