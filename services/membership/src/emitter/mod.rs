//! The `@socket.io/redis-emitter` bridge: app backends that push events
//! with the emitter (5.x) keep working unchanged against Confab.
//!
//! It subscribes, on the Redis the emitters publish to (`emitter.redis_url`,
//! any deployment: the Redis bus's or one of its own next to NATS), to
//! `{key}#*` (emits: `{key}#/#` and `{key}#/#{room}#`) and
//! `{key}-request#/#` (requests), and turns what arrives into Confab room
//! events on the membership service's bus, through the same checks as the
//! emit API ([`MembershipService::publish_app_event`]):
//!
//! * an emit becomes one event per target room (durable unless `volatile`;
//!   de-duplication id `emitter:{random}:{room}`, so a retried publish is
//!   stored once), each naming every target room (`Confab-Rooms`) and the
//!   except rooms (`Confab-Except`) so that gateways deliver it once per
//!   socket and to no socket of an except room; binary arguments travel
//!   base64 in `Confab-Attachments` ([`BusMessage::with_attachments`]),
//!   are stored with the event, and reach sockets as a BINARY_EVENT with
//!   its offset (replayed on recovery like any durable event);
//! * `socketsJoin` / `socketsLeave` / `disconnectSockets` become a volatile
//!   control event (`sockets:*`, `confab_contracts::sockets`) to each
//!   selecting room: every gateway applies it to its local sockets there
//!   (a join only where the authority lets the user read the room);
//! * room names are parsed into [`RoomId`]s; a name Confab cannot have is
//!   logged and counted, never published; an emit to no room (every
//!   socket), to another namespace, with an unreadable except room, or with
//!   a reserved event name is refused and counted; requests expecting a
//!   reply (`fetchSockets`, `serverSideEmit` with an ack, ...) are counted
//!   and dropped; `serverSideEmit` has no listener in Confab (counted).
//!
//! One bridge of the cluster acts (`lease.rs`); every process with
//! `emitter.enabled` runs one, the others stand by. Counters: `/metrics`
//! `confab_membership_emitter_messages_total{kind,outcome}`,
//! `confab_membership_emitter_lease_held`.

mod lease;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use confab_bus::BusMessage;
use confab_bus::subjects::{HEADER_EXCEPT_ROOMS, HEADER_TARGET_ROOMS};
use confab_config::redact_url;
use confab_contracts::sockets::SocketsControl;
use confab_events::RoomId;
use confab_events::socket::names;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::health::EmitterStats;
use crate::service::{MembershipService, ServiceError};

use lease::Lease;
use wire::{Emit, Request, WireError};

/// Most publish attempts of one event while the bus is unavailable.
const PUBLISH_ATTEMPTS: u32 = 5;

/// Where and how the bridge listens (`[emitter]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitterConfig {
    /// Run the bridge in this process. Default false.
    pub enabled: bool,
    /// The Redis the emitters publish to. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// The emitters' `key` option (channel prefix). Default `socket.io`.
    pub key: String,
    /// How long the lease lasts unless renewed (renewed every third of it);
    /// a standby takes over at most about twice this after the holder
    /// died. Default 10 s.
    #[serde(with = "confab_config::duration")]
    pub lease_ttl: Duration,
    /// Largest message accepted, bytes. Default 1 MiB.
    pub max_payload: usize,
    /// Most target rooms (or except rooms) of one emit or request.
    /// Default 256.
    pub max_rooms: usize,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            redis_url: "redis://127.0.0.1:6379".into(),
            key: "socket.io".into(),
            lease_ttl: Duration::from_secs(10),
            max_payload: 1024 * 1024,
            max_rooms: 256,
        }
    }
}

impl std::fmt::Debug for EmitterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitterConfig")
            .field("enabled", &self.enabled)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("key", &self.key)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_payload", &self.max_payload)
            .field("max_rooms", &self.max_rooms)
            .finish()
    }
}

