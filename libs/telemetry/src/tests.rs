use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// One request received by [`FakeCollector`].
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    content_type: Option<String>,
    body_len: usize,
}

/// A minimal HTTP/1.1 server standing in for an OTLP/HTTP collector: it
/// answers every request with an empty `200 OK` and reports what it got.
struct FakeCollector {
    port: u16,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl FakeCollector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, tx).await;
                });
            }
        });
        FakeCollector { port, requests }
    }

    fn traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Received>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut content_length = 0usize;
        let mut content_type = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("content-type") {
                    content_type = Some(value.to_owned());
                }
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        let _ = tx.send(Received {
            method,
            path,
            content_type,
            body_len: body.len(),
        });
        reader
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            )
            .await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_otlp_http_collector() {
    let mut collector = FakeCollector::start().await;
    let provider = build_tracer_provider("telemetry-test", Some(&collector.traces_url())).unwrap();
    let subscriber = tracing_subscriber::registry().with(otel_layer(&provider));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("exported-span", answer = 42);
        let _entered = span.enter();
        tracing::info!("inside the span");
    });

    // `force_flush` blocks until the batch processor's export finished.
    let flush_provider = provider.clone();
    tokio::task::spawn_blocking(move || flush_provider.force_flush())
        .await
        .unwrap()
        .expect("force_flush failed: the collector did not accept the export");

    let request = tokio::time::timeout(Duration::from_secs(10), collector.requests.recv())
        .await
        .expect("no request reached the fake collector within 10s")
        .unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert!(request.body_len > 0, "empty export body");

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn trace_context_round_trips_through_headers() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // A provider without exporter: spans get real ids but go nowhere.
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry().with(otel_layer(&provider));
    tracing::subscriber::with_default(subscriber, || {
        let mut headers: HashMap<String, String> = HashMap::new();
        let producer_trace_id = {
            let span = tracing::info_span!("publish");
            let _entered = span.enter();
            inject_context(&mut headers);
            span.context().span().span_context().trace_id()
        };
        let traceparent = headers.get("traceparent").expect("traceparent injected");
        assert!(
            traceparent.contains(&producer_trace_id.to_string()),
            "{traceparent} does not carry {producer_trace_id}"
        );

        let extracted = extract_context(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id(),
            producer_trace_id
        );
        assert!(extracted.span().span_context().is_remote());

        let consumer = tracing::info_span!("consume");
        set_parent_from(&consumer, &headers);
        assert_eq!(
            consumer.context().span().span_context().trace_id(),
            producer_trace_id
        );

        // Other carriers work the same way.
        let mut pairs: Vec<(String, String)> = Vec::new();
        inject_context_from(&extracted, &mut pairs);
        assert_eq!(
            extract_context(&pairs).span().span_context().trace_id(),
            producer_trace_id
        );
    });
}

#[test]
fn no_active_trace_injects_nothing() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut headers: HashMap<String, String> = HashMap::new();
    inject_context(&mut headers);
    assert!(headers.is_empty(), "{headers:?}");
    let cx = extract_context(&headers);
    assert!(!cx.span().span_context().is_valid());
}

#[test]
fn log_format_parses_and_deserialises() {
    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    assert_eq!(" Pretty ".parse::<LogFormat>().unwrap(), LogFormat::Pretty);
    assert!(matches!(
        "xml".parse::<LogFormat>(),
        Err(TelemetryError::UnknownLogFormat(_))
    ));
    let parsed: LogFormat = serde_json::from_str("\"json\"").unwrap();
    assert_eq!(parsed, LogFormat::Json);
    assert!(serde_json::from_str::<LogFormat>("\"JSON\"").is_err());
    assert_eq!(LogFormat::default(), LogFormat::Pretty);
    assert_eq!(LogFormat::Json.to_string(), "json");
}
