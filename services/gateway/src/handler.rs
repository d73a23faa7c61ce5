//! Confab's Socket.IO application: JWT handshake, rooms, and the client
//! events of the gateway (`room:join`, `room:leave`, `auth:refresh`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confab_auth::{AuthError, Claims, TokenSource, Verifier};
use confab_events::socket::{
    AckError, ClientToServer, RefreshAck, RefreshRequest, RoomAck, RoomRequest, SessionExpired,
    names,
};
use confab_events::{RoomId, RoomKind, UserId};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{CorsConfig, MessageSettings};
use crate::engine::{
    Accepted, Ack, ConnectRefusal, ConnectRequest, DisconnectReason, EngineHooks, EventOutcome,
    Handler, IncomingEvent, SocketRef,
};
use crate::hub::Hub;
use crate::membership::{Access, Membership};
use crate::messages::Messenger;
use crate::metrics::Metrics;
use crate::presence::{LocalPresence, NoPresence};
use crate::ratelimit::Bucket;
use crate::recovery::{
    Failure, Found, Recovery, Replay, SessionRecord, Tracked, new_pid, parse_resume,
};
use crate::typing::{self, TypingState};

/// What the gateway keeps per socket.
#[derive(Debug)]
pub struct Session {
    /// The authenticated user.
    pub user: UserId,
    /// Token expiry, Unix seconds.
    pub expires_at: u64,
    /// This connection's send rate limit.
    pub send_bucket: Bucket,
    /// Rooms this socket is typing in.
    pub typing: TypingState,
    /// The recoverable session record (recovery on).
    pub recovery: Option<Tracked>,
    /// Set between CONNECT and the CONNECT reply: what to send right after
    /// the reply.
    after_connect: Option<AfterConnect>,
}

/// What follows the CONNECT reply of a socket.
#[derive(Debug)]
enum AfterConnect {
    /// A recovered session: record it, replay the missed events, then
    /// release the live ones held meanwhile.
    Recovered {
        pid: String,
        record: SessionRecord,
        replay: Replay,
    },
    /// A fresh session: record it; tell the client if it asked to resume
    /// and could not.
    Fresh {
        pid: String,
        record: SessionRecord,
        failure: Option<Failure>,
    },
}

/// The gateway's [`Handler`].
pub struct ConfabHandler {
    verifier: Verifier,
    cors: CorsConfig,
    membership: Arc<dyn Membership>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    messenger: Messenger,
    presence: Arc<LocalPresence>,
    history: Arc<dyn crate::history::MessageCalls>,
    recovery: Option<Arc<Recovery>>,
}

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

fn ack<T: Serialize>(value: &T) -> EventOutcome {
    Ack::one(serde_json::to_value(value).unwrap_or(Value::Null)).into()
}

fn room_error(code: &str, message: impl Into<String>) -> EventOutcome {
    ack(&RoomAck::Err {
        error: AckError::new(code, message),
    })
}

impl ConfabHandler {
    /// Builds the handler.
    pub fn new(
        verifier: Verifier,
        cors: CorsConfig,
        membership: Arc<dyn Membership>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        messages: MessageSettings,
    ) -> Self {
        Self {
            verifier,
            cors,
            membership,
            messenger: Messenger::new(Arc::clone(&hub), messages),
            hub,
            metrics,
            presence: LocalPresence::new(Arc::new(NoPresence), Duration::from_secs(5)),
            history: Arc::new(crate::history::NoHistory),
            recovery: None,
        }
    }

    /// Offers connection-state recovery through `recovery`.
    pub fn with_recovery(mut self, recovery: Arc<Recovery>) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Answers `message:edit` / `message:delete` / `message:history`
    /// through `history` (the default refuses them).
    pub fn with_history(mut self, history: Arc<dyn crate::history::MessageCalls>) -> Self {
        self.history = history;
        self
    }

    /// Reports presence through `presence` (the default reports nowhere).
    pub fn with_presence(mut self, presence: Arc<LocalPresence>) -> Self {
        self.presence = presence;
        self
    }

    fn refuse(&self, code: &str, message: String) -> ConnectRefusal {
        self.metrics.handshake_failed(code);
        ConnectRefusal {
            message,
            data: Some(json!({ "code": code })),
        }
    }

