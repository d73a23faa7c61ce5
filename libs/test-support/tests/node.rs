//! `NodeClient` self-tests that need no Confab gateway.

use std::time::Duration;

use confab_test_support::{NodeClient, free_port, node_modules};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn node_modules_hold_the_pinned_client() {
    let modules = node_modules();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(modules.join("socket.io-client/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["version"], "4.8.3");
}

#[tokio::test]
async fn connecting_to_a_closed_port_reports_connect_error() {
    let node = NodeClient::spawn().await;
    let url = format!("http://127.0.0.1:{}", free_port());
    node.connect(
        "a",
        &url,
        json!({"transports": ["websocket"], "reconnection": false, "forceNew": true}),
    )
    .await;
    let error = node.expect_type("a", "connect_error", WAIT).await;
    assert!(error["message"].is_string(), "{error}");

    let state = node.state("a").await;
    assert_eq!(state["exists"], true, "{state}");
    assert_eq!(state["connected"], false, "{state}");

    // With reconnection off, no further attempt is made.
    node.expect_none(
        "a",
        |m| m["type"] == "reconnect_attempt" || m["type"] == "connect",
        Duration::from_millis(300),
    )
    .await;
    node.exit().await;
}

#[tokio::test]
async fn bad_commands_yield_error_lines_and_the_driver_survives() {
    let node = NodeClient::spawn().await;
    node.send(json!({"cmd": "no-such-command"})).await;
    let error = node
        .expect_any(|m| m["type"] == "error", Duration::from_secs(5))
        .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no-such-command"),
        "{error}"
    );

    node.emit("ghost", "x", vec![]).await;
    let error = node.expect_type("ghost", "error", WAIT).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown socket"),
        "{error}"
    );

    // An ack on a socket that cannot connect times out on the client side.
    let url = format!("http://127.0.0.1:{}", free_port());
    node.connect(
        "b",
        &url,
        json!({"transports": ["websocket"], "reconnection": false, "forceNew": true}),
    )
    .await;
    let ack = node
        .emit_with_ack("b", "hello", vec![json!(1)], Duration::from_millis(200))
        .await;
    assert_eq!(ack, Err("operation has timed out".to_owned()));

    // Still alive and answering.
    let state = node.state("nobody").await;
    assert_eq!(state["exists"], false, "{state}");
    assert!(
        node.received().iter().any(|m| m["type"] == "ready"),
        "history keeps consumed messages"
    );
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn expect_times_out_with_a_report() {
    let node = NodeClient::spawn().await;
    node.expect_type("a", "connect", Duration::from_millis(100))
        .await;
}
