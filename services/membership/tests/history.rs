//! The message history projection (SQLite and Postgres) and the history
//! calls (paging, membership, edit and delete rules) on an embedded core.

#[macro_use]
mod sql_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use confab_bus::{Bus, BusMessage, InProcessBus, TailItem};
use confab_events::RoomId;
use confab_events::socket::{Message, names};
use confab_membership::history::{History, HistoryProjector};
use confab_membership::sql::entities::messages;
use futures::StreamExt;
use sea_orm::{EntityTrait, QueryOrder};
use sql_support::{Backend, TestDb};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

on_both!(projects_messages_exactly_once);

fn message(id: &str, room: &str, author: &str, body: &str) -> Message {
    Message {
        id: id.into(),
        room: room.into(),
        author_id: author.into(),
        body: body.into(),
        thread_id: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: None,
    }
}

async fn send(bus: &dyn Bus, m: &Message) -> u64 {
    let room = RoomId::parse(&m.room).unwrap();
    let data = serde_json::to_value(m).unwrap();
    bus.publish(&room, BusMessage::new(names::MESSAGE_NEW, &data))
        .await
        .unwrap()
        .seq
        .unwrap()
}

async fn wait_until(projector: &HistoryProjector, seq: u64) {
    let mut progress = projector.subscribe();
    tokio::time::timeout(WAIT, progress.wait_for(|p| *p >= seq))
        .await
        .expect("projected in time")
        .unwrap();
}

