//! The message history port: `message:edit`, `message:delete` and
//! `message:history` are answered by the membership service (which holds
//! the messages projection). [`NatsHistory`] (`nats.rs`) asks it over NATS
//! (`confab.messages.v1.*`, service token); the all-in-one process plugs in
//! an in-process implementation; [`NoHistory`] refuses.

mod nats;

use async_trait::async_trait;
use serde_json::{Value, json};

pub(crate) use nats::NatsHistory;

use crate::reply::{Code, Reply};

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
    Reply::error(Code::Unavailable, message).into_value()
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

/// Answers `message:edit` for `user`.
pub(crate) async fn edit(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::EditRequest,
) -> Reply {
    let body = json!({ "user": user, "room": req.room, "id": req.id, "body": req.body });
    Reply::from_value(calls.call(subjects::EDIT, body).await)
}

/// Answers `message:delete` for `user`.
pub(crate) async fn delete(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::DeleteRequest,
) -> Reply {
    let body = json!({ "user": user, "room": req.room, "id": req.id });
    Reply::from_value(calls.call(subjects::DELETE, body).await)
}

/// Answers `message:history` for `user`.
pub(crate) async fn history(
    calls: &dyn MessageCalls,
    user: &confab_events::UserId,
    req: confab_events::socket::HistoryRequest,
) -> Reply {
    let body = json!({ "user": user, "room": req.room, "before": req.before, "limit": req.limit });
    Reply::from_value(calls.call(subjects::HISTORY, body).await)
}
