//! The wire contract of the membership APIs: NATS subjects, request and
//! response bodies, the error shape, and [`MembershipClient`], a ready NATS
//! client for other services (the gateway calls `rooms_of` and `may_join`).
//!
//! # NATS request/reply
//!
//! Service `confab-membership` (NATS micro-service API: `$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS` work), queue group `q`, one endpoint per
//! subject in [`subjects`]. Every request carries the header
//! `Authorization: Bearer <service token>` and a JSON body; W3C
//! `traceparent` / `tracestate` headers are honoured. The reply is the
//! response JSON, or [`ErrorBody`] `{"error":{"code","message"}}` with the
//! headers `Nats-Service-Error` / `Nats-Service-Error-Code` (the HTTP
//! status) set.
//!
//! | Subject | Request | Response |
//! |---|---|---|
//! | `confab.membership.v1.rooms_of` | [`RoomsOfRequest`] | [`RoomsOfResponse`] |
//! | `confab.membership.v1.may_join` | [`MayJoinRequest`] | [`JoinDecision`] |
//! | `confab.membership.v1.members_of` | [`MembersOfRequest`] | [`MembersOfResponse`] |
//! | `confab.membership.v1.is_member` | [`IsMemberRequest`] | [`IsMemberResponse`] |
//! | `confab.membership.v1.execute` | [`ExecuteRequest`] | [`ExecuteResponse`] |
//! | `confab.membership.v1.emit` | [`EmitRequest`] | [`EmitResponse`] |
//!
//! # Error codes
//!
//! [`ErrorDetail::code`] is one of: `invalid` (400), `unauthorized` (401),
//! `forbidden` (403), `not_found` (404), `already_exists`, `archived`,
//! `not_a_member`, `conflict` (409), `payload_too_large` (413),
//! `unavailable` (503), `internal` (500). [`status_of`] maps them.

use std::time::Duration;

use confab_events::membership::EventEnvelope;
use confab_events::{RoomId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::domain::Command;
pub use crate::read_model::JoinDecision;
use crate::service::ServiceError;

/// The NATS micro-service name.
pub const SERVICE_NAME: &str = "confab-membership";

/// The subject prefix of every endpoint.
pub const SUBJECT_PREFIX: &str = "confab.membership.v1";

/// The queue group every instance serves in (requests are load-balanced).
pub const QUEUE_GROUP: &str = "q";

/// The header carrying `Bearer <service token>`.
pub const AUTHORIZATION_HEADER: &str = "Authorization";

/// The endpoint subjects.
pub mod subjects {
    /// Rooms of a user.
    pub const ROOMS_OF: &str = "confab.membership.v1.rooms_of";
    /// May a user put a socket in a room?
    pub const MAY_JOIN: &str = "confab.membership.v1.may_join";
    /// Members of a room.
    pub const MEMBERS_OF: &str = "confab.membership.v1.members_of";
    /// Is a user a member of a room?
    pub const IS_MEMBER: &str = "confab.membership.v1.is_member";
    /// Run a command.
    pub const EXECUTE: &str = "confab.membership.v1.execute";
    /// Publish an app event to a room.
    pub const EMIT: &str = "confab.membership.v1.emit";
}

/// `rooms_of` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsOfRequest {
    /// The user.
    pub user: UserId,
}

/// `rooms_of` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsOfResponse {
    /// The user.
    pub user: UserId,
    /// Workspaces, channels and DMs the user belongs to (not `user:{id}`),
    /// sorted.
    pub rooms: Vec<RoomId>,
}

/// `may_join` request. The response is a [`JoinDecision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MayJoinRequest {
    /// The user.
    pub user: UserId,
    /// The room a socket of theirs wants to join.
    pub room: RoomId,
}

/// `members_of` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersOfRequest {
    /// The room.
    pub room: RoomId,
}

/// `members_of` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersOfResponse {
    /// The room.
    pub room: RoomId,
    /// Its members, sorted.
    pub members: Vec<UserId>,
}