impl EmitterConfig {
    /// Checks ranges; the message names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return Err((
                "emitter.redis_url",
                format!("{:?} is not a redis:// URL", redact_url(&self.redis_url)),
            ));
        }
        if self.key.is_empty()
            || self.key.len() > 128
            || self.key.chars().any(|c| {
                c.is_control() || c.is_whitespace() || matches!(c, '*' | '?' | '[' | ']' | '\\')
            })
        {
            return Err((
                "emitter.key",
                "must be 1 to 128 characters without whitespace or * ? [ ] \\".into(),
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) || self.lease_ttl > Duration::from_secs(300)
        {
            return Err(("emitter.lease_ttl", "must be between 300ms and 5m".into()));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_payload) {
            return Err((
                "emitter.max_payload",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        if !(1..=10_000).contains(&self.max_rooms) {
            return Err(("emitter.max_rooms", "must be between 1 and 10000".into()));
        }
        Ok(())
    }
}

/// Why the bridge cannot start.
#[derive(Debug, thiserror::Error)]
#[error("emitter bridge: {0}")]
pub struct EmitterError(String);

/// The bridge, ready to [`run`](EmitterBridge::run).
pub struct EmitterBridge {
    config: EmitterConfig,
    client: redis::Client,
    service: Arc<MembershipService>,
    stats: Arc<EmitterStats>,
    lease: Arc<Lease>,
}

impl std::fmt::Debug for EmitterBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitterBridge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EmitterBridge {
    /// A bridge publishing through `service`. Connects nothing yet.
    pub fn new(
        config: EmitterConfig,
        service: Arc<MembershipService>,
    ) -> Result<Self, EmitterError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| EmitterError(format!("emitter.redis_url: {e}")))?;
        let stats = service.health().emitter_stats();
        let lease = Arc::new(Lease::new(
            format!("{}:confab-emitter-lease", config.key),
            config.lease_ttl,
            Arc::clone(&stats),
        ));
        Ok(Self {
            config,
            client,
            service,
            stats,
            lease,
        })
    }

    /// A view of whether this bridge acts now (holds the lease and waited
    /// its takeover period), e.g. for tests.
    pub fn acting_view(&self) -> ActingView {
        ActingView(Arc::clone(&self.lease))
    }

    /// Listens, holds or waits for the lease, and acts, until `stop`;
    /// reconnects to Redis (with a growing pause, at most 5 s) whenever the
    /// connection is lost.
    pub async fn run(self, stop: CancellationToken) {
        let bridge = Arc::new(self);
        let lease_task = {
            let bridge = Arc::clone(&bridge);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(100);
                let conn = loop {
                    match redis::aio::ConnectionManager::new(bridge.client.clone()).await {
                        Ok(c) => break c,
                        Err(e) => {
                            tracing::warn!(error = %e, "emitter bridge cannot reach Redis for its lease");
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                Arc::clone(&bridge.lease).run(conn, stop).await;
            })
        };
        // Dropping this future (an aborted task) ends the renewals too,
        // without giving the lease up: as a crash would.
        let lease_task = AbortOnDrop(Some(lease_task));
        let mut pause = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match bridge.listen(&stop).await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "emitter bridge lost its Redis subscription; reconnecting");
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Some(task) = AbortOnDrop::take(lease_task) {
            let _ = task.await;
        }
    }

    /// One subscription's life: until `stop` (Ok) or the connection ends.
    async fn listen(&self, stop: &CancellationToken) -> Result<(), redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        let emits = format!("{}#*", self.config.key);
        let requests = format!("{}-request#/#", self.config.key);
        pubsub.psubscribe(&emits).await?;
        pubsub.subscribe(&requests).await?;
        tracing::info!(key = %self.config.key, "emitter bridge listening");
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                msg = messages.next() => msg,
            };
            let Some(msg) = msg else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "subscription ended",
                )));
            };
            if !self.lease.acting() {
                continue;
            }
            let channel = msg.get_channel_name();
            let payload = msg.get_payload_bytes();
            if payload.len() > self.config.max_payload {
                tracing::warn!(%channel, bytes = payload.len(), "emitter message over emitter.max_payload ignored");
                self.stats.count("message", "too_large");
                continue;
            }
            if channel == requests {
                self.on_request(payload).await;
            } else {
                self.on_emit(channel, payload).await;
            }
        }
    }

    /// Parses room names; those Confab cannot have are logged and counted.
    fn parse_rooms(&self, names: &[String], what: &str) -> (Vec<RoomId>, usize) {
        let mut rooms = Vec::with_capacity(names.len());
        let mut unknown = 0;
        for name in names {
            match RoomId::parse(name) {
                Ok(room) if !rooms.contains(&room) => rooms.push(room),
                Ok(_) => {}
                Err(e) => {
                    unknown += 1;
                    let shown: String = name.chars().take(64).collect();
                    tracing::warn!(room = %shown, error = %e, "emitter {what} room is not a Confab room (kind:id, e.g. channel:42): skipped");
                }
            }
        }
        (rooms, unknown)
    }

    async fn on_emit(&self, channel: &str, payload: &[u8]) {
        let emit = match wire::decode_emit(payload) {
            Ok(e) => e,
            Err(e) => {
                let outcome = match e {
                    WireError::Malformed(_) => "malformed",
                    WireError::Unsupported(_) => "unsupported_value",
                };
                tracing::warn!(%channel, error = %e, "emitter message refused");
                self.stats.count("emit", outcome);
                return;
            }
        };
        if let Err(outcome) = self.publish_emit(&emit).await {
            self.stats.count("emit", outcome);
        }
    }

    /// Publishes one emit; `Err` is the refusal's outcome label.
    async fn publish_emit(&self, emit: &Emit) -> Result<(), &'static str> {
        if emit.nsp != "/" {
            tracing::warn!(nsp = %emit.nsp.chars().take(64).collect::<String>(), "emit to a namespace other than / refused: Confab serves / only");
            return Err("namespace");
        }
        if emit.packet_type != 2 {
            return Err("packet_type");
        }
        if let Err(e) = crate::service::check_event_name(&emit.event) {
            tracing::warn!(error = %e, "emit refused");
            return Err(if names::SERVER_EVENTS.contains(&emit.event.as_str()) {
                "reserved_event"
            } else {
                "invalid_event"
            });
        }
        if emit.rooms.is_empty() {
            tracing::warn!(event = %emit.event, "emit to every socket refused: Confab has no room holding every socket; emit to rooms (e.g. workspace:{{id}})");
            return Err("all_sockets");
        }
        if emit.rooms.len() > self.config.max_rooms || emit.except.len() > self.config.max_rooms {
            return Err("too_many_rooms");
        }
        let (except, bad_except) = self.parse_rooms(&emit.except, "except");
        if bad_except > 0 {
            // Delivering to a socket the app meant to leave out is worse
            // than not delivering.
            return Err("unknown_except_room");
        }
        let (rooms, unknown) = self.parse_rooms(&emit.rooms, "target");
        for _ in 0..unknown {
            self.stats.count("room", "unknown");
        }
        if rooms.is_empty() {
            return Err("unknown_room");
        }
        let args_json = serde_json::to_string(&emit.args).map_err(|_| "malformed")?;
        let mut headers = Vec::new();
        if rooms.len() > 1 {
            headers.push((HEADER_TARGET_ROOMS.to_owned(), join(&rooms)));
        }
        if !except.is_empty() {
            headers.push((HEADER_EXCEPT_ROOMS.to_owned(), join(&except)));
        }
        confab_telemetry::inject_context(&mut headers);
        // Attachments are stored with the event like any header: a binary
        // emit is durable, gets an offset and is replayed on recovery.
        let template = BusMessage::from_args_json(&emit.event, args_json)
            .with_headers(headers)
            .with_attachments(&emit.attachments);
        let id = format!("{:032x}", rand::random::<u128>());
        for room in &rooms {
            let mut msg = template.clone();
            if emit.volatile {
                msg = msg.into_volatile();
            } else {
                msg = msg.with_msg_id(format!("emitter:{id}:{room}"));
            }
            let outcome = self
                .publish(|| self.service.publish_app_event(room, msg.clone()))
                .await;
            self.stats.count("emit", outcome);
        }
        Ok(())
    }

    /// Publishes with bounded retries while the bus is unavailable; the
    /// outcome label.
    async fn publish<F, Fut>(&self, publish: F) -> &'static str
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<confab_bus::Published, ServiceError>>,
    {
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=PUBLISH_ATTEMPTS {
            match publish().await {
                Ok(_) => return "published",
                Err(ServiceError::Unavailable(e)) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "emitter bridge publish retried");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(ServiceError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "emitter bridge publish failed: bus unavailable");
                    return "unavailable";
                }
                Err(e) => {
                    tracing::warn!(error = %e, "emitter bridge publish refused");
                    return "refused";
                }
            }
        }
        "unavailable"
    }

    async fn on_request(&self, payload: &[u8]) {
        let request = match wire::decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "emitter request refused");
                self.stats.count("request", "malformed");
                return;
            }
        };
        match request {
            Request::Move {
                join,
                select,
                except,
                rooms,
            } => {
                let (kind, event) = if join {
                    ("join", names::SOCKETS_JOIN)
                } else {
                    ("leave", names::SOCKETS_LEAVE)
                };
                let (targets, unknown) = self.parse_rooms(&rooms, "join/leave");
                for _ in 0..unknown {
                    self.stats.count("room", "unknown");
                }
                if targets.is_empty() {
                    self.stats.count(kind, "unknown_room");
                    return;
                }
                let control = SocketsControl {
                    rooms: targets,
                    close: false,
                };
                let outcome = self.control(event, &select, &except, &control).await;
                self.stats.count(kind, outcome);
            }
            Request::Disconnect {
                select,
                except,
                close,
            } => {
                let control = SocketsControl {
                    rooms: Vec::new(),
                    close,
                };
                let outcome = self
                    .control(names::SOCKETS_DISCONNECT, &select, &except, &control)
                    .await;
                self.stats.count("disconnect", outcome);
            }
            Request::ServerSideEmit => {
                tracing::info!(
                    "serverSideEmit ignored: Confab servers have no server-side listeners"
                );
                self.stats.count("server_side_emit", "no_listener");
            }
            Request::WantsReply(kind) => {
                tracing::warn!(
                    kind,
                    "emitter request expecting a reply (fetchSockets, serverSideEmit with an ack, ...) is not supported: dropped"
                );
                self.stats.count("request", "wants_reply");
            }
        }
    }

    /// Publishes a socket control event to every selecting room; the
    /// outcome label.
    async fn control(
        &self,
        event: &'static str,
        select: &[String],
        except: &[String],
        control: &SocketsControl,
    ) -> &'static str {
        if select.is_empty() {
            tracing::warn!(
                event,
                "socket control for every socket refused: Confab has no room holding every socket; select rooms with .in(..)"
            );
            return "all_sockets";
        }
        if select.len() > self.config.max_rooms
            || except.len() > self.config.max_rooms
            || control.rooms.len() > self.config.max_rooms
        {
            return "too_many_rooms";
        }
        let (except, bad_except) = self.parse_rooms(except, "except");
        if bad_except > 0 {
            return "unknown_except_room";
        }
        let (rooms, unknown) = self.parse_rooms(select, "selecting");
        for _ in 0..unknown {
            self.stats.count("room", "unknown");
        }
        if rooms.is_empty() {
            return "unknown_room";
        }
        let Ok(body) = serde_json::to_string(&[control]) else {
            return "malformed";
        };
        let mut headers = Vec::new();
        if rooms.len() > 1 {
            headers.push((HEADER_TARGET_ROOMS.to_owned(), join(&rooms)));
        }
        if !except.is_empty() {
            headers.push((HEADER_EXCEPT_ROOMS.to_owned(), join(&except)));
        }
        let mut outcome = "published";
        for room in &rooms {
            let msg = BusMessage::from_args_json(event, body.clone()).with_headers(headers.clone());
            let o = self
                .publish(|| self.service.publish_control(room, msg.clone()))
                .await;
            if o != "published" {
                outcome = o;
            }
        }
        outcome
    }
}

