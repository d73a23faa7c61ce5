//! A real cluster in one test process: nats-server (JetStream), the
//! membership service, and two gateways on the NATS bus, with
//! socket.io-client users on both gateways. [`Backend::Redis`] builds the
//! same cluster without NATS: a redis-server, membership on the SQL event
//! log and the Redis bus, gateways calling it over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use confab_events::RoomId;
use confab_gateway::config::{BusKind, MembershipKind};
use confab_gateway::{App, AppHandle, Deps};
use confab_membership::config::MembershipConfig;
use confab_test_support::{NatsServer, NodeClient, RedisServer};
use serde_json::{Value, json};

use crate::support::*;

const T: Duration = Duration::from_secs(15);
pub const SERVICE_TOKEN: &str = "e2e-service-token-0123456789abcdef";

/// What the cluster's processes talk through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nats-server with JetStream.
    Nats,
    /// redis-server (AOF on), no NATS.
    Redis,
}

pub struct Cluster {
    pub backend: Backend,
    nats: Option<NatsServer>,
    /// The Redis of a [`Backend::Redis`] cluster (restartable).
    pub redis: Option<RedisServer>,
    pub membership: SocketAddr,
    /// The membership service of the cluster (e.g. to run extra emitter
    /// bridges on it).
    pub service: std::sync::Arc<confab_membership::service::MembershipService>,
    pub gateways: Vec<(SocketAddr, AppHandle)>,
    /// The gateways' `run` tasks: aborting one is a dead gateway.
    pub tasks: Vec<tokio::task::JoinHandle<Result<(), confab_gateway::AppError>>>,
    /// Stops the membership service (its `run` task).
    membership_stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    membership_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    _db: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(gateways: usize) -> Cluster {
        Self::start_with(gateways, None).await
    }

    /// A cluster of `gateways` on `backend`.
    pub async fn start_on(backend: Backend, gateways: usize) -> Cluster {
        Self::start_tweaked_on(backend, gateways, None, |_| {}).await
    }

    /// The NATS server (panics on a Redis cluster).
    pub fn nats(&self) -> &NatsServer {
        self.nats.as_ref().expect("a NATS cluster")
    }

    /// The `CONFAB_*` variables of a gateway process joining this cluster.
    pub fn gateway_env(&self) -> Vec<(&'static str, String)> {
        match self.backend {
            Backend::Nats => vec![
                ("CONFAB_BUS__KIND", "nats".into()),
                ("CONFAB_BUS__NATS__URL", self.nats().url()),
                ("CONFAB_MEMBERSHIP__KIND", "nats".into()),
            ],
            Backend::Redis => vec![
                ("CONFAB_BUS__KIND", "redis".into()),
                ("CONFAB_BUS__REDIS__URL", self.redis.as_ref().unwrap().url()),
                ("CONFAB_MEMBERSHIP__KIND", "http".into()),
                (
                    "CONFAB_MEMBERSHIP__URL",
                    format!("http://{}", self.membership),
                ),
            ],
        }
    }

    /// With presence timings `(gateway heartbeat ms, tracker ttl ms)`.
    pub async fn start_with(gateways: usize, presence: Option<(u64, u64)>) -> Cluster {
        Self::start_tweaked(gateways, presence, |_| {}).await
    }

    /// The gateways' configuration as `start` makes it.
    pub fn gateway_config(nats_url: &str) -> confab_gateway::GatewayConfig {
        let mut cfg = test_config();
        cfg.bus.kind = BusKind::Nats;
        cfg.bus.nats = confab_bus::NatsConfig::new(nats_url);
        cfg.membership.kind = MembershipKind::Nats;
        cfg.service_token = Some(SERVICE_TOKEN.into());
        cfg
    }

    /// A gateway's configuration on Redis, calling membership at `membership`
    /// over HTTP.
    pub fn redis_gateway_config(
        redis_url: &str,
        membership: SocketAddr,
    ) -> confab_gateway::GatewayConfig {
        let mut cfg = test_config();
        cfg.bus.kind = BusKind::Redis;
        cfg.bus.redis = confab_bus::RedisConfig::new(redis_url);
        cfg.membership.kind = MembershipKind::Http;
        cfg.membership.url = format!("http://{membership}");
        cfg.service_token = Some(SERVICE_TOKEN.into());
        cfg
    }

    /// With presence timings and every gateway's configuration changed by
    /// `tweak`.
    pub async fn start_tweaked(
        gateways: usize,
        presence: Option<(u64, u64)>,
        tweak: impl Fn(&mut confab_gateway::GatewayConfig),
    ) -> Cluster {
        Self::start_configured(gateways, presence, tweak, |_| {}).await
    }

