//! A real browser end to end: headless Chromium (Debian's `chromium`,
//! driven by `playwright-core`) on the page of a real better-auth app
//! (`tests/browser/app.mjs`: email and password on SQLite), connecting to
//! Confab through the client package with only the browser's credentials;
//! `tests/browser/run.mjs` is the scenario (sign up and in, polling then
//! the upgrade, `message:new` from another user, a lost connection
//! recovered, refused after sign-out). Against the all-in-one and against
//! a cluster (NATS, membership, two gateways). Failure screenshots go to
//! `target/browser-e2e/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use confab_gateway::GatewayConfig;
use confab_test_support::{client_package, npm_ci, workspace_root};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::all_in_one::AllInOne;
use crate::cluster::{Cluster, SERVICE_TOKEN};

/// How a page authenticates to Confab.
#[derive(Clone, Copy)]
enum Mode {
    /// The JWT of better-auth's JWT plugin, through the client package's
    /// token function; Confab checks it against the app's JWKS.
    Jwt,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Jwt => "jwt",
        }
    }

    /// The gateway configuration for `app` (the better-auth app's origin).
    fn configure(self, cfg: &mut GatewayConfig, app: &str) {
        cfg.cors.allowed_origins = vec![app.to_owned()];
        match self {
            Mode::Jwt => {
                cfg.auth.hs256_secret = None;
                cfg.auth.algorithms = vec![confab_auth::Algorithm::EdDSA];
                cfg.auth.jwks_url = Some(format!("{app}/api/auth/jwks"));
                cfg.auth.issuer = Some(app.to_owned());
                cfg.auth.audience = Some("confab".to_owned());
            }
        }
    }
}

fn browser_dir() -> PathBuf {
    workspace_root().join("tests").join("browser")
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: the browser tests need Debian's chromium (`apt-get install -y chromium`, \
         as .ci/run does) or CHROMIUM=/path/to/chromium",
        path.display()
    );
    path
}

/// The better-auth app, serving the test page; killed on drop.
struct BetterAuthApp {
    url: String,
    _child: Child,
    _db: tempfile::TempDir,
}

async fn start_app() -> BetterAuthApp {
    tokio::task::spawn_blocking(|| {
        // The page bundles the built client package (a `file:` dependency).
        client_package();
        npm_ci(&browser_dir());
    })
    .await
    .expect("npm packages install");
    let db = tempfile::tempdir().unwrap();
    let mut child = Command::new(node())
        .arg("app.mjs")
        .arg(db.path().join("auth.db"))
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node app.mjs starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the better-auth app listens within 60 s")
        .expect("reading app.mjs's output")
        .expect("app.mjs printed its URL");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("app.mjs prints JSON");
    let url = ready["url"].as_str().expect("url").to_owned();
    // Keep the app's later output flowing (the pipe must not fill up).
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    BetterAuthApp {
        url,
        _child: child,
        _db: db,
    }
}

fn node() -> std::ffi::OsString {
    std::env::var_os("CONFAB_NODE").unwrap_or_else(|| "node".into())
}

/// Runs the scenario; fails the test with its output unless it passes.
async fn run_scenario(
    app: &BetterAuthApp,
    gateways: &[String],
    api: &str,
    svc: &str,
    mode: Mode,
    label: &str,
) {
    let artifacts = workspace_root().join("target").join("browser-e2e");
    let run = Command::new(node())
        .arg("run.mjs")
        .current_dir(browser_dir())
        .env("APP_URL", &app.url)
        .env("GATEWAYS", serde_json::to_string(gateways).unwrap())
        .env("CONFAB_API", api)
        .env("CONFAB_SERVICE_TOKEN", svc)
        .env("AUTH_MODE", mode.name())
        .env("ARTIFACTS", &artifacts)
        .env("LABEL", label)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser scenario ends within 3 minutes")
        .expect("node run.mjs runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser scenario {label} failed ({}); screenshots in {}:\n{stdout}\n{}",
        out.status,
        artifacts.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
}

/// One browser scenario at a time: each runs a Chromium.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_against_the_all_in_one() {
    let _one = one_at_a_time().await;
    chromium();
    let app = start_app().await;
    let mode = Mode::Jwt;
    let aio = AllInOne::start(|cfg| mode.configure(cfg, &app.url)).await;
    run_scenario(
        &app,
        &[aio.url()],
        &aio.api_url(),
        &aio.service_token,
        mode,
        "all-in-one",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_against_two_gateways() {
    let _one = one_at_a_time().await;
    chromium();
    let app = start_app().await;
    let mode = Mode::Jwt;
    let c = Cluster::start_tweaked(2, None, |cfg| mode.configure(cfg, &app.url)).await;
    let gateways = [c.gateway_url(0), c.gateway_url(1)];
    let api = format!("http://{}", c.membership);
    run_scenario(&app, &gateways, &api, SERVICE_TOKEN, mode, "two-gateways").await;
}
