//! `message:send`: validated, rate-limited, authorized, durably appended,
//! idempotent.
//!
//! Authorized twice: the socket must be in the room (local state, cheap),
//! and the membership authority must still count the author as a member of
//! a writable room. The authority's answer comes from the gateway's
//! [`AccessCache`] (after the rate limits): filled from the membership
//! service on a miss, kept current by the membership events every gateway
//! of the user receives (a kick, a workspace removal or an archive applies
//! as soon as its `room:left` / `channel:archived` arrives), and still used
//! while the membership service is down.
//!
//! The ack (`{id, seq, createdAt}`) is sent only after the bus stored the
//! `message:new` event (JetStream PubAck, or the all-in-one's in-process
//! log). The dedup key is `msg:{room}:{author}:{clientMsgId}`: a retry
//! within the bus's duplicate window (2 min) is answered with the first
//! message's ack, read back from the log, and nothing is stored or
//! delivered twice.

mod ratelimit;

use std::time::Instant;

use confab_bus::BusMessage;
use confab_events::socket::{Message, SendAck, SendRequest, names};
use confab_events::{RoomId, RoomKind, UserId};
use dashmap::DashMap;
use std::sync::Arc;

pub(crate) use ratelimit::Bucket;

use crate::config::MessageSettings;
use crate::engine::SocketRef;
use crate::features::membership::{Access, AccessCache};
use crate::hub::Hub;
use crate::reply::{Code, Reply};

/// Longest `clientMsgId`.
const MAX_CLIENT_MSG_ID: usize = 64;

/// Sends chat messages for the sockets of this gateway.
pub(crate) struct Messenger {
    hub: Arc<Hub>,
    access: Arc<AccessCache>,
    settings: MessageSettings,
    users: DashMap<UserId, Bucket>,
}

fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn new_message_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("m{ms:011x}{:016x}", rand::random::<u64>())
}

impl Messenger {
    /// A messenger over the hub's bus, authorizing with `access`.
    pub(crate) fn new(hub: Arc<Hub>, access: Arc<AccessCache>, settings: MessageSettings) -> Self {
        Self {
            hub,
            access,
            settings,
            users: DashMap::new(),
        }
    }

    /// A fresh per-connection bucket.
    pub(crate) fn connection_bucket(&self) -> Bucket {
        Bucket::new(self.settings.conn_rate_per_sec, self.settings.conn_burst)
    }

    /// Forgets a user's bucket and cached access once none of their
    /// sockets is here (no membership event of theirs reaches this gateway
    /// any more).
    pub(crate) fn forget_if_gone(&self, user: &UserId) {
        if self.hub.members(&RoomId::user(user)) == 0 {
            self.users.remove(user);
            self.access.forget(user);
        }
    }

    fn validate(&self, socket: &SocketRef, req: &SendRequest) -> Result<RoomId, Reply> {
        let room = RoomId::parse(&req.room)
            .map_err(|e| Reply::error(Code::InvalidRoom, format!("invalid room name: {e}")))?;
        if !matches!(room.kind(), RoomKind::Channel | RoomKind::Dm) {
            return Err(Reply::error(
                Code::InvalidRoom,
                format!("messages go to channel: or dm: rooms, not {room}"),
            ));
        }
        if !self.hub.is_in(socket.conn(), &room) {
            return Err(Reply::error(
                Code::Forbidden,
                format!("not a member of {room} (this socket is not in the room)"),
            ));
        }
        if req.body.trim().is_empty() {
            return Err(Reply::error(Code::InvalidBody, "body is empty"));
        }
        if req.body.len() > self.settings.max_body_bytes {
            return Err(Reply::error(
                Code::BodyTooLarge,
                format!(
                    "body is {} bytes; the limit is {}",
                    req.body.len(),
                    self.settings.max_body_bytes
                ),
            ));
        }
        if !valid_token(&req.client_msg_id, MAX_CLIENT_MSG_ID) {
            return Err(Reply::error(
                Code::InvalidClientMsgId,
                format!("clientMsgId must be 1 to {MAX_CLIENT_MSG_ID} of A-Z a-z 0-9 _ -"),
            ));
        }
        if let Some(t) = &req.thread_id
            && !valid_token(t, 128)
        {
            return Err(Reply::error(
                Code::InvalidThreadId,
                "threadId is not a valid message id",
            ));
        }
        Ok(room)
    }

