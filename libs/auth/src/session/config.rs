//! [`SessionConfig`]: the `[auth.session]` section.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::extract::is_cookie_name_byte;

/// An unusable `auth.session` value: the key and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.session.{key}: {reason}")]
pub struct SessionConfigError {
    /// The key under `auth.session`.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub reason: String,
}

/// The cookie names better-auth uses for its session token (plain, and
/// with the `__Secure-` prefix it adds on https).
pub const BETTER_AUTH_COOKIES: &[&str] = &[
    "better-auth.session_token",
    "__Secure-better-auth.session_token",
];

/// Largest `max_response_bytes` accepted (1 MiB).
const MAX_RESPONSE_LIMIT: usize = 1024 * 1024;

/// How the session endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// better-auth's `GET /api/auth/get-session`: `200 {session: {id,
    /// userId, expiresAt, ...}, user: {id, ...}}` or `200 null`.
    #[default]
    BetterAuth,
    /// Confab's own contract: `200 {"userId": "...", "expiresAt": ...,
    /// "rooms": [...]}` (`expiresAt` an RFC 3339 string or Unix seconds,
    /// `rooms` optional) or `200 null`; 401/403 also mean "not signed in".
    Generic,
}

/// Session auth ("connect hook"): on a Socket.IO CONNECT without a JWT,
/// the gateway asks the app who the user is by calling `url` with an
/// allow-list of the handshake's headers. Off while `url` is unset.
///
/// ```toml
/// [auth.session]
/// url = "http://app.internal:3000/api/auth/get-session"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// The app's session endpoint (`http://` or `https://`), called with
    /// `GET`. `None`: session auth is off.
    pub url: Option<String>,
    /// How to read the answer: `better-auth` or `generic`.
    pub preset: Preset,
    /// The cookies forwarded to `url` (all others are dropped). A list, or
    /// a comma-separated string in the environment.
    #[serde(deserialize_with = "deserialize_names")]
    pub cookies: Vec<String>,
    /// Longest wait for the app's answer.
    #[serde(with = "confab_config::duration")]
    pub timeout: Duration,
    /// How long a valid session is trusted before the app is asked again
    /// (never past the session's own expiry); also the longest a revoked
    /// session's sockets stay connected. At least 1 s.
    #[serde(with = "confab_config::duration")]
    pub cache_ttl: Duration,
    /// How long "not signed in" answers are remembered.
    #[serde(with = "confab_config::duration")]
    pub negative_ttl: Duration,
    /// Most sessions remembered at once.
    pub cache_capacity: usize,
    /// Largest answer read from the app, in bytes.
    pub max_response_bytes: usize,
    /// Consecutive failures (unreachable, timeout, 5xx) that open the
    /// circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses at once before one probe call.
    #[serde(with = "confab_config::duration")]
    pub breaker_cooldown: Duration,
    /// Whether the handshake's own `X-Forwarded-For` is kept (the client
    /// address appended to it). Only when a proxy you trust sets it;
    /// otherwise the app sees the peer address alone.
    pub trust_forwarded_for: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            url: None,
            preset: Preset::BetterAuth,
            cookies: BETTER_AUTH_COOKIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            cache_capacity: 10_000,
            max_response_bytes: 64 * 1024,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(10),
            trust_forwarded_for: false,
        }
    }
}

impl SessionConfig {
    /// Whether session auth is on.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Checks the section; messages name the key.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        check_url(url)?;
        let invalid = |key: &'static str, reason: String| SessionConfigError { key, reason };
        if self.cookies.is_empty() {
            return Err(invalid(
                "cookies",
                "no cookie is forwarded; list the app's session cookies, e.g. [\"better-auth.session_token\"]".into(),
            ));
        }
        if let Some(bad) = self
            .cookies
            .iter()
            .find(|c| c.is_empty() || !c.bytes().all(is_cookie_name_byte))
        {
            return Err(invalid(
                "cookies",
                format!("{bad:?} is not a valid cookie name"),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(30) {
            return Err(invalid("timeout", "must be between 1ms and 30s".into()));
        }
        if self.cache_ttl < Duration::from_secs(1) || self.cache_ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "cache_ttl",
                "must be between 1s and 1h (it also bounds how long a revoked session stays connected)".into(),
            ));
        }
        if self.negative_ttl > Duration::from_secs(60) {
            return Err(invalid("negative_ttl", "must be at most 1m".into()));
        }
        if self.cache_capacity == 0 {
            return Err(invalid("cache_capacity", "must be at least 1".into()));
        }
        if self.max_response_bytes < 64 || self.max_response_bytes > MAX_RESPONSE_LIMIT {
            return Err(invalid(
                "max_response_bytes",
                format!("must be between 64 and {MAX_RESPONSE_LIMIT}"),
            ));
        }
        if self.breaker_threshold == 0 {
            return Err(invalid("breaker_threshold", "must be at least 1".into()));
        }
        Ok(())
    }
}

fn check_url(url: &str) -> Result<(), SessionConfigError> {
    let invalid = |reason: String| SessionConfigError {
        key: "url",
        reason: format!(
            "{:?} is not usable: {reason}",
            confab_config::redact_url(url)
        ),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not supported; use http or https",
            parsed.scheme()
        )));
    }
    if parsed.host().is_none() {
        return Err(invalid("it has no host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not forwarded; remove them".into(),
        ));
    }
    Ok(())
}

fn deserialize_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Text(String),
    }
    let names = match Names::deserialize(d).map_err(|_| {
        de::Error::custom("expected a list of cookie names or a comma-separated string")
    })? {
        Names::List(list) => list,
        Names::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_parsing() {
        let cfg: SessionConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(cfg, SessionConfig::default());
        assert!(!cfg.enabled());
        let cfg: SessionConfig = serde_json::from_value(json!({
            "url": "http://127.0.0.1:3000/api/auth/get-session",
            "cookies": "better-auth.session_token, better-auth.session_data",
            "preset": "generic",
            "cache_ttl": "10s",
        }))
        .unwrap();
        assert_eq!(
            cfg.cookies,
            vec!["better-auth.session_token", "better-auth.session_data"]
        );
        assert_eq!(cfg.preset, Preset::Generic);
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_key() {
        let base = SessionConfig {
            url: Some("http://127.0.0.1:3000/s".into()),
            ..SessionConfig::default()
        };
        for (cfg, key) in [
            (
                SessionConfig {
                    url: Some("ftp://x/y".into()),
                    ..base.clone()
                },
                "url",
            ),
            (
                SessionConfig {
                    url: Some("http://u:p@x/y".into()),
                    ..base.clone()
                },
                "url",
            ),
            (
                SessionConfig {
                    cookies: vec!["a b".into()],
                    ..base.clone()
                },
                "cookies",
            ),
            (
                SessionConfig {
                    cache_ttl: Duration::ZERO,
                    ..base.clone()
                },
                "cache_ttl",
            ),
            (
                SessionConfig {
                    breaker_threshold: 0,
                    ..base.clone()
                },
                "breaker_threshold",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("auth.session.{key}")), "{err}");
        }
        let err = SessionConfig {
            url: Some("http://u:secretpw@x/y".into()),
            ..base
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(!err.contains("secretpw"), "{err}");
    }
}
