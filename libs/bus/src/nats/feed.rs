//! Room feeds: one live subscription per room, with gap repair.
//!
//! A feed is one core NATS subscription on `rooms.{kind}.{id}` (or its slot
//! in the shared `rooms.user.*` subscription, see
//! [`shared_feed`](super::shared_feed)): no JetStream consumer per room or
//! socket. Core NATS is at-most-once, so each feed tracks the last stream
//! sequence it delivered ([`GapTracker`]) and, when a message's
//! `Nats-Last-Sequence` shows that something was lost (slow consumer,
//! reconnect), first fetches the missing stored messages from `ROOMS` with
//! a short-lived ordered consumer filtered on `in.rooms.{kind}.{id}` and
//! delivers them in order, then the message. After a reconnect or a
//! slow-consumer warning (the re-check signal of
//! [`connection`](super::connection)) every feed also asks for the last
//! stored sequence of its room and fetches what it missed, so the last
//! events before a quiet period are not lost either. A repair delivers at
//! most [`MAX_REPAIR_MESSAGES`]; live messages a repair already delivered
//! are dropped as duplicates. Volatile messages carry no sequence and are
//! delivered as they come, never repaired.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use confab_events::{RoomId, RoomKind};
use futures::StreamExt;
use tokio::sync::watch;

use super::codec::{decode, header_u64};
use super::connection::round_trip;
use super::log::{self, Filter};
use super::shared_feed::{SlotEvent, SlotHandle};
use super::state::Inner;
use super::stats::bump;
use crate::gap::{GapDecision, GapTracker};
use crate::subjects::{
    HEADER_LAST_SEQUENCE, HEADER_SEQUENCE, ROOMS_STREAM, live_subject, publish_subject,
};
use crate::{BusError, BusMessage, BusSubscription};

/// Most stored messages one gap repair delivers; a larger gap delivers the
/// oldest ones and logs how many were left out.
pub const MAX_REPAIR_MESSAGES: usize = 10_000;

/// Reads of one gap repair (the first and its retries) before its
/// messages are given up as missing.
const REPAIR_ATTEMPTS: u32 = 4;

/// The pause before a repair's retry, times the attempt number.
const REPAIR_BACKOFF: Duration = Duration::from_millis(500);

