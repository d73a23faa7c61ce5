//! The forwarding [`Transport`] on Redis pub/sub (a deployment without
//! NATS).
//!
//! Each gateway subscribes to one topic of its own
//! (`GatewayName::topic`, the channel `{prefix}:topic:confab.gateway.v1.{id}`)
//! and routes what arrives there by subject to its local subscriptions:
//! its `poll` / `post` / `upgrade` subjects and its inboxes
//! (`confab.gateway.v1.{id}.inbox.{random}`). A message for a subject of
//! gateway `G` is an [`Envelope`] (the NATS wire's subject, reply subject,
//! headers and body) published on `G`'s topic, so both transports carry
//! the same protocol.
//!
//! "No responders" comes from `PUBLISH`'s answer: 0 receivers means no
//! process is subscribed to the owner's topic (its connection closed when
//! it died), so a forwarded request fails at once, as on NATS. A request
//! for a subject the owner no longer routes (a relay that ended) is
//! answered "no responders" by the owner's router.
//!
//! At most once, like core NATS: a message published while the topic's
//! connection is re-subscribing is lost, and its request times out.
//! Bounded: at most [`MAX_SUBSCRIPTIONS`] local subscriptions, each
//! holding at most [`SUBSCRIPTION_CAPACITY`] messages (more are dropped,
//! as NATS drops for a slow consumer), every message at most
//! [`MAX_MESSAGE`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use confab_bus::RedisBus;
use confab_contracts::gateway::GatewayName;
use confab_contracts::gateway::envelope::{Envelope, NO_RESPONDERS_HEADER};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::transport::{Inbox, Msg, Transport, WireError};

/// The most bytes of one message (envelope included): NATS' default
/// `max_payload`, so a `maxPayload` (1 MB) answer fits either transport.
pub(crate) const MAX_MESSAGE: usize = 1024 * 1024;

/// Messages waiting between the topic's connection and the router.
const TOPIC_CAPACITY: usize = 1024;

/// Messages waiting in one local subscription.
const SUBSCRIPTION_CAPACITY: usize = 256;

/// Local subscriptions at once (requests in flight, relays, the three
/// request subjects).
pub(crate) const MAX_SUBSCRIPTIONS: usize = 65_536;

/// Local subscriptions by subject.
type Routes = Arc<Mutex<HashMap<String, mpsc::Sender<Msg>>>>;

/// The forwarding protocol on Redis pub/sub: one topic per gateway.
pub(crate) struct RedisTransport {
    bus: RedisBus,
    /// This gateway's id (a valid [`GatewayName`]).
    name: String,
    routes: Routes,
    router: tokio::task::JoinHandle<()>,
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        self.router.abort();
    }
}

impl RedisTransport {
    /// Subscribes to `gateway`'s topic on `bus` (subscribed once this
    /// returns) and starts routing what arrives there.
    pub(crate) async fn start(bus: RedisBus, gateway: &str) -> Result<Self, WireError> {
        let name = GatewayName::parse(gateway)
            .ok_or_else(|| WireError::Failed(format!("gateway id {gateway:?} is not a token")))?;
        let topic = bus
            .subscribe_topic(&name.topic(), TOPIC_CAPACITY)
            .await
            .map_err(|e| WireError::Failed(e.to_string()))?;
        let routes = Routes::default();
        let router = tokio::spawn(route(topic, Arc::clone(&routes), bus.clone()));
        Ok(Self {
            bus,
            name: gateway.to_owned(),
            routes,
            router,
        })
    }

    fn name(&self) -> GatewayName<'_> {
        GatewayName::parse(&self.name).expect("checked in start")
    }

    /// Publishes an envelope on the topic of the gateway `subject` belongs
    /// to; answers how many processes received it.
    async fn send(
        &self,
        subject: String,
        reply: Option<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<u64, WireError> {
        let topic = GatewayName::of_subject(&subject)
            .ok_or_else(|| WireError::Failed(format!("{subject} names no gateway")))?
            .topic();
        let envelope = Envelope {
            subject,
            reply,
            headers,
            body,
        };
        let bytes = envelope
            .encode()
            .filter(|b| b.len() <= MAX_MESSAGE)
            .ok_or_else(|| WireError::Failed("message over the forwarding size".into()))?;
        self.bus
            .publish_topic_counted(&topic, &bytes)
            .await
            .map_err(|e| WireError::Failed(e.to_string()))
    }
}

