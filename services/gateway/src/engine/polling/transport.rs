//! The connection task's side of a polling session: reads POSTed packets,
//! writes for GETs, and switches to the WebSocket once the upgrade
//! completes.

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

/// A polling session as a [`Transport`]: long-polling first, the
/// WebSocket after an upgrade.
pub(crate) struct PollingTransport {
    session: Arc<PollSession>,
    registry: Arc<Registry>,
    inbound: mpsc::Receiver<Message>,
    upgrades: mpsc::Receiver<WebSocket>,
    ws: Option<WebSocket>,
    /// Packets queued before the upgrade completed, written on the
    /// WebSocket before anything else.
    backlog: VecDeque<Message>,
}

impl PollingTransport {
    pub(super) fn new(
        session: Arc<PollSession>,
        registry: Arc<Registry>,
        inbound: mpsc::Receiver<Message>,
        upgrades: mpsc::Receiver<WebSocket>,
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
    fn switch(&mut self, ws: WebSocket) {
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
        if let Some(ws) = &mut self.ws {
            if let Err(e) = drain(ws, &mut self.backlog).await {
                return Some(Err(e));
            }
            return ws.recv().await;
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
            Some(ws) => {
                drain(ws, &mut self.backlog).await?;
                SinkExt::feed(ws, msg).await
            }
            None => self.session.push(msg).await,
        }
    }

    async fn flush(&mut self) -> Result<(), axum::Error> {
        match &mut self.ws {
            Some(ws) => {
                drain(ws, &mut self.backlog).await?;
                SinkExt::flush(ws).await
            }
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
