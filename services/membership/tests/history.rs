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
use confab_membership::sql::entities::projection_checkpoints;
use futures::StreamExt;
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use sql_support::{Backend, TestDb};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

on_both!(
    projects_messages_exactly_once,
    a_batch_gives_the_rows_of_one_by_one,
    a_batch_straddling_the_checkpoint_applies_only_the_newer_part,
    a_failing_batch_commits_nothing,
    the_checkpoint_after_a_mixed_batch_is_its_highest_sequence,
    run_retries_a_failed_batch_from_the_checkpoint,
);

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
    let routes = confab_membership::api_nats::message_routes(history);
    let call = |endpoint: &'static str, body: serde_json::Value| {
        let routes = routes.clone();
        async move {
            let payload = serde_json::to_vec(&body).unwrap();
            match routes.answer(endpoint, &payload).await {
                Ok(answer) => serde_json::from_slice(&answer).unwrap(),
                Err(e) => serde_json::to_value(e.body()).unwrap(),
            }
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

/// Publishes `event` with `data` to `room`; returns its sequence.
async fn publish(bus: &dyn Bus, room: &str, event: &str, data: serde_json::Value) -> u64 {
    bus.publish(&RoomId::parse(room).unwrap(), BusMessage::new(event, &data))
        .await
        .unwrap()
        .seq
        .unwrap()
}

fn edited(id: &str, room: &str, body: &str) -> serde_json::Value {
    let mut m = message(id, room, "ann", body);
    m.updated_at = Some(format!("2026-01-01T00:01:00Z/{body}"));
    serde_json::to_value(m).unwrap()
}

fn new(id: &str, room: &str, body: &str) -> serde_json::Value {
    serde_json::to_value(message(id, room, "ann", body)).unwrap()
}

fn deleted(id: &str, room: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "room": room})
}

/// The first `n` stored messages of `bus`, as the tail delivers them.
async fn stored(bus: &dyn Bus, n: usize) -> Vec<TailItem> {
    bus.tail(1)
        .await
        .unwrap()
        .take(n)
        .map(Result::unwrap)
        .collect()
        .await
}

async fn rows(test: &TestDb) -> Vec<messages::Model> {
    messages::Entity::find()
        .order_by_asc(messages::Column::Seq)
        .all(&test.db)
        .await
        .unwrap()
}

async fn checkpoints(test: &TestDb) -> Vec<projection_checkpoints::Model> {
    projection_checkpoints::Entity::find()
        .order_by_asc(projection_checkpoints::Column::Name)
        .all(&test.db)
        .await
        .unwrap()
}

/// A short summary of a row: (id, seq, body, updated_at, deleted).
fn summary(r: &messages::Model) -> (&str, i64, &str, Option<&str>, bool) {
    (
        r.id.as_str(),
        r.seq,
        r.body.as_str(),
        r.updated_at.as_deref(),
        r.deleted,
    )
}

/// New, edit and delete of the same messages in one batch (plus a late
/// edit of a deleted message, a second `message:new` of an existing id and
/// a delete before its message) leave exactly the rows and checkpoint of
/// applying them one by one.
async fn a_batch_gives_the_rows_of_one_by_one(backend: Backend) {
    let bus = InProcessBus::default();
    let c = "channel:c";
    publish(&bus, c, names::MESSAGE_NEW, new("m1", c, "one")).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m2", c, "two")).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m1", c, "one!")).await;
    publish(&bus, c, "room:joined", serde_json::json!({})).await;
    publish(&bus, c, names::MESSAGE_DELETED, deleted("m2", c)).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m3", c, "three")).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m3", c, "three!")).await;
    publish(&bus, c, names::MESSAGE_DELETED, deleted("m3", c)).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m2", c, "late")).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m4", c, "four")).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m4", c, "again")).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m4", c, "four!")).await;
    // A delete before the message exists does nothing.
    publish(&bus, c, names::MESSAGE_DELETED, deleted("m5", c)).await;
    let last = publish(&bus, c, names::MESSAGE_NEW, new("m5", c, "five")).await;
    let items = stored(&bus, 14).await;

    let batched = TestDb::new(backend).await;
    let projector = HistoryProjector::new(batched.db.clone(), Arc::new(InProcessBus::default()));
    assert_eq!(projector.apply_batch(&items).await.unwrap(), 13);
    assert_eq!(*projector.subscribe().borrow(), last);

    let one_by_one = TestDb::new(backend).await;
    let single = HistoryProjector::new(one_by_one.db.clone(), Arc::new(InProcessBus::default()));
    for item in &items {
        single.apply(item).await.unwrap();
    }

    let got = rows(&batched).await;
    assert_eq!(got, rows(&one_by_one).await);
    assert_eq!(checkpoints(&batched).await, checkpoints(&one_by_one).await);
    assert_eq!(
        got.iter().map(summary).collect::<Vec<_>>(),
        [
            ("m1", 1, "one!", Some("2026-01-01T00:01:00Z/one!"), false),
            ("m2", 2, "", None, true),
            ("m3", 6, "", Some("2026-01-01T00:01:00Z/three!"), true),
            ("m4", 10, "four!", Some("2026-01-01T00:01:00Z/four!"), false),
            ("m5", 14, "five", None, false),
        ]
    );
    assert_eq!(projector.checkpoint().await.unwrap(), last);
}

