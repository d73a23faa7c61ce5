//! Shared by the all-in-one's integration tests.

use serde_json::{Value, json};

/// Runs `command` through the membership HTTP API at `api` (a base URL,
/// `http://host:port`) with the service token, as `actor` when given, and
/// asserts it was accepted.
pub async fn command(api: &str, service_token: &str, actor: Option<&str>, command: Value) {
    let mut body = json!({ "command": command });
    if let Some(a) = actor {
        body["actor"] = json!(a);
    }
    let resp = reqwest::Client::new()
        .post(format!("{api}/v1/commands"))
        .bearer_auth(service_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
}
