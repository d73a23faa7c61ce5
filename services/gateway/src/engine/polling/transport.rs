//! The connection task's side of a polling session: reads POSTed packets,
//! writes for GETs, and switches to the WebSocket once the upgrade
//! completes (this gateway's WebSocket, or one another gateway relays:
//! [`RemoteSocket`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::ready;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{Sink, SinkExt};
use tokio::sync::mpsc;

use super::PollingSessions as Registry;
use super::session::PollSession;
use crate::engine::transport::Transport;

/// What an upgraded session runs on.
pub(crate) enum Upgraded {
    /// A WebSocket this gateway holds (boxed: a polling session waiting
    /// for an upgrade should not carry a WebSocket's size).
    Local(Box<WebSocket>),
    /// A WebSocket another gateway holds and relays.
    Remote(RemoteSocket),
}

/// The owner's end of a relayed WebSocket: the client's frames come in on
/// `inbound`; batches of frames for the client go out on `outbound`
/// (bounded: the relay carries one batch at a time), each at most `limit`
/// bytes unless one frame alone is larger.
pub(crate) struct RemoteSocket {
    pub(super) inbound: mpsc::Receiver<Message>,
    pub(super) outbound: mpsc::Sender<Vec<Message>>,
    pub(super) limit: usize,
}

impl RemoteSocket {
    /// Hands the backlog to the relay in batches. Cancel-safe: a message
    /// leaves the backlog only with a batch the channel took.
    async fn write(&mut self, backlog: &mut VecDeque<Message>) -> Result<(), axum::Error> {
        while !backlog.is_empty() {
            let permit = self.outbound.reserve().await.map_err(axum::Error::new)?;
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(m) = backlog.front() {
                let n = relayed_len(m);
                if !batch.is_empty() && bytes + n > self.limit {
                    break;
                }
                bytes += n;
                batch.extend(backlog.pop_front());
            }
            permit.send(batch);
        }
        Ok(())
    }
}

/// Bytes a message costs in a relayed batch.
pub(super) fn relayed_len(m: &Message) -> usize {
    confab_contracts::gateway::relay::FRAME_OVERHEAD
        + match m {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        }
}

/// A polling session as a [`Transport`]: long-polling first, the
/// WebSocket after an upgrade.
pub(crate) struct PollingTransport {
    session: Arc<PollSession>,
    registry: Arc<Registry>,
    inbound: mpsc::Receiver<Message>,
    upgrades: mpsc::Receiver<Upgraded>,
    ws: Option<Upgraded>,
    /// Packets queued before the upgrade completed, written on the
    /// WebSocket before anything else (and, relayed, what was fed since
    /// the last flush).
    backlog: VecDeque<Message>,
}

impl PollingTransport {
    pub(super) fn new(
        session: Arc<PollSession>,
        registry: Arc<Registry>,
        inbound: mpsc::Receiver<Message>,
        upgrades: mpsc::Receiver<Upgraded>,
    ) -> Self {
        Self {
            session,
            registry,
            inbound,
            upgrades,
            ws: None,
            backlog: VecDeque::new(),
        }
    }

    /// Moves to the WebSocket once the upgrade handed it over; what was
    /// queued for GETs goes out there first.
    fn switch(&mut self, ws: Upgraded) {
        self.ws = Some(ws);
        let mut backlog = self.session.take_all();
        backlog.append(&mut self.backlog);
        self.backlog = backlog;
    }

    fn ended(&self) -> axum::Error {
        axum::Error::new(super::PollError::UnknownSid)
    }
}

impl Drop for PollingTransport {
    fn drop(&mut self) {
        self.session.end("1");
        self.registry.remove(self.session.sid());
    }
}

/// Writes the backlog, then flushes. Cancel-safe: a message leaves the
/// backlog only once the socket took it.
async fn drain(ws: &mut WebSocket, backlog: &mut VecDeque<Message>) -> Result<(), axum::Error> {
    if backlog.is_empty() {
        return Ok(());
    }
    std::future::poll_fn(|cx| {
        while !backlog.is_empty() {
            ready!(Pin::new(&mut *ws).poll_ready(cx))?;
            if let Some(m) = backlog.pop_front() {
                Pin::new(&mut *ws).start_send(m)?;
            }
        }
        Pin::new(&mut *ws).poll_flush(cx)
    })
    .await
}

impl Transport for PollingTransport {
    async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        match &mut self.ws {
            Some(Upgraded::Local(ws)) => {
                if let Err(e) = drain(ws, &mut self.backlog).await {
                    return Some(Err(e));
                }
                return ws.recv().await;
            }
            Some(Upgraded::Remote(remote)) => {
                if let Err(e) = remote.write(&mut self.backlog).await {
                    return Some(Err(e));
                }
                return remote.inbound.recv().await.map(Ok);
            }
            None => {}
        }
        tokio::select! {
            biased;
            m = self.inbound.recv() => m.map(Ok),
            Some(ws) = self.upgrades.recv() => {
                self.switch(ws);
                // Nothing to handle: the next call writes the backlog and
                // reads the WebSocket.
                Some(Ok(Message::Pong(Bytes::new())))
            }
            () = self.session.ended() => None,
        }
    }

    async fn feed(&mut self, msg: Message) -> Result<(), axum::Error> {
        if self.ws.is_none()
            && let Ok(ws) = self.upgrades.try_recv()
        {
            self.switch(ws);
        }
        match &mut self.ws {
            Some(Upgraded::Local(ws)) => {
                drain(ws, &mut self.backlog).await?;
                SinkExt::feed(ws, msg).await
            }
            Some(Upgraded::Remote(_)) => {
                // Written as one batch on flush (the connection task feeds
                // a bounded batch, then flushes).
                self.backlog.push_back(msg);
                Ok(())
            }
            None => self.session.push(msg).await,
        }
    }

    async fn flush(&mut self) -> Result<(), axum::Error> {
        match &mut self.ws {
            Some(Upgraded::Local(ws)) => {
                drain(ws, &mut self.backlog).await?;
                SinkExt::flush(ws).await
            }
            Some(Upgraded::Remote(remote)) => remote.write(&mut self.backlog).await,
            None if self.session.is_gone() => Err(self.ended()),
            None => {
                self.session.flush();
                Ok(())
            }
        }
    }

    async fn send(&mut self, msg: Message) -> Result<(), axum::Error> {
        if self.ws.is_none() && matches!(msg, Message::Close(_)) {
            // The session's end: a held GET answers `1` and the sid is
            // forgotten at once (later requests get "Session ID unknown").
            self.session.end("1");
            self.registry.remove(self.session.sid());
            return Ok(());
        }
        self.feed(msg).await?;
        self.flush().await
    }
}
