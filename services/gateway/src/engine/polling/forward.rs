//! The port a gateway forwards polling requests through when their
//! session lives on another gateway (no sticky sessions). Implemented
//! once in `crate::forwarding`, over NATS or Redis pub/sub.

use std::sync::Arc;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::PollError;

/// What the relaying gateway sends the owner of a relayed upgrade.
#[derive(Debug)]
pub(crate) enum ToOwner {
    /// The client sent `2probe` and was answered `3probe`.
    Probed,
    /// The client sent `5`.
    Upgraded,
    /// Frames from the client (text and binary only), in order.
    Frames(Vec<Message>),
    /// The client's WebSocket ended (or the probe failed).
    Close,
}

/// Frames from the owner for the client (a [`Message::Close`] ends the
/// relay), and where to say whether they were written.
pub(crate) struct FromOwner {
    /// In order.
    pub frames: Vec<Message>,
    /// `true` once written to the client's WebSocket.
    pub written: oneshot::Sender<bool>,
}

/// The relaying gateway's link to the owner.
pub(crate) trait RelayLink: Send + Sync + 'static {
    /// Sends one step and returns once the owner took it (frames handed to
    /// the connection). Called one at a time; an error ends the relay.
    fn send(&self, step: ToOwner) -> BoxFuture<'_, Result<(), PollError>>;
}

/// A relayed upgrade, as the relaying gateway holds it.
pub(crate) struct Relay {
    /// Steps to the owner.
    pub link: Arc<dyn RelayLink>,
    /// The owner's frames, one batch at a time: the next comes once the
    /// previous one's `written` was answered. Ends when the owner is gone.
    pub from_owner: mpsc::Receiver<FromOwner>,
    /// The most bytes of one batch of the client's frames to the owner.
    pub limit: usize,
}

/// Carries a GET or POST to the gateway that owns the session, and its
/// answer back.
pub(crate) trait Forwarder: Send + Sync + 'static {
    /// A GET for `sid`, owned by `owner`: the payload, once the owner
    /// knows it arrived. Dropping the future releases the owner's hold.
    /// No owner answering: [`PollError::UnknownSid`].
    fn poll<'a>(&'a self, owner: &'a str, sid: &'a str) -> BoxFuture<'a, Result<Bytes, PollError>>;

    /// A POST for `sid`, owned by `owner`: returns once the owner handed
    /// the packets to the connection.
    fn post<'a>(
        &'a self,
        owner: &'a str,
        sid: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PollError>>;

    /// A WebSocket for `sid`, owned by `owner`, reached this gateway: asks
    /// the owner to start the upgrade, relayed through this gateway (see
    /// `super::relay`). Refused as the owner refuses a local upgrade.
    fn relay<'a>(&'a self, owner: &'a str, sid: &'a str)
    -> BoxFuture<'a, Result<Relay, PollError>>;
}
