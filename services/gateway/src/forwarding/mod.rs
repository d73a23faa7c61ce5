//! Polling without sticky sessions, over request/reply: the
//! [`Forwarder`] that carries a GET or POST to the gateway owning its
//! session, and the owner's side that answers on its own subjects
//! (`confab_contracts::gateway`). Written once against the
//! [`Transport`] port: NATS core request/reply
//! ([`transport::NatsTransport`]), or Redis pub/sub with one topic per
//! gateway ([`redis::RedisTransport`]).
//!
//! Delivery of a forwarded GET is confirmed: the owner answers through
//! [`PollingSessions::poll_with`] and counts the packets delivered only
//! when the forwarder publishes `ack` on the request's control subject
//! within [`ACK_WAIT`]; otherwise (the reply or the ack was lost, the
//! forwarder died, its client went away and it published `cancel`) the
//! packets go back to the session's queue, in order, for the next GET.
//! What is left: a forwarder that dies after its ack but before its HTTP
//! response is written loses that response, as a single gateway whose
//! connection breaks mid-write does.
//!
//! A client that drops a held, forwarded GET makes the forwarder publish
//! `cancel`, which releases the owner's hold at once (so the client's
//! next GET is not an overlap). A `cancel` published before the owner
//! subscribed is lost; the owner's hold then ends with the next ping.
//!
//! A GET arriving at the owner while the previous answer waits for its
//! `ack` is the client's next GET (it has seen the answer, or given up on
//! it): it waits for the ack (or the put-back), then takes the next
//! packets; only a second GET while one waits for packets is an overlap.
//!
//! No gateway answering on the owner's subject (it is gone) is Engine.IO
//! error 1, "Session ID unknown", at once (NATS no-responders; on Redis,
//! nobody subscribed to the owner's topic), so the client reconnects.
//! Both waits are bounded by [`hold_limit`]: one ping
//! interval plus a margin, longer than any held GET.
//!
//! Payloads travel unescaped (binary bodies, the sid and the answer's
//! kind in headers), and a forwarded GET answers at most the transport's
//! message size (the NATS server's `max_payload`; 1 MiB on Redis) less a
//! margin (the rest waits for the next GET; packets are never split): a
//! 1 MB `maxPayload` answer fits the default 1 MiB NATS message.
//!
//! WebSocket upgrades that land on a non-owner are relayed ([`relay`]).

pub(crate) mod redis;
mod relay;
pub(crate) mod transport;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use confab_contracts::gateway::{
    ACK, CANCEL, GatewayName, PollAnswer, PollRequest, PostRequest, Refusal, valid_control,
};
use confab_contracts::{AUTHORIZATION_HEADER, ServiceToken};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::engine::PollingSessions;
use crate::engine::polling::{Forwarder, PollError, Relay};
use transport::{Inbox, Msg, Transport, WireError};

/// The transport the protocol runs on, shared by both roles.
pub(crate) type Wire = Arc<dyn Transport>;

/// How long an owner waits for the forwarder's `ack` of a GET's payload.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(5);

/// What a message carries besides a GET's payload (subject, headers),
/// kept free under the transport's message size.
const ANSWER_MARGIN: usize = 4096;

/// The longest wait for a forwarded request: a held GET ends within one
/// ping interval (the ping answers it); the margin covers the hops.
pub(crate) fn hold_limit(ping_interval: Duration) -> Duration {
    ping_interval + Duration::from_secs(10)
}

/// Forwards over a [`Transport`].
pub(crate) struct WireForwarder {
    wire: Wire,
    authorization: Option<String>,
    /// Checks the owner's relay requests (`None`: no token configured).
    token: Option<ServiceToken>,
    timeout: Duration,
    /// The longest wait for one relayed batch.
    relay_timeout: Duration,
}

