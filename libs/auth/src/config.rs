//! [`AuthConfig`]: what the gateway accepts, and its validation.

use std::fmt;
use std::time::Duration;

use confab_config::Secret;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::extract::is_cookie_name_byte;
use crate::hmac::{DEV_SECRET, MIN_SECRET_LEN};
use crate::session::SessionConfig;

/// Largest clock-skew allowance accepted by [`AuthConfig::validate`] (ten
/// minutes). Anything larger is almost certainly a unit mistake.
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// Every algorithm name Confab understands, as written in a JWT header and in
/// `auth.algorithms`. `none` is deliberately absent.
pub(crate) const KNOWN_ALGORITHMS: &[(&str, Algorithm)] = &[
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The canonical name of an algorithm (`"RS256"`, `"EdDSA"`, ...).
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    KNOWN_ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("unknown", |(name, _)| name)
}

/// Looks an algorithm up by its exact, case-sensitive JOSE name.
pub(crate) fn alg_from_header_name(name: &str) -> Option<Algorithm> {
    KNOWN_ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

/// How the gateway verifies tokens.
///
/// Deserializes from a config file section with every field optional
/// (missing fields take their [`Default`] values), for example in TOML:
///
/// ```toml
/// [auth]
/// algorithms = ["RS256", "ES256"]      # or the string "RS256,ES256"
/// jwks_url = "https://id.example.com/.well-known/jwks.json"
/// issuer = "https://id.example.com/"
/// audience = "confab"
/// leeway = "30s"
/// jwks_min_refetch = "30s"
/// jwks_max_age = "15m"
/// cookie_name = "session_jwt"
/// ```
///
/// Durations (`leeway`, `jwks_min_refetch`, `jwks_max_age`) are written in
/// Confab's one duration grammar ([`confab_config::duration`]): `"500ms"`,
/// `"30s"`, `"5m"`, `"1h"`, `"1m30s"`; a bare number is refused. Algorithm
/// names are matched case-insensitively in config (`"rs256"` works) but
/// exactly in token headers.
///
/// The `Debug` output never shows `hs256_secret` (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for the HMAC algorithms (HS256/HS384/HS512), used as
    /// its raw UTF-8 bytes (not base64-decoded). At least
    /// [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes. Required when an
    /// HS algorithm is allowed.
    pub hs256_secret: Option<Secret>,
    /// URL of the JSON Web Key Set that publishes the public keys for the
    /// asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA). Required when
    /// one of them is allowed. `http://` or `https://`.
    pub jwks_url: Option<String>,
    /// The allow-list of token algorithms. A token whose header names any
    /// other algorithm (or `none`) is refused before its signature is looked
    /// at. Default: `["HS256"]`.
    #[serde(deserialize_with = "deserialize_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Required `iss` claim, compared exactly. `None`: not checked.
    pub issuer: Option<String>,
    /// Required `aud` claim (a string, or an array that must contain it).
    /// `None`: not checked.
    pub audience: Option<String>,
    /// Clock-skew allowance applied to `exp` and `nbf`, counted in whole
    /// seconds (a fraction is dropped). Default: 30 s; at most
    /// [`MAX_LEEWAY`].
    #[serde(with = "confab_config::duration")]
    pub leeway: Duration,
    /// Least time between two fetches of the JWKS, whatever triggers them
    /// (unknown `kid`, age, failures). Bounds the load a flood of bogus key
    /// ids can put on the JWKS endpoint. `0` removes the bound (for tests;
    /// concurrent fetches are still shared). Default: 30 s.
    #[serde(with = "confab_config::duration")]
    pub jwks_min_refetch: Duration,
    /// Age after which the cached JWKS is refreshed in the background (keys
    /// removed upstream then stop verifying). The stale set keeps being used
    /// while the refresh runs or if it fails. `0` disables age-based
    /// refresh. Default: 15 min.
    #[serde(with = "confab_config::duration")]
    pub jwks_max_age: Duration,
    /// Name of a cookie that may carry the token (the last source tried).
    /// `None`: cookies are ignored.
    pub cookie_name: Option<String>,
    /// Session auth: the app tells who the user is from its session
    /// cookie (`[auth.session]`, see [`SessionConfig`]). With a session URL
    /// and neither `hs256_secret` nor `jwks_url`, JWTs are off.
    pub session: SessionConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks_url: None,
            algorithms: vec![Algorithm::HS256],
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            jwks_min_refetch: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(15 * 60),
            cookie_name: None,
            session: SessionConfig::default(),
        }
    }
}

