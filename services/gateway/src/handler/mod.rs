//! Confab's Socket.IO application on the engine: the CONNECT handshake
//! (`connect.rs`), and every client event routed to its feature
//! (`crate::features`), whose reply becomes the ack.
//!
//! The handler owns the per-socket [`Session`] and hands each feature only
//! the pieces it needs (the user, the socket, its typing state, ...): the
//! features never import the handler.

mod connect;
mod identity;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confab_auth::session::SessionAuth;
use confab_auth::{Claims, Verifier};
use confab_events::socket::{
    AckError, ClientToServer, RefreshAck, RefreshRequest, RoomRequest, SessionExpired, names,
};
use confab_events::{RoomId, UserId};
use serde_json::Value;
use tokio::time::Instant;

use crate::admin::{self, Admin, Operate};
use crate::config::{CorsConfig, LimitSettings, MessageSettings};
use crate::engine::{
    Accepted, ConnectRefusal, ConnectRequest, DisconnectReason, EngineHooks, EventOutcome, Expiry,
    Handler, IncomingEvent, SocketRef,
};
use crate::features::history::{self, MessageCalls};
use crate::features::membership::{self, AccessCache, CacheLimits, Membership};
use crate::features::messages::{Bucket, Messenger};
use crate::features::presence::{self, LocalPresence};
use crate::features::recovery::{Recovery, Tracked};
use crate::features::typing::{self, TypingState};
use crate::hub::Hub;
use crate::limits::{Counter, Held};
use crate::metrics::Metrics;
use crate::reply::{Code, Reply};

/// What the gateway keeps per socket.
#[derive(Debug)]
pub(crate) struct Session {
    /// The authenticated user.
    user: UserId,
    /// Token or session expiry, Unix seconds.
    expires_at: u64,
    /// How the socket authenticated (a session is asked again at expiry).
    credentials: identity::Credentials,
    /// This connection's send rate limit.
    send_bucket: Bucket,
    /// This connection's `presence:query` rate limit.
    query_bucket: Bucket,
    /// This connection's budget for every client event but `message:send`.
    budget: Bucket,
    /// The socket's place in its user's connection limit, given back when
    /// the session is dropped.
    _place: Held<UserId>,
    /// Rooms this socket is typing in.
    typing: TypingState,
    /// The recoverable session record (recovery on).
    recovery: Option<Tracked>,
    /// Set between CONNECT and the CONNECT reply: what to send right after
    /// the reply.
    after_connect: Option<connect::AfterConnect>,
}

/// What the engine keeps per socket: a chat client's session, or an
/// Admin UI operator's (namespace `/admin`).
#[derive(Debug)]
pub(crate) enum AnySession {
    /// A chat client (namespace `/`).
    Chat(Box<Session>),
    /// An operator; holds the session id to give the UI once connected.
    Operator(Option<String>),
}

/// Everything the handler works with, given once when it is built.
pub(crate) struct HandlerDeps {
    /// Checks handshake and refresh tokens.
    pub(crate) verifier: Verifier,
    /// Session auth (`auth.session`), when on.
    pub(crate) session: Option<SessionAuth>,
    /// Which origins may authenticate with a cookie.
    pub(crate) cors: CorsConfig,
    /// The membership authority.
    pub(crate) membership: Arc<dyn Membership>,
    /// Bounds of the cached view of the authority for writes and joins.
    pub(crate) access: CacheLimits,
    /// Local rooms and the bus.
    pub(crate) hub: Arc<Hub>,
    /// The gateway's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// `message:send` limits.
    pub(crate) messages: MessageSettings,
    /// Local presence, reported to the tracker.
    pub(crate) presence: Arc<LocalPresence>,
    /// Message history, edits and deletes.
    pub(crate) history: Arc<dyn MessageCalls>,
    /// Connection-state recovery, when on.
    pub(crate) recovery: Option<Arc<Recovery>>,
    /// What one client may cost.
    pub(crate) limits: LimitSettings,
    /// The Admin UI's namespace, when on.
    pub(crate) admin: Option<Arc<Admin>>,
}

