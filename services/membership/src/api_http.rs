//! The HTTP JSON API for app backends (axum).
//!
//! Every `/v1` route needs `Authorization: Bearer <token>`: the service
//! token (the body may then name the user acted for, `"actor": "<user id>"`)
//! or a user's JWT (see [`crate::auth`]).
//!
//! | Method and path | Body | Command or answer |
//! |---|---|---|
//! | `POST /v1/workspaces` | `{"id","name","owner"?}` | `create_workspace` (owner defaults to the actor) → 201 |
//! | `POST /v1/workspaces/{id}/members` | `{"user","role"?}` | `add_workspace_member` (role `member` by default) |
//! | `DELETE /v1/workspaces/{id}/members/{user}` | `{"actor"?}` or `?actor=` | `remove_workspace_member` |
//! | `POST /v1/channels` | `{"id","workspace","name","visibility"?}` | `create_channel` (public by default) → 201 |
//! | `POST /v1/channels/{id}/join` | `{}` | `join_channel` |
//! | `POST /v1/channels/{id}/leave` | `{}` | `leave_channel` |
//! | `POST /v1/channels/{id}/invite` | `{"user"}` | `invite` |
//! | `POST /v1/channels/{id}/kick` | `{"user"}` | `kick` |
//! | `POST /v1/channels/{id}/archive` | `{}` | `archive_channel` |
//! | `POST /v1/dms` | `{"id","workspace","participants"}` | `open_dm` → 201 |
//! | `POST /v1/dms/{id}/participants` | `{"user"}` | `add_dm_participant` |
//! | `POST /v1/commands` | [`ExecuteRequest`] | any command |
//! | `GET /v1/users/{id}/rooms` | | [`RoomsOfResponse`] (the user themselves, or trusted) |
//! | `GET /v1/rooms/{room}/members` | | [`MembersOfResponse`] (members of the room, or trusted) |
//! | `GET /v1/rooms/{room}/members/{user}` | | [`IsMemberResponse`] (the user, members, or trusted) |
//! | `POST /v1/emit` | [`EmitRequest`](confab_contracts::membership::EmitRequest) | [`EmitResponse`] (service token only) |
//! | `POST /v1/rpc/{subject}` | the endpoint's request | its response: the NATS endpoint table over HTTP, for gateways on a deployment without NATS (`bus.kind = "redis"`; 404 otherwise; service token only) |
//! | `GET /healthz`, `GET /readyz` | | liveness, readiness (red while a projection fails or stopped, named under `projections`, while a log reader is more than 1 s behind its log, named under `behind` — `lag` gives each one's `events` and `seconds` —, or the membership projection is more than `ready_max_projection_lag` events behind) |
//! | `GET /metrics` | | Prometheus text: `confab_membership_projection_up{projection}`, `confab_membership_projection_lag_events{projection}`, `confab_membership_projection_lag_seconds{projection}`, `confab_membership_history_trimmed_total`, `confab_membership_commands_total{command,outcome}`, `confab_membership_presence_users{status}`, `confab_membership_presence_gateways`, `confab_membership_bus_connected{bus}`, `confab_membership_bus_reconnects_total{bus}`, `confab_membership_emitter_messages_total{kind,outcome}`, `confab_membership_emitter_lease_held` |
//!
//! Command bodies may carry `"actor"` (service token only). Commands answer
//! [`ExecuteResponse`]. Errors answer [`ErrorBody`](confab_contracts::ErrorBody) with the status of
//! [`status_of`](confab_contracts::status_of); invalid input names the field.
//! Bodies are limited to [`HttpSettings::max_body_bytes`].
//!
//! # Adding an endpoint
//!
//! One line in `routes` plus its function. A command endpoint is a
//! `Build`: it reads its [`Command`] out of the `Call` (the caller
//! already authenticated) and `command` runs and answers it; any other
//! endpoint is an axum handler taking a `Call`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use confab_events::membership::{Role, Visibility};
use confab_events::{ChannelId, DmId, IdError, RoomId, RoomKind, UserId, WorkspaceId};
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::auth::{Authenticator, Caller};
use crate::domain::Actor;
use crate::health::Scrape;
use crate::history::{History, HistoryError, HistoryRequest};
use crate::service::MembershipService;
use confab_contracts::membership::{
    Command, EmitResponse, ExecuteRequest, ExecuteResponse, IsMemberResponse, MembersOfResponse,
    RoomsOfResponse,
};
use confab_contracts::{ApiError, Routes};

