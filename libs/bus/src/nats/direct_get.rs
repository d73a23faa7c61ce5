//! Replays without a consumer: JetStream batched direct gets
//! (nats-server 2.11+, stream option `allow_direct`).
//!
//! A request to `$JS.API.DIRECT.GET.{stream}` with
//! `{"seq": S, "next_by_subj": SUBJECT, "batch": N, "max_bytes": B}` is
//! answered with up to N stored messages of SUBJECT from sequence S on, in
//! order, each with headers `Nats-Sequence`, `Nats-Subject`,
//! `Nats-Num-Pending` (matching messages left after it) and
//! `Nats-Last-Sequence` (the previous message of this batch, 0 for the
//! first), then a status message `204 EOB` with `Nats-Num-Pending` (left
//! after the batch) and `Nats-Last-Sequence` (the last one sent). No match
//! at all is a single `404`; a stream without direct gets has no responder
//! (`503`). A server older than 2.11 ignores `batch` and answers one message
//! without `Nats-Num-Pending`. A request from below the stream's first
//! sequence silently starts at the first: the caller checks that first.
//!
//! [`replay`] sends one batch per room, all rooms at once, asks again for
//! rooms with more than a batch and merges the rooms by sequence. Every
//! batch is checked: each message names the previous one of its batch and
//! the final `204 EOB` the last one sent, so a message dropped on the way
//! (e.g. by a full subscription buffer) is noticed
//! ([`DirectError::Incomplete`]) and the caller reads through a consumer
//! instead ([`replay`](super::replay)).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message};
use confab_events::RoomId;
use futures::StreamExt;
use serde::Serialize;

use super::codec::{decode, header_u64};
use super::stats::Counters;
use crate::TailItem;
use crate::subjects::{HEADER_LAST_SEQUENCE, HEADER_SEQUENCE, publish_subject};

/// Most messages asked for in one batch.
const MAX_BATCH: usize = 1000;
/// Most bytes of messages one batch carries (the server sends at least one
/// message, then stops once past this).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

const HEADER_NUM_PENDING: &str = "Nats-Num-Pending";
const HEADER_SUBJECT: &str = "Nats-Subject";

/// Why a direct-get replay did not answer.
#[derive(Debug)]
pub(super) enum DirectError {
    /// The server cannot serve batched direct gets here (direct gets off on
    /// the stream, a server that ignores `batch`): read through a consumer.
    Unsupported(String),
    /// A batch came back with a message missing or out of place (e.g.
    /// dropped by a full subscription buffer): read through a consumer.
    Incomplete(String),
    /// NATS failed or did not answer in time.
    Unavailable(String),
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
    max_bytes: usize,
}

/// One room's progress.
struct RoomRead {
    room: RoomId,
    subject: String,
    /// The next sequence to ask for.
    next: u64,
    /// Its messages read so far (sequences up to `last` only), in order.
    items: Vec<TailItem>,
    /// Every message of the room from the start through `covered` is in
    /// `items`.
    covered: u64,
    /// Nothing more to read: covered through `last`, or `max` messages.
    done: bool,
    /// The last sequence received in the current batch (0: none yet).
    prev: u64,
    /// The current batch's final message arrived.
    answered: bool,
}

