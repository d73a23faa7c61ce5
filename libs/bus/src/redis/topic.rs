//! Topics on the Redis bus: plain pub/sub channels for messages nobody
//! answers and nobody stores (presence heartbeats), at most once like core
//! NATS, and the bus's command connection lent to other Redis users of the
//! process (the gateway's session store).
//!
//! A topic `name` is the channel `{prefix}:topic:{name}`. A
//! [`TopicSubscription`] runs its own pub/sub connection in a task that
//! subscribes again after every disconnect (messages published meanwhile
//! are lost: topics are for senders that repeat themselves).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::RedisBus;
use crate::BusError;

/// Longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Messages of one topic, as published. Dropping it ends the subscription.
#[derive(Debug)]
pub struct TopicSubscription {
    rx: mpsc::Receiver<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl TopicSubscription {
    /// The next message; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

impl Drop for TopicSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisBus {
    /// The name of a key of this deployment, `{prefix}:{name}` (under the
    /// bus's hash tag, so a script may use it with the bus's other keys).
    pub fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.inner.config.prefix)
    }

    /// A clone of the bus's command connection (it reconnects by itself),
    /// for other Redis users of the process.
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.inner.conn.clone()
    }

    fn topic_channel(&self, name: &str) -> String {
        self.key(&format!("topic:{name}"))
    }

    /// Publishes `payload` on topic `name` (`PUBLISH`): received by the
    /// topic's subscribers connected now, at most once.
    pub async fn publish_topic(&self, name: &str, payload: &[u8]) -> Result<(), BusError> {
        self.publish_topic_counted(name, payload).await.map(drop)
    }

    /// Like [`RedisBus::publish_topic`], answering how many subscribers
    /// received it (`PUBLISH`'s answer; 0: nobody listens on the topic
    /// now, as NATS' "no responders"). The count is the server's, so it
    /// holds on one Redis, not across the nodes of a Redis Cluster.
    pub async fn publish_topic_counted(&self, name: &str, payload: &[u8]) -> Result<u64, BusError> {
        redis::cmd("PUBLISH")
            .arg(self.topic_channel(name))
            .arg(payload)
            .query_async::<u64>(&mut self.connection())
            .await
            .map_err(|e| BusError::Unavailable(format!("publish on topic {name}: {e}")))
    }

    /// Subscribes to topic `name`; at most `capacity` messages wait in the
    /// subscription (more are dropped, and counted in the log).
    pub async fn subscribe_topic(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<TopicSubscription, BusError> {
        let channel = self.topic_channel(name);
        let client = self.inner.client.clone();
        // The first subscription is made here so that a caller knows it is
        // subscribed once this returns.
        let first = subscribe(&client, &channel)
            .await
            .map_err(|e| BusError::Unavailable(format!("subscribe to topic {name}: {e}")))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(client, channel, first, tx));
        Ok(TopicSubscription { rx, task })
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn run(
    client: redis::Client,
    channel: String,
    first: redis::aio::PubSub,
    tx: mpsc::Sender<Bytes>,
) {
    let mut pubsub = Some(first);
    let mut backoff = Duration::from_millis(50);
    let mut dropped: u64 = 0;
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&client, &channel).await {
                Ok(p) => {
                    tracing::info!(%channel, "redis topic subscribed again");
                    backoff = Duration::from_millis(50);
                    p
                }
                Err(e) => {
                    tracing::debug!(%channel, error = %e, "redis topic: cannot subscribe yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(msg) = messages.next().await {
            let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
            match tx.try_send(payload) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(%channel, dropped, "redis topic: subscriber too slow, messages dropped");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if tx.is_closed() {
            return;
        }
        tracing::warn!(%channel, "redis topic connection lost; subscribing again");
    }
}
