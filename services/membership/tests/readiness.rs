//! Readiness tells the truth about the projections: one that stopped (a
//! corrupt event) or cannot resume (its room log was trimmed past its
//! checkpoint) turns `/readyz` red, naming it, instead of serving frozen
//! data as if all were well.

use std::sync::Arc;
use std::time::Duration;

use confab_bus::{Bus, BusMessage, InProcessBus, NatsBus, NatsConfig};
use confab_events::RoomId;
use confab_membership::app::{App, MembershipCore};
use confab_membership::auth::Authenticator;
use confab_membership::config::MembershipConfig;
use confab_membership::service::ServiceSettings;
use confab_membership::sql;
use confab_test_support::NatsServer;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-service-token-0123456789abcdef";

/// Serves `core` over HTTP; answers the base URL and the stop token.
async fn serve(core: MembershipCore) -> (String, CancellationToken) {
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, core).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    (base, stop)
}

async fn get(url: &str) -> (u16, String) {
    let res = reqwest::get(url).await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Polls `/readyz` until `done` holds for its status and body (10 s).
async fn readyz_until(base: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&format!("{base}/readyz")).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        if done(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn auth() -> Authenticator {
    Authenticator::new(Some(TOKEN.into()), None)
}

#[tokio::test]
async fn a_projector_stopped_by_a_corrupt_event_turns_readiness_red() {
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
    let core = MembershipCore::embedded(db.clone(), bus, auth(), ServiceSettings::default());
    let (base, _stop) = serve(core).await;
    let (status, body) = readyz_until(&base, |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["projections"]["membership"]["state"], "running");

    // An event the projector cannot decode.
    db.execute_unprepared(
        "INSERT INTO events (aggregate, prev_seq, event_id, type, envelope, at) \
         VALUES ('workspace:w1', 0, 'corrupt-1', 'workspace.created', '{not json', 0)",
    )
    .await
    .unwrap();
    let (status, body) = readyz_until(&base, |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let membership = &body["projections"]["membership"];
    assert_eq!(membership["state"], "stopped", "{body}");
    assert!(
        membership["reason"]
            .as_str()
            .unwrap()
            .contains("membership projector stopped"),
        "{body}"
    );
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("confab_membership_projection_up{projection=\"membership\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_history_tail_trimmed_past_its_checkpoint_turns_readiness_red() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    // Retention far shorter than any valid configuration, set on the stream
    // behind the bus's back: messages expire before the projector reads them.
    let mut rooms = bus.config().rooms_stream_config();
    rooms.max_age = Duration::from_secs(1);
    rooms.duplicate_window = Duration::from_secs(1);
    bus.jetstream().update_stream(&rooms).await.unwrap();
    let room = RoomId::parse("channel:c1").unwrap();
    for i in 0..3 {
        let msg = BusMessage::new(
            "message:new",
            &json!({ "id": format!("m{i}"), "room": "channel:c1", "authorId": "alice", "body": "hi", "createdAt": "2026-01-01T00:00:00Z" }),
        );
        bus.publish(&room, msg).await.unwrap();
    }
    // Tailing from the start now would silently begin after the lost ones.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match bus.tail(1).await {
        Err(confab_bus::BusError::Trimmed(what)) => {
            assert!(what.contains("dropped by retention"), "{what}");
        }
        Err(e) => panic!("expected Trimmed, got {e}"),
        Ok(_) => panic!("expected Trimmed, got a tail"),
    }

    let db = sql::connect("sqlite::memory:").await.unwrap();
    let core = MembershipCore::nats(db, bus, auth(), ServiceSettings::default())
        .await
        .unwrap();
    let (base, _stop) = serve(core).await;
    let (status, body) = readyz_until(&base, |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    let history = &body["projections"]["history"];
    assert_eq!(history["state"], "stopped", "{body}");
    let reason = history["reason"].as_str().unwrap();
    assert!(reason.contains("dropped by retention"), "{reason}");
    assert!(reason.contains("messages 1 to 3"), "{reason}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("confab_membership_projection_up{projection=\"history\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("confab_membership_history_trimmed_total 0"),
        "{metrics}"
    );
}
