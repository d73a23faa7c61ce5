//! The replay strategy of [`Bus::replay`](crate::Bus::replay): batched
//! direct gets when the server and the stream allow them, one ordered
//! consumer otherwise.
//!
//! A replay reads the log's first and last sequence first (one stream info
//! request that started after the replay did, shared by every replay
//! waiting for one: [`Inner::log_state`]) and stops at that last sequence:
//! later messages arrive live. It refuses a start below the first retained
//! sequence ([`BusError::Trimmed`]): direct gets, like a consumer, would
//! silently start at the first retained message.
//!
//! **Direct gets** ([`direct_get`]) create no consumer.
//! They are used unless `bus.nats.direct_replay` is off, stream `ROOMS` has
//! more than one replica (a replica may answer a direct get before it holds
//! the newest messages) or the server is older than 2.11 (no batches); at
//! most [`MAX_DIRECT_REPLAYS`] run at once per connection, for memory. A
//! batch that came back incomplete (a message dropped on the way) or a
//! server that turns out not to batch falls back to a consumer.
//!
//! **The consumer fallback** reads through one ordered consumer filtered on
//! the rooms' subjects, deleted afterwards. At most
//! [`NatsConfig::max_replay_consumers`](super::NatsConfig::max_replay_consumers)
//! run at once per connection (later ones wait): with G gateways, never more
//! than G times that many recovery consumers however many clients reconnect
//! at once. [`NatsBusStats`](super::NatsBusStats) counts both paths and the
//! fallbacks.

use std::fmt;
use std::sync::atomic::Ordering;

use confab_events::RoomId;

use super::codec::stored_item;
use super::connection::parse_server_version;
use super::direct_get::{self, DirectError};
use super::log::{self, Filter, LogState, REPAIR_TIMEOUT};
use super::state::Inner;
use super::stats::bump;
use crate::subjects::{ROOMS_STREAM, publish_subject};
use crate::{BusError, ReplayPath, TailItem};

/// Oldest nats-server that answers batched direct gets (replays without a
/// consumer).
const MIN_DIRECT_BATCH_VERSION: (u64, u64) = (2, 11);

/// Most replays one connection reads with direct gets at once (each has at
/// most a quarter of the subscription buffer in flight); later ones wait.
pub const MAX_DIRECT_REPLAYS: usize = 64;

/// [`Bus::replay_via`](crate::Bus::replay_via): the stored messages of
/// `rooms` from `from_seq` on, at most `max`, and how they were read.
pub(super) async fn replay(
    inner: &Inner,
    rooms: &[RoomId],
    from_seq: u64,
    max: usize,
) -> Result<(Vec<TailItem>, ReplayPath), BusError> {
    let mut rooms: Vec<RoomId> = rooms.to_vec();
    rooms.sort_unstable();
    rooms.dedup();
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
        ..
    } = inner.log_state().await?;
    let start = from_seq.max(1);
    let unusable = direct_unusable(inner, replicas);
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
    match unusable {
        Some(why) => warn_direct_once(inner, &why),
        None => {
            if let Some(items) = replay_direct(inner, &rooms, start, last, max).await? {
                return Ok((items, ReplayPath::Direct));
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

/// The replay with batched direct gets; `None` when it must be read
/// through a consumer instead.
async fn replay_direct(
    inner: &Inner,
    rooms: &[RoomId],
    start: u64,
    last: u64,
    max: usize,
) -> Result<Option<Vec<TailItem>>, BusError> {
    let _permit = inner
        .direct_replays
        .acquire()
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
    let read = direct_get::replay(
        &inner.client,
        ROOMS_STREAM,
        &inner.counters,
        inner.config.subscription_capacity,
        REPAIR_TIMEOUT,
        rooms,
        start,
        last,
        max,
    )
    .await;
    match read {
        Ok(items) => {
            bump(&inner.counters.direct_replays, 1);
            Ok(Some(items))
        }
        Err(DirectError::Unavailable(e)) => Err(BusError::Unavailable(format!(
            "cannot replay room events: {e}"
        ))),
        Err(DirectError::Unsupported(why)) => {
            bump(&inner.counters.direct_fallbacks, 1);
            warn_direct_once(inner, &why);
            Ok(None)
        }
        Err(DirectError::Incomplete(why)) => {
            bump(&inner.counters.direct_fallbacks, 1);
            tracing::warn!(%why, "a direct-get replay came back incomplete; reading it through a consumer");
            Ok(None)
        }
    }
}

/// Why replays cannot use direct gets now, if they cannot.
fn direct_unusable(inner: &Inner, replicas: usize) -> Option<String> {
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

fn warn_direct_once(inner: &Inner, why: &str) {
    if !inner.warned_direct.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %why,
            "recovery replays read through JetStream consumers, not direct gets: slower, and bounded by recovery.max_concurrent_replays"
        );
    }
}

/// The replay through one ordered consumer filtered on the rooms'
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
    let max_batch = log::batch_size(inner.config.subscription_capacity, max);
    let (stream, consumer) =
        log::ordered_consumer(&inner.jetstream, Filter::Many(subjects), start, max_batch)
            .await
            .map_err(|e| unavailable(&e))?;
    let name = consumer.cached_info().name.clone();
    let mut out = Vec::new();
    let result = log::read_until(consumer, start, last, |seq, _pending, message| {
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
