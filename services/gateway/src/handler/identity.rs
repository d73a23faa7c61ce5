//! Who connects: a JWT first (auth payload, bearer header, cookie), else
//! the app's session (`auth.session`, a "connect hook"); and, for a
//! session, whether it still holds when its socket's expiry comes.

use std::net::IpAddr;
use std::time::Duration;

use confab_auth::session::{SessionAuth, SessionError};
use confab_auth::{AuthError, TokenSource, Verifier, extract_token_with_source};
use confab_events::{RoomId, UserId};
use http::HeaderMap;
use tokio::time::Instant;

use crate::config::CorsConfig;
use crate::engine::ConnectRequest;

/// A refused CONNECT: code, message, and whether the client should retry
/// (close the transport instead of CONNECT_ERROR).
pub(super) struct Refused {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) retry: bool,
}

impl Refused {
    fn auth(e: &AuthError) -> Self {
        if e.is_server_error() {
            tracing::warn!(error = %e, "handshake authentication unavailable");
        }
        Self {
            code: e.code(),
            message: e.public_message(),
            retry: false,
        }
    }

    fn session(e: &SessionError) -> Self {
        Self {
            code: e.code(),
            message: e.public_message(),
            retry: matches!(e, SessionError::Unavailable { .. }),
        }
    }
}

/// How a socket authenticated.
#[derive(Debug)]
pub(crate) enum Credentials {
    /// A JWT: its `exp` ends the socket (or `auth:refresh` extends it).
    Jwt,
    /// The app's session: asked again at each recheck.
    Session {
        /// The handshake's kept headers (cookies, `Authorization`,
        /// `Origin`), forwarded again through the allow-list.
        headers: HeaderMap,
        /// The client's address.
        remote: Option<IpAddr>,
    },
}

/// An authenticated CONNECT.
pub(super) struct Identity {
    pub(super) user: UserId,
    /// The token's or the session's expiry, Unix seconds.
    pub(super) expires_at: u64,
    /// When the engine calls back (expiry, or a session's recheck).
    pub(super) recheck: Instant,
    /// Rooms the app puts the socket in (generic session preset).
    pub(super) rooms: Vec<RoomId>,
    pub(super) credentials: Credentials,
}

/// What a session recheck decided.
pub(super) enum Recheck {
    /// Still valid: look again then.
    Valid(Instant),
    /// Over: tell the client (code, message) and disconnect.
    Over(&'static str, String),
}

/// The authentication step of CONNECT.
pub(super) struct Authenticator {
    pub(super) verifier: Verifier,
    pub(super) session: Option<SessionAuth>,
    pub(super) cors: CorsConfig,
}

impl Authenticator {
    /// A JWT if there is one (and JWTs are on), else the app's session.
    pub(super) async fn identify(&self, req: &ConnectRequest<'_>) -> Result<Identity, Refused> {
        let config = self.verifier.config();
        let cookie = config.cookie_name.as_deref();
        let jwt = config
            .jwt_enabled()
            .then(|| extract_token_with_source(req.auth, req.headers, cookie))
            .flatten()
            // With session auth on, a bearer that is not a JWT is the
            // app's own session token: the app checks it.
            .filter(|(token, source)| {
                self.session.is_none()
                    || *source != TokenSource::AuthorizationHeader
                    || token.split('.').count() == 3
            });
        if let Some((token, source)) = jwt {
            let claims = self
                .verifier
                .verify(&token)
                .await
                .map_err(|e| Refused::auth(&e))?;
            if source == TokenSource::Cookie {
                self.check_origin(req.headers, "a token from a cookie")?;
            }
            return Ok(Identity {
                recheck: super::expiry_instant(claims.expires_at),
                user: claims.user,
                expires_at: claims.expires_at,
                rooms: Vec::new(),
                credentials: Credentials::Jwt,
            });
        }
        let Some(session) = &self.session else {
            return Err(Refused::auth(&AuthError::missing_token(cookie)));
        };
        if session.has_session_cookie(req.headers) {
            self.check_origin(req.headers, "a session cookie")?;
        }
        let remote = req.remote.map(|a| a.ip());
        let resolved = session
            .resolve(req.headers, remote)
            .await
            .map_err(|e| Refused::session(&e))?;
        Ok(Identity {
            user: resolved.user.user,
            expires_at: resolved.user.expires_at,
            recheck: resolved.recheck_at,
            rooms: resolved.user.rooms,
            credentials: Credentials::Session {
                headers: req.headers.clone(),
                remote,
            },
        })
    }

    /// Browsers attach cookies to cross-site requests too: a cookie only
    /// counts from an origin listed by name.
    fn check_origin(&self, headers: &HeaderMap, what: &str) -> Result<(), Refused> {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        if self.cors.allows_explicitly(origin) {
            return Ok(());
        }
        Err(Refused {
            code: "origin_not_allowed",
            message: format!(
                "{what} is only accepted from origins listed in cors.allowed_origins (not via \"*\"); {origin:?} is not listed. Send a token in the auth payload instead, or list the origin"
            ),
            retry: false,
        })
    }

    /// A session socket's recheck: asks the app again (through the cache).
    /// A failing app keeps the socket and looks again after the breaker's
    /// cooldown: an outage of the app does not disconnect everyone.
    pub(super) async fn recheck(&self, user: &UserId, credentials: &Credentials) -> Recheck {
        let (Some(session), Credentials::Session { headers, remote }) =
            (&self.session, credentials)
        else {
            return Recheck::Over("token_expired", String::new());
        };
        match session.resolve(headers, *remote).await {
            Ok(r) if r.user.user == *user => Recheck::Valid(r.recheck_at),
            Ok(_) => Recheck::Over(
                "session_expired",
                "the session now belongs to another user; reconnect".into(),
            ),
            Err(SessionError::Unavailable { .. }) => {
                let later = session
                    .config()
                    .breaker_cooldown
                    .max(Duration::from_secs(1));
                Recheck::Valid(Instant::now() + later)
            }
            Err(_) => Recheck::Over(
                "session_expired",
                format!(
                    "the session of {user} ended (signed out, expired or revoked); sign in to the app again, then reconnect"
                ),
            ),
        }
    }
}
