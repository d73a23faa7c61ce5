//! A nats-server SIGKILLed and restarted (same port, same store) under a
//! running membership service: its tails (membership projector, notifier,
//! history projector) must notice the lost consumers within about a second
//! and resume, and readiness must not stay green while history is behind.
//!
//! Found by the fault suite (issue #16): every acked message was delivered
//! live, but history stayed stale for ~16 s while `/readyz` said 200.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_bus::{Bus, BusMessage, NatsBus, NatsConfig};
use confab_events::{RoomId, UserId, WorkspaceId};
use confab_membership::app::{App, MembershipCore};
use confab_membership::auth::Authenticator;
use confab_membership::config::MembershipConfig;
use confab_membership::domain::{Actor, Command};
use confab_membership::service::ServiceSettings;
use confab_membership::sql;
use confab_test_support::NatsServer;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-service-token-0123456789abcdef";

/// How long after its ack a message may be missing from history while
/// readiness is green: the readiness lag limit (1 s) plus the lag sampling
/// period and slack for a loaded machine.
const READY_SLACK: Duration = Duration::from_millis(1800);

/// How long after the restart history must be complete again.
const CATCH_UP: Duration = Duration::from_millis(2500);

async fn history_count(db: &DatabaseConnection) -> u64 {
    count(db, "SELECT COUNT(*) AS n FROM messages").await
}

async fn count(db: &DatabaseConnection, sql: &str) -> u64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap() as u64
}

fn message(i: usize) -> BusMessage {
    BusMessage::new(
        "message:new",
        &json!({ "id": format!("m{i}"), "room": "channel:c1", "authorId": "alice", "body": format!("hi {i}"), "createdAt": "2026-01-01T00:00:00Z" }),
    )
    .with_msg_id(format!("msg:channel:c1:alice:{i}"))
}