/// Why an [`AuthConfig`] cannot be used. The messages name the config key
/// to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `algorithms` is empty.
    #[error(
        "auth.algorithms is empty; list the token algorithms to accept, e.g. [\"HS256\"] or [\"RS256\", \"ES256\"]"
    )]
    NoAlgorithms,
    /// An HMAC algorithm is allowed but there is no secret.
    #[error("{alg} is in auth.algorithms but auth.hs256_secret is not set")]
    MissingSecret {
        /// The HMAC algorithm that needs the secret.
        alg: &'static str,
    },
    /// The HMAC secret is too short.
    #[error(
        "auth.hs256_secret is {len} bytes; HMAC secrets must be at least {MIN_SECRET_LEN} bytes (generate one with `openssl rand -hex 32`)"
    )]
    SecretTooShort {
        /// Length of the configured secret, in bytes.
        len: usize,
    },
    /// An asymmetric algorithm is allowed but there is no JWKS URL.
    #[error(
        "{alg} is in auth.algorithms but auth.jwks_url is not set; public keys are only loaded from a JWKS"
    )]
    MissingJwksUrl {
        /// The asymmetric algorithm that needs the key set.
        alg: &'static str,
    },
    /// `jwks_url` is not an absolute http(s) URL.
    #[error("auth.jwks_url {url:?} is not usable: {reason}")]
    InvalidJwksUrl {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A string option is set to the empty string.
    #[error("auth.{field} is set but empty; remove it or give it a value")]
    EmptyValue {
        /// The config key.
        field: &'static str,
    },
    /// `cookie_name` is not a valid cookie name.
    #[error(
        "auth.cookie_name {name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
    )]
    InvalidCookieName {
        /// The configured name.
        name: String,
    },
    /// `leeway` is implausibly large.
    #[error(
        "auth.leeway is {}; the clock-skew allowance is at most {}",
        confab_config::duration::format(*leeway),
        confab_config::duration::format(MAX_LEEWAY)
    )]
    LeewayTooLarge {
        /// The configured leeway.
        leeway: Duration,
    },
    /// An `auth.session` key has an unusable value.
    #[error("auth.session.{key}: {reason}")]
    InvalidSession {
        /// The key under `auth.session`.
        key: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The HTTP client for the JWKS could not be built.
    #[error("could not build the JWKS HTTP client: {0}")]
    HttpClient(String),
}

impl AuthConfig {
    /// The all-in-one's development configuration: HS256 with
    /// [`DEV_SECRET`]. **Never use it in production**: anyone can mint
    /// tokens for it.
    pub fn dev() -> Self {
        Self {
            hs256_secret: Some(DEV_SECRET.into()),
            ..Self::default()
        }
    }

    /// Checks that the configuration is coherent: at least one algorithm,
    /// a long-enough secret for HMAC algorithms, a JWKS URL for asymmetric
    /// ones, no empty strings, a sane leeway.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.session
            .validate()
            .map_err(|e| ConfigError::InvalidSession {
                key: e.key,
                reason: e.reason,
            })?;
        if !self.jwt_enabled() {
            return Ok(());
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms);
        }
        for &alg in &self.algorithms {
            if alg.family() == AlgorithmFamily::Hmac {
                if self.hs256_secret.is_none() {
                    return Err(ConfigError::MissingSecret { alg: alg_name(alg) });
                }
            } else if self.jwks_url.is_none() {
                return Err(ConfigError::MissingJwksUrl { alg: alg_name(alg) });
            }
        }
        if let Some(secret) = &self.hs256_secret
            && secret.len() < MIN_SECRET_LEN
        {
            return Err(ConfigError::SecretTooShort { len: secret.len() });
        }
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url)?;
        }
        for (field, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("cookie_name", &self.cookie_name),
            ("jwks_url", &self.jwks_url),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::EmptyValue { field });
            }
        }
        if let Some(name) = &self.cookie_name
            && !name.bytes().all(is_cookie_name_byte)
        {
            return Err(ConfigError::InvalidCookieName { name: name.clone() });
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge {
                leeway: self.leeway,
            });
        }
        Ok(())
    }

    /// Whether JWTs are accepted: always, unless session auth is on and
    /// neither `hs256_secret` nor `jwks_url` is set (session auth only).
    pub fn jwt_enabled(&self) -> bool {
        !self.session.enabled() || self.hs256_secret.is_some() || self.jwks_url.is_some()
    }

    /// Whether any allowed algorithm needs the JWKS.
    pub(crate) fn uses_jwks(&self) -> bool {
        self.algorithms
            .iter()
            .any(|a| a.family() != AlgorithmFamily::Hmac)
    }

    /// Whether any allowed algorithm needs the shared secret.
    pub(crate) fn uses_secret(&self) -> bool {
        self.algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac)
    }
}

fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidJwksUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not supported; use http or https",
            parsed.scheme()
        )));
    }
    if parsed.host().is_none() {
        return Err(invalid("it has no host".to_owned()));
    }
    Ok(())
}

/// Parses one algorithm name from config (case-insensitive).
pub(crate) fn parse_config_algorithm(name: &str) -> Result<Algorithm, String> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" (unsigned tokens) is never accepted".to_owned());
    }
    KNOWN_ALGORITHMS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let known: Vec<&str> = KNOWN_ALGORITHMS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown JWT algorithm {name:?}; expected one of {}",
                known.join(", ")
            )
        })
}

