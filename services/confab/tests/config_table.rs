//! The README's configuration tables list every key of the typed
//! configurations, with its environment variable and its default.
//!
//! Each table sits between `<!-- config-table: NAME -->` and
//! `<!-- /config-table -->`. The key, variable and default columns come
//! from the structs; the meaning column is the README's own. With
//! `CONFAB_BLESS=1` the test rewrites the tables (keeping the meanings)
//! instead of failing; a key without a meaning still fails it.

use std::collections::HashMap;
use std::path::PathBuf;

use confab_auth::{AuthConfig, DEV_SECRET};
use confab_config::env_name;
use confab_gateway::GatewayConfig;
use confab_membership::config::MembershipConfig;
use serde_json::Value;

const HEADER: &str = "| key | env | default | meaning |\n|---|---|---|---|\n";
const END: &str = "<!-- /config-table -->";

/// One row: key, default as shown.
type Row = (String, String);

/// Every leaf of `value` under `prefix`, in field order, but the subtrees
/// named in `skip`.
fn leaves(value: &Value, prefix: &str, skip: &[&str], out: &mut Vec<Row>) {
    match value {
        Value::Object(map) => {
            for (name, v) in map {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                if !skip.contains(&key.as_str()) {
                    leaves(v, &key, skip, out);
                }
            }
        }
        leaf => out.push((prefix.to_owned(), shown(leaf))),
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "none".into(),
        Value::String(s) if s == DEV_SECRET => "the public dev secret".into(),
        Value::String(s) => format!("`{s}`"),
        Value::Array(_) => format!("`{value}`"),
        other => other.to_string(),
    }
}

fn rows_of(value: &impl serde::Serialize, prefix: &str, skip: &[&str]) -> Vec<Row> {
    let value = serde_json::to_value(value).unwrap();
    let mut out = Vec::new();
    leaves(&value, prefix, skip, &mut out);
    out
}

/// The tables, by name, as the structs define them.
fn tables() -> Vec<(&'static str, Vec<Row>)> {
    let gateway = rows_of(
        &GatewayConfig::default(),
        "",
        &["auth", "bus.nats", "bus.redis"],
    );
    let auth = rows_of(&AuthConfig::default(), "auth", &[]);
    let nats = rows_of(&confab_bus::NatsConfig::default(), "bus.nats", &[]);
    let redis = rows_of(&confab_bus::RedisConfig::default(), "bus.redis", &[]);
    let membership = rows_of(
        &MembershipConfig::default(),
        "",
        &["nats", "auth", "bus.redis"],
    );
    // The all-in-one: its own keys, then the gateway keys whose default it
    // changes.
    let mut all_in_one = rows_of(&confab::EmbeddedConfig::default(), "", &[]);
    let plain: HashMap<String, String> = rows_of(&GatewayConfig::default(), "", &[])
        .into_iter()
        .collect();
    all_in_one.extend(
        rows_of(&confab::default_config(), "", &[])
            .into_iter()
            .filter(|(key, default)| plain.get(key) != Some(default)),
    );
    vec![
        ("gateway", gateway),
        ("auth", auth),
        ("nats", nats),
        ("redis", redis),
        ("membership", membership),
        ("all-in-one", all_in_one),
    ]
}

/// The meanings a table block of the README gives, by key.
fn meanings(block: &str) -> HashMap<String, String> {
    block
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .strip_prefix("| `")?
                .strip_suffix(" |")?
                .splitn(4, " | ")
                .collect();
            let key = cells.first()?.strip_suffix('`')?;
            Some((key.to_owned(), cells.get(3)?.trim().to_owned()))
        })
        .collect()
}

fn render(rows: &[Row], meanings: &HashMap<String, String>) -> String {
    let mut out = String::from(HEADER);
    for (key, default) in rows {
        let meaning = meanings.get(key).map_or("", String::as_str);
        out.push_str(&format!(
            "| `{key}` | `{}` | {default} | {meaning} |\n",
            env_name(key)
        ));
    }
    out
}

#[test]
fn the_readme_lists_every_key_with_its_variable_and_default() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let bless = std::env::var_os("CONFAB_BLESS").is_some();
    let mut stale = Vec::new();
    let mut undescribed = Vec::new();
    for (name, rows) in tables() {
        let start_marker = format!("<!-- config-table: {name} -->\n");
        let start = readme
            .find(&start_marker)
            .unwrap_or_else(|| panic!("README.md has no {start_marker:?}"))
            + start_marker.len();
        let end = start
            + readme[start..]
                .find(END)
                .unwrap_or_else(|| panic!("table {name} has no {END:?}"));
        let known = meanings(&readme[start..end]);
        let want = render(&rows, &known);
        undescribed.extend(
            rows.iter()
                .filter(|(key, _)| known.get(key).is_none_or(String::is_empty))
                .map(|(key, _)| format!("{name}: {key}")),
        );
        if readme[start..end] != want {
            stale.push(name);
            readme.replace_range(start..end, &want);
        }
    }
    if bless && !stale.is_empty() {
        std::fs::write(&path, &readme).unwrap();
    }
    assert!(
        bless || stale.is_empty(),
        "README.md's configuration tables {stale:?} do not match the code; \
         run `CONFAB_BLESS=1 cargo test -p confab --test config_table` and review the diff"
    );
    assert!(
        undescribed.is_empty(),
        "describe these keys in README.md's configuration tables: {undescribed:?}"
    );
}
