//! npm packages of the repository that tests build and run: the client
//! package (`clients/js`) and the browser tests (`tests/browser`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::{tools_dir, with_file_lock, workspace_root};

/// The client package `@confab/client`: `<workspace>/clients/js`.
pub fn client_package_dir() -> PathBuf {
    workspace_root().join("clients").join("js")
}

/// Installs `dir`'s dependencies from its `package-lock.json` (`npm ci`)
/// unless `node_modules` is newer than the lock file. Once per process and
/// directory; serialised across processes by a file lock.
///
/// # Panics
///
/// When `npm ci` fails (set `CONFAB_NPM` to pick another `npm`).
pub fn npm_ci(dir: &Path) {
    static DONE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !done
        .get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf())
    {
        return;
    }
    let lock = tools_dir().join(format!("npm-ci-{}.lock", lock_name(dir)));
    with_file_lock(&lock, || {
        if !installed(dir) {
            npm(dir, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        }
    });
}

/// Installs and builds the client package (`npm ci`, `npm run build`: the
/// generated event types copied in, then `tsc`) once per process, and
/// returns its directory.
pub fn client_package() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let dir = client_package_dir();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        npm_ci(&dir);
        with_file_lock(&tools_dir().join("npm-build-client.lock"), || {
            npm(&dir, &["run", "build", "--silent"]);
        });
        *built = true;
    }
    dir
}

/// Runs `npm ARGS` in `dir`; panics with its output when it fails.
pub fn npm(dir: &Path, args: &[&str]) {
    let npm = std::env::var_os("CONFAB_NPM").unwrap_or_else(|| OsString::from("npm"));
    let output = Command::new(&npm)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run npm {args:?} in {}: {err}", dir.display()));
    assert!(
        output.status.success(),
        "`npm {}` in {} failed ({}).\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `node_modules` was installed after the lock file last changed.
fn installed(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules").join(".package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    }
}

fn lock_name(dir: &Path) -> String {
    dir.strip_prefix(workspace_root())
        .unwrap_or(dir)
        .to_string_lossy()
        .replace(['/', '\\'], "-")
}