/// `is_member` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsMemberRequest {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
}

/// `is_member` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsMemberResponse {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
    /// Whether the user is a member now.
    pub member: bool,
}

/// `execute` request: a command, and the user the service acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The user the caller acts for; required by commands that record a
    /// user (everything but workspace creation and membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// The command, tagged by `type`, e.g.
    /// `{"type":"join_channel","channel":"42"}`.
    pub command: Command,
}

/// A command's answer (`execute`, and every HTTP command endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// The event's sequence in the membership log.
    pub seq: u64,
    /// The stored event.
    pub event: EventEnvelope,
    /// Whether queries already reflect it (read-your-writes); `false` when
    /// the projections were slow to catch up.
    pub projected: bool,
}

impl From<crate::service::Outcome> for ExecuteResponse {
    fn from(o: crate::service::Outcome) -> Self {
        Self {
            seq: o.seq,
            event: o.event,
            projected: o.projected,
        }
    }
}

/// `emit` request: an app event for a room, published durably on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    /// The room, e.g. `channel:42`.
    pub room: RoomId,
    /// Socket.IO event name, e.g. `message:new` (ASCII letters, digits and
    /// `: _ - .`, at most 64; the membership notifications are reserved).
    pub event: String,
    /// The event's single argument.
    #[serde(default)]
    pub data: serde_json::Value,
    /// An idempotency id: a retry with the same id within the bus's
    /// duplicate window is not delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `emit` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitResponse {
    /// The message's sequence in the room log, when the bus keeps one.
    pub seq: Option<u64>,
    /// Whether it was a duplicate of an earlier emit with the same id.
    pub duplicate: bool,
}

/// The error body of every API: `{"error":{"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorDetail {
    /// Stable machine code (see the [module docs](self)).
    pub code: String,
    /// What went wrong, for a developer.
    pub message: String,
    /// The input field at fault, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The HTTP status of an error code (also sent as `Nats-Service-Error-Code`).
pub fn status_of(code: &str) -> u16 {
    match code {
        "invalid" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "already_exists" | "archived" | "not_a_member" | "conflict" => 409,
        "payload_too_large" => 413,
        "unavailable" => 503,
        _ => 500,
    }
}

/// An error as the APIs answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0)]
pub struct ApiError(pub ErrorDetail);

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self(ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            field: None,
        })
    }

    /// `invalid`, naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self(ErrorDetail {
            code: "invalid".to_owned(),
            message: message.into(),
            field: Some(field.to_owned()),
        })
    }

    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new("unauthorized", message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("forbidden", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        status_of(&self.0.code)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.0.clone(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e.field() {
            Some(field) => Self::invalid(field, message),
            None => Self::new(e.code(), message),
        }
    }
}

/// A [`MembershipClient`] failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer (no responders, timeout, connection down).
    #[error("membership service unavailable: {0}")]
    Unavailable(String),
    /// The service answered with an error.
    #[error("membership service refused: {0}")]
    Refused(ErrorDetail),
    /// The answer could not be read.
    #[error("unreadable membership answer: {0}")]
    Decode(String),
}

/// A NATS client of the membership service.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) -> Result<(), confab_membership::api::ClientError> {
/// use confab_membership::api::MembershipClient;
/// let membership = MembershipClient::new(nats, "the-service-token");
/// let alice = confab_events::UserId::parse("alice").unwrap();
/// let rooms = membership.rooms_of(&alice).await?;
/// # let _ = rooms; Ok(()) }
/// ```
#[derive(Clone)]
pub struct MembershipClient {
    client: async_nats::Client,
    authorization: String,
    timeout: Duration,
}

