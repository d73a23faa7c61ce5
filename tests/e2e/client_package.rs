//! The client package (`clients/js`, `@confab/client`) against a real
//! all-in-one: its Node tests (`npm run test:server`) check the token
//! function, recovery, `recovery:failed` and the history refetch helper.

use std::time::Duration;

use crate::all_in_one::AllInOne;
use crate::support::SECRET;

#[tokio::test]
async fn client_package_against_the_all_in_one() {
    let aio = AllInOne::start(|_| {}).await;
    let dir = tokio::task::spawn_blocking(confab_test_support::client_package)
        .await
        .expect("client package builds");
    let run = tokio::process::Command::new(
        std::env::var_os("CONFAB_NPM").unwrap_or_else(|| "npm".into()),
    )
    .args(["run", "--silent", "test:server"])
    .current_dir(&dir)
    .env("CONFAB_URL", aio.url())
    .env("CONFAB_API", aio.api_url())
    .env("CONFAB_SERVICE_TOKEN", &aio.service_token)
    .env("CONFAB_HS256_SECRET", SECRET)
    .kill_on_drop(true)
    .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the client package's server tests finish within 2 minutes")
        .expect("npm runs");
    assert!(
        out.status.success(),
        "client package tests failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
