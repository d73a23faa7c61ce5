//! Unit tests of the recovery service.

use super::*;
use confab_bus::BusMessage;
use confab_events::socket::names;
use serde_json::json;

fn item(room: &str, seq: u64, event: &str, data: Value) -> TailItem {
    let mut msg = BusMessage::new(event, &data);
    msg.seq = Some(seq);
    TailItem {
        room: RoomId::parse(room).unwrap(),
        msg,
    }
}

#[tokio::test]
async fn long_lived_sessions_are_rewritten_before_they_expire() {
    let max_age = Duration::from_millis(300);
    let store = Arc::new(MemorySessions::new(Duration::from_secs(120), max_age));
    let settings = RecoverySettings {
        session_max_age: Duration::from_millis(300),
        ..RecoverySettings::default()
    };
    let recovery = Recovery::new(
        &settings,
        Arc::clone(&store) as Arc<dyn SessionStore>,
        Arc::new(confab_bus::InProcessBus::default()),
        Arc::new(Metrics::new()),
        "g1".into(),
    );
    let record = SessionRecord {
        v: 1,
        sid: "s".into(),
        user: "u1".into(),
        gateway: "g1".into(),
        offset: 0,
        rooms: vec![],
        joined: vec![],
        left: vec![],
        disconnected_at_ms: None,
    };
    let tracked = recovery.started("p1".into(), record).await;
    assert_eq!(recovery.refresh_old(10).await, 0, "not due yet");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(recovery.refresh_old(10).await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 400 ms after the first write, older than the store keeps records.
    assert!(store.get("p1").await.unwrap().is_some());
    // An ended session is no longer refreshed.
    recovery
        .ended(tracked, &DisconnectReason::ClientDisconnect)
        .await;
    assert!(store.get("p1").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(recovery.refresh_old(10).await, 0);
}

#[test]
fn parses_resume_requests() {
    assert_eq!(parse_resume(None), Ok(None));
    assert_eq!(parse_resume(Some(&json!({"token": "t"}))), Ok(None));
    assert_eq!(
        parse_resume(Some(&json!({"token": "t", "pid": "abc_-1"}))),
        Ok(Some(Resume {
            pid: "abc_-1".into(),
            offset: None
        }))
    );
    assert_eq!(
        parse_resume(Some(&json!({"pid": "abc", "offset": "42"}))),
        Ok(Some(Resume {
            pid: "abc".into(),
            offset: Some(42)
        }))
    );
    for bad in [
        json!({"pid": "a.b"}),
        json!({"pid": "a b"}),
        json!({"pid": ""}),
        json!({"pid": 5}),
        json!({"pid": "x".repeat(65)}),
        json!({"pid": "abc", "offset": "-1"}),
        json!({"pid": "abc", "offset": "1e3"}),
        json!({"pid": "abc", "offset": 5}),
        json!({"pid": "abc", "offset": "99999999999999999999999"}),
    ] {
        let err = parse_resume(Some(&bad)).unwrap_err();
        assert_eq!(err.reason, "invalid_session", "{bad}");
    }
}

#[test]
fn replay_follows_membership_changes_in_the_gap() {
    let me = RoomId::parse("user:u1").unwrap();
    let now: HashSet<RoomId> = ["channel:stay", "channel:new"]
        .iter()
        .map(|r| RoomId::parse(r).unwrap())
        .collect();
    let items = vec![
        item("channel:stay", 1, "message:new", json!({"id": "s1"})),
        item("channel:gone", 2, "message:new", json!({"id": "g1"})),
        item("channel:new", 3, "message:new", json!({"id": "n1"})),
        item(
            "user:u1",
            4,
            names::ROOM_LEFT,
            json!({"room": "channel:gone", "reason": "left"}),
        ),
        item("channel:gone", 5, "message:new", json!({"id": "g2"})),
        item(
            "user:u1",
            6,
            names::ROOM_JOINED,
            json!({"room": "channel:new"}),
        ),
        item("channel:new", 7, "message:new", json!({"id": "n2"})),
        item("channel:other", 8, "message:new", json!({"id": "o1"})),
    ];
    let kept: Vec<u64> = filter_membership(&me, &now, items)
        .iter()
        .map(|i| i.msg.seq.unwrap())
        .collect();
    // g1 before the removal, n2 after the join; not g2, n1, o1.
    assert_eq!(kept, vec![1, 2, 4, 6, 7]);
}