/// HTTP limits.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// `/readyz` is red while the projection lags the log by more events
    /// than this; 0: never for lag.
    pub ready_max_projection_lag: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            ready_max_projection_lag: 10_000,
        }
    }
}

#[derive(Clone)]
struct HttpState {
    service: Arc<MembershipService>,
    auth: Arc<Authenticator>,
    history: History,
    /// The service's endpoint table, answered on `/v1/rpc/{subject}` when
    /// set (deployments without NATS).
    rpc: Option<Routes>,
    ready_max_projection_lag: u64,
}

/// The API's router (with its state), ready to serve or to nest in another
/// router.
pub fn router(
    service: Arc<MembershipService>,
    auth: Arc<Authenticator>,
    history: History,
    rpc: Option<Routes>,
    settings: &HttpSettings,
) -> Router {
    let state = HttpState {
        service,
        auth,
        history,
        rpc,
        ready_max_projection_lag: settings.ready_max_projection_lag,
    };
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, endpoint)| {
            router.route(path, endpoint)
        })
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(state)
}

/// Every endpoint: its path and its method router.
#[rustfmt::skip]
fn routes() -> Vec<(&'static str, MethodRouter<HttpState>)> {
    use StatusCode as S;
    vec![
        ("/v1/workspaces",                     post(command(S::CREATED, create_workspace))),
        ("/v1/workspaces/{id}/members",        post(command(S::OK, add_workspace_member))),
        ("/v1/workspaces/{id}/members/{user}", delete(command(S::OK, remove_workspace_member))),
        ("/v1/channels",                       post(command(S::CREATED, create_channel))),
        ("/v1/channels/{id}/join",             post(command(S::OK, join_channel))),
        ("/v1/channels/{id}/leave",            post(command(S::OK, leave_channel))),
        ("/v1/channels/{id}/invite",           post(command(S::OK, invite))),
        ("/v1/channels/{id}/kick",             post(command(S::OK, kick))),
        ("/v1/channels/{id}/archive",          post(command(S::OK, archive_channel))),
        ("/v1/channels/{id}/{action}",         post(unknown_channel_action)),
        ("/v1/dms",                            post(command(S::CREATED, open_dm))),
        ("/v1/dms/{id}/participants",          post(command(S::OK, add_dm_participant))),
        ("/v1/commands",                       post(command(S::OK, execute))),
        ("/v1/users/{id}/rooms",               get(rooms_of)),
        ("/v1/rooms/{room}/members",           get(members_of)),
        ("/v1/rooms/{room}/members/{user}",    get(is_member)),
        ("/v1/rooms/{room}/messages",          get(message_history)),
        ("/v1/emit",                           post(emit)),
        ("/v1/rpc/{subject}",                  post(rpc)),
        ("/healthz",                           get(healthz)),
        ("/readyz",                            get(readyz)),
        ("/metrics",                           get(metrics)),
    ]
}

/// An [`ApiError`] as an HTTP response.
struct HttpError(ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<crate::service::ServiceError> for HttpError {
    fn from(e: crate::service::ServiceError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = %self.0.0.code, message = %self.0.0.message, "request failed");
        }
        (status, axum::Json(self.0.body())).into_response()
    }
}

type HttpResult = Result<Response, HttpError>;

