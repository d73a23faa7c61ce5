//! The fault harness (issue #16): a cluster of real processes (nats-server
//! or a 3-node JetStream cluster, a PostgreSQL of its own, the membership
//! service and two gateways as processes), careful clients driving steady
//! traffic through TCP proxies standing in for the load balancer, fault
//! injection, and a checker.
//!
//! * **Traffic.** `alice` sends `message:send` to `channel:general` one at a
//!   time, every [`PACE`], each retried with its `clientMsgId` until acked
//!   (a retry after an ack was lost is answered with the stored original).
//!   `bob` and `carol` receive on the other gateway, with connection-state
//!   recovery on (socket.io-client reconnecting).
//! * **Faults** are phases: traffic before, the fault, the heal, traffic
//!   after; [`Rig::phase`] runs one and measures it.
//! * **The checker** ([`Rig::check`]) reads everything the clients saw and
//!   reports per phase: acked, lost (acked and not delivered to a receiver,
//!   which all stay or recover), duplicates, order violations, history
//!   completeness and how long after the heal it was complete, recovery
//!   outcomes, time to ready.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_test_support::{NatsCluster, NatsServer, NodeClient, PostgresServer, RedisServer};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cluster::SERVICE_TOKEN;
use crate::recovery::{Proxy, reconnecting};
use crate::support::*;

/// Time between two sends of the careful sender.
pub const PACE: Duration = Duration::from_millis(40);

/// How long the sender waits for one ack before sending again.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a message may take to be acked before the run fails.
const MAX_ACK: Duration = Duration::from_secs(60);

/// Longest wait for history to hold every acked message after a heal.
const HISTORY_WAIT: Duration = Duration::from_secs(60);

pub const ROOM: &str = "channel:general";

/// The NATS connection name of the rig's membership service.
const MEMBERSHIP_CONNECTION: &str = "confab-membership-rig";
pub const RECEIVERS: [&str; 2] = ["bob", "carol"];

/// A process of the rig (gateway or membership service).
pub struct Proc {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Proc {
    async fn start(binary: &str, env: &[(&str, String)]) -> Proc {
        let mut command = tokio::process::Command::new(binary);
        command
            .env("CONFAB_LISTEN", "127.0.0.1:0")
            .env("CONFAB_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{binary} is ready in time"))
            .unwrap()
            .unwrap_or_else(|| panic!("{binary} prints its address"));
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Proc { child, addr }
    }

    /// SIGKILL, reaped.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits (30 s) for the graceful exit.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// The bus servers.
pub enum Nats {
    One(NatsServer),
    Cluster(NatsCluster),
    /// No NATS: the Redis backend (`bus.kind = "redis"`, the membership
    /// service on its SQL event log, gateways calling it over HTTP), as
    /// `CONFAB_BUS=redis just up` runs it.
    Redis(RedisServer),
}

impl Nats {
    pub fn urls(&self) -> String {
        match self {
            Nats::One(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
            Nats::Redis(r) => r.url(),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Nats::One(_) | Nats::Redis(_) => 1,
            Nats::Cluster(c) => c.len().min(3),
        }
    }
}

/// One acked message.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    phase: usize,
    /// From the first attempt to the ack.
    took: Duration,
    /// The first attempt, in Unix ms (the node driver's clock is the same
    /// machine's): delivery latency is a receiver's `at` minus this.
    first_ms: u128,
}

/// What the sender did.
#[derive(Default)]
struct SendLog {
    acked: Vec<Acked>,
    /// Attempts that failed (timeout, disconnected, refused) and were
    /// retried, by phase.
    retries: HashMap<usize, u64>,
    /// Sends never acked within [`MAX_ACK`].
    unacked: Vec<u64>,
}

/// The figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    pub name: String,
    pub acked: usize,
    pub retries: u64,
    pub slowest_ack_ms: u128,
    pub lost: usize,
    pub duplicates: usize,
    pub order_violations: usize,
    pub history_complete: bool,
    pub history_after_heal_ms: u128,
    /// When JetStream first answered stream info requests for `ROOMS` and
    /// `MEMBERSHIP` again after the heal (a fresh connection asking every 100 ms): what
    /// the log readers wait for, and what they cannot make sooner (`u128::MAX`:
    /// not within 60 s). `None` on Redis.
    pub jetstream_after_heal_ms: Option<u128>,
    pub recovered: usize,
    pub fresh: usize,
    pub recovery_failed: usize,
    pub ready_after_heal_ms: u128,
    pub notes: Vec<String>,
}

pub struct Rig {
    pub nats: Nats,
    pub pg: PostgresServer,
    pub membership: Proc,
    pub gateways: Vec<Proc>,
    /// Index in `gateways` of the sender's gateway.
    sender_gw: usize,
    sender: Arc<NodeClient>,
    receivers: Arc<NodeClient>,
    sender_proxy: Proxy,
    receiver_proxy: Proxy,
    db: DatabaseConnection,
    sent: Arc<Mutex<SendLog>>,
    phase: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    traffic: Option<tokio::task::JoinHandle<()>>,
    /// `(phase, name, heal time)` of every phase so far.
    phases: Vec<(String, Instant, Instant)>,
    pub reports: Vec<PhaseReport>,
    /// Notes of the running phase (e.g. what a call answered meanwhile).
    pub notes: Vec<String>,
}

