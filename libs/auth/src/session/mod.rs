//! Session auth, a "connect hook": the app says who the user is.
//!
//! On a Socket.IO CONNECT without a JWT, the gateway calls the app's
//! session endpoint (`auth.session.url`, e.g. better-auth's
//! `/api/auth/get-session`) with an allow-list of the handshake's headers
//! ([`forward`]: the configured session cookies, `Authorization`,
//! `X-Forwarded-For` with the client's address; never anything else) and
//! reads the answer under a [`Preset`].
//!
//! * **Cache.** Verdicts are kept by the SHA-256 of the forwarded
//!   credentials: a signed-in user for at most `cache_ttl` and never past
//!   the session's expiry, "not signed in" for `negative_ttl`; failures
//!   are not kept. At most `cache_capacity` entries.
//! * **Single flight.** Concurrent handshakes with the same credentials
//!   share one call (a mass reconnect asks once per session). The call
//!   runs in its own task, so a client that gives up does not cancel it
//!   for the others.
//! * **Breaker.** `breaker_threshold` consecutive failures (unreachable,
//!   timeout, redirect, 4xx other than 401/403, 5xx, an unreadable answer)
//!   open it for `breaker_cooldown`: calls then fail at once, then one
//!   probe decides.
//! * **Safety.** The URL comes from configuration only (http or https),
//!   redirects are not followed, the answer is read up to
//!   `max_response_bytes`, TLS is verified (rustls, webpki roots). Cookie
//!   values are never logged: errors carry only the URL and status.

mod answer;
mod breaker;
mod cache;
mod config;
mod forward;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use answer::Answer;
pub use answer::SessionUser;
use breaker::Breaker;
use cache::{Cache, Found};
pub use config::{BETTER_AUTH_COOKIES, Preset, SessionConfig, SessionConfigError};

/// Counts what session auth does; the gateway turns it into metrics. All
/// methods default to no-ops.
pub trait SessionObserver: Send + Sync + 'static {
    /// A call to the app finished: `outcome` is `user`, `no_session`, or
    /// the failure (`timeout`, `unreachable`, `status_5xx`, ...).
    fn call(&self, _outcome: &'static str, _latency: Duration) {}
    /// A verdict came from the cache (`user` or `no_session`).
    fn cache_hit(&self, _verdict: &'static str) {}
    /// A lookup joined one already running for the same credentials.
    fn shared(&self) {}
    /// A lookup was refused at once because the breaker is open.
    fn breaker_rejected(&self) {}
    /// The breaker opened.
    fn breaker_opened(&self) {}
}

/// An observer that counts nothing.
pub struct NoObserver;
impl SessionObserver for NoObserver {}

/// Why session auth did not give a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Neither a session cookie nor `Authorization` in the handshake.
    #[error(
        "not signed in: no JWT and no session cookie ({}) in the handshake; sign in to the app first, connect with withCredentials: true, and serve Confab under the app's host so the browser sends its cookie",
        .cookies.join(", ")
    )]
    NoCredentials {
        /// The cookies looked for.
        cookies: Vec<String>,
    },
    /// The app says the session is not valid (`null`, 401, 403).
    #[error(
        "the session is not valid (signed out, expired or revoked): sign in to the app again, then reconnect"
    )]
    NotSignedIn,
    /// The app could not tell (unreachable, slow, failing, or an answer
    /// that cannot be read); `reason` is for logs only.
    #[error("the auth backend is unavailable: {reason}")]
    Unavailable {
        /// What went wrong (URL and status, never credentials).
        reason: String,
    },
}

