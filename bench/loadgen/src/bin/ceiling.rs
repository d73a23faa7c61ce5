//! `confab-bench-ceiling`: the fan-out ceiling of the benchmark machine.
//!
//! A minimal Socket.IO v5 server that does on the fan-out hot path exactly
//! what the Node.js baseline (`bench/baseline/server.js`) does, and nothing
//! more: one process, no bus, no storage, no recovery, no rate limits. It
//! measures the most deliveries per second that this machine can reach
//! with this load generator (which itself costs ~10 µs of CPU per
//! delivery), so the report can set Confab and the baseline against a
//! measured bound rather than an estimate.
//!
//! Protocol, as far as the benchmark clients need it:
//!
//! * WebSocket only, on `/socket.io/?EIO=4&transport=websocket`; the
//!   Engine.IO v4 open packet; a ping (`2`) every 25 s, the connection
//!   closed when no pong (`3`) comes within 20 s;
//! * CONNECT of the main namespace with auth `{"token", "rooms"}`: the
//!   HS256 JWT is verified (`exp` checked), the socket joins `user:{sub}`
//!   and every room named in `rooms`, the reply is `40{"sid":"..."}`; a bad
//!   token gets `44{"message":"unauthorized",...}` and the connection is
//!   closed;
//! * `42<id>["message:send",{room, body, clientMsgId}]`: a room the socket
//!   is not in gets the ack `{"error":{"code":"forbidden",...}}`, an empty
//!   body `invalid_body`; otherwise `42["message:new",{id, room, authorId,
//!   body, createdAt}]` is encoded once and queued to every member of the
//!   room (the sender included), and the sender gets the ack
//!   `43<id>[{id, seq, createdAt}]`. Events without an ack id and other
//!   events are ignored, as the baseline ignores them.
//!
//! Design: what a competent engineer would write in an afternoon, not
//! hand-tuned. A tokio task per connection that owns its WebSocket (small
//! buffers: 4 KiB read, 8 KiB write; `TCP_NODELAY`) and a bounded queue
//! (`--queue`, 256 frames, like the gateway's default) of pre-encoded
//! frames; a broadcast clones one `Utf8Bytes` (a reference count) into each
//! member's queue under the room's lock; the connection task writes what
//! is queued and flushes once per batch. A connection whose queue is full
//! is closed as a slow consumer (close code 1008), never silently skipped.
//!
//! ```sh
//! confab-bench-ceiling --listen 127.0.0.1:3370 --secret-file .run/jwt-secret
//! ```
//!
//! Prints `confab-bench-ceiling listening on ADDR (pid N)` once bound
//! (`--listen 127.0.0.1:0` picks a free port); exits on SIGTERM / SIGINT.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The baseline's check (`jwt.verify` with the secret, HS256 only): the
/// signature and expiry; `iss` / `aud` are not the ceiling's concern, as
/// they are not the baseline's.
fn baseline_validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_aud = false;
    v
}

/// Engine.IO ping interval and timeout (the socket.io defaults).
const PING_INTERVAL: Duration = Duration::from_secs(25);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the WebSocket upgrade and the Socket.IO CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest frame accepted (the Engine.IO `maxPayload` announced).
const MAX_PAYLOAD: usize = 1_000_000;
/// Queued frames written per flush at most, so a busy socket still reads.
const WRITE_BATCH: usize = 64;

/// A minimal Socket.IO server: the fan-out ceiling of the benchmark machine.
#[derive(Parser)]
#[command(name = "confab-bench-ceiling", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (the bound address is
    /// printed).
    #[arg(long, default_value = "127.0.0.1:3370")]
    listen: SocketAddr,
    /// File holding the HS256 secret tokens are verified with.
    #[arg(long)]
    secret_file: PathBuf,
    /// Outbound queue per connection, frames; a connection whose queue is
    /// full is closed as a slow consumer.
    #[arg(long, default_value_t = 256)]
    queue: usize,
}

/// A connection as the rooms see it: its queue and its slow-consumer flag.
struct Peer {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    slow: Notify,
}

impl Peer {
    /// Queues a frame; a full queue marks the peer as a slow consumer.
    fn push(&self, frame: Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.slow.notify_one();
        }
    }
}

/// The members of one room.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<Arc<Peer>>>,
}

impl Room {
    /// Queues one pre-encoded frame to every member.
    fn broadcast(&self, frame: &Utf8Bytes) {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        for peer in members.iter() {
            peer.push(frame.clone());
        }
    }
}

