//! The notifier: membership commands become `room:joined` / `room:left`
//! (to `user:{id}`) and `member:*` / `channel:archived` (to the room) bus
//! messages; on the NATS bus, re-announcing after a restart is
//! de-duplicated by JetStream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confab_bus::Bus;
use confab_bus::async_nats;
use confab_membership::domain::Command;
use confab_membership::notifier::{MemoryCheckpoint, Notifier};
use confab_test_support::NatsServer;

fn args(m: &confab_bus::BusMessage) -> serde_json::Value {
    serde_json::from_str(&m.args_json).unwrap()
}

#[tokio::test]
async fn commands_announce_joins_and_departures() {
    let (running, bus) = embedded().await;
    let svc = &running.service;
    bootstrap(svc).await;
    let mut carol = bus.subscribe(&room("user:carol")).await.unwrap();
    let mut bob = bus.subscribe(&room("user:bob")).await.unwrap();
    let mut channel = bus.subscribe(&room("channel:pub")).await.unwrap();

    svc.execute(Command::JoinChannel { channel: c("pub") }, &user("carol"))
        .await
        .unwrap();
    let m = next(&mut carol).await;
    assert_eq!(&*m.event, "room:joined");
    assert_eq!(args(&m), serde_json::json!([{"room": "channel:pub"}]));
    let m = next(&mut channel).await;
    assert_eq!(&*m.event, "member:joined");
    assert_eq!(
        args(&m),
        serde_json::json!([{"room": "channel:pub", "user": "carol"}])
    );
    assert!(m.msg_id.as_deref().unwrap().ends_with(":channel:pub"));

    svc.execute(
        Command::Kick {
            channel: c("pub"),
            user: u("carol"),
        },
        &user("adm"),
    )
    .await
    .unwrap();
    let m = next(&mut carol).await;
    assert_eq!(&*m.event, "room:left");
    assert_eq!(
        args(&m),
        serde_json::json!([{"room": "channel:pub", "reason": "kicked"}])
    );
    let m = next(&mut channel).await;
    assert_eq!(&*m.event, "member:left");

    svc.execute(Command::LeaveChannel { channel: c("pub") }, &user("bob"))
        .await
        .unwrap();
    let m = next(&mut bob).await;
    assert_eq!(
        (m.event.to_string(), args(&m)),
        (
            "room:left".into(),
            serde_json::json!([{"room": "channel:pub", "reason": "left"}])
        )
    );
    next(&mut channel).await;

    // Removal from the workspace: the channels first or last, the workspace too.
    invite(svc, "priv", "bob", "adm").await;
    assert_eq!(
        args(&next(&mut bob).await),
        serde_json::json!([{"room": "channel:priv"}])
    );
    remove_member(svc, "bob", "adm").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(args(&next(&mut bob).await));
    }
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        vec![
            serde_json::json!([{"room": "channel:priv", "reason": "removed_from_workspace"}]),
            serde_json::json!([{"room": "workspace:w", "reason": "removed_from_workspace"}]),
        ]
    );

    // Archiving is announced to the room.
    svc.execute(Command::ArchiveChannel { channel: c("pub") }, &user("adm"))
        .await
        .unwrap();
    let m = next(&mut channel).await;
    assert_eq!(&*m.event, "channel:archived");
    assert_eq!(
        args(&m),
        serde_json::json!([{"room": "channel:pub", "by": "adm"}])
    );

    // A DM is announced to every participant.
    let mut adm = bus.subscribe(&room("user:adm")).await.unwrap();
    open_dm(svc, "d1", &["adm"], "carol").await;
    assert_eq!(
        args(&next(&mut adm).await),
        serde_json::json!([{"room": "dm:d1"}])
    );
    assert_eq!(
        args(&next(&mut carol).await),
        serde_json::json!([{"room": "dm:d1"}])
    );
    quiet(&mut bob, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn republishing_after_a_restart_is_deduplicated_by_jetstream() {
    let server = NatsServer::start();
    let bus = nats_bus(&server.url()).await;
    let running = start(nats_core(bus.clone()).await).await;
    let svc = Arc::clone(&running.service);
    let mut carol = bus.subscribe(&room("user:carol")).await.unwrap();
    let mut channel = bus.subscribe(&room("channel:pub")).await.unwrap();
    bootstrap(&svc).await;
    svc.execute(Command::JoinChannel { channel: c("pub") }, &user("carol"))
        .await
        .unwrap();
    // carol: room:joined for the workspace, then for the channel.
    assert_eq!(
        args(&next(&mut carol).await),
        serde_json::json!([{"room": "workspace:w"}])
    );
    assert_eq!(
        args(&next(&mut carol).await),
        serde_json::json!([{"room": "channel:pub"}])
    );
    // The last notification of the last event.
    loop {
        let m = next(&mut channel).await;
        if args(&m) == serde_json::json!([{"room": "channel:pub", "user": "carol"}]) {
            break;
        }
    }
    let rooms_before = stored_room_events(&bus).await;

    // A second notifier that lost its checkpoint announces everything again
    // from the start of the log: JetStream drops every message as a
    // duplicate (same msg_id), nothing reaches the room twice.
    let checkpoint = Arc::new(MemoryCheckpoint::new());
    use confab_membership::notifier::CheckpointStore;
    checkpoint.save(1).await.unwrap();
    let again = Notifier::new(Arc::clone(svc.store()), Arc::clone(svc.bus()), checkpoint);
    let mut progress = again.subscribe();
    let last = svc.store().last_seq().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(again.run(stop.clone().cancelled_owned()));
    tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|s| *s >= last))
        .await
        .expect("notifier did not catch up")
        .unwrap();
    stop.cancel();
    task.await.unwrap();
    assert_eq!(stored_room_events(&bus).await, rooms_before);
    quiet(&mut carol, Duration::from_millis(200)).await;
}

/// Messages stored in stream ROOMS.
async fn stored_room_events(bus: &confab_bus::NatsBus) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream(confab_bus::subjects::ROOMS_STREAM)
        .await
        .unwrap();
    let info: &async_nats::jetstream::stream::Info = stream.info().await.unwrap();
    info.state.messages
}
