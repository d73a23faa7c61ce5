//! The message history port: `message:edit`, `message:delete` and
//! `message:history` are answered by the membership service (which holds
//! the messages projection). [`NatsHistory`] (`nats.rs`) asks it over NATS
//! ([`confab_contracts::messages`], service token); the all-in-one process
//! plugs in an in-process implementation; [`NoHistory`] refuses.

mod nats;

use async_trait::async_trait;
use confab_contracts::messages::{
    ChangeAck, DeleteRequest, EditRequest, HistoryPage, HistoryRequest,
};
use confab_contracts::{ErrorBody, ErrorDetail, codes};
use confab_events::UserId;
use confab_events::socket;
use serde::Serialize;

pub(crate) use nats::NatsHistory;

use crate::reply::Reply;

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

/// The ack of a call: the result, or `{error: {code, message}}`. The
/// service's refusal already has the ack's error shape ([`ErrorBody`]), so
/// it passes through as it came.
fn ack<T: Serialize>(result: Result<T, ErrorDetail>) -> Reply {
    match result {
        Ok(answer) => Reply::ok(&answer),
        Err(error) => Reply::ok(&ErrorBody { error }),
    }
}

/// Answers `message:edit` for `user`.
pub(crate) async fn edit(
    calls: &dyn MessageCalls,
    user: &UserId,
    req: socket::EditRequest,
) -> Reply {
    let request = EditRequest {
        user: user.to_string(),
        room: req.room,
        id: req.id,
        body: req.body,
    };
    ack(calls.edit(&request).await)
}

/// Answers `message:delete` for `user`.
pub(crate) async fn delete(
    calls: &dyn MessageCalls,
    user: &UserId,
    req: socket::DeleteRequest,
) -> Reply {
    let request = DeleteRequest {
        user: user.to_string(),
        room: req.room,
        id: req.id,
    };
    ack(calls.delete(&request).await)
}

/// Answers `message:history` for `user`.
pub(crate) async fn history(
    calls: &dyn MessageCalls,
    user: &UserId,
    req: socket::HistoryRequest,
) -> Reply {
    let request = HistoryRequest {
        user: user.to_string(),
        room: req.room,
        before: req.before,
        limit: req.limit,
    };
    ack(calls.history(&request).await)
}
