//! The NATS request/reply API: every endpoint of the service, as one NATS
//! micro-service `confab-membership` on [`confab_contracts::EndpointServer`]
//! (bounded, traced, service token only, one error encoding).
//!
//! * the membership API ([`membership_routes`], subjects and bodies in
//!   [`confab_contracts::membership`]): the same commands and queries as HTTP;
//! * the message history calls ([`message_routes`],
//!   [`confab_contracts::messages`]);
//! * the presence query ([`presence_routes`],
//!   [`confab_contracts::presence`]; heartbeats are publishes, read by
//!   [`PresenceTracker::serve_heartbeats`]).
//!
//! A new endpoint is one more `route` here, with its handler below.

use std::future::Future;
use std::sync::Arc;

use confab_contracts::{
    EndpointServer, Routes, ServerSettings, ServiceToken, membership, messages, presence,
    with_state,
};

use crate::domain::Actor;
use crate::history::{History, HistoryError};
use crate::presence::PresenceTracker;
use crate::service::MembershipService;
use confab_contracts::ApiError;
use confab_contracts::membership::{
    EmitRequest, EmitResponse, ExecuteRequest, ExecuteResponse, IsMemberRequest, IsMemberResponse,
    JoinDecision, MayJoinRequest, MembersOfRequest, MembersOfResponse, RoomsOfRequest,
    RoomsOfResponse, SERVICE_NAME,
};

/// A failure to start the NATS API.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the NATS API: {0}")]
pub struct NatsApiError(String);

/// A running NATS API: registered with the server, serving until
/// [`serve`](Self::serve)'s shutdown future completes.
#[derive(Debug)]
pub struct NatsApi {
    server: EndpointServer,
}

impl NatsApi {
    /// Registers the service and the endpoints of `routes` on `client`
    /// (queue group `q`, so several instances share the load); callers
    /// must present `token`.
    pub async fn start(
        client: async_nats::Client,
        routes: Routes,
        token: ServiceToken,
    ) -> Result<Self, NatsApiError> {
        let settings = ServerSettings::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .description("Confab membership: commands and queries");
        let server = EndpointServer::start(client, settings, token, routes)
            .await
            .map_err(|e| NatsApiError(e.to_string()))?;
        Ok(Self { server })
    }

    /// Serves requests until `shutdown` completes, then stops the service
    /// (requests being handled finish).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        self.server.serve(shutdown).await;
    }
}

/// The membership API: `confab.membership.v1.*`.
pub fn membership_routes(service: Arc<MembershipService>) -> Routes {
    let s = || Arc::clone(&service);
    Routes::new()
        .route::<membership::RoomsOf>(with_state(s(), rooms_of))
        .route::<membership::MayJoin>(with_state(s(), may_join))
        .route::<membership::MembersOf>(with_state(s(), members_of))
        .route::<membership::IsMember>(with_state(s(), is_member))
        .route::<membership::Execute>(with_state(s(), execute))
        .route::<membership::Emit>(with_state(s(), emit))
}

/// The message history calls: `confab.messages.v1.*`.
pub fn message_routes(history: History) -> Routes {
    Routes::new()
        .route::<messages::History>(with_state(history.clone(), |h: History, r| async move {
            Ok(h.history(&r).await?)
        }))
        .route::<messages::Edit>(with_state(history.clone(), |h: History, r| async move {
            Ok(h.edit(&r).await?)
        }))
        .route::<messages::Delete>(with_state(history, |h: History, r| async move {
            Ok(h.delete(&r).await?)
        }))
}

/// The presence query: `confab.presence.v1.query`.
pub fn presence_routes(tracker: Arc<PresenceTracker>) -> Routes {
    Routes::new().route::<presence::Query>(with_state(
        tracker,
        |t: Arc<PresenceTracker>, r: presence::QueryRequest| async move {
            Ok(presence::QueryResponse {
                presence: t.query(&r.asker, &r.users).await,
            })
        },
    ))
}

async fn rooms_of(
    s: Arc<MembershipService>,
    r: RoomsOfRequest,
) -> Result<RoomsOfResponse, ApiError> {
    let rooms = s.rooms_of(&r.user).await?;
    Ok(RoomsOfResponse {
        user: r.user,
        rooms,
    })
}

async fn may_join(s: Arc<MembershipService>, r: MayJoinRequest) -> Result<JoinDecision, ApiError> {
    Ok(s.may_join(&r.user, &r.room).await?)
}

async fn members_of(
    s: Arc<MembershipService>,
    r: MembersOfRequest,
) -> Result<MembersOfResponse, ApiError> {
    let members = s.members_of(&r.room).await?;
    Ok(MembersOfResponse {
        room: r.room,
        members,
    })
}

async fn is_member(
    s: Arc<MembershipService>,
    r: IsMemberRequest,
) -> Result<IsMemberResponse, ApiError> {
    let member = s.is_member(&r.user, &r.room).await?;
    Ok(IsMemberResponse {
        user: r.user,
        room: r.room,
        member,
    })
}

async fn execute(
    s: Arc<MembershipService>,
    r: ExecuteRequest,
) -> Result<ExecuteResponse, ApiError> {
    let actor = Actor::Service {
        on_behalf_of: r.actor,
    };
    Ok(ExecuteResponse::from(s.execute(r.command, &actor).await?))
}

async fn emit(s: Arc<MembershipService>, r: EmitRequest) -> Result<EmitResponse, ApiError> {
    let published = s.emit(&r.room, &r.event, &r.data, r.id.as_deref()).await?;
    Ok(EmitResponse {
        seq: published.seq,
        duplicate: published.duplicate,
    })
}

/// A history refusal as the history calls answer it: its code, its text.
impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
