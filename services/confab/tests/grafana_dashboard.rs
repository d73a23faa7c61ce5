//! The Grafana dashboard (`deploy/grafana/confab.json`) queries metrics
//! that exist: every `confab_*` name in a panel's PromQL is one the
//! gateway's or the membership service's `/metrics` exposes (their real
//! renderings, not a list kept by hand), and `rate()` is taken of counters
//! only. A renamed metric fails this test instead of leaving a panel empty.

use std::collections::{BTreeMap, BTreeSet};

use confab_test_support::workspace_root;
use serde_json::Value;

/// `name -> type` from the `# TYPE` lines of a Prometheus/OpenMetrics text.
fn types(text: &str, out: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
}

/// The metric family a sample name belongs to (`x_total` is family `x`
/// in OpenMetrics).
fn family<'a>(name: &'a str, known: &BTreeMap<String, String>) -> Option<&'a str> {
    if known.contains_key(name) {
        return Some(name);
    }
    ["_total", "_bucket", "_sum", "_count", "_created"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|b| known.contains_key(*b)))
}

/// Every `confab_*` identifier in a PromQL expression, with whether it is
/// the argument of `rate(`/`increase(`.
fn names(expr: &str) -> Vec<(String, bool)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("confab_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before = expr[..start].trim_end();
        let in_rate = before.ends_with("rate(") || before.ends_with("increase(");
        out.push((expr[start..end].to_owned(), in_rate));
        i = end;
    }
    out
}

#[test]
fn every_panel_queries_metrics_the_services_expose() {
    let path = workspace_root()
        .join("deploy")
        .join("grafana")
        .join("confab.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));

    // A family with labels renders only once it has a series: one of each.
    let gateway = confab_gateway::Metrics::new();
    let reason = || confab_gateway::ReasonLabel { reason: "x".into() };
    gateway.dropped("x");
    gateway.recovery("x");
    gateway.rate_limited("x", true);
    gateway.replay_path("x");
    gateway.closed.get_or_create(&reason()).inc();
    gateway.handshake_failures.get_or_create(&reason()).inc();
    let mut known = BTreeMap::new();
    types(&gateway.render(), &mut known);
    let membership = confab_membership::health::Health::default();
    membership.set_lag("history", confab_membership::health::Lag::default());
    membership.count_command("join", "ok");
    types(
        &membership.metrics_with(&confab_membership::health::Scrape {
            bus: Some(("nats", true)),
            bus_reconnects: Some(0),
        }),
        &mut known,
    );
    assert!(
        known.contains_key("confab_gateway_connections"),
        "the gateway's metrics render: {known:?}"
    );

    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id in {title}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let found = names(expr);
            if found.is_empty() {
                problems.push(format!("{title}: `{expr}` queries no confab metric"));
            }
            for (name, in_rate) in found {
                match family(&name, &known) {
                    None => problems.push(format!("{title}: {name} is not exposed by any service")),
                    Some(f) => {
                        used.insert(f.to_owned());
                        if in_rate && known[f] != "counter" {
                            problems.push(format!("{title}: rate() of {name}, a {}", known[f]));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What the issue asks the dashboard to show.
    for needed in [
        "confab_gateway_connections",
        "confab_gateway_events_out",
        "confab_gateway_dropped",
        "confab_gateway_recoveries",
        "confab_gateway_bus_connected",
        "confab_membership_projection_up",
        "confab_membership_projection_lag_seconds",
        "confab_membership_bus_connected",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}