async fn start_membership(nats: &Nats, pg: &PostgresServer) -> Proc {
    let bus = match nats {
        Nats::Redis(r) => [
            ("CONFAB_BUS__KIND", "redis".to_owned()),
            ("CONFAB_BUS__REDIS__URL", r.url()),
        ],
        _ => [
            ("CONFAB_NATS__URL", nats.urls()),
            ("CONFAB_NATS__REPLICAS", nats.replicas().to_string()),
        ],
    };

    let mut env = vec![("CONFAB_DATABASE_URL", pg.url())];
    env.extend(bus);
    if !matches!(nats, Nats::Redis(_)) {
        // Named, so that a fault can find the node its connection is on.
        env.push(("CONFAB_NATS__NAME", MEMBERSHIP_CONNECTION.to_owned()));
    }
    Proc::start(env!("CARGO_BIN_EXE_confab-e2e-membership"), &env).await
}

/// A gateway on the rig's bus; on Redis it calls the membership service
/// at `membership` over HTTP.
async fn start_gateway(nats: &Nats, membership: SocketAddr) -> Proc {
    let bus = match nats {
        Nats::Redis(r) => [
            ("CONFAB_BUS__KIND", "redis".to_owned()),
            ("CONFAB_BUS__REDIS__URL", r.url()),
            ("CONFAB_MEMBERSHIP__KIND", "http".into()),
            ("CONFAB_MEMBERSHIP__URL", format!("http://{membership}")),
        ],
        _ => [
            ("CONFAB_BUS__KIND", "nats".into()),
            ("CONFAB_BUS__NATS__URL", nats.urls()),
            ("CONFAB_BUS__NATS__REPLICAS", nats.replicas().to_string()),
            ("CONFAB_MEMBERSHIP__KIND", "nats".into()),
        ],
    };
    let mut env = bus.to_vec();
    env.extend([
        ("CONFAB_AUTH__HS256_SECRET", SECRET.into()),
        ("CONFAB_AUTH__ISSUER", ISSUER.into()),
        ("CONFAB_AUTH__AUDIENCE", AUDIENCE.into()),
        ("CONFAB_SHUTDOWN_GRACE", "5s".into()),
        ("CONFAB_SHUTDOWN_SPREAD", "1s".into()),
        // The careful sender sends 25 a second, the slow-reader phase
        // more: above the default per-connection rates.
        ("CONFAB_MESSAGES__CONN_RATE_PER_SEC", "500".into()),
        ("CONFAB_MESSAGES__CONN_BURST", "1000".into()),
        ("CONFAB_MESSAGES__USER_RATE_PER_SEC", "500".into()),
        ("CONFAB_MESSAGES__USER_BURST", "1000".into()),
    ]);
    Proc::start(env!("CARGO_BIN_EXE_confab-e2e-gateway"), &env).await
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One counter of a Prometheus exposition (summed over its series when
/// `series` is a prefix of several); 0 when absent.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn http_status(url: &str) -> u16 {
    match reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

impl Rig {
    /// Starts everything, sets up `w1` / `channel:general` with alice, bob
    /// and carol, connects them and starts the traffic.
    pub async fn start(nats: Nats) -> Rig {
        let pg = tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap();
        let membership = start_membership(&nats, &pg).await;
        let gateways = vec![
            start_gateway(&nats, membership.addr).await,
            start_gateway(&nats, membership.addr).await,
        ];
        let db = confab_membership::sql::connect(&pg.url()).await.unwrap();
        let sender_proxy = Proxy::start(gateways[0].addr).await;
        let receiver_proxy = Proxy::start(gateways[1].addr).await;
        let mut rig = Rig {
            nats,
            pg,
            membership,
            gateways,
            sender_gw: 0,
            sender: Arc::new(NodeClient::spawn().await),
            receivers: Arc::new(NodeClient::spawn().await),
            sender_proxy,
            receiver_proxy,
            db,
            sent: Arc::default(),
            phase: Arc::default(),
            stop: Arc::default(),
            traffic: None,
            phases: Vec::new(),
            reports: Vec::new(),
            notes: Vec::new(),
        };
        for (actor, command) in [
            (
                None,
                json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
            ),
            (
                Some("alice"),
                json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
            ),
        ] {
            rig.command(actor, command).await;
        }
        for m in RECEIVERS {
            rig.command(
                Some("alice"),
                json!({ "type": "add_workspace_member", "workspace": "w1", "user": m, "role": "member" }),
            )
            .await;
            rig.command(
                Some(m),
                json!({ "type": "join_channel", "channel": "general" }),
            )
            .await;
        }
        let t = Duration::from_secs(20);
        rig.sender
            .connect(
                "alice",
                &rig.sender_proxy.url(),
                reconnecting(&token("alice")),
            )
            .await;
        rig.sender.expect("alice", is_type("connect"), t).await;
        for m in RECEIVERS {
            rig.receivers
                .connect(m, &rig.receiver_proxy.url(), reconnecting(&token(m)))
                .await;
            rig.receivers.expect(m, is_type("connect"), t).await;
        }
        rig.phases
            .push(("setup".into(), Instant::now(), Instant::now()));
        rig.start_traffic();
        rig
    }

    /// Runs a membership command through the HTTP API, retrying (30 s).
    pub async fn command(&self, actor: Option<&str>, command: Value) {
        let mut body = json!({ "command": command });
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp = reqwest::Client::new()
                .post(format!("http://{}/v1/commands", self.membership.addr))
                .bearer_auth(SERVICE_TOKEN)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => return,
                other if Instant::now() > deadline => panic!("{command}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Runs a membership command once (10 s at most); its status (0: no
    /// answer) and how long it took go into the phase's notes.
    pub async fn command_once(&mut self, actor: Option<&str>, command: Value) -> u16 {
        let mut body = json!({ "command": command });
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        let asked = Instant::now();
        let status = reqwest::Client::new()
            .post(format!("http://{}/v1/commands", self.membership.addr))
            .bearer_auth(SERVICE_TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        self.notes.push(format!(
            "command `{}` answered {status} in {} ms",
            command["type"].as_str().unwrap_or_default(),
            asked.elapsed().as_millis()
        ));
        status
    }

    /// The membership service's `/readyz` body.
    pub async fn membership_readyz(&self) -> Value {
        reqwest::get(format!("http://{}/readyz", self.membership.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn start_traffic(&mut self) {
        let (node, sent, stop, phase) = (
            Arc::clone(&self.sender),
            Arc::clone(&self.sent),
            Arc::clone(&self.stop),
            Arc::clone(&self.phase),
        );
        self.traffic = Some(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let first = Instant::now();
                let first_ms = unix_ms();
                let arg = json!({ "room": ROOM, "body": format!("m{n}"), "clientMsgId": format!("c{n}") });
                loop {
                    let reply = node
                        .emit_with_ack("alice", "message:send", vec![arg.clone()], ACK_TIMEOUT)
                        .await;
                    match reply {
                        Ok(args) if args[0]["id"].is_string() => {
                            let mut log = sent.lock().unwrap();
                            log.acked.push(Acked {
                                id: args[0]["id"].as_str().unwrap().to_owned(),
                                phase: phase.load(Ordering::Relaxed),
                                took: first.elapsed(),
                                first_ms,
                            });
                            break;
                        }
                        _ => {
                            *sent
                                .lock()
                                .unwrap()
                                .retries
                                .entry(phase.load(Ordering::Relaxed))
                                .or_default() += 1;
                            if first.elapsed() > MAX_ACK {
                                sent.lock().unwrap().unacked.push(n);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(PACE).await;
            }
        }));
    }

    /// The live gateway the sender is not on.
    fn other_gw(&self) -> usize {
        1 - self.sender_gw
    }

    /// Moves the receivers to the gateway the sender is not on (a cut and a
    /// recovery, as a load balancer rebalancing would cause).
    async fn rebalance(&self) {
        self.receiver_proxy
            .point_to(Some(self.gateways[self.other_gw()].addr));
        self.receiver_proxy.cut();
    }

    /// Runs one phase: `before` of traffic, `fault` (which returns once
    /// healed), `after` of traffic; then measures history and readiness.
    pub async fn phase<F>(&mut self, name: &str, fault: F)
    where
        F: AsyncFnOnce(&mut Rig),
    {
        let index = self.phases.len();
        self.phase.store(index, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        fault(self).await;
        let healed = Instant::now();
        self.phases.push((name.to_owned(), started, healed));
        let jetstream = match &self.nats {
            Nats::Redis(_) => None,
            nats => Some(tokio::spawn(jetstream_answers(nats.urls()))),
        };
        let ready = self.wait_ready().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut report = PhaseReport {
            name: name.to_owned(),
            ready_after_heal_ms: ready.map_or(u128::MAX, |d| d.as_millis()),
            notes: std::mem::take(&mut self.notes),
            ..PhaseReport::default()
        };
        if let Some(probe) = jetstream {
            report.jetstream_after_heal_ms = Some(match probe.await.unwrap() {
                Ok(t) => (t - healed).as_millis(),
                Err(e) => {
                    report.notes.push(format!("JetStream probe: {e}"));
                    u128::MAX
                }
            });
        }
        // History of everything acked so far, timed from the heal.
        let wanted: HashSet<String> = self
            .sent
            .lock()
            .unwrap()
            .acked
            .iter()
            .map(|a| a.id.clone())
            .collect();
        let deadline = Instant::now() + HISTORY_WAIT;
        loop {
            let have = self.history_ids().await;
            if wanted.iter().all(|id| have.contains(id)) {
                report.history_complete = true;
                report.history_after_heal_ms = healed.elapsed().as_millis();
                break;
            }
            if Instant::now() > deadline {
                let missing = wanted.iter().filter(|id| !have.contains(*id)).count();
                report
                    .notes
                    .push(format!("history missing {missing} acked messages"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.reports.push(report);
    }

    /// Waits (60 s) until the membership service and every gateway say ready;
    /// how long that took.
    async fn wait_ready(&self) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let mut all =
                http_status(&format!("http://{}/readyz", self.membership.addr)).await == 200;
            for gw in &self.gateways {
                all &= http_status(&format!("http://{}/readyz", gw.addr)).await == 200;
            }
            if all {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Message ids in history (the membership service's `messages` table).
    async fn history_ids(&self) -> HashSet<String> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT id FROM messages WHERE room = '{ROOM}'"),
            ))
            .await;
        match rows {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| r.try_get::<String>("", "id").ok())
                .collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// One scalar of the membership database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    // --- faults -----------------------------------------------------------

    /// Cuts the receivers' connections and keeps them away for `away` (the
    /// traffic goes on), then lets them back to the same gateway: each
    /// recovers, replaying what it missed. Notes how long from letting them
    /// back until both were connected again (the replay included).
    pub async fn cut_receivers(&mut self, away: Duration) {
        let target = self.gateways[self.other_gw()].addr;
        let connects = |node: &NodeClient| {
            node.received()
                .iter()
                .filter(|m| m["type"] == "connect")
                .count()
        };
        self.receiver_proxy.point_to(None);
        self.receiver_proxy.cut();
        tokio::time::sleep(away).await;
        let before = connects(&self.receivers);
        let (missed, last) = {
            let sent = self.sent.lock().unwrap();
            let missed = sent
                .acked
                .iter()
                .rev()
                .take_while(|a| a.phase == self.phase.load(Ordering::Relaxed))
                .count();
            (missed, sent.acked.last().map(|a| a.id.clone()))
        };
        let back = Instant::now();
        self.receiver_proxy.point_to(Some(target));
        let deadline = back + Duration::from_secs(30);
        let has_last = |node: &NodeClient, who: &str| {
            node.received().iter().any(|m| {
                m["socket"] == who
                    && m["event"] == "message:new"
                    && m["args"][0]["id"].as_str() == last.as_deref()
            })
        };
        let mut connected_after = None;
        loop {
            if connected_after.is_none() && connects(&self.receivers) >= before + RECEIVERS.len() {
                connected_after = Some(back.elapsed());
            }
            if RECEIVERS.iter().all(|who| has_last(&self.receivers, who)) {
                break;
            }
            if Instant::now() > deadline {
                self.notes
                    .push("receivers did not catch up within 30 s".into());
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.notes.push(format!(
            "let back after {} ms away: both reconnected in {} ms and had every event acked meanwhile ({missed}, replayed) in {} ms",
            away.as_millis(),
            connected_after.unwrap_or_default().as_millis(),
            back.elapsed().as_millis(),
        ));
    }

    /// SIGKILLs the receivers' gateway (they recover on the other one),
    /// then starts a replacement and moves them back onto it.
    pub async fn kill_receivers_gateway(&mut self) {
        let doomed = self.other_gw();
        self.receiver_proxy
            .point_to(Some(self.gateways[self.sender_gw].addr));
        self.gateways[doomed].kill().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.gateways[doomed] = start_gateway(&self.nats, self.membership.addr).await;
        self.rebalance().await;
    }

    /// SIGTERMs the sender's gateway (graceful: close frames, the sender
    /// reconnects to the other one and retries), then starts a replacement
    /// and moves the receivers onto it.
    pub async fn terminate_senders_gateway(&mut self) {
        let doomed = self.sender_gw;
        let other = self.other_gw();
        self.sender_proxy.point_to(Some(self.gateways[other].addr));
        self.gateways[doomed].terminate().await;
        self.sender_gw = other;
        self.gateways[doomed] = start_gateway(&self.nats, self.membership.addr).await;
        self.rebalance().await;
    }

    /// A history call and a join of a room not cached by the gateway, from
    /// a receiver's socket: how long each took to answer, and what.
    pub async fn probe_calls(&mut self) -> Duration {
        let mut slowest = Duration::ZERO;
        for (event, arg) in [
            ("message:history", json!({ "room": ROOM, "limit": 5 })),
            ("room:join", json!("channel:elsewhere")),
        ] {
            let asked = Instant::now();
            let answer = self
                .receivers
                .emit_with_ack("carol", event, vec![arg], Duration::from_secs(20))
                .await;
            let took = asked.elapsed();
            slowest = slowest.max(took);
            let answer = answer.map_or_else(|e| json!({ "client_error": e }), |a| json!(a));
            self.notes.push(format!(
                "`{event}` meanwhile answered in {} ms: `{answer}`",
                took.as_millis()
            ));
        }
        slowest
    }

    /// SIGKILLs the membership service for `down`, checking meanwhile that
    /// calls answer promptly; restarts it. Returns the slowest call.
    pub async fn kill_membership(&mut self, down: Duration) -> Duration {
        self.membership.kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let slowest = self.probe_calls().await;
        tokio::time::sleep(down.saturating_sub(started.elapsed())).await;
        self.membership = start_membership(&self.nats, &self.pg).await;
        slowest
    }

    /// Starts the membership service again (after a kill).
    pub async fn restart_membership(&mut self) {
        self.membership = start_membership(&self.nats, &self.pg).await;
    }

    /// SIGKILLs nats-server (or node `node` of the cluster) and starts it
    /// again on the same port and store after `down`.
    pub async fn kill_nats(&mut self, node: usize, down: Duration) {
        match &mut self.nats {
            Nats::One(s) => s.kill(),
            Nats::Cluster(c) => c.node_mut(node).kill(),
            Nats::Redis(_) => panic!("no NATS on the Redis backend"),
        }
        tokio::time::sleep(down).await;
        match &mut self.nats {
            Nats::One(s) => tokio::task::block_in_place(|| s.restart()),
            Nats::Cluster(c) => tokio::task::block_in_place(|| {
                c.node_mut(node).restart();
                c.wait_for_leader();
            }),
            Nats::Redis(_) => unreachable!(),
        }
    }

    /// Stops redis-server (SIGKILL, or SIGTERM: it writes the AOF and
    /// exits) and starts it again on the same port and data directory
    /// after `down`.
    pub async fn restart_redis(&mut self, graceful: bool, down: Duration) {
        let Nats::Redis(r) = &mut self.nats else {
            panic!("not on the Redis backend");
        };
        tokio::task::block_in_place(|| {
            if graceful {
                r.terminate();
            } else {
                r.kill();
            }
        });
        tokio::time::sleep(down).await;
        tokio::task::block_in_place(|| r.restart());
    }

    /// The cluster node the membership service's NATS connection is on.
    pub fn membership_nats_node(&self) -> usize {
        let Nats::Cluster(c) = &self.nats else {
            return 0;
        };
        (0..c.len())
            .find(|&i| {
                c.node(i).monitor_json("/connz?limit=4096")["connections"]
                    .as_array()
                    .is_some_and(|conns| {
                        conns
                            .iter()
                            .any(|conn| conn["name"] == MEMBERSHIP_CONNECTION)
                    })
            })
            .expect("the membership service is connected to a node")
    }

    /// Pauses cluster node `node` (SIGSTOP) for `down`, then resumes it.
    pub async fn pause_nats_node(&mut self, node: usize, down: Duration) {
        if let Nats::Cluster(c) = &self.nats {
            c.node(node).pause();
            tokio::time::sleep(down).await;
            c.node(node).resume();
        }
    }

    /// Stops the membership service's PostgreSQL for `down`, checking that
    /// calls answer promptly meanwhile; starts it again. Returns the
    /// slowest call.
    pub async fn stop_postgres(&mut self, down: Duration) -> Duration {
        tokio::task::block_in_place(|| self.pg.stop());
        let started = Instant::now();
        let slowest = self.probe_calls().await;
        tokio::time::sleep(down.saturating_sub(started.elapsed())).await;
        tokio::task::block_in_place(|| self.pg.start_again());
        slowest
    }

    /// A client of the receivers' gateway too slow to read: a raw
    /// WebSocket with a 4 KiB receive buffer (so the kernel cannot absorb
    /// megabytes for it) that joins the room and stops reading, while a
    /// second sender floods the room with bodies of the largest size. Waits
    /// (at most `limit`) until the gateway counts a slow-consumer drop, then
    /// reads what the kernel still held for the slow client (its frames
    /// and the close, if it got through), reconnects it with recovery
    /// (`{pid, offset}` of the last event it read) and checks that it got
    /// every careful message acked while it was connected or away, or a
    /// `recovery:failed`. Notes the figures; returns whether the gateway
    /// dropped it.
    pub async fn slow_reader(&mut self, limit: Duration) -> bool {
        let gw = self.gateways[self.other_gw()].addr;
        let path = "/socket.io/?EIO=4&transport=websocket";
        let metrics_url = format!("http://{gw}/metrics");
        let slow_series = [
            r#"confab_gateway_dropped_total{reason="slow_consumer"}"#,
            r#"confab_gateway_closed_total{reason="slow_consumer"}"#,
        ];
        let scrape = async || {
            let text = reqwest::get(&metrics_url)
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            slow_series.map(|series| counter(&text, series))
        };
        let before = scrape().await;
        let auth = json!({ "token": token("bob") });
        let mut ws = RawWs::connect_small_rcvbuf(gw, path, 4096).await;
        let reply = ws.socket_io_connect(Some(&auth)).await;
        assert!(reply.starts_with("40"), "{reply}");
        let pid = serde_json::from_str::<Value>(&reply[2..]).unwrap()["pid"]
            .as_str()
            .expect("recovery on: the CONNECT reply has a pid")
            .to_owned();
        // Careful messages acked from here on must reach the slow client
        // (live, replayed or drained from its buffers); the ones just
        // before may have been published before it joined.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first_expected = self.sent.lock().unwrap().acked.len();
        // From now on it reads nothing; bob-bulk fills its queue.
        let big = "x".repeat(8 * 1024 - 64);
        let bulk = Arc::clone(&self.receivers);
        bulk.connect(
            "bob-bulk",
            &format!("http://{gw}"),
            reconnecting(&token("bob")),
        )
        .await;
        bulk.expect("bob-bulk", is_type("connect"), Duration::from_secs(20))
            .await;
        let started = Instant::now();
        let mut dropped_after = None;
        let mut i = 0;
        while started.elapsed() < limit {
            for _ in 0..20 {
                i += 1;
                bulk.emit(
                    "bob-bulk",
                    "message:send",
                    vec![json!({ "room": ROOM, "body": big, "clientMsgId": format!("bulk{i}") })],
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = scrape().await;
            if now[0] > before[0] || now[1] > before[1] {
                dropped_after = Some(started.elapsed());
                break;
            }
        }
        bulk.disconnect("bob-bulk").await;
        // What the kernel held for it, then the end of the connection.
        let mut ids = HashSet::new();
        let mut last_offset = None;
        let mut close = None;
        let mut frames = 0;
        loop {
            match ws.next(Duration::from_secs(10)).await {
                Seen::Text(t) => {
                    frames += 1;
                    note_event(&t, &mut ids, &mut last_offset);
                }
                Seen::Binary(_) => {}
                Seen::Closed(frame) => {
                    close = Some(frame.map_or_else(
                        || "no close frame (connection ended)".to_owned(),
                        |f| format!("close {} \"{}\"", u16::from(f.code), f.reason),
                    ));
                    break;
                }
                Seen::Timeout => break,
            }
        }
        let dropped = dropped_after.is_some();
        let counted = scrape().await;
        self.notes.push(format!(
            "slow reader (4 KiB receive buffer, {i} bulk sends of 8 KiB): {}; `dropped_total{{slow_consumer}}` +{}, `closed_total{{slow_consumer}}` +{}; it then read {frames} frames still buffered and {}",
            dropped_after.map_or_else(
                || format!("NOT dropped within {} ms", limit.as_millis()),
                |d| format!("dropped by the gateway {} ms after the flood began", d.as_millis())
            ),
            counted[0] - before[0],
            counted[1] - before[1],
            close.as_deref().unwrap_or("the connection was still open"),
        ));
        drop(ws);
        // Back with recovery, from the last event it read.
        let back = Instant::now();
        let mut again = RawWs::connect(&format!("ws://{gw}{path}")).await;
        let mut resume = auth.clone();
        resume["pid"] = json!(pid);
        if let Some(o) = &last_offset {
            resume["offset"] = json!(o);
        }
        let reply = again.socket_io_connect(Some(&resume)).await;
        let recovered = serde_json::from_str::<Value>(&reply[2..])
            .ok()
            .is_some_and(|r| r["pid"] == json!(pid));
        let last_expected = self.sent.lock().unwrap().acked.last().map(|a| a.id.clone());
        let mut failed = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_expected.as_ref().is_some_and(|id| !ids.contains(id)) && failed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match again.next(left).await {
                Seen::Text(t) if t.starts_with(r#"42["recovery:failed""#) => failed = Some(t),
                Seen::Text(t) if t == "2" => again.send("3").await,
                Seen::Text(t) => note_event(&t, &mut ids, &mut last_offset),
                _ => break,
            }
        }
        let caught_up = back.elapsed();
        let expected: Vec<String> = {
            let sent = self.sent.lock().unwrap();
            let end = sent
                .acked
                .iter()
                .position(|a| Some(&a.id) == last_expected.as_ref())
                .map_or(first_expected, |p| p + 1);
            sent.acked[first_expected.min(end)..end]
                .iter()
                .map(|a| a.id.clone())
                .collect()
        };
        let missing = expected.iter().filter(|id| !ids.contains(*id)).count();
        self.notes.push(match &failed {
            Some(f) => format!(
                "reconnected with recovery: `{f}` (recovered: {recovered}); {missing} of {} careful messages missing",
                expected.len()
            ),
            None => format!(
                "reconnected with recovery (recovered: {recovered}) and had all but {missing} of the {} careful messages acked since it joined {} ms later",
                expected.len(),
                caught_up.as_millis()
            ),
        });
        assert!(
            failed.is_some() || (recovered && missing == 0),
            "the slow client neither recovered everything nor was told recovery failed: {:?}",
            self.notes
        );
        // Delivery latency of the other receivers while it happened.
        let first_ms: HashMap<String, u128> = self
            .sent
            .lock()
            .unwrap()
            .acked
            .iter()
            .filter(|a| a.phase == self.phase.load(Ordering::Relaxed))
            .map(|a| (a.id.clone(), a.first_ms))
            .collect();
        let mut latencies: Vec<u128> = self
            .receivers
            .received()
            .iter()
            .filter(|m| RECEIVERS.iter().any(|r| m["socket"] == *r) && m["event"] == "message:new")
            .filter_map(|m| {
                let sent = first_ms.get(m["args"][0]["id"].as_str()?)?;
                Some((m["at"].as_u64()? as u128).saturating_sub(*sent))
            })
            .collect();
        latencies.sort_unstable();
        if !latencies.is_empty() {
            self.notes.push(format!(
                "meanwhile bob and carol (same gateway) got each careful message {} ms (median) / {} ms (max) after its send, {} deliveries",
                latencies[latencies.len() / 2],
                latencies[latencies.len() - 1],
                latencies.len()
            ));
        }
        dropped
    }

    /// Stops the traffic and checks everything; writes the report to
    /// `CONFAB_FAULTS_REPORT` when set. Fails the test when anything was
    /// lost, duplicated, reordered or never acked.
    pub async fn check(mut self, title: &str) -> Vec<PhaseReport> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.traffic.take() {
            t.await.unwrap();
        }
        // Let the last live messages arrive.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        let phase_of: HashMap<&str, usize> = sent
            .acked
            .iter()
            .map(|a| (a.id.as_str(), a.phase))
            .collect();
        let received = self.receivers.received();
        let mut lost = vec![0usize; self.phases.len()];
        let mut dups = vec![0usize; self.phases.len()];
        let mut order = vec![0usize; self.phases.len()];
        let mut recovered = vec![0usize; self.phases.len()];
        let mut fresh = vec![0usize; self.phases.len()];
        let mut failed = vec![0usize; self.phases.len()];
        for who in RECEIVERS {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut last_offset = 0u64;
            let mut last_n = 0u64;
            // Connects after the first are recoveries (or fresh sessions);
            // attributed to the phase running at the time: the phases are
            // sequential and so are the messages.
            let mut connects = 0;
            // Outcomes seen since the last message: (recovered, fresh,
            // failed), counted in the phase of the next message.
            let mut pending = (0, 0, 0);
            for m in received.iter().filter(|m| m["socket"] == who) {
                if m["type"] == "connect" {
                    connects += 1;
                    if connects > 1 {
                        if m["recovered"] == true {
                            pending.0 += 1;
                        } else {
                            pending.1 += 1;
                        }
                    }
                    continue;
                }
                if m["type"] != "event" {
                    continue;
                }
                if m["event"] == "recovery:failed" {
                    pending.2 += 1;
                    continue;
                }
                if m["event"] != "message:new" {
                    continue;
                }
                let args = m["args"].as_array().cloned().unwrap_or_default();
                let Some(id) = args.first().and_then(|a| a["id"].as_str()) else {
                    continue;
                };
                let Some(&phase) = phase_of.get(id) else {
                    // Not from the careful sender (bulk) or never acked.
                    continue;
                };
                recovered[phase] += pending.0;
                fresh[phase] += pending.1;
                failed[phase] += pending.2;
                pending = (0, 0, 0);
                let count = seen.entry(id.to_owned()).or_default();
                *count += 1;
                if *count > 1 {
                    dups[phase] += 1;
                }
                let offset = args
                    .last()
                    .and_then(Value::as_str)
                    .and_then(|o| o.parse::<u64>().ok())
                    .unwrap_or(0);
                let n: u64 = args[0]["body"]
                    .as_str()
                    .and_then(|b| b.strip_prefix('m'))
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                if *count == 1 && (offset <= last_offset || n <= last_n) {
                    order[phase] += 1;
                }
                last_offset = last_offset.max(offset);
                last_n = last_n.max(n);
            }
            for a in &sent.acked {
                if !seen.contains_key(&a.id) {
                    lost[a.phase] += 1;
                }
            }
            if seen.values().any(|&c| c > 1) {
                eprintln!("{}", duplicate_trace(&received, who, &seen));
            }
        }
        let mut acked = vec![0usize; self.phases.len()];
        for a in &sent.acked {
            acked[a.phase] += 1;
        }
        // Phase 0 is the setup: traffic starts with it and the first phase
        // begins at once, so it rarely holds a message.
        let mut reports = vec![PhaseReport {
            name: "setup".into(),
            history_complete: true,
            ..PhaseReport::default()
        }];
        reports.extend(std::mem::take(&mut self.reports));
        for (i, r) in reports.iter_mut().enumerate() {
            r.acked = acked.get(i).copied().unwrap_or(0);
            r.lost = lost.get(i).copied().unwrap_or(0);
            r.duplicates = dups.get(i).copied().unwrap_or(0);
            r.order_violations = order.get(i).copied().unwrap_or(0);
            r.recovered = recovered.get(i).copied().unwrap_or(0);
            r.fresh = fresh.get(i).copied().unwrap_or(0);
            r.recovery_failed = failed.get(i).copied().unwrap_or(0);
            r.retries = sent.retries.get(&i).copied().unwrap_or(0);
            r.slowest_ack_ms = sent
                .acked
                .iter()
                .filter(|a| a.phase == i)
                .map(|a| a.took.as_millis())
                .max()
                .unwrap_or(0);
        }
        if reports[0].acked == 0 && reports[0].lost == 0 {
            reports.remove(0);
        }
        let table = render(title, &reports, &sent);
        eprintln!("{table}");
        if let Ok(path) = std::env::var("CONFAB_FAULTS_REPORT") {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
            f.write_all(table.as_bytes()).unwrap();
        }
        for r in &reports {
            assert_eq!(r.lost, 0, "{}: acked messages lost\n{table}", r.name);
            assert_eq!(r.duplicates, 0, "{}: duplicates\n{table}", r.name);
            assert_eq!(r.order_violations, 0, "{}: out of order\n{table}", r.name);
            assert!(
                r.history_complete,
                "{}: history incomplete\n{table}",
                r.name
            );
        }
        assert!(
            sent.unacked.is_empty(),
            "sends never acked within {MAX_ACK:?}: {:?}\n{table}",
            sent.unacked
        );
        reports
    }
}

/// What a receiver that got duplicates saw: its lifecycle reports
/// (connects, disconnects, reconnects) and the first duplicated messages
/// with every delivery's offset and time, in arrival order: what tells a
/// gateway delivering twice from a client counting a frame twice.
fn duplicate_trace(received: &[Value], who: &str, seen: &HashMap<String, usize>) -> String {
    let mut out = format!("duplicate trace of {who}:\n");
    let mut shown = HashSet::new();
    for m in received.iter().filter(|m| m["socket"] == who) {
        let is_message = m["type"] == "event" && m["event"] == "message:new";
        if !is_message {
            let _ = writeln!(out, "  {m}");
            continue;
        }
        let Some(id) = m["args"][0]["id"].as_str() else {
            continue;
        };
        if seen.get(id).copied().unwrap_or(0) > 1 && (shown.len() < 12 || shown.contains(id)) {
            shown.insert(id.to_owned());
            let _ = writeln!(
                out,
                "  dup {id} body {} offset {} at {}",
                m["args"][0]["body"],
                m["args"]
                    .as_array()
                    .and_then(|a| a.last())
                    .unwrap_or(&Value::Null),
                m["at"]
            );
        }
    }
    out
}

/// Notes the message id and offset of a `message:new` frame a raw client
/// read (`42["message:new",{...},"offset"]`).
fn note_event(frame: &str, ids: &mut HashSet<String>, last_offset: &mut Option<String>) {
    let Some(json) = frame.strip_prefix("42") else {
        return;
    };
    let Ok(Value::Array(args)) = serde_json::from_str::<Value>(json) else {
        return;
    };
    if args.first() != Some(&json!("message:new")) {
        return;
    }
    if let Some(id) = args.get(1).and_then(|m| m["id"].as_str()) {
        ids.insert(id.to_owned());
    }
    if let Some(o) = args.last().and_then(Value::as_str) {
        *last_offset = Some(o.to_owned());
    }
}

/// When JetStream at `urls` first answers stream info requests for `ROOMS`
/// and `MEMBERSHIP` (asked every 100 ms, each try bounded at 1 s, for at
/// most 60 s), or the last error.
async fn jetstream_answers(urls: String) -> Result<Instant, String> {
    let deadline = Instant::now() + HISTORY_WAIT;
    let servers = urls
        .split(',')
        .map(str::parse::<async_nats::ServerAddr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let mut last = String::new();
    while Instant::now() < deadline {
        // Stream info is answered by the stream's leader: what the log
        // readers and the gateways' publishes wait for. (A consumer
        // creation is answered by the meta leader, maybe before the stream
        // has a leader again.)
        let created = tokio::time::timeout(Duration::from_secs(1), async {
            for stream in ["ROOMS", "MEMBERSHIP"] {
                js.get_stream(stream)
                    .await
                    .map_err(|e| format!("{stream}: {e}"))?;
            }
            Ok::<_, String>(())
        })
        .await;
        match created {
            Ok(Ok(_)) => return Ok(Instant::now()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer within 1 s".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

fn render(title: &str, reports: &[PhaseReport], sent: &SendLog) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## {title}\n");
    let _ = writeln!(
        out,
        "Sender: {} acked, {} never acked. Receivers: {}.\n",
        sent.acked.len(),
        sent.unacked.len(),
        RECEIVERS.join(", ")
    );
    let _ = writeln!(
        out,
        "| fault | acked | retried sends | slowest ack | lost | dup | order | history complete after heal | JetStream answers after heal | recovered / fresh / failed | ready after heal | notes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let history = if r.history_complete {
            format!("{} ms", r.history_after_heal_ms)
        } else {
            "NO".to_owned()
        };
        let ready = if r.ready_after_heal_ms == u128::MAX {
            "never (60 s)".to_owned()
        } else {
            format!("{} ms", r.ready_after_heal_ms)
        };
        let jetstream = match r.jetstream_after_heal_ms {
            Some(u128::MAX) => "never (60 s)".to_owned(),
            Some(ms) => format!("{ms} ms"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ms | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} |",
            r.name,
            r.acked,
            r.retries,
            r.slowest_ack_ms,
            r.lost,
            r.duplicates,
            r.order_violations,
            history,
            jetstream,
            r.recovered,
            r.fresh,
            r.recovery_failed,
            ready,
            r.notes.join("; ")
        );
    }
    out
}
