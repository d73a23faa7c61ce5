//! The `confab` binary as a user runs it: `confab token USER`, and
//! `confab` serving with no flags, reached by the real socket.io-client.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use confab_test_support::NodeClient;
use serde_json::json;

fn confab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_confab"));
    // Whatever the developer's shell has must not leak into the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("CONFAB_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn token_prints_only_the_token() {
    let out = confab().args(["token", "alice"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout:?}");
    assert_eq!(lines[0].split('.').count(), 3, "a compact JWT: {stdout:?}");

    let bad = confab().args(["token", "a.b"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid user id"));
}

#[test]
fn refuses_the_dev_secret_beyond_loopback() {
    let out = confab().env("CONFAB_LISTEN", "0.0.0.0:0").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dev secret"), "{err}");
}

/// Runs the all-in-one with `vars` (ports picked freely, a throwaway
/// database) and expects it to refuse to start: answers its stderr. A
/// process still running after 20 s (it accepted the config) fails.
fn refused_to_start(vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = confab();
    cmd.env("CONFAB_LISTEN", "127.0.0.1:0")
        .env("CONFAB_API_LISTEN", "127.0.0.1:0")
        .env(
            "CONFAB_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()),
        )
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("confab started with {vars:?}; it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refuses_the_dev_secret_on_a_public_membership_api() {
    let err = refused_to_start(&[("CONFAB_API_LISTEN", "0.0.0.0:0")]);
    assert!(
        err.contains("api_listen") && err.contains("dev secret"),
        "{err}"
    );
}

#[test]
fn its_own_secret_needs_issuer_and_audience() {
    let secret = (
        "CONFAB_AUTH__HS256_SECRET",
        "fedcba9876543210fedcba9876543210",
    );
    let err = refused_to_start(&[secret]);
    assert!(err.contains("auth.issuer"), "{err}");
    let err = refused_to_start(&[secret, ("CONFAB_AUTH__ISSUER", "https://id.example")]);
    assert!(err.contains("auth.audience"), "{err}");
}

#[test]
fn a_short_service_token_is_refused() {
    let err = refused_to_start(&[("CONFAB_SERVICE_TOKEN", "hunter2-hunter2")]);
    assert!(
        err.contains("service_token") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the token is never shown: {err}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let out = confab()
        .env("CONFAB_ENGINE__PING_INTERVAL", "0s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.ping_interval"), "{err}");
}

#[tokio::test]
async fn serves_with_no_flags_and_accepts_its_dev_tokens() {
    // Port 3000 may be taken on a shared machine: the default is covered by
    // the config tests; here the port is overridden to 0.
    let dir = tempfile::tempdir().unwrap();
    let mut child = confab()
        .env("CONFAB_LISTEN", "127.0.0.1:0")
        .env("CONFAB_API_LISTEN", "127.0.0.1:0")
        .env(
            "CONFAB_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("confab.db").display()
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let dev_hint = lines.next().unwrap().unwrap();
    assert!(dev_hint.contains("token alice"), "{dev_hint}");
    let api_line = lines.next().unwrap().unwrap();
    let api = api_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no API URL in {api_line:?}"))
        .to_string();
    let token_line = lines.next().unwrap().unwrap();
    let service_token = token_line
        .split("token for this run: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no service token in {token_line:?}"))
        .to_string();

    let token = String::from_utf8(confab().args(["token", "alice"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let node = NodeClient::spawn().await;
    node.connect(
        "a",
        &url,
        json!({ "transports": ["websocket"], "auth": { "token": token }, "reconnection": false }),
    )
    .await;
    node.expect("a", |m| m["type"] == "connect", Duration::from_secs(10))
        .await;
    let ack = node
        .emit_with_ack(
            "a",
            "room:leave",
            vec![json!("user:alice")],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden");

    // The embedded membership service: a workspace and a channel created
    // through its API put alice's socket in them, and an event emitted
    // through the API reaches her.
    let http = reqwest::Client::new();
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
        common::command(&api, &service_token, actor, command).await;
    }
    let joined = node
        .expect(
            "a",
            |m| {
                m["type"] == "event"
                    && m["event"] == "room:joined"
                    && m["args"][0]["room"] == "channel:general"
            },
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(joined["args"][0]["room"], "channel:general");
    let resp = http
        .post(format!("{api}/v1/emit"))
        .bearer_auth(&service_token)
        .json(&json!({ "room": "channel:general", "event": "app:announcement", "data": { "id": "m1" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let m = node
        .expect(
            "a",
            |m| m["type"] == "event" && m["event"] == "app:announcement",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(m["args"][0]["id"], "m1");

    // message:send on the in-process log: acked with a sequence, delivered,
    // and a retry with the same clientMsgId answers the same ack.
    let send = json!({ "room": "channel:general", "body": "hi", "clientMsgId": "c1" });
    let first = node
        .emit_with_ack(
            "a",
            "message:send",
            vec![send.clone()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(first[0]["seq"].as_u64().unwrap() > 0, "{first:?}");
    let again = node
        .emit_with_ack("a", "message:send", vec![send], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first, again);
    let m = node
        .expect(
            "a",
            |m| m["type"] == "event" && m["event"] == "message:new" && m["args"][0]["body"] == "hi",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(m["args"][0]["id"], first[0]["id"]);
    node.expect_none(
        "a",
        |m| m["type"] == "event" && m["event"] == "message:new",
        Duration::from_millis(300),
    )
    .await;
    // Without the token the API refuses.
    let resp = http
        .post(format!("{api}/v1/emit"))
        .json(&json!({ "room": "channel:general", "event": "app:announcement", "data": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // SIGTERM: graceful shutdown, the client sees the transport close.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let d = node
        .expect("a", |m| m["type"] == "disconnect", Duration::from_secs(10))
        .await;
    assert_eq!(d["reason"], "transport close");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
