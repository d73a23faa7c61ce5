//! Typed configuration of the gateway, loaded by [`confab_config::Loader`]:
//! defaults, then an optional TOML file, then the `CONFAB_*` variables that
//! name one of its keys (`__` separates sections, e.g.
//! `CONFAB_AUTH__HS256_SECRET`). Validated at start with clear errors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use confab_auth::AuthConfig;
use confab_config::{Loaded, Loader, Secret};
use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;

pub use confab_config::{ConfigError, LogConfig};

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
    /// How long shutdown waits for sockets to close.
    #[serde(with = "confab_config::duration")]
    pub shutdown_grace: Duration,
    /// On shutdown, sockets are closed at random moments within this, so
    /// that their clients reconnect (elsewhere) spread out instead of all
    /// at once. Must be below `shutdown_grace`.
    #[serde(with = "confab_config::duration")]
    pub shutdown_spread: Duration,
    /// The token Confab services present to the membership service
    /// (`CONFAB_SERVICE_TOKEN`, the same key the membership service reads).
    /// Required with `membership.kind = "nats"`.
    pub service_token: Option<Secret>,
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
    /// What one client may cost: its event budget, rooms, connections.
    pub limits: LimitSettings,
    /// The Socket.IO Admin UI's `/admin` namespace (off unless configured).
    pub admin: AdminSettings,
}

/// What the operator may do through the Admin UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminMode {
    /// Watch only: the UI offers no action and the gateway ignores any.
    Readonly,
    /// The UI's actions work too: make a socket join or leave a room (the
    /// membership service still decides a join), disconnect a socket.
    Actions,
}

/// The official Socket.IO Admin UI (`@socket.io/admin-ui`) connects to the
/// `/admin` namespace with the operator's credentials and sees every
/// gateway of the cluster (see `src/admin/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Serve the `/admin` namespace. Needs `username` and `password_hash`.
    pub enabled: bool,
    /// The operator's user name.
    pub username: String,
    /// A bcrypt hash of the operator's password (`$2b$...`; e.g.
    /// `htpasswd -nbBC 12 "" PASSWORD | cut -c2-`). Never logged.
    pub password_hash: Option<Secret>,
    /// `readonly` (default) or `actions`.
    pub mode: AdminMode,
    /// How often each gateway publishes its statistics and sockets.
    #[serde(with = "confab_config::duration")]
    pub stats_interval: Duration,
    /// Most sockets one gateway lists per snapshot (the oldest first); the
    /// rest are counted, not listed.
    pub max_sockets: usize,
    /// Most gateways one Admin UI shows (others are ignored).
    pub max_gateways: usize,
    /// Most Admin UI connections one gateway serves at once.
    pub max_operators: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            username: String::new(),
            password_hash: None,
            mode: AdminMode::Readonly,
            stats_interval: Duration::from_secs(2),
            max_sockets: 1000,
            max_gateways: 64,
            max_operators: 8,
        }
    }
}

/// What one client may cost the gateway (issue #12). Defaults are generous
/// for people and load generators alike; lower them for a public service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Sustained client events per second per socket: one budget shared by
    /// every client event except `message:send` (which has `messages.*`), so
    /// typing and presence flips, room joins, history pages, edits and
    /// queries cannot flood. Past it an event with an ack gets
    /// `{error: {code: "rate_limited", retryAfterMs}}`, one without is
    /// dropped (`confab_gateway_events_rate_limited_total`).
    pub event_rate_per_sec: f64,
    /// Client events a socket may burst before `event_rate_per_sec` applies.
    pub event_burst: u32,
    /// Most rooms a socket may be in (its user room not counted): a
    /// `room:join` past it is refused (`too_many_rooms`). Rooms the
    /// membership service gives at CONNECT are all joined even past it
    /// (the user belongs there), and count.
    pub max_rooms_per_socket: usize,
    /// Most open connections (WebSockets and polling sessions) from one IP
    /// address; more get HTTP 429 `too_many_connections`. 0: no limit.
    /// Behind a proxy every client has the proxy's address: raise it or set
    /// 0 there.
    pub connections_per_ip: usize,
    /// Most sockets of one user on this gateway; more get CONNECT_ERROR
    /// `too_many_connections`. 0: no limit.
    pub connections_per_user: usize,
    /// Longest a client may take to send a request's headers (slowloris);
    /// the connection is closed after it. It also closes a keep-alive
    /// connection idle this long: keep it above `engine.ping_interval`, so
    /// that a polling client's connection, idle between two pongs, is
    /// reused rather than closed under it (a client may send on a
    /// connection the server is closing).
    #[serde(with = "confab_config::duration")]
    pub header_read_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            event_rate_per_sec: 20.0,
            event_burst: 50,
            max_rooms_per_socket: 1000,
            connections_per_ip: 1000,
            connections_per_user: 100,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Connection-state recovery: a client that reconnects within the window,
