//! [`JetStreamEventStore`]: the event store on the JetStream stream
//! `MEMBERSHIP`, one subject per aggregate.
//!
//! * **append** publishes the envelope JSON to
//!   `membership.events.{kind}.{id}` with `Nats-Expected-Last-Subject-Sequence:
//!   <expected>` (optimistic concurrency per aggregate), `Nats-Msg-Id:
//!   <envelope id>` (a retried append is answered with the first sequence,
//!   nothing is stored twice) and `Nats-Expected-Stream: MEMBERSHIP`. The
//!   server refuses a wrong last sequence with error 10071, which becomes
//!   [`StoreError::Conflict`]. An expected sequence of 0 means "no message
//!   on this subject yet": nats-server 2.10+ checks it as such (an aggregate
//!   that already has events refuses it), which the tests pin.
//! * **load** reads the aggregate's last sequence (a stream message get by
//!   subject), then replays the subject with an ordered consumer up to it.
//! * **tail** is an ordered consumer over `membership.events.>` from a
//!   start sequence; it recreates itself across gaps and missed heartbeats
//!   (pulls expire after [`TAIL_EXPIRES`], heartbeats at half of it). Made
//!   by [`JetStreamEventStore::from_bus`], it also ends with
//!   [`StoreError::Unavailable`] when the bus's client reconnects (a
//!   restarted server forgot the consumer), so that its reader resumes from
//!   its checkpoint within a moment rather than after missed heartbeats,
//!   and when it yielded nothing for two checks a second apart while the
//!   stream held more (a consumer lost with its cluster node: the client
//!   library's own recreation backs off to 10 s a try).
//! * **last_seq** is the stream's last sequence.
//!
//! Dedup of retried appends holds within the stream's duplicate window
//! (2 minutes by default, `NatsConfig::duplicate_window`).
//!
//! The membership service owns the stream: [`JetStreamEventStore::from_bus`]
//! creates `MEMBERSHIP` or updates it to [`stream_config`] (the service's
//! own `[nats]` settings) every time the service starts. Gateways only set
//! up stream `ROOMS` and never touch the membership log, so a gateway's
//! settings can never change it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM, NATS_MESSAGE_ID,
};
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use confab_bus::ordered::{self, OnRestart};
use confab_bus::subjects::HEADER_TRACEPARENT;
use confab_bus::{AdaptiveTimeout, NatsBus, NatsConfig};
use confab_events::RoomId;
use confab_events::membership::{EventEnvelope, SCHEMA_VERSION};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::store::{EventStore, StoreError, Stored};

pub use confab_bus::subjects::{MEMBERSHIP_STREAM, MEMBERSHIP_WILDCARD};

/// How many events after a stale expected version a conflicting append
/// looks through for its own earlier copy (a retry).
const MAX_RETRY_SCAN: usize = 64;

/// How long a tail's pull requests live (its idle heartbeats come at half
/// of it: a lost consumer is recreated after two missed ones).
const TAIL_EXPIRES: Duration = Duration::from_secs(2);

/// How often a tail with nothing to yield checks whether the log moved on
/// without it (two checks: a consumer lost with its node is noticed within
/// 1 to 2 s instead of the client library's recreation backoff).
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Longest a load may take before the store is reported unavailable.
const LOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The subject of an aggregate's events, e.g. `membership.events.channel.42`.
pub fn aggregate_subject(aggregate: &RoomId) -> String {
    confab_bus::subjects::membership_subject(aggregate)
}

