//! Shared helpers: fixture keys, token signing, and a real JWKS HTTP server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass every check (for user `alice`, valid for an hour).
pub fn claims() -> Value {
    json!({ "sub": "alice", "iat": now(), "exp": now() + 3600 })
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

pub fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// Signs with the fixture private key `kid` (`rsa-1`, `rsa-2`, `ec-1`,
/// `ed-1`), putting `kid` in the header.
pub fn sign_with_fixture(kid: &str, claims: &Value) -> String {
    let pem = fixture(&format!("{kid}.pem"));
    let (alg, key) = match &kid[..2] {
        "rs" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
        "ed" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes())),
        _ => panic!("unknown fixture {kid}"),
    };
    sign(alg, Some(kid), claims, &key.unwrap())
}

/// A token with an arbitrary header and signature bytes (for forged or
/// broken tokens).
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The fixture JWKS restricted to the given kids.
pub fn jwks_with(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(keys.len(), kids.len(), "unknown fixture kid in {kids:?}");
    json!({ "keys": keys })
}

/// What the JWKS server answers.
#[derive(Clone)]
pub enum Reply {
    Jwks(Value),
    Status(u16),
    Body(String),
}

#[derive(Clone)]
struct ServerState {
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

/// A real HTTP server on 127.0.0.1 serving `/jwks.json`, counting requests.
pub struct JwksServer {
    pub url: String,
    state: ServerState,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(reply: Reply) -> Self {
        let state = ServerState {
            reply: Arc::new(Mutex::new(reply)),
            hits: Arc::new(AtomicUsize::new(0)),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        let app = Router::new()
            .route("/jwks.json", get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/jwks.json"),
            state,
            task,
        }
    }

    pub fn set(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(state): State<ServerState>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = state.reply.lock().unwrap().clone();
    match reply {
        Reply::Jwks(v) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Body(body) => body.into_response(),
    }
}

/// A URL on which nothing listens.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/jwks.json")
}
