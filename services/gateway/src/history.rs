//! The message history port: `message:edit`, `message:delete` and
//! `message:history` are answered by the membership service (which holds
//! the messages projection). [`NatsHistory`] asks it over NATS
//! (`confab.messages.v1.*`, service token); the all-in-one process plugs in
//! an in-process implementation; [`NoHistory`] refuses.

use std::time::Duration;

use crate::service_client::{RequestError, ServiceClient};
use async_trait::async_trait;
use serde_json::{Value, json};

/// The NATS subject of each call.
pub mod subjects {
    /// A page of history.
    pub const HISTORY: &str = "confab.messages.v1.history";
    /// Edit a message.
    pub const EDIT: &str = "confab.messages.v1.edit";
    /// Delete a message.
    pub const DELETE: &str = "confab.messages.v1.delete";
}

/// Answers history calls. `call` takes the subject (a [`subjects`] value)
/// and the request body (`{user, room, ...}`) and returns the answer as
/// the client gets it in its ack: the result, or `{error: {code,
/// message}}`.
#[async_trait]
pub trait MessageCalls: Send + Sync + 'static {
    /// Runs one call.
    async fn call(&self, subject: &'static str, body: Value) -> Value;
}

fn unavailable(message: impl Into<String>) -> Value {
    json!({ "error": { "code": "unavailable", "message": message.into() } })
}

/// Refuses every call: no membership service behind this gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHistory;

#[async_trait]
impl MessageCalls for NoHistory {
    async fn call(&self, _subject: &'static str, _body: Value) -> Value {
        unavailable("message history needs the membership service (membership.kind = \"nats\")")
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

/// Answers `message:edit` for `user`.
pub async fn edit(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::EditRequest,
) -> Value {
    let body = json!({ "user": user, "room": req.room, "id": req.id, "body": req.body });
    calls.call(subjects::EDIT, body).await
}

/// Answers `message:delete` for `user`.
pub async fn delete(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::DeleteRequest,
) -> Value {
    let body = json!({ "user": user, "room": req.room, "id": req.id });
    calls.call(subjects::DELETE, body).await
}

/// Answers `message:history` for `user`.
pub async fn history(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::HistoryRequest,
) -> Value {
    let body = json!({ "user": user, "room": req.room, "before": req.before, "limit": req.limit });
    calls.call(subjects::HISTORY, body).await
}
