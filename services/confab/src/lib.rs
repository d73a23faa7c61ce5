//! The all-in-one Confab process: the gateway and an embedded membership
//! service (SQLite event log and projections, by default) on the
//! in-process bus, so one `cargo run --release` serves a whole backend on a
//! laptop with nothing else installed.
//!
//! It serves one process only: its readiness reports the bus as not
//! shared. A cluster runs `confab-gateway` and `confab-membership` on NATS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use confab_auth::{DEV_SECRET, Verifier};
use confab_bus::Bus;
use confab_config::{Loaded, Loader, redact_url};
use confab_contracts::ErrorDetail;
use confab_contracts::messages::{
    ChangeAck, DeleteRequest, EditRequest, HistoryPage, HistoryRequest,
};
use confab_contracts::presence::Heartbeat;
use confab_events::socket::PresenceStatus;
use confab_events::{RoomId, UserId};
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::membership::{Access, Membership, MembershipError};
use confab_gateway::presence::{Presence, PresenceError};
use confab_gateway::{App, Deps, GatewayConfig};
use confab_membership::app::{App as MembershipApp, MembershipCore};
use confab_membership::auth::Authenticator;
use confab_membership::config::MembershipConfig;
use confab_membership::presence::PresenceTracker;
use confab_membership::service::{MembershipService, ServiceSettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// The all-in-one's own keys, beside every gateway key: the embedded
/// membership service.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Event log and projections: `sqlite://...` (default
    /// `sqlite://confab.db?mode=rwc`) or `postgres://...`.
    pub database_url: String,
    /// Where the membership HTTP API (commands, queries, emit) listens.
    /// Default `127.0.0.1:3100`.
    pub api_listen: SocketAddr,
    /// The `@socket.io/redis-emitter` bridge of the embedded membership
    /// service (off by default).
    pub emitter: confab_membership::emitter::EmitterConfig,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite://confab.db?mode=rwc".into(),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            emitter: Default::default(),
        }
    }
}

impl std::fmt::Debug for EmbeddedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("api_listen", &self.api_listen)
            .field("emitter", &self.emitter)
            .finish()
    }
}

/// The all-in-one's configuration: every gateway key (with the all-in-one's
/// defaults: in-process bus, embedded membership) and its own keys, in one
/// key space (`listen`, `database_url`, `CONFAB_API_LISTEN`, ...).
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway.
    pub gateway: GatewayConfig,
    /// The embedded membership service.
    pub embedded: EmbeddedConfig,
    /// Whether tokens are checked with the public dev secret.
    pub dev_secret: bool,
}

/// The all-in-one's gateway defaults: port 3000 on loopback, in-process
/// bus, embedded membership, and the public dev secret (only accepted on a
/// loopback address, see [`load_config`]).
pub fn default_config() -> GatewayConfig {
    let mut cfg = GatewayConfig::default();
    cfg.bus.kind = BusKind::InProcess;
    cfg.membership.kind = MembershipKind::Static;
    cfg.auth.hs256_secret = Some(DEV_SECRET.into());
    cfg
}

/// Loads the configuration. When no key source is configured, the public
/// dev secret is used, and then only on a loopback address.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<Loaded<Config>> {
    let base = default_config();
    let mut loader = Loader::new(file)?;
    let (mut cfg, embedded) = loader.load_with(&base, &EmbeddedConfig::default())?;
    cfg.validate()?;
    if let Err((key, problem)) = embedded.emitter.validate() {
        bail!("{key}: {problem}");
    }
    if cfg.bus.kind != BusKind::InProcess {
        bail!(
            "the all-in-one process runs on its in-process bus; for a NATS cluster run confab-gateway and confab-membership (see `just up`)"
        );
    }
    let mut dev = cfg.auth.uses_dev_secret();
    if dev && cfg.auth.jwks_url.is_some() {
        // A JWKS is configured: the dev secret must not ride along.
        cfg.auth.hs256_secret = None;
        dev = false;
        cfg.validate()?;
    }
    let listeners = [("listen", cfg.listen), ("api_listen", embedded.api_listen)];
    if dev
        && cfg.auth.session.enabled()
        && listeners.iter().any(|(_, addr)| !addr.ip().is_loopback())
    {
        // Session auth on a reachable address: sessions only, never the
        // public dev secret.
        cfg.auth.hs256_secret = None;
        dev = false;
        cfg.validate()?;
    }
    // Every listener counts: the membership API takes user tokens too.
    cfg.auth.refuse_dev_secret_beyond_loopback(&listeners)?;
    if !dev {
        // Only the dev setup (dev secret, loopback) may leave the token
        // scope unchecked.
        cfg.auth.require_deployment_scope()?;
    }
    Ok(Loaded {
        config: Config {
            gateway: cfg,
            embedded,
            dev_secret: dev,
        },
        ignored: loader.ignored(),
    })
}

