//! Reads of the stored room log, stream `ROOMS`: its bounds, one message by
//! sequence, and a range through a short-lived ordered consumer.
//!
//! Three parts of the bus read ranges through ordered consumers: gap repair
//! ([`feed`](super::feed)), the replay fallback ([`replay`](super::replay))
//! and the tail ([`tail`](super::tail)). Their pull batches stay well inside
//! the client's subscription buffer, which the consumer's inbox
//! subscription shares ([`batch_size`]); a range read is bounded by
//! [`REPAIR_TIMEOUT`] so a stuck server cannot hold a feed or a recovery
//! for ever.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use confab_events::RoomId;
use futures::StreamExt;

use super::codec::decode;
use super::ordered::{self, OnRestart};
use super::stats::Counters;
use crate::subjects::{ROOMS_STREAM, publish_subject};
use crate::{BusError, BusMessage};

/// How long one gap repair (or any range read of the log) may take before
/// it gives up on the rest.
pub(super) const REPAIR_TIMEOUT: Duration = Duration::from_secs(10);

/// An ordered consumer on stream `ROOMS`.
pub(super) type Ordered = consumer::Consumer<consumer::pull::OrderedConfig>;

/// The room log's bounds and replication, as read from the server.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogState {
    /// The first sequence still retained.
    pub(super) first: u64,
    /// The last sequence stored.
    pub(super) last: u64,
    /// Replicas of the stream.
    pub(super) replicas: usize,
    /// When the stream was created (Unix ns): a stream deleted and created
    /// again is another log.
    pub(super) created_ns: i128,
}

/// The room log's first and last sequences and its replicas, from one
/// stream info request.
pub(super) async fn read_log_state(js: &jetstream::Context) -> Result<LogState, BusError> {
    let stream = js
        .get_stream(ROOMS_STREAM)
        .await
        .map_err(|e| BusError::Unavailable(format!("cannot read stream {ROOMS_STREAM}: {e}")))?;
    let info = stream.cached_info();
    Ok(LogState {
        first: info.state.first_sequence,
        last: info.state.last_sequence,
        replicas: info.config.num_replicas,
        created_ns: info.created.unix_timestamp_nanos(),
    })
}

/// The stored message `seq` if it belongs to `room` (a direct get, no
/// consumer): [`Bus::fetch`](crate::Bus::fetch).
pub(super) async fn fetch(
    js: &jetstream::Context,
    counters: &Counters,
    room: &RoomId,
    seq: u64,
) -> Result<Option<BusMessage>, BusError> {
    use async_nats::jetstream::stream::DirectGetErrorKind as Kind;
    if seq == 0 {
        return Ok(None);
    }
    let stream = js
        .get_stream_no_info(ROOMS_STREAM)
        .await
        .map_err(|e| BusError::Unavailable(format!("cannot read stream {ROOMS_STREAM}: {e}")))?;
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
        counters,
    ))
}

/// The subjects an ordered consumer reads.
pub(super) enum Filter {
    /// One subject or wildcard.
    One(String),
    /// Several subjects (nats-server 2.10+).
    Many(Vec<String>),
}

/// Messages per pull batch, at most `limit`: half the subscription buffer
/// (`capacity`), between 1 and 1,000.
pub(super) fn batch_size(capacity: usize, limit: usize) -> i64 {
    (capacity / 2).min(limit).clamp(1, 1000) as i64
}

/// Creates an ordered consumer on stream `ROOMS` reading `filter` from
/// sequence `start` on, `max_batch` messages per pull; also returns the
/// stream (to delete the consumer afterwards).
pub(super) async fn ordered_consumer(
    js: &jetstream::Context,
    filter: Filter,
    start: u64,
    max_batch: i64,
) -> Result<(stream::Stream<()>, Ordered), String> {
    ordered_consumer_expiring(js, filter, start, max_batch, Duration::ZERO).await
}