/// The server's state: rooms by name, the HS256 key, counters.
struct Server {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    key: DecodingKey,
    validation: Validation,
    queue: usize,
    /// Tells this process's ids apart from another run's.
    tag: u64,
    next_conn: AtomicU64,
    next_msg: AtomicU64,
    seq: AtomicU64,
}

/// The CONNECT auth payload.
#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
    #[serde(default)]
    rooms: Vec<Value>,
}

/// The claims the server reads.
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Server {
    fn join(&self, name: &str, peer: &Arc<Peer>) -> Arc<Room> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = Arc::clone(rooms.entry(name.to_owned()).or_default());
        room.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(peer));
        room
    }

    fn leave(&self, name: &str, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get(name) {
            let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
            members.retain(|p| p.id != id);
            if members.is_empty() {
                drop(members);
                rooms.remove(name);
            }
        }
    }

    /// The user of a valid token.
    fn verify(&self, token: &str) -> Option<String> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .ok()
            .map(|t| t.claims.sub)
    }

    /// Handles the payload of a `42` event frame; returns the ack frame,
    /// if any.
    fn on_event(&self, joined: &HashMap<String, Arc<Room>>, user: &str, p: &str) -> Option<String> {
        let digits = p.bytes().take_while(u8::is_ascii_digit).count();
        let (ack, args) = p.split_at(digits);
        let ack: u64 = ack.parse().ok()?; // no ack id: ignored, as the baseline does
        let args: Vec<Value> = serde_json::from_str(args).ok()?;
        if args.first()?.as_str()? != "message:send" {
            return None;
        }
        let reply = self.message_send(joined, user, args.get(1));
        Some(format!("43{ack}{}", json!([reply])))
    }

    /// `message:send`: broadcasts `message:new` to the room; returns the ack.
    fn message_send(
        &self,
        joined: &HashMap<String, Arc<Room>>,
        user: &str,
        msg: Option<&Value>,
    ) -> Value {
        let name = msg.and_then(|m| m.get("room")).and_then(Value::as_str);
        let Some((name, room)) = name.and_then(|n| joined.get_key_value(n)) else {
            return json!({ "error": { "code": "forbidden", "message": "not a member of the room" } });
        };
        let body = match msg.and_then(|m| m.get("body")).and_then(Value::as_str) {
            Some(b) if !b.trim().is_empty() => b,
            _ => return json!({ "error": { "code": "invalid_body", "message": "body is empty" } }),
        };
        let n = self.next_msg.fetch_add(1, Relaxed);
        let id = format!("m{:012x}{n:012x}", self.tag);
        let created_at = now_iso();
        let event = json!(["message:new", {
            "id": id, "room": name, "authorId": user, "body": body, "createdAt": created_at,
        }]);
        room.broadcast(&Utf8Bytes::from(format!("42{event}")));
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        json!({ "id": id, "seq": seq, "createdAt": created_at })
    }
}

/// Now as ISO 8601 with milliseconds, like JavaScript's `toISOString()`.
fn now_iso() -> String {
    let now = time::OffsetDateTime::now_utc();
    let ms = now.millisecond();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(MAX_PAYLOAD))
        .max_frame_size(Some(MAX_PAYLOAD))
}

/// Accepts only the Socket.IO endpoint over the WebSocket transport.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback has
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    let query = req.uri().query().unwrap_or("");
    if req.uri().path() == "/socket.io/"
        && query.split('&').any(|kv| kv == "EIO=4")
        && query.split('&').any(|kv| kv == "transport=websocket")
    {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("not found".into()));
        *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
        Err(err)
    }
}

async fn next_text(ws: &mut Ws) -> Option<Utf8Bytes> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(t),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads frames until the Socket.IO CONNECT; returns its auth payload.
async fn read_connect(ws: &mut Ws) -> Option<Result<Auth, ()>> {
    loop {
        let t = next_text(ws).await?;
        let Some(rest) = t.as_str().strip_prefix("40") else {
            continue; // a pong or an early event: nothing to do yet
        };
        if rest.starts_with('/') && !rest.starts_with("/,") {
            // Another namespace: only the main one exists.
            let nsp = rest.split(',').next().unwrap_or(rest);
            let refusal = format!("44{nsp},{{\"message\":\"Invalid namespace\"}}");
            ws.send(Message::text(refusal)).await.ok()?;
            continue;
        }
        let rest = rest.strip_prefix("/,").unwrap_or(rest);
        return Some(serde_json::from_str(rest).map_err(|_| ()));
    }
}

