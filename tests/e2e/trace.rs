//! One trace, end to end: the membership service and two gateways as
//! processes of their own (the OTLP exporter is process-wide), exporting
//! their spans over OTLP/HTTP to a receiver in this test, which decodes the
//! protobuf and checks the chains of spans:
//!
//! * `message:send` from socket.io-client: the gateway's `socket.event` →
//!   `send in.rooms.channel.{id}` (producer, its child) → on BOTH gateways
//!   `process rooms.channel.{id}` (consumer, own trace, linked to the
//!   producer) → in the membership service `INSERT messages` (child of the
//!   producer: the emit's trace reaches the SQL write), linked to the
//!   history batch span `process in.rooms`, itself linked to the producer;
//! * a membership command over HTTP: `POST /v1/commands` → execute →
//!   `send membership.events…` (producer) → the projection's and the
//!   notifier's `process membership.events…` (children) → `send
//!   in.rooms.user.{id}` → the gateway's `process rooms.user.{id}` (linked)
//!   → `gateway.move_sockets`;
//! * an HTTP emit: `POST /v1/emit` → `send in.rooms.channel.{id}` → both
//!   gateways' consumer spans (linked).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use confab_test_support::{NatsServer, NodeClient};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::support::*;

const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "e2e-trace-service-token-0123456789abcdef";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    instance: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
}