impl SessionError {
    /// Stable code: `no_session`, `session_invalid`, `auth_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::NoCredentials { .. } => "no_session",
            SessionError::NotSignedIn => "session_invalid",
            SessionError::Unavailable { .. } => "auth_unavailable",
        }
    }

    /// What the client is told (no internal URL or transport error).
    pub fn public_message(&self) -> String {
        match self {
            SessionError::Unavailable { .. } => {
                "the auth backend is unavailable; the client retries with backoff".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// A session the app vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Who, until when, and the app's rooms.
    pub user: SessionUser,
    /// When to ask the app again: the session's expiry or the end of the
    /// cache TTL, whichever is first.
    pub recheck_at: Instant,
}

/// A cached verdict.
#[derive(Debug, Clone)]
enum Verdict {
    User(Resolved),
    NoSession,
}

/// What a lookup gives everyone waiting for it.
type Lookup = Result<Verdict, SessionError>;

/// Session auth against one app endpoint. Cheap to clone.
#[derive(Clone)]
pub struct SessionAuth {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    cache: Cache,
    breaker: Breaker,
    observer: Arc<dyn SessionObserver>,
}

impl std::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuth")
            .field("url", &confab_config::redact_url(self.inner.url.as_str()))
            .finish_non_exhaustive()
    }
}

