//! Connection-state recovery with the real `socket.io-client`: the client
//! drops, events flow meanwhile, it comes back (to the same gateway,
//! another one, or after its gateway was SIGKILLed) and gets every missed
//! durable event once, in order, before live ones.
//!
//! Clients reach the gateways through [`Proxy`], a TCP forwarder standing in
//! for the load balancer: it can cut every connection (a network drop both
//! ends see), refuse new ones (the client keeps retrying), and send the
//! retries to another gateway.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_events::RoomId;
use confab_test_support::NodeClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cluster::{Backend, Cluster, SERVICE_TOKEN};
use crate::support::*;

const T: Duration = Duration::from_secs(15);

/// A TCP forwarder in front of the gateways.
pub struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(Some(target)));
        let (cut, _) = watch::channel(0u64);
        let task = {
            let target = Arc::clone(&target);
            let cut = cut.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    let to = *target.lock().unwrap();
                    let Some(to) = to else {
                        // Refused: the client sees the transport fail.
                        drop(client);
                        continue;
                    };
                    let mut cut = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(to).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            addr,
            target,
            cut,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where new connections go; `None` refuses them.
    pub fn point_to(&self, target: Option<SocketAddr>) {
        *self.target.lock().unwrap() = target;
    }

    /// Breaks every connection going through (both ends see it close).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reconnecting client, as apps configure socket.io-client.
pub fn reconnecting(token: &str) -> Value {
    json!({
        "transports": ["websocket"],
        "auth": { "token": token },
        "forceNew": true,
        "reconnection": true,
        "reconnectionDelay": 100,
        "reconnectionDelayMax": 200,
        "randomizationFactor": 0,
    })
}

fn general() -> RoomId {
    RoomId::parse("channel:general").unwrap()
}

pub async fn send(node: &NodeClient, socket: &str, n: usize) {
    let ack = node
        .emit_with_ack(
            socket,
            "message:send",
            vec![json!({ "room": "channel:general", "body": format!("m{n}"), "clientMsgId": format!("c{n}") })],
            T,
        )
        .await
        .unwrap();
    assert!(ack[0]["id"].is_string(), "send m{n}: {ack:?}");
}

/// The next `message:new` of `socket`: (body, offset).
pub async fn next_message(node: &NodeClient, socket: &str) -> (String, u64) {
    let e = node.expect(socket, is_event("message:new"), T).await;
    let args = e["args"].as_array().unwrap();
    let body = args[0]["body"]
        .as_str()
        .or(args[0]["id"].as_str())
        .unwrap()
        .to_owned();
    let offset = args
        .last()
        .and_then(Value::as_str)
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no offset as the last argument: {e}"));
    (body, offset)
}

/// Receives `bodies` in this order, offsets strictly increasing from
/// `after`; returns the last offset.
pub async fn receive_in_order(
    node: &NodeClient,
    socket: &str,
    bodies: &[String],
    after: u64,
) -> u64 {
    let mut last = after;
    for want in bodies {
        let (body, offset) = next_message(node, socket).await;
        assert_eq!(&body, want, "events out of order or missing");
        assert!(offset > last, "offset {offset} after {last}");
        last = offset;
    }
    last
}

pub fn bodies(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Connects bob through the proxy and alice directly to gateway `alice_gw`;
/// bob receives m0 live. Returns bob's socket id and the offset of m0.
async fn connected(
    c: &Cluster,
    node: &NodeClient,
    proxy: &Proxy,
    alice_gw: usize,
) -> (String, u64) {
    node.connect("bob", &proxy.url(), reconnecting(&token("bob")))
        .await;
    let hello = node.expect("bob", is_type("connect"), T).await;
    assert_eq!(hello["recovered"], false);
    connect_as(node, "alice", "alice", &c.gateway_url(alice_gw)).await;
    send(node, "alice", 0).await;
    let (body, offset) = next_message(node, "bob").await;
    assert_eq!(body, "m0");
    (hello["id"].as_str().unwrap().to_owned(), offset)
}

/// Cuts bob's connection and keeps him away until the proxy is pointed
/// somewhere again.
async fn drop_bob(node: &NodeClient, proxy: &Proxy) {
    proxy.point_to(None);
    proxy.cut();
    node.expect("bob", is_type("disconnect"), T).await;
}

/// A two-gateway cluster where bob (through the proxy, on gateway 0)
/// received m0 from alice (gateway 1) and then lost his connection.
struct Away {
    c: Cluster,
    node: NodeClient,
    proxy: Proxy,
    /// Bob's socket id.
    id: String,
    /// The offset of m0.
    m0: u64,
}

async fn bob_away() -> Away {
    bob_away_on(Backend::Nats).await
}

async fn bob_away_on(backend: Backend) -> Away {
    let c = Cluster::start_on(backend, 2).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    let (id, m0) = connected(&c, &node, &proxy, 1).await;
    drop_bob(&node, &proxy).await;
    Away {
        c,
        node,
        proxy,
        id,
        m0,
    }
}

pub async fn expect_recovered(node: &NodeClient, socket: &str, id: &str) {
    let again = node.expect(socket, is_type("connect"), T).await;
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["id"], id, "a recovered session keeps its id");
    let state = node.state(socket).await;
    assert_eq!(state["recovered"], true);
}

async fn recover_through(backend: Backend, target: usize) {
    let Away {
        c,
        node,
        proxy,
        id,
        m0,
    } = bob_away_on(backend).await;
    for i in 1..=5 {
        send(&node, "alice", i).await;
    }
    proxy.point_to(Some(c.gateways[target].0));
    expect_recovered(&node, "bob", &id).await;
    let last = receive_in_order(&node, "bob", &bodies(1..=5), m0).await;
    // Then live events, nothing twice.
    send(&node, "alice", 6).await;
    receive_in_order(&node, "bob", &bodies(6..=6), last).await;
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(300))
        .await;
    node.expect_none("bob", is_event("recovery:failed"), Duration::ZERO)
        .await;
    // Alice is on gateway 1.
    let members = if target == 1 { 2 } else { 1 };
    eventually("bob in general again", T, || {
        c.gateways[target].1.members(&general()) == members
    })
    .await;
}