/// Of a batch reaching below the checkpoint only the part above it is
/// applied; the same batch again applies nothing.
async fn a_batch_straddling_the_checkpoint_applies_only_the_newer_part(backend: Backend) {
    let test = TestDb::new(backend).await;
    let bus = InProcessBus::default();
    let c = "channel:c";
    publish(&bus, c, names::MESSAGE_NEW, new("m1", c, "one")).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m2", c, "two")).await;
    publish(&bus, c, "room:joined", serde_json::json!({})).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m3", c, "three")).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m3", c, "three!")).await;
    let items = stored(&bus, 5).await;
    let projector = HistoryProjector::new(test.db.clone(), Arc::new(InProcessBus::default()));

    // The checkpoint says 1 and 2 are applied (their rows are left out, so
    // applying them again would show).
    projection_checkpoints::Entity::insert(projection_checkpoints::ActiveModel {
        name: Set("history".into()),
        last_seq: Set(2),
        log_id: Set(None),
    })
    .exec_without_returning(&test.db)
    .await
    .unwrap();
    assert_eq!(projector.apply_batch(&items).await.unwrap(), 2);
    let expected = [(
        "m3",
        4,
        "three!",
        Some("2026-01-01T00:01:00Z/three!"),
        false,
    )];
    assert_eq!(
        rows(&test).await.iter().map(summary).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(projector.checkpoint().await.unwrap(), 5);

    // A replay from an older checkpoint: nothing twice.
    assert_eq!(projector.apply_batch(&items[1..]).await.unwrap(), 0);
    assert_eq!(projector.apply_batch(&items).await.unwrap(), 0);
    assert_eq!(
        rows(&test).await.iter().map(summary).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(projector.checkpoint().await.unwrap(), 5);
    assert_eq!(*projector.subscribe().borrow(), 5);
}

/// A row in the way of the batch's third event: the unique `seq` of
/// `messages` refuses it.
async fn block_seq(test: &TestDb, seq: i64) {
    messages::Entity::insert(messages::ActiveModel {
        id: Set("blocker".into()),
        room: Set("channel:other".into()),
        seq: Set(seq),
        author: Set("zed".into()),
        body: Set("in the way".into()),
        thread_id: Set(None),
        created_at: Set("2026-01-01T00:00:00Z".into()),
        updated_at: Set(None),
        deleted: Set(false),
    })
    .exec_without_returning(&test.db)
    .await
    .unwrap();
}

async fn unblock(test: &TestDb) {
    messages::Entity::delete_by_id("blocker".to_owned())
        .exec(&test.db)
        .await
        .unwrap();
}

/// When one event of a batch fails, none of the batch is committed (not
/// the events before it, not the checkpoint) and progress does not move;
/// the same batch applies whole once the failure is gone.
async fn a_failing_batch_commits_nothing(backend: Backend) {
    let test = TestDb::new(backend).await;
    let bus = InProcessBus::default();
    let c = "channel:c";
    publish(&bus, c, names::MESSAGE_NEW, new("m1", c, "one")).await;
    publish(&bus, c, names::MESSAGE_UPDATED, edited("m1", c, "one!")).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m3", c, "three")).await;
    publish(&bus, c, "room:joined", serde_json::json!({})).await;
    let items = stored(&bus, 4).await;
    let projector = HistoryProjector::new(test.db.clone(), Arc::new(InProcessBus::default()));
    block_seq(&test, 3).await;

    projector.apply_batch(&items).await.unwrap_err();
    let ids: Vec<String> = rows(&test).await.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["blocker"]);
    assert_eq!(checkpoints(&test).await, []);
    assert_eq!(projector.checkpoint().await.unwrap(), 0);
    assert_eq!(*projector.subscribe().borrow(), 0);

    unblock(&test).await;
    assert_eq!(projector.apply_batch(&items).await.unwrap(), 3);
    assert_eq!(
        rows(&test).await.iter().map(summary).collect::<Vec<_>>(),
        [
            ("m1", 1, "one!", Some("2026-01-01T00:01:00Z/one!"), false),
            ("m3", 3, "three", None, false),
        ]
    );
    assert_eq!(projector.checkpoint().await.unwrap(), 4);
}

