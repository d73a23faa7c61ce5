//! Engine.IO v4 HTTP long-polling: the sessions this gateway owns, their
//! HTTP requests and their upgrade to WebSocket.
//!
//! A session is made by the handshake `GET ?EIO=4&transport=polling`; its
//! connection task (the same as a WebSocket's) runs on a
//! [`PollingTransport`]. GETs and POSTs name it by `sid`, and reach it
//! through [`PollingSessions::poll`] (or [`PollingSessions::poll_with`],
//! which puts the packets back when a forwarded answer is lost) and
//! [`PollingSessions::post`], which know nothing of HTTP: a gateway that
//! receives a request for a session it does not own can forward it to the
//! owner (named by the sid, see [`sid_owner`]) and have the owner call
//! these.
//!
//! Rules, as the reference server has them: one GET at a time (a second
//! ends the session: the held one gets `1`, the second 400); POSTs are
//! handled one after the other and answered once their packets were handed
//! to the connection task; a malformed POST ends the session; a GET waits
//! with no time limit (the heartbeat's ping ends it within `pingInterval`).
//!
//! Without sticky sessions, a request for a sid this gateway does not hold
//! but another gateway's id names goes through the [`Forwarder`] set with
//! [`PollingSessions::set_forwarder`] (see `crate::forwarding`). A
//! WebSocket upgrade that lands on another gateway is relayed: this
//! gateway accepts the WebSocket and runs the probe with the client, the
//! owner switches the session to the relay ([`relay`]).

mod forward;
mod http;
mod relay;
mod session;
mod transport;
mod upgrade;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::mpsc;

pub(crate) use forward::{Forwarder, FromOwner, Relay, RelayLink, ToOwner};
pub(crate) use http::{error, handle};
pub(crate) use relay::{RelayedUpgrade, RemoteEnds};
pub(crate) use transport::PollingTransport;
pub(crate) use upgrade::{UpgradeContext, upgrade};

use transport::Upgraded;

use session::PollSession;

/// How long a WebSocket has to complete an upgrade (`2probe` … `5`) before
/// the session stays on polling (the reference server's 10 s).
pub const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a polling request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// No such session (never made, or ended).
    #[error("Session ID unknown")]
    UnknownSid,
    /// The session moved to WebSocket, or the request does not fit it.
    #[error("Bad request")]
    BadRequest,
    /// A second GET while one was held: the session ended.
    #[error("overlapping GET requests")]
    Overlap,
    /// A POST body over `maxPayload`.
    #[error("payload too large")]
    TooLarge,
    /// A POST body that is not a valid payload: the session ended.
    #[error("malformed payload")]
    Malformed,
}

/// The gateway (or node) a sid names, when it names one: the sid is
/// `{owner}.{random}`.
pub fn sid_owner(sid: &str) -> Option<&str> {
    sid.split_once('.').map(|(owner, _)| owner)
}

/// A new sid naming `owner` (when not empty).
pub(crate) fn new_sid(owner: &str) -> String {
    let bytes: [u8; 15] = rand::random();
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    if owner.is_empty() {
        random
    } else {
        format!("{owner}.{random}")
    }
}

struct Entry {
    session: Arc<PollSession>,
    upgrades: mpsc::Sender<Upgraded>,
}

/// The polling sessions this process owns, by sid.
pub struct PollingSessions {
    owner: String,
    capacity: usize,
    max_payload: usize,
    sessions: Mutex<HashMap<Arc<str>, Entry>>,
    forwarder: OnceLock<Arc<dyn Forwarder>>,
}

/// Where a request for a sid goes.
pub(super) enum Route<'a> {
    /// This gateway holds the session.
    Here,
    /// Another gateway, named by the sid, may.
    Owner(&'a Arc<dyn Forwarder>, &'a str),
}

impl PollingSessions {
    /// No sessions yet. `owner` goes into every sid (empty: none);
    /// `capacity` bounds the packets waiting for a GET and `max_payload`
    /// the bytes of one GET response or POST body.
    pub(crate) fn new(owner: &str, capacity: usize, max_payload: usize) -> Arc<Self> {
        Arc::new(Self {
            owner: owner.to_owned(),
            capacity,
            max_payload,
            sessions: Mutex::new(HashMap::new()),
            forwarder: OnceLock::new(),
        })
    }