/// One server span per API request (`{method} {route}`, the HTTP semantic
/// conventions' attributes), child of the caller's W3C trace context.
/// Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) get none.
async fn trace_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if matches!(route.as_deref(), Some("/healthz" | "/readyz" | "/metrics")) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "membership.http",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let trace: Vec<(String, String)> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| {
            req.headers()
                .get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect();
    confab_telemetry::set_parent_from(&span, &trace);
    async move {
        let response = next.run(req).await;
        let span = tracing::Span::current();
        span.record("http.response.status_code", response.status().as_u16());
        if response.status().is_server_error() {
            // Server spans: only 5xx is an error (HTTP conventions).
            span.record("otel.status_code", "ERROR");
        }
        response
    }
    .instrument(span)
    .await
}

/// One API request as the endpoints read it: the authenticated caller, the
/// path parameters and query, and the body, parsed on demand so that
/// errors come in the same order everywhere: authorization, path, body,
/// fields.
struct Call {
    caller: Caller,
    path: HashMap<String, String>,
    query: HashMap<String, String>,
    body: Result<Bytes, BytesRejection>,
}

impl FromRequest<HttpState> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        let caller = authenticate(state, authorization.as_ref())
            .await
            .map_err(|e| HttpError(e).into_response())?;
        Ok(Self {
            caller,
            path,
            query,
            body,
        })
    }
}

impl Call {
    /// The path parameter `name`, as an id; errors name `field`.
    fn path<T: FromStr<Err = IdError>>(&self, name: &str, field: &str) -> Result<T, ApiError> {
        path_id(field, self.path.get(name).map_or("", String::as_str))
    }

    /// The JSON body (read once).
    fn take_body(&mut self) -> Result<Body, ApiError> {
        Body::parse(std::mem::replace(&mut self.body, Ok(Bytes::new())))
    }

    /// The JSON body and the actor, from its `"actor"` field and the caller.
    fn actor_and_body(&mut self) -> Result<(Actor, Body), ApiError> {
        let mut body = self.take_body()?;
        let actor = self.caller.actor(body.opt("actor")?)?;
        Ok((actor, body))
    }
}

async fn authenticate(
    state: &HttpState,
    authorization: Option<&HeaderValue>,
) -> Result<Caller, ApiError> {
    let value = match authorization {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?,
        ),
    };
    state.auth.authenticate(value).await
}

/// A JSON object body, read field by field so errors name the field.
struct Body(Map<String, Value>);

impl Body {
    fn parse(body: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        let bytes = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new("payload_too_large", "the request body is too large")
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
            Err(e) => Err(ApiError::invalid("body", format!("not valid JSON: {e}"))),
        }
    }

    fn opt<T: DeserializeOwned>(&mut self, field: &str) -> Result<Option<T>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ApiError::invalid(field, e.to_string())),
        }
    }

    fn req<T: DeserializeOwned>(&mut self, field: &str) -> Result<T, ApiError> {
        self.opt(field)?
            .ok_or_else(|| ApiError::invalid(field, "is required"))
    }

    /// Refuses fields nobody read.
    fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            Some(k) => Err(ApiError::invalid(k, "unknown field")),
            None => Ok(()),
        }
    }
}

fn path_id<T: FromStr<Err = IdError>>(field: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|e: IdError| ApiError::invalid(field, e.to_string()))
}

/// A command endpoint: reads the command and its actor from the call.
type Build = fn(Call) -> Built;

/// What a [`Build`] answers: the command and its actor, or why not.
type Built = Result<(Command, Actor), ApiError>;

/// The handler of a command endpoint: `build` reads the command, the
/// service runs it, the answer is an [`ExecuteResponse`] with `status`.
fn command(
    status: StatusCode,
    build: Build,
) -> impl Fn(State<HttpState>, Call) -> BoxFuture<'static, HttpResult> + Clone + Send + Sync + 'static
{
    move |State(state): State<HttpState>, call: Call| {
        Box::pin(async move {
            let (cmd, actor) = build(call)?;
            let outcome = state.service.execute(cmd, &actor).await?;
            Ok((status, axum::Json(ExecuteResponse::from(outcome))).into_response())
        })
    }
}