/// Publishes until acked (the careful client of the fault suite).
async fn publish_until_acked(bus: &NatsBus, i: usize) {
    let room = RoomId::parse("channel:c1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_secs(2), bus.publish(&room, message(i))).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "publish failed; retrying");
            }
            Err(_) if Instant::now() < deadline => {}
            other => panic!("message {i} not acked within 30 s: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Appends `create_workspace` (retried while the store is unavailable).
async fn create_workspace(core_service: &confab_membership::service::MembershipService, id: &str) {
    let cmd = Command::CreateWorkspace {
        id: WorkspaceId::parse(id).unwrap(),
        name: id.into(),
        owner: UserId::parse("alice").unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let actor = Actor::Service { on_behalf_of: None };
        match core_service.execute(cmd.clone(), &actor).await {
            // Appended; whether projected in time is measured by the caller.
            Ok(_) => return,
            Err(e) if e.code() == "conflict" || e.code() == "already_exists" => return,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "command failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot create workspace {id}: {e}"),
        }
    }
}

/// Whether the notifier announced workspace `id` to user alice (the last
/// stored event of `user:alice`).
async fn announced(bus: &NatsBus, id: &str) -> bool {
    let Ok(stream) = bus.jetstream().get_stream("ROOMS").await else {
        return false;
    };
    match stream
        .get_last_raw_message_by_subject("in.rooms.user.alice")
        .await
    {
        Ok(m) => String::from_utf8_lossy(&m.payload).contains(&format!("workspace:{id}")),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_crash_history_catches_up_within_seconds_and_readiness_tells_the_truth() {
    let mut server = NatsServer::start();
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let service_bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let core = MembershipCore::nats(
        db.clone(),
        service_bus,
        Authenticator::new(Some(TOKEN.into()), None),
        ServiceSettings::default(),
    )
    .await
    .unwrap();
    let service = Arc::clone(core.service());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, core).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));

    // The "gateway": its own connection.
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    create_workspace(&service, "w1").await;
    for i in 0..3 {
        publish_until_acked(&bus, i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while history_count(&db).await < 3 {
        assert!(
            Instant::now() < deadline,
            "history never got the first messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Readiness and history, sampled together from now on.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(Instant, u16, u64)>::new()));
    let sampler = {
        let (samples, db, base) = (Arc::clone(&samples), db.clone(), base.clone());
        let client = reqwest::Client::new();
        tokio::spawn(async move {
            loop {
                let status = match client
                    .get(format!("{base}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                };
                let count = history_count(&db).await;
                samples
                    .lock()
                    .unwrap()
                    .push((Instant::now(), status, count));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // SIGKILL, then the same port and store again.
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let restarted = Instant::now();

    let mut acked_at = Vec::new();
    for i in 3..13 {
        publish_until_acked(&bus, i).await;
        acked_at.push(Instant::now());
    }
    create_workspace(&service, "w2").await;
    let all_acked = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(40);
    let complete = loop {
        if history_count(&db).await == 13
            && count(&db, "SELECT COUNT(*) AS n FROM workspaces WHERE id = 'w2'").await == 1
            && announced(&bus, "w2").await
        {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "history, projection or announcement still incomplete 40 s after the restart: {} of 13 messages",
            history_count(&db).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A little longer, to see readiness come back.
    let ready_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = samples
            .lock()
            .unwrap()
            .iter()
            .any(|&(t, s, _)| t > complete && s == 200);
        if ready || Instant::now() > ready_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampler.abort();
    let samples = samples.lock().unwrap().clone();

    let to_complete = complete - restarted;
    let after_acks = complete.saturating_duration_since(all_acked);
    eprintln!(
        "nats restart: all acked {:?} after the restart; history, projection and announcement complete {to_complete:?} after the restart ({after_acks:?} after the last ack)",
        all_acked - restarted
    );
    // Green while a message acked more than READY_SLACK earlier is missing
    // from history is a lie.
    for &(t, status, count) in &samples {
        if status != 200 {
            continue;
        }
        let due = 3 + acked_at
            .iter()
            .filter(|&&acked| acked + READY_SLACK < t)
            .count() as u64;
        assert!(
            count >= due,
            "/readyz was 200 {:?} after the restart while history held {count} of the {due} \
             messages acked more than {READY_SLACK:?} earlier",
            t - restarted
        );
    }
    assert!(
        samples.iter().any(|&(t, s, _)| t > restarted && s != 200),
        "readiness never went red during the outage"
    );
    assert!(
        samples.iter().any(|&(t, s, _)| t > complete && s == 200),
        "readiness did not come back after history caught up"
    );
    assert!(
        after_acks <= CATCH_UP,
        "history complete only {after_acks:?} after the last ack (limit {CATCH_UP:?})"
    );
    stop.cancel();
}

/// A history projection held up (its database's write lock taken by
/// someone else) while messages keep coming: readiness turns red naming it,
/// `/readyz` and `/metrics` give the lag, and all turns green again once it
/// caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_history_projection_turns_readiness_red_with_its_lag() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("membership.db").display()
    );
    let db = sql::connect(&url).await.unwrap();
    let service_bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let core = MembershipCore::nats(
        db.clone(),
        service_bus,
        Authenticator::new(Some(TOKEN.into()), None),
        ServiceSettings::default(),
    )
    .await
    .unwrap();
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, core).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let readyz = async || -> (u16, serde_json::Value) {
        let res = reqwest::get(format!("{base}/readyz")).await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    };
    let wait = async |want: u16| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = readyz().await;
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "readyz never {want}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    publish_until_acked(&bus, 0).await;
    wait(200).await;
    // Ready does not mean caught up (`ready_max_projection_lag`): wait
    // until the history projection applied that first message, so that
    // what follows counts only the messages held back by the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = readyz().await;
        if body["lag"]["history"]["events"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "history never caught up: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Someone else holds the database's write lock (WAL: reads go on).
    let other = sql::connect(&url).await.unwrap();
    other
        .execute_unprepared("CREATE TABLE IF NOT EXISTS lock_holder (x INTEGER)")
        .await
        .unwrap();
    let txn = sea_orm::TransactionTrait::begin(&other).await.unwrap();
    txn.execute_unprepared("INSERT INTO lock_holder VALUES (1)")
        .await
        .unwrap();
    for i in 1..=5 {
        publish_until_acked(&bus, i).await;
    }
    let body = wait(503).await;
    assert_eq!(body["behind"], json!(["history"]), "{body}");
    assert_eq!(body["lag"]["history"]["events"], 5, "{body}");
    assert!(
        body["lag"]["history"]["seconds"].as_f64().unwrap() > 1.0,
        "{body}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("confab_membership_projection_lag_events{projection=\"history\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("confab_membership_projection_lag_seconds{projection=\"history\"}"),
        "{metrics}"
    );

    txn.rollback().await.unwrap();
    let body = wait(200).await;
    assert_eq!(body["lag"]["history"]["events"], 0, "{body}");
    assert_eq!(history_count(&db).await, 6);
    stop.cancel();
}
