//! Authorization across the stack (issue #12): who may still read and
//! send after a membership change.

use std::sync::Arc;
use std::time::Duration;

use confab_test_support::NodeClient;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::support::*;

const T: Duration = Duration::from_secs(15);

/// `message:send` of `body` to `room` from `socket`; answers the ack.
async fn send_to(node: &NodeClient, socket: &str, room: &str, body: &str, id: &str) -> Value {
    let request = json!({ "room": room, "body": body, "clientMsgId": id });
    let ack = node
        .emit_with_ack(socket, "message:send", vec![request], T)
        .await
        .unwrap();
    ack[0].clone()
}

#[tokio::test]
async fn the_removed_member_of_a_group_dm_stops_receiving_and_cannot_send() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob", "carol"]).await;
    c.ok(
        Some("alice"),
        json!({ "type": "open_dm", "dm": "g1", "workspace": "w1", "participants": ["bob", "carol"] }),
    )
    .await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    connect_as(&node, "carol", "carol", &c.gateway_url(0)).await;

    // Before: bob is a full participant.
    let ack = send_to(&node, "bob", "dm:g1", "hi all", "b1").await;
    assert!(ack["id"].is_string(), "{ack}");
    for who in ["alice", "carol"] {
        let m = node.expect(who, is_event("message:new"), T).await;
        assert_eq!(m["args"][0]["body"], "hi all");
    }
    node.expect("bob", is_event("message:new"), T).await;

    c.ok(
        Some("alice"),
        json!({ "type": "remove_workspace_member", "workspace": "w1", "user": "bob" }),
    )
    .await;
    let left = node
        .expect(
            "bob",
            |v: &Value| v["event"] == "room:left" && v["args"][0]["room"] == "dm:g1",
            T,
        )
        .await;
    assert_eq!(left["args"][0]["reason"], "removed_from_workspace");
    let gone = node
        .expect(
            "carol",
            |v: &Value| v["event"] == "member:left" && v["args"][0]["room"] == "dm:g1",
            T,
        )
        .await;
    assert_eq!(gone["args"][0]["user"], "bob");

    // After: the others still talk, bob hears nothing and cannot send.
    let ack = send_to(&node, "alice", "dm:g1", "without bob", "a1").await;
    assert!(ack["id"].is_string(), "{ack}");
    let m = node.expect("carol", is_event("message:new"), T).await;
    assert_eq!(m["args"][0]["body"], "without bob");
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;
    let ack = send_to(&node, "bob", "dm:g1", "still here?", "b2").await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let ack = node
        .emit_with_ack("bob", "room:join", vec![json!("dm:g1")], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
}

#[tokio::test]
async fn archived_channels_refuse_sends_edits_and_deletes() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    let sent = send_to(&node, "bob", "channel:general", "before", "b1").await;
    let id = sent["id"]
        .as_str()
        .expect("sent before the archive")
        .to_owned();
    for who in ["alice", "bob"] {
        node.expect(who, is_event("message:new"), T).await;
    }

    c.ok(
        Some("alice"),
        json!({ "type": "archive_channel", "channel": "general" }),
    )
    .await;
    node.expect("bob", is_event("channel:archived"), T).await;
    for (who, n) in [("bob", "b2"), ("alice", "a1")] {
        let ack = send_to(&node, who, "channel:general", "after", n).await;
        assert_eq!(ack["error"]["code"], "archived", "{who}: {ack}");
        let message = ack["error"]["message"].as_str().unwrap();
        assert!(message.contains("read-only"), "{message}");
    }
    let call = |who: &'static str, event: &'static str, arg: Value| {
        let node = &node;
        async move { node.emit_with_ack(who, event, vec![arg], T).await.unwrap()[0].clone() }
    };
    let edit = json!({ "room": "channel:general", "id": id, "body": "edited" });
    let ack = call("bob", "message:edit", edit).await;
    assert_eq!(ack["error"]["code"], "archived", "{ack}");
    let delete = json!({ "room": "channel:general", "id": id });
    for who in ["bob", "alice"] {
        let ack = call(who, "message:delete", delete.clone()).await;
        assert_eq!(ack["error"]["code"], "archived", "{who}: {ack}");
    }
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(300))
        .await;
    // Still readable.
    let page = call(
        "bob",
        "message:history",
        json!({ "room": "channel:general" }),
    )
    .await;
    assert_eq!(page["messages"][0]["body"], "before", "{page}");
}

