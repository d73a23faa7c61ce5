//! The current span's W3C trace context travels with published events.

use confab_bus::subjects::HEADER_TRACEPARENT;
use confab_bus::{Bus, BusMessage, NatsBus, NatsConfig};
use confab_events::RoomId;
use confab_test_support::NatsServer;
use futures::StreamExt;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn publish_carries_the_current_trace_context() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // A provider without exporter: spans get real ids but go nowhere.
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("confab-bus-test")));
    // The test runs on one thread (current-thread runtime).
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let room = RoomId::parse("channel:traced").unwrap();
    let mut sub = bus.subscribe(&room).await.unwrap();

    let span = tracing::info_span!("send_message");
    let trace_id = span.context().span().span_context().trace_id();
    bus.publish(&room, BusMessage::new("message:new", &serde_json::json!(1)))
        .instrument(span)
        .await
        .unwrap();

    let got = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    let traceparent = got.header(HEADER_TRACEPARENT).expect("traceparent sent");
    assert!(
        traceparent.contains(&trace_id.to_string()),
        "{traceparent} does not carry {trace_id}"
    );
}