fn create_workspace(mut call: Call) -> Built {
    let (actor, mut b) = call.actor_and_body()?;
    let id: WorkspaceId = b.req("id")?;
    let name: String = b.req("name")?;
    let owner: Option<UserId> = b.opt("owner")?;
    b.finish()?;
    let owner = owner
        .or_else(|| actor.user().cloned())
        .ok_or_else(|| ApiError::invalid("owner", "is required (or set \"actor\")"))?;
    Ok((Command::CreateWorkspace { id, name, owner }, actor))
}

fn add_workspace_member(mut call: Call) -> Built {
    let workspace: WorkspaceId = call.path("id", "workspace")?;
    let (actor, mut b) = call.actor_and_body()?;
    let user: UserId = b.req("user")?;
    let role: Role = b.opt("role")?.unwrap_or(Role::Member);
    b.finish()?;
    let cmd = Command::AddWorkspaceMember {
        workspace,
        user,
        role,
    };
    Ok((cmd, actor))
}

/// The actor may also come from `?actor=` (a DELETE often has no body).
fn remove_workspace_member(mut call: Call) -> Built {
    let workspace: WorkspaceId = call.path("id", "workspace")?;
    let user: UserId = call.path("user", "user")?;
    let mut b = call.take_body()?;
    let mut requested: Option<UserId> = b.opt("actor")?;
    b.finish()?;
    if requested.is_none()
        && let Some(a) = call.query.get("actor")
    {
        requested = Some(path_id("actor", a)?);
    }
    let actor = call.caller.actor(requested)?;
    Ok((Command::RemoveWorkspaceMember { workspace, user }, actor))
}

fn create_channel(mut call: Call) -> Built {
    let (actor, mut b) = call.actor_and_body()?;
    let channel: ChannelId = b.req("id")?;
    let workspace: WorkspaceId = b.req("workspace")?;
    let name: String = b.req("name")?;
    let visibility: Visibility = b.opt("visibility")?.unwrap_or(Visibility::Public);
    b.finish()?;
    let cmd = Command::CreateChannel {
        channel,
        workspace,
        name,
        visibility,
    };
    Ok((cmd, actor))
}

/// A `/v1/channels/{channel}/...` command: `make` builds it from the
/// channel and the body's other fields.
fn channel_command(
    mut call: Call,
    make: impl FnOnce(ChannelId, &mut Body) -> Result<Command, ApiError>,
) -> Built {
    let channel: ChannelId = call.path("id", "channel")?;
    let (actor, mut b) = call.actor_and_body()?;
    let cmd = make(channel, &mut b)?;
    b.finish()?;
    Ok((cmd, actor))
}

fn join_channel(call: Call) -> Built {
    channel_command(call, |channel, _| Ok(Command::JoinChannel { channel }))
}

fn leave_channel(call: Call) -> Built {
    channel_command(call, |channel, _| Ok(Command::LeaveChannel { channel }))
}

fn archive_channel(call: Call) -> Built {
    channel_command(call, |channel, _| Ok(Command::ArchiveChannel { channel }))
}

fn invite(call: Call) -> Built {
    channel_command(call, |channel, b| {
        let user = b.req("user")?;
        Ok(Command::Invite { channel, user })
    })
}

fn kick(call: Call) -> Built {
    channel_command(call, |channel, b| {
        let user = b.req("user")?;
        Ok(Command::Kick { channel, user })
    })
}