/// The gateway's [`Handler`].
pub(crate) struct ConfabHandler {
    auth: identity::Authenticator,
    membership: Arc<dyn Membership>,
    access: Arc<AccessCache>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    messenger: Messenger,
    presence: Arc<LocalPresence>,
    history: Arc<dyn MessageCalls>,
    recovery: Option<Arc<Recovery>>,
    limits: LimitSettings,
    /// Sockets per user on this gateway.
    per_user: Arc<Counter<UserId>>,
    /// The Admin UI's namespace, when on.
    admin: Option<Arc<Admin>>,
}

/// The client events that have a name the gateway serves (anything else
/// counts as `other` in the metrics, so that clients cannot mint labels).
const CLIENT_EVENTS: [&str; 11] = [
    names::ROOM_JOIN,
    names::ROOM_LEAVE,
    names::AUTH_REFRESH,
    names::MESSAGE_SEND,
    names::TYPING_START,
    names::TYPING_STOP,
    names::MESSAGE_EDIT,
    names::MESSAGE_DELETE,
    names::MESSAGE_HISTORY,
    names::PRESENCE_SET,
    names::PRESENCE_QUERY,
];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The monotonic instant at which a Unix-seconds expiry falls.
fn expiry_instant(exp: u64) -> Instant {
    Instant::now() + Duration::from_secs(exp.saturating_sub(unix_now()))
}

impl ConfabHandler {
    /// Builds the handler.
    pub(crate) fn new(deps: HandlerDeps) -> Self {
        let HandlerDeps {
            verifier,
            session,
            cors,
            membership,
            access,
            hub,
            metrics,
            messages,
            presence,
            history,
            recovery,
            limits,
            admin,
        } = deps;
        let access = Arc::new(AccessCache::new(Arc::clone(&membership), access));
        hub.observe(Arc::clone(&access) as _);
        hub.gate(Arc::clone(&access) as _);
        Self {
            per_user: Counter::new(limits.connections_per_user),
            limits,
            auth: identity::Authenticator {
                verifier,
                session,
                cors,
            },
            messenger: Messenger::new(Arc::clone(&hub), Arc::clone(&access), messages),
            membership,
            access,
            hub,
            metrics,
            presence,
            history,
            recovery,
            admin,
        }
    }

    /// Keeps a room the client joined or left itself in its session
    /// record, so that a recovery restores it; acks the change.
    async fn room_changed(
        &self,
        session: &Session,
        changed: Result<RoomId, Reply>,
        joined: bool,
    ) -> Reply {
        let room = match changed {
            Ok(room) => room,
            Err(reply) => return reply,
        };
        if let (Some(recovery), Some(tracked)) = (&self.recovery, &session.recovery) {
            recovery.remember_room(tracked, &room, joined).await;
        }
        membership::room_ok(&room)
    }

    async fn join(&self, socket: &SocketRef, session: &Session, req: &RoomRequest) -> Reply {
        if let Err(reply) = self.room_for_one_more(socket, &session.user, req) {
            return reply;
        }
        let joined = membership::join(&self.access, &self.hub, socket, &session.user, req).await;
        self.room_changed(session, joined, true).await
    }

    /// Whether the socket may join one more room: at most
    /// `limits.max_rooms_per_socket` besides its user room (a room it is
    /// already in is not one more).
    fn room_for_one_more(
        &self,
        socket: &SocketRef,
        user: &UserId,
        req: &RoomRequest,
    ) -> Result<(), Reply> {
        let max = self.limits.max_rooms_per_socket;
        let rooms = self.hub.room_count_of(socket.conn()).saturating_sub(1);
        if rooms < max {
            return Ok(());
        }
        let already = RoomId::parse(req.room())
            .is_ok_and(|room| room != RoomId::user(user) && self.hub.is_in(socket.conn(), &room));
        if already {
            return Ok(());
        }
        Err(Reply::error(
            Code::TooManyRooms,
            format!(
                "this socket is in {rooms} rooms, the most it may be in (limits.max_rooms_per_socket = {max}); leave one first"
            ),
        ))
    }

    /// An event past the socket's budget: refused with `retryAfterMs` if
    /// the client asked for an ack, dropped otherwise; counted either way.
    fn over_budget(&self, event: &IncomingEvent, wait: Duration) -> EventOutcome {
        let name = CLIENT_EVENTS
            .iter()
            .find(|n| **n == event.name)
            .copied()
            .unwrap_or("other");
        self.metrics.rate_limited(name, event.wants_ack);
        if !event.wants_ack {
            return EventOutcome::default();
        }
        let retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Reply::retry_after(
            format!(
                "too many events from this socket (limits.event_rate_per_sec = {}, burst {}); retry in {retry_ms} ms",
                self.limits.event_rate_per_sec, self.limits.event_burst
            ),
            retry_ms,
        )
        .into()
    }