/// Whether a bridge acts now (see [`EmitterBridge::acting_view`]).
#[derive(Debug, Clone)]
pub struct ActingView(Arc<Lease>);

impl ActingView {
    /// `true` while the bridge holds the lease and acts on what it hears.
    pub fn acting(&self) -> bool {
        self.0.acting()
    }

    /// How many times the bridge took the lease.
    pub fn taken(&self) -> u64 {
        self.0.taken()
    }
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn take(mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn join(rooms: &[RoomId]) -> String {
    rooms
        .iter()
        .map(RoomId::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_checked_only_when_enabled_and_names_the_key() {
        let off = EmitterConfig {
            redis_url: "nope".into(),
            ..EmitterConfig::default()
        };
        assert!(off.validate().is_ok());
        let on = EmitterConfig {
            enabled: true,
            ..EmitterConfig::default()
        };
        assert!(on.validate().is_ok());
        for (bad, key) in [
            (
                EmitterConfig {
                    redis_url: "nats://x".into(),
                    ..on.clone()
                },
                "emitter.redis_url",
            ),
            // A glob character would widen the pattern subscription.
            (
                EmitterConfig {
                    key: "socket*".into(),
                    ..on.clone()
                },
                "emitter.key",
            ),
            (
                EmitterConfig {
                    lease_ttl: Duration::from_millis(10),
                    ..on.clone()
                },
                "emitter.lease_ttl",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, key);
        }
    }
}