impl WireForwarder {
    /// Forwards on `wire`, with the service token (when configured),
    /// waiting at most `timeout` for an owner's answer and `relay_timeout`
    /// for a relayed batch.
    pub(crate) fn new(wire: Wire, token: &str, timeout: Duration, relay_timeout: Duration) -> Self {
        Self {
            wire,
            authorization: (!token.is_empty()).then(|| format!("Bearer {token}")),
            token: (!token.is_empty()).then(|| ServiceToken::new(Some(token.to_owned()))),
            timeout,
            relay_timeout,
        }
    }

    async fn request(
        &self,
        subject: String,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<PollAnswer, PollError> {
        if let Some(a) = &self.authorization {
            headers.insert(AUTHORIZATION_HEADER, a.as_str());
        }
        let reply = self
            .wire
            .request(subject, headers, body, self.timeout)
            .await
            .map_err(|e| {
                // No responders: the owner is gone, the session with it.
                tracing::debug!(error = %e, "forwarded polling request failed");
                PollError::UnknownSid
            })?;
        PollAnswer::decode(reply.headers.as_ref(), reply.payload).ok_or(PollError::UnknownSid)
    }
}

/// Publishes `cancel` on the control subject unless disarmed: the
/// forwarded GET was dropped (its client went away) or failed.
struct CancelOnDrop {
    wire: Wire,
    control: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(control) = self.control.take() {
            let wire = Arc::clone(&self.wire);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let cancel = Bytes::from_static(CANCEL);
                    let _ = wire.publish(control, HeaderMap::new(), cancel).await;
                });
            }
        }
    }
}

impl Forwarder for WireForwarder {
    fn poll<'a>(&'a self, owner: &'a str, sid: &'a str) -> BoxFuture<'a, Result<Bytes, PollError>> {
        Box::pin(async move {
            let owner = GatewayName::parse(owner).ok_or(PollError::UnknownSid)?;
            // The owner subscribes to it, so it is in the owner's name.
            let control = self.wire.inbox_at(owner);
            let mut guard = CancelOnDrop {
                wire: Arc::clone(&self.wire),
                control: Some(control.clone()),
            };
            let body = encode(&PollRequest {
                sid: sid.to_owned(),
                control: control.clone(),
            });
            let answer = self.request(owner.poll_subject(), HeaderMap::new(), body.into());
            match answer.await? {
                PollAnswer::Payload(payload) => {
                    guard.control = None;
                    // Lost ack: the owner puts the packets back and the
                    // client may see them twice, never zero times.
                    let ack = Bytes::from_static(ACK);
                    let _ = self.wire.publish(control, HeaderMap::new(), ack).await;
                    Ok(payload)
                }
                PollAnswer::Refused(r) => Err(from_refusal(r)),
                PollAnswer::Ok | PollAnswer::Relay(_) => Err(PollError::BadRequest),
            }
        })
    }

    fn post<'a>(
        &'a self,
        owner: &'a str,
        sid: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PollError>> {
        Box::pin(async move {
            let owner = GatewayName::parse(owner).ok_or(PollError::UnknownSid)?;
            let (headers, body) = PostRequest {
                sid: sid.to_owned(),
                body,
            }
            .encode();
            match self.request(owner.post_subject(), headers, body).await? {
                PollAnswer::Ok => Ok(()),
                PollAnswer::Refused(r) => Err(from_refusal(r)),
                PollAnswer::Payload(_) | PollAnswer::Relay(_) => Err(PollError::BadRequest),
            }
        })
    }

    fn relay<'a>(
        &'a self,
        owner: &'a str,
        sid: &'a str,
    ) -> BoxFuture<'a, Result<Relay, PollError>> {
        Box::pin(async move {
            let owner = GatewayName::parse(owner).ok_or(PollError::UnknownSid)?;
            relay::start(self, owner, sid).await
        })
    }
}

