//! The Redis bus ([`RedisBus`]).
//!
//! Durable room events go through one Lua script (`publish.lua`, run with
//! `EVALSHA` and loaded again on `NOSCRIPT`) that, atomically: answers the
//! first sequence of a duplicate `msg_id`, validates every key it will
//! write, takes the next global sequence, appends to the room's stream and
//! to the global log with `{seq}-0` as the entry id, records the room's
//! last sequence and publishes the event live with its sequence and the
//! room's previous one. See [`keys`] for the key layout (one hash tag:
//! on Redis Cluster the whole bus lives on one slot — failover, no
//! sharding of the log).
//!
//! The parts, from the bottom up (each uses only parts listed before it):
//!
//! * [`config`]: the settings, [`RedisConfig`].
//! * [`keys`]: key and channel names.
//! * [`codec`]: [`BusMessage`] to stored/published bytes and back.
//! * [`log`]: reads of the streams (fetch, ranges, replay, bounds) and the
//!   retention pass.
//! * [`live`]: pub/sub routing and room feeds with gap repair.
//! * [`topic`]: plain pub/sub topics (presence heartbeats) and the
//!   command connection lent to the process's other Redis users.
//!
//! This file connects, publishes, tails and hands the rest to its parts.
//!
//! Not here yet: bus metrics.

mod codec;
mod config;
mod keys;
mod live;
mod log;
mod topic;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

use async_trait::async_trait;
use confab_events::RoomId;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ProtocolVersion, Script};

use crate::{
    Bus, BusError, BusMessage, BusStatus, BusSubscription, BusTail, LogInfo, Published, TailItem,
};
use keys::Keys;
use live::{PushRouter, Reader, Router, Subscriptions};

pub use config::RedisConfig;
pub use topic::TopicSubscription;

/// How long a command may wait for its answer before the bus reports the
/// broker unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a tail's `XREAD BLOCK` waits for new entries before it asks
/// again.
const TAIL_BLOCK: Duration = Duration::from_secs(1);

/// Entries a tail reads per request.
const TAIL_PAGE: usize = 512;

/// The Redis bus. Cheap to clone; clones share the connections.
///
/// * Durable events: one script per publish (see the module docs);
///   `publish` resolves once the script returned (and, with
///   [`RedisConfig::wait_aof`], once the primary fsynced its AOF).
/// * Volatile events: `PUBLISH` only.
/// * Subscriptions: one channel subscription per room per process on a
///   RESP3 connection (user rooms: one shared pattern), resubscribed after
///   reconnects, repaired from the room's stream.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    url: String,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    script: Script,
    subs: Arc<Subscriptions>,
    high_water: Arc<AtomicU64>,
    /// Whether the last command on `conn` worked.
    commands_ok: AtomicBool,
    /// Times a command worked again after one failed for want of the
    /// server (the command connection came back).
    command_reconnects: AtomicU64,
    server_version: String,
    /// Whether the server had `appendonly yes` when the bus connected.
    aof: bool,
    retention: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.retention.abort();
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_max_delay(Duration::from_secs(2))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `major.minor` of an `INFO` answer's `redis_version`.
fn parse_version(info: &str) -> Option<(u32, u32, String)> {
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor, v.to_owned()))
}

