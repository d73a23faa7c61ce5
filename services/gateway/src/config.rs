//! Typed, layered configuration: defaults, then an optional TOML file, then
//! `CONFAB_*` environment variables (`__` separates sections, e.g.
//! `CONFAB_AUTH__HS256_SECRET`). Validated at start with clear errors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use confab_auth::AuthConfig;
use confab_telemetry::LogFormat;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;

/// Environment variable naming a config file.
pub const CONFIG_FILE_ENV: &str = "CONFAB_CONFIG";

/// The gateway's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Path of the Socket.IO endpoint.
    pub path: String,
    /// Protocol timings and limits.
    pub engine: EngineSettings,
    /// Token verification.
    pub auth: AuthConfig,
    /// Browser origins allowed to open sockets.
    pub cors: CorsConfig,
    /// Logging.
    pub log: LogConfig,
    /// How long shutdown waits for sockets to close, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// On shutdown, sockets are closed at random moments within this many
    /// milliseconds, so that their clients reconnect (elsewhere) spread out
    /// instead of all at once. Must be below `shutdown_grace_ms`.
    pub shutdown_spread_ms: u64,
    /// Where room events travel.
    pub bus: BusSettings,
    /// Who answers membership questions.
    pub membership: MembershipSettings,
    /// Chat message limits.
    pub messages: MessageSettings,
    /// Presence heartbeats.
    pub presence: PresenceSettings,
    /// Connection-state recovery.
    pub recovery: RecoverySettings,
}

/// Connection-state recovery: a client that reconnects within the window,
/// to any gateway, gets its session back and every durable event it missed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoverySettings {
    /// Offer recovery (offsets on durable events, `pid` in CONNECT replies).
    pub enabled: bool,
    /// How long after a disconnect a session can be recovered, ms. Default
    /// 120 000 (two minutes); at most `bus.nats.rooms_max_age`.
    pub window_ms: u64,
    /// Most events one recovery replays; a client that missed more gets a
    /// fresh session and `recovery:failed` (`too_many_missed`).
    pub max_replay_events: usize,
    /// Most replays this gateway reads through a JetStream consumer at once
    /// (later ones wait), so the cluster never holds more than
    /// `gateways x max_concurrent_replays` recovery consumers. Replays
    /// normally use batched direct gets and no consumer; a consumer serves
    /// them on nats-server < 2.11, a replicated stream `ROOMS`, with
    /// `bus.nats.direct_replay = false`, or when a batch came back
    /// incomplete (`confab_gateway_replays_total{path}` counts both).
    pub max_concurrent_replays: usize,
    /// How often the gateway records that it is alive (NATS KV), ms: the
    /// sessions of a gateway that died count from its last record.
    pub heartbeat_ms: u64,
    /// How long a session record is kept after its last write, ms (default
    /// 24 h). The records of live sockets are rewritten when half as old.
    pub session_max_age_ms: u64,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ms: 120_000,
            max_replay_events: 10_000,
            max_concurrent_replays: 16,
            heartbeat_ms: 5_000,
            session_max_age_ms: 24 * 3600 * 1000,
        }
    }
}

/// Presence heartbeats to the tracker (membership service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// How often the gateway reports its local presence state, ms (also at
    /// once on a change). Default 5000; keep it well below the tracker's
    /// `presence_ttl_ms` (default 15 000, 3 heartbeats).
    pub heartbeat_ms: u64,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 5_000,
        }
    }
}

/// Limits on `message:send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageSettings {
    /// Largest message body, bytes of UTF-8.
    pub max_body_bytes: usize,
    /// Sustained sends per second per connection.
    pub conn_rate_per_sec: f64,
    /// Sends a connection may burst.
    pub conn_burst: u32,
    /// Sustained sends per second per user (all the user's sockets on this
    /// gateway).
    pub user_rate_per_sec: f64,
    /// Sends a user may burst.
    pub user_burst: u32,
}

impl Default for MessageSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024,
            conn_rate_per_sec: 5.0,
            conn_burst: 20,
            user_rate_per_sec: 10.0,
            user_burst: 40,
        }
    }
}

/// Which bus implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    /// NATS JetStream: what a cluster needs.
    Nats,
    /// Inside this process only (all-in-one, tests).
    InProcess,
}

