//! Stream setup: the configuration of stream `ROOMS` and the create-or-update
//! step every process runs at start.
//!
//! The bus owns `ROOMS` only: durable room events published to
//! `in.rooms.{kind}.{id}`, republished after storage to `rooms.{kind}.{id}`
//! with `Nats-Sequence` / `Nats-Last-Sequence` (what live feeds check for
//! gaps), direct gets allowed (what replays without a consumer read).
//! Stream `MEMBERSHIP` belongs to the membership service, which sets it up
//! with its own settings through
//! [`NatsBus::ensure_stream`](super::NatsBus::ensure_stream); gateways never
//! touch it.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::config::NatsConfig;
use crate::BusError;
use crate::subjects::{ROOMS_LIVE_WILDCARD, ROOMS_PUBLISH_WILDCARD, ROOMS_STREAM};

impl NatsConfig {
    /// The configuration of stream `ROOMS` that
    /// [`NatsBus::ensure_rooms_stream`](super::NatsBus::ensure_rooms_stream)
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
}

/// How long a process at start keeps asking a JetStream that does not
/// answer: a cluster just (re)started from its stores answers stream
/// requests only once the stream's replicas have elected a leader, seconds
/// after every node is up (and its `/healthz` is green).
const START_WAIT: Duration = Duration::from_secs(30);

/// The pause between two tries at start.
const START_RETRY: Duration = Duration::from_millis(500);

/// Creates the stream of `config`, or updates it to `config`, waiting up to
/// [`START_WAIT`] for a JetStream that does not answer yet. Safe to run
/// from several processes at once.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        match try_ensure_stream(js, config.clone()).await {
            Err(BusError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(stream = %config.name, %why, "JetStream does not answer yet; retrying");
                tokio::time::sleep(START_RETRY).await;
            }
            result => return result,
        }
    }
}

async fn try_ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), BusError> {
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    let name = config.name.clone();
    let fail = |what: &str, e: &dyn fmt::Display, kind: &Kind| match kind {
        Kind::JetStreamUnavailable => BusError::Unsupported(format!(
            "JetStream is not enabled on the NATS server (start nats-server with -js); \
             cannot {what} stream {name}"
        )),
        Kind::TimedOut => BusError::Unavailable(format!("cannot {what} stream {name}: {e}")),
        // "JetStream cluster not available" (no meta leader yet, 503).
        Kind::JetStream(err) if err.code() == 503 => {
            BusError::Unavailable(format!("cannot {what} stream {name}: {e}"))
        }
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
