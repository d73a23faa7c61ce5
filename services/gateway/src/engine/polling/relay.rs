//! A WebSocket upgrade relayed between gateways (no sticky sessions): the
//! WebSocket reached a gateway (the *relay*) other than the one owning
//! the polling session. The wire is `confab_contracts::gateway::relay`,
//! carried by a [`super::Forwarder`].
//!
//! - The relay asks the owner to start the upgrade ([`Forwarder::relay`];
//!   the owner calls [`PollingSessions::begin_relay`], so a second
//!   WebSocket for the sid is refused), accepts the WebSocket and runs
//!   the probe with the client: `2probe` → `3probe`, then
//!   [`ToOwner::Probed`] (the owner answers the held GET with a noop and
//!   keeps packets for the WebSocket), `5` → [`ToOwner::Upgraded`] (the
//!   owner's connection task moves to a [`RemoteSocket`] and writes what
//!   was queued first), all within [`UPGRADE_TIMEOUT`].
//! - Then frames flow both ways, one batch in flight per direction, each
//!   confirmed once handed on: the client's frames in order as
//!   [`ToOwner::Frames`]; the owner's as [`FromOwner`] batches.
//! - Order and loss: nothing is retried. Any failure (a gateway gone, a
//!   timeout, a refusal) ends the relay and with it the session: the
//!   client's WebSocket closes, the owner's connection task ends, and the
//!   client reconnects and recovers what it missed. A relay killed
//!   mid-batch may have written part of it to the client: those frames
//!   carry their offsets, so recovery resumes after the last one seen.
//!
//! [`Forwarder::relay`]: super::Forwarder::relay
//! [`RemoteSocket`]: super::transport::RemoteSocket

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::forward::{FromOwner, Relay, ToOwner};
use super::session::{Phase, PollSession};
use super::transport::{RemoteSocket, Upgraded, relayed_len};
use super::{PollError, PollingSessions, UPGRADE_TIMEOUT};

/// Frames from a relayed client waiting for the owner's connection task.
const INBOUND_CAPACITY: usize = 16;

/// The owner's side of an upgrade another gateway relays. Dropped before
/// [`RelayedUpgrade::complete`]: the session goes back to plain polling.
pub(crate) struct RelayedUpgrade {
    session: Arc<PollSession>,
    handover: mpsc::Sender<Upgraded>,
    completed: bool,
}

/// The owner's ends of a completed relayed upgrade: where the client's
/// frames go (to the connection task), and the connection task's batches
/// for the client. Dropping `inbound` ends the connection.
pub(crate) struct RemoteEnds {
    /// The client's frames, in order (bounded).
    pub inbound: mpsc::Sender<Message>,
    /// Batches for the client, one at a time; ends with the connection.
    pub outbound: mpsc::Receiver<Vec<Message>>,
}

impl PollingSessions {
    /// Starts an upgrade of `sid` relayed by another gateway: refused as a
    /// local WebSocket for the sid would be.
    pub(crate) fn begin_relay(&self, sid: &str) -> Result<RelayedUpgrade, PollError> {
        let (session, handover) = self.get_for_upgrade(sid).ok_or(PollError::UnknownSid)?;
        session.begin_probe()?;
        Ok(RelayedUpgrade {
            session,
            handover,
            completed: false,
        })
    }
}

impl RelayedUpgrade {
    /// The client got `3probe`: the held GET answers a noop.
    pub(crate) fn probed(&self) -> Result<(), PollError> {
        if self.session.phase() != Phase::Probing || self.session.is_gone() {
            return Err(PollError::BadRequest);
        }
        self.session.probed();
        Ok(())
    }