fn deserialize_algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
    struct AlgorithmsVisitor;
    fn push_unique(out: &mut Vec<Algorithm>, alg: Algorithm) {
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    impl<'de> Visitor<'de> for AlgorithmsVisitor {
        type Value = Vec<Algorithm>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of algorithm names such as [\"HS256\", \"RS256\"] or a comma-separated string")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                push_unique(
                    &mut out,
                    parse_config_algorithm(&name).map_err(de::Error::custom)?,
                );
            }
            Ok(out)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let mut out = Vec::new();
            for name in v.split(',').filter(|n| !n.trim().is_empty()) {
                push_unique(&mut out, parse_config_algorithm(name).map_err(E::custom)?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(AlgorithmsVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hs_config() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some("x".repeat(32).into()),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn durations_use_the_shared_grammar() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1m30s", 90_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            for key in ["leeway", "jwks_min_refetch", "jwks_max_age"] {
                let cfg: AuthConfig = serde_json::from_value(json!({ key: text })).unwrap();
                let got = match key {
                    "leeway" => cfg.leeway,
                    "jwks_min_refetch" => cfg.jwks_min_refetch,
                    _ => cfg.jwks_max_age,
                };
                assert_eq!(got, Duration::from_millis(ms), "{key} = {text}");
            }
        }
        for bad in [
            json!(30),
            json!("30"),
            json!(0.5),
            json!("5x"),
            json!("-3s"),
        ] {
            let err = serde_json::from_value::<AuthConfig>(json!({ "jwks_max_age": bad }))
                .unwrap_err()
                .to_string();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
        let err = serde_json::from_value::<AuthConfig>(json!({ "leeway": 30 }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("add one, e.g. \"30ms\" or \"30s\""), "{err}");
    }

    #[test]
    fn deserializes_with_defaults() {
        let cfg: AuthConfig = serde_json::from_value(json!({
            "hs256_secret": "y".repeat(40),
            "algorithms": ["hs256", "RS256", "EdDSA", "RS256"],
            "jwks_url": "http://127.0.0.1:1/jwks",
            "jwks_min_refetch": "5s",
            "jwks_max_age": "10m",
        }))
        .unwrap();
        assert_eq!(
            cfg.algorithms,
            vec![Algorithm::HS256, Algorithm::RS256, Algorithm::EdDSA]
        );
        assert_eq!(cfg.jwks_min_refetch, Duration::from_secs(5));
        assert_eq!(cfg.jwks_max_age, Duration::from_secs(600));
        assert_eq!(cfg.leeway, Duration::from_secs(30));
        assert!(cfg.validate().is_ok());

        let cfg: AuthConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(cfg, AuthConfig::default());

        let cfg: AuthConfig =
            serde_json::from_value(json!({"algorithms": "RS256, ES256"})).unwrap();
        assert_eq!(cfg.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    }

    #[test]
    fn none_and_unknown_algorithms_are_refused_at_parse_time() {
        let err = serde_json::from_value::<AuthConfig>(json!({"algorithms": ["none"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("never accepted"), "{err}");
        let err = serde_json::from_value::<AuthConfig>(json!({"algorithms": ["XS256"]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown JWT algorithm") && err.contains("EdDSA"),
            "{err}"
        );
        let err = serde_json::from_value::<AuthConfig>(json!({"jwks_max_age": "ten"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn validate_reports_each_problem() {
        let mut cfg = AuthConfig {
            algorithms: vec![],
            ..hs_config()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::NoAlgorithms));

        cfg = AuthConfig::default();
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::MissingSecret { alg: "HS256" })
        );

        cfg = AuthConfig {
            hs256_secret: Some("short".into()),
            ..AuthConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::SecretTooShort { len: 5 }));

        cfg = AuthConfig {
            algorithms: vec![Algorithm::HS256, Algorithm::ES256],
            ..hs_config()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::MissingJwksUrl { alg: "ES256" })
        );

        cfg.jwks_url = Some("ftp://keys.example/jwks".into());
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::InvalidJwksUrl { .. })
        ));
        cfg.jwks_url = Some("not a url".into());
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::InvalidJwksUrl { .. })
        ));
        cfg.jwks_url = Some("https://keys.example/jwks".into());
        assert_eq!(cfg.validate(), Ok(()));

        cfg.issuer = Some(" ".into());
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::EmptyValue { field: "issuer" })
        );
        cfg.issuer = None;

        cfg.cookie_name = Some("my cookie".into());
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::InvalidCookieName { .. })
        ));
        cfg.cookie_name = Some("session_jwt".into());

        cfg.leeway = Duration::from_secs(30_000);
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::LeewayTooLarge {
                leeway: Duration::from_secs(30_000)
            })
        );
    }

    #[test]
    fn dev_config_is_valid_and_debug_redacts_the_secret() {
        let cfg = AuthConfig::dev();
        assert_eq!(cfg.validate(), Ok(()));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains(DEV_SECRET), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn config_error_messages_name_the_key() {
        let msg = ConfigError::MissingJwksUrl { alg: "RS256" }.to_string();
        assert!(
            msg.contains("auth.jwks_url") && msg.contains("RS256"),
            "{msg}"
        );
        let msg = ConfigError::SecretTooShort { len: 3 }.to_string();
        assert!(msg.contains("32 bytes"), "{msg}");
    }
}
