//! [`Bus::tail`](crate::Bus::tail) on NATS: one ordered consumer over every
//! room subject (`in.rooms.>`) from a start sequence, stored messages first,
//! then new ones as they are stored.
//!
//! The feed ends at its first error so that the caller (e.g. the message
//! history projection) resumes from its own checkpoint. A lost consumer is
//! noticed promptly: the feed ends with an error as soon as the client
//! reconnects (a restarted nats-server has forgotten every ephemeral
//! consumer), and the consumer's pulls expire after [`TAIL_EXPIRES`], so a
//! consumer that vanished without a reconnect (deleted, or its server
//! paused in a cluster) misses its idle heartbeats within about two seconds
//! and is recreated by the client; one recreated before it delivered
//! anything starts again at the log's first message, so the feed ends at a
//! message below the next one expected ([`ordered`](super::ordered)).
//! Messages outside
//! the room subjects or without a valid event are skipped (and counted, see
//! [`codec`](super::codec)).
//!
//! A start below the first retained sequence, with messages stored since,
//! is [`BusError::Trimmed`]: those messages were dropped by retention
//! (`rooms_max_age`) before the caller read them, and an ordered consumer
//! would silently start at the first retained one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::codec::stored_item;
use super::log::{self, Filter};
use super::ordered::{self, OnRestart};
use super::state::Inner;
use crate::subjects::ROOMS_PUBLISH_WILDCARD;
use crate::{BusError, BusTail, TailItem};

/// How long the tail's pull requests live; idle heartbeats come at half
/// of it (see [`log::ordered_consumer_expiring`]).
const TAIL_EXPIRES: Duration = Duration::from_secs(2);

/// How often a tail with nothing to yield checks whether the log moved on
/// without it ([`crate::end_when_stalled`]: two checks, so a consumer lost
/// with its node is noticed within 1 to 2 s).
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Every stored room message from `from_seq` on, then live.
pub(super) async fn tail(inner: Arc<Inner>, from_seq: u64) -> Result<BusTail, BusError> {
    let unavailable =
        |e: &dyn fmt::Display| BusError::Unavailable(format!("cannot tail room events: {e}"));
    let from_seq = from_seq.max(1);
    // Taken before the consumer exists: a reconnect from now on may have
    // lost it.
    let mut reconnects = inner.reconnects.clone();
    reconnects.mark_unchanged();
    let bound = inner.tail_setup.current();
    let messages = inner
        .tail_setup
        .run(setup(&inner, from_seq))
        .await
        .ok_or_else(|| unavailable(&format!("no stream info and consumer within {bound:?}")))??;
    let js = inner.jetstream.clone();
    let feed = messages.filter_map(move |item| {
        let item = match item {
            Ok(m) => stored_item(&m.message, m.seq, &inner.counters).map(Ok),
            Err(e) => Some(Err(unavailable(&e))),
        };
        futures::future::ready(item)
    });
    let reconnected = futures::stream::once(async move {
        if reconnects.changed().await.is_err() {
            // The connection is gone for good: nothing to watch.
            futures::future::pending::<()>().await;
        }
        Err(BusError::Unavailable(
            "NATS reconnected: the tail's consumer may be lost; resume from the checkpoint"
                .to_owned(),
        ))
    });
    let feed = futures::stream::select(feed, reconnected);
    let feed = crate::end_when_stalled(
        feed,
        from_seq,
        STALL_CHECK,
        |item: &TailItem| item.msg.seq,
        move || {
            let js = js.clone();
            async move { log::read_log_state(&js).await.ok().map(|s| s.last) }
        },
        |at, last| {
            BusError::Unavailable(format!(
                "the tail's consumer stopped at sequence {at} while the room log holds {last}: \
                 resume from the checkpoint"
            ))
        },
    );
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

/// Checks that `from_seq` was not trimmed away, then creates the tail's
/// consumer and sends its first pull. A consumer the client recreates from
/// below `from_seq` (see [`ordered`](super::ordered)) ends the tail: the
/// caller resumes from its checkpoint instead of being handed the log
/// again.
async fn setup(
    inner: &Inner,
    from_seq: u64,
) -> Result<
    impl Stream<Item = Result<ordered::Positioned, ordered::OrderedError>> + Send + Unpin + use<>,
    BusError,
> {
    let unavailable =
        |e: &dyn fmt::Display| BusError::Unavailable(format!("cannot tail room events: {e}"));
    let state = log::read_log_state(&inner.jetstream).await?;
    if from_seq < state.first && from_seq <= state.last {
        return Err(BusError::Trimmed(format!(
            "the room log (stream ROOMS) starts at sequence {}; messages {from_seq} to {} were \
             dropped by retention before they were read",
            state.first,
            state.first - 1
        )));
    }
    let max_batch = log::batch_size(inner.config.subscription_capacity, usize::MAX);
    let (_, consumer) = log::ordered_consumer_expiring(
        &inner.jetstream,
        Filter::One(ROOMS_PUBLISH_WILDCARD.to_owned()),
        from_seq,
        max_batch,
        TAIL_EXPIRES,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    ordered::from_sequence(consumer, from_seq, OnRestart::End)
        .await
        .map_err(|e| unavailable(&e))
}
