//! The presence tracker (issue #12): heartbeats carry changes, and the
//! tracker's work follows the changes, not the number of users; silent
//! gateways still expire; a sync repairs what a lost report missed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confab_bus::{Bus, BusMessage, BusSubscription};
use confab_contracts::presence::{Heartbeat, HeartbeatKind, LocalPresence, SyncPart};
use confab_events::socket::PresenceStatus::{self, Away, Offline, Online};
use confab_membership::presence::PresenceTracker;
use futures::StreamExt;

fn listed(name: &str, status: PresenceStatus) -> LocalPresence {
    LocalPresence {
        user: u(name),
        status,
    }
}

fn sync(gateway: &str, seq: u64, part: u32, parts: u32, users: Vec<LocalPresence>) -> Heartbeat {
    Heartbeat {
        gateway: gateway.into(),
        seq,
        kind: HeartbeatKind::Sync,
        users,
        sync: Some(SyncPart {
            id: seq - u64::from(part),
            part,
            parts,
        }),
    }
}

/// A running tracker (publisher and sweeper) with entries living `ttl`.
async fn tracker(ttl: Duration) -> (Running, Arc<PresenceTracker>, Arc<dyn Bus>) {
    let (running, bus) = embedded().await;
    bootstrap(&running.service).await;
    let tracker = Arc::new(PresenceTracker::new(Arc::clone(&running.service), ttl));
    tokio::spawn(Arc::clone(&tracker).run_sweeper(running.stop.clone().cancelled_owned()));
    (running, tracker, bus as Arc<dyn Bus>)
}

/// The next `presence:update` on `sub`, as (user, status).
async fn update(sub: &mut BusSubscription) -> (String, String) {
    let m: BusMessage = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("a presence:update within 60 s")
        .unwrap();
    assert_eq!(&*m.event, "presence:update");
    let v: serde_json::Value = serde_json::from_str(&m.args_json).unwrap();
    (
        v[0]["userId"].as_str().unwrap().to_owned(),
        v[0]["status"].as_str().unwrap().to_owned(),
    )
}

async fn status(tracker: &PresenceTracker, who: &str) -> PresenceStatus {
    tracker.query(&u("bob"), &[u(who)]).await[who]
}

#[tokio::test]
async fn a_change_costs_its_users_not_the_gateway_s() {
    let (_running, tracker, bus) = tracker(Duration::from_secs(30)).await;
    let mut ws = bus.subscribe(&room("workspace:w")).await.unwrap();
    // A gateway with 5,001 users (bob among them), in three sync parts.
    let mut everyone = vec![listed("bob", Online)];
    everyone.extend((0..5_000).map(|n| listed(&format!("idle{n}"), Online)));
    let parts: Vec<_> = everyone.chunks(2_000).collect();
    for (i, part) in parts.iter().enumerate() {
        let hb = sync("gw", 1 + i as u64, i as u32, 3, part.to_vec());
        tracker.heartbeat(&hb).await;
    }
    assert_eq!(update(&mut ws).await, ("bob".into(), "online".into()));
    let before = tracker.users_listed().await;

    // Bob goes away: one user listed, one update.
    tracker
        .heartbeat(&Heartbeat::changes("gw", 4, vec![listed("bob", Away)]))
        .await;
    assert_eq!(tracker.users_listed().await - before, 1);
    assert_eq!(update(&mut ws).await, ("bob".into(), "away".into()));
    // Signs of life list nobody.
    for seq in 5..10 {
        tracker
            .heartbeat(&Heartbeat::changes("gw", seq, vec![]))
            .await;
    }
    assert_eq!(tracker.users_listed().await - before, 1);
    assert_eq!(status(&tracker, "bob").await, Away);
}

#[tokio::test]
async fn a_silent_gateway_s_users_go_offline() {
    let (_running, tracker, bus) = tracker(Duration::from_millis(300)).await;
    let mut ws = bus.subscribe(&room("workspace:w")).await.unwrap();
    tracker
        .heartbeat(&Heartbeat::changes("gw1", 1, vec![listed("bob", Online)]))
        .await;
    tracker
        .heartbeat(&Heartbeat::changes("gw2", 1, vec![listed("carol", Online)]))
        .await;
    for _ in 0..2 {
        update(&mut ws).await;
    }
    // gw2 keeps reporting (nothing changed); gw1 falls silent.
    for seq in 2..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tracker
            .heartbeat(&Heartbeat::changes("gw2", seq, vec![]))
            .await;
    }
    assert_eq!(update(&mut ws).await, ("bob".into(), "offline".into()));
    assert_eq!(status(&tracker, "bob").await, Offline);
    assert_eq!(status(&tracker, "carol").await, Online);
}

#[tokio::test]
async fn a_sync_repairs_a_lost_change() {
    let (_running, tracker, _bus) = tracker(Duration::from_secs(30)).await;
    let both = vec![listed("bob", Online), listed("carol", Online)];
    tracker.heartbeat(&sync("gw", 1, 0, 1, both)).await;
    assert_eq!(status(&tracker, "carol").await, Online);
    // Heartbeat 2 (carol gone) was lost; the next sync lists bob only.
    tracker
        .heartbeat(&sync("gw", 3, 0, 2, vec![listed("bob", Online)]))
        .await;
    assert_eq!(status(&tracker, "carol").await, Online, "sync not complete");
    tracker.heartbeat(&sync("gw", 4, 1, 2, vec![])).await;
    assert_eq!(status(&tracker, "carol").await, Offline);
    assert_eq!(status(&tracker, "bob").await, Online);
    // A sync with a missing part drops nobody.
    tracker
        .heartbeat(&sync("gw", 5, 0, 3, vec![listed("carol", Online)]))
        .await;
    tracker.heartbeat(&sync("gw", 7, 2, 3, vec![])).await;
    assert_eq!(status(&tracker, "bob").await, Online);
    // A graceful shutdown's empty sync: everyone offline at once.
    tracker.heartbeat(&sync("gw", 8, 0, 1, vec![])).await;
    assert_eq!(status(&tracker, "bob").await, Offline);
    assert_eq!(status(&tracker, "carol").await, Offline);
}