impl RedisBus {
    /// Connects (commands, and a RESP3 connection for pub/sub), checks the
    /// server (Redis 7.0+; 7.2+ with `appendonly yes` when
    /// [`RedisConfig::wait_aof`] is set), creates the log's identity when
    /// there is none and starts the retention pass.
    ///
    /// Fails when the server cannot be reached now (no retry here: the
    /// caller decides). Once connected, both connections reconnect on
    /// their own.
    pub async fn connect(config: RedisConfig) -> Result<RedisBus, BusError> {
        config.validate()?;
        let url = confab_config::redact_url(&config.url);
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| BusError::Config(format!("redis url {url}: {e}")))?;
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
            .map_err(|e| BusError::Unavailable(format!("redis at {url}: {e}")))?;
        let (server_version, aof) = check_server(&mut conn, &config, &url).await?;
        let keys = Keys::new(&config.prefix);
        ensure_log_id(&mut conn, &keys).await?;
        let subs = Arc::new(connect_pubsub(&client, &keys, &config, &url).await?);
        let retention = tokio::spawn(retention_loop(conn.clone(), keys.clone(), config.clone()));
        tracing::info!(%url, version = %server_version, prefix = %config.prefix, "Redis bus connected");
        Ok(RedisBus {
            inner: Arc::new(Inner {
                script: Script::new(include_str!("publish.lua")),
                url,
                keys,
                client,
                conn,
                subs,
                high_water: Arc::new(AtomicU64::new(0)),
                commands_ok: AtomicBool::new(true),
                command_reconnects: AtomicU64::new(0),
                server_version,
                aof,
                retention,
                config,
            }),
        })
    }

    /// The configuration the bus was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Live messages dropped because a subscriber's buffer was full (each
    /// repaired from the room's stream when the next one arrives).
    pub fn dropped_live_messages(&self) -> u64 {
        self.inner.subs.router.dropped.load(Ordering::Relaxed)
    }

    /// Runs one retention pass now: drops what is older than
    /// [`RedisConfig::rooms_max_age`] (the periodic pass does the same
    /// every [`RedisConfig::trim_interval`]).
    pub async fn trim_now(&self) -> Result<(), BusError> {
        let cutoff = now_ms().saturating_sub(self.inner.config.rooms_max_age.as_millis() as u64);
        log::trim(&mut self.inner.conn.clone(), &self.inner.keys, cutoff).await
    }

    /// Drops everything stored before `cutoff` now (the periodic pass uses
    /// now minus [`RedisConfig::rooms_max_age`], which is never below the
    /// recovery window). For operators and tests.
    pub async fn trim_stored_before(&self, cutoff: SystemTime) -> Result<(), BusError> {
        let cutoff = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        log::trim(&mut self.inner.conn.clone(), &self.inner.keys, cutoff).await
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn note<T>(&self, r: Result<T, BusError>) -> Result<T, BusError> {
        let ok = !matches!(r, Err(BusError::Unavailable(_)));
        let was = self.inner.commands_ok.swap(ok, Ordering::Relaxed);
        if ok && !was {
            self.inner
                .command_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The publish itself, inside its producer span.
    async fn publish_traced(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        if msg.volatile {
            let mut conn = self.conn();
            let r = redis::cmd("PUBLISH")
                .arg(self.inner.keys.channel(room))
                .arg(codec::volatile_payload(&msg))
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| log::unavailable("publish a volatile event", &e));
            return self.note(r).map(|()| Published::default());
        }
        let r = self.publish_durable(room, &msg).await;
        self.note(r)
    }

    async fn publish_durable(
        &self,
        room: &RoomId,
        msg: &BusMessage,
    ) -> Result<Published, BusError> {
        let inner = &self.inner;
        let keys = &inner.keys;
        let window = inner.config.duplicate_window.as_millis() as u64;
        let (dedup_key, window) = match msg.msg_id.as_deref() {
            Some(id) => (keys.dedup(id), window),
            None => (keys.seq(), 0),
        };
        let mut conn = self.conn();
        let (seq, duplicate): (u64, u8) = inner
            .script
            .key(keys.seq())
            .key(keys.room(room))
            .key(keys.log())
            .key(keys.last())
            .key(dedup_key)
            .arg(room.to_string())
            .arg(codec::encode(msg))
            .arg(keys.channel(room))
            .arg(window)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| script_error(room, &e))?;
        inner.high_water.fetch_max(seq, Ordering::Relaxed);
        if inner.config.wait_aof && duplicate == 0 {
            wait_aof(&mut conn, room).await?;
        }
        Ok(Published {
            seq: Some(seq),
            duplicate: duplicate == 1,
        })
    }
}

fn script_error(room: &RoomId, e: &redis::RedisError) -> BusError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
    {
        BusError::Unavailable(format!("cannot store an event of {room}: {e}"))
    } else {
        BusError::Rejected(format!("cannot store an event of {room}: {e}"))
    }
}

async fn wait_aof(conn: &mut ConnectionManager, room: &RoomId) -> Result<(), BusError> {
    let (local, _replicas): (u64, u64) = redis::cmd("WAITAOF")
        .arg(1)
        .arg(0)
        .arg(RESPONSE_TIMEOUT.as_millis() as u64)
        .query_async(conn)
        .await
        .map_err(|e| log::unavailable("wait for the AOF fsync", &e))?;
    if local < 1 {
        return Err(BusError::Unavailable(format!(
            "an event of {room} was stored but not fsynced to the AOF in time; it may be lost on a crash"
        )));
    }
    Ok(())
}

async fn check_server(
    conn: &mut ConnectionManager,
    config: &RedisConfig,
    url: &str,
) -> Result<(String, bool), BusError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("persistence")
        .query_async(conn)
        .await
        .map_err(|e| BusError::Unavailable(format!("redis at {url}: INFO failed: {e}")))?;
    let (major, minor, version) = parse_version(&info)
        .ok_or_else(|| BusError::Unsupported(format!("redis at {url} reports no redis_version")))?;
    if (major, minor) < (7, 0) {
        return Err(BusError::Unsupported(format!(
            "redis at {url} is {version}; the Redis bus needs Redis 7.0 or newer"
        )));
    }
    let aof = info.lines().any(|l| l.trim() == "aof_enabled:1");
    if config.wait_aof {
        if (major, minor) < (7, 2) {
            return Err(BusError::Unsupported(format!(
                "bus.redis.wait_aof needs WAITAOF (Redis 7.2+), but redis at {url} is {version}; \
                 upgrade Redis or set wait_aof = false (acks then mean \"in memory\")"
            )));
        }
        if !aof {
            return Err(BusError::Unsupported(format!(
                "bus.redis.wait_aof needs `appendonly yes` on redis at {url}"
            )));
        }
    }
    Ok((version, aof))
}