    /// The client sent `5`: the connection task moves to the relay, whose
    /// batches are at most `limit` bytes (one larger frame goes alone).
    pub(crate) async fn complete(mut self, limit: usize) -> Result<RemoteEnds, PollError> {
        if self.session.phase() != Phase::Upgrading || self.session.is_gone() {
            return Err(PollError::BadRequest);
        }
        self.session.complete_upgrade().await;
        self.completed = true;
        let (inbound, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
        let (outbound_tx, outbound) = mpsc::channel(1);
        let remote = RemoteSocket {
            inbound: inbound_rx,
            outbound: outbound_tx,
            limit,
        };
        if self.handover.send(Upgraded::Remote(remote)).await.is_err() {
            return Err(PollError::UnknownSid);
        }
        Ok(RemoteEnds { inbound, outbound })
    }
}

impl Drop for RelayedUpgrade {
    fn drop(&mut self) {
        if !self.completed {
            self.session.abort_upgrade();
        }
    }
}

/// The relay's side: accepts the client's WebSocket and relays it to the
/// owner (tracked by `tasks`, closed with 1001 on `shutdown`).
pub(crate) fn accept(
    relay: Relay,
    ws: WebSocketUpgrade,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Response {
    let span = tracing::Span::current();
    let link = Arc::clone(&relay.link);
    let tasks = tasks.clone();
    let shutdown = shutdown.clone();
    ws.on_failed_upgrade(move |_| {
        tokio::spawn(async move {
            let _ = link.send(ToOwner::Close).await;
        });
    })
    .on_upgrade(move |ws| {
        tasks
            .track_future(run(relay, ws, shutdown))
            .instrument(span)
    })
}

async fn run(relay: Relay, mut ws: WebSocket, shutdown: CancellationToken) {
    let Relay {
        link,
        mut from_owner,
        limit,
    } = relay;
    let probed = tokio::time::timeout(UPGRADE_TIMEOUT, probe(&*link, &mut ws)).await;
    if probed != Ok(Ok(())) {
        let _ = link.send(ToOwner::Close).await;
        let _ = ws.send(Message::Close(None)).await;
        return;
    }
    let (mut sink, stream) = ws.split();
    let mut batches = Batches {
        stream,
        carry: None,
        ended: false,
        limit,
    };
    let up = async {
        while let Some(batch) = batches.next().await {
            if link.send(ToOwner::Frames(batch)).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        while let Some(FromOwner { frames, written }) = from_owner.recv().await {
            let closing = frames.iter().any(|m| matches!(m, Message::Close(_)));
            let write = async {
                for m in frames {
                    sink.feed(m).await?;
                }
                sink.flush().await
            };
            let ok = write.await.is_ok();
            let _ = written.send(ok);
            if !ok || closing {
                return;
            }
        }
    };
    let close = tokio::select! {
        () = up => Some(Message::Close(None)),
        () = down => None,
        () = shutdown.cancelled() => Some(Message::Close(Some(CloseFrame {
            code: 1001,
            reason: "server shutting down".into(),
        }))),
    };
    // The owner's connection ends with the relay; the client reconnects.
    let _ = link.send(ToOwner::Close).await;
    if let Some(frame) = close {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.send(frame)).await;
    }
}

/// The client's frames, read in batches.
struct Batches<S> {
    stream: S,
    /// A frame that did not fit the previous batch.
    carry: Option<Message>,
    ended: bool,
    limit: usize,
}

impl<S> Batches<S>
where
    S: futures::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    /// The next frames: at least one, plus those already there, at most
    /// `limit` bytes (one larger frame goes alone); `None` once the
    /// client's WebSocket ended.
    async fn next(&mut self) -> Option<Vec<Message>> {
        let mut batch: Vec<Message> = self.carry.take().into_iter().collect();
        let mut bytes: usize = batch.iter().map(relayed_len).sum();
        while !self.ended {
            let next = if batch.is_empty() {
                self.stream.next().await
            } else {
                match self.stream.next().now_or_never() {
                    Some(n) => n,
                    None => break,
                }
            };
            match next {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    let n = relayed_len(&m);
                    if !batch.is_empty() && bytes + n > self.limit {
                        self.carry = Some(m);
                        break;
                    }
                    bytes += n;
                    batch.push(m);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Closed or failed: what came before still goes.
                Some(Ok(Message::Close(_)) | Err(_)) | None => self.ended = true,
            }
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// The probe exchange with the client, each step reported to the owner.
async fn probe(link: &dyn super::RelayLink, ws: &mut WebSocket) -> Result<(), PollError> {
    let mut probed = false;
    loop {
        match ws.recv().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2probe" && !probed => {
                ws.send(Message::Text("3probe".into()))
                    .await
                    .map_err(|_| PollError::BadRequest)?;
                link.send(ToOwner::Probed).await?;
                probed = true;
            }
            Some(Ok(Message::Text(t))) if t.as_str() == "5" && probed => {
                return link.send(ToOwner::Upgraded).await;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(PollError::BadRequest),
        }
    }
}
