//! What the forwarding protocol needs of a message system, as a small
//! port: subjects, headers, request/reply with "no responders", inboxes.
//! NATS has all of it ([`NatsTransport`]); on Redis it is built from one
//! pub/sub topic per gateway (`super::redis`). The protocol itself
//! (confirmed GETs, relays) is written once, against this.

use std::time::Duration;

use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;
use confab_contracts::gateway::GatewayName;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A message received on a subject.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Where to answer, for a request.
    pub reply: Option<String>,
    /// Its headers (`None`: none).
    pub headers: Option<HeaderMap>,
    /// Its body, as it is.
    pub payload: Bytes,
}

impl From<async_nats::Message> for Msg {
    fn from(m: async_nats::Message) -> Self {
        Self {
            reply: m.reply.map(|r| r.to_string()),
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// The messages of one subscription; dropping it unsubscribes.
pub(crate) type Inbox = BoxStream<'static, Msg>;

/// Why a transport call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Nobody listens on the subject (the gateway is gone).
    #[error("no responders")]
    NoResponders,
    /// No answer in time.
    #[error("request timed out")]
    TimedOut,
    /// Anything else (the message system is unreachable, a bound).
    #[error("{0}")]
    Failed(String),
}

/// Request/reply on subjects, at most once, in order per publisher and
/// subject.
pub(crate) trait Transport: Send + Sync + 'static {
    /// A fresh subject only this process receives on.
    fn new_inbox(&self) -> String;

    /// A fresh subject for `gateway` to receive on and this process to
    /// publish to (a forwarded GET's control subject).
    fn inbox_at(&self, gateway: GatewayName<'_>) -> String;

    /// Receives what is published on `subject` from now on.
    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Inbox, WireError>>;

    /// Publishes (nobody listening is not an error).
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), WireError>>;

    /// Publishes a request and waits at most `timeout` for its first
    /// answer; [`WireError::NoResponders`] at once when nobody listens.
    fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Msg, WireError>>;

    /// The most bytes one message may carry (headers included).
    fn max_message(&self) -> usize;
}

/// The forwarding protocol on NATS core request/reply.
pub(crate) struct NatsTransport(pub Client);

impl Transport for NatsTransport {
    fn new_inbox(&self) -> String {
        self.0.new_inbox()
    }

    /// Any inbox: on NATS, whoever subscribes to a subject receives it.
    fn inbox_at(&self, _gateway: GatewayName<'_>) -> String {
        self.0.new_inbox()
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Inbox, WireError>> {
        Box::pin(async move {
            let sub = self
                .0
                .subscribe(subject)
                .await
                .map_err(|e| WireError::Failed(e.to_string()))?;
            Ok(sub.map(Msg::from).boxed())
        })
    }

    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), WireError>> {
        Box::pin(async move {
            let sent = if headers.is_empty() {
                self.0.publish(subject, body).await
            } else {
                self.0.publish_with_headers(subject, headers, body).await
            };
            sent.map_err(|e| WireError::Failed(e.to_string()))
        })
    }

    fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Msg, WireError>> {
        Box::pin(async move {
            let request = async_nats::Request::new()
                .payload(body)
                .headers(headers)
                .timeout(Some(timeout));
            self.0
                .send_request(subject, request)
                .await
                .map(Msg::from)
                .map_err(|e| match e.kind() {
                    RequestErrorKind::NoResponders => WireError::NoResponders,
                    RequestErrorKind::TimedOut => WireError::TimedOut,
                    _ => WireError::Failed(e.to_string()),
                })
        })
    }

    fn max_message(&self) -> usize {
        self.0.server_info().max_payload
    }
}