/// to any gateway, gets its session back and every durable event it missed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoverySettings {
    /// Offer recovery (offsets on durable events, `pid` in CONNECT replies).
    pub enabled: bool,
    /// How long after a disconnect a session can be recovered. Default two
    /// minutes; at most `bus.nats.rooms_max_age`.
    #[serde(with = "confab_config::duration")]
    pub window: Duration,
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
    /// How often the gateway records that it is alive (NATS KV): the
    /// sessions of a gateway that died count from its last record.
    #[serde(with = "confab_config::duration")]
    pub heartbeat: Duration,
    /// How long a live session's record is kept after its last write
    /// (default 24 h); live sockets' records are rewritten when half as old.
    /// A dropped session's record goes once the window has passed, an
    /// ended one's at once (`features/recovery`'s `Expiry`).
    #[serde(with = "confab_config::duration")]
    pub session_max_age: Duration,
    /// Most recovery attempts of one session (`pid`) per `window` on this
    /// gateway; more fail with `rate_limited` without reading the log. A
    /// session whose recovery failed for good (`too_many_missed`,
    /// `expired`) is forgotten: a retry reads nothing either.
    pub max_attempts: u32,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(120),
            max_replay_events: 10_000,
            max_concurrent_replays: 16,
            heartbeat: Duration::from_secs(5),
            session_max_age: Duration::from_secs(24 * 3600),
            max_attempts: 10,
        }
    }
}

/// Presence heartbeats to the tracker (membership service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// How often the gateway shows the tracker it is alive (a heartbeat
    /// without changes; changes go at once). Default 5 s; keep it well
    /// below the tracker's `presence_ttl` (default 15 s, 3 heartbeats).
    #[serde(with = "confab_config::duration")]
    pub heartbeat: Duration,
    /// How often the gateway sends its whole local state (in parts of at
    /// most 2,000 users), which repairs a tracker that missed changes or
    /// restarted. Default 1 min.
    #[serde(with = "confab_config::duration")]
    pub full_sync_every: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            full_sync_every: Duration::from_secs(60),
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
    /// Redis (7.0+) alone, no NATS: room events, recovery sessions and
    /// gateway liveness in Redis, presence heartbeats on a Redis topic;
    /// the membership service is reached over HTTP (`membership.kind =
    /// "http"`).
    Redis,
}

/// Bus settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// `nats` (default), `in-process` or `redis`.
    pub kind: BusKind,
    /// NATS connection and stream settings (`bus.nats.url`, ...).
    pub nats: confab_bus::NatsConfig,
    /// Redis connection, keys and retention (`bus.redis.url`, ...), read
    /// with `bus.kind = "redis"`.
    pub redis: confab_bus::RedisConfig,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            kind: BusKind::Nats,
            nats: confab_bus::NatsConfig::default(),
            redis: confab_bus::RedisConfig::default(),
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
    /// The membership service's HTTP API at `membership.url`
    /// (`POST /v1/rpc/{subject}`, service token), for deployments without
    /// NATS (needs `bus.kind = "redis"`, whose topic carries presence
    /// heartbeats).
    Http,
}

/// Membership settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSettings {
    /// `nats` (default), `http` or `static`.
    pub kind: MembershipKind,
    /// The membership service's HTTP API, with `kind = "http"`, e.g.
    /// `http://membership:3100`.
    pub url: String,
    /// How long to wait for an answer.
    #[serde(with = "confab_config::duration")]
    pub request_timeout: Duration,
    /// How long a cached answer of the authority ("may this user write in
    /// this room?") is used before it is asked again. Membership events
    /// keep the cache current; this only bounds how long an answer lives
    /// without one. While the authority is unreachable an older answer is
    /// still used.
    #[serde(with = "confab_config::duration")]
    pub cache_ttl: Duration,
    /// Most rooms cached per user (the oldest answer goes first).
    pub cache_rooms_per_user: usize,
    /// Most users cached per gateway (only users with a socket here are
    /// cached; beyond this, sends ask the authority each time).
    pub cache_users: usize,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            kind: MembershipKind::Nats,
            url: "http://127.0.0.1:3100".into(),
            request_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            cache_rooms_per_user: 256,
            cache_users: 200_000,
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
            shutdown_grace: Duration::from_secs(10),
            shutdown_spread: Duration::from_secs(5),
            service_token: None,
            bus: BusSettings::default(),
            membership: MembershipSettings::default(),
            messages: MessageSettings::default(),
            presence: PresenceSettings::default(),
            recovery: RecoverySettings::default(),
            limits: LimitSettings::default(),
            admin: AdminSettings::default(),
        }
    }
}

