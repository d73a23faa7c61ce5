//! [`MembershipConfig`], loaded by [`confab_config::Loader`]: defaults, then
//! a TOML file (`CONFAB_CONFIG` or an explicit path), then the `CONFAB_*`
//! variables that name one of its keys (`__` separates sections:
//! `CONFAB_NATS__URL`, `CONFAB_AUTH__HS256_SECRET`). Validated at start with
//! messages naming the key to fix.
//!
//! ```toml
//! listen = "0.0.0.0:3100"
//! database_url = "postgres://confab@db/confab"
//! service_token = "…at least 32 characters…"   # better: CONFAB_SERVICE_TOKEN
//!
//! [nats]                      # absent: embedded mode (SQL log, in-process bus)
//! url = "nats://nats:4222"
//!
//! # or, without NATS: the SQL event log and the Redis bus
//! # [bus]
//! # kind = "redis"
//! # [bus.redis]
//! # url = "redis://redis:6379"
//!
//! [auth]                      # absent: JWT callers are refused
//! hs256_secret = "…"
//! ```
//!
//! Variables meant for other Confab binaries (`CONFAB_ENGINE__…`) name no
//! key here: they are ignored, with a warning at start. `CONFAB_SERVICE_TOKEN`
//! is the same key the gateway reads, and is taken as written (a token of
//! digits stays text).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use confab_auth::AuthConfig;
use confab_bus::{NatsConfig, RedisConfig};
use confab_config::{Loaded, Loader, Secret, redact_url};
use serde::{Deserialize, Serialize};

use crate::api_http::HttpSettings;
use crate::emitter::EmitterConfig;
use crate::service::{Quotas, ServiceSettings};

pub use confab_config::{ConfigError, LogConfig};

/// Shortest service token accepted (the one rule of every binary).
pub use confab_contracts::MIN_SERVICE_TOKEN_LEN;
use confab_contracts::service_token_problem;

/// The membership service's configuration.
#[derive(Clone, Serialize, Deserialize)]
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
    /// The bus on a deployment without NATS (`bus.kind = "redis"`).
    pub bus: BusSettings,
    /// The credential of app backends and Confab services (`Authorization:
    /// Bearer …`), at least [`MIN_SERVICE_TOKEN_LEN`] characters. Required
    /// with NATS. `CONFAB_SERVICE_TOKEN`, as for the gateway.
    pub service_token: Option<Secret>,
    /// JWT verification for user callers of the HTTP API. Absent: users
    /// cannot call it.
    pub auth: Option<AuthConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Largest HTTP request body, bytes. Default 256 KiB.
    pub max_body_bytes: usize,
    /// How long a command waits for the projections (read-your-writes).
    /// Default 5 s.
    #[serde(with = "confab_config::duration")]
    pub read_your_writes: Duration,
    /// How long shutdown waits for requests in flight. Default 10 s.
    #[serde(with = "confab_config::duration")]
    pub shutdown_grace: Duration,
    /// Longest a client may take to send a request's headers (slowloris);
    /// the connection is closed after it (a keep-alive connection idle
    /// this long too). Default 30 s.
    #[serde(with = "confab_config::duration")]
    pub header_read_timeout: Duration,
    /// How long a gateway's presence report lives: a gateway silent this
    /// long (plus the sweep interval) has its users marked offline.
    /// Default 15 s (3 default gateway heartbeats).
    #[serde(with = "confab_config::duration")]
    pub presence_ttl: Duration,
    /// How many workspaces and channels one user may create.
    pub quotas: Quotas,
    /// The `@socket.io/redis-emitter` bridge (off by default).
    pub emitter: EmitterConfig,
    /// `/readyz` is red while the membership projection is more than this
    /// many events behind the event log (a restarted service catching up
    /// gets no traffic until it nearly has). 0: lag never makes it red.
    /// Default 10,000.
    pub ready_max_projection_lag: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            database_url: "sqlite://confab-membership.db?mode=rwc".into(),
            nats: None,
            bus: BusSettings::default(),
            service_token: None,
            auth: None,
            log: LogConfig::default(),
            max_body_bytes: HttpSettings::default().max_body_bytes,
            read_your_writes: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            presence_ttl: Duration::from_secs(15),
            quotas: Quotas::default(),
            emitter: EmitterConfig::default(),
            ready_max_projection_lag: 10_000,
        }
    }
}

impl std::fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("nats", &self.nats)
            .field("bus", &self.bus)
            .field("service_token", &self.service_token)
            .field("auth", &self.auth)
            .field("log", &self.log)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("read_your_writes", &self.read_your_writes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("presence_ttl", &self.presence_ttl)
            .field("quotas", &self.quotas)
            .field("emitter", &self.emitter)
            .field("ready_max_projection_lag", &self.ready_max_projection_lag)
            .finish()
    }
}