    /// Whether `author` may still write in `room`, as the authority (or
    /// the cached view of it) says.
    async fn authorize(&self, author: &UserId, room: &RoomId) -> Result<(), Reply> {
        match self.access.check(author, room).await {
            Ok((Access::Allowed, _)) => Ok(()),
            Ok((Access::ReadOnly(reason), _)) => Err(Reply::error(Code::Archived, reason)),
            Ok((Access::Refused(reason), _)) => Err(Reply::error(Code::Forbidden, reason)),
            Err(e) => Err(Reply::error(
                Code::Unavailable,
                format!("{e}; the message was not stored, retry with the same clientMsgId"),
            )),
        }
    }

    fn rate_limit(&self, user: &UserId, conn: &mut Bucket) -> Result<(), Reply> {
        let now = Instant::now();
        let limited = |wait: std::time::Duration, scope: &str| {
            let ms = wait.as_millis().max(1) as u64;
            Reply::retry_after(
                format!("too many messages from this {scope}; retry in {ms} ms"),
                ms,
            )
        };
        conn.take(now).map_err(|w| limited(w, "connection"))?;
        let mut user_bucket = self.users.entry(user.clone()).or_insert_with(|| {
            Bucket::new(self.settings.user_rate_per_sec, self.settings.user_burst)
        });
        if let Err(w) = user_bucket.take(now) {
            conn.refund();
            return Err(limited(w, "user"));
        }
        Ok(())
    }

    /// Handles one `message:send`.
    pub(crate) async fn send(
        &self,
        socket: &SocketRef,
        author: &UserId,
        conn: &mut Bucket,
        req: SendRequest,
    ) -> Reply {
        let room = match self.validate(socket, &req) {
            Ok(r) => r,
            Err(ack) => return ack,
        };
        if let Err(ack) = self.rate_limit(author, conn) {
            return ack;
        }
        if let Err(ack) = self.authorize(author, &room).await {
            return ack;
        }
        let message = Message {
            id: new_message_id(),
            room: room.to_string(),
            author_id: author.to_string(),
            body: req.body,
            thread_id: req.thread_id,
            created_at: now_rfc3339(),
            updated_at: None,
        };
        let data = serde_json::to_value(&message).unwrap_or_default();
        let msg = BusMessage::new(names::MESSAGE_NEW, &data)
            .with_msg_id(format!("msg:{room}:{author}:{}", req.client_msg_id));
        let published = match self.hub.publish(&room, msg).await {
            Ok(p) => p,
            Err(e) => {
                return Reply::error(
                    Code::Unavailable,
                    format!("the message was not stored ({e}); retry with the same clientMsgId"),
                );
            }
        };
        let Some(seq) = published.seq else {
            return Reply::error(Code::Unavailable, "the bus did not store the message");
        };
        if !published.duplicate {
            return Reply::ok(&SendAck::Ok {
                id: message.id,
                seq,
                created_at: message.created_at,
            });
        }
        // A retry: answer with the first message, as stored.
        match self.hub.bus().fetch(&room, seq).await {
            Ok(Some(original)) => {
                let first = serde_json::from_str::<Vec<Message>>(&original.args_json)
                    .ok()
                    .and_then(|v| v.into_iter().next());
                match first {
                    Some(m) => Reply::ok(&SendAck::Ok {
                        id: m.id,
                        seq,
                        created_at: m.created_at,
                    }),
                    None => Reply::error(Code::Internal, "stored message cannot be read back"),
                }
            }
            Ok(None) => Reply::error(
                Code::Unavailable,
                "the first copy of this message is no longer retained",
            ),
            Err(e) => Reply::error(
                Code::Unavailable,
                format!("cannot read the first copy: {e}"),
            ),
        }
    }
}