/// Engine.IO / Socket.IO settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Server ping interval.
    #[serde(with = "confab_config::duration")]
    pub ping_interval: Duration,
    /// Time allowed for the client's pong.
    #[serde(with = "confab_config::duration")]
    pub ping_timeout: Duration,
    /// Time allowed between WebSocket open and Socket.IO CONNECT.
    #[serde(with = "confab_config::duration")]
    pub connect_timeout: Duration,
    /// Largest message a client may send, bytes (Engine.IO `maxPayload`).
    pub max_payload: usize,
    /// Most binary attachments per packet.
    pub max_attachments: usize,
    /// Largest message a client may send before its Socket.IO CONNECT was
    /// accepted, bytes (a CONNECT and its auth payload; at most
    /// `max_payload`); a larger one, or any binary data, closes the
    /// connection.
    pub max_connect_payload: usize,
    /// Outbound queue per connection, frames.
    pub outbound_queue: usize,
    /// WebSocket read buffer per connection, bytes.
    pub ws_read_buffer: usize,
    /// WebSocket write buffer per connection, bytes.
    pub ws_write_buffer: usize,
    /// Longest a write to a client may block.
    #[serde(with = "confab_config::duration")]
    pub write_timeout: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let d = EngineConfig::default();
        Self {
            ping_interval: d.ping_interval,
            ping_timeout: d.ping_timeout,
            connect_timeout: d.connect_timeout,
            max_payload: d.max_payload,
            max_attachments: d.max_attachments,
            max_connect_payload: d.max_connect_payload,
            outbound_queue: d.outbound_queue,
            ws_read_buffer: d.ws_read_buffer,
            ws_write_buffer: d.ws_write_buffer,
            write_timeout: d.write_timeout,
        }
    }
}

