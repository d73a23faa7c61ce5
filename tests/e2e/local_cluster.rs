//! `deploy/local/cluster.sh` (`just up` / `just down`) keeps its state
//! directory private: 0700, each secret 0600, even when an older run left
//! them readable by others. (That its nats-server lets in only the
//! cluster's users is the configuration `deploy/config/nats-authorization.conf`,
//! tested against a real nats-server in
//! `services/membership/tests/nats_api.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_state_directory_and_its_secrets_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // What an older run left: world-readable directory and secrets.
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    for secret in ["jwt-secret", "service-token", "nats-gateway-password"] {
        let f = run.join(secret);
        std::fs::write(&f, "0123456789abcdef").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("down")
        .env("CONFAB_RUN_DIR", &run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&run), 0o700);
    assert_eq!(mode(&run.join("logs")), 0o700);
    for secret in ["jwt-secret", "service-token", "nats-gateway-password"] {
        assert_eq!(mode(&run.join(secret)), 0o600, "{secret}");
    }

    // A fresh state directory is made private.
    let fresh = dir.path().join("fresh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("down")
        .env("CONFAB_RUN_DIR", &fresh)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode(&fresh), 0o700);
}
