//! [`Bus::publish`](crate::Bus::publish) on NATS.
//!
//! Durable room events are published with JetStream to
//! `in.rooms.{kind}.{id}` and resolve once stream `ROOMS` stored them (the
//! server then republishes them to the live subject with their sequence).
//! Volatile events (typing, presence) are published with core NATS straight
//! to `rooms.{kind}.{id}`: never stored, no sequence.

use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use confab_events::RoomId;

use tracing::Instrument as _;

use super::codec::{ArcStrBytes, outgoing_headers};
use super::state::Inner;
use crate::subjects::{live_subject, publish_subject};
use crate::{BusError, BusMessage, Published};

/// Publishes `msg` to `room`: stored first unless volatile, inside a
/// producer span (`send in.rooms.{kind}.{id}`) whose context the headers
/// carry.
pub(super) async fn publish(
    inner: &Inner,
    room: &RoomId,
    msg: BusMessage,
) -> Result<Published, BusError> {
    let span = crate::trace::send_span(crate::trace::SYSTEM_NATS, room, &msg);
    let published = publish_in_span(inner, room, msg)
        .instrument(span.clone())
        .await;
    if let Ok(Published { seq: Some(seq), .. }) = &published {
        span.record("confab.seq", seq);
    }
    published
}

async fn publish_in_span(
    inner: &Inner,
    room: &RoomId,
    msg: BusMessage,
) -> Result<Published, BusError> {
    let headers = outgoing_headers(&msg)?;
    let payload = Bytes::from_owner(ArcStrBytes(Arc::clone(&msg.args_json)));
    if msg.volatile {
        inner
            .client
            .publish_with_headers(live_subject(room), headers, payload)
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot publish to {room}: {e}")))?;
        return Ok(Published::default());
    }
    let ack = async {
        inner
            .jetstream
            .publish_with_headers(publish_subject(room), headers, payload)
            .await?
            .await
    }
    .await
    .map_err(|e| publish_error(room, e))?;
    inner.counters.saw(ack.sequence);
    Ok(Published {
        seq: Some(ack.sequence),
        duplicate: ack.duplicate,
    })
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
