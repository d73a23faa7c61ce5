//! The all-in-one Confab process: the gateway on the in-process bus with
//! in-process membership, so one `cargo run --release` serves a whole
//! backend on a laptop with nothing else installed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use confab_auth::DEV_SECRET;
use confab_bus::InProcessBus;
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::membership::StaticMembership;
use confab_gateway::{App, Deps, GatewayConfig};

/// The all-in-one defaults: port 3000 on loopback, HS256 with the dev
/// secret unless a secret or JWKS URL is configured.
pub fn default_config() -> GatewayConfig {
    let mut cfg = GatewayConfig::default();
    cfg.bus.kind = BusKind::InProcess;
    cfg.membership.kind = MembershipKind::Static;
    cfg
}

/// Loads the configuration. When no key source is configured, the public
/// dev secret is used, and then only on a loopback address. Returns the
/// configuration and whether it uses the dev secret.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<(GatewayConfig, bool)> {
    let mut base = default_config();
    base.auth.hs256_secret = Some(DEV_SECRET.into());
    let mut cfg = GatewayConfig::load(base, file)?;
    let mut dev = cfg.auth.hs256_secret.as_deref() == Some(DEV_SECRET);
    if dev && cfg.auth.jwks_url.is_some() {
        // A JWKS is configured: the dev secret must not ride along.
        cfg.auth.hs256_secret = None;
        dev = false;
        cfg.validate()?;
    }
    if dev && !cfg.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} with the public dev secret: set CONFAB_AUTH__HS256_SECRET \
             (or auth.jwks_url) before exposing Confab beyond this machine",
            cfg.listen
        );
    }
    Ok((cfg, dev))
}

/// Mints a token for `user` with the configured HS256 secret.
pub fn dev_token(cfg: &GatewayConfig, user: &str, ttl: Duration) -> anyhow::Result<String> {
    confab_events::UserId::parse(user).with_context(|| format!("invalid user id {user:?}"))?;
    let secret = cfg
        .auth
        .hs256_secret
        .as_deref()
        .context("no HS256 secret configured; tokens come from your identity provider")?;
    confab_auth::mint_hs256(
        secret,
        user,
        ttl,
        cfg.auth.issuer.as_deref(),
        cfg.auth.audience.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Builds the all-in-one gateway (bound, not yet serving).
pub async fn build(cfg: GatewayConfig) -> anyhow::Result<App> {
    let bus = Arc::new(InProcessBus::default());
    let membership = Arc::new(StaticMembership::new());
    let app = App::build(cfg, Deps { bus, membership }).await?;
    Ok(app)
}