async fn ensure_log_id(conn: &mut ConnectionManager, keys: &Keys) -> Result<String, BusError> {
    let candidate = format!(
        "redis:{}:{}:{}",
        keys.log(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::process::id()
    );
    let (_, id): ((), String) = redis::pipe()
        .cmd("SET")
        .arg(keys.log_id())
        .arg(&candidate)
        .arg("NX")
        .ignore()
        .get(keys.log_id())
        .query_async(conn)
        .await
        .map(|(id,): (String,)| ((), id))
        .map_err(|e| log::unavailable("create the log's identity", &e))?;
    Ok(id)
}

async fn connect_pubsub(
    client: &redis::Client,
    keys: &Keys,
    config: &RedisConfig,
    url: &str,
) -> Result<Subscriptions, BusError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let resp3 = redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| BusError::Config(format!("redis url {url}: {e}")))?;
    let router = Arc::new(Router::default());
    let push = PushRouter {
        router: Arc::clone(&router),
        keys: keys.clone(),
    };
    let pubsub = ConnectionManager::new_with_config(
        resp3,
        manager_config()
            .set_push_sender(push)
            .set_automatic_resubscription(),
    )
    .await
    .map_err(|e| BusError::Unavailable(format!("redis pub/sub at {url}: {e}")))?;
    router.connected.store(true, Ordering::Relaxed);
    let watcher = tokio::spawn(live::watch_reconnects(Arc::clone(&router), pubsub.clone()));
    Ok(Subscriptions {
        router,
        pubsub,
        lock: tokio::sync::Mutex::new(()),
        capacity: config.subscription_capacity,
        shared_user_rooms: config.shared_user_rooms,
        pattern_on: AtomicBool::new(false),
        watcher,
    })
}