/// Which bus (and event log) the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    /// NATS: stream `MEMBERSHIP`, the NATS bus and API (needs `[nats]`).
    Nats,
    /// Redis: the SQL event log, the Redis bus (`bus.redis`), presence
    /// heartbeats on a Redis topic, the endpoint table over HTTP
    /// (`/v1/rpc/{subject}`) for gateways.
    Redis,
    /// Embedded: the SQL event log and an in-process bus (one process).
    InProcess,
}

/// `[bus]`: the bus when it is not NATS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// `nats`, `redis` or `in-process`. Absent: `nats` with `[nats]`,
    /// `in-process` without.
    pub kind: Option<BusKind>,
    /// The Redis bus (read with `kind = "redis"`); the same keys as the
    /// gateways' `bus.redis`.
    pub redis: RedisConfig,
}

impl MembershipConfig {
    /// The bus the service runs on.
    pub fn bus_kind(&self) -> BusKind {
        match (self.bus.kind, &self.nats) {
            (Some(kind), _) => kind,
            (None, Some(_)) => BusKind::Nats,
            (None, None) => BusKind::InProcess,
        }
    }

    /// Loads defaults, then `file` (or the file named by `CONFAB_CONFIG`),
    /// then the `CONFAB_*` variables naming a key, and validates, as the
    /// `confab-membership` binary runs: with `[auth]`, JWT issuer and
    /// audience required and the dev secret refused beyond loopback.
    pub fn load(file: Option<&Path>) -> Result<Loaded<Self>, ConfigError> {
        let mut loader = Loader::new(file)?;
        let config = loader.load(&Self::default())?;
        config.validate()?;
        if let Some(auth) = &config.auth {
            auth.refuse_dev_secret_beyond_loopback(&[("listen", config.listen)])?;
            auth.require_deployment_scope()?;
        }
        Ok(Loaded {
            config,
            ignored: loader.ignored(),
        })
    }

    /// The service token as the authenticator takes it.
    pub fn service_token_text(&self) -> Option<String> {
        self.service_token.as_ref().map(|t| t.expose().to_owned())
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| Err(ConfigError::invalid(key, problem));
        if self.header_read_timeout < Duration::from_millis(100) {
            return invalid("header_read_timeout", "must be at least 100ms".into());
        }
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
        if let Some(problem) = self
            .service_token
            .as_ref()
            .and_then(|t| service_token_problem(t.expose()))
        {
            return invalid("service_token", problem);
        }
        if let Some(nats) = &self.nats {
            nats.validate()
                .map_err(|e| ConfigError::invalid("nats", e.to_string()))?;
            if self.service_token.is_none() {
                return invalid(
                    "service_token",
                    "is required with [nats]: it authenticates the NATS API's callers (CONFAB_SERVICE_TOKEN)"
                        .into(),
                );
            }
        }
        match (self.bus.kind, &self.nats) {
            (Some(BusKind::Nats), None) => {
                return invalid(
                    "bus.kind",
                    "is \"nats\" but [nats] is not configured".into(),
                );
            }
            (Some(BusKind::Redis | BusKind::InProcess), Some(_)) => {
                return invalid(
                    "bus.kind",
                    "is not \"nats\" but [nats] is configured: remove one of them".into(),
                );
            }
            _ => {}
        }
        if self.bus_kind() == BusKind::Redis {
            self.bus
                .redis
                .validate()
                .map_err(|e| ConfigError::invalid("bus.redis", e.to_string()))?;
            if self.service_token.is_none() {
                return invalid(
                    "service_token",
                    "is required with bus.kind = \"redis\": it authenticates the gateways' calls (CONFAB_SERVICE_TOKEN)"
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
            auth.validate()
                .map_err(|e| ConfigError::invalid("auth", e.to_string()))?;
        }
        if let Err((key, problem)) = self.emitter.validate() {
            return invalid(key, problem);
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return invalid("max_body_bytes", "must be between 1 KiB and 16 MiB".into());
        }
        let ms = Duration::from_millis;
        if !(ms(1)..=ms(60_000)).contains(&self.read_your_writes) {
            return invalid("read_your_writes", "must be between 1ms and 60s".into());
        }
        if !(ms(100)..=ms(600_000)).contains(&self.presence_ttl) {
            return invalid("presence_ttl", "must be between 100ms and 10m".into());
        }
        if self.quotas.workspaces_per_user == 0 {
            return invalid("quotas.workspaces_per_user", "must be at least 1".into());
        }
        if self.quotas.channels_per_user == 0 {
            return invalid("quotas.channels_per_user", "must be at least 1".into());
        }
        Ok(())
    }

    /// The service settings this configuration describes.
    pub fn service_settings(&self) -> ServiceSettings {
        ServiceSettings {
            read_your_writes: self.read_your_writes,
            quotas: self.quotas,
            ..ServiceSettings::default()
        }
    }

    /// The HTTP settings this configuration describes.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_body_bytes: self.max_body_bytes,
            ready_max_projection_lag: self.ready_max_projection_lag,
        }
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
        let cfg = MembershipConfig::load(Some(&file)).unwrap().config;
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
    fn jwt_auth_needs_issuer_and_audience_and_no_public_dev_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        let load = |listen: &str, secret: &str, scope: &str| {
            std::fs::write(
                &file,
                format!(
                    "listen = \"{listen}\"\nservice_token = \"{TOKEN}\"\n[auth]\nhs256_secret = \"{secret}\"\n{scope}"
                ),
            )
            .unwrap();
            MembershipConfig::load(Some(&file))
        };
        let own = "fedcba9876543210fedcba9876543210";
        let both = "issuer = \"https://id.example\"\naudience = \"confab\"\n";
        let err = load("0.0.0.0:3100", own, "").unwrap_err();
        assert_eq!(err.key(), Some("auth.issuer"), "{err}");
        assert!(err.to_string().contains("CONFAB_AUTH__ISSUER"), "{err}");
        let err = load("0.0.0.0:3100", own, "issuer = \"https://id.example\"\n").unwrap_err();
        assert_eq!(err.key(), Some("auth.audience"), "{err}");
        assert!(load("0.0.0.0:3100", own, both).is_ok());

        let err = load("0.0.0.0:3100", confab_auth::DEV_SECRET, both).unwrap_err();
        assert_eq!(err.key(), Some("listen"), "{err}");
        assert!(err.to_string().contains("dev secret"), "{err}");
        assert!(load("127.0.0.1:3100", confab_auth::DEV_SECRET, both).is_ok());
    }

