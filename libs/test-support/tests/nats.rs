//! `NatsServer` against the real, provisioned nats-server.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use confab_test_support::{NATS_SERVER_VERSION, NatsServer, nats_server_binary};

/// Connects to the client port and returns the JSON of the server's INFO line.
fn read_info(port: u16) -> serde_json::Value {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let json = line
        .strip_prefix("INFO ")
        .unwrap_or_else(|| panic!("first line is not INFO: {line:?}"));
    serde_json::from_str(json.trim_end()).unwrap()
}

fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap().parse().unwrap();
    let minor = parts.next().unwrap().parse().unwrap();
    (major, minor)
}

#[test]
fn provisioned_binary_is_executable_and_pinned() {
    let binary = nats_server_binary();
    assert!(binary.is_file(), "{}", binary.display());
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    if std::env::var_os("CONFAB_NATS_SERVER").is_none() {
        assert!(text.contains(NATS_SERVER_VERSION), "{text}");
    }
}

#[test]
fn starts_with_jetstream_and_restarts_on_the_same_port() {
    let mut server = NatsServer::start();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.store_dir().is_dir());

    let info = read_info(server.port());
    let version = info["version"].as_str().expect("INFO has a version");
    assert!(major_minor(version) >= (2, 10), "server version {version}");
    assert_eq!(info["jetstream"], true, "{info}");

    let jsz = server.monitor_json("/jsz");
    assert!(jsz["config"]["store_dir"].is_string(), "{jsz}");
    let store_dir = server.store_dir();
    assert!(
        jsz["config"]["store_dir"]
            .as_str()
            .unwrap()
            .starts_with(store_dir.to_str().unwrap()),
        "{jsz}"
    );
    assert!(server.monitor_url().starts_with("http://127.0.0.1:"));

    server.kill();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());

    let port = server.port();
    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let info = read_info(server.port());
    assert_eq!(info["jetstream"], true, "{info}");

    // Restart also works on a running server.
    server.restart();
    read_info(server.port());

    drop(server);
    assert!(!store_dir.exists(), "store not removed on drop");
}

#[test]
fn extra_arguments_are_passed_through() {
    let server = NatsServer::start_with_args(&["--user", "alice", "--pass", "s3cret"]);
    let info = read_info(server.port());
    assert_eq!(info["auth_required"], true, "{info}");
}
