//! `/metrics` of the membership service, scraped as Prometheus would:
//! commands by outcome, projection lag, presence counts and the bus's
//! connection state, on a real nats-server.

use std::sync::Arc;
use std::time::Duration;

use confab_bus::{NatsBus, NatsConfig};
use confab_contracts::presence::{Heartbeat, LocalPresence};
use confab_events::UserId;
use confab_events::socket::PresenceStatus;
use confab_membership::app::{App, MembershipCore};
use confab_membership::auth::Authenticator;
use confab_membership::config::MembershipConfig;
use confab_membership::service::ServiceSettings;
use confab_membership::sql;
use confab_test_support::NatsServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-service-token-0123456789abcdef";

/// The value of the sample `name{labels}` (exactly as written), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// Scrapes until `done` holds for the text (10 s); returns the last text.
async fn scrape_until(base: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = res.text().await.unwrap();
        if done(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_commands_show_lag_presence_and_the_bus() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let db = sql::connect("sqlite::memory:").await.unwrap();
    let core = MembershipCore::nats(
        db,
        bus,
        Authenticator::new(Some(TOKEN.into()), None),
        ServiceSettings::default(),
    )
    .await
    .unwrap();
    let presence = Arc::clone(core.presence());
    let config = MembershipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        service_token: Some(TOKEN.into()),
        ..MembershipConfig::default()
    };
    let app = App::with_core(&config, core).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone().cancelled_owned()));

    let http = reqwest::Client::new();
    let command = |actor: Option<&str>, command: serde_json::Value| {
        let mut body = json!({ "command": command });
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        http.post(format!("{base}/v1/commands"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let ok = command(
        None,
        json!({ "type": "create_workspace", "id": "w1", "name": "Acme", "owner": "alice" }),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    // Refused: mallory is no member of w1.
    let refused = command(
        Some("mallory"),
        json!({ "type": "create_channel", "channel": "c1", "workspace": "w1", "name": "c1", "visibility": "public" }),
    )
    .await
    .unwrap();
    assert!(refused.status().is_client_error());
    let refused: serde_json::Value = refused.json().await.unwrap();
    let code = refused["error"]["code"].as_str().unwrap().to_owned();
    assert_ne!(code, "ok");
    let refused_series =
        format!(r#"confab_membership_commands_total{{command="create_channel",outcome="{code}"}}"#);
    // A room event for the history projection.
    let emitted = http
        .post(format!("{base}/v1/emit"))
        .bearer_auth(TOKEN)
        .json(&json!({ "room": "channel:c9", "event": "app:note", "data": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(emitted.status(), 200);
    let user = |name: &str, status| LocalPresence {
        user: UserId::parse(name).unwrap(),
        status,
    };
    presence
        .heartbeat(&Heartbeat::changes(
            "gw-1",
            1,
            vec![
                user("alice", PresenceStatus::Online),
                user("bob", PresenceStatus::Away),
                user("carol", PresenceStatus::Online),
            ],
        ))
        .await;
    presence
        .heartbeat(&Heartbeat::changes(
            "gw-2",
            1,
            vec![user("alice", PresenceStatus::Away)],
        ))
        .await;

    let caught_up = |m: &str| {
        sample(
            m,
            r#"confab_membership_projection_lag_events{projection="membership"}"#,
        ) == Some(0.0)
            && sample(
                m,
                r#"confab_membership_projection_lag_events{projection="history"}"#,
            ) == Some(0.0)
    };
    let m = scrape_until(&base, caught_up).await;
    assert!(caught_up(&m), "{m}");
    for (series, value) in [
        (
            r#"confab_membership_commands_total{command="create_workspace",outcome="ok"}"#,
            1.0,
        ),
        (refused_series.as_str(), 1.0),
        (
            r#"confab_membership_projection_lag_seconds{projection="membership"}"#,
            0.0,
        ),
        (
            r#"confab_membership_projection_lag_seconds{projection="history"}"#,
            0.0,
        ),
        // alice is online on gw-1 (away on gw-2): online wins.
        (r#"confab_membership_presence_users{status="online"}"#, 2.0),
        (r#"confab_membership_presence_users{status="away"}"#, 1.0),
        ("confab_membership_presence_gateways", 2.0),
        (r#"confab_membership_bus_connected{bus="nats"}"#, 1.0),
        (
            r#"confab_membership_projection_up{projection="history"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&m, series), Some(value), "{series} in:\n{m}");
    }
    for family in [
        "confab_membership_commands_total counter",
        "confab_membership_projection_lag_events gauge",
        "confab_membership_projection_lag_seconds gauge",
        "confab_membership_presence_users gauge",
        "confab_membership_bus_connected gauge",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family}\n")),
            "{family} in:\n{m}"
        );
    }

    // The bus goes away: the scrape still answers, and says so.
    drop(server);
    let down = |m: &str| sample(m, r#"confab_membership_bus_connected{bus="nats"}"#) == Some(0.0);
    let m = scrape_until(&base, down).await;
    assert!(down(&m), "{m}");
    stop.cancel();
}