impl SessionAuth {
    /// Builds session auth from a validated section; `Ok(None)` when it
    /// is off (no URL). Does no I/O.
    pub fn new(
        config: &SessionConfig,
        observer: Arc<dyn SessionObserver>,
    ) -> Result<Option<Self>, SessionConfigError> {
        config.validate()?;
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url).map_err(|e| SessionConfigError {
            key: "url",
            reason: e.to_string(),
        })?;
        if url.scheme() == "http" && !is_loopback(&url) {
            tracing::warn!(
                url = %confab_config::redact_url(url.as_str()),
                "auth.session.url is plain http: session cookies cross the network unencrypted"
            );
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("confab-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SessionConfigError {
                key: "url",
                reason: format!("could not build the HTTP client: {e}"),
            })?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                cache: Cache::new(config.cache_capacity),
                breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
                config: config.clone(),
                url,
                client,
                observer,
            }),
        }))
    }

    /// The section this was built from.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// Whether the handshake carries a credential to forward.
    pub fn has_credentials(&self, headers: &HeaderMap) -> bool {
        forward::has_credentials(&self.inner.config, headers)
    }

    /// Whether the handshake carries one of the configured session cookies
    /// (then its `Origin` must be allowed by name, as for cookie JWTs).
    pub fn has_session_cookie(&self, headers: &HeaderMap) -> bool {
        forward::has_session_cookie(&self.inner.config, headers)
    }

    /// Whether the breaker is open: lookups fail at once now.
    pub fn is_unavailable(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Sessions in the cache now.
    pub fn cached(&self) -> usize {
        self.inner.cache.len()
    }

    /// Who the handshake's session belongs to: from the cache, or by one
    /// call to the app shared by every concurrent handshake with the same
    /// credentials.
    pub async fn resolve(
        &self,
        headers: &HeaderMap,
        remote: Option<IpAddr>,
    ) -> Result<Resolved, SessionError> {
        let inner = &self.inner;
        let fwd = forward::forwarded(&inner.config, headers, remote).ok_or_else(|| {
            SessionError::NoCredentials {
                cookies: inner.config.cookies.clone(),
            }
        })?;
        let key = fwd.key;
        let mut rejected = false;
        let (found, started) = inner.cache.get_or_start(&key, || {
            if !inner.breaker.admit() {
                rejected = true;
                return None;
            }
            let task = tokio::spawn(Arc::clone(inner).lookup(fwd));
            let joined = async move {
                task.await.unwrap_or_else(|_| {
                    Err(SessionError::Unavailable {
                        reason: "the lookup task ended early".into(),
                    })
                })
            };
            Some(joined.boxed().shared())
        });
        let lookup = match (found, started) {
            (Found::Hit(verdict), _) => {
                inner.observer.cache_hit(verdict_name(&verdict));
                Ok(verdict)
            }
            (Found::Running(pending), _) => {
                inner.observer.shared();
                pending.await
            }
            (Found::Miss, Some(pending)) => pending.await,
            (Found::Miss, None) => {
                debug_assert!(rejected);
                inner.observer.breaker_rejected();
                Err(SessionError::Unavailable {
                    reason: format!(
                        "the circuit breaker is open after {} consecutive failures",
                        inner.config.breaker_threshold
                    ),
                })
            }
        };
        match lookup? {
            Verdict::User(resolved) => Ok(resolved),
            Verdict::NoSession => Err(SessionError::NotSignedIn),
        }
    }
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::User(_) => "user",
        Verdict::NoSession => "no_session",
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A failed call: its metric outcome and its reason for the logs.
type Failure = (&'static str, String);

impl Inner {
    /// One call to the app, its verdict cached, the breaker told.
    async fn lookup(self: Arc<Self>, fwd: forward::Forwarded) -> Lookup {
        let started = Instant::now();
        let result = self.call(fwd.headers).await;
        let latency = started.elapsed();
        match result {
            Ok(answer) => {
                self.breaker.succeeded();
                let now = Instant::now();
                let (verdict, until, outcome) = match answer {
                    Answer::User(user) => {
                        let left = Duration::from_secs(user.expires_at.saturating_sub(unix_now()));
                        let recheck_at = now + left.min(self.config.cache_ttl);
                        (
                            Verdict::User(Resolved { user, recheck_at }),
                            recheck_at,
                            "user",
                        )
                    }
                    Answer::NoSession => (
                        Verdict::NoSession,
                        now + self.config.negative_ttl,
                        "no_session",
                    ),
                };
                self.observer.call(outcome, latency);
                self.cache.finish(&fwd.key, Some((verdict.clone(), until)));
                Ok(verdict)
            }
            Err((outcome, reason)) => {
                self.observer.call(outcome, latency);
                self.cache.finish(&fwd.key, None);
                if self.breaker.failed() {
                    self.observer.breaker_opened();
                    tracing::warn!(
                        cooldown = ?self.config.breaker_cooldown,
                        "session auth circuit breaker opened: handshakes needing the app are refused until a probe succeeds"
                    );
                }
                tracing::warn!(%reason, "session lookup failed");
                Err(SessionError::Unavailable { reason })
            }
        }
    }

    /// `GET url` with the forwarded headers, read and classified.
    async fn call(&self, headers: HeaderMap) -> Result<Answer, Failure> {
        let url = confab_config::redact_url(self.url.as_str());
        let request = self.client.get(self.url.clone()).headers(headers).send();
        let read = async {
            let response = request.await.map_err(|e| {
                let what = if e.is_timeout() {
                    "timeout"
                } else {
                    "unreachable"
                };
                (what, format!("GET {url}: {}", error_chain(&e)))
            })?;
            let status = response.status();
            match status {
                StatusCode::OK => {}
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Ok(None),
                s if s.is_redirection() => {
                    return Err((
                        "redirect",
                        format!(
                            "GET {url} answered {s} (redirects are not followed; set auth.session.url to the endpoint itself)"
                        ),
                    ));
                }
                s if s.is_server_error() => {
                    return Err(("status_5xx", format!("GET {url} answered {s}")));
                }
                s => {
                    let hint = if s == StatusCode::TOO_MANY_REQUESTS {
                        " (rate-limited: raise the app's limit for this endpoint or trust Confab's X-Forwarded-For)"
                    } else {
                        " (check auth.session.url)"
                    };
                    return Err(("status_4xx", format!("GET {url} answered {s}{hint}")));
                }
            }
            read_capped(response, self.config.max_response_bytes)
                .await
                .map(Some)
                .map_err(|e| ("bad_answer", format!("GET {url}: {e}")))
        };
        let body = match tokio::time::timeout(self.config.timeout, read).await {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => return Ok(Answer::NoSession),
            Ok(Err(failure)) => return Err(failure),
            Err(_) => {
                return Err((
                    "timeout",
                    format!(
                        "GET {url}: no answer within {} (auth.session.timeout)",
                        confab_config::duration::format(self.config.timeout)
                    ),
                ));
            }
        };
        answer::parse(self.config.preset, &body, unix_now()).map_err(|e| {
            (
                "bad_answer",
                format!(
                    "GET {url}: {e} (auth.session.preset is {:?})",
                    self.config.preset
                ),
            )
        })
    }
}

/// The body, refused beyond `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!(
            "the answer is over {limit} bytes (auth.session.max_response_bytes)"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "the answer is over {limit} bytes (auth.session.max_response_bytes)"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
