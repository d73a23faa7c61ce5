//! The message history calls: `confab.messages.v1.*`, answered by the
//! membership service (which holds the messages projection) for the
//! gateways' `message:history`, `message:edit` and `message:delete`.
//!
//! | Subject | Endpoint | Request | Response |
//! |---|---|---|---|
//! | `confab.messages.v1.history` | [`History`] | [`HistoryRequest`] | [`HistoryPage`] |
//! | `confab.messages.v1.edit` | [`Edit`] | [`EditRequest`] | [`ChangeAck`] |
//! | `confab.messages.v1.delete` | [`Delete`] | [`DeleteRequest`] | [`ChangeAck`] |
//!
//! Refusals use the socket-facing codes (`invalid_request`, `invalid_body`,
//! `forbidden`, `not_found`, `unavailable`): the gateway forwards them to
//! the client's ack as they are.

use confab_events::socket::Message;
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, codes};

/// The subject prefix of the history calls.
pub const SUBJECT_PREFIX: &str = "confab.messages.v1";

/// The endpoint subjects.
pub mod subjects {
    /// A page of history.
    pub const HISTORY: &str = "confab.messages.v1.history";
    /// Edit a message.
    pub const EDIT: &str = "confab.messages.v1.edit";
    /// Delete a message.
    pub const DELETE: &str = "confab.messages.v1.delete";
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::new(codes::INVALID_REQUEST, format!("body: {error}"))
}

/// `history`: a page of a room's messages, for a member.
#[derive(Debug, Clone, Copy)]
pub struct History;

impl Endpoint for History {
    const SUBJECT: &'static str = subjects::HISTORY;
    type Request = HistoryRequest;
    type Response = HistoryPage;

    fn malformed(error: &serde_json::Error) -> ApiError {
        malformed(error)
    }
}

/// `edit`: edit a message, by its author.
#[derive(Debug, Clone, Copy)]
pub struct Edit;

impl Endpoint for Edit {
    const SUBJECT: &'static str = subjects::EDIT;
    type Request = EditRequest;
    type Response = ChangeAck;

    fn malformed(error: &serde_json::Error) -> ApiError {
        malformed(error)
    }
}

/// `delete`: delete a message, by its author or a workspace owner/admin.
#[derive(Debug, Clone, Copy)]
pub struct Delete;

impl Endpoint for Delete {
    const SUBJECT: &'static str = subjects::DELETE;
    type Request = DeleteRequest;
    type Response = ChangeAck;

    fn malformed(error: &serde_json::Error) -> ApiError {
        malformed(error)
    }
}

/// Body of `confab.messages.v1.history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// Who asks.
    pub user: String,
    /// The room.
    pub room: String,
    /// Cursor: only messages before this one (a `nextCursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1 to 100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// Messages, newest first (deleted ones left out).
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `confab.messages.v1.edit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRequest {
    /// Who edits.
    pub user: String,
    /// The message's room.
    pub room: String,
    /// The message id.
    pub id: String,
    /// The new text.
    pub body: String,
}

/// Body of `confab.messages.v1.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// Who deletes.
    pub user: String,
    /// The message's room.
    pub room: String,
    /// The message id.
    pub id: String,
}

/// Answer of an edit or delete, once its event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeAck {
    /// Always `true`.
    pub ok: bool,
    /// Bus log sequence of the `message:updated` / `message:deleted` event.
    pub seq: u64,
}