    /// Forwards requests for other gateways' sessions through `forwarder`
    /// from now on (once; a second call is ignored).
    pub(crate) fn set_forwarder(&self, forwarder: Arc<dyn Forwarder>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// Where a request for `sid` goes: here, to the gateway the sid names
    /// (when a forwarder is set and it is not this one), or nowhere.
    pub(super) fn route<'a>(&'a self, sid: &'a str) -> Result<Route<'a>, PollError> {
        if self.lock().contains_key(sid) {
            return Ok(Route::Here);
        }
        match (self.forwarder.get(), sid_owner(sid)) {
            (Some(f), Some(owner)) if !owner.is_empty() && owner != self.owner => {
                Ok(Route::Owner(f, owner))
            }
            _ => {
                tracing::debug!(sid, "polling request for an unknown session");
                Err(PollError::UnknownSid)
            }
        }
    }

    /// A GET as HTTP answers it: this gateway's session, or forwarded to
    /// its owner.
    pub(crate) async fn get_request(&self, sid: &str) -> Result<Bytes, PollError> {
        match self.route(sid)? {
            Route::Here => self.poll(sid).await.map(Bytes::from),
            Route::Owner(f, owner) => f.poll(owner, sid).await,
        }
    }

    /// A POST as HTTP answers it: this gateway's session, or forwarded to
    /// its owner (a body that is not UTF-8 cannot be a v4 payload).
    pub(crate) async fn post_request(&self, sid: &str, body: Bytes) -> Result<(), PollError> {
        match self.route(sid)? {
            Route::Here => self.post(sid, &body).await,
            Route::Owner(f, owner) => {
                std::str::from_utf8(&body).map_err(|_| PollError::BadRequest)?;
                f.post(owner, sid, body).await
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a session: its sid and the transport its connection task runs on.
    pub(crate) fn open(self: &Arc<Self>) -> (Arc<str>, PollingTransport) {
        let sid: Arc<str> = new_sid(&self.owner).into();
        let (session, inbound) = PollSession::new(sid.clone(), self.capacity, self.max_payload);
        let (upgrades, upgraded) = mpsc::channel(1);
        self.lock().insert(
            sid.clone(),
            Entry {
                session: Arc::clone(&session),
                upgrades,
            },
        );
        let transport = PollingTransport::new(session, Arc::clone(self), inbound, upgraded);
        (sid, transport)
    }

    fn get(&self, sid: &str) -> Option<Arc<PollSession>> {
        self.lock().get(sid).map(|e| Arc::clone(&e.session))
    }

    fn get_for_upgrade(&self, sid: &str) -> Option<(Arc<PollSession>, mpsc::Sender<Upgraded>)> {
        self.lock()
            .get(sid)
            .map(|e| (Arc::clone(&e.session), e.upgrades.clone()))
    }

    pub(crate) fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Number of live polling sessions (upgraded ones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// A GET: waits for the session's next payload (see the module docs).
    /// Dropping the future releases the session for the next GET and takes
    /// nothing off its queue.
    pub async fn poll(&self, sid: &str) -> Result<String, PollError> {
        let mut answer = String::new();
        self.poll_with(sid, usize::MAX, |payload| {
            answer = payload;
            async { true }
        })
        .await?;
        Ok(answer)
    }

    /// A GET for a forwarder: like [`PollingSessions::poll`], but the
    /// payload is at most `limit` bytes (besides `maxPayload`; one packet
    /// over it goes alone: packets are never split) and the packets go back
    /// to the session's queue (in order, for the next GET) when `deliver`
    /// reports that its reply did not arrive or is dropped.
    pub async fn poll_with<F, Fut>(
        &self,
        sid: &str,
        limit: usize,
        deliver: F,
    ) -> Result<(), PollError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let session = self.get(sid).ok_or(PollError::UnknownSid)?;
        let result = session.poll_with(limit, deliver).await;
        if session.is_gone() {
            self.remove(sid);
        }
        result
    }

    /// A POST: hands the payload's packets to the session, in order;
    /// returns once they were.
    pub async fn post(&self, sid: &str, body: &[u8]) -> Result<(), PollError> {
        let session = self.get(sid).ok_or(PollError::UnknownSid)?;
        let result = session.post(body).await;
        if session.is_gone() {
            self.remove(sid);
        }
        result
    }

    /// Ends a session at once (e.g. an octet-stream POST), as a malformed
    /// payload does.
    pub(crate) fn kill(&self, sid: &str) {
        if let Some(s) = self.get(sid) {
            s.end("1");
        }
        self.remove(sid);
    }
}