/// How often a subscription tries to check for missed messages after a
/// reconnect (JetStream may need a moment), and how long it waits in between.
const CATCH_UP_ATTEMPTS: u32 = 3;
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// [`Bus::subscribe`](crate::Bus::subscribe): registers the room's live
/// subscription (confirmed by the server) and returns its feed.
pub(super) async fn subscribe(
    inner: &Arc<Inner>,
    room: &RoomId,
) -> Result<BusSubscription, BusError> {
    let unavailable = |e: String| BusError::Unavailable(format!("cannot subscribe to {room}: {e}"));
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

/// Fetches the stored messages of `filter` with stream sequences in
/// `from..=to`, in order, at most [`MAX_REPAIR_MESSAGES`]. On failure returns
/// what it got so far and the error.
async fn fetch_stored(
    inner: &Inner,
    filter: &str,
    from: u64,
    to: u64,
) -> (Vec<(u64, async_nats::jetstream::Message)>, Option<String>) {
    let mut got = Vec::new();
    let result = async {
        let max_batch = log::batch_size(inner.config.subscription_capacity, usize::MAX);
        let (_, consumer) =
            log::ordered_consumer(&inner.jetstream, Filter::One(filter.to_owned()), from, max_batch)
                .await?;
        log::read_until(consumer, from, to, |seq, pending, message| {
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
        let (inner, subject) = (&self.inner, &self.stored_subject);
        let (room, ready) = (&self.room, &mut self.ready);
        let (repaired, error) = read_with_retries(
            from,
            to,
            |next| fetch_stored(inner, subject, next, to),
            |messages| {
                bump(&counters.repaired_messages, messages.len() as u64);
                for (seq, m) in messages {
                    ready.extend(decode(
                        room,
                        m.headers.as_ref(),
                        &m.payload,
                        Some(seq),
                        counters,
                    ));
                }
            },
            |next, attempt, error| {
                tracing::info!(
                    %room, from = next, to, why, attempt, %error,
                    "retrying a gap repair"
                );
            },
        )
        .await;
        match error {
            None => tracing::debug!(
                room = %self.room, from, to, repaired, why,
                "repaired a gap in a room feed"
            ),
            Some(error) => {
                bump(&counters.repair_failures, 1);
                tracing::warn!(
                    room = %self.room, from, to, repaired, why, %error,
                    "could not repair a gap in a room feed: messages are missing"
                );
            }
        }
    }
}

/// Reads stored messages `from..=to` with `fetch` (which returns what it
/// read, in order, and the error that stopped it, if any), handing each
/// read's messages to `take`. A read that fails part-way (a JetStream
/// cluster electing a leader answers nothing for seconds) is retried from
/// the message after the last one read, after [`REPAIR_BACKOFF`] times the
/// attempt number, at most [`REPAIR_ATTEMPTS`] reads in all: giving up
/// would lose the missing messages for every local socket of the room,
/// while waiting only delays the room's later messages (they queue behind
/// the repair, in order). Returns how many messages were read and the
/// last error when the messages could not all be read.
async fn read_with_retries<T, Fut>(
    from: u64,
    to: u64,
    mut fetch: impl FnMut(u64) -> Fut,
    mut take: impl FnMut(Vec<(u64, T)>),
    mut on_retry: impl FnMut(u64, u32, &str),
) -> (usize, Option<String>)
where
    Fut: std::future::Future<Output = (Vec<(u64, T)>, Option<String>)>,
{
    let (mut next, mut read, mut attempt) = (from, 0usize, 1u32);
    loop {
        let (messages, error) = fetch(next).await;
        read += messages.len();
        if let Some((seq, _)) = messages.last() {
            next = seq + 1;
        }
        take(messages);
        match error {
            Some(error)
                if attempt < REPAIR_ATTEMPTS && next <= to && read < MAX_REPAIR_MESSAGES =>
            {
                on_retry(next, attempt, &error);
                tokio::time::sleep(REPAIR_BACKOFF * attempt).await;
                attempt += 1;
            }
            // Everything up to `to` was read before the error: done.
            Some(_) if next > to => return (read, None),
            error => return (read, error),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted store: each read answers with the messages from the
    /// asked sequence on, up to its `limit` messages, then its error.
    async fn run(
        script: Vec<(usize, Option<&'static str>)>,
        from: u64,
        to: u64,
    ) -> (Vec<u64>, Vec<u64>, usize, Option<String>, Duration) {
        let script = std::cell::RefCell::new(VecDeque::from(script));
        let asked = std::cell::RefCell::new(Vec::new());
        let mut got = Vec::new();
        let started = tokio::time::Instant::now();
        let (read, error) = read_with_retries(
            from,
            to,
            |next| {
                asked.borrow_mut().push(next);
                let (limit, error) = script.borrow_mut().pop_front().expect("an unscripted read");
                let end = (next + limit as u64).min(to + 1);
                let messages: Vec<(u64, ())> = (next..end).map(|seq| (seq, ())).collect();
                async move { (messages, error.map(str::to_owned)) }
            },
            |messages| got.extend(messages.into_iter().map(|(seq, ())| seq)),
            |_, _, _| {},
        )
        .await;
        (asked.into_inner(), got, read, error, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_failing_part_way_is_retried_from_where_it_stopped() {
        // 10..=20: the first read stops after 3 messages (a leader
        // election), the second gets nothing, the third the rest.
        let (asked, got, read, error, waited) = run(
            vec![
                (3, Some("timed out")),
                (0, Some("no responders")),
                (100, None),
            ],
            10,
            20,
        )
        .await;
        assert_eq!(asked, vec![10, 13, 13]);
        assert_eq!(
            got,
            (10..=20).collect::<Vec<_>>(),
            "every message once, in order"
        );
        assert_eq!((read, error), (11, None));
        assert_eq!(
            waited,
            REPAIR_BACKOFF * 3,
            "0.5 s, then 1 s between the reads"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repair_gives_up_after_its_attempts() {
        let script = vec![(1, Some("timed out")); REPAIR_ATTEMPTS as usize];
        let (asked, got, read, error, _) = run(script, 1, 9).await;
        assert_eq!(asked, (1..=REPAIR_ATTEMPTS as u64).collect::<Vec<_>>());
        assert_eq!(got, asked, "what was read is kept");
        assert_eq!(read, REPAIR_ATTEMPTS as usize);
        assert_eq!(error.as_deref(), Some("timed out"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_after_the_last_message_is_neither_retried_nor_reported() {
        // Everything up to `to` was read before the read failed.
        let (asked, got, _, error, waited) = run(vec![(5, Some("consumer ended"))], 1, 5).await;
        assert_eq!((asked, got), (vec![1], vec![1, 2, 3, 4, 5]));
        assert_eq!(error, None, "nothing is missing");
        assert_eq!(waited, Duration::ZERO);
    }
}