/// The stored messages of `rooms` with sequences in `start..=last`, in
/// sequence order, at most `max`: one batch per room at a time, all rooms'
/// batches in flight together, merged by sequence. Every message up to
/// `last` must already be stored (the caller read `last` from the stream
/// before calling). `capacity` is the client's subscription buffer, which
/// the messages in flight must stay well inside.
#[allow(clippy::too_many_arguments)]
pub(super) async fn replay(
    client: &Client,
    stream: &str,
    counters: &Counters,
    capacity: usize,
    timeout: Duration,
    rooms: &[RoomId],
    start: u64,
    last: u64,
    max: usize,
) -> Result<Vec<TailItem>, DirectError> {
    let unavailable = |e: &dyn std::fmt::Display| DirectError::Unavailable(e.to_string());
    let mut reads: Vec<RoomRead> = rooms
        .iter()
        .map(|room| RoomRead {
            room: room.clone(),
            subject: publish_subject(room),
            next: start,
            items: Vec::new(),
            covered: start - 1,
            done: false,
            prev: 0,
            answered: false,
        })
        .collect();
    if reads.is_empty() || max == 0 || start > last {
        return Ok(Vec::new());
    }
    let api = format!("$JS.API.DIRECT.GET.{stream}");
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(format!("{inbox}.>"))
        .await
        .map_err(|e| unavailable(&e))?;
    // Messages in flight at once, well inside the subscription buffer (each
    // batch adds its final status message).
    let budget = (capacity / 4).max(1);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut round = 0u64;
    loop {
        round += 1;
        let asked: Vec<usize> = (0..reads.len())
            .filter(|&i| !reads[i].done)
            .take(budget)
            .collect();
        let per_room = (budget / asked.len()).clamp(1, MAX_BATCH);
        for &i in &asked {
            let r = &mut reads[i];
            r.prev = 0;
            r.answered = false;
            let request = BatchRequest {
                seq: r.next,
                next_by_subj: &r.subject,
                batch: per_room.min(max - r.items.len()),
                max_bytes: MAX_BATCH_BYTES,
            };
            let body = serde_json::to_vec(&request).map_err(|e| unavailable(&e))?;
            client
                .publish_with_reply(api.clone(), format!("{inbox}.{round}.{i}"), body.into())
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let mut waiting = asked.len();
        while waiting > 0 {
            let message = match tokio::time::timeout_at(deadline, replies.next()).await {
                Err(_) => {
                    return Err(DirectError::Unavailable(format!(
                        "direct gets did not answer within {timeout:?}"
                    )));
                }
                Ok(None) => return Err(DirectError::Unavailable("subscription ended".into())),
                Ok(Some(m)) => m,
            };
            let tag = message
                .subject
                .strip_prefix(inbox.as_str())
                .and_then(|t| t.strip_prefix('.'))
                .and_then(|t| t.split_once('.'))
                .and_then(|(r, i)| Some((r.parse::<u64>().ok()?, i.parse::<usize>().ok()?)));
            let i = match tag {
                Some((r, i)) if r == round && i < reads.len() && !reads[i].answered => i,
                _ => {
                    return Err(DirectError::Incomplete(format!(
                        "unexpected reply on {}",
                        message.subject
                    )));
                }
            };
            if on_reply(&mut reads[i], message, last, max, counters)? {
                waiting -= 1;
            }
        }
        // Every room's messages are known through the least covered one.
        let through = reads.iter().map(|r| r.covered).min().unwrap_or(last);
        let known = reads
            .iter()
            .map(|r| r.items.partition_point(|i| seq_of(i) <= through))
            .sum::<usize>();
        if known >= max || reads.iter().all(|r| r.done) {
            let mut out: Vec<TailItem> = reads
                .into_iter()
                .flat_map(|r| r.items)
                .filter(|i| seq_of(i) <= through)
                .collect();
            out.sort_unstable_by_key(seq_of);
            out.truncate(max);
            return Ok(out);
        }
    }
}

fn seq_of(item: &TailItem) -> u64 {
    item.msg.seq.unwrap_or(0)
}

/// Takes one reply of `r`'s current batch; `Ok(true)` once the batch is
/// answered.
fn on_reply(
    r: &mut RoomRead,
    message: Message,
    last: u64,
    max: usize,
    counters: &Counters,
) -> Result<bool, DirectError> {
    let headers = message.headers.as_ref();
    match message.status.map(|s| s.as_u16()) {
        None => {
            let (Some(seq), Some(prev)) = (
                header_u64(headers, HEADER_SEQUENCE),
                header_u64(headers, HEADER_LAST_SEQUENCE),
            ) else {
                return Err(DirectError::Unsupported(
                    "a direct get reply without Nats-Sequence / Nats-Last-Sequence".into(),
                ));
            };
            if header_u64(headers, HEADER_NUM_PENDING).is_none() {
                return Err(DirectError::Unsupported(
                    "the server answers direct gets without batches (nats-server 2.11+ needed)"
                        .into(),
                ));
            }
            let subject = header_str(headers, HEADER_SUBJECT);
            if subject != Some(r.subject.as_str())
                || prev != r.prev
                || seq <= r.prev
                || seq < r.next
            {
                return Err(DirectError::Incomplete(format!(
                    "batch of {} from {}: got sequence {seq} of {subject:?} after {prev}, expected one after {}",
                    r.subject, r.next, r.prev
                )));
            }
            r.prev = seq;
            if seq <= last
                && let Some(msg) = decode(&r.room, headers, &message.payload, Some(seq), counters)
            {
                r.items.push(TailItem {
                    room: r.room.clone(),
                    msg,
                });
            }
            Ok(false)
        }
        // End of batch.
        Some(204) => {
            let (Some(pending), Some(sent_last)) = (
                header_u64(headers, HEADER_NUM_PENDING),
                header_u64(headers, HEADER_LAST_SEQUENCE),
            ) else {
                return Err(DirectError::Unsupported(
                    "an end-of-batch status without Nats-Num-Pending / Nats-Last-Sequence".into(),
                ));
            };
            if sent_last != r.prev || r.prev == 0 {
                return Err(DirectError::Incomplete(format!(
                    "batch of {} from {} ended at {sent_last}, received through {}",
                    r.subject, r.next, r.prev
                )));
            }
            r.answered = true;
            if pending == 0 || r.prev >= last {
                r.covered = last;
                r.done = true;
            } else {
                r.covered = r.prev;
                r.next = r.prev + 1;
                // More than `max` of this room alone: the first `max` of
                // all rooms end at or before its `max`-th.
                r.done = r.items.len() >= max;
            }
            Ok(true)
        }
        // Nothing (more) stored for the subject.
        Some(404) if r.prev == 0 => {
            r.answered = true;
            r.covered = last;
            r.done = true;
            Ok(true)
        }
        Some(503) => Err(DirectError::Unsupported(
            "no responder for direct gets: the stream does not allow them (allow_direct)".into(),
        )),
        Some(408) => Err(DirectError::Unsupported(format!(
            "the server refused the batched direct get: {}",
            message.description.as_deref().unwrap_or("408")
        ))),
        Some(code) => Err(DirectError::Unavailable(format!(
            "direct get of {} answered {code} {}",
            r.subject,
            message.description.as_deref().unwrap_or_default()
        ))),
    }
}

fn header_str<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}
