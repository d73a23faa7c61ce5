//! The membership port over NATS request/reply: asks the membership
//! service ([`RoomsOf`], [`MayJoin`] of [`confab_contracts::membership`]),
//! authenticated with the service token, carrying the W3C trace context.
//!
//! The contract is shared with the service (`confab-contracts`); the
//! gateway never links the membership service's storage code.

use std::time::Duration;

use async_trait::async_trait;
use confab_contracts::membership::{MayJoin, MayJoinRequest, RoomsOf, RoomsOfRequest};
use confab_contracts::{CallError, Endpoint, ServiceClient};
use confab_events::{RoomId, UserId};

use super::{Access, Membership, MembershipError};

/// Membership answered by the membership service over NATS.
pub struct NatsMembership {
    client: ServiceClient,
}

impl NatsMembership {
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

    async fn call<E: Endpoint>(
        &self,
        request: &E::Request,
    ) -> Result<E::Response, MembershipError> {
        self.client.call::<E>(request).await.map_err(|e| {
            let subject = E::SUBJECT;
            MembershipError::Unavailable(match e {
                CallError::Timeout(t) => {
                    format!("no answer from the membership service on {subject} within {t:?}")
                }
                CallError::Unavailable(e) => format!("{subject}: {e}"),
                CallError::Refused(err) => format!("{subject}: {} ({})", err.message, err.code),
                CallError::Decode(e) => format!("{subject}: bad reply: {e}"),
            })
        })
    }
}

#[async_trait]
impl Membership for NatsMembership {
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, MembershipError> {
        let request = RoomsOfRequest { user: user.clone() };
        Ok(self.call::<RoomsOf>(&request).await?.rooms)
    }

    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<Access, MembershipError> {
        let request = MayJoinRequest {
            user: user.clone(),
            room: room.clone(),
        };
        let d = self.call::<MayJoin>(&request).await?;
        Ok(Access::from_decision(d.allowed, d.reason, user, room).read_only_if(d.read_only, room))
    }
}