/// Runs one connection to its end.
async fn serve(server: Arc<Server>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config()));
    let Ok(Ok(mut ws)) = timeout(CONNECT_TIMEOUT, upgrade).await else {
        return;
    };
    let id = server.next_conn.fetch_add(1, Relaxed);
    let sid = format!("{:x}-{id:x}", server.tag);
    let open = format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{MAX_PAYLOAD}}}",
        PING_INTERVAL.as_millis(),
        PING_TIMEOUT.as_millis()
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let Ok(Some(auth)) = timeout(CONNECT_TIMEOUT, read_connect(&mut ws)).await else {
        return;
    };
    let user = auth
        .ok()
        .and_then(|a| Some((server.verify(a.token.as_deref()?)?, a.rooms)));
    let Some((user, rooms)) = user else {
        let refusal = "44{\"message\":\"unauthorized\",\"data\":{\"code\":\"unauthorized\"}}";
        let _ = ws.send(Message::text(refusal)).await;
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
        return;
    };

    let (tx, mut rx) = mpsc::channel(server.queue.max(1));
    let peer = Arc::new(Peer {
        id,
        tx,
        slow: Notify::new(),
    });
    let mut joined: HashMap<String, Arc<Room>> = HashMap::new();
    let names = rooms.iter().filter_map(Value::as_str).map(str::to_owned);
    for name in std::iter::once(format!("user:{user}")).chain(names) {
        if let Entry::Vacant(slot) = joined.entry(name) {
            let room = server.join(slot.key(), &peer);
            slot.insert(room);
        }
    }
    if ws
        .send(Message::text(format!("40{{\"sid\":\"{sid}\"}}")))
        .await
        .is_ok()
    {
        run(&server, &mut ws, &peer, &mut rx, &joined, &user).await;
    }
    for name in joined.keys() {
        server.leave(name, id);
    }
}

/// The connected socket: queued frames out, client frames in, pings.
async fn run(
    server: &Server,
    ws: &mut Ws,
    peer: &Peer,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    joined: &HashMap<String, Arc<Room>>,
    user: &str,
) {
    let mut next_ping = Instant::now() + PING_INTERVAL;
    let mut pong_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = peer.slow.notified() => {
                let frame = CloseFrame { code: CloseCode::Policy, reason: "slow consumer".into() };
                let _ = timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
                return;
            }
            // The sender lives in `peer`: the queue never closes here.
            Some(frame) = rx.recv() => {
                if write_batch(ws, rx, frame).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue, // WebSocket pings are answered by tungstenite
                };
                match text.as_str() {
                    "3" => pong_deadline = None,
                    "2" => peer.push("3".into()),
                    "1" | "41" => return, // Engine.IO close, Socket.IO DISCONNECT
                    t => if let Some(p) = t.strip_prefix("42")
                        && let Some(ack) = server.on_event(joined, user, p)
                    {
                        peer.push(ack.into());
                    },
                }
            }
            _ = sleep_until(pong_deadline.unwrap_or(next_ping)) => {
                if pong_deadline.is_some() {
                    return; // ping timeout
                }
                let now = Instant::now();
                pong_deadline = Some(now + PING_TIMEOUT);
                next_ping = now + PING_INTERVAL;
                peer.push("2".into());
            }
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`]
/// frames), then flushes once.
async fn write_batch(
    ws: &mut Ws,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.feed(Message::Text(first)).await?;
    for _ in 1..WRITE_BATCH {
        match rx.try_recv() {
            Ok(frame) => ws.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    ws.flush().await
}

/// Raises the soft limit of open files to the hard limit (10,000 clients).
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    raise_nofile();
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| format!("reading {}", args.secret_file.display()))?;
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & 0xffff_ffff_ffff;
    let server = Arc::new(Server {
        rooms: Mutex::new(HashMap::new()),
        key: DecodingKey::from_secret(secret.trim().as_bytes()),
        validation: baseline_validation(),
        queue: args.queue,
        tag,
        next_conn: AtomicU64::new(0),
        next_msg: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!(
        "confab-bench-ceiling listening on {} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(Arc::clone(&server), stream));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off, keep serving.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
