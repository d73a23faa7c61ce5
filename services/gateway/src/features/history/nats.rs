//! The history port over NATS request/reply ([`confab_contracts::messages`],
//! service token).

use std::time::Duration;

use async_trait::async_trait;
use confab_contracts::messages::{
    self, ChangeAck, DeleteRequest, EditRequest, HistoryPage, HistoryRequest,
};
use confab_contracts::{CallError, Endpoint, ErrorDetail, ServiceClient};

use super::{MessageCalls, unavailable};

/// History calls over NATS request/reply.
pub struct NatsHistory {
    client: ServiceClient,
}

impl NatsHistory {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(client, &service_token, timeout),
        }
    }

    /// A client on any transport: an HTTP [`ServiceClient`] reaches the
    /// membership service's endpoint table without NATS
    /// (`membership.kind = "http"`).
    pub fn with_client(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Calls `E`; the service's refusals pass through, the rest is
    /// `unavailable`.
    async fn call<E: Endpoint>(&self, request: &E::Request) -> Result<E::Response, ErrorDetail> {
        let subject = E::SUBJECT;
        self.client.call::<E>(request).await.map_err(|e| match e {
            CallError::Refused(refusal) => refusal,
            CallError::Timeout(t) => {
                unavailable(format!("no answer on {subject} within {t:?}; retry"))
            }
            CallError::Unavailable(e) => unavailable(format!("{subject}: {e}")),
            CallError::Decode(e) => unavailable(format!("{subject}: bad reply: {e}")),
        })
    }
}

#[async_trait]
impl MessageCalls for NatsHistory {
    async fn history(&self, request: &HistoryRequest) -> Result<HistoryPage, ErrorDetail> {
        self.call::<messages::History>(request).await
    }

    async fn edit(&self, request: &EditRequest) -> Result<ChangeAck, ErrorDetail> {
        self.call::<messages::Edit>(request).await
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<ChangeAck, ErrorDetail> {
        self.call::<messages::Delete>(request).await
    }
}