#[tokio::test]
async fn a_polling_only_client_recovers_missed_events_once_and_in_order() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    let mut polling = reconnecting(&token("bob"));
    polling["transports"] = json!(["polling"]);
    node.connect("bob", &proxy.url(), polling).await;
    let hello = node.expect("bob", is_type("connect"), T).await;
    node.connect("alice", &c.gateway_url(0), opts(&token("alice")))
        .await;
    node.expect("alice", is_type("connect"), T).await;
    send(&node, "alice", 0).await;
    let (body, m0) = next_message(&node, "bob").await;
    assert_eq!(body, "m0");
    drop_bob(&node, &proxy).await;
    for i in 1..=5 {
        send(&node, "alice", i).await;
    }
    proxy.point_to(Some(c.gateways[0].0));
    expect_recovered(&node, "bob", hello["id"].as_str().unwrap()).await;
    let last = receive_in_order(&node, "bob", &bodies(1..=5), m0).await;
    send(&node, "alice", 6).await;
    receive_in_order(&node, "bob", &bodies(6..=6), last).await;
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(300))
        .await;
    assert_eq!(node.state("bob").await["transport"], "polling");
}

#[tokio::test]
async fn a_dropped_client_recovers_missed_events_once_and_in_order() {
    recover_through(Backend::Nats, 0).await;
}

#[tokio::test]
async fn a_client_recovers_on_another_gateway() {
    recover_through(Backend::Nats, 1).await;
}

#[tokio::test]
async fn on_redis_a_dropped_client_recovers_missed_events_once_and_in_order() {
    recover_through(Backend::Redis, 0).await;
}

#[tokio::test]
async fn on_redis_a_client_recovers_on_another_gateway() {
    recover_through(Backend::Redis, 1).await;
}

#[tokio::test]
async fn a_client_that_received_nothing_recovers_too() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    node.connect("bob", &proxy.url(), reconnecting(&token("bob")))
        .await;
    let hello = node.expect("bob", is_type("connect"), T).await;
    connect_as(&node, "alice", "alice", &c.gateway_url(1)).await;
    drop_bob(&node, &proxy).await;
    for i in 1..=3 {
        send(&node, "alice", i).await;
    }
    proxy.point_to(Some(c.gateways[1].0));
    expect_recovered(&node, "bob", hello["id"].as_str().unwrap()).await;
    receive_in_order(&node, "bob", &bodies(1..=3), 0).await;
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(300))
        .await;
}

