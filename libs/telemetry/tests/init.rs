//! `init` installs process-wide state, so it gets a test binary of its own.

use confab_telemetry::{LogFormat, TelemetryError};

#[test]
fn init_twice_returns_an_error_instead_of_panicking() {
    // `init` reads the environment; this binary never changes it.
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        assert!(
            std::env::var_os(name).is_none(),
            "unset {name} to run this test"
        );
    }
    let guard = confab_telemetry::init("telemetry-init-test", LogFormat::Json).unwrap();
    assert!(!guard.is_exporting());
    tracing::info!("logged through the installed subscriber");

    let second = confab_telemetry::init("telemetry-init-test", LogFormat::Pretty);
    assert!(matches!(second, Err(TelemetryError::AlreadyInitialized)));

    // The propagator is installed: with no active trace nothing is injected.
    let mut headers = std::collections::HashMap::new();
    confab_telemetry::inject_context(&mut headers);
    assert!(headers.is_empty());
    drop(guard);
}