/// Mints a token for `user` with the configured HS256 secret.
pub fn dev_token(cfg: &GatewayConfig, user: &str, ttl: Duration) -> anyhow::Result<String> {
    UserId::parse(user).with_context(|| format!("invalid user id {user:?}"))?;
    let secret = cfg
        .auth
        .hs256_secret
        .as_ref()
        .context("no HS256 secret configured; tokens come from your identity provider")?
        .expose();
    confab_auth::mint_hs256(
        secret,
        user,
        ttl,
        cfg.auth.issuer.as_deref(),
        cfg.auth.audience.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The gateway's message history port answered in-process by the
/// embedded membership service.
struct EmbeddedHistory(confab_membership::history::History);

/// A history refusal as the gateway forwards it.
fn refusal(e: confab_membership::history::HistoryError) -> ErrorDetail {
    confab_membership::api::ApiError::from(e).0
}

#[async_trait]
impl confab_gateway::history::MessageCalls for EmbeddedHistory {
    async fn history(&self, request: &HistoryRequest) -> Result<HistoryPage, ErrorDetail> {
        self.0.history(request).await.map_err(refusal)
    }

    async fn edit(&self, request: &EditRequest) -> Result<ChangeAck, ErrorDetail> {
        self.0.edit(request).await.map_err(refusal)
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<ChangeAck, ErrorDetail> {
        self.0.delete(request).await.map_err(refusal)
    }
}

/// The gateway's membership port answered in-process by the embedded
/// membership service.
struct EmbeddedMembership(Arc<MembershipService>);

#[async_trait]
impl Membership for EmbeddedMembership {
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomId>, MembershipError> {
        self.0
            .rooms_of(user)
            .await
            .map_err(|e| MembershipError::Unavailable(e.to_string()))
    }

    async fn may_join(&self, user: &UserId, room: &RoomId) -> Result<Access, MembershipError> {
        let d = self
            .0
            .may_join(user, room)
            .await
            .map_err(|e| MembershipError::Unavailable(e.to_string()))?;
        Ok(Access::from_decision(d.allowed, d.reason, user, room).read_only_if(d.read_only, room))
    }
}

/// The gateway's presence port answered in-process by the embedded
/// presence tracker.
struct EmbeddedPresence(Arc<PresenceTracker>);

#[async_trait]
impl Presence for EmbeddedPresence {
    async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), PresenceError> {
        self.0.heartbeat(hb).await;
        Ok(())
    }

    async fn query(
        &self,
        asker: &UserId,
        users: &[UserId],
    ) -> Result<BTreeMap<String, PresenceStatus>, PresenceError> {
        Ok(self.0.query(asker, users).await)
    }
}

/// A built all-in-one process: gateway and membership API bound, not yet
/// serving.
pub struct AllInOne {
    gateway: App,
    membership: MembershipApp,
    /// The service token of the membership API.
    pub service_token: String,
}

impl AllInOne {
    /// Where the gateway listens.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// Where the membership HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.membership.http_addr()
    }

    /// A handle on the gateway (emit, metrics).
    pub fn gateway_handle(&self) -> confab_gateway::AppHandle {
        self.gateway.handle()
    }

    /// Serves until `signal`, then shuts both down.
    pub async fn run(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            signal.await;
            trigger.cancel();
        });
        let membership = tokio::spawn({
            let stop = stop.clone();
            let run = self.membership.run(stop.clone().cancelled_owned());
            async move {
                let result = run.await;
                // A membership service that stopped (e.g. refused to start)
                // takes the gateway down with it.
                stop.cancel();
                result
            }
        });
        let gateway = self.gateway.run(stop.clone().cancelled_owned()).await;
        stop.cancel();
        let membership = membership.await.context("membership task")?;
        gateway?;
        membership?;
        Ok(())
    }
}

/// Builds the all-in-one process: embedded membership on `embedded`'s
/// database, the gateway on the in-process bus.
pub async fn build(cfg: GatewayConfig, embedded: &EmbeddedConfig) -> anyhow::Result<AllInOne> {
    let db = confab_membership::sql::connect(&embedded.database_url)
        .await
        .with_context(|| format!("membership database {}", redact_url(&embedded.database_url)))?;
    // The log lives in the same database as the history checkpoint, so the
    // two survive restarts together.
    let bus: Arc<dyn Bus> = Arc::new(
        confab_membership::app::persistent_bus(&db)
            .await
            .with_context(|| format!("room event log in {}", redact_url(&embedded.database_url)))?,
    );
    let service_token = match &cfg.service_token {
        Some(t) => t.expose().to_owned(),
        None => {
            let bytes: [u8; 24] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let verifier = Verifier::new(cfg.auth.clone()).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let auth = Authenticator::new(Some(service_token.clone()), Some(verifier));
    let core = MembershipCore::embedded(db, Arc::clone(&bus), auth, ServiceSettings::default());
    let service = Arc::clone(core.service());
    let presence = Arc::clone(core.presence());
    let history = EmbeddedHistory(core.history().clone());
    let mcfg = MembershipConfig {
        listen: embedded.api_listen,
        database_url: embedded.database_url.clone(),
        service_token: Some(service_token.as_str().into()),
        emitter: embedded.emitter.clone(),
        ..MembershipConfig::default()
    };
    let membership = MembershipApp::with_core(&mcfg, core).await?;
    let gateway = App::build(
        cfg,
        Deps {
            bus,
            membership: Arc::new(EmbeddedMembership(service)),
            presence: Arc::new(EmbeddedPresence(presence)),
            history: Arc::new(history),
            sessions: None,
            forwarding: None,
        },
    )
    .await?;
    Ok(AllInOne {
        gateway,
        membership,
        service_token,
    })
}
