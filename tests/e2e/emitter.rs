//! The real `@socket.io/redis-emitter` (npm, driven through
//! `tests/js/emitter.mjs`) emits into a running cluster, received by real
//! socket.io-client sockets: on NATS (the membership service's emitter
//! bridge on a Redis of its own, two gateways) and on Redis alone (the
//! bridge on the bus's Redis, two gateways, no NATS), the same test body;
//! and the bridge's lease fails over without emitting anything twice.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use confab_membership::emitter::{EmitterBridge, EmitterConfig};
use confab_test_support::{NodeClient, RedisServer, js_dir, node_modules};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Backend, Cluster, SERVICE_TOKEN};
use crate::recovery::{Proxy, expect_recovered, reconnecting};
use crate::support::*;

const T: Duration = Duration::from_secs(15);
/// Quiet period after which an event that did not come is taken as not
/// delivered (the event that follows it is waited for first, so this only
/// has to cover reordering, not delivery).
const QUIET: Duration = Duration::from_millis(400);
const KEY: &str = "confab-e2e";

/// The npm emitter in a Node process.
struct Emitter {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    req: u64,
}

impl Emitter {
    async fn spawn(redis_url: &str, key: &str) -> Emitter {
        node_modules();
        let mut child = tokio::process::Command::new("node")
            .arg(js_dir().join("emitter.mjs"))
            .arg(redis_url)
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs emitter.mjs");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(T, lines.next_line())
            .await
            .expect("emitter ready in time")
            .unwrap()
            .unwrap();
        assert!(ready.contains("ready"), "{ready}");
        Emitter {
            child,
            stdin,
            lines,
            req: 0,
        }
    }

    /// Runs one command; returns once Redis processed its PUBLISH.
    async fn run(&mut self, cmd: Value) {
        let answer = self.try_run(cmd.clone()).await;
        assert_eq!(answer["type"], "done", "{cmd} -> {answer}");
    }