    fn refuse_auth(&self, e: &AuthError) -> ConnectRefusal {
        if e.is_server_error() {
            tracing::warn!(error = %e, "handshake authentication unavailable");
        }
        self.refuse(e.code(), e.public_message())
    }

    fn parse_room(req: &RoomRequest) -> Result<RoomId, EventOutcome> {
        RoomId::parse(req.room())
            .map_err(|e| room_error("invalid_room", format!("invalid room name: {e}")))
    }

    async fn join(
        &self,
        socket: &SocketRef,
        session: &mut Session,
        req: &RoomRequest,
    ) -> EventOutcome {
        let room = match Self::parse_room(req) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        match self.membership.may_join(&session.user, &room).await {
            Ok(Access::Allowed) => {}
            Ok(Access::Refused(reason)) => return room_error("forbidden", reason),
            Err(e) => return room_error("unavailable", e.to_string()),
        }
        if let Err(e) = self.hub.join(&room, socket).await {
            return room_error("unavailable", e.to_string());
        }
        self.remember_room(session, &room, true).await;
        ack(&RoomAck::Ok {
            ok: true,
            room: room.to_string(),
        })
    }

    /// Keeps a room the client joined or left itself in its session
    /// record, so that a recovery restores it.
    async fn remember_room(&self, session: &mut Session, room: &RoomId, joined: bool) {
        let (Some(recovery), Some(tracked)) = (&self.recovery, &session.recovery) else {
            return;
        };
        let name = room.to_string();
        recovery
            .update(tracked, |r| {
                let (add, remove) = if joined {
                    (&mut r.joined, &mut r.left)
                } else {
                    (&mut r.left, &mut r.joined)
                };
                let removed = remove.len();
                remove.retain(|x| *x != name);
                let mut changed = remove.len() != removed;
                if !add.contains(&name) && add.len() < 1024 {
                    add.push(name);
                    changed = true;
                }
                changed
            })
            .await;
    }

    async fn leave(
        &self,
        socket: &SocketRef,
        session: &mut Session,
        req: &RoomRequest,
    ) -> EventOutcome {
        let room = match Self::parse_room(req) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if room == RoomId::user(&session.user) {
            return room_error("forbidden", "a socket always stays in its own user room");
        }
        self.hub.leave(&room, socket.conn());
        self.remember_room(session, &room, false).await;
        ack(&RoomAck::Ok {
            ok: true,
            room: room.to_string(),
        })
    }

    async fn refresh(&self, session: &mut Session, req: &RefreshRequest) -> EventOutcome {
        let refused = |code: &str, message: String| {
            ack(&RefreshAck::Err {
                error: AckError::new(code, message),
            })
        };
        let claims: Claims = match self.verifier.verify(&req.token).await {
            Ok(c) => c,
            Err(e) => return refused(e.code(), e.to_string()),
        };
        if claims.user != session.user {
            return refused(
                "wrong_user",
                format!(
                    "token is for {}, this socket belongs to {}",
                    claims.user, session.user
                ),
            );
        }
        session.expires_at = claims.expires_at;
        let mut outcome = ack(&RefreshAck::Ok {
            ok: true,
            expires_at: claims.expires_at,
        });
        outcome.new_expiry = Some(expiry_instant(claims.expires_at));
        outcome
    }
}

