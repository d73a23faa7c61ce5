//! The all-in-one with session auth: a real better-auth app's cookie
//! alone connects a real socket.io-client (polling, then WebSocket), and
//! the user sends and receives in a channel of the embedded membership.

use std::time::Duration;

mod common;

use confab_test_support::{BetterAuthApp, NodeClient};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_better_auth_cookie_chats_on_the_all_in_one() {
    let app = BetterAuthApp::start().await;
    let carol = app
        .sign_up_and_in("carol@example.com", "password-1234")
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = confab::default_config();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.auth.session.url = Some(app.session_url());
    let embedded = confab::EmbeddedConfig {
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        emitter: Default::default(),
    };
    let confab = confab::build(cfg, &embedded).await.unwrap();
    let (gateway, api, token) = (
        confab.gateway_addr(),
        format!("http://{}", confab.api_addr()),
        confab.service_token.clone(),
    );
    let task = tokio::spawn(confab.run(std::future::pending()));

    let user = carol.user_id.as_str();
    common::command(
        &api,
        &token,
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": user }),
    )
    .await;
    common::command(
        &api,
        &token,
        Some(user),
        json!({ "type": "create_channel", "channel": "general", "workspace": "w1", "name": "general", "visibility": "public" }),
    )
    .await;

    let node = NodeClient::spawn().await;
    node.connect(
        "c",
        &format!("http://{gateway}"),
        json!({ "extraHeaders": { "cookie": carol.cookie }, "reconnection": false }),
    )
    .await;
    node.expect("c", |m| m["type"] == "connect", WAIT).await;
    let ack = node
        .emit_with_ack(
            "c",
            "message:send",
            vec![json!({ "room": "channel:general", "body": "hi", "clientMsgId": "c1" })],
            WAIT,
        )
        .await
        .unwrap();
    assert!(ack[0]["id"].is_string(), "{ack:?}");
    let args = node.expect_event("c", "message:new", WAIT).await;
    assert_eq!(args[0]["authorId"], user, "{args:?}");
    assert_eq!(app.session_requests().await.len(), 1);
    task.abort();
}
