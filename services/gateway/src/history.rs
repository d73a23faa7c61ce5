//! The message history port: `message:edit`, `message:delete` and
//! `message:history` are answered by the membership service (which holds
//! the messages projection). [`NatsHistory`] asks it over NATS
//! ([`confab_contracts::messages`], service token); the all-in-one process
//! plugs in an in-process implementation; [`NoHistory`] refuses.

use std::time::Duration;

use async_trait::async_trait;
use confab_contracts::messages::{
    self, ChangeAck, DeleteRequest, EditRequest, HistoryPage, HistoryRequest,
};
use confab_contracts::{CallError, Endpoint, ErrorBody, ErrorDetail, ServiceClient, codes};
use confab_events::UserId;
use confab_events::socket;
use serde::Serialize;
use serde_json::Value;

/// Answers history calls: the result, or the refusal the client gets in
/// its ack as `{error: {code, message}}`.
#[async_trait]
pub trait MessageCalls: Send + Sync + 'static {
    /// A page of a room's history.
    async fn history(&self, request: &HistoryRequest) -> Result<HistoryPage, ErrorDetail>;
    /// Edits a message.
    async fn edit(&self, request: &EditRequest) -> Result<ChangeAck, ErrorDetail>;
    /// Deletes a message.
    async fn delete(&self, request: &DeleteRequest) -> Result<ChangeAck, ErrorDetail>;
}

fn unavailable(message: impl Into<String>) -> ErrorDetail {
    ErrorDetail::new(codes::UNAVAILABLE, message)
}

/// Refuses every call: no membership service behind this gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHistory;

impl NoHistory {
    fn refuse<T>() -> Result<T, ErrorDetail> {
        Err(unavailable(
            "message history needs the membership service (membership.kind = \"nats\")",
        ))
    }
}

#[async_trait]
impl MessageCalls for NoHistory {
    async fn history(&self, _request: &HistoryRequest) -> Result<HistoryPage, ErrorDetail> {
        Self::refuse()
    }

    async fn edit(&self, _request: &EditRequest) -> Result<ChangeAck, ErrorDetail> {
        Self::refuse()
    }

    async fn delete(&self, _request: &DeleteRequest) -> Result<ChangeAck, ErrorDetail> {
        Self::refuse()
    }
}

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

/// The ack of a call: the result, or `{error: {code, message}}`.
fn ack<T: Serialize>(result: Result<T, ErrorDetail>) -> Value {
    let value = match result {
        Ok(answer) => serde_json::to_value(answer),
        Err(error) => serde_json::to_value(ErrorBody { error }),
    };
    value.unwrap_or(Value::Null)
}

/// Answers `message:edit` for `user`.
pub async fn edit(calls: &dyn MessageCalls, user: &UserId, req: socket::EditRequest) -> Value {
    let request = EditRequest {
        user: user.to_string(),
        room: req.room,
        id: req.id,
        body: req.body,
    };
    ack(calls.edit(&request).await)
}

/// Answers `message:delete` for `user`.
pub async fn delete(calls: &dyn MessageCalls, user: &UserId, req: socket::DeleteRequest) -> Value {
    let request = DeleteRequest {
        user: user.to_string(),
        room: req.room,
        id: req.id,
    };
    ack(calls.delete(&request).await)
}

/// Answers `message:history` for `user`.
pub async fn history(
    calls: &dyn MessageCalls,
    user: &UserId,
    req: socket::HistoryRequest,
) -> Value {
    let request = HistoryRequest {
        user: user.to_string(),
        room: req.room,
        before: req.before,
        limit: req.limit,
    };
    ack(calls.history(&request).await)
}
