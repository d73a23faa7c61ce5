//! `init` reads the standard `OTEL_*` variables. Changing the environment of a
//! running test process is unsound, so the test re-runs this binary as a child
//! process with the variables set, against a fake OTLP/HTTP collector.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

const CHILD_MARKER: &str = "CONFAB_TELEMETRY_TEST_CHILD";

/// `(method, path, body)` of each request the fake collector received.
type Request = (String, String, Vec<u8>);

/// Accepts connections forever on a background thread, answering `200 OK`.
fn fake_collector() -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut content_length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            content_length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; content_length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send((method, path, body));
                    let _ = reader.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, rx)
}

/// Runs `child_process` of this binary with `envs`, asserts it succeeded
/// and returns what it wrote to stderr (its logs).
fn run_child(envs: &[(&str, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_MARKER, "1")
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    .env_remove("OTEL_SDK_DISABLED")
    .env_remove("OTEL_SERVICE_NAME");
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The child: initialise from the environment inside a Tokio runtime (as a
/// service's `main` does), record a span, and drop the guard (which flushes).
#[test]
fn child_process() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let format = std::env::var("CHILD_LOG_FORMAT")
            .map(|f| f.parse().unwrap())
            .unwrap_or(confab_telemetry::LogFormat::Pretty);
        let guard = confab_telemetry::init("fallback-name", format).expect("init");
        let expect_export = std::env::var("EXPECT_EXPORT").unwrap() == "1";
        assert_eq!(guard.is_exporting(), expect_export);
        tracing::info_span!("child-span").in_scope(|| tracing::info!("hello"));
        drop(guard);
    });
}

#[test]
fn base_endpoint_env_enables_export_with_service_name_from_env() {
    let (port, requests) = fake_collector();
    run_child(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_SERVICE_NAME", "svc-from-env".to_owned()),
        ("EXPECT_EXPORT", "1".to_owned()),
    ]);
    let (method, path, body) = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the child exported nothing");
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/traces"));
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("svc-from-env"), "service.name not in export");
    assert!(body.contains("child-span"), "span not in export");
    assert!(!body.contains("fallback-name"));
}

#[test]
fn traces_endpoint_env_is_used_verbatim_and_argument_names_the_service() {
    let (port, requests) = fake_collector();
    run_child(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("http://127.0.0.1:{port}/custom/traces"),
        ),
        ("EXPECT_EXPORT", "1".to_owned()),
    ]);
    let (_, path, body) = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the child exported nothing");
    assert_eq!(path, "/custom/traces");
    assert!(String::from_utf8_lossy(&body).contains("fallback-name"));
}

#[test]
fn sdk_disabled_or_no_endpoint_exports_nothing() {
    let (port, requests) = fake_collector();
    run_child(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_SDK_DISABLED", "TRUE".to_owned()),
        ("EXPECT_EXPORT", "0".to_owned()),
    ]);
    run_child(&[("EXPECT_EXPORT", "0".to_owned())]);
    // The children have exited, so anything they sent has arrived already.
    assert!(requests.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn json_log_lines_inside_an_exported_span_carry_its_ids() {
    let (port, requests) = fake_collector();
    let logs = run_child(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("CHILD_LOG_FORMAT", "json".to_owned()),
        ("EXPECT_EXPORT", "1".to_owned()),
    ]);
    let line: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "hello")
        .unwrap_or_else(|| panic!("no JSON line \"hello\" in:\n{logs}"));
    let trace_id = line["trace_id"].as_str().expect("trace_id");
    let span_id = line["span_id"].as_str().expect("span_id");
    assert!(
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(
        span_id.len() == 16 && span_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert_eq!(
        line["span"]["name"], "child-span",
        "the rest of the line is intact: {line}"
    );
    // The ids are those of the exported span (raw bytes in the protobuf).
    let (_, _, body) = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the child exported nothing");
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    for id in [bytes(trace_id), bytes(span_id)] {
        assert!(
            body.windows(id.len()).any(|w| w == id.as_slice()),
            "the logged id is not in the export"
        );
    }
}

#[test]
fn json_log_lines_without_export_carry_no_ids() {
    let logs = run_child(&[
        ("CHILD_LOG_FORMAT", "json".to_owned()),
        ("EXPECT_EXPORT", "0".to_owned()),
    ]);
    let line: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "hello")
        .unwrap_or_else(|| panic!("no JSON line \"hello\" in:\n{logs}"));
    assert!(line.get("trace_id").is_none(), "{line}");
}