    #[test]
    fn the_deploy_config_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let file = root.join("deploy/config/membership.toml");
        let mut loader = Loader::with_vars(Some(&file), []).unwrap();
        let mut cfg = loader.load(&MembershipConfig::default()).unwrap();
        // Secrets come from the environment in production.
        cfg.service_token = Some(TOKEN.into());
        cfg.validate().unwrap();
        assert_eq!(cfg.nats.as_ref().unwrap().replicas, 3);
        assert_eq!(cfg.presence_ttl, Duration::from_secs(15));
    }

    #[test]
    fn a_redis_bus_is_read_from_the_gateways_keys() {
        let vars = [
            ("CONFAB_SERVICE_TOKEN", TOKEN),
            ("CONFAB_BUS__KIND", "redis"),
            ("CONFAB_BUS__REDIS__URL", "redis://:pw@r:6380"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut loader = Loader::with_vars(None, vars).unwrap();
        let cfg = loader.load(&MembershipConfig::default()).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.bus_kind(), BusKind::Redis);
        assert_eq!(cfg.bus.redis.url, "redis://:pw@r:6380");
        assert!(loader.ignored().is_empty());
        assert!(!format!("{cfg:?}").contains("pw@"));
        let mut both = cfg.clone();
        both.nats = Some(NatsConfig::default());
        assert_eq!(both.validate().unwrap_err().key(), Some("bus.kind"));
        let mut no_token = cfg;
        no_token.service_token = None;
        no_token.auth = None;
        assert_eq!(
            no_token.validate().unwrap_err().key(),
            Some("service_token")
        );
        assert_eq!(MembershipConfig::default().bus_kind(), BusKind::InProcess);
    }

    #[test]
    fn urls_are_redacted() {
        let cfg = MembershipConfig {
            database_url: "postgres://u:pw@h:5432/db".into(),
            ..MembershipConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(shown.contains("\"postgres://***@h:5432/db\""), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(
            format!("{:?}", MembershipConfig::default()).contains("sqlite://confab-membership.db")
        );
    }

    #[test]
    fn environment_keys_are_the_gateways_names() {
        let vars = [
            ("CONFAB_SERVICE_TOKEN", "01234567890123456789012345678901"),
            ("CONFAB_NATS__URL", "nats://n:4222"),
            ("CONFAB_PRESENCE_TTL", "20s"),
            ("CONFAB_ENGINE__PING_INTERVAL", "5s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut loader = Loader::with_vars(None, vars).unwrap();
        let cfg = loader.load(&MembershipConfig::default()).unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.service_token_text().as_deref(),
            Some("01234567890123456789012345678901"),
            "a token of digits is read as written"
        );
        assert_eq!(cfg.nats.unwrap().url, "nats://n:4222");
        assert_eq!(cfg.presence_ttl, Duration::from_secs(20));
        assert_eq!(loader.ignored(), ["CONFAB_ENGINE__PING_INTERVAL"]);
    }
}