impl std::fmt::Debug for MembershipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MembershipClient {
    /// A client sending `token` as the service credential; requests time
    /// out after 5 s.
    pub fn new(client: async_nats::Client, token: &str) -> Self {
        Self {
            client,
            authorization: format!("Bearer {token}"),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rooms the user belongs to.
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, ClientError> {
        let r: RoomsOfResponse = self
            .call(subjects::ROOMS_OF, &RoomsOfRequest { user: user.clone() })
            .await?;
        Ok(r.rooms)
    }

    /// Whether the user may put a socket in the room.
    pub async fn may_join(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<JoinDecision, ClientError> {
        self.call(
            subjects::MAY_JOIN,
            &MayJoinRequest {
                user: user.clone(),
                room: room.clone(),
            },
        )
        .await
    }

    /// Members of a room.
    pub async fn members_of(&self, room: &RoomId) -> Result<Vec<UserId>, ClientError> {
        let r: MembersOfResponse = self
            .call(
                subjects::MEMBERS_OF,
                &MembersOfRequest { room: room.clone() },
            )
            .await?;
        Ok(r.members)
    }

    /// Whether the user is a member of the room.
    pub async fn is_member(&self, user: &UserId, room: &RoomId) -> Result<bool, ClientError> {
        let r: IsMemberResponse = self
            .call(
                subjects::IS_MEMBER,
                &IsMemberRequest {
                    user: user.clone(),
                    room: room.clone(),
                },
            )
            .await?;
        Ok(r.member)
    }

    /// Runs a command on behalf of `actor`.
    pub async fn execute(
        &self,
        actor: Option<&UserId>,
        command: Command,
    ) -> Result<ExecuteResponse, ClientError> {
        self.call(
            subjects::EXECUTE,
            &ExecuteRequest {
                actor: actor.cloned(),
                command,
            },
        )
        .await
    }

    /// Publishes an app event to a room.
    pub async fn emit(&self, request: &EmitRequest) -> Result<EmitResponse, ClientError> {
        self.call(subjects::EMIT, request).await
    }

    /// Sends one request and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(AUTHORIZATION_HEADER, self.authorization.as_str());
        let mut trace: Vec<(String, String)> = Vec::new();
        confab_telemetry::inject_context(&mut trace);
        for (k, v) in &trace {
            headers.insert(k.as_str(), v.as_str());
        }
        let reply = tokio::time::timeout(
            self.timeout,
            self.client
                .request_with_headers(subject.to_owned(), headers, body.into()),
        )
        .await
        .map_err(|_| {
            ClientError::Unavailable(format!("{subject}: no answer within {:?}", self.timeout))
        })?
        .map_err(|e| ClientError::Unavailable(format!("{subject}: {e}")))?;
        decode_reply(&reply.payload)
    }
}

/// Decodes a reply body: the response, or [`ClientError::Refused`] for an
/// [`ErrorBody`].
pub fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ClientError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| ClientError::Decode(e.to_string()))?;
    if value.get("error").is_some_and(|e| e.get("code").is_some()) {
        let body: ErrorBody =
            serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))?;
        return Err(ClientError::Refused(body.error));
    }
    serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_share_the_prefix() {
        for s in [
            subjects::ROOMS_OF,
            subjects::MAY_JOIN,
            subjects::MEMBERS_OF,
            subjects::IS_MEMBER,
            subjects::EXECUTE,
            subjects::EMIT,
        ] {
            assert!(s.starts_with(&format!("{SUBJECT_PREFIX}.")), "{s}");
        }
    }

    #[test]
    fn replies_decode_to_values_or_errors() {
        let ok: IsMemberResponse =
            decode_reply(br#"{"user":"a","room":"channel:1","member":true}"#).unwrap();
        assert!(ok.member);
        let err = decode_reply::<IsMemberResponse>(
            br#"{"error":{"code":"unauthorized","message":"no"}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Refused(d) if d.code == "unauthorized"));
        assert_eq!(status_of("not_a_member"), 409);
        let e = ApiError::from(ServiceError::Invalid {
            field: "event",
            message: "bad".into(),
        });
        assert_eq!(e.status(), 400);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":{"code":"invalid","message":"event: bad","field":"event"}}"#
        );
    }
}