#[tokio::test]
async fn a_send_is_authorized_by_the_authority_not_the_sockets_rooms() {
    // Cached answers live 300 ms without a membership event.
    let gw = spawn_gateway(|cfg| cfg.membership.cache_ttl = Duration::from_millis(300)).await;
    let bob = confab_events::UserId::parse("bob").unwrap();
    let general = confab_events::RoomId::parse("channel:general").unwrap();
    gw.membership.grant(&bob, &general);
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob", "bob", &gw.url()).await;
    let ack = send_to(&node, "bob", "channel:general", "in", "b1").await;
    assert!(ack["id"].is_string(), "{ack}");
    // The authority drops bob, and no room:left reaches the gateway (a
    // notification that never came): his socket is still in the room, and
    // the cached answer is asked again once it is older than the TTL.
    gw.membership.revoke(&bob, &general);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ack = send_to(&node, "bob", "channel:general", "out", "b2").await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    gw.stop().await;
}

#[tokio::test]
async fn cached_members_still_send_while_the_membership_service_is_down() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob", "carol"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;
    connect_as(&node, "carol", "carol", &c.gateway_url(1)).await;
    let ack = send_to(&node, "bob", "channel:general", "before", "b0").await;
    assert!(ack["id"].is_string(), "{ack}");
    node.expect("alice", is_event("message:new"), T).await;

    c.stop_membership().await;
    // Bob's write access is cached on his gateway: acked and delivered.
    for n in 1..=3 {
        let body = format!("while down {n}");
        let ack = send_to(&node, "bob", "channel:general", &body, &format!("b{n}")).await;
        assert!(ack["id"].is_string(), "send {n}: {ack}");
        let m = node.expect("alice", is_event("message:new"), T).await;
        assert_eq!(m["args"][0]["body"], body.as_str());
    }
    // Carol never wrote there: nothing cached, the authority is needed.
    let ack = send_to(&node, "carol", "channel:general", "me too", "c1").await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
}

/// A membership authority that, when armed, holds its next `may_join`
/// answer until released: the answer of a `room:join` that a kick
/// overtakes.
struct HeldAuthority {
    inner: confab_gateway::membership::StaticMembership,
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl confab_gateway::membership::Membership for HeldAuthority {
    async fn rooms_of(
        &self,
        user: &confab_events::UserId,
    ) -> Result<Vec<confab_events::RoomId>, confab_gateway::membership::MembershipError> {
        self.inner.rooms_of(user).await
    }

    async fn may_join(
        &self,
        user: &confab_events::UserId,
        room: &confab_events::RoomId,
    ) -> Result<confab_gateway::membership::Access, confab_gateway::membership::MembershipError>
    {
        let answer = self.inner.may_join(user, room).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        answer
    }
}

#[tokio::test]
async fn a_join_overtaken_by_a_kick_leaves_no_socket_in_the_room() {
    use confab_events::socket::{LeaveReason, RoomLeft, ServerToClient};
    use confab_events::{RoomId, UserId};
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let general = RoomId::parse("channel:general").unwrap();
    let authority = Arc::new(HeldAuthority {
        inner: confab_gateway::membership::StaticMembership::new(),
        armed: false.into(),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    authority.inner.grant(&alice, &general);
    let bus = Arc::new(confab_bus::InProcessBus::default());
    let cfg = test_config();
    cfg.validate().unwrap();
    let deps = confab_gateway::Deps {
        bus: Arc::clone(&bus) as _,
        membership: Arc::clone(&authority) as _,
        presence: Arc::new(confab_gateway::presence::NoPresence),
        history: Arc::new(confab_gateway::history::NoHistory),
        sessions: None,
        forwarding: None,
    };
    let app = confab_gateway::App::build(cfg, deps).await.unwrap();
    let url = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(std::future::pending()));
    let node = NodeClient::spawn().await;
    connect_as(&node, "alice", "alice", &url).await;
    connect_as(&node, "bob", "bob", &url).await;

    // Bob may join; his join is asked, and its answer held.
    authority.inner.grant(&bob, &general);
    authority
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let joining = {
        let node = &node;
        async move {
            node.emit_with_ack("bob", "room:join", vec![json!("channel:general")], T)
                .await
                .unwrap()[0]
                .clone()
        }
    };
    let kick = async {
        authority.entered.notified().await;
        // The kick: the authority drops bob and announces it (as the
        // notifier does) before the held answer arrives.
        authority.inner.revoke(&bob, &general);
        let left = ServerToClient::RoomLeft(RoomLeft {
            room: general.clone(),
            reason: LeaveReason::Kicked,
        });
        let msg = confab_bus::BusMessage::new(left.name(), &left.data());
        confab_bus::Bus::publish(&*bus, &RoomId::user(&bob), msg)
            .await
            .unwrap();
        // The gateway applies it within moments (the driver is busy
        // waiting for the join's ack, so it cannot be asked).
        tokio::time::sleep(Duration::from_millis(300)).await;
        authority.release.notify_one();
    };
    let (ack, ()) = tokio::join!(joining, kick);
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    node.expect("bob", is_event("room:left"), T).await;
    // Bob's socket is not in the room: alice's message does not reach him.
    let ack = send_to(&node, "alice", "channel:general", "after the kick", "a1").await;
    assert!(ack["id"].is_string(), "{ack}");
    node.expect_none("bob", is_event("message:new"), Duration::from_millis(500))
        .await;
}

/// `presence:query` of `users` from `socket`; answers the ack.
async fn query(node: &NodeClient, socket: &str, users: &[&str]) -> Value {
    let ack = node
        .emit_with_ack(socket, "presence:query", vec![json!({ "users": users })], T)
        .await
        .unwrap();
    ack[0].clone()
}

#[tokio::test]
async fn a_stranger_s_presence_is_not_revealed() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob"]).await;
    c.ok(
        None,
        json!({ "type": "create_workspace", "id": "w2", "name": "Other", "owner": "eve" }),
    )
    .await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "eve", "eve", &c.gateway_url(0)).await;
    connect_as(&node, "alice", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "bob", "bob", &c.gateway_url(1)).await;

