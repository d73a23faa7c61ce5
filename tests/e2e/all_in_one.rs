//! The all-in-one process (gateway + embedded membership on SQLite) in this
//! test process, on free ports.

use std::net::SocketAddr;

use crate::support::SECRET;

/// A running all-in-one.
pub struct AllInOne {
    pub gateway: SocketAddr,
    pub api: SocketAddr,
    pub service_token: String,
    stop: tokio_util::sync::CancellationToken,
    _db: tempfile::TempDir,
}

impl AllInOne {
    /// Starts one whose gateway accepts HS256 tokens signed with
    /// [`SECRET`], with its configuration changed by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut confab_gateway::GatewayConfig)) -> AllInOne {
        let db = tempfile::tempdir().unwrap();
        let mut cfg = confab::default_config();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.auth.hs256_secret = Some(SECRET.into());
        tweak(&mut cfg);
        cfg.validate().expect("all-in-one test config is valid");
        let embedded = confab::EmbeddedConfig {
            database_url: format!(
                "sqlite://{}?mode=rwc",
                db.path().join("confab.db").display()
            ),
            api_listen: "127.0.0.1:0".parse().unwrap(),
            emitter: Default::default(),
        };
        let app = confab::build(cfg, &embedded)
            .await
            .expect("all-in-one builds");
        let stop = tokio_util::sync::CancellationToken::new();
        let aio = AllInOne {
            gateway: app.gateway_addr(),
            api: app.api_addr(),
            service_token: app.service_token.clone(),
            stop: stop.clone(),
            _db: db,
        };
        tokio::spawn(app.run(stop.cancelled_owned()));
        aio
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