/// The checkpoint after a batch is its highest sequence even when that is
/// not a message event; a batch of only other events writes nothing but
/// still moves progress.
async fn the_checkpoint_after_a_mixed_batch_is_its_highest_sequence(backend: Backend) {
    let test = TestDb::new(backend).await;
    let bus = InProcessBus::default();
    let c = "channel:c";
    publish(&bus, c, names::MESSAGE_NEW, new("m1", c, "one")).await;
    publish(&bus, c, "room:joined", serde_json::json!({})).await;
    publish(&bus, c, names::MESSAGE_NEW, new("m2", c, "two")).await;
    publish(&bus, c, "room:left", serde_json::json!({})).await;
    publish(&bus, c, "channel:renamed", serde_json::json!({})).await;
    let items = stored(&bus, 5).await;
    let projector = HistoryProjector::new(test.db.clone(), Arc::new(InProcessBus::default()));

    assert_eq!(projector.apply_batch(&items[..4]).await.unwrap(), 2);
    assert_eq!(projector.checkpoint().await.unwrap(), 4);
    assert_eq!(*projector.subscribe().borrow(), 4);
    assert_eq!(rows(&test).await.len(), 2);

    assert_eq!(projector.apply_batch(&items[4..]).await.unwrap(), 0);
    assert_eq!(projector.checkpoint().await.unwrap(), 4);
    assert_eq!(*projector.subscribe().borrow(), 5);
}

