//! Message history, edit and delete through socket.io-client on a cluster
//! (gateway + membership service on NATS, and on Redis over HTTP).

use std::time::Duration;

use confab_test_support::NodeClient;
use serde_json::{Value, json};

use crate::cluster::{Backend, Cluster};
use crate::support::*;

const T: Duration = Duration::from_secs(15);

async fn setup(c: &Cluster) {
    c.workspace_with_general_roles(&[("bob", "member"), ("carol", "member"), ("adm", "admin")])
        .await;
}

async fn call(node: &NodeClient, who: &str, event: &str, arg: Value) -> Value {
    node.emit_with_ack(who, event, vec![arg], T)
        .await
        .unwrap()
        .remove(0)
}

fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// History of `channel:general` for `who` once its newest message is
/// `newest` (the projection follows the log asynchronously).
async fn page_once(node: &NodeClient, who: &str, arg: Value, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let page = call(node, who, "message:history", arg.clone()).await;
        if ok(&page) || tokio::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn history_pages_edits_and_deletes() {
    pages_edits_and_deletes(Backend::Nats).await;
}

#[tokio::test]
async fn on_redis_history_pages_edits_and_deletes() {
    pages_edits_and_deletes(Backend::Redis).await;
}

async fn pages_edits_and_deletes(backend: Backend) {
    let c = Cluster::start_on(backend, 2).await;
    setup(&c).await;
    let node = NodeClient::spawn().await;
    // Users spread over both gateways: edits and deletes must reach all.
    for (i, who) in ["alice", "bob", "carol", "adm", "dave"]
        .into_iter()
        .enumerate()
    {
        connect_as(&node, who, who, &c.gateway_url(i % 2)).await;
    }
    let mut sent = Vec::new();
    for i in 0..25 {
        let ack = loop {
            let ack = call(
                &node,
                "bob",
                "message:send",
                json!({ "room": "channel:general", "body": format!("m {i}"), "clientMsgId": format!("c{i}") }),
            )
            .await;
            match ack["error"]["retryAfterMs"].as_u64() {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => break ack,
            }
        };
        sent.push(
            ack["id"]
                .as_str()
                .unwrap_or_else(|| panic!("sent: {ack}"))
                .to_owned(),
        );
    }
    let newest: Vec<String> = sent.iter().rev().cloned().collect();
    let first = page_once(
        &node,
        "alice",
        json!({ "room": "channel:general", "limit": 10 }),
        |p| p["messages"][0]["id"] == newest[0].as_str(),
    )
    .await;
    assert_eq!(ids(&first), newest[0..10]);
    let second = call(
        &node,
        "alice",
        "message:history",
        json!({ "room": "channel:general", "limit": 10, "before": first["nextCursor"] }),
    )
    .await;
    assert_eq!(ids(&second), newest[10..20]);
    let third = call(
        &node,
        "alice",
        "message:history",
        json!({ "room": "channel:general", "limit": 10, "before": second["nextCursor"] }),
    )
    .await;
    assert_eq!(ids(&third), newest[20..25]);
    assert!(third.get("nextCursor").is_none(), "{third}");
    let refused = call(
        &node,
        "dave",
        "message:history",
        json!({ "room": "channel:general" }),
    )
    .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // The same pages over HTTP, for app backends.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/rooms/channel:general/messages", c.membership);
    let get = |query: &'static str| {
        http.get(format!("{url}?{query}"))
            .bearer_auth(crate::cluster::SERVICE_TOKEN)
            .send()
    };
    let resp = get("actor=alice&limit=10").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(ids(&page), newest[0..10]);
    assert_eq!(page["nextCursor"], first["nextCursor"]);
    assert_eq!(get("actor=dave").await.unwrap().status().as_u16(), 403);
    assert_eq!(get("limit=10").await.unwrap().status().as_u16(), 400);
    assert_eq!(
        get("actor=alice&limit=0").await.unwrap().status().as_u16(),
        400
    );
    let anonymous = http.get(format!("{url}?actor=alice")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Edit by the author reaches everyone; by someone else it is refused.
    let target = newest[0].clone();
    let ok = call(
        &node,
        "bob",
        "message:edit",
        json!({ "room": "channel:general", "id": target, "body": "edited" }),
    )
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
    for who in ["alice", "carol"] {
        let ev = node.expect(who, is_event("message:updated"), T).await;
        assert_eq!(ev["args"][0]["id"], target.as_str());
        assert_eq!(ev["args"][0]["body"], "edited");
    }
    let no = call(
        &node,
        "carol",
        "message:edit",
        json!({ "room": "channel:general", "id": target, "body": "mine" }),
    )
    .await;
    assert_eq!(no["error"]["code"], "forbidden", "{no}");

    // Delete: a plain other member is refused; the author and a workspace
    // admin may.
    let no = call(
        &node,
        "carol",
        "message:delete",
        json!({ "room": "channel:general", "id": newest[1] }),
    )
    .await;
    assert_eq!(no["error"]["code"], "forbidden", "{no}");
    for (who, id) in [("bob", &newest[1]), ("adm", &newest[2])] {
        let ok = call(
            &node,
            who,
            "message:delete",
            json!({ "room": "channel:general", "id": id }),
        )
        .await;
        assert_eq!(ok["ok"], true, "{who}: {ok}");
        let ev = node.expect("alice", is_event("message:deleted"), T).await;
        assert_eq!(ev["args"][0]["id"], id.as_str());
    }
    let after = page_once(
        &node,
        "alice",
        json!({ "room": "channel:general", "limit": 3 }),
        |p| p["messages"][1]["id"] == newest[3].as_str(),
    )
    .await;
    assert_eq!(
        ids(&after),
        [newest[0].clone(), newest[3].clone(), newest[4].clone()]
    );
    assert_eq!(after["messages"][0]["body"], "edited");
}
