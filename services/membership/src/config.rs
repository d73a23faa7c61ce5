//! [`MembershipConfig`]: defaults, then a TOML file (`CONFAB_CONFIG` or an
//! explicit path), then `CONFAB_*` environment variables (`__` separates
//! sections: `CONFAB_NATS__URL`, `CONFAB_AUTH__HS256_SECRET`). Validated at
//! start with messages naming the key to fix.
//!
//! ```toml
//! listen = "0.0.0.0:3100"
//! database_url = "postgres://confab@db/confab"
//! service_token = "…at least 32 characters…"
//!
//! [nats]                      # absent: embedded mode (SQL log, in-process bus)
//! url = "nats://nats:4222"
//!
//! [auth]                      # absent: JWT callers are refused
//! hs256_secret = "…"
//! ```
//!
//! Only the keys above are taken from the environment, so variables meant
//! for other Confab services (`CONFAB_ENGINE__…`) are ignored rather than
//! refused. `CONFAB_SERVICE_TOKEN` is read verbatim (never parsed as a
//! number).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use confab_auth::AuthConfig;
use confab_bus::NatsConfig;
use confab_telemetry::LogFormat;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::api_http::HttpSettings;
use crate::service::ServiceSettings;

/// Environment variable naming a config file.
pub const CONFIG_FILE_ENV: &str = "CONFAB_CONFIG";

/// Environment variable holding the service token, read verbatim.
pub const SERVICE_TOKEN_ENV: &str = "CONFAB_SERVICE_TOKEN";

/// Shortest service token accepted.
pub const MIN_SERVICE_TOKEN_LEN: usize = 32;

/// Top-level keys read from `CONFAB_*` variables.
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "nats",
    "auth",
    "log",
    "max_body_bytes",
    "read_your_writes_ms",
    "shutdown_grace_ms",
];

/// The membership service's configuration.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// HTTP API address; port 0 picks a free port. Default `127.0.0.1:3100`.
    pub listen: SocketAddr,
    /// Projections database (and, in embedded mode, the event log):
    /// `sqlite://file.db?mode=rwc`, `sqlite::memory:` or `postgres://…`.
    /// Default `sqlite://confab-membership.db?mode=rwc`.
    pub database_url: String,
    /// NATS (JetStream event log, NATS bus, NATS API). Absent: embedded
    /// mode, for a single process.
    pub nats: Option<NatsConfig>,
    /// The credential of app backends and Confab services (`Authorization:
    /// Bearer …`), at least [`MIN_SERVICE_TOKEN_LEN`] characters. Required
    /// with NATS.
    pub service_token: Option<String>,
    /// JWT verification for user callers of the HTTP API. Absent: users
    /// cannot call it.
    pub auth: Option<AuthConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Largest HTTP request body, bytes. Default 256 KiB.
    pub max_body_bytes: usize,
    /// How long a command waits for the projections (read-your-writes),
    /// ms. Default 5000.
    pub read_your_writes_ms: u64,
    /// How long shutdown waits for requests in flight, ms. Default 10 000.
    pub shutdown_grace_ms: u64,
    /// How long a gateway's presence report lives, ms: a gateway silent
    /// this long (plus the sweep interval) has its users marked offline.
    /// Default 15 000 (3 default gateway heartbeats).
    pub presence_ttl_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            database_url: "sqlite://confab-membership.db?mode=rwc".into(),
            nats: None,
            service_token: None,
            auth: None,
            log: LogConfig::default(),
            max_body_bytes: HttpSettings::default().max_body_bytes,
            read_your_writes_ms: 5000,
            shutdown_grace_ms: 10_000,
            presence_ttl_ms: 15_000,
        }
    }
}

impl std::fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("nats", &self.nats)
            .field(
                "service_token",
                &self.service_token.as_ref().map(|_| "[redacted]"),
            )
            .field("auth", &self.auth)
            .field("log", &self.log)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("read_your_writes_ms", &self.read_your_writes_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("presence_ttl_ms", &self.presence_ttl_ms)
            .finish()
    }
}