/// Bus settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// `nats` (default) or `in-process`.
    pub kind: BusKind,
    /// NATS connection and stream settings (`bus.nats.url`, ...).
    pub nats: confab_bus::NatsConfig,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            kind: BusKind::Nats,
            nats: confab_bus::NatsConfig::default(),
        }
    }
}

/// Which membership authority to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipKind {
    /// The membership service over NATS request/reply (needs `bus.kind = "nats"`).
    Nats,
    /// An in-memory table (all-in-one embeds its own; tests).
    Static,
}

/// Membership settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSettings {
    /// `nats` (default) or `static`.
    pub kind: MembershipKind,
    /// The token the membership service expects from services.
    pub service_token: Option<String>,
    /// How long to wait for an answer, ms.
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for MembershipSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipSettings")
            .field("kind", &self.kind)
            .field(
                "service_token",
                &self.service_token.as_ref().map(|_| "[redacted]"),
            )
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            kind: MembershipKind::Nats,
            service_token: None,
            request_timeout_ms: 2_000,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            path: "/socket.io/".into(),
            engine: EngineSettings::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            shutdown_grace_ms: 10_000,
            shutdown_spread_ms: 5_000,
            bus: BusSettings::default(),
            membership: MembershipSettings::default(),
            messages: MessageSettings::default(),
            presence: PresenceSettings::default(),
            recovery: RecoverySettings::default(),
        }
    }
}

/// Engine.IO / Socket.IO settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Server ping interval, ms.
    pub ping_interval_ms: u64,
    /// Time allowed for the client's pong, ms.
    pub ping_timeout_ms: u64,
    /// Time allowed between WebSocket open and Socket.IO CONNECT, ms.
    pub connect_timeout_ms: u64,
    /// Largest message a client may send, bytes (Engine.IO `maxPayload`).
    pub max_payload: usize,
    /// Most binary attachments per packet.
    pub max_attachments: usize,
    /// Outbound queue per connection, frames.
    pub outbound_queue: usize,
    /// WebSocket read buffer per connection, bytes.
    pub ws_read_buffer: usize,
    /// WebSocket write buffer per connection, bytes.
    pub ws_write_buffer: usize,
    /// Longest a write to a client may block, ms.
    pub write_timeout_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let d = EngineConfig::default();
        Self {
            ping_interval_ms: d.ping_interval.as_millis() as u64,
            ping_timeout_ms: d.ping_timeout.as_millis() as u64,
            connect_timeout_ms: d.connect_timeout.as_millis() as u64,
            max_payload: d.max_payload,
            max_attachments: d.max_attachments,
            outbound_queue: d.outbound_queue,
            ws_read_buffer: d.ws_read_buffer,
            ws_write_buffer: d.ws_write_buffer,
            write_timeout_ms: d.write_timeout.as_millis() as u64,
        }
    }
}

impl EngineSettings {
    /// The engine configuration these settings describe.
    pub fn to_engine_config(&self) -> EngineConfig {
        EngineConfig {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_payload: self.max_payload,
            max_attachments: self.max_attachments,
            outbound_queue: self.outbound_queue,
            ws_read_buffer: self.ws_read_buffer,
            ws_write_buffer: self.ws_write_buffer,
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            shutdown_spread: Duration::ZERO,
        }
    }
}

/// Origin allow-list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed `Origin` values, e.g. `https://chat.example.com`; `*` allows
    /// any. Requests without an `Origin` header (non-browser clients) are
    /// always allowed: browsers always send one.
    pub allowed_origins: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: vec!["*".into()],
        }
    }
}

impl CorsConfig {
    /// Whether a browser origin may connect.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*") || self.allows_explicitly(origin)
    }

    /// Whether an origin is listed by name (the wildcard does not count).
    pub fn allows_explicitly(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o != "*" && o.trim_end_matches('/') == origin.trim_end_matches('/'))
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
        }
    }
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

impl GatewayConfig {
    /// Loads defaults (`base`), then `file` (or the file named by
    /// `CONFAB_CONFIG`), then `CONFAB_*` variables, and validates.
    pub fn load(base: GatewayConfig, file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_ignoring(base, file, &[])
    }

