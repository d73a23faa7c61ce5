//! The NATS request/reply API: the same commands and queries as HTTP, as
//! the NATS micro-service `confab-membership` (subjects and bodies in
//! [`crate::api`]). Only the service token is accepted.

use std::future::Future;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::api::{
    AUTHORIZATION_HEADER, ApiError, EmitRequest, EmitResponse, ExecuteRequest, ExecuteResponse,
    IsMemberRequest, IsMemberResponse, MayJoinRequest, MembersOfRequest, MembersOfResponse,
    QUEUE_GROUP, RoomsOfRequest, RoomsOfResponse, SERVICE_NAME, SUBJECT_PREFIX,
};
use crate::auth::Authenticator;
use crate::domain::Actor;
use crate::service::MembershipService;

/// Requests handled at once; more wait in the client's buffer.
const MAX_IN_FLIGHT: usize = 256;

/// The endpoints, by their last subject token.
const ENDPOINTS: &[&str] = &[
    "rooms_of",
    "may_join",
    "members_of",
    "is_member",
    "execute",
    "emit",
];

/// A failure to start the NATS API.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the NATS API: {0}")]
pub struct NatsApiError(String);

/// A running NATS API: registered with the server, serving until
/// [`serve`](Self::serve)'s shutdown future completes.
pub struct NatsApi {
    service: async_nats::service::Service,
    endpoints: SelectAll<futures::stream::BoxStream<'static, (&'static str, Request)>>,
    membership: Arc<MembershipService>,
    auth: Arc<Authenticator>,
}

impl NatsApi {
    /// Registers the service and its endpoints on `client` (queue group
    /// [`QUEUE_GROUP`], so several instances share the load).
    pub async fn start(
        client: async_nats::Client,
        membership: Arc<MembershipService>,
        auth: Arc<Authenticator>,
    ) -> Result<Self, NatsApiError> {
        let service = client
            .service_builder()
            .description("Confab membership: commands and queries")
            .queue_group(QUEUE_GROUP)
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| NatsApiError(e.to_string()))?;
        let group = service.group(SUBJECT_PREFIX);
        let mut endpoints = SelectAll::new();
        for name in ENDPOINTS {
            let endpoint = group
                .endpoint(*name)
                .await
                .map_err(|e| NatsApiError(format!("endpoint {name}: {e}")))?;
            endpoints.push(endpoint.map(move |r| (*name, r)).boxed());
        }
        Ok(Self {
            service,
            endpoints,
            membership,
            auth,
        })
    }

    /// Serves requests until `shutdown` completes, then stops the service
    /// (requests being handled finish).
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) {
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let next = tokio::select! {
                () = &mut shutdown => break,
                next = self.endpoints.next() => next,
            };
            let Some((endpoint, request)) = next else {
                tracing::warn!("NATS API endpoints closed");
                break;
            };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            let membership = Arc::clone(&self.membership);
            let auth = Arc::clone(&self.auth);
            tokio::spawn(async move {
                handle(endpoint, request, &membership, &auth).await;
                drop(permit);
            });
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "cannot stop the NATS service cleanly");
        }
        // Let requests in flight answer.
        let _ = limit.acquire_many(MAX_IN_FLIGHT as u32).await;
    }
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

async fn handle(
    endpoint: &'static str,
    request: Request,
    membership: &MembershipService,
    auth: &Authenticator,
) {
    let headers = request.message.headers.as_ref();
    let span = tracing::info_span!(
        "membership.nats",
        otel.kind = "server",
        endpoint,
        error.code = tracing::field::Empty,
    );
    let trace: Vec<(String, String)> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| header(headers, k).map(|v| ((*k).to_owned(), v.to_owned())))
        .collect();
    confab_telemetry::set_parent_from(&span, &trace);
    async {
        let result = match auth.require_service(header(headers, AUTHORIZATION_HEADER)) {
            Ok(()) => answer(endpoint, &request.message.payload, membership).await,
            Err(e) => Err(e),
        };
        let (body, headers) = match result {
            Ok(body) => (body, HeaderMap::new()),
            Err(e) => {
                tracing::Span::current().record("error.code", e.0.code.as_str());
                let mut h = HeaderMap::new();
                h.insert("Nats-Service-Error", header_safe(&e.0.message).as_str());
                h.insert("Nats-Service-Error-Code", e.status().to_string().as_str());
                (to_json(&e.body()), h)
            }
        };
        if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
            tracing::warn!(error = %e, "cannot send a NATS API reply");
        }
    }
    .instrument(span)
    .await
}

/// A header value: no control characters, at most 200 characters.
fn header_safe(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(payload).map_err(|e| ApiError::invalid("body", e.to_string()))
}

async fn answer(
    endpoint: &str,
    payload: &[u8],
    membership: &MembershipService,
) -> Result<Bytes, ApiError> {
    Ok(match endpoint {
        "rooms_of" => {
            let r: RoomsOfRequest = parse(payload)?;
            let rooms = membership.rooms_of(&r.user).await?;
            to_json(&RoomsOfResponse {
                user: r.user,
                rooms,
            })
        }
        "may_join" => {
            let r: MayJoinRequest = parse(payload)?;
            to_json(&membership.may_join(&r.user, &r.room).await?)
        }
        "members_of" => {
            let r: MembersOfRequest = parse(payload)?;
            let members = membership.members_of(&r.room).await?;
            to_json(&MembersOfResponse {
                room: r.room,
                members,
            })
        }
        "is_member" => {
            let r: IsMemberRequest = parse(payload)?;
            let member = membership.is_member(&r.user, &r.room).await?;
            to_json(&IsMemberResponse {
                user: r.user,
                room: r.room,
                member,
            })
        }
        "execute" => {
            let r: ExecuteRequest = parse(payload)?;
            let actor = Actor::Service {
                on_behalf_of: r.actor,
            };
            let outcome = membership.execute(r.command, &actor).await?;
            to_json(&ExecuteResponse::from(outcome))
        }
        "emit" => {
            let r: EmitRequest = parse(payload)?;
            let published = membership
                .emit(&r.room, &r.event, &r.data, r.id.as_deref())
                .await?;
            to_json(&EmitResponse {
                seq: published.seq,
                duplicate: published.duplicate,
            })
        }
        other => return Err(ApiError::new("not_found", format!("no endpoint {other}"))),
    })
}