impl EngineSettings {
    /// The engine configuration these settings describe.
    pub fn to_engine_config(&self) -> EngineConfig {
        EngineConfig {
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            connect_timeout: self.connect_timeout,
            max_payload: self.max_payload,
            max_attachments: self.max_attachments,
            // Never above what any message may be.
            max_connect_payload: self.max_connect_payload.min(self.max_payload),
            outbound_queue: self.outbound_queue,
            ws_read_buffer: self.ws_read_buffer,
            ws_write_buffer: self.ws_write_buffer,
            write_timeout: self.write_timeout,
            shutdown_spread: Duration::ZERO,
            connections_per_ip: 0,
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

impl GatewayConfig {
    /// Loads defaults (`base`), then `file` (or the file named by
    /// `CONFAB_CONFIG`), then the `CONFAB_*` variables naming a key, and
    /// validates, as the `confab-gateway` binary runs: JWT issuer and
    /// audience required, the dev secret refused beyond loopback.
    pub fn load(base: GatewayConfig, file: Option<&Path>) -> Result<Loaded<Self>, ConfigError> {
        let mut loader = Loader::new(file)?;
        let config = loader.load(&base)?;
        config.validate()?;
        config
            .auth
            .refuse_dev_secret_beyond_loopback(&[("listen", config.listen)])?;
        config.auth.require_deployment_scope()?;
        Ok(Loaded {
            config,
            ignored: loader.ignored(),
        })
    }

    /// The service token as the membership clients send it (empty when
    /// none is set: validation requires one where it is used).
    pub fn service_token_or_empty(&self) -> String {
        self.service_token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default()
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        let invalid = |key: &str, problem: &str| Err(ConfigError::invalid(key, problem));
        if e.ping_interval.is_zero() {
            return invalid("engine.ping_interval", "must be greater than 0");
        }
        if e.ping_timeout.is_zero() {
            return invalid("engine.ping_timeout", "must be greater than 0");
        }
        if e.connect_timeout.is_zero() {
            return invalid("engine.connect_timeout", "must be greater than 0");
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
        if let Some(problem) = self
            .service_token
            .as_ref()
            .and_then(|t| confab_contracts::service_token_problem(t.expose()))
        {
            return invalid("service_token", &problem);
        }
        if self.membership.kind == MembershipKind::Nats {
            if self.bus.kind != BusKind::Nats {
                return invalid(
                    "membership.kind",
                    "\"nats\" needs bus.kind = \"nats\" (the membership service is reached over NATS)",
                );
            }
            if self.service_token.as_ref().is_none_or(Secret::is_empty) {
                return invalid(
                    "service_token",
                    "required with membership.kind = \"nats\" (CONFAB_SERVICE_TOKEN)",
                );
            }
        }
        if self.membership.kind == MembershipKind::Http {
            if self.bus.kind != BusKind::Redis {
                return invalid(
                    "membership.kind",
                    "\"http\" needs bus.kind = \"redis\" (presence heartbeats travel on the Redis bus); on NATS use \"nats\"",
                );
            }
            let url = self.membership.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("membership.url", "must be an http:// or https:// URL");
            }
            if self.service_token.as_ref().is_none_or(Secret::is_empty) {
                return invalid(
                    "service_token",
                    "required with membership.kind = \"http\" (CONFAB_SERVICE_TOKEN)",
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
        if e.max_connect_payload < 256 {
            return invalid("engine.max_connect_payload", "must be at least 256 bytes");
        }
        let l = &self.limits;
        if !l.event_rate_per_sec.is_finite() || l.event_rate_per_sec <= 0.0 || l.event_burst == 0 {
            return invalid(
                "limits.event_rate_per_sec/event_burst",
                "rate and burst must be greater than 0",
            );
        }
        if l.max_rooms_per_socket == 0 {
            return invalid("limits.max_rooms_per_socket", "must be greater than 0");
        }
        if l.header_read_timeout < MS * 100 {
            return invalid("limits.header_read_timeout", "must be at least 100ms");
        }
        if !(MS * 50..=SEC * 60).contains(&self.presence.heartbeat) {
            return invalid("presence.heartbeat", "must be between 50ms and 60s");
        }
        if self.presence.full_sync_every < self.presence.heartbeat {
            return invalid(
                "presence.full_sync_every",
                "must be at least presence.heartbeat (a full sync is the rare repair)",
            );
        }
        if self.membership.request_timeout.is_zero() {
            return invalid("membership.request_timeout", "must be greater than 0");
        }
        if self.membership.cache_rooms_per_user == 0 {
            return invalid(
                "membership.cache_rooms_per_user",
                "must be at least 1 (every send then asks the membership service)",
            );
        }
        if self.shutdown_spread >= self.shutdown_grace {
            return invalid(
                "shutdown_spread",
                "must be below shutdown_grace (sockets close within the spread, then shutdown waits for them)",
            );
        }
        let r = &self.recovery;
        if self.bus.kind == BusKind::Redis {
            if let Err(e) = self.bus.redis.validate() {
                return invalid("bus.redis", &e.to_string());
            }
            if r.enabled && r.window > self.bus.redis.rooms_max_age {
                return invalid(
                    "recovery.window",
                    "must not exceed bus.redis.rooms_max_age (events must outlive the window)",
                );
            }
        }
        if r.enabled {
            if !(SEC..=SEC * 24 * 3600).contains(&r.window) {
                return invalid("recovery.window", "must be between 1s and 24h");
            }
            if self.bus.kind == BusKind::Nats && r.window > self.bus.nats.rooms_max_age {
                return invalid(
                    "recovery.window",
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
            if r.heartbeat < MS * 50 || r.heartbeat * 3 > r.window {
                return invalid(
                    "recovery.heartbeat",
                    "must be at least 50ms and at most a third of recovery.window",
                );
            }
            if r.max_attempts == 0 {
                return invalid("recovery.max_attempts", "must be greater than 0");
            }
            if r.session_max_age < r.window {
                return invalid(
                    "recovery.session_max_age",
                    "must be at least recovery.window",
                );
            }
        }
        if let Err(e) = self.bus.nats.validate() {
            return invalid("bus.nats", &e.to_string());
        }
        let a = &self.admin;
        if a.enabled {
            if a.username.is_empty() {
                return invalid("admin.username", "required with admin.enabled = true");
            }
            match a.password_hash.as_ref() {
                None => {
                    return invalid(
                        "admin.password_hash",
                        "required with admin.enabled = true (a bcrypt hash, CONFAB_ADMIN__PASSWORD_HASH)",
                    );
                }
                Some(h) if h.expose().parse::<bcrypt::HashParts>().is_err() => {
                    return invalid("admin.password_hash", "is not a bcrypt hash ($2b$...)");
                }
                Some(_) => {}
            }
            if !(MS * 100..=SEC * 60).contains(&a.stats_interval) {
                return invalid("admin.stats_interval", "must be between 100ms and 60s");
            }
            if !(1..=100_000).contains(&a.max_sockets) {
                return invalid("admin.max_sockets", "must be between 1 and 100000");
            }
            if !(1..=10_000).contains(&a.max_gateways) {
                return invalid("admin.max_gateways", "must be between 1 and 10000");
            }
            if !(1..=1000).contains(&a.max_operators) {
                return invalid("admin.max_operators", "must be between 1 and 1000");
            }
        }
        self.auth
            .validate()
            .map_err(|err| ConfigError::invalid("auth", err.to_string()))?;
        Ok(())
    }
}

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &Path) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::load(GatewayConfig::default(), Some(file)).map(|l| l.config)
    }

    #[test]
    fn file_then_env_layering_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4100\"\n[engine]\nping_interval = \"1s\"\n[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\nissuer = \"https://id.example\"\naudience = \"confab\"\n[bus]\nkind = \"in-process\"\n[membership]\nkind = \"static\"\n",
        )
        .unwrap();
        let cfg = load(&file).unwrap();
        assert_eq!(cfg.listen.port(), 4100);
        assert_eq!(cfg.engine.ping_interval, Duration::from_millis(1000));

        std::fs::write(&file, "[engine]\nping_interval = \"0s\"\n").unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.to_string().contains("engine.ping_interval"), "{err}");

        std::fs::write(&file, "[engine]\nping_intervall = \"5ms\"\n").unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.to_string().contains("ping_intervall"), "{err}");

        std::fs::write(&file, "[engine]\nping_interval = 1000\n").unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.to_string().contains("engine.ping_interval"), "{err}");
        assert!(err.to_string().contains("\"1000ms\""), "{err}");

        std::fs::write(
            &file,
            "[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.to_string().contains("service_token"), "{err}");
        assert!(err.to_string().contains("CONFAB_SERVICE_TOKEN"), "{err}");

        let missing = dir.path().join("nope.toml");
        let err = load(&missing).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn a_deployment_needs_token_scope_a_long_service_token_and_no_public_dev_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        let load_with = |listen: &str, secret: &str, extra: &str| {
            std::fs::write(
                &file,
                format!(
                    "listen = \"{listen}\"\n{extra}[auth]\nhs256_secret = \"{secret}\"\n[bus]\nkind = \"in-process\"\n[membership]\nkind = \"static\"\n"
                ),
            )
            .unwrap();
            load(&file)
        };
        let own = "fedcba9876543210fedcba9876543210";
        let err = load_with("0.0.0.0:3000", own, "").unwrap_err();
        assert_eq!(err.key(), Some("auth.issuer"), "{err}");
        assert!(err.to_string().contains("CONFAB_AUTH__ISSUER"), "{err}");
        // Keys of [auth] go below it: append them to the secret's line.
        let scoped =
            |s: &str| format!("{s}\"\nissuer = \"https://id.example\"\naudience = \"confab");
        let err = load_with(
            "0.0.0.0:3000",
            &format!("{own}\"\nissuer = \"https://id.example"),
            "",
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("auth.audience"), "{err}");
        assert!(load_with("0.0.0.0:3000", &scoped(own), "").is_ok());

        let err = load_with("0.0.0.0:3000", &scoped(confab_auth::DEV_SECRET), "").unwrap_err();
        assert_eq!(err.key(), Some("listen"), "{err}");
        assert!(err.to_string().contains("dev secret"), "{err}");
        assert!(load_with("127.0.0.1:3000", &scoped(confab_auth::DEV_SECRET), "").is_ok());

        let err = load_with(
            "127.0.0.1:3000",
            &scoped(own),
            "service_token = \"short\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("service_token"), "{err}");
        assert!(err.to_string().contains("at least 32"), "{err}");
    }

    #[test]
    fn the_service_token_is_one_top_level_key() {
        let vars = [
            ("CONFAB_SERVICE_TOKEN", "0123456789abcdef0123456789abcdef"),
            (
                "CONFAB_AUTH__HS256_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
            ("CONFAB_MEMBERSHIP__SERVICE_TOKEN", "the-old-name"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut loader = Loader::with_vars(None, vars).unwrap();
        let cfg = loader.load(&GatewayConfig::default()).unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.service_token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(loader.ignored(), ["CONFAB_MEMBERSHIP__SERVICE_TOKEN"]);
        assert!(
            !format!("{cfg:?}").contains("0123456789abcdef"),
            "Debug shows no secret"
        );
    }

    #[test]
    fn the_deploy_and_bench_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut loader =
            Loader::with_vars(Some(&root.join("deploy/config/gateway.toml")), []).unwrap();
        let mut cfg = loader.load(&GatewayConfig::default()).unwrap();
        // Secrets come from the environment in production.
        cfg.service_token = Some("from-the-environment-0123456789abcdef".into());
        cfg.validate().unwrap();
        assert!(cfg.recovery.enabled);
        assert_eq!(cfg.recovery.window, Duration::from_secs(120));
        assert_eq!(cfg.shutdown_spread, Duration::from_secs(5));

        let mut loader = Loader::with_vars(Some(&root.join("bench/gateway.toml")), []).unwrap();
        let mut cfg = loader.load(&GatewayConfig::default()).unwrap();
        cfg.service_token = Some("from-the-environment-0123456789abcdef".into());
        cfg.auth.hs256_secret = Some("0123456789abcdef0123456789abcdef".into());
        cfg.validate().unwrap();
        assert_eq!(cfg.messages.conn_burst, 1_000_000);
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
                "recovery.window",
                (|c: &mut GatewayConfig| c.recovery.window = Duration::from_millis(10))
                    as fn(&mut GatewayConfig),
            ),
            ("recovery.max_concurrent_replays", |c| {
                c.recovery.max_concurrent_replays = 0
            }),
            ("recovery.heartbeat", |c| {
                c.recovery.heartbeat = Duration::from_secs(60)
            }),
            ("recovery.max_replay_events", |c| {
                c.recovery.max_replay_events = 0
            }),
            ("shutdown_spread", |c| c.shutdown_spread = c.shutdown_grace),
            ("recovery.max_attempts", |c| c.recovery.max_attempts = 0),
            ("limits.event_rate_per_sec", |c| {
                c.limits.event_rate_per_sec = f64::NAN
            }),
            ("limits.event_rate_per_sec", |c| c.limits.event_burst = 0),
            ("limits.max_rooms_per_socket", |c| {
                c.limits.max_rooms_per_socket = 0
            }),
            ("limits.header_read_timeout", |c| {
                c.limits.header_read_timeout = Duration::ZERO
            }),
            ("engine.max_connect_payload", |c| {
                c.engine.max_connect_payload = 100
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
        nats.recovery.window = Duration::from_secs(180);
        let err = nats.validate().unwrap_err().to_string();
        assert!(err.contains("rooms_max_age"), "{err}");
    }

    #[test]
    fn a_redis_bus_is_read_with_http_membership() {
        let cfg: GatewayConfig = serde_json::from_str(
            r#"{"bus":{"kind":"redis","redis":{"url":"redis://:pw@h:6380","prefix":"chat"}},
                "membership":{"kind":"http","url":"http://m:3100"},
                "service_token":"0123456789abcdef0123456789abcdef",
                "auth":{"hs256_secret":"0123456789abcdef0123456789abcdef"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.bus.kind, BusKind::Redis);
        assert_eq!(cfg.bus.redis.prefix, "chat");
        assert_eq!(cfg.membership.kind, MembershipKind::Http);
        cfg.validate().unwrap();
        let mut bad = cfg.clone();
        bad.bus.redis.prefix = "{x}".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("bus.redis")
        );
        let mut long_window = cfg.clone();
        long_window.bus.redis.rooms_max_age = Duration::from_secs(120);
        long_window.recovery.window = Duration::from_secs(180);
        let err = long_window.validate().unwrap_err().to_string();
        assert!(err.contains("recovery.window"), "{err}");
        let mut no_token = cfg.clone();
        no_token.service_token = None;
        let err = no_token.validate().unwrap_err().to_string();
        assert!(err.contains("service_token"), "{err}");
        let mut bad_url = cfg.clone();
        bad_url.membership.url = "m:3100".into();
        let err = bad_url.validate().unwrap_err().to_string();
        assert!(err.contains("membership.url"), "{err}");
        let mut nats_calls = cfg.clone();
        nats_calls.membership.kind = MembershipKind::Nats;
        assert!(nats_calls.validate().is_err());
        let mut http_on_nats = cfg;
        http_on_nats.bus.kind = BusKind::Nats;
        let err = http_on_nats.validate().unwrap_err().to_string();
        assert!(err.contains("membership.kind"), "{err}");
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
