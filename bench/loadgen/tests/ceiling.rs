//! The fan-out ceiling server (`confab-bench-ceiling`) against the real
//! load generator, and its answers to the frames the baseline answers.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "ceiling-test-secret-0123456789abcdef-0123";

/// A ceiling server on a free port, killed on drop.
struct Ceiling {
    child: Child,
    port: u16,
    secret_file: PathBuf,
}

impl Ceiling {
    fn start(name: &str) -> Self {
        let secret_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ceiling-{name}-{}.secret", std::process::id()));
        std::fs::write(&secret_file, SECRET).expect("write the secret");
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab-bench-ceiling"))
            .args(["--listen", "127.0.0.1:0", "--secret-file"])
            .arg(&secret_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start confab-bench-ceiling");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        // "confab-bench-ceiling listening on 127.0.0.1:PORT (pid N)"
        let port = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self {
            child,
            port,
            secret_file,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.secret_file);
    }
}

#[test]
fn the_load_generator_runs_a_fanout_against_it_and_loses_nothing() {
    let server = Ceiling::start("fanout");
    let out = Command::new(env!("CARGO_BIN_EXE_confab-loadgen"))
        .args([
            "fanout",
            "--clients",
            "20",
            "--room-size",
            "10",
            "--rates",
            "10",
        ])
        .args([
            "--step-secs",
            "2",
            "--settle-secs",
            "1",
            "--drain-secs",
            "5",
        ])
        .args(["--max-secs", "60", "--sources", "4", "--label", "ceiling"])
        .args(["--url", &server.url(), "--secret-file"])
        .arg(&server.secret_file)
        .arg("--watch")
        .arg(format!("ceiling={}", server.child.id()))
        .stderr(Stdio::inherit())
        .output()
        .expect("run confab-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(out.status.success(), "{r}");
    assert_eq!(r["connected"], 20, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["lost_on_dropped_clients"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["disconnected"], 0, "{r}");
    let received = r["received_deliveries"].as_u64().unwrap_or(0);
    assert!(received > 0, "{r}");
    assert_eq!(r["expected_deliveries"].as_u64(), Some(received), "{r}");
    assert_eq!(r["steps"][0]["refused"], 0, "{r}");
    assert!(r["cpu_us_per_delivery"]["ceiling"].is_number(), "{r}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Opens a socket and sends CONNECT; returns it and the server's reply.
async fn connect(server: &Ceiling, auth: &str) -> (Ws, String) {
    let url = format!("{}/socket.io/?EIO=4&transport=websocket", server.url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{\"sid\":"), "{open}");
    assert!(open.contains("\"pingInterval\":25000"), "{open}");
    ws.send(Message::text(format!("40{auth}")))
        .await
        .expect("send CONNECT");
    let reply = next_text(&mut ws).await;
    (ws, reply)
}

fn auth(user: &str, rooms: &str) -> String {
    let token = confab_auth::mint_hs256(SECRET, user, Duration::from_secs(600), None, None)
        .expect("mint a token");
    format!("{{\"token\":\"{token}\",\"rooms\":{rooms}}}")
}

fn json_of(frame: &str, prefix: &str) -> Value {
    let body = frame
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{frame:?} does not start with {prefix:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {frame}"))
}

#[tokio::test]
async fn it_answers_what_the_baseline_answers() {
    let server = Ceiling::start("frames");

    // A bad token is refused.
    let (_, reply) = connect(&server, "{\"token\":\"nope\",\"rooms\":[]}").await;
    assert_eq!(json_of(&reply, "44")["data"]["code"], "unauthorized");

    let (mut alice, reply) = connect(&server, &auth("alice", "[\"channel:a\"]")).await;
    assert!(json_of(&reply, "40")["sid"].is_string(), "{reply}");
    let (mut bob, _) = connect(&server, &auth("bob", "[\"channel:a\",\"channel:b\"]")).await;

    // Not a member: the forbidden ack, and nothing is broadcast.
    let send =
        "421[\"message:send\",{\"room\":\"channel:b\",\"body\":\"hi\",\"clientMsgId\":\"c1\"}]";
    alice.send(Message::text(send)).await.expect("send");
    let ack = json_of(&next_text(&mut alice).await, "431");
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack}");

    // An empty body.
    let send =
        "422[\"message:send\",{\"room\":\"channel:a\",\"body\":\" \",\"clientMsgId\":\"c2\"}]";
    alice.send(Message::text(send)).await.expect("send");
    let ack = json_of(&next_text(&mut alice).await, "432");
    assert_eq!(ack[0]["error"]["code"], "invalid_body", "{ack}");

    // A member: message:new to every member, the sender included, then the ack.
    let send = "423[\"message:send\",{\"room\":\"channel:a\",\"body\":\"hi \\\"there\\\"\",\"clientMsgId\":\"c3\"}]";
    alice.send(Message::text(send)).await.expect("send");
    let own = json_of(&next_text(&mut alice).await, "42");
    let ack = json_of(&next_text(&mut alice).await, "433");
    let other = json_of(&next_text(&mut bob).await, "42");
    assert_eq!(own, other);
    assert_eq!(own[0], "message:new");
    let m = &own[1];
    assert_eq!(m["room"], "channel:a");
    assert_eq!(m["authorId"], "alice");
    assert_eq!(m["body"], "hi \"there\"");
    assert_eq!(ack[0]["id"], m["id"], "{ack}");
    assert_eq!(ack[0]["createdAt"], m["createdAt"], "{ack}");
    assert_eq!(ack[0]["seq"], 1, "{ack}");
    let created = m["createdAt"].as_str().unwrap_or_default();
    assert!(created.len() == 24 && created.ends_with('Z'), "{created}");

    // Engine.IO ping from a client is answered; the user room is joined.
    bob.send(Message::text("2")).await.expect("send");
    assert_eq!(next_text(&mut bob).await, "3");
    let send =
        "424[\"message:send\",{\"room\":\"user:bob\",\"body\":\"me\",\"clientMsgId\":\"c4\"}]";
    bob.send(Message::text(send)).await.expect("send");
    assert_eq!(
        json_of(&next_text(&mut bob).await, "42")[1]["room"],
        "user:bob"
    );
    assert_eq!(json_of(&next_text(&mut bob).await, "434")[0]["seq"], 2);
}