/// [`ordered_consumer`] whose pull requests expire after `max_expires`
/// (zero: the client's default, 30 s). The client asks for idle heartbeats
/// at half the expiry and recreates the consumer after two missed ones, so
/// a short expiry bounds how long a lost consumer goes unnoticed.
pub(super) async fn ordered_consumer_expiring(
    js: &jetstream::Context,
    filter: Filter,
    start: u64,
    max_batch: i64,
    max_expires: Duration,
) -> Result<(stream::Stream<()>, Ordered), String> {
    let stream = js
        .get_stream_no_info(ROOMS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let (filter_subject, filter_subjects) = match filter {
        Filter::One(subject) => (subject, Vec::new()),
        Filter::Many(subjects) => (String::new(), subjects),
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            filter_subjects,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            max_batch,
            max_expires,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok((stream, consumer))
}

/// Reads an ordered consumer created at `start` ([`ordered_consumer`]) in
/// sequence order up to `last` (or until nothing is pending), handing each
/// message with its sequence and pending count to `take`, which may stop
/// early (`Ok(false)`) or fail. Bounded by [`REPAIR_TIMEOUT`]. Shared by gap
/// repair and replay.
///
/// Messages below `start` are never handed over ([`ordered::from_sequence`]
/// with [`OnRestart::Skip`]): a consumer the client recreated before its
/// first message reads from the stream's first message again, and handing
/// those over made a recovery replay every event of the socket's rooms
/// since the log began: a client got each one twice.
pub(super) async fn read_until(
    consumer: Ordered,
    start: u64,
    last: u64,
    mut take: impl FnMut(u64, u64, jetstream::Message) -> Result<bool, String>,
) -> Result<(), String> {
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = ordered::from_sequence(consumer, start, OnRestart::Skip)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + REPAIR_TIMEOUT;
    loop {
        let m = match tokio::time::timeout_at(deadline, messages.next()).await {
            Err(_) => return Err(format!("timed out after {REPAIR_TIMEOUT:?}")),
            // Skipping showed that nothing from `start` on is stored (any more).
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        if m.seq > last {
            return Ok(());
        }
        let (seq, pending) = (m.seq, m.pending);
        if !take(seq, pending, m.message)? || seq >= last || pending == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_test_support::NatsServer;

    /// A stream `ROOMS` on a fresh server holding `in.rooms.channel.a`
    /// messages 1..=5 and `in.rooms.channel.b` messages 6..=7.
    async fn stream_with_history() -> (NatsServer, jetstream::Context) {
        let server = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: ROOMS_STREAM.to_owned(),
            subjects: vec!["in.rooms.>".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
        for subject in ["a", "a", "a", "a", "a", "b", "b"] {
            js.publish(format!("in.rooms.channel.{subject}"), "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        (server, js)
    }

    /// The replay fallback's situation in a cluster moving its leaders: the
    /// ordered consumer (start 4) is gone before its first pull is
    /// answered, so the client recreates it, from the stream's first
    /// message. Only 4..=7 may come out; before the fix 1..=7 did (a
    /// recovered client got every event of its rooms since the log began
    /// again).
    #[tokio::test]
    async fn a_consumer_recreated_before_its_first_message_reads_from_start() {
        let (_server, js) = stream_with_history().await;
        let filter = Filter::Many(vec![
            "in.rooms.channel.a".to_owned(),
            "in.rooms.channel.b".to_owned(),
        ]);
        let (stream, consumer) = ordered_consumer(&js, filter, 4, 10).await.unwrap();
        // The first pull then goes to a consumer that no longer exists.
        let name = consumer.cached_info().name.clone();
        stream.delete_consumer(&name).await.unwrap();
        let mut got = Vec::new();
        read_until(consumer, 4, 7, |seq, _, _| {
            got.push(seq);
            Ok(true)
        })
        .await
        .unwrap();
        assert_eq!(got, vec![4, 5, 6, 7]);
    }
}