fn random_token() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

impl Transport for RedisTransport {
    fn new_inbox(&self) -> String {
        self.inbox_at(self.name())
    }

    fn inbox_at(&self, gateway: GatewayName<'_>) -> String {
        format!("{}{}", gateway.inbox_prefix(), random_token())
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Inbox, WireError>> {
        Box::pin(async move {
            // Only this gateway's subjects arrive on its topic.
            if GatewayName::of_subject(&subject) != Some(self.name()) {
                return Err(WireError::Failed(format!(
                    "{subject} is not a subject of gateway {}",
                    self.name
                )));
            }
            let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
            {
                let mut routes = self.routes.lock().expect("routes lock");
                if routes.len() >= MAX_SUBSCRIPTIONS || routes.contains_key(&subject) {
                    return Err(WireError::Failed(format!(
                        "cannot subscribe to {subject}: taken, or {MAX_SUBSCRIPTIONS} subscriptions"
                    )));
                }
                routes.insert(subject.clone(), tx);
            }
            let guard = Unroute {
                routes: Arc::clone(&self.routes),
                subject,
            };
            let messages = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                rx.recv().await.map(|m| (m, (rx, guard)))
            });
            Ok(messages.boxed())
        })
    }

    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), WireError>> {
        Box::pin(async move { self.send(subject, None, headers, body).await.map(drop) })
    }

    fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Msg, WireError>> {
        Box::pin(async move {
            let inbox = self.new_inbox();
            let mut answers = self.subscribe(inbox.clone()).await?;
            if self.send(subject, Some(inbox), headers, body).await? == 0 {
                return Err(WireError::NoResponders);
            }
            match tokio::time::timeout(timeout, answers.next()).await {
                Ok(Some(m)) if is_no_responders(&m) => Err(WireError::NoResponders),
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(WireError::Failed("inbox closed".into())),
                Err(_) => Err(WireError::TimedOut),
            }
        })
    }

    fn max_message(&self) -> usize {
        MAX_MESSAGE
    }
}

fn is_no_responders(m: &Msg) -> bool {
    m.headers
        .as_ref()
        .is_some_and(|h| h.get(NO_RESPONDERS_HEADER).is_some())
}

/// Takes a subscription's route away when its stream is dropped.
struct Unroute {
    routes: Routes,
    subject: String,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.subject);
        }
    }
}

/// Hands each envelope of the topic to the subscription of its subject;
/// answers a request for a subject nobody here subscribes to with "no
/// responders".
async fn route(mut topic: confab_bus::TopicSubscription, routes: Routes, bus: RedisBus) {
    let mut dropped: u64 = 0;
    while let Some(bytes) = topic.next().await {
        let Some(envelope) = Envelope::decode(bytes) else {
            tracing::debug!("forwarding topic: not an envelope; dropped");
            continue;
        };
        let to = routes
            .lock()
            .expect("routes lock")
            .get(&envelope.subject)
            .cloned();
        let msg = Msg {
            reply: envelope.reply,
            headers: Some(envelope.headers),
            payload: envelope.body,
        };
        match to {
            Some(tx) => {
                if tx.try_send(msg).is_err() {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "forwarding: a subscription too slow; messages dropped"
                        );
                    }
                }
            }
            None => {
                let Some(reply) = msg.reply else { continue };
                let Some(topic) = GatewayName::of_subject(&reply).map(|g| g.topic()) else {
                    continue;
                };
                let mut headers = HeaderMap::new();
                headers.insert(NO_RESPONDERS_HEADER, "1");
                let answer = Envelope {
                    subject: reply,
                    reply: None,
                    headers,
                    body: Bytes::new(),
                };
                if let Some(bytes) = answer.encode() {
                    let _ = bus.publish_topic_counted(&topic, &bytes).await;
                }
            }
        }
    }
}