fn open_dm(mut call: Call) -> Built {
    let (actor, mut b) = call.actor_and_body()?;
    let dm: DmId = b.req("id")?;
    let workspace: WorkspaceId = b.req("workspace")?;
    let participants: Vec<UserId> = b.req("participants")?;
    b.finish()?;
    let cmd = Command::OpenDm {
        dm,
        workspace,
        participants,
    };
    Ok((cmd, actor))
}

fn add_dm_participant(mut call: Call) -> Built {
    let dm: DmId = call.path("id", "dm")?;
    let (actor, mut b) = call.actor_and_body()?;
    let user: UserId = b.req("user")?;
    b.finish()?;
    Ok((Command::AddDmParticipant { dm, user }, actor))
}

fn execute(mut call: Call) -> Built {
    let mut b = call.take_body()?;
    let request = ExecuteRequest {
        actor: b.opt("actor")?,
        command: b.req("command")?,
    };
    b.finish()?;
    let actor = call.caller.actor(request.actor)?;
    Ok((request.command, actor))
}

async fn rooms_of(State(state): State<HttpState>, call: Call) -> HttpResult {
    let user: UserId = call.path("id", "user")?;
    if !call.caller.is_trusted() && call.caller.user() != Some(&user) {
        return Err(ApiError::forbidden("you may only list your own rooms").into());
    }
    let rooms = state.service.rooms_of(&user).await?;
    Ok(axum::Json(RoomsOfResponse { user, rooms }).into_response())
}

/// Whether a JWT caller may look at a room's membership: it is their own
/// `user:` room or they are a member.
async fn may_look(state: &HttpState, caller: &Caller, room: &RoomId) -> Result<(), ApiError> {
    if caller.is_trusted() {
        return Ok(());
    }
    let Some(me) = caller.user() else {
        return Err(ApiError::forbidden("not allowed"));
    };
    if room.kind() == RoomKind::User && room.id() == me.as_str() {
        return Ok(());
    }
    if state.service.is_member(me, room).await? {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "only members of {room} may see its members"
        )))
    }
}

async fn members_of(State(state): State<HttpState>, call: Call) -> HttpResult {
    let room: RoomId = call.path("room", "room")?;
    may_look(&state, &call.caller, &room).await?;
    let members = state.service.members_of(&room).await?;
    Ok(axum::Json(MembersOfResponse { room, members }).into_response())
}

async fn is_member(State(state): State<HttpState>, call: Call) -> HttpResult {
    let room: RoomId = call.path("room", "room")?;
    let user: UserId = call.path("user", "user")?;
    if call.caller.user() != Some(&user) {
        may_look(&state, &call.caller, &room).await?;
    }
    let member = state.service.is_member(&user, &room).await?;
    Ok(axum::Json(IsMemberResponse { user, room, member }).into_response())
}

/// `GET /v1/rooms/{room}/messages?before=&limit=`: a page of history,
/// newest first, for a member. A user JWT reads as its user; the service
/// token names the reading user with `?actor=`.
async fn message_history(State(state): State<HttpState>, call: Call) -> HttpResult {
    let room: RoomId = call.path("room", "room")?;
    let query = &call.query;
    let user: UserId = match (call.caller.user(), query.get("actor")) {
        (Some(me), _) => me.clone(),
        (None, Some(actor)) => path_id("actor", actor)?,
        (None, None) => {
            return Err(ApiError::invalid(
                "actor",
                "with the service token, name the reading user: ?actor=<user id>",
            )
            .into());
        }
    };
    let limit = match query.get("limit") {
        None => None,
        Some(l) => Some(
            l.parse::<u64>()
                .map_err(|_| ApiError::invalid("limit", "must be a whole number"))?,
        ),
    };
    let req = HistoryRequest {
        user: user.to_string(),
        room: room.to_string(),
        before: query.get("before").cloned(),
        limit,
    };
    let page = state.history.history(&req).await.map_err(|e| match e {
        HistoryError::Invalid(m) | HistoryError::InvalidBody(m) => ApiError::invalid("query", m),
        other => ApiError::new(other.code(), other.to_string()),
    })?;
    Ok(axum::Json(page).into_response())
}