    /// Like [`Cluster::start_tweaked`], the membership service's
    /// configuration changed by `tweak_membership` too.
    pub async fn start_configured(
        gateways: usize,
        presence: Option<(u64, u64)>,
        tweak: impl Fn(&mut confab_gateway::GatewayConfig),
        tweak_membership: impl FnOnce(&mut MembershipConfig),
    ) -> Cluster {
        Self::start_configured_on(Backend::Nats, gateways, presence, tweak, tweak_membership).await
    }

    /// [`Cluster::start_tweaked`] on `backend`.
    pub async fn start_tweaked_on(
        backend: Backend,
        gateways: usize,
        presence: Option<(u64, u64)>,
        tweak: impl Fn(&mut confab_gateway::GatewayConfig),
    ) -> Cluster {
        Self::start_configured_on(backend, gateways, presence, tweak, |_| {}).await
    }

    /// [`Cluster::start_configured`] on `backend`.
    pub async fn start_configured_on(
        backend: Backend,
        gateways: usize,
        presence: Option<(u64, u64)>,
        tweak: impl Fn(&mut confab_gateway::GatewayConfig),
        tweak_membership: impl FnOnce(&mut MembershipConfig),
    ) -> Cluster {
        let (nats, redis) = match backend {
            Backend::Nats => (Some(NatsServer::start()), None),
            Backend::Redis => (None, Some(RedisServer::start_persistent())),
        };
        let db = tempfile::tempdir().unwrap();
        let mut cfg = MembershipConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: format!(
                "sqlite://{}?mode=rwc",
                db.path().join("membership.db").display()
            ),
            service_token: Some(SERVICE_TOKEN.into()),
            ..MembershipConfig::default()
        };
        match (&nats, &redis) {
            (Some(nats), _) => cfg.nats = Some(confab_bus::NatsConfig::new(nats.url())),
            (_, Some(redis)) => {
                cfg.bus.kind = Some(confab_membership::config::BusKind::Redis);
                cfg.bus.redis = confab_bus::RedisConfig::new(redis.url());
            }
            _ => unreachable!(),
        }
        if let Some((_, ttl)) = presence {
            cfg.presence_ttl = Duration::from_millis(ttl);
        }
        tweak_membership(&mut cfg);
        let app = confab_membership::app::App::build(cfg)
            .await
            .expect("membership builds");
        let membership = app.http_addr();
        let service = std::sync::Arc::clone(app.service());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let membership_task = tokio::spawn(async move {
            let _ = app
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });

