//! The wire contract of the membership APIs, as `confab-membership` uses
//! it: the endpoints, bodies and error shape of
//! [`confab_contracts::membership`] (re-exported here), the `execute`
//! endpoint (its body is the domain's [`Command`]), and
//! [`MembershipClient`], a ready NATS client for other services.
//!
//! # NATS request/reply
//!
//! Service `confab-membership` (NATS micro-service API: `$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS` work), queue group `q`, one endpoint per
//! subject in [`subjects`], served by [`crate::api_nats`]. Every request
//! carries the header `Authorization: Bearer <service token>` and a JSON
//! body; W3C `traceparent` / `tracestate` headers are honoured. The reply
//! is the response JSON, or [`ErrorBody`] `{"error":{"code","message"}}`
//! with the headers `Nats-Service-Error` / `Nats-Service-Error-Code` (the
//! HTTP status) set.
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

pub use confab_contracts::membership::{
    EmitRequest, EmitResponse, ExecuteResponse, IsMemberRequest, IsMemberResponse, JoinDecision,
    MayJoinRequest, MembersOfRequest, MembersOfResponse, RoomsOfRequest, RoomsOfResponse,
    SERVICE_NAME, SUBJECT_PREFIX, subjects,
};
pub use confab_contracts::{
    AUTHORIZATION_HEADER, ApiError, CallError as ClientError, ErrorBody, ErrorDetail, QUEUE_GROUP,
    decode_reply, status_of,
};
use confab_contracts::{Endpoint, ServiceClient, membership};
use confab_events::{RoomId, UserId};
use serde::{Deserialize, Serialize};

pub use crate::domain::Command;
use crate::service::ServiceError;

/// `execute`: run a command.
#[derive(Debug, Clone, Copy)]
pub struct Execute;

impl Endpoint for Execute {
    const SUBJECT: &'static str = subjects::EXECUTE;
    type Request = ExecuteRequest;
    type Response = ExecuteResponse;
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

impl From<crate::service::Outcome> for ExecuteResponse {
    fn from(o: crate::service::Outcome) -> Self {
        Self {
            seq: o.seq,
            event: o.event,
            projected: o.projected,
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
#[derive(Debug, Clone)]
pub struct MembershipClient {
    client: ServiceClient,
}

impl MembershipClient {
    /// A client sending `token` as the service credential; requests time
    /// out after 5 s.
    pub fn new(client: async_nats::Client, token: &str) -> Self {
        Self {
            client: ServiceClient::new(client, token, Duration::from_secs(5)),
        }
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.with_timeout(timeout);
        self
    }

    /// Rooms the user belongs to.
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, ClientError> {
        let request = RoomsOfRequest { user: user.clone() };
        Ok(self
            .client
            .call::<membership::RoomsOf>(&request)
            .await?
            .rooms)
    }

    /// Whether the user may put a socket in the room.
    pub async fn may_join(
        &self,
        user: &UserId,
        room: &RoomId,
    ) -> Result<JoinDecision, ClientError> {
        let request = MayJoinRequest {
            user: user.clone(),
            room: room.clone(),
        };
        self.client.call::<membership::MayJoin>(&request).await
    }

    /// Members of a room.
    pub async fn members_of(&self, room: &RoomId) -> Result<Vec<UserId>, ClientError> {
        let request = MembersOfRequest { room: room.clone() };
        let r = self.client.call::<membership::MembersOf>(&request).await?;
        Ok(r.members)
    }

    /// Whether the user is a member of the room.
    pub async fn is_member(&self, user: &UserId, room: &RoomId) -> Result<bool, ClientError> {
        let request = IsMemberRequest {
            user: user.clone(),
            room: room.clone(),
        };
        Ok(self
            .client
            .call::<membership::IsMember>(&request)
            .await?
            .member)
    }

    /// Runs a command on behalf of `actor`.
    pub async fn execute(
        &self,
        actor: Option<&UserId>,
        command: Command,
    ) -> Result<ExecuteResponse, ClientError> {
        let request = ExecuteRequest {
            actor: actor.cloned(),
            command,
        };
        self.client.call::<Execute>(&request).await
    }

    /// Publishes an app event to a room.
    pub async fn emit(&self, request: &EmitRequest) -> Result<EmitResponse, ClientError> {
        self.client.call::<membership::Emit>(request).await
    }

    /// Calls any membership endpoint.
    pub async fn call<E: Endpoint>(
        &self,
        request: &E::Request,
    ) -> Result<E::Response, ClientError> {
        self.client.call::<E>(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_keep_their_code_and_field() {
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
        let err = decode_reply::<IsMemberResponse>(
            br#"{"error":{"code":"unauthorized","message":"no"}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Refused(d) if d.code == "unauthorized"));
    }
}
