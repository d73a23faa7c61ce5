//! The presence port over NATS: heartbeats are core publishes, queries
//! requests, both with the service token.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use confab_events::UserId;
use confab_events::presence::{
    HEARTBEAT_SUBJECT, Heartbeat, QUERY_SUBJECT, QueryRequest, QueryResponse,
};
use confab_events::socket::PresenceStatus;

use super::{Presence, PresenceError};
use crate::service_client::{RequestError, ServiceClient};

/// The tracker reached over NATS: heartbeats are core publishes on
/// [`HEARTBEAT_SUBJECT`], queries requests on [`QUERY_SUBJECT`], both with
/// the service token.
pub struct NatsPresence {
    client: ServiceClient,
}

impl NatsPresence {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(client, service_token, timeout),
        }
    }
}

#[async_trait]
impl Presence for NatsPresence {
    async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError> {
        self.client
            .publish(HEARTBEAT_SUBJECT, hb)
            .await
            .map_err(|e| PresenceError::Unavailable(format!("{HEARTBEAT_SUBJECT}: {e}")))
    }

    async fn query(
        &self,
        users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
        let body = QueryRequest {
            users: users.to_vec(),
        };
        let payload = self
            .client
            .request(QUERY_SUBJECT, &body)
            .await
            .map_err(|e| {
                PresenceError::Unavailable(match e {
                    RequestError::Timeout(t) => {
                        format!("no answer on {QUERY_SUBJECT} within {t:?}")
                    }
                    RequestError::Failed(e) => format!("{QUERY_SUBJECT}: {e}"),
                })
            })?;
        serde_json::from_slice::<QueryResponse>(&payload)
            .map(|r| r.presence)
            .map_err(|e| PresenceError::Unavailable(format!("{QUERY_SUBJECT}: bad reply: {e}")))
    }
}
