//! CONNECT, in named steps:
//!
//! 1. `identify` (`identity.rs`): the JWT of the handshake (auth
//!    payload, bearer header or cookie), else the app's session
//!    (`auth.session`);
//! 2. [`resume_request`](ConfabHandler::resume_request): whether the client
//!    asks to continue a session (`{pid, offset}`), holding live events
//!    back if so;
//! 3. [`rooms`](ConfabHandler::rooms): the user room, then the membership
//!    service's rooms (plus/minus the client's own choices of a resumed
//!    session), joined all at once, while the session is looked up;
//! 4. [`after_connect`](ConfabHandler::after_connect): what follows the
//!    CONNECT reply: a recovered session's replay, or a fresh session's
//!    record (and `recovery:failed` if it asked to resume and could not),
//!    sent by [`after_connected`](ConfabHandler::after_connected).

use std::collections::HashSet;

use confab_events::socket::names;
use confab_events::{RoomId, RoomKind, UserId};
use serde_json::{Value, json};
use tracing::Instrument;

use super::{Bucket, ConfabHandler, Session, TypingState};
use crate::engine::{Accepted, ConnectRefusal, ConnectRequest, EngineHooks, SocketRef};
use crate::features::membership::Access;
use crate::features::recovery::{
    Failure, Found, Replay, Resume, SessionRecord, new_pid, parse_resume,
};