    async fn leave(&self, socket: &SocketRef, session: &Session, req: &RoomRequest) -> Reply {
        let left = membership::leave(&self.hub, socket, &session.user, req);
        self.room_changed(session, left, false).await
    }

    async fn refresh(&self, session: &mut Session, req: &RefreshRequest) -> EventOutcome {
        let claims: Claims = match self.auth.verifier.verify(&req.token).await {
            Ok(c) => c,
            Err(e) => return Reply::refused(AckError::new(e.code(), e.to_string())).into(),
        };
        if claims.user != session.user {
            return Reply::error(
                Code::WrongUser,
                format!(
                    "token is for {}, this socket belongs to {}",
                    claims.user, session.user
                ),
            )
            .into();
        }
        session.expires_at = claims.expires_at;
        session.credentials = identity::Credentials::Jwt;
        let mut outcome: EventOutcome = Reply::ok(&RefreshAck::Ok {
            ok: true,
            expires_at: claims.expires_at,
        })
        .into();
        outcome.new_expiry = Some(expiry_instant(claims.expires_at));
        outcome
    }

    /// Routes one parsed client event (named `name`) to its feature.
    async fn route(
        &self,
        socket: &SocketRef,
        session: &mut Session,
        name: &str,
        event: ClientToServer,
    ) -> EventOutcome {
        let user = &session.user;
        let reply = match event {
            ClientToServer::AuthRefresh(req) => return self.refresh(session, &req).await,
            ClientToServer::RoomJoin(req) => self.join(socket, session, &req).await,
            ClientToServer::RoomLeave(req) => self.leave(socket, session, &req).await,
            ClientToServer::TypingStart(req) | ClientToServer::TypingStop(req) => {
                let start = name == names::TYPING_START;
                typing::on_typing(
                    &self.hub,
                    socket,
                    user,
                    &mut session.typing,
                    req.room(),
                    start,
                )
                .await
            }
            ClientToServer::MessageSend(req) => {
                self.messenger
                    .send(socket, user, &mut session.send_bucket, req)
                    .await
            }
            ClientToServer::PresenceSet(req) => {
                presence::on_set(&self.presence, socket, user, &req)
            }
            ClientToServer::PresenceQuery(req) => {
                presence::on_query(&self.presence, user, &mut session.query_bucket, &req).await
            }
            ClientToServer::MessageEdit(req) => history::edit(&*self.history, user, req).await,
            ClientToServer::MessageDelete(req) => history::delete(&*self.history, user, req).await,
            ClientToServer::MessageHistory(req) => {
                history::history(&*self.history, user, req).await
            }
        };
        reply.into()
    }
}

#[async_trait]
impl Operate for ConfabHandler {
    async fn admin_join(
        &self,
        socket: &SocketRef,
        user: &UserId,
        room: &str,
    ) -> Result<(), String> {
        let req = RoomRequest::Name(room.to_owned());
        if let Err(reply) = self.room_for_one_more(socket, user, &req) {
            return Err(format!("{reply:?}"));
        }
        membership::join(&self.access, &self.hub, socket, user, &req)
            .await
            .map(|_| ())
            .map_err(|reply| format!("{reply:?}"))
    }

    async fn admin_leave(
        &self,
        socket: &SocketRef,
        user: &UserId,
        room: &str,
    ) -> Result<(), String> {
        let req = RoomRequest::Name(room.to_owned());
        membership::leave(&self.hub, socket, user, &req)
            .map(|_| ())
            .map_err(|reply| format!("{reply:?}"))
    }
}

impl ConfabHandler {
    /// An operator's CONNECT on `/admin`.
    async fn connect_operator(
        &self,
        admin: &Admin,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<AnySession>, ConnectRefusal> {
        match admin.authenticate(req.auth).await {
            Ok(session) => Ok(Accepted {
                session: AnySession::Operator(session),
                pid: None,
                expires_at: None,
            }),
            Err(admin::Refused(message)) => {
                self.metrics.handshake_failed("admin_refused");
                Err(ConnectRefusal {
                    message,
                    data: None,
                    retry: false,
                })
            }
        }
    }

    /// An operator's event: an action, answered if it asked for an ack.
    async fn operator_event(&self, admin: &Admin, event: IncomingEvent) -> EventOutcome {
        let result = admin.on_operator_event(&event.name, &event.args).await;
        match result {
            Ok(()) => Reply::ok(&serde_json::json!({ "ok": true })).into(),
            Err(message) => Reply::error(Code::Forbidden, message).into(),
        }
    }
}

#[async_trait]
impl Handler for ConfabHandler {
    type Session = AnySession;

    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || (nsp == admin::NSP && self.admin.is_some())
    }

