//! The event store port: the append-only, versioned log of membership
//! events, with optimistic concurrency per aggregate.
//!
//! Implementations: JetStream (stream `MEMBERSHIP`, one subject per
//! aggregate, `Nats-Expected-Last-Subject-Sequence` for concurrency) and SQL
//! (the all-in-one run; a unique `(aggregate, prev_seq)` index enforces the
//! same rule).

use async_trait::async_trait;
use confab_events::RoomId;
use confab_events::membership::EventEnvelope;
use futures::stream::BoxStream;

/// An event with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Global sequence in the log (JetStream stream sequence), from 1.
    pub seq: u64,
    /// The event.
    pub envelope: EventEnvelope,
    /// The W3C `traceparent` of the span that appended it (JetStream
    /// headers; `None` in the SQL store and when spans are not exported):
    /// projections and the notifier continue the command's trace.
    pub traceparent: Option<String>,
}

impl Stored {
    /// The appending span's context, if the event carries one.
    pub fn producer(&self) -> Option<confab_telemetry::SpanContext> {
        let traceparent = self.traceparent.as_deref()?;
        confab_telemetry::remote_span_context(
            &[("traceparent".to_owned(), traceparent.to_owned())][..],
        )
    }

    /// A consumer span processing this event in `consumer` (a projection,
    /// the notifier): a child of the appending span, so one membership
    /// command is one trace; `Span::none()` when spans are not exported or
    /// the event carries no trace context.
    pub fn process_span(&self, consumer: &'static str) -> tracing::Span {
        if !confab_telemetry::is_exporting() {
            return tracing::Span::none();
        }
        let Some(producer) = self.producer() else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!(
            "membership.process",
            otel.name = "process membership.events.{kind}.{id}",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.template = "membership.events.{kind}.{id}",
            messaging.consumer.group.name = consumer,
            messaging.message.id = self.envelope.id.as_str(),
            confab.seq = self.seq,
            confab.event = self.envelope.event.type_name(),
        );
        confab_telemetry::set_parent_span(&span, producer);
        span
    }
}

/// An event store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another command appended to the aggregate first.
    #[error(
        "concurrent change to {aggregate}: expected last sequence {expected}, found {actual:?}"
    )]
    Conflict {
        /// The aggregate (`channel:42`, ...).
        aggregate: String,
        /// The last sequence the command was decided against.
        expected: u64,
        /// The actual last sequence, when known.
        actual: Option<u64>,
    },
    /// The store cannot be reached.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// A stored event cannot be read (unknown schema version, bad JSON).
    #[error("event {seq} cannot be read: {reason}")]
    Corrupt {
        /// Its sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
}

/// The event store port.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends one event to its aggregate if the aggregate's last sequence
    /// is still `expected` (0: the aggregate has no events yet). Returns the
    /// new event's sequence. Appending the same envelope id twice (a retry)
    /// returns the first sequence and stores nothing.
    async fn append(
        &self,
        aggregate: &RoomId,
        expected: u64,
        event: &EventEnvelope,
    ) -> Result<u64, StoreError>;

    /// Every event of one aggregate, in order.
    async fn load(&self, aggregate: &RoomId) -> Result<Vec<Stored>, StoreError>;

    /// Every event of every aggregate from `from_seq` (inclusive) in log
    /// order; the stream stays open and yields events as they are appended.
    async fn tail(
        &self,
        from_seq: u64,
    ) -> Result<BoxStream<'static, Result<Stored, StoreError>>, StoreError>;

    /// Sequence of the last event in the log, 0 when empty.
    async fn last_seq(&self) -> Result<u64, StoreError>;

    /// Sequence of the aggregate's last event, 0 when it has none: what
    /// `append` compares `expected` with. The service uses it to check that
    /// a cached state of another aggregate is current before relying on
    /// it. The default loads the aggregate; implementations should answer
    /// from an index.
    async fn version(&self, aggregate: &RoomId) -> Result<u64, StoreError> {
        Ok(self.load(aggregate).await?.last().map_or(0, |s| s.seq))
    }
}