impl Seen {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map_or("", String::as_str)
    }

    fn links_to(&self, other: &Seen) -> bool {
        self.links
            .iter()
            .any(|(t, s)| *t == other.trace && *s == other.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// An OTLP/HTTP (protobuf) traces receiver on a free port.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, spans }
    }

    fn all(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Seen>>>>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Seen {
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    instance: resource
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default(),
                    name: span.name.clone(),
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    kind: span.kind,
                    attrs: attrs(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(out);
    (
        [("content-type", "application/x-protobuf")],
        Vec::new(), // an empty ExportTraceServiceResponse
    )
}

/// A service process of this package's binaries, its stderr in a file.
struct Process {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

async fn spawn(bin: &str, log: &Path, envs: &[(&str, String)]) -> Process {
    let mut cmd = tokio::process::Command::new(bin);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{bin} is ready in time; log: {}", tail(log)))
        .unwrap()
        .unwrap_or_else(|| panic!("{bin} prints its address; log: {}", tail(log)));
    let addr = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Process {
        _child: child,
        addr,
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    text[text.floor_char_boundary(start)..].to_owned()
}

/// The exporter's variables: flush every 50 ms, one instance id per process.
fn otel_env(receiver: &Receiver, instance: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", receiver.addr),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            format!("service.instance.id={instance}"),
        ),
        // Spans are filtered like logs: info keeps every Confab span.
        ("RUST_LOG", "info".into()),
        ("CONFAB_LOG__FORMAT", "json".into()),
    ]
}

struct Traced {
    receiver: Receiver,
    _nats: NatsServer,
    membership: Process,
    gateways: Vec<Process>,
    logs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Traced {
    async fn start() -> Traced {
        let receiver = Receiver::start().await;
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().to_owned();
        let mut env = otel_env(&receiver, "membership");
        env.extend([
            ("CONFAB_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "CONFAB_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("membership.db").display()
                ),
            ),
            ("CONFAB_NATS__URL", nats.url()),
            ("CONFAB_SERVICE_TOKEN", TOKEN.to_owned()),
        ]);
        let membership = spawn(
            env!("CARGO_BIN_EXE_confab-e2e-membership"),
            &logs.join("membership.log"),
            &env,
        )
        .await;
        let mut gateways = Vec::new();
        for name in ["gw-a", "gw-b"] {
            let mut env = otel_env(&receiver, name);
            env.extend([
                ("CONFAB_LISTEN", "127.0.0.1:0".to_owned()),
                ("CONFAB_BUS__KIND", "nats".to_owned()),
                ("CONFAB_BUS__NATS__URL", nats.url()),
                ("CONFAB_MEMBERSHIP__KIND", "nats".to_owned()),
                ("CONFAB_SERVICE_TOKEN", TOKEN.to_owned()),
                ("CONFAB_AUTH__HS256_SECRET", SECRET.to_owned()),
                ("CONFAB_AUTH__ISSUER", ISSUER.to_owned()),
                ("CONFAB_AUTH__AUDIENCE", AUDIENCE.to_owned()),
            ]);
            gateways.push(
                spawn(
                    env!("CARGO_BIN_EXE_confab-e2e-gateway"),
                    &logs.join(format!("{name}.log")),
                    &env,
                )
                .await,
            );
        }
        Traced {
            receiver,
            _nats: nats,
            membership,
            gateways,
            logs,
            _dir: dir,
        }
    }

    fn gateway_url(&self, i: usize) -> String {
        format!("http://{}", self.gateways[i].addr)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("http://{}{path}", self.membership.addr))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn command(&self, actor: Option<&str>, command: Value) {
        let mut body = json!({ "command": command });
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        let (status, answer) = self.post("/v1/commands", body).await;
        assert!(status < 300, "{command} -> {status} {answer}");
    }

    /// Waits until `find` finds its chain in the exported spans.
    async fn chain<R>(&self, what: &str, find: impl Fn(&Spans) -> Result<R, String>) -> R {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let spans = Spans(self.receiver.all());
            match find(&spans) {
                Ok(found) => return found,
                Err(why) if tokio::time::Instant::now() > deadline => {
                    let mut names: Vec<String> = spans
                        .0
                        .iter()
                        .map(|s| format!("{}/{} {}", s.service, s.instance, s.name))
                        .collect();
                    names.sort();
                    names.dedup();
                    panic!(
                        "{what}: {why}\nspans seen: {names:#?}\nmembership log: {}",
                        tail(&self.logs.join("membership.log"))
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// The spans received so far.
struct Spans(Vec<Seen>);

impl Spans {
    fn one(&self, what: &str, pred: impl Fn(&Seen) -> bool) -> Result<Seen, String> {
        self.0
            .iter()
            .find(|s| pred(s))
            .cloned()
            .ok_or_else(|| format!("no span: {what}"))
    }

    fn by_id(&self, trace: &str, id: &str) -> Option<&Seen> {
        self.0.iter().find(|s| s.trace == trace && s.id == id)
    }

    /// Whether `ancestor` is `span`'s parent, grandparent, ...
    fn descends(&self, span: &Seen, ancestor: &Seen) -> bool {
        let mut at = span.clone();
        for _ in 0..32 {
            if at.parent == ancestor.id && at.trace == ancestor.trace {
                return true;
            }
            match self.by_id(&at.trace, &at.parent) {
                Some(parent) => at = parent.clone(),
                None => return false,
            }
        }
        false
    }

    /// The tree of `trace` (indented names; `~>` marks a span of another
    /// trace linked to the one above it, with its own children), for the
    /// test's output.
    fn tree(&self, trace: &str) -> String {
        let mut children: HashMap<(&str, &str), Vec<&Seen>> = HashMap::new();
        for s in &self.0 {
            children
                .entry((s.trace.as_str(), s.parent.as_str()))
                .or_default()
                .push(s);
        }
        let mut out = String::new();
        let roots = self
            .0
            .iter()
            .filter(|s| s.trace == trace && self.by_id(trace, &s.parent).is_none());
        for r in roots {
            self.walk(r, 0, "", &children, &mut out);
        }
        out
    }

    fn walk(
        &self,
        s: &Seen,
        depth: usize,
        mark: &str,
        children: &HashMap<(&str, &str), Vec<&Seen>>,
        out: &mut String,
    ) {
        if depth > 16 {
            return;
        }
        out.push_str(&format!(
            "{}{mark}{} [{}/{}]\n",
            "  ".repeat(depth),
            s.name,
            s.service,
            s.instance
        ));
        for c in children
            .get(&(s.trace.as_str(), s.id.as_str()))
            .into_iter()
            .flatten()
        {
            self.walk(c, depth + 1, "", children, out);
        }
        for linked in self
            .0
            .iter()
            .filter(|l| l.trace != s.trace && l.links_to(s))
        {
            self.walk(linked, depth + 1, "~> ", children, out);
        }
    }
}

const PRODUCER: i32 = SpanKind::Producer as i32;
const CONSUMER: i32 = SpanKind::Consumer as i32;
const SERVER: i32 = SpanKind::Server as i32;
const CLIENT: i32 = SpanKind::Client as i32;

#[tokio::test]
async fn one_trace_from_a_socket_emit_to_the_sql_write_and_through_a_command() {
    let c = Traced::start().await;
    c.command(
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await;
    c.command(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
    )
    .await;
    c.command(
        Some("alice"),
        json!({ "type": "add_workspace_member", "workspace": "w1", "user": "bob", "role": "member" }),
    )
    .await;
    c.command(
        Some("bob"),
        json!({ "type": "join_channel", "channel": "general" }),
    )
    .await;

    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    let ack = node
        .emit_with_ack(
            "alice",
            "message:send",
            vec![json!({ "room": "channel:general", "body": "traced", "clientMsgId": "t1" })],
            T,
        )
        .await
        .unwrap();
    assert!(ack[0]["id"].is_string(), "{ack:?}");
    node.expect("bob", is_event("message:new"), T).await;

    // message:send, from the socket event to the SQL row.
    let (trace, tree) = c
        .chain("message:send", |spans| {
            let event = spans.one("gw-a socket.event message:send", |s| {
                s.instance == "gw-a"
                    && s.name == "socket.event"
                    && s.attr("event") == "message:send"
            })?;
            let send = spans.one("the producer span under it", |s| {
                s.trace == event.trace
                    && s.name == "send in.rooms.channel.{id}"
                    && s.kind == PRODUCER
                    && spans.descends(s, &event)
            })?;
            assert_eq!(send.service, "confab-gateway");
            assert_eq!(send.attr("messaging.system"), "nats");
            assert_eq!(send.attr("messaging.operation.type"), "send");
            assert_eq!(
                send.attr("messaging.destination.name"),
                "in.rooms.channel.general"
            );
            for gw in ["gw-a", "gw-b"] {
                let process =
                    spans.one(&format!("{gw} consumer span linked to the producer"), |s| {
                        s.instance == gw
                            && s.name == "process rooms.channel.{id}"
                            && s.kind == CONSUMER
                            && s.links_to(&send)
                    })?;
                assert_ne!(
                    process.trace, send.trace,
                    "a delivery is linked, not a child"
                );
                assert_eq!(process.attr("messaging.operation.type"), "process");
                assert_eq!(process.attr("confab.event"), "message:new");
            }
            let write = spans.one("INSERT messages, child of the producer", |s| {
                s.service == "confab-membership"
                    && s.name == "INSERT messages"
                    && s.trace == send.trace
                    && s.parent == send.id
            })?;
            assert_eq!(write.kind, CLIENT);
            assert_eq!(write.attr("db.system.name"), "sqlite");
            assert_eq!(write.attr("db.operation.name"), "INSERT");
            assert_eq!(write.attr("db.collection.name"), "messages");
            let batch = spans.one("the history batch span the write links to", |s| {
                s.service == "confab-membership"
                    && s.name == "process in.rooms"
                    && write.links_to(s)
            })?;
            assert_eq!(batch.kind, CONSUMER);
            assert!(batch.links_to(&send), "the batch links to every producer");
            Ok((event.trace.clone(), spans.tree(&event.trace)))
        })
        .await;
    println!("message:send trace {trace}:\n{tree}");

    // A membership command: HTTP -> decide -> append -> projection and
    // notifier -> the gateways moving sockets.
    c.command(
        Some("alice"),
        json!({ "type": "create_channel", "channel": "random", "workspace": "w1", "name": "random", "visibility": "public" }),
    )
    .await;
    let (trace, tree) = c
        .chain("create_channel", |spans| {
            let execute = spans.one("membership.execute of channel:random", |s| {
                s.name == "membership.execute" && s.attr("aggregate") == "channel:random"
            })?;
            let http = spans.one("the HTTP server span above it", |s| {
                s.name == "POST /v1/commands" && s.kind == SERVER && spans.descends(&execute, s)
            })?;
            assert_eq!(http.attr("http.request.method"), "POST");
            assert_eq!(http.attr("http.route"), "/v1/commands");
            assert_eq!(http.attr("http.response.status_code"), "200");
            spans.one("membership.decide under execute", |s| {
                s.name == "membership.decide" && spans.descends(s, &execute)
            })?;
            let append = spans.one("the append's producer span", |s| {
                s.name == "send membership.events.{kind}.{id}"
                    && s.kind == PRODUCER
                    && spans.descends(s, &execute)
            })?;
            assert_eq!(
                append.attr("messaging.destination.name"),
                "membership.events.channel.random"
            );
            for group in ["membership", "membership-notifier"] {
                spans.one(&format!("{group} processing the event"), |s| {
                    s.name == "process membership.events.{kind}.{id}"
                        && s.kind == CONSUMER
                        && s.parent == append.id
                        && s.trace == append.trace
                        && s.attr("messaging.consumer.group.name") == group
                })?;
            }
            let announce = spans.one("room:joined announced to user:alice", |s| {
                s.name == "send in.rooms.user.{id}"
                    && s.trace == append.trace
                    && s.attr("messaging.destination.name") == "in.rooms.user.alice"
            })?;
            let moved = spans.one("gw-a processing it", |s| {
                s.instance == "gw-a" && s.name == "process rooms.user.{id}" && s.links_to(&announce)
            })?;
            spans.one("gw-a moving alice's socket", |s| {
                s.name == "gateway.move_sockets"
                    && s.parent == moved.id
                    && s.attr("confab.room") == "channel:random"
            })?;
            Ok((http.trace.clone(), spans.tree(&http.trace)))
        })
        .await;
    println!("create_channel trace {trace}:\n{tree}");

    // An HTTP emit.
    let (status, answer) = c
        .post(
            "/v1/emit",
            json!({ "room": "channel:general", "event": "app:note", "data": { "n": 1 } }),
        )
        .await;
    assert!(status < 300, "{status} {answer}");
    let tree = c
        .chain("emit", |spans| {
            let http = spans.one("POST /v1/emit", |s| s.name == "POST /v1/emit")?;
            let send = spans.one("its producer span", |s| {
                s.name == "send in.rooms.channel.{id}" && spans.descends(s, &http)
            })?;
            for gw in ["gw-a", "gw-b"] {
                spans.one(&format!("{gw} processing the emit"), |s| {
                    s.instance == gw && s.links_to(&send) && s.attr("confab.event") == "app:note"
                })?;
            }
            Ok(spans.tree(&http.trace))
        })
        .await;
    println!("emit trace:\n{tree}");
}
