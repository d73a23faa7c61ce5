//! The presence port without NATS: heartbeats are published on the Redis
//! bus's heartbeat topic (pub/sub: every membership instance's tracker
//! hears them, at most once, as on core NATS), queries go to the
//! membership service over HTTP ([`Query`], service token).

use std::collections::BTreeMap;

use async_trait::async_trait;
use confab_bus::RedisBus;
use confab_contracts::presence::{Heartbeat, Heartbeats};
use confab_contracts::{ServiceClient, Topic};
use confab_events::UserId;
use confab_events::socket::PresenceStatus;

use super::{Presence, PresenceError};

/// Presence over the Redis bus (heartbeats) and HTTP (queries).
pub struct RedisPresence {
    bus: RedisBus,
    client: ServiceClient,
}

impl RedisPresence {
    /// Heartbeats on `bus`'s topic, queries through `client` (an HTTP
    /// [`ServiceClient`]).
    pub fn new(bus: RedisBus, client: ServiceClient) -> Self {
        Self { bus, client }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError> {
        let body = serde_json::to_vec(hb)
            .map_err(|e| PresenceError::Unavailable(format!("heartbeat: {e}")))?;
        self.bus
            .publish_topic(Heartbeats::SUBJECT, &body)
            .await
            .map_err(|e| PresenceError::Unavailable(e.to_string()))
    }

    async fn query(
        &self,
        asker: &UserId,
        users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
        super::nats::query_tracker(&self.client, asker, users).await
    }
}
