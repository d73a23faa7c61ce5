//! The presence port over NATS: heartbeats are core publishes
//! ([`Heartbeats`]), queries requests ([`Query`]), both with the service
//! token.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use confab_contracts::presence::{Heartbeat, Heartbeats, Query, QueryRequest};
use confab_contracts::{CallError, Endpoint, ServiceClient, Topic};
use confab_events::UserId;
use confab_events::socket::PresenceStatus;

use super::{Presence, PresenceError};

/// The tracker reached over NATS: heartbeats are core publishes
/// ([`Heartbeats`]), queries requests ([`Query`]), both with the service
/// token.
pub struct NatsPresence {
    client: ServiceClient,
}

impl NatsPresence {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(client, &service_token, timeout),
        }
    }
}

#[async_trait]
impl Presence for NatsPresence {
    async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError> {
        self.client
            .publish::<Heartbeats>(hb)
            .await
            .map_err(|e| PresenceError::Unavailable(format!("{}: {e}", Heartbeats::SUBJECT)))
    }

    async fn query(
        &self,
        asker: &UserId,
        users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
        query_tracker(&self.client, asker, users).await
    }
}

/// Asks the tracker for `users`' presence through `client` (over NATS, or
/// over HTTP on a deployment without NATS: the same endpoint).
pub(super) async fn query_tracker(
    client: &ServiceClient,
    asker: &UserId,
    users: &[UserId],
) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
    let request = QueryRequest {
        asker: asker.clone(),
        users: users.to_vec(),
    };
    let subject = Query::SUBJECT;
    let answer = client.call::<Query>(&request).await.map_err(|e| {
        PresenceError::Unavailable(match e {
            CallError::Timeout(t) => format!("no answer on {subject} within {t:?}"),
            CallError::Unavailable(e) => format!("{subject}: {e}"),
            CallError::Refused(err) => format!("{subject}: {} ({})", err.message, err.code),
            CallError::Decode(e) => format!("{subject}: bad reply: {e}"),
        })
    })?;
    Ok(answer.presence)
}