/// Logging settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read or parsed.
    #[error("configuration: {0}")]
    Load(String),
    /// A value is out of range or inconsistent.
    #[error("configuration: {field}: {problem}")]
    Invalid {
        /// The offending key.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl MembershipConfig {
    /// Loads defaults, then `file` (or the file named by `CONFAB_CONFIG`),
    /// then `CONFAB_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        let env_file = std::env::var_os(CONFIG_FILE_ENV);
        if let Some(path) = file.map(Path::to_path_buf).or(env_file.map(Into::into)) {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("CONFAB_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ENV_KEYS
                .iter()
                .any(|k| key == *k || key.starts_with(&format!("{k}.")))
        }));
        let mut cfg: MembershipConfig = fig
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        if let Ok(token) = std::env::var(SERVICE_TOKEN_ENV) {
            cfg.service_token = Some(token);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        let url = self.database_url.trim();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database_url",
                format!(
                    "{:?} is not a sqlite: or postgres:// URL (e.g. sqlite://confab-membership.db?mode=rwc)",
                    redact_url(url)
                ),
            );
        }
        if let Some(token) = &self.service_token
            && token.len() < MIN_SERVICE_TOKEN_LEN
        {
            return invalid(
                "service_token",
                format!(
                    "is {} characters; use at least {MIN_SERVICE_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                    token.len()
                ),
            );
        }
        if let Some(nats) = &self.nats {
            nats.validate().map_err(|e| ConfigError::Invalid {
                field: "nats",
                problem: e.to_string(),
            })?;
            if self.service_token.is_none() {
                return invalid(
                    "service_token",
                    "is required with [nats]: it authenticates the NATS API's callers (CONFAB_SERVICE_TOKEN)"
                        .into(),
                );
            }
        }
        if self.service_token.is_none() && self.auth.is_none() {
            return invalid(
                "service_token",
                "set service_token (CONFAB_SERVICE_TOKEN) or [auth]: otherwise nobody can call the API"
                    .into(),
            );
        }
        if let Some(auth) = &self.auth {
            auth.validate().map_err(|e| ConfigError::Invalid {
                field: "auth",
                problem: e.to_string(),
            })?;
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return invalid("max_body_bytes", "must be between 1 KiB and 16 MiB".into());
        }
        if !(1..=60_000).contains(&self.read_your_writes_ms) {
            return invalid("read_your_writes_ms", "must be between 1 and 60000".into());
        }
        if !(100..=600_000).contains(&self.presence_ttl_ms) {
            return invalid("presence_ttl_ms", "must be between 100 and 600000".into());
        }
        Ok(())
    }

    /// The service settings this configuration describes.
    pub fn service_settings(&self) -> ServiceSettings {
        ServiceSettings {
            read_your_writes: Duration::from_millis(self.read_your_writes_ms),
            ..ServiceSettings::default()
        }
    }

    /// The HTTP settings this configuration describes.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// Hides a password in a URL (`postgres://u:secret@h/db` → `postgres://u:***@h/db`).
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn file_layering_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:0\"\nservice_token = \"{TOKEN}\"\n[nats]\nurl = \"nats://127.0.0.1:4999\"\n"
            ),
        )
        .unwrap();
        let cfg = MembershipConfig::load(Some(&file)).unwrap();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.nats.as_ref().unwrap().url, "nats://127.0.0.1:4999");
        assert!(!format!("{cfg:?}").contains(TOKEN));

        std::fs::write(&file, "[nats]\nurl = \"nats://x:4222\"\n").unwrap();
        let err = MembershipConfig::load(Some(&file)).unwrap_err();
        assert!(err.to_string().contains("service_token"), "{err}");

        std::fs::write(&file, format!("service_token = \"{TOKEN}\"\nlistn = 1\n")).unwrap();
        let err = MembershipConfig::load(Some(&file)).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");

        std::fs::write(&file, "service_token = \"short\"\n").unwrap();
        let err = MembershipConfig::load(Some(&file)).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");

        std::fs::write(
            &file,
            format!("service_token = \"{TOKEN}\"\ndatabase_url = \"mysql://x\"\n"),
        )
        .unwrap();
        let err = MembershipConfig::load(Some(&file)).unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");

        let missing = dir.path().join("nope.toml");
        assert!(MembershipConfig::load(Some(&missing)).is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