#[async_trait]
impl Handler for ConfabHandler {
    type Session = Session;

    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/"
    }

    async fn on_connect(
        &self,
        socket: &SocketRef,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<Session>, ConnectRefusal> {
        let (claims, source) = self
            .verifier
            .authenticate(req.auth, req.headers)
            .await
            .map_err(|e| self.refuse_auth(&e))?;
        if source == TokenSource::Cookie {
            // Browsers attach cookies to cross-site WebSocket requests too:
            // a cookie only counts from an origin listed by name.
            if let Some(origin) = req.headers.get(http::header::ORIGIN) {
                let origin = origin.to_str().unwrap_or_default();
                if !self.cors.allows_explicitly(origin) {
                    return Err(self.refuse(
                        "origin_not_allowed",
                        format!(
                            "a token from a cookie is only accepted from origins listed in cors.allowed_origins (not via \"*\"); {origin:?} is not listed. Send the token in the auth payload instead, or list the origin"
                        ),
                    ));
                }
            }
        }
        let user = claims.user.clone();
        // A reconnecting client asks to resume its session.
        let mut failure = None;
        let resume = match (&self.recovery, parse_resume(req.auth)) {
            (Some(_), Ok(resume)) => resume,
            (Some(recovery), Err(f)) => {
                failure = Some(recovery.refused(f));
                None
            }
            (None, _) => None,
        };
        if resume.is_some() {
            // Live events wait until the missed ones are replayed (a fresh
            // session releases them at once).
            socket.hold();
        }
        // Read before the socket joins any room, as the position a fresh
        // session starts at (no request unless the gateway just started).
        let start = match &self.recovery {
            Some(r) => r.start_position().await,
            None => 0,
        };
        self.hub.register(socket.conn());
        let fail = |code: &str, message: String| {
            self.hub.unregister(socket.conn());
            self.refuse(code, message)
        };
        // The session lookup and the user's rooms do not depend on each
        // other: both at once.
        let lookup = async {
            match (&self.recovery, &resume) {
                (Some(recovery), Some(resume)) => Some(recovery.find(&user, resume).await),
                _ => None,
            }
        };
        let rooms = async {
            // The user room first: membership changes announced while the
            // rooms are being looked up then already reach this socket.
            if let Err(e) = self.hub.join(&RoomId::user(&user), socket).await {
                return Err(("bus_unavailable", e.to_string()));
            }
            self.membership
                .rooms_of(&user)
                .await
                .map_err(|e| ("membership_unavailable", e.to_string()))
        };
        let (lookup, rooms) = tokio::join!(lookup, rooms);
        let mut rooms = rooms.map_err(|(code, message)| fail(code, message))?;
        let found: Option<Found> = match lookup {
            Some(Ok(f)) => Some(f),
            Some(Err(f)) => {
                failure = Some(f);
                None
            }
            None => None,
        };
        if let Some(f) = &found {
            // The rooms the client chose itself before the drop.
            rooms.retain(|r| !f.record.left.contains(&r.to_string()));
            let mut wanted: Vec<RoomId> = f
                .record
                .joined
                .iter()
                .filter_map(|name| RoomId::parse(name).ok())
                .filter(|room| !rooms.contains(room))
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            let checks = futures::future::join_all(
                wanted
                    .iter()
                    .map(|room| self.membership.may_join(&user, room)),
            )
            .await;
            for (room, access) in wanted.into_iter().zip(checks) {
                if matches!(access, Ok(Access::Allowed)) {
                    rooms.push(room);
                }
            }
        }
        rooms.sort_unstable();
        rooms.dedup();
        let joins = rooms
            .iter()
            .filter(|r| r.kind() != RoomKind::User)
            .map(|room| self.hub.join(room, socket));
        if let Err(e) = futures::future::try_join_all(joins).await {
            return Err(fail("bus_unavailable", e.to_string()));
        }
        let after_connect = match &self.recovery {
            None => None,
            Some(recovery) => {
                let now: HashSet<RoomId> = self.hub.rooms_of(socket.conn()).into_iter().collect();
                let recovered = match found {
                    Some(f) => match recovery.replay(&user, &f, &now).await {
                        Ok(replay) => Some((f, replay)),
                        Err(e) => {
                            failure = Some(e);
                            None
                        }
                    },
                    None => None,
                };
                let mut record = SessionRecord {
                    v: 1,
                    sid: socket.sid().to_string(),
                    user: user.to_string(),
                    gateway: recovery.gateway().to_owned(),
                    offset: start,
                    rooms: now.iter().map(ToString::to_string).collect(),
                    joined: Vec::new(),
                    left: Vec::new(),
                    disconnected_at_ms: None,
                };
                Some(match recovered {
                    Some((f, replay)) => {
                        socket.set_sid(&f.record.sid);
                        record.sid = f.record.sid.clone();
                        record.offset = f.from;
                        record.joined = f.record.joined.clone();
                        record.left = f.record.left.clone();
                        AfterConnect::Recovered {
                            pid: f.pid,
                            record,
                            replay,
                        }
                    }
                    None => {
                        // Live events at or below `start` predate the session.
                        if socket.release(start).is_err() {
                            return Err(fail("closed", "the connection closed".into()));
                        }
                        AfterConnect::Fresh {
                            pid: new_pid(),
                            record,
                            failure,
                        }
                    }
                })
            }
        };
        let pid = match &after_connect {
            Some(AfterConnect::Recovered { pid, .. } | AfterConnect::Fresh { pid, .. }) => {
                Some(pid.clone())
            }
            None => None,
        };
        tracing::debug!(%user, rooms = rooms.len() + 1, sid = &*socket.sid(), "socket connected");
        self.presence.connected(&user, socket.conn());
        Ok(Accepted {
            session: Session {
                user,
                expires_at: claims.expires_at,
                send_bucket: self.messenger.connection_bucket(),
                typing: TypingState::default(),
                recovery: None,
                after_connect,
            },
            pid,
            expires_at: Some(expiry_instant(claims.expires_at)),
        })
    }

    async fn on_connected(&self, socket: &SocketRef, session: &mut Session) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        match session.after_connect.take() {
            None => {}
            Some(AfterConnect::Fresh {
                pid,
                record,
                failure,
            }) => {
                session.recovery = Some(recovery.started(pid, record).await);
                if let Some(failure) = failure {
                    let event = serde_json::to_value(failure.event()).unwrap_or(Value::Null);
                    let _ = socket.emit(names::RECOVERY_FAILED, vec![event]);
                }
            }
            Some(AfterConnect::Recovered {
                pid,
                record,
                replay,
            }) => {
                session.recovery = Some(recovery.started(pid, record).await);
                // The connection task drains the queue while this runs.
                let socket = socket.clone();
                tokio::spawn(async move {
                    let Replay { frames, floor } = replay;
                    for (seq, frame) in frames {
                        if socket.send_replayed(frame, seq).await.is_err() {
                            return;
                        }
                    }
                    // The live events held meanwhile may be more than the
                    // outbound queue takes at once: wait for room.
                    let _ = socket.release_waiting(floor).await;
                });
            }
        }
    }

    async fn on_event(
        &self,
        socket: &SocketRef,
        session: &mut Session,
        event: IncomingEvent,
    ) -> EventOutcome {
        let parsed = ClientToServer::parse(&event.name, &event.args);
        match parsed {
            Ok(ClientToServer::RoomJoin(req)) => self.join(socket, session, &req).await,
            Ok(ClientToServer::RoomLeave(req)) => self.leave(socket, session, &req).await,
            Ok(ClientToServer::AuthRefresh(req)) => self.refresh(session, &req).await,
            Ok(ClientToServer::TypingStart(req)) | Ok(ClientToServer::TypingStop(req)) => {
                let start = event.name == names::TYPING_START;
                let user = session.user.clone();
                match typing::typing(
                    &self.hub,
                    socket,
                    &user,
                    &mut session.typing,
                    req.room(),
                    start,
                )
                .await
                {
                    Ok(()) => ack(&json!({ "ok": true })),
                    Err(error) => ack(&json!({ "error": error })),
                }
            }
            Ok(ClientToServer::MessageSend(req)) => {
                let user = session.user.clone();
                ack(&self
                    .messenger
                    .send(socket, &user, &mut session.send_bucket, req)
                    .await)
            }
            Ok(ClientToServer::PresenceSet(req)) => {
                crate::presence::on_set(&self.presence, socket, session, &req)
            }
            Ok(ClientToServer::PresenceQuery(req)) => {
                crate::presence::on_query(&self.presence, &req).await
            }
            Ok(ClientToServer::MessageEdit(req)) => {
                ack(&crate::history::edit(&*self.history, &session.user, req).await)
            }
            Ok(ClientToServer::MessageDelete(req)) => {
                ack(&crate::history::delete(&*self.history, &session.user, req).await)
            }
            Ok(ClientToServer::MessageHistory(req)) => {
                ack(&crate::history::history(&*self.history, &session.user, req).await)
            }
            Err(error) => ack(&json!({ "error": error })),
        }
    }

    async fn on_expired(
        &self,
        _socket: &SocketRef,
        session: &mut Session,
    ) -> Option<(String, Vec<Value>)> {
        self.metrics.closed_for("token_expired");
        let notice = SessionExpired {
            code: "token_expired".into(),
            message: format!(
                "the token of {} expired at {} (Unix seconds); reconnect with a fresh token, or send auth:refresh before expiry",
                session.user, session.expires_at
            ),
        };
        Some((
            names::SESSION_EXPIRED.into(),
            vec![serde_json::to_value(notice).unwrap_or(Value::Null)],
        ))
    }

    async fn on_disconnect(&self, socket: &SocketRef, session: Session, reason: DisconnectReason) {
        let mut session = session;
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
