//! A real better-auth app (`tests/better-auth/server.mjs`: email and
//! password on SQLite) for session-auth tests.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::{tools_dir, with_file_lock, workspace_root};

/// The Node package of the app: `<workspace>/tests/better-auth`.
pub fn better_auth_dir() -> PathBuf {
    workspace_root().join("tests").join("better-auth")
}

/// Ensures `tests/better-auth/node_modules` is installed from the committed
/// lock file (`npm ci`, once across test processes, under a file lock;
/// skipped when the pinned versions are installed). better-sqlite3 builds
/// from source when no prebuilt binary can be fetched: point npm at the
/// local Node headers with `npm_config_nodedir` if node-gyp cannot
/// download them.
///
/// # Panics
///
/// When `npm ci` fails.
pub fn better_auth_modules() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = better_auth_dir();
            let modules = dir.join("node_modules");
            if installed(&dir) {
                return modules;
            }
            with_file_lock(&tools_dir().join("npm-ci-better-auth.lock"), || {
                if installed(&dir) {
                    return;
                }
                let npm = std::env::var_os("CONFAB_NPM").unwrap_or_else(|| OsString::from("npm"));
                let mut cmd = std::process::Command::new(&npm);
                cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir)
                    .stdin(Stdio::null());
                if std::env::var_os("npm_config_nodedir").is_none()
                    && Path::new("/usr/include/node/node.h").exists()
                {
                    cmd.env("npm_config_nodedir", "/usr");
                }
                let output = cmd
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run npm ci in {}: {e}", dir.display()));
                assert!(
                    output.status.success(),
                    "`npm ci` in {} failed ({}).\nstdout:\n{}\nstderr:\n{}",
                    dir.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            });
            assert!(
                installed(&dir),
                "after `npm ci`, {} is incomplete",
                modules.display()
            );
            modules
        })
        .clone()
}

/// Whether every pinned dependency is installed at its version, and the
/// native SQLite binding is built.
fn installed(dir: &Path) -> bool {
    let read =
        |p: PathBuf| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    let Some(manifest) = read(dir.join("package.json")) else {
        return false;
    };
    let pinned = manifest["dependencies"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let versions_ok = pinned.iter().all(|(name, version)| {
        read(dir.join("node_modules").join(name).join("package.json"))
            .is_some_and(|m| m["version"] == *version)
    });
    versions_ok
        && dir
            .join("node_modules/better-sqlite3/build/Release/better_sqlite3.node")
            .exists()
}

/// A signed-in user of the app.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// better-auth's user id.
    pub user_id: String,
    /// The session cookie as a `Cookie` header value
    /// (`better-auth.session_token=...`).
    pub cookie: String,
}

/// The running app; killed on drop.
pub struct BetterAuthApp {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl BetterAuthApp {
    /// Installs (once) and starts the app on a free port.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts it with extra `server.mjs` options (`--page DIR`, `--jwt`).
    pub async fn start_with(args: &[&str]) -> Self {
        better_auth_modules();
        let node = std::env::var_os("CONFAB_NODE").unwrap_or_else(|| OsString::from("node"));
        let mut child = Command::new(node)
            .arg("server.mjs")
            .args(args)
            .current_dir(better_auth_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start tests/better-auth/server.mjs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the better-auth app did not start within 60 s")
            .expect("reading the app's stdout")
            .expect("the better-auth app exited before listening");
        let ready: Value = serde_json::from_str(&line).expect("the app's ready line is JSON");
        let url = ready["url"]
            .as_str()
            .expect("ready line has url")
            .to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self { child, url, http }
    }

    /// The app's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// better-auth's session endpoint: what `auth.session.url` names.
    pub fn session_url(&self) -> String {
        format!("{}/api/auth/get-session", self.url)
    }

    async fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("origin", &self.url)
            .json(&body);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        let res = req.send().await.expect("the better-auth app answers");
        assert!(res.status().is_success(), "POST {path}: {}", res.status());
        res
    }

    /// Signs a new user up (email and password), then signs in over HTTP:
    /// the real session cookie the browser would hold.
    pub async fn sign_up_and_in(&self, email: &str, password: &str) -> SignedIn {
        let body = json!({ "email": email, "password": password, "name": email });
        self.post("/api/auth/sign-up/email", body, None).await;
        self.sign_in(email, password).await
    }

    /// Signs in: a fresh session.
    pub async fn sign_in(&self, email: &str, password: &str) -> SignedIn {
        let body = json!({ "email": email, "password": password });
        let res = self.post("/api/auth/sign-in/email", body, None).await;
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.contains("better-auth.session_token="))
            .expect("sign-in sets the session cookie")
            .to_owned();
        let json: Value = res.json().await.expect("sign-in answers JSON");
        SignedIn {
            user_id: json["user"]["id"].as_str().expect("user.id").to_owned(),
            cookie,
        }
    }

    /// Signs out: the session is deleted in the app.
    pub async fn sign_out(&self, cookie: &str) {
        self.post("/api/auth/sign-out", json!({}), Some(cookie))
            .await;
    }

    /// The `get-session` calls the app received, each `{at, headers}`.
    pub async fn session_requests(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/test/requests", self.url))
            .send()
            .await
            .expect("the app answers")
            .json()
            .await
            .expect("JSON")
    }
}

impl Drop for BetterAuthApp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
