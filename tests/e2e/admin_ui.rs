//! The official Socket.IO Admin UI against a Confab cluster: headless
//! Chromium (Debian's `chromium`, driven by `playwright-core`) on the UI's
//! prebuilt pages (`@socket.io/admin-ui`, served by
//! `tools/admin-ui/serve.mjs`), logged in on the gateways' `/admin`
//! namespace. Two gateways on NATS: the first with `admin.mode =
//! "actions"`, the second read-only; a real `socket.io-client` socket on
//! the second. `tests/browser/admin-ui.mjs` is the scenario: a wrong
//! password refused, both gateways and the socket's rooms listed, an
//! action refused by the read-only gateway, then taken through the other
//! one (routed over NATS to the socket's gateway). The screenshot goes to
//! `target/browser-e2e/admin-ui.png`, or to `docs/admin-ui.png` with
//! `CONFAB_BLESS=1`.

use std::cell::Cell;
use std::process::Stdio;
use std::time::Duration;

use confab_gateway::config::AdminMode;
use confab_test_support::{npm_ci, workspace_root};
use tokio::process::Command;

use crate::browser::{browser_dir, chromium, node, one_at_a_time};
use crate::cluster::Cluster;
use crate::support::token;

const USER: &str = "operator";
const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_shows_both_gateways_and_acts_only_when_enabled() {
    let _one = one_at_a_time().await;
    chromium();
    tokio::task::spawn_blocking(|| {
        let root = workspace_root();
        npm_ci(&browser_dir());
        npm_ci(&root.join("tools").join("admin-ui"));
        npm_ci(&root.join("tests").join("js"));
    })
    .await
    .expect("npm packages install");
    // Cost 4: the lowest bcrypt allows, the test logs in several times.
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let nth = Cell::new(0);
    let c = Cluster::start_tweaked(2, None, |cfg| {
        cfg.admin.enabled = true;
        cfg.admin.username = USER.into();
        cfg.admin.password_hash = Some(hash.as_str().into());
        cfg.admin.stats_interval = Duration::from_millis(300);
        cfg.admin.mode = if nth.get() == 0 {
            AdminMode::Actions
        } else {
            AdminMode::Readonly
        };
        nth.set(nth.get() + 1);
    })
    .await;
    c.workspace_with_general(&[]).await;

    let root = workspace_root();
    let artifacts = root.join("target").join("browser-e2e");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = if std::env::var_os("CONFAB_BLESS").is_some() {
        root.join("docs").join("admin-ui.png")
    } else {
        artifacts.join("admin-ui.png")
    };
    let gateways = [c.gateway_url(0), c.gateway_url(1)];
    let run = Command::new(node())
        .arg("admin-ui.mjs")
        .current_dir(browser_dir())
        .env("GATEWAYS", serde_json::to_string(&gateways).unwrap())
        .env("TOKEN", token("alice"))
        .env("ADMIN_USER", USER)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("ARTIFACTS", &artifacts)
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the Admin UI scenario ends within 3 minutes")
        .expect("node admin-ui.mjs runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Admin UI scenario failed ({}); screenshots in {}:\n{stdout}\n{}",
        out.status,
        artifacts.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
}

/// The Grafana dashboard (`deploy/grafana/confab.json`) on a loaded cluster:
/// its queries evaluated on the real `/metrics` of two gateways and the
/// membership service, scraped during a 40 s run with load
/// (`tools/grafana-preview/record.mjs`), show data in the panels of
/// connections, deliveries, recoveries, bus state, projections, refused
/// handshakes and rate limits; the panels are drawn (uPlot) and
/// screenshotted in Chromium. Not Grafana (none can run here). With
/// `CONFAB_BLESS=1` the screenshot replaces `docs/grafana-preview.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_loaded_cluster_s_metrics() {
    let _one = one_at_a_time().await;
    chromium();
    let root = workspace_root();
    let dir = root.join("tools").join("grafana-preview");
    {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            npm_ci(&dir);
            npm_ci(&workspace_root().join("tests").join("js"));
        })
        .await
        .expect("npm packages install");
    }
    let scratch = tempfile::tempdir().unwrap();
    let out_png = if std::env::var_os("CONFAB_BLESS").is_some() {
        root.join("docs").join("grafana-preview.png")
    } else {
        scratch.path().join("grafana-preview.png")
    };
    let c = Cluster::start(2).await;
    c.workspace_with_general(&["bob", "carol"]).await;
    let tokens = ["alice", "bob", "carol"].map(token);
    let run = Command::new(node())
        .arg("record.mjs")
        .current_dir(&dir)
        .env(
            "GATEWAYS",
            serde_json::to_string(&[c.gateway_url(0), c.gateway_url(1)]).unwrap(),
        )
        .env("MEMBERSHIP", format!("http://{}", c.membership))
        .env("TOKENS", serde_json::to_string(&tokens).unwrap())
        .env("OUT", &out_png)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the preview is made within 3 minutes")
        .expect("node record.mjs runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the preview failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
}