    async fn on_connect(
        &self,
        socket: &SocketRef,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<AnySession>, ConnectRefusal> {
        if let (admin::NSP, Some(admin)) = (socket.nsp(), &self.admin) {
            return self.connect_operator(admin, req).await;
        }
        let remote = req.remote.map(|r| r.ip());
        let accepted = self.connect(socket, req).await?;
        if let Some(admin) = &self.admin {
            admin.socket_connected(socket, &accepted.session.user, remote);
        }
        Ok(Accepted {
            session: AnySession::Chat(Box::new(accepted.session)),
            pid: accepted.pid,
            expires_at: accepted.expires_at,
        })
    }

    async fn on_connected(&self, socket: &SocketRef, session: &mut AnySession) {
        match session {
            AnySession::Chat(session) => self.after_connected(socket, session).await,
            AnySession::Operator(id) => {
                if let Some(admin) = &self.admin {
                    admin.operator_connected(socket, id.take());
                }
            }
        }
    }

    async fn on_event(
        &self,
        socket: &SocketRef,
        session: &mut AnySession,
        event: IncomingEvent,
    ) -> EventOutcome {
        let session = match session {
            AnySession::Chat(session) => session,
            AnySession::Operator(_) => {
                return match &self.admin {
                    Some(admin) => self.operator_event(admin, event).await,
                    None => EventOutcome::default(),
                };
            }
        };
        // One budget for every event but sends, which have their own
        // limits (so typing never costs a message its place).
        if event.name != names::MESSAGE_SEND
            && let Err(wait) = session.budget.take(std::time::Instant::now())
        {
            return self.over_budget(&event, wait);
        }
        match ClientToServer::parse(&event.name, &event.args) {
            Ok(parsed) => self.route(socket, session, &event.name, parsed).await,
            Err(error) => Reply::refused(error).into(),
        }
    }

    async fn on_expired(&self, _socket: &SocketRef, session: &mut AnySession) -> Expiry {
        let AnySession::Chat(session) = session else {
            return Expiry::Disconnect(None);
        };
        let (code, message) = match &session.credentials {
            identity::Credentials::Jwt => (
                "token_expired",
                format!(
                    "the token of {} expired at {} (Unix seconds); reconnect with a fresh token, or send auth:refresh before expiry",
                    session.user, session.expires_at
                ),
            ),
            credentials => match self.auth.recheck(&session.user, credentials).await {
                identity::Recheck::Valid(until) => return Expiry::Extend(until),
                identity::Recheck::Over(code, message) => (code, message),
            },
        };
        self.metrics.closed_for(code);
        let notice = SessionExpired {
            code: code.into(),
            message,
        };
        Expiry::Disconnect(Some((
            names::SESSION_EXPIRED.into(),
            vec![serde_json::to_value(notice).unwrap_or(Value::Null)],
        )))
    }

    async fn on_disconnect(
        &self,
        socket: &SocketRef,
        session: AnySession,
        reason: DisconnectReason,
    ) {
        let mut session = match session {
            AnySession::Chat(session) => session,
            AnySession::Operator(_) => {
                if let Some(admin) = &self.admin {
                    admin.operator_disconnected(socket);
                }
                return;
            }
        };
        if let Some(admin) = &self.admin {
            admin.socket_disconnected(socket.conn());
        }
        if let (Some(recovery), Some(tracked)) = (&self.recovery, session.recovery.take()) {
            recovery.ended(tracked, &reason).await;
        }
        typing::stop_all(&self.hub, &session.user, &mut session.typing).await;
        self.hub.unregister(socket.conn());
        self.presence.disconnected(&session.user, socket.conn());
        self.messenger.forget_if_gone(&session.user);
        tracing::debug!(user = %session.user, ?reason, "socket disconnected");
    }
}
