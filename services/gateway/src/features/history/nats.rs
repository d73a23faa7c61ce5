//! The history port over NATS request/reply (`confab.messages.v1.*`,
//! service token).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{MessageCalls, unavailable};
use crate::service_client::{RequestError, ServiceClient};

/// History calls over NATS request/reply.
pub struct NatsHistory {
    client: ServiceClient,
}

impl NatsHistory {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(client, service_token, timeout),
        }
    }
}

#[async_trait]
impl MessageCalls for NatsHistory {
    async fn call(&self, subject: &'static str, body: Value) -> Value {
        match self.client.request(subject, &body).await {
            Err(RequestError::Timeout(t)) => {
                unavailable(format!("no answer on {subject} within {t:?}; retry"))
            }
            Err(RequestError::Failed(e)) => unavailable(format!("{subject}: {e}")),
            Ok(payload) => serde_json::from_slice(&payload)
                .unwrap_or_else(|e| unavailable(format!("{subject}: bad reply: {e}"))),
        }
    }
}