/// Answers forwarded requests for `sessions` on `gateway`'s subjects until
/// `shutdown`. Each request runs in its own task.
pub(crate) async fn serve(
    wire: Wire,
    gateway: &str,
    token: &str,
    sessions: Arc<PollingSessions>,
    ping_interval: Duration,
    relay_timeout: Duration,
    shutdown: CancellationToken,
) -> Result<(), WireError> {
    let Some(name) = GatewayName::parse(gateway) else {
        tracing::warn!(gateway, "gateway id is not a subject token: no forwarding");
        return Ok(());
    };
    let polls = wire.subscribe(name.poll_subject()).await?;
    let posts = wire.subscribe(name.post_subject()).await?;
    let upgrades = wire.subscribe(name.upgrade_subject()).await?;
    let authorization = (!token.is_empty()).then(|| format!("Bearer {token}"));
    let token = (!token.is_empty()).then(|| ServiceToken::new(Some(token.to_owned())));
    let owner = Arc::new(Owner {
        wire,
        token,
        sessions,
        hold: hold_limit(ping_interval),
        relay_timeout,
        authorization,
    });
    let mut requests = futures::stream::select_all([
        polls.map(|m| (Kind::Poll, m)).boxed(),
        posts.map(|m| (Kind::Post, m)).boxed(),
        upgrades.map(|m| (Kind::Upgrade, m)).boxed(),
    ]);
    let span = tracing::Span::current();
    tokio::spawn(async move {
        loop {
            let (kind, msg) = tokio::select! {
                () = shutdown.cancelled() => break,
                next = requests.next() => match next {
                    Some(m) => m,
                    None => break,
                },
            };
            let owner = Arc::clone(&owner);
            let run = async move {
                match kind {
                    Kind::Poll => owner.poll(msg).await,
                    Kind::Post => owner.post(msg).await,
                    Kind::Upgrade => relay::serve_upgrade(&owner, msg).await,
                }
            };
            tokio::spawn(tracing::Instrument::instrument(run, span.clone()));
        }
    });
    Ok(())
}

/// What a request to the owner's subjects is.
#[derive(Clone, Copy)]
enum Kind {
    Poll,
    Post,
    Upgrade,
}

/// The owner's side.
struct Owner {
    wire: Wire,
    /// `None`: no service token configured.
    token: Option<ServiceToken>,
    sessions: Arc<PollingSessions>,
    hold: Duration,
    /// The longest wait for one relayed batch.
    relay_timeout: Duration,
    /// The `Authorization` header of the owner's own (relay) requests.
    authorization: Option<String>,
}

impl Owner {
    /// Whether the request carries the service token (when one is
    /// configured; without one, NATS permissions or Redis' ACL guard the
    /// subjects).
    fn authorized(&self, msg: &Msg) -> bool {
        authorized(self.token.as_ref(), msg)
    }

    /// The most payload bytes a forwarded GET answers: `maxPayload`, or
    /// less when the transport's messages are smaller (the rest waits for
    /// the next GET; packets are never split).
    fn answer_limit(&self) -> usize {
        limit(&*self.wire)
    }

    async fn answer(&self, msg: &Msg, answer: &PollAnswer) {
        reply(&*self.wire, msg, answer).await;
    }

    /// The JSON request `msg` carries, when it has the service token and
    /// passes `valid`; otherwise the forwarder gets the refusal
    /// (`Unauthorized`, `BadRequest`) and this is `None`.
    async fn admit<T: serde::de::DeserializeOwned>(
        &self,
        msg: &Msg,
        valid: impl FnOnce(&T) -> bool,
    ) -> Option<T> {
        let refusal = if !self.authorized(msg) {
            Refusal::Unauthorized
        } else {
            match serde_json::from_slice::<T>(&msg.payload) {
                Ok(r) if valid(&r) => return Some(r),
                _ => Refusal::BadRequest,
            }
        };
        self.answer(msg, &PollAnswer::Refused(refusal)).await;
        None
    }