/// `run` retries a batch that failed, from the committed checkpoint, and
/// then applies everything exactly once.
async fn run_retries_a_failed_batch_from_the_checkpoint(backend: Backend) {
    let test = TestDb::new(backend).await;
    let bus = Arc::new(InProcessBus::default());
    let c = "channel:c";
    publish(&*bus, c, names::MESSAGE_NEW, new("m1", c, "one")).await;
    let projector = HistoryProjector::new(test.db.clone(), bus.clone());
    assert!(projector.apply(&stored(&*bus, 1).await[0]).await.unwrap());
    publish(&*bus, c, names::MESSAGE_NEW, new("m2", c, "two")).await;
    publish(&*bus, c, names::MESSAGE_NEW, new("m3", c, "three")).await;
    publish(&*bus, c, names::MESSAGE_UPDATED, edited("m2", c, "two!")).await;
    block_seq(&test, 3).await;

    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let projector = projector.clone();
        let stop = stop.clone();
        async move { projector.run(stop.cancelled_owned()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(projector.checkpoint().await.unwrap(), 1);
    assert_eq!(rows(&test).await.len(), 2, "m1 and the blocker only");
    unblock(&test).await;
    let last = publish(&*bus, c, names::MESSAGE_DELETED, deleted("m1", c)).await;
    wait_until(&projector, last).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(projector.checkpoint().await.unwrap(), last);
    assert_eq!(
        rows(&test).await.iter().map(summary).collect::<Vec<_>>(),
        [
            ("m1", 1, "", None, true),
            ("m2", 2, "two!", Some("2026-01-01T00:01:00Z/two!"), false),
            ("m3", 3, "three", None, false),
        ]
    );
}

/// Editing back to an earlier text is a new edit, not a duplicate of the
/// earlier one: every acked edit is stored, delivered and applied.
/// The newest ten messages of `channel:pub` as bob reads them.
async fn bobs_page(history: &History) -> confab_membership::history::HistoryPage {
    history
        .history(&confab_membership::history::HistoryRequest {
            user: "bob".into(),
            room: "channel:pub".into(),
            before: None,
            limit: Some(10),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_edit_back_to_an_earlier_text_applies() {
    let bus = Arc::new(InProcessBus::default());
    let core = common::embedded_core(bus.clone()).await;
    let history: History = core.history().clone();
    let running = common::start(core).await;
    common::bootstrap(&running.service).await;
    let room = RoomId::parse("channel:pub").unwrap();
    let mut live = bus.subscribe(&room).await.unwrap();
    send(&*bus, &message("m1", "channel:pub", "bob", "A")).await;
    let edit = |body: &str| confab_membership::history::EditRequest {
        user: "bob".into(),
        room: "channel:pub".into(),
        id: "m1".into(),
        body: body.into(),
    };
    let mut seqs = Vec::new();
    let bodies = ["B", "A", "B", "A"];
    for body in bodies {
        let ack = history.edit(&edit(body)).await.unwrap();
        seqs.push(ack.seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "every edit stored anew: {seqs:?}"
    );
    let mut delivered = Vec::new();
    while delivered.len() < bodies.len() {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), live.next()).await else {
            break;
        };
        if &*msg.event == names::MESSAGE_UPDATED {
            let m: Vec<Message> = serde_json::from_str(&msg.args_json).unwrap();
            delivered.push(m[0].body.clone());
        }
    }
    assert_eq!(delivered, bodies);
    let page = bobs_page(&history).await;
    assert_eq!(page.messages[0].body, "A");
    assert!(page.messages[0].updated_at.is_some());
}

#[tokio::test]
async fn former_members_and_archived_channels_cannot_change_messages() {
    use confab_membership::domain::Command;
    use confab_membership::history::{DeleteRequest, EditRequest};
    let bus = Arc::new(InProcessBus::default());
    let core = common::embedded_core(bus.clone()).await;
    let history: History = core.history().clone();
    let running = common::start(core).await;
    let svc = &running.service;
    common::bootstrap(svc).await;
    for id in ["m1", "m2", "m3"] {
        send(&*bus, &message(id, "channel:pub", "bob", "hi")).await;
    }
    let edit = |user: &str, id: &str| EditRequest {
        user: user.into(),
        room: "channel:pub".into(),
        id: id.into(),
        body: "changed".into(),
    };
    let delete = |user: &str, id: &str| DeleteRequest {
        user: user.into(),
        room: "channel:pub".into(),
        id: id.into(),
    };
    history.edit(&edit("bob", "m1")).await.unwrap();

    // Kicked: bob's own messages are out of his reach.
    let kick = Command::Kick {
        channel: common::c("pub"),
        user: common::u("bob"),
    };
    svc.execute(kick, &common::user("adm")).await.unwrap();
    let err = history.edit(&edit("bob", "m1")).await.unwrap_err();
    assert_eq!(err.code(), "forbidden", "{err}");
    let err = history.delete(&delete("bob", "m1")).await.unwrap_err();
    assert_eq!(err.code(), "forbidden", "{err}");

    // Archived: read-only for everyone, members and admins alike.
    let join = Command::JoinChannel {
        channel: common::c("pub"),
    };
    svc.execute(join, &common::user("bob")).await.unwrap();
    let archive = Command::ArchiveChannel {
        channel: common::c("pub"),
    };
    svc.execute(archive, &common::user("adm")).await.unwrap();
    let err = history.edit(&edit("bob", "m2")).await.unwrap_err();
    assert_eq!(err.code(), "archived", "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    let err = history.delete(&delete("bob", "m2")).await.unwrap_err();
    assert_eq!(err.code(), "archived", "{err}");
    let err = history.delete(&delete("adm", "m3")).await.unwrap_err();
    assert_eq!(err.code(), "archived", "{err}");
    // Reading still works.
    let page = bobs_page(&history).await;
    assert_eq!(page.messages.len(), 3);
    running.stop.cancel();
}