    /// Like [`GatewayConfig::load`], ignoring the `CONFAB_*` variables
    /// named in `foreign` (lowercase, without the prefix): settings that a
    /// process embedding the gateway reads itself.
    pub fn load_ignoring(
        base: GatewayConfig,
        file: Option<&Path>,
        foreign: &[&str],
    ) -> Result<Self, ConfigError> {
        let mut ignored = vec!["config"];
        ignored.extend_from_slice(foreign);
        let mut fig = Figment::from(Serialized::defaults(base));
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
        fig = fig.merge(Env::prefixed("CONFAB_").ignore(&ignored).split("__"));
        let cfg: GatewayConfig = fig
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.into(),
            })
        };
        if e.ping_interval_ms == 0 {
            return invalid("engine.ping_interval_ms", "must be greater than 0");
        }
        if e.ping_timeout_ms == 0 {
            return invalid("engine.ping_timeout_ms", "must be greater than 0");
        }
        if e.connect_timeout_ms == 0 {
            return invalid("engine.connect_timeout_ms", "must be greater than 0");
        }
        if !(1024..=64 * 1024 * 1024).contains(&e.max_payload) {
            return invalid("engine.max_payload", "must be between 1 KiB and 64 MiB");
        }
        if e.outbound_queue == 0 || e.outbound_queue > 65_536 {
            return invalid(
                "engine.outbound_queue",
                "must be between 1 and 65536 frames",
            );
        }
        if e.max_attachments > 1000 {
            return invalid("engine.max_attachments", "must be at most 1000");
        }
        if e.ws_read_buffer < 256 || e.ws_write_buffer > 16 * 1024 * 1024 {
            return invalid(
                "engine.ws_read_buffer/ws_write_buffer",
                "read buffer must be at least 256 bytes, write buffer at most 16 MiB",
            );
        }
        if !self.path.starts_with('/') || !self.path.ends_with('/') {
            return invalid("path", "must start and end with '/', e.g. /socket.io/");
        }
        if self.cors.allowed_origins.is_empty() {
            return invalid(
                "cors.allowed_origins",
                "must not be empty (use [\"*\"] to allow any origin)",
            );
        }
        if self.membership.kind == MembershipKind::Nats {
            if self.bus.kind != BusKind::Nats {
                return invalid(
                    "membership.kind",
                    "\"nats\" needs bus.kind = \"nats\" (the membership service is reached over NATS)",
                );
            }
            if self
                .membership
                .service_token
                .as_deref()
                .unwrap_or("")
                .is_empty()
            {
                return invalid(
                    "membership.service_token",
                    "required with membership.kind = \"nats\" (CONFAB_MEMBERSHIP__SERVICE_TOKEN)",
                );
            }
        }
        let m = &self.messages;
        if m.max_body_bytes == 0 || m.max_body_bytes > self.engine.max_payload {
            return invalid(
                "messages.max_body_bytes",
                "must be between 1 and engine.max_payload",
            );
        }
        if !(m.conn_rate_per_sec > 0.0 && m.user_rate_per_sec > 0.0)
            || m.conn_burst == 0
            || m.user_burst == 0
        {
            return invalid(
                "messages.*_rate_per_sec/*_burst",
                "rates and bursts must be greater than 0",
            );
        }
        if !(50..=60_000).contains(&self.presence.heartbeat_ms) {
            return invalid("presence.heartbeat_ms", "must be between 50 and 60000");
        }
        if self.membership.request_timeout_ms == 0 {
            return invalid("membership.request_timeout_ms", "must be greater than 0");
        }
        if self.shutdown_spread_ms >= self.shutdown_grace_ms {
            return invalid(
                "shutdown_spread_ms",
                "must be below shutdown_grace_ms (sockets close within the spread, then shutdown waits for them)",
            );
        }
        let r = &self.recovery;
        if r.enabled {
            if !(1_000..=24 * 3600 * 1000).contains(&r.window_ms) {
                return invalid("recovery.window_ms", "must be between 1000 and 86400000");
            }
            if self.bus.kind == BusKind::Nats
                && Duration::from_millis(r.window_ms) > self.bus.nats.rooms_max_age
            {
                return invalid(
                    "recovery.window_ms",
                    "must not exceed bus.nats.rooms_max_age (missed events must still be stored)",
                );
            }
            if r.max_replay_events == 0 || r.max_replay_events > 1_000_000 {
                return invalid(
                    "recovery.max_replay_events",
                    "must be between 1 and 1000000",
                );
            }
            if r.max_concurrent_replays == 0 || r.max_concurrent_replays > 1024 {
                return invalid(
                    "recovery.max_concurrent_replays",
                    "must be between 1 and 1024",
                );
            }
            if r.heartbeat_ms < 50 || r.heartbeat_ms * 3 > r.window_ms {
                return invalid(
                    "recovery.heartbeat_ms",
                    "must be at least 50 and at most a third of recovery.window_ms",
                );
            }
            if r.session_max_age_ms < r.window_ms {
                return invalid(
                    "recovery.session_max_age_ms",
                    "must be at least recovery.window_ms",
                );
            }
        }
        if let Err(e) = self.bus.nats.validate() {
            return Err(ConfigError::Invalid {
                field: "bus.nats",
                problem: e.to_string(),
            });
        }
        self.auth.validate().map_err(|err| ConfigError::Invalid {
            field: "auth",
            problem: err.to_string(),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_layering_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4100\"\n[engine]\nping_interval_ms = 1000\n[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n[bus]\nkind = \"in-process\"\n[membership]\nkind = \"static\"\n",
        )
        .unwrap();
        let cfg = GatewayConfig::load(GatewayConfig::default(), Some(&file)).unwrap();
        assert_eq!(cfg.listen.port(), 4100);
        assert_eq!(cfg.engine.ping_interval_ms, 1000);

        std::fs::write(&file, "[engine]\nping_interval_ms = 0\n").unwrap();
        let err = GatewayConfig::load(GatewayConfig::default(), Some(&file)).unwrap_err();
        assert!(err.to_string().contains("engine.ping_interval_ms"), "{err}");

        std::fs::write(&file, "[engine]\nping_intervall_ms = 5\n").unwrap();
        let err = GatewayConfig::load(GatewayConfig::default(), Some(&file)).unwrap_err();
        assert!(err.to_string().contains("ping_intervall_ms"), "{err}");

        std::fs::write(
            &file,
            "[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let err = GatewayConfig::load(GatewayConfig::default(), Some(&file)).unwrap_err();
        assert!(
            err.to_string().contains("membership.service_token"),
            "{err}"
        );

        let missing = dir.path().join("nope.toml");
        let err = GatewayConfig::load(GatewayConfig::default(), Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn the_deploy_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/gateway.toml");
        let mut cfg: GatewayConfig = Figment::from(Serialized::defaults(GatewayConfig::default()))
            .merge(Toml::file(&path))
            .extract()
            .unwrap();
        // Secrets come from the environment in production.
        cfg.membership.service_token = Some("from-the-environment".into());
        cfg.validate().unwrap();
        assert!(cfg.recovery.enabled);
        assert_eq!(cfg.recovery.window_ms, 120_000);
        assert_eq!(cfg.shutdown_spread_ms, 5_000);
    }

    #[test]
    fn recovery_settings_are_checked() {
        let mut cfg = GatewayConfig::default();
        cfg.bus.kind = BusKind::InProcess;
        cfg.membership.kind = MembershipKind::Static;
        cfg.auth.hs256_secret = Some("0123456789abcdef0123456789abcdef".into());
        cfg.validate().unwrap();
        for (field, change) in [
            (
                "recovery.window_ms",
                (|c: &mut GatewayConfig| c.recovery.window_ms = 10) as fn(&mut GatewayConfig),
            ),
            ("recovery.max_concurrent_replays", |c| {
                c.recovery.max_concurrent_replays = 0
            }),
            ("recovery.heartbeat_ms", |c| {
                c.recovery.heartbeat_ms = 60_000
            }),
            ("recovery.max_replay_events", |c| {
                c.recovery.max_replay_events = 0
            }),
            ("shutdown_spread_ms", |c| {
                c.shutdown_spread_ms = c.shutdown_grace_ms
            }),
        ] {
            let mut bad = cfg.clone();
            change(&mut bad);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut nats = cfg.clone();
        nats.bus.kind = BusKind::Nats;
        nats.bus.nats.rooms_max_age = Duration::from_secs(120);
        nats.recovery.window_ms = 180_000;
        let err = nats.validate().unwrap_err().to_string();
        assert!(err.contains("rooms_max_age"), "{err}");
    }

    #[test]
    fn origin_allow_list() {
        let c = CorsConfig {
            allowed_origins: vec!["https://chat.example.com".into()],
        };
        assert!(c.allows("https://chat.example.com"));
        assert!(!c.allows("https://evil.example.com"));
        assert!(CorsConfig::default().allows("http://anything"));
    }
}
