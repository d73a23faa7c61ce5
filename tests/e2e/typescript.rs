//! The checked-in TypeScript declarations compile against socket.io-client's
//! typed `Socket` (the `typed-client.ts` example uses every event).

use std::process::Command;

#[test]
fn typescript_declarations_fit_socket_io_client() {
    let modules = confab_test_support::node_modules();
    let tsc = modules.join("typescript/bin/tsc");
    let js = confab_test_support::js_dir();
    let out = Command::new("node")
        .arg(&tsc)
        .args(["-p", "tsconfig.json"])
        .current_dir(&js)
        .output()
        .expect("node runs tsc");
    assert!(
        out.status.success(),
        "tsc failed on tests/js/typed-client.ts:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