async fn projects_messages_exactly_once(backend: Backend) {
    let test = TestDb::new(backend).await;
    let bus = Arc::new(InProcessBus::default());
    let c = RoomId::parse("channel:c").unwrap();
    send(&*bus, &message("m1", "channel:c", "ann", "one")).await;
    send(&*bus, &message("m2", "channel:c", "ann", "two")).await;
    bus.publish(&c, BusMessage::new("room:joined", &serde_json::json!({})))
        .await
        .unwrap();
    let mut edited = message("m1", "channel:c", "ann", "one!");
    edited.updated_at = Some("2026-01-01T00:01:00Z".into());
    bus.publish(
        &c,
        BusMessage::new(
            names::MESSAGE_UPDATED,
            &serde_json::to_value(&edited).unwrap(),
        ),
    )
    .await
    .unwrap();
    let last = bus
        .publish(
            &c,
            BusMessage::new(
                names::MESSAGE_DELETED,
                &serde_json::json!({"id": "m2", "room": "channel:c"}),
            ),
        )
        .await
        .unwrap()
        .seq
        .unwrap();

    let projector = HistoryProjector::new(test.db.clone(), bus.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let projector = projector.clone();
        let stop = stop.clone();
        async move { projector.run(stop.cancelled_owned()).await }
    });
    wait_until(&projector, last).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(projector.checkpoint().await.unwrap(), last);
    let rows = messages::Entity::find()
        .order_by_asc(messages::Column::Seq)
        .all(&test.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].body.as_str(), rows[0].deleted), ("one!", false));
    assert_eq!(rows[0].updated_at.as_deref(), Some("2026-01-01T00:01:00Z"));
    assert_eq!((rows[1].body.as_str(), rows[1].deleted), ("", true));

    // A restarted projector (same database) never applies an event twice:
    // everything at or below the checkpoint is skipped.
    let restarted = HistoryProjector::new(test.db.clone(), bus.clone());
    let mut tail = bus.tail(1).await.unwrap();
    for _ in 0..last {
        let item: TailItem = tail.next().await.unwrap().unwrap();
        assert!(!restarted.apply(&item).await.unwrap());
    }
    // A new message after a restart is applied once.
    let seq = send(&*bus, &message("m3", "channel:c", "bob", "three")).await;
    let item = tail.next().await.unwrap().unwrap();
    assert_eq!(item.msg.seq, Some(seq));
    assert!(restarted.apply(&item).await.unwrap());
    assert!(!restarted.apply(&item).await.unwrap());
    assert_eq!(restarted.checkpoint().await.unwrap(), seq);
    assert_eq!(
        messages::Entity::find().all(&test.db).await.unwrap().len(),
        3
    );
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_edit_delete_rules() {
    let bus = Arc::new(InProcessBus::default());
    let core = common::embedded_core(bus.clone()).await;
    let history: History = core.history().clone();
    let running = common::start(core).await;
    common::bootstrap(&running.service).await;
    let room = "channel:pub";
    for i in 0..25 {
        send(
            &*bus,
            &message(&format!("m{i:02}"), room, "bob", &format!("body {i}")),
        )
        .await;
    }
    let call = |endpoint: &'static str, body: serde_json::Value| {
        let history = history.clone();
        async move {
            let payload = serde_json::to_vec(&body).unwrap();
            confab_membership::history::answer(&history, endpoint, &payload).await
        }
    };
    use confab_membership::history::subjects::{DELETE, EDIT, HISTORY};
    // Wait until the last one is projected.
    let mut page = serde_json::Value::Null;
    for _ in 0..100 {
        page = call(
            HISTORY,
            serde_json::json!({"user": "bob", "room": room, "limit": 10}),
        )
        .await;
        if page["messages"][0]["id"] == "m24" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected = |from: i32, to: i32| -> Vec<String> {
        (to..=from).rev().map(|i| format!("m{i:02}")).collect()
    };
    assert_eq!(ids(&page), expected(24, 15));
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let page2 = call(
        HISTORY,
        serde_json::json!({"user": "bob", "room": room, "limit": 10, "before": cursor}),
    )
    .await;
    assert_eq!(ids(&page2), expected(14, 5));
    let page3 = call(
        HISTORY,
        serde_json::json!({"user": "bob", "room": room, "limit": 10, "before": page2["nextCursor"]}),
    )
    .await;
    assert_eq!(ids(&page3), expected(4, 0));
    assert!(page3.get("nextCursor").is_none());
    // carol is a workspace member but not in the channel.
    let refused = call(HISTORY, serde_json::json!({"user": "carol", "room": room})).await;
    assert_eq!(code(&refused), "forbidden");

    // Edit: the author only, with a valid body.
    let ok = call(
        EDIT,
        serde_json::json!({"user": "bob", "room": room, "id": "m24", "body": "edited"}),
    )
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let no = call(
        EDIT,
        serde_json::json!({"user": "adm", "room": room, "id": "m24", "body": "x"}),
    )
    .await;
    assert_eq!(code(&no), "forbidden");
    let empty = call(
        EDIT,
        serde_json::json!({"user": "bob", "room": room, "id": "m24", "body": " "}),
    )
    .await;
    assert_eq!(code(&empty), "invalid_body");
    let missing = call(
        EDIT,
        serde_json::json!({"user": "bob", "room": room, "id": "nope", "body": "x"}),
    )
    .await;
    assert_eq!(code(&missing), "not_found");

    // Delete: the author, or a workspace admin; not another member.
    running
        .service
        .execute(
            confab_membership::domain::Command::JoinChannel {
                channel: common::c("pub"),
            },
            &common::user("carol"),
        )
        .await
        .unwrap();
    let no = call(
        DELETE,
        serde_json::json!({"user": "carol", "room": room, "id": "m23"}),
    )
    .await;
    assert_eq!(code(&no), "forbidden");
    let by_author = call(
        DELETE,
        serde_json::json!({"user": "bob", "room": room, "id": "m23"}),
    )
    .await;
    assert_eq!(by_author["ok"], true, "{by_author}");
    let by_admin = call(
        DELETE,
        serde_json::json!({"user": "adm", "room": room, "id": "m22"}),
    )
    .await;
    assert_eq!(by_admin["ok"], true, "{by_admin}");

    // History reflects the edit and the deletes.
    let mut page = serde_json::Value::Null;
    for _ in 0..100 {
        page = call(
            HISTORY,
            serde_json::json!({"user": "bob", "room": room, "limit": 3}),
        )
        .await;
        if ids(&page) == ["m24", "m21", "m20"] && page["messages"][0]["body"] == "edited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&page), ["m24", "m21", "m20"]);
    assert_eq!(page["messages"][0]["body"], "edited");
    assert!(page["messages"][0]["updatedAt"].is_string());
    running.stop.cancel();
}
