//! Every reader of a JetStream ordered consumer that starts at a sequence
//! goes through [`from_sequence`], which keeps it from being handed the log
//! again from its first message.
//!
//! async-nats recreates an ordered consumer after a missed heartbeat, a
//! "no responders" or "consumer deleted" answer (a cluster moving its
//! leaders, a node lost). It recreates it just after the last stream
//! sequence it delivered. One that has delivered nothing yet is recreated
//! at stream sequence 0, i.e. `DeliverPolicy::All`: from the stream's
//! first message, not from the start the reader asked for: unguarded, a
//! recovery replay on a replicated stream would re-send a socket's whole
//! room history, and a tail would hand its projector the log again.

use async_nats::jetstream::{self, consumer};
use futures::{Stream, StreamExt};

/// What a reader does with messages below the next sequence it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRestart {
    /// Skip them and go on (a bounded read: its consumer re-reads at most
    /// the stream up to where the reader is).
    Skip,
    /// End with [`OrderedError::Restarted`]: a tail resumes from its own
    /// checkpoint with a new consumer instead of reading the whole log.
    End,
}

/// A message of an ordered consumer at or above the reader's position.
#[derive(Debug)]
pub struct Positioned {
    /// Its stream sequence.
    pub seq: u64,
    /// Messages of the consumer's filter stored after it, when it was sent.
    pub pending: u64,
    /// The message.
    pub message: jetstream::Message,
}

/// Why an ordered consumer's messages ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderedError {
    /// The consumer was recreated from below the reader's position
    /// ([`OnRestart::End`]).
    #[error("the consumer restarted at sequence {seq}, below {next}: resume from the checkpoint")]
    Restarted {
        /// The sequence it restarted at.
        seq: u64,
        /// The next sequence the reader expected.
        next: u64,
    },
    /// The client reported an error, or a message came without JetStream
    /// metadata.
    #[error("{0}")]
    Client(String),
}

/// The messages of `consumer` (created to start at `start`) from `start` on,
/// in stream order, each once, with `policy` for a consumer recreated from
/// below the reader's position. Ends after the first error, and, with
/// [`OnRestart::Skip`], when a skipped message shows nothing stored after
/// it (nothing from the reader's position on exists).
pub async fn from_sequence(
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    start: u64,
    policy: OnRestart,
) -> Result<impl Stream<Item = Result<Positioned, OrderedError>> + Send + Unpin, OrderedError> {
    let messages = consumer
        .messages()
        .await
        .map_err(|e| OrderedError::Client(e.to_string()))?;
    Ok(positioned(messages, start, policy))
}

/// Where a reader stands.
struct Position {
    next: u64,
    skipped: u64,
    ended: bool,
}

/// [`from_sequence`] over an open message stream.
fn positioned<E: std::fmt::Display>(
    messages: impl Stream<Item = Result<jetstream::Message, E>> + Send + Unpin,
    start: u64,
    policy: OnRestart,
) -> impl Stream<Item = Result<Positioned, OrderedError>> + Send + Unpin {
    let position = Position {
        next: start.max(1),
        skipped: 0,
        ended: false,
    };
    messages
        .scan(position, move |at, item| {
            // `None` ends the stream, `Some(None)` skips a message.
            let out = if at.ended {
                None
            } else {
                let out = at.take(item, policy);
                at.ended = !matches!(out, Some(Some(Ok(_))) | Some(None));
                out
            };
            futures::future::ready(out)
        })
        .filter_map(futures::future::ready)
}

impl Position {
    fn take<E: std::fmt::Display>(
        &mut self,
        item: Result<jetstream::Message, E>,
        policy: OnRestart,
    ) -> Option<Option<Result<Positioned, OrderedError>>> {
        let client =
            |e: &dyn std::fmt::Display| Some(Some(Err(OrderedError::Client(e.to_string()))));
        let message = match item {
            Ok(m) => m,
            Err(e) => return client(&e),
        };
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => return client(&e),
        };
        if seq >= self.next {
            self.next = seq + 1;
            return Some(Some(Ok(Positioned {
                seq,
                pending,
                message,
            })));
        }
        let next = self.next;
        match policy {
            OnRestart::End => Some(Some(Err(OrderedError::Restarted { seq, next }))),
            OnRestart::Skip => {
                if self.skipped == 0 {
                    tracing::warn!(
                        seq,
                        next,
                        "an ordered consumer was recreated from the stream's start; \
                         skipping what was read already"
                    );
                }
                self.skipped += 1;
                // Nothing stored after it: nothing from `next` on exists.
                (pending > 0).then_some(None)
            }
        }
    }
}