    // Wait until the tracker has gateway A's heartbeat (alice and eve).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ack = query(&node, "bob", &["alice"]).await;
        if ack["presence"]["alice"] == "online" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ack}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Eve, online on the same gateway, shares no workspace with bob.
    let ack = query(&node, "bob", &["alice", "bob", "eve"]).await;
    assert_eq!(
        ack["presence"],
        json!({ "alice": "online", "bob": "online", "eve": "offline" }),
        "{ack}"
    );
    let ack = query(&node, "eve", &["alice", "bob", "eve"]).await;
    assert_eq!(
        ack["presence"],
        json!({ "alice": "offline", "bob": "offline", "eve": "online" }),
        "{ack}"
    );
}

#[tokio::test]
async fn presence_queries_are_rate_limited_per_socket() {
    let c = Cluster::start(1).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "flood", "alice", &c.gateway_url(0)).await;
    connect_as(&node, "calm", "alice", &c.gateway_url(0)).await;
    let mut answered = 0;
    let mut limited = None;
    for _ in 0..40 {
        let ack = query(&node, "flood", &["bob"]).await;
        if ack["error"]["code"] == "rate_limited" {
            limited = Some(ack);
            break;
        }
        assert!(ack["presence"].is_object(), "{ack}");
        answered += 1;
    }
    let err = limited.expect("rate limited within 40 queries");
    assert!((10..20).contains(&answered), "limited after {answered}");
    assert!(err["error"]["retryAfterMs"].as_u64().unwrap() > 0, "{err}");
    // Another socket has its own budget.
    let ack = query(&node, "calm", &["bob"]).await;
    assert!(ack["presence"].is_object(), "{ack}");
}

#[tokio::test]
async fn kicked_user_s_send_refused_on_both_gateways() {
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob"]).await;
    let node = NodeClient::spawn().await;
    connect_as(&node, "bob0", "bob", &c.gateway_url(0)).await;
    connect_as(&node, "bob1", "bob", &c.gateway_url(1)).await;
    let sent = send_to(&node, "bob0", "channel:general", "mine", "b0").await;
    let id = sent["id"]
        .as_str()
        .expect("sent before the kick")
        .to_owned();

    c.ok(
        Some("alice"),
        json!({ "type": "kick", "channel": "general", "user": "bob" }),
    )
    .await;
    // At once, without waiting for room:left: the authority decides.
    for (socket, n) in [("bob0", "k0"), ("bob1", "k1")] {
        let ack = send_to(&node, socket, "channel:general", "after", n).await;
        assert_eq!(ack["error"]["code"], "forbidden", "{socket}: {ack}");
    }
    let edit = json!({ "room": "channel:general", "id": id, "body": "edited" });
    let ack = node
        .emit_with_ack("bob1", "message:edit", vec![edit], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
    let delete = json!({ "room": "channel:general", "id": id });
    let ack = node
        .emit_with_ack("bob0", "message:delete", vec![delete], T)
        .await
        .unwrap();
    assert_eq!(ack[0]["error"]["code"], "forbidden", "{ack:?}");
}