/// The configuration of stream `MEMBERSHIP` (the permanent membership log:
/// no age limit) that [`JetStreamEventStore::from_bus`] creates or updates:
/// the duplicate window and replicas of the service's `[nats]` settings.
pub fn stream_config(nats: &NatsConfig) -> stream::Config {
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
        duplicate_window: nats.duplicate_window,
        num_replicas: nats.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The event store on JetStream.
#[derive(Clone)]
pub struct JetStreamEventStore {
    js: jetstream::Context,
    stream: stream::Stream,
    /// The bus's reconnect signal (see [`NatsBus::reconnects`]).
    reconnects: Option<tokio::sync::watch::Receiver<u64>>,
    /// The bound on setting up a tail, shared by the store's clones.
    tail_setup: Arc<AdaptiveTimeout>,
}

impl JetStreamEventStore {
    /// Creates stream `MEMBERSHIP` on the bus's server, or updates it to
    /// [`stream_config`] of the bus's settings, then uses it. Safe to run
    /// from several instances at once.
    pub async fn from_bus(bus: &NatsBus) -> Result<Self, StoreError> {
        bus.ensure_stream(stream_config(bus.config()))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut store = Self::open(bus.jetstream().clone(), None).await?;
        store.reconnects = Some(bus.reconnects());
        Ok(store)
    }

    /// Uses the `MEMBERSHIP` stream on `client`'s server, creating it with
    /// `config` (e.g. [`stream_config`]) when missing; an existing stream is
    /// used as it is.
    pub async fn connect(
        client: async_nats::Client,
        config: stream::Config,
    ) -> Result<Self, StoreError> {
        Self::open(jetstream::new(client), Some(config)).await
    }

    async fn open(
        js: jetstream::Context,
        create: Option<stream::Config>,
    ) -> Result<Self, StoreError> {
        let stream = match create {
            Some(config) => js.get_or_create_stream(config).await.map_err(|e| {
                unavailable(
                    &format!("cannot open or create stream {MEMBERSHIP_STREAM}"),
                    e,
                )
            })?,
            None => js
                .get_stream(MEMBERSHIP_STREAM)
                .await
                .map_err(|e| unavailable(&format!("cannot open stream {MEMBERSHIP_STREAM}"), e))?,
        };
        let subjects = &stream.cached_info().config.subjects;
        if !subjects
            .iter()
            .any(|s| s == MEMBERSHIP_WILDCARD || s == ">")
        {
            return Err(StoreError::Unavailable(format!(
                "stream {MEMBERSHIP_STREAM} exists with subjects {subjects:?}, which do not cover {MEMBERSHIP_WILDCARD}"
            )));
        }
        Ok(Self {
            js,
            stream,
            reconnects: None,
            tail_setup: Arc::new(AdaptiveTimeout::log_setup()),
        })
    }

    fn parse(seq: u64, payload: &[u8]) -> Result<Stored, StoreError> {
        let envelope: EventEnvelope =
            serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
        if envelope.v == 0 || envelope.v > SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                seq,
                reason: format!(
                    "schema version {} is not understood (this build reads 1..={SCHEMA_VERSION})",
                    envelope.v
                ),
            });
        }
        Ok(Stored {
            seq,
            envelope,
            traceparent: None,
        })
    }

    async fn subject_version(&self, subject: &str) -> Result<u64, StoreError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(unavailable("cannot read the aggregate's last event", e)),
        }
    }

    /// The sequence of the event with envelope id `id` stored on `subject`
    /// after sequence `after`, if any (at most [`MAX_RETRY_SCAN`] events are
    /// looked at).
    async fn find_after(
        &self,
        subject: &str,
        after: u64,
        id: &str,
    ) -> Result<Option<u64>, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let mut from = after + 1;
        for _ in 0..MAX_RETRY_SCAN {
            let m = match self
                .stream
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject)
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(unavailable("cannot read the aggregate's events", e)),
            };
            let same = match m.headers.get(NATS_MESSAGE_ID) {
                Some(v) => v.as_str() == id,
                None => Self::parse(m.sequence, &m.payload)?.envelope.id == id,
            };
            if same {
                return Ok(Some(m.sequence));
            }
            from = m.sequence + 1;
        }
        Ok(None)
    }

    async fn ordered(
        &self,
        filter: String,
        deliver_policy: consumer::DeliverPolicy,
        max_expires: Duration,
    ) -> Result<(consumer::pull::Ordered, String), StoreError> {
        let consumer = self
            .ordered_consumer(filter, deliver_policy, max_expires)
            .await?;
        let name = consumer.cached_info().name.clone();
        let messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("cannot read from the ordered consumer", e))?;
        Ok((messages, name))
    }

    async fn ordered_consumer(
        &self,
        filter: String,
        deliver_policy: consumer::DeliverPolicy,
        max_expires: Duration,
    ) -> Result<consumer::Consumer<consumer::pull::OrderedConfig>, StoreError> {
        self.stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                max_expires,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("cannot create an ordered consumer", e))
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// The actual last sequence named in the server's "wrong last sequence: N"
/// error description.
fn actual_from(description: &str) -> Option<u64> {
    const MARK: &str = "wrong last sequence: ";
    let at = description.rfind(MARK)? + MARK.len();
    let digits: String = description[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[async_trait]
impl EventStore for JetStreamEventStore {
    async fn append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
    ) -> Result<u64, StoreError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let payload = serde_json::to_vec(event).map_err(|e| StoreError::Corrupt {
            seq: 0,
            reason: format!("cannot serialize the event: {e}"),
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, event.id.as_str());
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        headers.insert(NATS_EXPECTED_STREAM, MEMBERSHIP_STREAM);
        // The appending span's context, for the projections and the
        // notifier (nothing when spans are not exported).
        let mut trace: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut trace);
        for (name, value) in &trace {
            headers.insert(name.as_str(), value.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(aggregate_subject(aggregate), headers, payload.into())
            .await
            .map_err(|e| unavailable("cannot publish the event", e))?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // The server checks the expected sequence before the message
                // id, so a retry of an append that was stored (its ack lost)
                // lands here: answer it with the first sequence.
                let subject = aggregate_subject(aggregate);
                if let Some(seq) = self.find_after(&subject, expected, &event.id).await? {
                    return Ok(seq);
                }
                Err(StoreError::Conflict {
                    aggregate: aggregate.to_string(),
                    expected,
                    actual: actual_from(&e.to_string()),
                })
            }
            Err(e) => Err(unavailable("the event was not acknowledged", e)),
        }
    }

    async fn load(&self, aggregate: &RoomId) -> Result<Vec<Stored>, StoreError> {
        let subject = aggregate_subject(aggregate);
        let last = self.subject_version(&subject).await?;
        if last == 0 {
            return Ok(Vec::new());
        }
        let (mut messages, consumer) = self
            .ordered(subject, consumer::DeliverPolicy::All, Duration::ZERO)
            .await?;
        let read = async {
            let mut out = Vec::new();
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| unavailable("cannot read the aggregate's events", e))?;
                let seq = m
                    .info()
                    .map_err(|e| unavailable("message without JetStream metadata", e))?
                    .stream_sequence;
                out.push(Self::parse(seq, &m.payload)?);
                if seq >= last {
                    return Ok(out);
                }
            }
            Err(StoreError::Unavailable(
                "the ordered consumer ended before the aggregate's last event".into(),
            ))
        };
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, read).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "loading {aggregate} took longer than {LOAD_TIMEOUT:?}"
            ))
        });
        drop(messages);
        // The consumer would otherwise linger until its inactivity
        // threshold (30 s); removing it is not worth waiting for.
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&consumer).await;
        });
        loaded?
    }

    async fn tail(
        &self,
        from_seq: u64,
    ) -> Result<BoxStream<'static, Result<Stored, StoreError>>, StoreError> {
        // Taken before the consumer exists: a reconnect from now on may
        // have lost it.
        let reconnects = self.reconnects.clone().map(|mut r| {
            r.mark_unchanged();
            r
        });
        // Bounded: while a cluster elects a new stream leader the request
        // goes unanswered until the client's 5 s timeout (twice: create,
        // first pull); the caller's retry comes sooner.
        // A consumer the client recreates from the log's first event (one
        // that delivered nothing yet, lost with its node) ends the tail
        // (`confab_bus::ordered`): the projector and the notifier resume from
        // their checkpoints instead of being handed the log again.
        let from = from_seq.max(1);
        let bound = self.tail_setup.current();
        let messages = self
            .tail_setup
            .run(async {
                let consumer = self
                    .ordered_consumer(
                        MEMBERSHIP_WILDCARD.to_owned(),
                        consumer::DeliverPolicy::ByStartSequence {
                            start_sequence: from,
                        },
                        TAIL_EXPIRES,
                    )
                    .await?;
                ordered::from_sequence(consumer, from, OnRestart::End)
                    .await
                    .map_err(|e| unavailable("cannot read from the ordered consumer", e))
            })
            .await
            .ok_or_else(|| {
                StoreError::Unavailable(format!("no tail consumer within {bound:?}"))
            })??;
        let reconnected = futures::stream::once(async move {
            let changed = match reconnects {
                Some(mut r) => r.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                // Nothing to watch: the consumer's own heartbeats remain.
                futures::future::pending::<()>().await;
            }
            Err::<Stored, _>(StoreError::Unavailable(
                "NATS reconnected: the tail's consumer may be lost; resume from the checkpoint"
                    .into(),
            ))
        });
        let events = messages.map(move |m| {
            let m = m.map_err(|e| unavailable("tail interrupted", e))?;
            let (seq, m) = (m.seq, m.message);
            let mut stored = Self::parse(seq, &m.payload)?;
            stored.traceparent = m
                .headers
                .as_ref()
                .and_then(|h| h.get(HEADER_TRACEPARENT))
                .map(|v| v.as_str().to_owned());
            Ok(stored)
        });
        // A consumer lost with its node while this client stayed connected
        // is noticed by the stall check (`confab_bus::end_when_stalled`).
        let stream = self.stream.clone();
        let events = confab_bus::end_when_stalled(
            futures::stream::select(events, reconnected),
            from_seq.max(1),
            STALL_CHECK,
            |stored: &Stored| Some(stored.seq),
            move || {
                let mut stream = stream.clone();
                async move { stream.info().await.ok().map(|i| i.state.last_sequence) }
            },
            |at, last| {
                StoreError::Unavailable(format!(
                    "the tail's consumer stopped at sequence {at} while the log holds {last}: \
                     resume from the checkpoint"
                ))
            },
        );
        // The projector and the notifier end their session at the first
        // error and resume from their checkpoints.
        Ok(events.boxed())
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("cannot read stream info", e))?;
        Ok(info.state.last_sequence)
    }

    async fn version(&self, aggregate: &RoomId) -> Result<u64, StoreError> {
        self.subject_version(&aggregate_subject(aggregate)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_mirror_room_names() {
        let r = RoomId::parse("channel:42").unwrap();
        assert_eq!(aggregate_subject(&r), "membership.events.channel.42");
    }

    #[test]
    fn parses_the_actual_sequence_from_the_error() {
        assert_eq!(actual_from("wrong last sequence: 17"), Some(17));
        assert_eq!(
            actual_from("wrong last sequence: wrong last sequence: 3 (code 400, error code 10071)"),
            Some(3)
        );
        assert_eq!(actual_from("no digits"), None);
    }
}
