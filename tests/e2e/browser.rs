//! A real browser end to end: headless Chromium (Debian's `chromium`,
//! driven by `playwright-core`) on the page (`tests/browser/page.jsx`)
//! served by a real better-auth app (`tests/better-auth/server.mjs`: email
//! and password on SQLite), connecting to Confab through the client
//! package with only the browser's credentials: better-auth's session
//! cookie, checked through `auth.session.url`; or, for JWT deployments,
//! the JWT plugin's token through the package's token function.
//! `tests/browser/run.mjs` is the scenario (sign up and in, polling then
//! the upgrade, `message:new` from another user, a lost connection
//! recovered, refused after sign-out). Against the all-in-one and against
//! a cluster (NATS, membership, two gateways). Failure screenshots go to
//! `target/browser-e2e/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use confab_gateway::GatewayConfig;
use confab_test_support::{
    BetterAuthApp, better_auth_modules, client_package, npm_ci, workspace_root,
};
use tokio::process::Command;

use crate::all_in_one::AllInOne;
use crate::cluster::{Cluster, SERVICE_TOKEN};

/// How a page authenticates to Confab.
#[derive(Clone, Copy)]
enum Mode {
    /// better-auth's session cookie alone (`withCredentials`), checked by
    /// the gateway against the app's `get-session` (`auth.session.url`);
    /// JWT verification off.
    Cookie,
    /// The JWT of better-auth's JWT plugin, through the client package's
    /// token function; Confab checks it against the app's JWKS.
    Jwt,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cookie => "cookie",
            Mode::Jwt => "jwt",
        }
    }

    /// The gateway configuration for `app` (the better-auth app's origin).
    fn configure(self, cfg: &mut GatewayConfig, app: &str) {
        // Cookies count only from origins listed by name.
        cfg.cors.allowed_origins = vec![app.to_owned()];
        cfg.auth.hs256_secret = None;
        match self {
            Mode::Cookie => {
                cfg.auth.jwks_url = None;
                cfg.auth.session.url = Some(format!("{app}/api/auth/get-session"));
                // run.mjs checks that a signed-out session's cookie is
                // refused once the cache has forgotten it.
                cfg.auth.session.cache_ttl = Duration::from_secs(1);
            }
            Mode::Jwt => {
                cfg.auth.algorithms = vec![confab_auth::Algorithm::EdDSA];
                cfg.auth.jwks_url = Some(format!("{app}/api/auth/jwks"));
                cfg.auth.issuer = Some(app.to_owned());
                cfg.auth.audience = Some("confab".to_owned());
            }
        }
    }
}

pub(crate) fn browser_dir() -> PathBuf {
    workspace_root().join("tests").join("browser")
}

pub(crate) fn chromium() -> PathBuf {
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

/// The better-auth app of `tests/better-auth`, serving the test page
/// (bundled into a temporary directory); killed on drop.
struct App {
    app: BetterAuthApp,
    _page: tempfile::TempDir,
}

impl App {
    fn url(&self) -> &str {
        self.app.url()
    }
}

async fn start_app(mode: Mode) -> App {
    tokio::task::spawn_blocking(|| {
        // The page bundles the built client package (a `file:` dependency)
        // and better-auth's client (from the app's package).
        client_package();
        npm_ci(&browser_dir());
        better_auth_modules();
    })
    .await
    .expect("npm packages install");
    let page = tempfile::tempdir().unwrap();
    let built = Command::new(node())
        .arg("build-page.mjs")
        .arg(page.path())
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node build-page.mjs runs");
    assert!(
        built.status.success(),
        "bundling the test page failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let dir = page.path().to_str().expect("utf-8 temp path");
    let app = match mode {
        Mode::Cookie => BetterAuthApp::start_with(&["--page", dir]).await,
        Mode::Jwt => BetterAuthApp::start_with(&["--page", dir, "--jwt"]).await,
    };
    App { app, _page: page }
}

pub(crate) fn node() -> std::ffi::OsString {
    std::env::var_os("CONFAB_NODE").unwrap_or_else(|| "node".into())
}

/// Runs the scenario; fails the test with its output unless it passes.
async fn run_scenario(
    app: &App,
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
        .env("APP_URL", app.url())
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
pub(crate) async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn against_the_all_in_one(mode: Mode) {
    let _one = one_at_a_time().await;
    chromium();
    let app = start_app(mode).await;
    let aio = AllInOne::start(|cfg| mode.configure(cfg, app.url())).await;
    let label = format!("all-in-one-{}", mode.name());
    run_scenario(
        &app,
        &[aio.url()],
        &aio.api_url(),
        &aio.service_token,
        mode,
        &label,
    )
    .await;
}

async fn against_two_gateways(mode: Mode) {
    let _one = one_at_a_time().await;
    chromium();
    let app = start_app(mode).await;
    let c = Cluster::start_tweaked(2, None, |cfg| mode.configure(cfg, app.url())).await;
    let gateways = [c.gateway_url(0), c.gateway_url(1)];
    let api = format!("http://{}", c.membership);
    let label = format!("two-gateways-{}", mode.name());
    run_scenario(&app, &gateways, &api, SERVICE_TOKEN, mode, &label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cookie_session_against_the_all_in_one() {
    against_the_all_in_one(Mode::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cookie_session_against_two_gateways() {
    against_two_gateways(Mode::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_jwt_token_function_against_the_all_in_one() {
    against_the_all_in_one(Mode::Jwt).await;
}