    async fn post(&self, msg: Msg) {
        if !self.authorized(&msg) {
            return self
                .answer(&msg, &PollAnswer::Refused(Refusal::Unauthorized))
                .await;
        }
        let Some(req) = PostRequest::decode(msg.headers.as_ref(), msg.payload.clone()) else {
            return self
                .answer(&msg, &PollAnswer::Refused(Refusal::BadRequest))
                .await;
        };
        let answer = match self.sessions.post(&req.sid, &req.body).await {
            Ok(()) => PollAnswer::Ok,
            Err(e) => PollAnswer::Refused(to_refusal(e)),
        };
        self.answer(&msg, &answer).await;
    }

    async fn poll(&self, msg: Msg) {
        let Some(req) = self
            .admit::<PollRequest>(&msg, |r| valid_control(&r.control))
            .await
        else {
            return;
        };
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let control = match self.wire.subscribe(req.control).await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (signal, signals) = tokio::sync::watch::channel(None::<bool>);
        let mut cancelled = signals.clone();
        let deliver = |payload: String| {
            let mut signals = signals.clone();
            let wire = Arc::clone(&self.wire);
            async move {
                let (headers, body) = PollAnswer::Payload(payload.into()).encode();
                if let Err(e) = wire.publish(reply, headers, body).await {
                    tracing::warn!(error = %e, "a forwarded GET's answer could not be sent");
                    return false;
                }
                let acked = async { signals.wait_for(Option::is_some).await.map(|v| *v) };
                matches!(
                    tokio::time::timeout(ACK_WAIT, acked).await,
                    Ok(Ok(Some(true)))
                )
            }
        };
        tokio::select! {
            result = self.sessions.poll_with(&req.sid, self.answer_limit(), deliver) => {
                if let Err(e) = result {
                    self.answer(&msg, &PollAnswer::Refused(to_refusal(e))).await;
                }
            }
            // Dropping the poll releases the hold (or puts the answered
            // packets back).
            _ = async { cancelled.wait_for(|v| *v == Some(false)).await.map(|_| ()) } => {}
            () = listen(control, signal) => {}
            () = tokio::time::sleep(self.hold + ACK_WAIT) => {}
        }
    }
}

/// Turns the control subject's messages into signals: `ack` is true,
/// anything else false. Never returns before the subscription ends.
async fn listen(mut control: Inbox, signal: tokio::sync::watch::Sender<Option<bool>>) {
    while let Some(m) = control.next().await {
        signal.send_replace(Some(m.payload.as_ref() == ACK));
    }
    std::future::pending::<()>().await;
}

/// The most payload bytes one message of ours carries: the transport's
/// message size less [`ANSWER_MARGIN`].
fn limit(wire: &dyn Transport) -> usize {
    wire.max_message().saturating_sub(ANSWER_MARGIN).max(1)
}

/// Whether `msg` carries the service token (when one is configured;
/// without one, NATS permissions or Redis' ACL guard the subjects).
fn authorized(token: Option<&ServiceToken>, msg: &Msg) -> bool {
    let Some(token) = token else {
        return true;
    };
    let auth = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(AUTHORIZATION_HEADER))
        .map(|v| v.as_str());
    token.check(auth).is_ok()
}

/// Answers a request with `answer` (nothing when it has no reply subject).
async fn reply(wire: &dyn Transport, msg: &Msg, answer: &PollAnswer) {
    if let Some(reply) = &msg.reply {
        let (headers, body) = answer.encode();
        let _ = wire.publish(reply.clone(), headers, body).await;
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn to_refusal(e: PollError) -> Refusal {
    match e {
        PollError::UnknownSid => Refusal::UnknownSid,
        PollError::BadRequest => Refusal::BadRequest,
        PollError::Overlap => Refusal::Overlap,
        PollError::TooLarge => Refusal::TooLarge,
        PollError::Malformed => Refusal::Malformed,
    }
}

fn from_refusal(r: Refusal) -> PollError {
    match r {
        Refusal::UnknownSid | Refusal::Unauthorized => PollError::UnknownSid,
        Refusal::BadRequest => PollError::BadRequest,
        Refusal::Overlap => PollError::Overlap,
        Refusal::TooLarge => PollError::TooLarge,
        Refusal::Malformed => PollError::Malformed,
    }
}