/// Why a CONNECT is refused: a stable code and a message.
type Refusal = (&'static str, String);

/// What follows the CONNECT reply of a socket.
#[derive(Debug)]
pub(super) enum AfterConnect {
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

impl AfterConnect {
    fn pid(&self) -> &str {
        match self {
            AfterConnect::Recovered { pid, .. } | AfterConnect::Fresh { pid, .. } => pid,
        }
    }
}

/// What a connecting client asked to resume, and why it cannot be, so far.
#[derive(Default)]
struct ResumeRequest {
    resume: Option<Resume>,
    failure: Option<Failure>,
}

impl ConfabHandler {
    /// Handles a CONNECT: the steps of the module docs.
    pub(super) async fn connect(
        &self,
        socket: &SocketRef,
        req: ConnectRequest<'_>,
    ) -> Result<Accepted<Session>, ConnectRefusal> {
        let identity = self.auth.identify(&req).await.map_err(|r| {
            let mut refusal = self.refuse(r.code, r.message);
            refusal.retry = r.retry;
            refusal
        })?;
        let user = identity.user.clone();
        let place = self.per_user.acquire(user.clone()).ok_or_else(|| {
            self.refuse(
                "too_many_connections",
                format!(
                    "{user} already has {} sockets on this gateway (limits.connections_per_user); close one first",
                    self.per_user.limit()
                ),
            )
        })?;
        let mut request = self.resume_request(socket, req.auth);
        // Read before the socket joins any room, as the position a fresh
        // session starts at (no request unless the gateway just started).
        let start = match &self.recovery {
            Some(r) => r.start_position().await,
            None => 0,
        };
        self.hub.register(socket.conn());
        let joined = async {
            let (rooms, found) = self
                .rooms(socket, &user, &identity.rooms, &mut request)
                .await?;
            let after = self
                .after_connect(socket, &user, start, found, request.failure)
                .await?;
            Ok::<_, Refusal>((rooms, after))
        };
        let (rooms, after_connect) = joined.await.map_err(|(code, message)| {
            self.hub.unregister(socket.conn());
            self.refuse(code, message)
        })?;
        let pid = after_connect.as_ref().map(|a| a.pid().to_owned());
        tracing::debug!(%user, rooms = rooms + 1, sid = &*socket.sid(), "socket connected");
        self.presence.connected(&user, socket.conn());
        Ok(Accepted {
            session: Session {
                user,
                expires_at: identity.expires_at,
                credentials: identity.credentials,
                send_bucket: self.messenger.connection_bucket(),
                query_bucket: crate::features::presence::query_bucket(),
                budget: Bucket::new(self.limits.event_rate_per_sec, self.limits.event_burst),
                _place: place,
                typing: TypingState::default(),
                recovery: None,
                after_connect,
            },
            pid,
            expires_at: Some(identity.recheck),
        })
    }

    fn refuse(&self, code: &str, message: String) -> ConnectRefusal {
        self.metrics.handshake_failed(code);
        ConnectRefusal {
            message,
            data: Some(json!({ "code": code })),
            retry: false,
        }
    }

    /// Step 2: a reconnecting client asks to resume its session. A
    /// malformed request is a failure to report, never a refusal.
    fn resume_request(&self, socket: &SocketRef, auth: Option<&Value>) -> ResumeRequest {
        let Some(recovery) = &self.recovery else {
            return ResumeRequest::default();
        };
        let request = match parse_resume(auth) {
            Ok(resume) => ResumeRequest {
                resume,
                failure: None,
            },
            Err(f) => ResumeRequest {
                resume: None,
                failure: Some(recovery.refused(f)),
            },
        };
        if request.resume.is_some() {
            // Live events wait until the missed ones are replayed (a fresh
            // session releases them at once).
            socket.hold();
        }
        request
    }

    /// Step 3: puts the socket in its rooms; returns how many besides the
    /// user room, and the session to resume, if found.
    async fn rooms(
        &self,
        socket: &SocketRef,
        user: &UserId,
        granted: &[RoomId],
        request: &mut ResumeRequest,
    ) -> Result<(usize, Option<Found>), Refusal> {
        // The session lookup and the user's rooms do not depend on each
        // other: both at once.
        let lookup = async {
            match (&self.recovery, &request.resume) {
                (Some(recovery), Some(resume)) => {
                    // Never the pid: it is what lets a client resume.
                    let span =
                        tracing::info_span!("recovery.resume", confab.offset = resume.offset);
                    Some(recovery.find(user, resume).instrument(span).await)
                }
                _ => None,
            }
        };
        let rooms = async {
            // The user room first: membership changes announced while the
            // rooms are being looked up then already reach this socket.
            if let Err(e) = self.hub.join(&RoomId::user(user), socket).await {
                return Err(("bus_unavailable", e.to_string()));
            }
            self.membership
                .rooms_of(user)
                .await
                .map_err(|e| ("membership_unavailable", e.to_string()))
        };
        let (lookup, rooms) = tokio::join!(lookup, rooms);
        let mut rooms = rooms?;
        // Rooms the app's session answer grants (generic preset).
        rooms.extend(granted.iter().cloned());
        let found = match lookup {
            Some(Ok(f)) => Some(f),
            Some(Err(f)) => {
                request.failure = Some(f);
                None
            }
            None => None,
        };
        if let Some(f) = &found {
            self.apply_own_choices(user, &f.record, &mut rooms).await;
        }
        rooms.sort_unstable();
        rooms.dedup();
        let joins = rooms
            .iter()
            .filter(|r| r.kind() != RoomKind::User)
            .map(|room| self.hub.join(room, socket));
        futures::future::try_join_all(joins)
            .await
            .map_err(|e| ("bus_unavailable", e.to_string()))?;
        Ok((rooms.len(), found))
    }

    /// The rooms the client chose itself before the drop: those it left
    /// stay left, those it joined are joined again if still allowed.
    async fn apply_own_choices(
        &self,
        user: &UserId,
        record: &SessionRecord,
        rooms: &mut Vec<RoomId>,
    ) {
        rooms.retain(|r| !record.left.contains(&r.to_string()));
        let mut wanted: Vec<RoomId> = record
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
                .map(|room| self.membership.may_join(user, room)),
        )
        .await;
        for (room, access) in wanted.into_iter().zip(checks) {
            if access.as_ref().is_ok_and(Access::may_read) {
                rooms.push(room);
            }
        }
    }

    /// Step 4 (recovery on): replays a found session, or starts a fresh
    /// one at `start`; says what to send after the CONNECT reply.
    async fn after_connect(
        &self,
        socket: &SocketRef,
        user: &UserId,
        start: u64,
        found: Option<Found>,
        mut failure: Option<Failure>,
    ) -> Result<Option<AfterConnect>, Refusal> {
        let Some(recovery) = &self.recovery else {
            return Ok(None);
        };
        let now: HashSet<RoomId> = self.hub.rooms_of(socket.conn()).into_iter().collect();
        let recovered = match found {
            Some(f) => match recovery.replay(user, &f, &now).await {
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
            gateway: recovery.gateway().to_string(),
            offset: start,
            rooms: now.iter().map(ToString::to_string).collect(),
            joined: Vec::new(),
            left: Vec::new(),
            disconnected_at_ms: None,
        };
        Ok(Some(match recovered {
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
                    return Err(("closed", "the connection closed".into()));
                }
                AfterConnect::Fresh {
                    pid: new_pid(),
                    record,
                    failure,
                }
            }
        }))
    }

    /// Right after the CONNECT reply: records the session, then tells a
    /// fresh one why it was not recovered, or replays a recovered one.
    pub(super) async fn after_connected(&self, socket: &SocketRef, session: &mut Session) {
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
                tokio::spawn(
                    async move {
                        let Replay { frames, floor } = replay;
                        for (seq, frame) in frames {
                            if socket.send_replayed(frame, seq).await.is_err() {
                                return;
                            }
                        }
                        // The live events held meanwhile may be more than
                        // the outbound queue takes at once: wait for room.
                        let _ = socket.release_waiting(floor).await;
                    }
                    .in_current_span(),
                );
            }
        }
    }
}
