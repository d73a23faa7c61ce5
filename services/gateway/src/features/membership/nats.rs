//! The membership port over NATS request/reply: asks the membership
//! service (`confab.membership.v1.rooms_of` / `.may_join`), authenticated
//! with the service token, carrying the W3C trace context.
//!
//! The wire contract is the membership service's (`services/membership`,
//! module `api`); the gateway keeps its own small client so that it never
//! links the membership service's storage code.

use std::time::Duration;

use async_trait::async_trait;
use confab_events::{RoomId, UserId};
use serde::Deserialize;
use serde_json::json;

use super::{Access, Membership, MembershipError};
use crate::service_client::{RequestError, ServiceClient};

const ROOMS_OF: &str = "confab.membership.v1.rooms_of";
const MAY_JOIN: &str = "confab.membership.v1.may_join";

/// Membership answered by the membership service over NATS.
pub struct NatsMembership {
    client: ServiceClient,
}

#[derive(Deserialize)]
struct RoomsOf {
    rooms: Vec<RoomId>,
}

#[derive(Deserialize)]
struct Decision {
    allowed: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl NatsMembership {
    /// A client on an existing NATS connection.
    pub fn new(client: async_nats::Client, service_token: String, timeout: Duration) -> Self {
        Self {
            client: ServiceClient::new(client, service_token, timeout),
        }
    }

    async fn request<T: for<'de> Deserialize<'de>>(
        &self,
        subject: &'static str,
        body: serde_json::Value,
    ) -> Result<T, MembershipError> {
        let payload = self.client.request(subject, &body).await.map_err(|e| {
            MembershipError::Unavailable(match e {
                RequestError::Timeout(t) => {
                    format!("no answer from the membership service on {subject} within {t:?}")
                }
                RequestError::Failed(e) => format!("{subject}: {e}"),
            })
        })?;
        if let Ok(err) = serde_json::from_slice::<ErrorBody>(&payload) {
            return Err(MembershipError::Unavailable(format!(
                "{subject}: {} ({})",
                err.error.message, err.error.code
            )));
        }
        serde_json::from_slice(&payload)
            .map_err(|e| MembershipError::Unavailable(format!("{subject}: bad reply: {e}")))
    }
}

#[async_trait]
impl Membership for NatsMembership {
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, MembershipError> {
        let r: RoomsOf = self.request(ROOMS_OF, json!({ "user": user })).await?;
        Ok(r.rooms)
    }

    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<Access, MembershipError> {
        let d: Decision = self
            .request(MAY_JOIN, json!({ "user": user, "room": room }))
            .await?;
        Ok(Access::from_decision(d.allowed, d.reason, user, room))
    }
}