        let mut gws = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..gateways {
            let mut cfg = match (&nats, &redis) {
                (Some(nats), _) => Self::gateway_config(&nats.url()),
                (_, Some(redis)) => Self::redis_gateway_config(&redis.url(), membership),
                _ => unreachable!(),
            };
            if let Some((heartbeat, _)) = presence {
                cfg.presence.heartbeat = Duration::from_millis(heartbeat);
            }
            tweak(&mut cfg);
            cfg.validate().unwrap();
            let deps = Deps::connect(&cfg)
                .await
                .expect("gateway connects to its bus");
            let app = App::build(cfg, deps).await.unwrap();
            let addr = app.local_addr();
            let handle = app.handle();
            tasks.push(tokio::spawn(app.run(std::future::pending())));
            gws.push((addr, handle));
        }
        Cluster {
            backend,
            nats,
            redis,
            membership,
            service,
            gateways: gws,
            tasks,
            membership_stop: std::sync::Mutex::new(Some(stop)),
            membership_task: std::sync::Mutex::new(Some(membership_task)),
            _db: db,
        }
    }

    /// Stops the membership service (HTTP API, NATS endpoints, projections,
    /// notifier) and waits until it stopped; gateways keep running.
    pub async fn stop_membership(&self) {
        if let Some(stop) = self.membership_stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        let task = self.membership_task.lock().unwrap().take();
        if let Some(task) = task {
            task.await.unwrap();
        }
    }

    pub fn gateway_url(&self, i: usize) -> String {
        format!("http://{}", self.gateways[i].0)
    }

    /// Runs a membership command through the HTTP API.
    pub async fn command(&self, actor: Option<&str>, command: Value) -> (u16, Value) {
        let mut body = json!({ "command": command });
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/commands", self.membership))
            .bearer_auth(SERVICE_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Workspace `w1` owned by alice with the public channel `general`;
    /// each of `members` joins both.
    pub async fn workspace_with_general(&self, members: &[&str]) {
        let members: Vec<(&str, &str)> = members.iter().map(|m| (*m, "member")).collect();
        self.workspace_with_general_roles(&members).await;
    }

    /// Like [`Cluster::workspace_with_general`], each member `(user, role)`
    /// with its workspace role.
    pub async fn workspace_with_general_roles(&self, members: &[(&str, &str)]) {
        self.ok(
            None,
            json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
        )
        .await;
        self.ok(
            Some("alice"),
            json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
        )
        .await;
        for (m, role) in members {
            self.ok(
                Some("alice"),
                json!({ "type": "add_workspace_member", "workspace": "w1", "user": m, "role": role }),
            )
            .await;
            self.ok(
                Some(m),
                json!({ "type": "join_channel", "channel": "general" }),
            )
            .await;
        }
    }

    pub async fn ok(&self, actor: Option<&str>, command: Value) {
        let (status, body) = self.command(actor, command.clone()).await;
        assert_eq!(status, 200, "{command} -> {body}");
    }
}

#[tokio::test]
async fn membership_changes_reach_sockets_on_every_gateway() {
    membership_changes_reach_every_gateway(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_membership_changes_reach_sockets_on_every_gateway() {
    membership_changes_reach_every_gateway(Backend::Redis).await;
}

async fn membership_changes_reach_every_gateway(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    c.ok(
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    c.ok(
        Some("alice"),
        json!({ "type": "add_workspace_member", "workspace": "w1", "user": "bob", "role": "member" }),
    )
    .await;
    c.ok(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
    )
    .await;
    c.ok(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "secret", "workspace": "w1", "name": "secret", "visibility": "private" }),
    )
    .await;

    let node = NodeClient::spawn().await;
    // Alice on gateway A is in general from the start (rooms at connect).
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    // Bob on gateway B is in the workspace, not yet in general.
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;

    let general = RoomId::parse("channel:general").unwrap();
    let gw_a = &c.gateways[0].1;
    let gw_b = &c.gateways[1].1;
    eventually("alice in general on A", T, || gw_a.members(&general) == 1).await;
    assert_eq!(gw_b.members(&general), 0);

    // A private channel bob is not in: refused with a reason.
    let ack = node
        .emit_with_ack("bob", "room:join", vec![json!("channel:secret")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
    assert!(
        ack[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("member"),
        "{ack:?}"
    );

    // Bob joins general through the API: his socket on B follows.
    c.ok(
        Some("bob"),
        json!({ "type": "join_channel", "channel": "general" }),
    )
    .await;
    let joined = node.expect("bob", is_event("room:joined"), T).await;
    assert_eq!(joined["args"][0]["room"], "channel:general");
    eventually("bob in general on B", T, || gw_b.members(&general) == 1).await;

    // An event emitted through gateway A reaches bob on gateway B.
    gw_a.emit(
        &general,
        "message:new",
        &json!({ "id": "m1", "body": "hi" }),
    )
    .await
    .unwrap();
    let m = node.expect("bob", is_event("message:new"), T).await;
    assert_eq!(m["args"][0]["id"], "m1");
    node.expect("alice", is_event("message:new"), T).await;

    // room:join on a room he now belongs to is acked.
    let ack = node
        .emit_with_ack("bob", "room:join", vec![json!("channel:general")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");

    // Kicked: nothing further from general reaches bob.
    c.ok(
        Some("alice"),
        json!({ "type": "kick", "channel": "general", "user": "bob" }),
    )
    .await;
    let left = node.expect("bob", is_event("room:left"), T).await;
    assert_eq!(left["args"][0]["room"], "channel:general");
    eventually("bob out of general on B", T, || gw_b.members(&general) == 0).await;
    gw_a.emit(&general, "message:new", &json!({ "id": "m2" }))
        .await
        .unwrap();
    let m2 = node.expect("alice", is_event("message:new"), T).await;
    assert_eq!(m2["args"][0]["id"], "m2");
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;

    // And a room:join attempt after the kick is refused.
    let ack = node
        .emit_with_ack("bob", "room:join", vec![json!("channel:general")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
}

#[tokio::test]
async fn subject_injection_through_the_apis_is_refused() {
    let c = Cluster::start(1).await;
    c.ok(
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    for bad in ["a.b", "*", ">", "a b", "", "w1.>"] {
        let (status, body) = c
            .command(
                Some("alice"),
                json!({ "type": "create_channel", "channel": bad, "workspace": "w1", "name": "x", "visibility": "public" }),
            )
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let http = reqwest::Client::new();
    for room in ["channel:a.b", "channel:*", "channel:>", "user:a%20b"] {
        let resp = http
            .post(format!("http://{}/v1/emit", c.membership))
            .bearer_auth(SERVICE_TOKEN)
            .json(&json!({ "room": room, "event": "app:note", "data": {} }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{room}");
    }
    // Through a socket too.
    let node = NodeClient::spawn().await;
    connect_as(&node, "a", "alice", &c.gateway_url(0)).await;
    for room in ["channel:a.b", "workspace:*", "dm:>", "channel:a\tb"] {
        let ack = node
            .emit_with_ack("a", "room:join", vec![json!(room)], T)
            .await
            .unwrap();
        assert_eq!(ack[0]["error"]["code"], "invalid_room", "{room}: {ack:?}");
    }
}