async fn emit(State(state): State<HttpState>, mut call: Call) -> HttpResult {
    if call.caller != Caller::Service {
        return Err(ApiError::forbidden("emit needs the service token").into());
    }
    let mut b = call.take_body()?;
    let room: RoomId = b.req("room")?;
    let event: String = b.req("event")?;
    let data: Value = b.opt("data")?.unwrap_or(Value::Null);
    let id: Option<String> = b.opt("id")?;
    b.finish()?;
    let published = state
        .service
        .emit(&room, &event, &data, id.as_deref())
        .await?;
    Ok(axum::Json(EmitResponse {
        seq: published.seq,
        duplicate: published.duplicate,
    })
    .into_response())
}

/// The metrics (the lags are measured in the background, `health.rs`).
async fn metrics(State(state): State<HttpState>) -> Response {
    let service = &state.service;
    let bus = service.bus().status();
    let scrape = Scrape {
        bus: Some((bus.kind, bus.connected)),
        bus_reconnects: Some(bus.reconnects),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.health().metrics_with(&scrape),
    )
        .into_response()
}

/// `POST /v1/rpc/{subject}`: one call of the endpoint table (the same
/// handlers as the NATS API), service token only; the answer is the
/// endpoint's response, or its refusal with the code's status.
async fn rpc(
    State(state): State<HttpState>,
    Path(subject): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(routes) = &state.rpc else {
        return not_found().await;
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = state.auth.require_service(authorization) {
        return HttpError(e).into_response();
    }
    match routes.answer(&subject, &body).await {
        Ok(answer) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            answer,
        )
            .into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let bus = state.service.bus().status();
    let checkpoint = state.service.read_model().checkpoint().await;
    let last = state.service.store().last_seq().await;
    let health = state.service.health();
    let lag = match (&checkpoint, &last) {
        (Ok(checkpoint), Ok(last)) => Some(projection_lag(*checkpoint, *last)),
        _ => None,
    };
    let caught_up = lag.is_some_and(|lag| lag_ok(lag, state.ready_max_projection_lag));
    let behind = health.behind();
    let ready = bus.connected && caught_up && health.all_running() && behind.is_empty();
    let body = json!({
        "ready": ready,
        "projection_lag": lag,
        "ready_max_projection_lag": state.ready_max_projection_lag,
        "bus": bus,
        "projections": health.states(),
        "lag": health.lags(),
        "behind": behind,
        "projection_checkpoint": checkpoint.as_ref().ok(),
        "projection_error": checkpoint.as_ref().err().map(ToString::to_string),
        "log_last_seq": last.as_ref().ok(),
        "log_error": last.as_ref().err().map(ToString::to_string),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Events of the log the projection has not applied yet.
fn projection_lag(checkpoint: u64, last: u64) -> u64 {
    last.saturating_sub(checkpoint)
}

/// Whether a lag keeps the service ready (`max` 0: any lag does).
fn lag_ok(lag: u64, max: u64) -> bool {
    max == 0 || lag <= max
}

/// `POST /v1/channels/{id}/{action}` for any other action: 404, before
/// authentication (the path still has to be UTF-8).
async fn unknown_channel_action(_: Path<(String, String)>) -> Response {
    not_found().await
}

async fn not_found() -> Response {
    HttpError(ApiError::new("not_found", "no such endpoint (see /v1/...)")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_projection_lag() {
        assert_eq!(projection_lag(90, 100), 10);
        // A checkpoint ahead of the log (another log) is no lag here: the
        // service refuses to start on it.
        assert_eq!(projection_lag(120, 100), 0);
        assert!(lag_ok(10, 10));
        assert!(!lag_ok(11, 10));
        assert!(lag_ok(1_000_000, 0), "0: lag never makes it red");
    }
}
