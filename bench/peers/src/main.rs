//! `confab-bench-peer`: the Rust peer of the benchmark (issue #18).
//!
//! socketioxide, used as its documentation shows a new user, doing on the
//! fan-out hot path exactly what the Node.js baseline
//! (`bench/baseline/server.js`) and `confab-bench-ceiling` do:
//!
//! * a connect middleware verifies the HS256 JWT of the CONNECT auth
//!   (`auth.token`; signature and `exp`, as `jwt.verify` does); a bad token
//!   gets the CONNECT_ERROR `unauthorized`;
//! * the socket joins `user:{sub}` and the rooms named in `auth.rooms`;
//! * `message:send` `{room, body, clientMsgId}` with an ack: refused
//!   (`forbidden`) outside the socket's rooms, `invalid_body` when the body
//!   is empty; otherwise `message:new` `{id, room, authorId, body,
//!   createdAt}` is emitted to the room (sender included: `io.to(room)`,
//!   encoded once by socketioxide for all its members) and the sender is
//!   acked with `{id, seq, createdAt}`.
//!
//! Nothing is stored. Everything else is socketioxide's defaults (both
//! transports, its per-socket buffer of 128 packets, 25 s / 20 s pings).
//!
//! ```sh
//! confab-bench-peer --listen 127.0.0.1:3371 --secret-file FILE
//! # two processes sharing a Redis (socketioxide-redis, RESP3):
//! confab-bench-peer --listen 127.0.0.1:3372 --secret-file FILE \
//!     --redis redis://127.0.0.1:6379 --prefix confab-bench-peer
//! ```
//!
//! With `--redis`, the adapter's pub/sub channels are named
//! `{prefix}-request#/#...` (pub/sub channels ignore the database number,
//! so the prefix is what keeps two runs, or other users of the Redis,
//! apart); nothing is written to Redis keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::serve::{Listener, ListenerExt};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The process's state: the HS256 key and the counters for ids and `seq`.
struct Peer {
    key: DecodingKey,
    validation: Validation,
    /// Tells this process's message ids apart from another's.
    tag: u64,
    next_msg: AtomicU64,
    seq: AtomicU64,
}

type Shared = Arc<Peer>;

/// The CONNECT auth payload.
#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
    #[serde(default)]
    rooms: Vec<Value>,
}

/// The claims read from the token.
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The authenticated user, kept in the socket's extensions.
#[derive(Clone)]
struct User(Arc<str>);

/// The CONNECT_ERROR of a missing or invalid token.
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

/// Connect middleware: verifies the JWT, as the baseline's `io.use` does.
async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Auth>,
    State(peer): State<Shared>,
) -> Result<(), Unauthorized> {
    let token = auth.ok().and_then(|a| a.token).ok_or(Unauthorized)?;
    let claims = jsonwebtoken::decode::<Claims>(&token, &peer.key, &peer.validation)
        .map_err(|_| Unauthorized)?
        .claims;
    s.extensions.insert(User(claims.sub.into()));
    Ok(())
}

/// Joins `user:{sub}` and the rooms named at CONNECT; listens to
/// `message:send`.
async fn on_connect<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Auth>,
    Extension(user): Extension<User>,
) {
    let mut rooms = vec![format!("user:{}", user.0)];
    if let Ok(auth) = auth {
        rooms.extend(auth.rooms.into_iter().filter_map(|r| match r {
            Value::String(r) => Some(r),
            _ => None,
        }));
    }
    s.join(rooms);
    s.on("message:send", on_send::<A>);
}

/// `message:send`: `message:new` to the room, then the ack.
async fn on_send<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    Data(msg): Data<Value>,
    ack: AckSender<A>,
    Extension(user): Extension<User>,
    State(peer): State<Shared>,
) {
    let Some(room) = msg.get("room").and_then(Value::as_str) else {
        return refuse(ack, "forbidden", "not a member of the room");
    };
    if !s.rooms().iter().any(|r| r == room) {
        return refuse(ack, "forbidden", "not a member of the room");
    }
    let body = match msg.get("body").and_then(Value::as_str) {
        Some(b) if !b.trim().is_empty() => b,
        _ => return refuse(ack, "invalid_body", "body is empty"),
    };
    let n = peer.next_msg.fetch_add(1, Relaxed);
    let id = format!("m{:012x}{n:012x}", peer.tag);
    let created_at = now_iso();
    let m = json!({ "id": id, "room": room, "authorId": &*user.0, "body": body, "createdAt": created_at });
    // An emit error (a member's buffer full, Redis unreachable) is not
    // the sender's: the ack follows, as in the baseline; the load
    // generator counts what did not arrive.
    let _ = io.to(room.to_owned()).emit("message:new", &m).await;
    let seq = peer.seq.fetch_add(1, Relaxed) + 1;
    let _ = ack.send(&json!({ "id": id, "seq": seq, "createdAt": created_at }));
}

fn refuse<A: Adapter>(ack: AckSender<A>, code: &str, message: &str) {
    let _ = ack.send(&json!({ "error": { "code": code, "message": message } }));
}

/// Now as ISO 8601 with milliseconds, like JavaScript's `toISOString()`.
fn now_iso() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

struct Args {
    listen: SocketAddr,
    secret_file: String,
    redis: Option<String>,
    prefix: String,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        listen: "127.0.0.1:3371".parse()?,
        secret_file: String::new(),
        redis: None,
        prefix: "confab-bench-peer".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--listen" => a.listen = v.parse()?,
            "--secret-file" => a.secret_file = v,
            "--redis" => a.redis = Some(v),
            "--prefix" => a.prefix = v,
            _ => return Err(format!("unknown option {k}").into()),
        }
    }
    if a.secret_file.is_empty() {
        return Err("--secret-file is required".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let secret = std::fs::read_to_string(&args.secret_file)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let peer: Shared = Arc::new(Peer {
        key: DecodingKey::from_secret(secret.trim().as_bytes()),
        validation,
        tag: SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 & 0xffff_ffff_ffff,
        next_msg: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let builder = SocketIo::builder().with_state(peer);
    let app = match &args.redis {
        None => {
            let (layer, io) = builder.build_layer();
            io.ns(
                "/",
                on_connect::<LocalAdapter>.with(authenticate::<LocalAdapter>),
            );
            axum::Router::new().layer(layer)
        }
        Some(url) => {
            // The redis driver needs RESP3 (pub/sub on the same connection).
            let url = if url.contains("protocol=") {
                url.clone()
            } else {
                format!(
                    "{url}{}protocol=resp3",
                    if url.contains('?') { '&' } else { '?' }
                )
            };
            let client = redis::Client::open(url)?;
            let config = RedisAdapterConfig::new().with_prefix(args.prefix.clone());
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config).await?;
            let (layer, io) = builder
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect.with(authenticate)).await?;
            axum::Router::new().layer(layer)
        }
    };
    // TCP_NODELAY, as Confab, the ceiling and Node's `ws` set it.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!(
        "confab-bench-peer ({}) listening on {} (pid {})",
        if args.redis.is_some() {
            "socketioxide-redis"
        } else {
            "socketioxide"
        },
        listener.local_addr()?,
        std::process::id()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await?;
    Ok(())
}