    /// Runs one command; its answer (`done` or `error`).
    async fn try_run(&mut self, mut cmd: Value) -> Value {
        self.req += 1;
        cmd["req"] = json!(self.req);
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(T, self.lines.next_line())
                .await
                .expect("emitter answers in time")
                .unwrap()
                .expect("emitter alive");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["req"] == json!(self.req) {
                return v;
            }
        }
    }

    async fn emit(&mut self, to: &[&str], event: &str, args: Value) {
        self.run(json!({"op": "emit", "to": to, "event": event, "args": args}))
            .await;
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn bridge_config(redis: &RedisServer, ttl: Duration) -> EmitterConfig {
    bridge_config_at(redis.url(), ttl)
}

fn bridge_config_at(redis_url: String, ttl: Duration) -> EmitterConfig {
    EmitterConfig {
        enabled: true,
        redis_url,
        key: KEY.into(),
        lease_ttl: ttl,
        ..EmitterConfig::default()
    }
}

async fn metrics(c: &Cluster) -> String {
    reqwest::Client::new()
        .get(format!("http://{}/metrics", c.membership))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The count of `kind`/`outcome` in the membership service's metrics.
async fn counted(c: &Cluster, kind: &str, outcome: &str) -> u64 {
    let needle = format!(
        "confab_membership_emitter_messages_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} "
    );
    metrics(c)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

async fn wait_for_lease(c: &Cluster) {
    let start = std::time::Instant::now();
    while !metrics(c)
        .await
        .contains("confab_membership_emitter_lease_held 1")
    {
        assert!(start.elapsed() < T, "the bridge never took its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `app:*` events `socket` got, in order.
fn got(node: &NodeClient, socket: &str, event: &str) -> Vec<Value> {
    node.received()
        .into_iter()
        .filter(|m| m["socket"] == socket && m["type"] == "event" && m["event"] == event)
        .map(|m| m["args"].clone())
        .collect()
}

#[tokio::test]
async fn the_npm_emitter_reaches_sockets_through_the_bridge() {
    npm_emitter_reaches_sockets(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_the_npm_emitter_reaches_sockets_through_the_bridge() {
    npm_emitter_reaches_sockets(Backend::Redis).await;
}

/// The emitter's Redis: one of its own next to NATS, the bus's on Redis.
enum EmitterRedis {
    Own(RedisServer),
    Bus,
}

async fn npm_emitter_reaches_sockets(backend: Backend) {
    let mut own = match backend {
        Backend::Nats => EmitterRedis::Own(RedisServer::start()),
        Backend::Redis => EmitterRedis::Bus,
    };
    let own_url = match &own {
        EmitterRedis::Own(r) => Some(r.url()),
        EmitterRedis::Bus => None,
    };
    let mut c = Cluster::start_configured_on(
        backend,
        2,
        None,
        |_| {},
        |m| {
            let url = own_url.clone().unwrap_or_else(|| m.bus.redis.url.clone());
            m.emitter = bridge_config_at(url, Duration::from_millis(600));
        },
    )
    .await;
    let redis_url = own_url.unwrap_or_else(|| c.redis.as_ref().unwrap().url());
    c.workspace_with_general(&["bob", "carol"]).await;
    // `random`: alice and bob; `secret` (private): alice only.
    for (channel, visibility) in [("random", "public"), ("secret", "private")] {
        c.ok(
            Some("alice"),
            json!({ "type": "create_channel", "channel": channel, "workspace": "w1", "name": channel, "visibility": visibility }),
        )
        .await;
    }
    c.ok(
        Some("bob"),
        json!({ "type": "join_channel", "channel": "random" }),
    )
    .await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    connect_as(&node, "carol", "carol", &c.gateway_url(0)).await;
    // A second socket of alice's, on gateway 1 through a proxy, that loses
    // its connection and recovers.
    let proxy = Proxy::start(c.gateways[1].0).await;
    node.connect("away", &proxy.url(), reconnecting(&token("alice")))
        .await;
    let away_id = node.expect("away", is_type("connect"), T).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let general = confab_events::RoomId::parse("channel:general").unwrap();
    eventually("sockets in general", T, || {
        c.gateways[0].1.members(&general) == 2 && c.gateways[1].1.members(&general) == 2
    })
    .await;
    wait_for_lease(&c).await;
    let mut emitter = Emitter::spawn(&redis_url, KEY).await;

    // One room: every member, durable (its offset is the last argument).
    emitter
        .emit(&["channel:general"], "app:one", json!([{ "n": 1 }]))
        .await;
    for s in ["alice", "bob", "carol"] {
        let ev = node.expect(s, is_event("app:one"), T).await;
        assert_eq!(ev["args"][0], json!({ "n": 1 }), "{s}: {ev}");
        assert!(
            ev["args"][1].is_string(),
            "durable events carry an offset: {ev}"
        );
    }

    // Several rooms: alice and bob are in both, each gets it once.
    emitter
        .emit(
            &["channel:general", "channel:random"],
            "app:multi",
            json!(["m"]),
        )
        .await;
    emitter
        .emit(&["channel:general"], "app:fence", json!([1]))
        .await;
    for s in ["alice", "bob", "carol"] {
        node.expect(s, is_event("app:fence"), T).await;
    }
    tokio::time::sleep(QUIET).await;
    for s in ["alice", "bob", "carol"] {
        assert_eq!(
            got(&node, s, "app:multi").len(),
            1,
            "{s} got app:multi once"
        );
    }

    // except: bob's user room is left out.
    emitter
        .run(json!({"op": "emit", "to": ["channel:general"], "except": ["user:bob"], "event": "app:except", "args": [2]}))
        .await;
    emitter
        .emit(&["channel:general"], "app:fence", json!([2]))
        .await;
    node.expect("alice", is_event("app:except"), T).await;
    node.expect("carol", is_event("app:except"), T).await;
    node.expect("bob", |m| m["event"] == "app:fence" && m["args"][0] == 2, T)
        .await;
    tokio::time::sleep(QUIET).await;
    assert!(
        got(&node, "bob", "app:except").is_empty(),
        "bob is excepted"
    );

    // volatile: delivered live, no offset.
    emitter
        .run(json!({"op": "emit", "to": ["channel:random"], "volatile": true, "event": "app:volatile", "args": ["v"]}))
        .await;
    let ev = node.expect("bob", is_event("app:volatile"), T).await;
    assert_eq!(ev["args"], json!(["v"]), "volatile: no offset argument");

    // Binary: a Buffer reaches the client as binary, durable (with its
    // offset).
    emitter
        .emit(
            &["channel:general"],
            "app:binary",
            json!([{ "$binary": "AAEC/w==" }, { "name": "f", "data": { "$binary": "aGk=" } }]),
        )
        .await;
    for s in ["carol", "away"] {
        let ev = node.expect(s, is_event("app:binary"), T).await;
        assert_eq!(ev["args"][0], json!({ "$binary": "AAEC/w==" }), "{ev}");
        assert_eq!(ev["args"][1]["data"], json!({ "$binary": "aGk=" }), "{ev}");
        assert!(
            ev["args"][2].is_string(),
            "binary events carry an offset: {ev}"
        );
    }

    // A binary event missed while away is replayed on recovery, once, in
    // order, attachments intact (and volatile ones are not).
    proxy.point_to(None);
    proxy.cut();
    node.expect("away", is_type("disconnect"), T).await;
    emitter
        .emit(&["channel:general"], "app:missed", json!([1]))
        .await;
    emitter
        .emit(
            &["channel:general"],
            "app:missed-binary",
            json!([2, { "$binary": "3q2+7w==" }]),
        )
        .await;
    emitter
        .run(json!({"op": "emit", "to": ["channel:general"], "volatile": true, "event": "app:missed-volatile", "args": [{ "$binary": "AQ==" }]}))
        .await;
    emitter
        .emit(&["channel:general"], "app:missed", json!([3]))
        .await;
    node.expect(
        "carol",
        |m| m["event"] == "app:missed" && m["args"][0] == 3,
        T,
    )
    .await;
    proxy.point_to(Some(c.gateways[1].0));
    expect_recovered(&node, "away", &away_id).await;
    node.expect(
        "away",
        |m| m["event"] == "app:missed" && m["args"][0] == 3,
        T,
    )
    .await;
    emitter
        .emit(&["channel:general"], "app:fence", json!([4]))
        .await;
    node.expect(
        "away",
        |m| m["event"] == "app:fence" && m["args"][0] == 4,
        T,
    )
    .await;
    let missed: Vec<Value> = node
        .received()
        .into_iter()
        .filter(|m| {
            m["socket"] == "away"
                && m["type"] == "event"
                && m["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("app:missed"))
        })
        .collect();
    let seen: Vec<(&str, &Value)> = missed
        .iter()
        .map(|m| (m["event"].as_str().unwrap(), &m["args"][0]))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("app:missed", &json!(1)),
            ("app:missed-binary", &json!(2)),
            ("app:missed", &json!(3)),
        ],
        "replayed once, in order, volatile not: {missed:?}"
    );
    assert_eq!(
        missed[1]["args"][1],
        json!({ "$binary": "3q2+7w==" }),
        "{missed:?}"
    );
    let offsets: Vec<u64> = missed
        .iter()
        .map(|m| {
            m["args"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // Refused: a reserved name, every socket, a room Confab cannot have,
    // garbage, requests expecting a reply; the bridge goes on.
    emitter
        .emit(
            &["channel:general"],
            "message:new",
            json!([{ "id": "forged" }]),
        )
        .await;
    emitter.emit(&[], "app:all", json!([])).await;
    emitter.emit(&["not a room"], "app:bad", json!([])).await;
    emitter
        .run(json!({"op": "publish", "channel": format!("{KEY}#/#"), "message": "garbage"}))
        .await;
    emitter
        .run(json!({"op": "publish", "channel": format!("{KEY}-request#/#"), "message": "{\"type\":5,\"requestId\":\"x\",\"opts\":{}}"}))
        .await;
    emitter
        .run(json!({"op": "serverSideEmit", "args": ["hi"]}))
        .await;
    emitter
        .emit(&["channel:general"], "app:after", json!([]))
        .await;
    node.expect("alice", is_event("app:after"), T).await;
    for (kind, outcome) in [
        ("emit", "reserved_event"),
        ("emit", "all_sockets"),
        ("emit", "unknown_room"),
        ("emit", "malformed"),
        ("request", "wants_reply"),
        ("server_side_emit", "no_listener"),
    ] {
        assert_eq!(counted(&c, kind, outcome).await, 1, "{kind} {outcome}");
    }
    assert!(
        node.received()
            .iter()
            .all(|m| m["event"] != "message:new" && m["event"] != "app:all"),
        "refused emits reach nobody"
    );

    // socketsLeave: carol's socket leaves general.
    emitter
        .run(json!({"op": "socketsLeave", "to": ["user:carol"], "rooms": ["channel:general"]}))
        .await;
    eventually("carol out of general", T, || {
        c.gateways[0].1.members(&general) == 1
    })
    .await;
    emitter
        .emit(&["channel:general"], "app:left", json!([]))
        .await;
    node.expect("alice", is_event("app:left"), T).await;
    emitter.emit(&["user:carol"], "app:fence", json!([3])).await;
    node.expect(
        "carol",
        |m| m["event"] == "app:fence" && m["args"][0] == 3,
        T,
    )
    .await;
    tokio::time::sleep(QUIET).await;
    assert!(
        got(&node, "carol", "app:left").is_empty(),
        "carol left general"
    );

    // socketsJoin: back into general (she is a member); not into secret
    // (the authority refuses: private, not a member).
    emitter
        .run(json!({"op": "socketsJoin", "to": ["user:carol"], "rooms": ["channel:general", "channel:secret"]}))
        .await;
    eventually("carol back in general", T, || {
        c.gateways[0].1.members(&general) == 2
    })
    .await;
    emitter
        .emit(&["channel:general"], "app:joined", json!([]))
        .await;
    node.expect("carol", is_event("app:joined"), T).await;
    emitter
        .emit(&["channel:secret"], "app:secret", json!([]))
        .await;
    node.expect("alice", is_event("app:secret"), T).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        got(&node, "carol", "app:secret").is_empty(),
        "carol may not read secret"
    );

    // disconnectSockets: bob is told to disconnect (no reconnection).
    emitter
        .run(json!({"op": "disconnectSockets", "to": ["user:bob"]}))
        .await;
    let ev = node.expect("bob", is_type("disconnect"), T).await;
    assert_eq!(ev["reason"], "io server disconnect", "{ev}");
    assert_eq!(counted(&c, "disconnect", "published").await, 1);
    assert_eq!(counted(&c, "join", "published").await, 1);
    assert_eq!(counted(&c, "leave", "published").await, 1);

    // Redis restarts (the lease and the subscriptions are gone; on Redis
    // the bus's too): the bridge subscribes again, takes the lease again,
    // and emits flow again.
    match &mut own {
        EmitterRedis::Own(redis) => redis.restart(),
        EmitterRedis::Bus => c.redis.as_mut().unwrap().restart(),
    }
    let start = std::time::Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let cmd =
            json!({"op": "emit", "to": ["channel:general"], "event": "app:back", "args": [n]});
        let _ = emitter.try_run(cmd).await;
        if node
            .received()
            .iter()
            .any(|m| m["socket"] == "alice" && m["event"] == "app:back")
        {
            break;
        }
        assert!(
            start.elapsed() < T * 2,
            "the bridge never came back after a Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_bridge_lease_fails_over_without_emitting_twice() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let c = Cluster::start(1).await;
    c.workspace_with_general(&[]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    let general = confab_events::RoomId::parse("channel:general").unwrap();
    eventually("alice in general", T, || {
        c.gateways[0].1.members(&general) == 1
    })
    .await;

    // Two bridges on the one service (as two membership instances would).
    let ttl = Duration::from_millis(900);
    let mut bridges = Vec::new();
    for _ in 0..2 {
        let bridge =
            EmitterBridge::new(bridge_config(&redis, ttl), Arc::clone(&c.service)).unwrap();
        let acting = bridge.acting_view();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bridge.run(stop.clone()));
        bridges.push((acting, stop, task));
        // Half a renewal period apart: whichever holds, the other's lease
        // attempts fall between its renewals, so a bridge that acted at
        // once on taking the lease would overlap the old holder for up to
        // half a period in about every other round.
        tokio::time::sleep(ttl / 6).await;
    }
    let holder = || -> Vec<usize> {
        (0..2)
            .filter(|i| bridges[*i].0.acting())
            .collect::<Vec<_>>()
    };
    let start = std::time::Instant::now();
    while holder().len() != 1 {
        assert!(start.elapsed() < T, "no bridge took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut emitter = Emitter::spawn(&redis_url, KEY).await;
    let mut n = 0u64;
    // Each round: the lease key vanishes under the holder (deleted, as a
    // Redis failover can lose it) while emits keep coming; the standby
    // takes over. Six rounds, so that an overlap of the two would show.
    for round in 0..6 {
        assert_eq!(holder().len(), 1, "round {round}: one holder");
        // At a varying point of the renewal period.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(ttl / 3 * (nanos % 100) / 100).await;
        emitter
            .run(json!({"op": "del", "key": format!("{KEY}:confab-emitter-lease")}))
            .await;
        let start = std::time::Instant::now();
        let taken: Vec<u64> = bridges.iter().map(|b| b.0.taken()).collect();
        loop {
            n += 1;
            emitter
                .emit(&["channel:general"], "app:n", json!([n]))
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = holder();
            assert!(now.len() <= 1, "round {round}: two bridges act at once");
            // Done once a bridge that took the lease since the key vanished
            // acts (the old holder may act on until its next renewal).
            if (0..2).any(|i| bridges[i].0.taken() > taken[i] && bridges[i].0.acting()) {
                eprintln!(
                    "round {round}: acting again {:?} after the lease key vanished",
                    start.elapsed()
                );
                break;
            }
            assert!(start.elapsed() < T, "round {round}: no bridge took over");
        }
        for _ in 0..5 {
            n += 1;
            emitter
                .emit(&["channel:general"], "app:n", json!([n]))
                .await;
        }
    }
    // The holder crashes (its task ends without giving the lease up): the
    // standby takes over once the lease expired.
    let crashed = holder()[0];
    bridges[crashed].2.abort();
    let standby = 1 - crashed;
    let start = std::time::Instant::now();
    while !bridges[standby].0.acting() {
        assert!(
            !bridges[crashed].0.acting() || start.elapsed() < ttl,
            "the crashed bridge stops acting"
        );
        assert!(start.elapsed() < T, "the standby never took over");
        n += 1;
        emitter
            .emit(&["channel:general"], "app:n", json!([n]))
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "the standby acts {:?} after the holder crashed",
        start.elapsed()
    );
    n += 1;
    emitter
        .emit(&["channel:general"], "app:n", json!([n]))
        .await;
    node.expect("alice", |m| m["event"] == "app:n" && m["args"][0] == n, T)
        .await;
    tokio::time::sleep(QUIET).await;
    let seen: Vec<u64> = got(&node, "alice", "app:n")
        .iter()
        .map(|a| a[0].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = seen.iter().copied().collect();
    eprintln!(
        "{} of {n} emits delivered across the hand-overs",
        unique.len()
    );
    assert_eq!(unique.len(), seen.len(), "nothing emitted twice: {seen:?}");
    // Emits during the hand-over are lost (at most once), the ones after
    // it arrive: the last of every round's five and the final one.
    assert!(unique.contains(&n), "{seen:?}");
    for (i, (acting, stop, task)) in bridges.into_iter().enumerate() {
        stop.cancel();
        if i != crashed {
            task.await.unwrap();
        }
        assert!(!acting.acting());
    }
}
