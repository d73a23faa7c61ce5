//! What a connection task needs from its transport: receive messages, write
//! them, flush, close.
//!
//! The connection loop ([`super::conn`]) is generic over this trait, so a
//! WebSocket connection runs on [`WebSocket`] itself (monomorphised: its
//! per-frame path is exactly the direct calls it always was) while a
//! long-polling session runs on [`super::polling::PollingTransport`].

use std::future::Future;

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;

/// A message transport driven by one connection task.
pub(crate) trait Transport: Send + 'static {
    /// The next message from the client; `None` once the transport is gone.
    /// Must be cancel-safe: it is one branch of the connection's `select!`.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Message, axum::Error>>> + Send;

    /// Queues one message for writing (written at the latest on
    /// [`Transport::flush`]).
    fn feed(&mut self, msg: Message) -> impl Future<Output = Result<(), axum::Error>> + Send;

    /// Writes everything fed so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), axum::Error>> + Send;

    /// Feeds and flushes one message.
    fn send(&mut self, msg: Message) -> impl Future<Output = Result<(), axum::Error>> + Send;
}

impl Transport for WebSocket {
    #[inline]
    fn recv(&mut self) -> impl Future<Output = Option<Result<Message, axum::Error>>> + Send {
        WebSocket::recv(self)
    }

    #[inline]
    fn feed(&mut self, msg: Message) -> impl Future<Output = Result<(), axum::Error>> + Send {
        SinkExt::feed(self, msg)
    }

    #[inline]
    fn flush(&mut self) -> impl Future<Output = Result<(), axum::Error>> + Send {
        SinkExt::flush(self)
    }

    #[inline]
    fn send(&mut self, msg: Message) -> impl Future<Output = Result<(), axum::Error>> + Send {
        SinkExt::send(self, msg)
    }
}