async fn retention_loop(mut conn: ConnectionManager, keys: Keys, config: RedisConfig) {
    let mut every = tokio::time::interval(config.trim_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // One process trims per interval (a lease that expires with it):
        // every gateway runs this loop, one pass is enough.
        let lease: Result<Option<String>, _> = redis::cmd("SET")
            .arg(keys.trim_lease())
            .arg(std::process::id())
            .arg("NX")
            .arg("PX")
            .arg(config.trim_interval.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        if !matches!(lease, Ok(Some(_))) {
            continue;
        }
        let cutoff = now_ms().saturating_sub(config.rooms_max_age.as_millis() as u64);
        if let Err(e) = log::trim(&mut conn, &keys, cutoff).await {
            tracing::warn!(error = %e, "redis bus: retention pass failed; retrying later");
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, room: &RoomId, msg: BusMessage) -> Result<Published, BusError> {
        codec::validate(&msg)?;
        // The producer span's context travels in the message's headers
        // (the encoded message keeps them), as on NATS.
        let span = crate::trace::send_span(crate::trace::SYSTEM_REDIS, room, &msg);
        let _entered = span.enter();
        let msg = crate::trace::with_current_context(msg);
        drop(_entered);
        let published = self
            .publish_traced(room, msg)
            .instrument(span.clone())
            .await;
        if let Ok(Published { seq: Some(seq), .. }) = &published {
            span.record("confab.seq", seq);
        }
        published
    }

    async fn subscribe(&self, room: &RoomId) -> Result<BusSubscription, BusError> {
        let reader = Reader {
            conn: self.conn(),
            keys: self.inner.keys.clone(),
            high_water: Arc::clone(&self.inner.high_water),
        };
        live::subscribe(&self.inner.subs, reader, room).await
    }

    async fn fetch(&self, room: &RoomId, seq: u64) -> Result<Option<BusMessage>, BusError> {
        let r = log::fetch(&mut self.conn(), &self.inner.keys, room, seq).await;
        self.note(r)
    }

    async fn replay(
        &self,
        rooms: &[RoomId],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<TailItem>, BusError> {
        if rooms.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let keys = &self.inner.keys;
        let (first, last) = self.note(log::bounds(&mut conn, keys).await)?;
        self.inner.high_water.fetch_max(last, Ordering::Relaxed);
        let start = from_seq.max(1);
        if start > last {
            return Ok(Vec::new());
        }
        if start < first {
            return Err(BusError::Trimmed(format!(
                "replay from {start}: the log now starts at {first}"
            )));
        }
        self.note(log::replay(&mut conn, keys, rooms, start, last, max).await)
    }

    fn high_water(&self) -> u64 {
        self.inner.high_water.load(Ordering::Relaxed)
    }

    async fn refresh_high_water(&self) -> Result<u64, BusError> {
        let (_, last) = self.note(log::bounds(&mut self.conn(), &self.inner.keys).await)?;
        Ok(self
            .inner
            .high_water
            .fetch_max(last, Ordering::Relaxed)
            .max(last))
    }

    async fn tail(&self, from_seq: u64) -> Result<BusTail, BusError> {
        let mut conn = self.conn();
        let keys = self.inner.keys.clone();
        let from_seq = from_seq.max(1);
        let (first, last) = self.note(log::bounds(&mut conn, &keys).await)?;
        if from_seq < first && from_seq <= last {
            return Err(BusError::Trimmed(format!(
                "tail from {from_seq}: the log now starts at {first}"
            )));
        }
        // Its own connection: `XREAD BLOCK` holds a connection's pipeline,
        // and must be allowed to outlast the block.
        let blocking_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(TAIL_BLOCK + RESPONSE_TIMEOUT));
        let blocking = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&blocking_config)
            .await
            .map_err(|e| log::unavailable("open a connection for the tail", &e))?;
        Ok(tail_stream(conn, blocking, keys, from_seq))
    }

    /// The id is created once per log (key `{prefix}:log-id`, `SET NX`): a
    /// wiped Redis, or another prefix, is another log.
    async fn log_info(&self) -> Result<LogInfo, BusError> {
        let mut conn = self.conn();
        // Read (or create) it again: a wiped Redis is a new log.
        let id = self.note(ensure_log_id(&mut conn, &self.inner.keys).await)?;
        let (first, last) = self.note(log::bounds(&mut conn, &self.inner.keys).await)?;
        Ok(LogInfo {
            id,
            first_seq: first,
            last_seq: last,
        })
    }

    fn status(&self) -> BusStatus {
        let inner = &self.inner;
        let connected = inner.commands_ok.load(Ordering::Relaxed)
            && inner.subs.router.connected.load(Ordering::Relaxed);
        let mut detail = format!(
            "Redis at {} (server {}), keys under {{{}}}, acks {}",
            inner.url,
            inner.server_version,
            inner.config.prefix,
            if inner.config.wait_aof {
                "after the AOF fsync (WAITAOF)"
            } else if inner.aof {
                "after the AOF write (appendonly yes; on disk as the server's appendfsync says; no WAITAOF)"
            } else {
                "in memory (AOF off; no WAITAOF)"
            }
        );
        if !connected {
            detail.push_str("; disconnected, reconnecting");
        }
        BusStatus {
            kind: "redis",
            connected,
            reconnects: inner.command_reconnects.load(Ordering::Relaxed)
                + inner.subs.router.reconnects.load(Ordering::Relaxed),
            shared: true,
            detail,
        }
    }
}

/// The stored log from `next` on: pages of `XRANGE`, then `XREAD BLOCK` on
/// a connection of its own for what comes later. Ends at its first error.
fn tail_stream(
    conn: ConnectionManager,
    blocking: redis::aio::MultiplexedConnection,
    keys: Keys,
    next: u64,
) -> BusTail {
    struct State {
        conn: ConnectionManager,
        blocking: redis::aio::MultiplexedConnection,
        keys: Keys,
        next: u64,
        buffered: std::collections::VecDeque<TailItem>,
        failed: bool,
    }
    let state = State {
        conn,
        blocking,
        keys,
        next,
        buffered: Default::default(),
        failed: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.failed {
                return None;
            }
            if let Some(item) = st.buffered.pop_front() {
                return Some((Ok(item), st));
            }
            let page = log::log_page(&mut st.conn, &st.keys, st.next, None, TAIL_PAGE).await;
            match page {
                Ok((items, Some(last))) => {
                    st.next = last + 1;
                    st.buffered.extend(items);
                }
                Ok((_, None)) => {
                    // Nothing new: wait (at most a second) for an entry past
                    // the last one read.
                    let waited: Result<redis::Value, _> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(1)
                        .arg("BLOCK")
                        .arg(TAIL_BLOCK.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(st.keys.log())
                        .arg(format!("{}-0", st.next.saturating_sub(1)))
                        .query_async(&mut st.blocking)
                        .await;
                    if let Err(e) = waited {
                        st.failed = true;
                        return Some((Err(log::unavailable("wait for new events", &e)), st));
                    }
                }
                Err(e) => {
                    st.failed = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}