/// A gateway in its own process, so that it can be SIGKILLed.
pub struct GatewayProcess {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl GatewayProcess {
    /// A gateway process joining `c` (on its backend).
    pub async fn start_in(c: &Cluster) -> GatewayProcess {
        Self::start_with(&c.gateway_env()).await
    }

    /// A gateway process joining `c`, with more `CONFAB_*` variables.
    pub async fn start_in_with(c: &Cluster, more: &[(&'static str, &str)]) -> GatewayProcess {
        let mut env = c.gateway_env();
        env.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Self::start_with(&env).await
    }

    async fn start_with(env: &[(&'static str, String)]) -> GatewayProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab-e2e-gateway"))
            .env("CONFAB_LISTEN", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CONFAB_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("CONFAB_AUTH__HS256_SECRET", SECRET)
            .env("CONFAB_AUTH__ISSUER", ISSUER)
            .env("CONFAB_AUTH__AUDIENCE", AUDIENCE)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the e2e gateway starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(T, lines.next_line())
            .await
            .expect("the gateway process is ready in time")
            .unwrap()
            .expect("the gateway process prints its address");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        GatewayProcess { child, addr }
    }

    /// SIGKILL: nothing runs after it, nothing is written on the way out.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn a_client_recovers_after_its_gateway_is_killed() {
    recovers_after_its_gateway_is_killed(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_a_client_recovers_after_its_gateway_is_killed() {
    recovers_after_its_gateway_is_killed(Backend::Redis).await;
}

async fn recovers_after_its_gateway_is_killed(backend: Backend) {
    let c = Cluster::start_on(backend, 1).await;
    c.workspace_with_general(&["bob"]).await;
    let mut doomed = GatewayProcess::start_in(&c).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(doomed.addr).await;
    let (id, m0) = connected(&c, &node, &proxy, 0).await;

    proxy.point_to(None);
    doomed.kill().await;
    node.expect("bob", is_type("disconnect"), T).await;
    for i in 1..=4 {
        send(&node, "alice", i).await;
    }
    proxy.point_to(Some(c.gateways[0].0));
    expect_recovered(&node, "bob", &id).await;
    let last = receive_in_order(&node, "bob", &bodies(1..=4), m0).await;
    send(&node, "alice", 5).await;
    receive_in_order(&node, "bob", &bodies(5..=5), last).await;
}

/// How many session records the store holds (on NATS: messages in the
/// sessions stream, delete markers included).
async fn session_records(c: &Cluster) -> u64 {
    match c.backend {
        Backend::Nats => {
            let js = async_nats::jetstream::new(async_nats::connect(c.nats().url()).await.unwrap());
            let mut stream = js.get_stream("KV_CONFAB_SESSIONS").await.unwrap();
            stream.info().await.unwrap().state.messages
        }
        Backend::Redis => {
            let client = redis::Client::open(c.redis.as_ref().unwrap().url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*session:*")
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.len() as u64
        }
    }
}

async fn records_become(c: &Cluster, n: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = session_records(c).await;
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} session records, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn records_of_ended_sessions_go_with_the_window_and_live_ones_stay() {
    records_last_as_long_as_they_serve(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_records_of_ended_sessions_go_with_the_window_and_live_ones_stay() {
    records_last_as_long_as_they_serve(Backend::Redis).await;
}

/// Issue #16's soak: one session record per connection ever made, kept a
/// day, grew the store all day. A dropped session's record goes when its
/// window has passed, a deliberately ended one's at once (on NATS leaving
/// no delete marker); a live session's stays however long it lives, and
/// still resumes after its gateway is SIGKILLed.
async fn records_last_as_long_as_they_serve(backend: Backend) {
    let window = Duration::from_secs(2);
    let c = Cluster::start_tweaked_on(backend, 1, None, |cfg| {
        cfg.recovery.window = window;
        cfg.recovery.heartbeat = Duration::from_millis(200);
    })
    .await;
    c.workspace_with_general(&["bob"]).await;
    let mut env = c.gateway_env();
    env.push(("CONFAB_RECOVERY__WINDOW", "2s".into()));
    env.push(("CONFAB_RECOVERY__HEARTBEAT", "200ms".into()));
    let mut doomed = GatewayProcess::start_with(&env).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(doomed.addr).await;
    // Bob on the doomed gateway, alice on gateway 0: two live sessions.
    let (id, m0) = connected(&c, &node, &proxy, 0).await;
    records_become(&c, 2, T).await;

    // Churn on gateway 0: three connections end with a Socket.IO
    // DISCONNECT, three drop (their sessions stay resumable for the window).
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        c.gateways[0].0
    );
    for i in 0..6 {
        let mut ws = RawWs::connect(&url).await;
        let reply = ws
            .socket_io_connect(Some(&json!({ "token": token("carol") })))
            .await;
        assert!(reply.contains("\"pid\""), "{reply}");
        if i % 2 == 0 {
            // The Socket.IO DISCONNECT, then the connection closes (as
            // `socket.disconnect()` does).
            ws.send("41").await;
        }
    }
    records_become(&c, 5, T).await;
    let churned = tokio::time::Instant::now();

    // Past the window (and the grace), only the live sessions' records are
    // left, though they are older than the window.
    tokio::time::sleep(window + Duration::from_secs(5)).await;
    records_become(&c, 2, Duration::from_secs(5)).await;
    assert!(churned.elapsed() < Duration::from_secs(30));

    // Bob's live record, older than the window, still serves: his gateway
    // is SIGKILLed and he resumes on gateway 0 with everything missed.
    proxy.point_to(None);
    doomed.kill().await;
    node.expect("bob", is_type("disconnect"), T).await;
    for i in 1..=3 {
        send(&node, "alice", i).await;
    }
    proxy.point_to(Some(c.gateways[0].0));
    expect_recovered(&node, "bob", &id).await;
    receive_in_order(&node, "bob", &bodies(1..=3), m0).await;
}

#[tokio::test]
async fn after_the_window_the_client_gets_a_fresh_session_and_is_told() {
    fresh_session_after_the_window(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_after_the_window_the_client_gets_a_fresh_session_and_is_told() {
    fresh_session_after_the_window(Backend::Redis).await;
}

async fn fresh_session_after_the_window(backend: Backend) {
    let c = Cluster::start_tweaked_on(backend, 1, None, |cfg| {
        cfg.recovery.window = Duration::from_secs(1);
        cfg.recovery.heartbeat = Duration::from_millis(200);
    })
    .await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    let (id, _) = connected(&c, &node, &proxy, 0).await;
    drop_bob(&node, &proxy).await;
    send(&node, "alice", 1).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.point_to(Some(c.gateways[0].0));
    let again = node.expect("bob", is_type("connect"), T).await;
    assert_eq!(again["recovered"], false, "{again}");
    assert_ne!(again["id"], id.as_str());
    let failed = node.expect("bob", is_event("recovery:failed"), T).await;
    assert_eq!(failed["args"][0]["reason"], "expired", "{failed}");
    assert!(
        failed["args"][0]["message"]
            .as_str()
            .unwrap()
            .contains("refetch"),
        "{failed}"
    );
    // Nothing of the gap is replayed into a fresh session; live events flow.
    send(&node, "alice", 2).await;
    let (body, _) = next_message(&node, "bob").await;
    assert_eq!(body, "m2");
}

#[tokio::test]
async fn events_of_a_channel_are_not_replayed_past_a_removal() {
    let Away {
        c,
        node,
        proxy,
        id,
        m0,
    } = bob_away().await;
    send(&node, "alice", 1).await;
    c.ok(
        Some("alice"),
        json!({ "type": "kick", "channel": "general", "user": "bob" }),
    )
    .await;
    send(&node, "alice", 2).await;
    proxy.point_to(Some(c.gateways[1].0));
    expect_recovered(&node, "bob", &id).await;
    // m1 came before the removal, then the removal itself; m2 never.
    receive_in_order(&node, "bob", &bodies(1..=1), m0).await;
    let left = node.expect("bob", is_event("room:left"), T).await;
    assert_eq!(left["args"][0]["room"], "channel:general");
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;
    // And bob's socket is not in the channel on the gateway he reached.
    assert_eq!(c.gateways[1].1.members(&general()), 1, "alice only");
}

#[tokio::test]
async fn rooms_joined_while_away_are_joined_on_recovery() {
    let Away {
        c, node, proxy, id, ..
    } = bob_away().await;
    c.ok(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "news", "workspace": "w1", "name": "news", "visibility": "public" }),
    )
    .await;
    let news = RoomId::parse("channel:news").unwrap();
    c.gateways[1]
        .1
        .emit(&news, "message:new", &json!({ "id": "before-join" }))
        .await
        .unwrap();
    c.ok(
        Some("bob"),
        json!({ "type": "join_channel", "channel": "news" }),
    )
    .await;
    c.gateways[1]
        .1
        .emit(&news, "message:new", &json!({ "id": "after-join" }))
        .await
        .unwrap();
    proxy.point_to(Some(c.gateways[1].0));
    expect_recovered(&node, "bob", &id).await;
    let joined = node.expect("bob", is_event("room:joined"), T).await;
    assert_eq!(joined["args"][0]["room"], "channel:news");
    let (body, _) = next_message(&node, "bob").await;
    assert_eq!(body, "after-join", "nothing of news from before the join");
    // Live events of the new room reach the recovered socket.
    c.gateways[0]
        .1
        .emit(&news, "message:new", &json!({ "id": "live" }))
        .await
        .unwrap();
    let (body, _) = next_message(&node, "bob").await;
    assert_eq!(body, "live");
}

#[tokio::test]
async fn typing_is_never_replayed() {
    let Away {
        c,
        node,
        proxy,
        id,
        m0,
    } = bob_away().await;
    let ack = node
        .emit_with_ack(
            "alice",
            "typing:start",
            vec![json!({ "room": "channel:general" })],
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    send(&node, "alice", 1).await;
    proxy.point_to(Some(c.gateways[0].0));
    expect_recovered(&node, "bob", &id).await;
    receive_in_order(&node, "bob", &bodies(1..=1), m0).await;
    node.expect_none("bob", is_event("typing"), Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn the_all_in_one_in_process_log_recovers_the_same_way() {
    let gw = spawn_gateway(|_| {}).await;
    let room = general();
    gw.membership
        .grant(&confab_events::UserId::parse("bob").unwrap(), &room);
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(gw.addr).await;
    node.connect("bob", &proxy.url(), reconnecting(&token("bob")))
        .await;
    let hello = node.expect("bob", is_type("connect"), T).await;
    gw.handle
        .emit(&room, "message:new", &json!({ "id": "m0" }))
        .await
        .unwrap();
    let (_, m0) = next_message(&node, "bob").await;
    drop_bob(&node, &proxy).await;
    for i in 1..=3 {
        gw.handle
            .emit(&room, "message:new", &json!({ "id": format!("m{i}") }))
            .await
            .unwrap();
    }
    proxy.point_to(Some(gw.addr));
    expect_recovered(&node, "bob", hello["id"].as_str().unwrap()).await;
    receive_in_order(&node, "bob", &bodies(1..=3), m0).await;
}

#[tokio::test]
async fn unknown_foreign_and_malformed_sessions_get_a_fresh_one_with_the_reason() {
    let gw = spawn_gateway(|_| {}).await;
    let mut bob = RawWs::connect(&gw.ws_url()).await;
    let reply = bob
        .socket_io_connect(Some(&json!({ "token": token("bob") })))
        .await;
    let reply: Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    let bob_pid = reply["pid"].as_str().expect("a pid in the CONNECT reply");
    for (auth, reason) in [
        (
            json!({ "token": token("alice"), "pid": bob_pid }),
            "foreign_session",
        ),
        (
            json!({ "token": token("alice"), "pid": "nope" }),
            "unknown_session",
        ),
        (
            json!({ "token": token("alice"), "pid": "a.b>" }),
            "invalid_session",
        ),
        (
            json!({ "token": token("alice"), "pid": bob_pid, "offset": "x1" }),
            "invalid_session",
        ),
    ] {
        let mut alice = RawWs::connect(&gw.ws_url()).await;
        let reply = alice.socket_io_connect(Some(&auth)).await;
        let reply: Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
        assert_ne!(reply["pid"], bob_pid, "{auth}");
        assert_ne!(reply["sid"], json!(null));
        let event = alice.text().await;
        assert!(
            event.starts_with(r#"42["recovery:failed",{"reason":""#),
            "{event}"
        );
        assert!(event.contains(&format!("\"{reason}\"")), "{auth}: {event}");
    }
}

/// Many sessions recover at once after their gateway went away, their
/// replays read through JetStream consumers (direct gets off): the
/// consumers stay within gateways x `recovery.max_concurrent_replays`.
#[tokio::test]
async fn a_mass_recovery_stays_within_the_consumer_bound() {
    mass_recovery(false).await;
}

/// The same with replays served by direct gets (the default): every replay
/// is a direct one, and the consumer bound holds all the more.
#[tokio::test]
async fn a_mass_recovery_replays_with_direct_gets() {
    mass_recovery(true).await;
}

async fn mass_recovery(direct: bool) {
    const SESSIONS: usize = 120;
    const EVENTS: usize = 3;
    const PER_GATEWAY: usize = 2;
    let c = Cluster::start_tweaked(2, None, |cfg| {
        cfg.recovery.max_concurrent_replays = PER_GATEWAY;
        cfg.bus.nats.direct_replay = direct;
    })
    .await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let name = format!("u{i}");
        node.connect(&name, &proxy.url(), reconnecting(&token(&name)))
            .await;
    }
    for i in 0..SESSIONS {
        let hello = node.expect(&format!("u{i}"), is_type("connect"), T).await;
        ids.push(hello["id"].as_str().unwrap().to_owned());
    }
    proxy.point_to(None);
    proxy.cut();
    for i in 0..SESSIONS {
        node.expect(&format!("u{i}"), is_type("disconnect"), T)
            .await;
    }
    for i in 0..SESSIONS {
        let room = RoomId::parse(&format!("user:u{i}")).unwrap();
        for n in 1..=EVENTS {
            c.gateways[1]
                .1
                .emit(&room, "message:new", &json!({ "id": format!("m{n}") }))
                .await
                .unwrap();
        }
    }

    let consumers = |c: &Cluster| c.nats().monitor_json("/jsz")["consumers"].as_u64().unwrap();
    let baseline = consumers(&c);
    let nats_monitor = c.nats().monitor_url();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{nats_monitor}/jsz")).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    max = max.max(v["consumers"].as_u64().unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max
        })
    };
    // Everyone comes back at once, to both gateways.
    proxy.point_to(Some(c.gateways[1].0));
    for (i, id) in ids.iter().enumerate() {
        let name = format!("u{i}");
        expect_recovered(&node, &name, id).await;
        receive_in_order(&node, &name, &bodies(1..=EVENTS), 0).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max = sampler.await.unwrap();
    let bound = (2 * PER_GATEWAY) as u64;
    assert!(
        max <= baseline + bound,
        "{max} consumers at the peak, {baseline} before: more than {bound} for replays"
    );
    let metrics = reqwest::get(format!("{}/metrics", c.gateway_url(1)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "confab_gateway_recoveries_total{{reason=\"recovered\"}} {SESSIONS}"
        )),
        "{metrics}"
    );
    let path = if direct { "direct" } else { "consumer" };
    assert!(
        metrics.contains(&format!(
            "confab_gateway_replays_total{{path=\"{path}\"}} {SESSIONS}"
        )),
        "{metrics}"
    );
}

/// A rolling deploy: the gateway shuts down gracefully, its clients
/// reconnect to another one (spread out, not all in one instant) and
/// recover; events published meanwhile arrive exactly once.
#[tokio::test]
async fn a_graceful_shutdown_hands_clients_over_spread_out() {
    const SESSIONS: usize = 20;
    let c = Cluster::start_tweaked(2, None, |cfg| {
        cfg.shutdown_spread = Duration::from_millis(1_500);
        cfg.shutdown_grace = Duration::from_secs(5);
    })
    .await;
    let node = NodeClient::spawn().await;
    let proxy = Proxy::start(c.gateways[0].0).await;
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let name = format!("u{i}");
        node.connect(&name, &proxy.url(), reconnecting(&token(&name)))
            .await;
    }
    for i in 0..SESSIONS {
        let hello = node.expect(&format!("u{i}"), is_type("connect"), T).await;
        ids.push(hello["id"].as_str().unwrap().to_owned());
    }
    // The load balancer sends new connections to the other gateway.
    proxy.point_to(Some(c.gateways[1].0));
    c.gateways[0].1.shutdown();
    for i in 0..SESSIONS {
        let room = RoomId::parse(&format!("user:u{i}")).unwrap();
        c.gateways[1]
            .1
            .emit(&room, "message:new", &json!({ "id": "m1" }))
            .await
            .unwrap();
    }
    let mut closed_at = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let name = format!("u{i}");
        let gone = node.expect(&name, is_type("disconnect"), T).await;
        assert_eq!(gone["reason"], "transport close", "{gone}");
        closed_at.push(gone["at"].as_u64().unwrap());
        expect_recovered(&node, &name, id).await;
    }
    for i in 0..SESSIONS {
        let name = format!("u{i}");
        receive_in_order(&node, &name, &bodies(1..=1), 0).await;
    }
    for i in 0..SESSIONS {
        node.expect_none(
            &format!("u{i}"),
            is_event("message:new"),
            Duration::from_millis(if i == 0 { 300 } else { 0 }),
        )
        .await;
    }
    let spread = closed_at.iter().max().unwrap() - closed_at.iter().min().unwrap();
    assert!(
        spread >= 300,
        "{SESSIONS} sockets closed within {spread} ms: not spread over the 1.5 s window"
    );
}

/// A socket in many rooms gets their events in log order, whatever room
/// each comes from: its last offset then always means "everything before
/// it arrived", which is what recovery resumes from.
#[tokio::test]
async fn a_socket_in_many_rooms_gets_events_in_log_order() {
    const ROOMS: usize = 16;
    const PER_PUBLISHER: usize = 2_000;
    const PUBLISHERS: usize = 4;
    let nats = confab_test_support::NatsServer::start();
    let mut cfg = Cluster::gateway_config(&nats.url());
    cfg.membership.kind = confab_gateway::config::MembershipKind::Static;
    cfg.engine.outbound_queue = 65_536;
    let membership = Arc::new(confab_gateway::membership::StaticMembership::new());
    let alice = confab_events::UserId::parse("alice").unwrap();
    let rooms: Vec<RoomId> = (0..ROOMS)
        .map(|i| RoomId::parse(&format!("channel:c{i}")).unwrap())
        .collect();
    for room in &rooms {
        membership.grant(&alice, room);
    }
    let mut deps = confab_gateway::Deps::connect(&cfg).await.unwrap();
    deps.membership = membership;
    let app = confab_gateway::App::build(cfg, deps).await.unwrap();
    let addr = app.local_addr();
    let handle = app.handle();
    tokio::spawn(app.run(std::future::pending()));

    let mut ws = RawWs::connect(&format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).await;
    ws.socket_io_connect(Some(&json!({ "token": token("alice") })))
        .await;
    eventually("alice in every room", T, || {
        rooms.iter().all(|r| handle.members(r) == 1)
    })
    .await;
    // Publishers race each other over all the rooms, pipelining: bursts of
    // stored events reach the gateway back to back.
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let rooms = rooms.clone();
        let url = nats.url();
        tasks.push(tokio::spawn(async move {
            use confab_bus::async_nats;
            let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
            let mut acks = Vec::new();
            for n in 0..PER_PUBLISHER {
                let room = &rooms[(n * 7 + p) % rooms.len()];
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(confab_bus::subjects::HEADER_EVENT, "message:new");
                let body = serde_json::to_vec(&json!([{ "p": p, "n": n }])).unwrap();
                acks.push(
                    js.publish_with_headers(
                        confab_bus::subjects::publish_subject(room),
                        headers,
                        body.into(),
                    )
                    .await
                    .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap();
            }
        }));
    }
    let mut last = 0u64;
    for i in 0..PUBLISHERS * PER_PUBLISHER {
        let frame = ws.text().await;
        let args: Value = serde_json::from_str(frame.strip_prefix("42").unwrap()).unwrap();
        let offset: u64 = args
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(offset > last, "event {i}: offset {offset} after {last}");
        last = offset;
    }
    for t in tasks {
        t.await.unwrap();
    }
}
