//! Observability setup shared by every Confab binary.
//!
//! [`init`] installs the process-wide [`tracing`] subscriber:
//!
//! * an [`EnvFilter`] driven by `RUST_LOG` (default `info`);
//! * a human-readable ([`LogFormat::Pretty`]) or JSON ([`LogFormat::Json`])
//!   formatter writing to **stderr**;
//! * only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is
//!   not `true`): an OpenTelemetry layer exporting spans over OTLP/HTTP
//!   (protobuf) through a batch span processor. Nothing is exported otherwise.
//!
//! It also installs the W3C TraceContext propagator globally, which
//! [`inject_context`] and [`extract_context`] use to carry trace context in
//! message headers (for example NATS headers).
//!
//! ```no_run
//! # fn main() -> Result<(), confab_telemetry::TelemetryError> {
//! let _telemetry = confab_telemetry::init("confab-gateway", confab_telemetry::LogFormat::Json)?;
//! tracing::info!("started");
//! // Spans still queued are flushed when `_telemetry` is dropped.
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use opentelemetry::Context as OtelContext;
pub use opentelemetry::trace::SpanContext;

/// Standard variable holding the OTLP base endpoint (`/v1/traces` is appended).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Standard variable holding the full OTLP traces endpoint (used as is).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Standard variable that disables the OpenTelemetry SDK when set to `true`.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// Standard variable overriding the `service.name` resource attribute.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// Filter used when `RUST_LOG` is unset or empty.
const DEFAULT_FILTER: &str = "info";

/// Set once the first [`init`] call got past its "already initialised" check.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Set while spans are exported over OTLP (see [`is_exporting`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans over OTLP ([`init`] found an endpoint).
///
/// Hot paths (the fan-out of every room event) check it first and then
/// build no span and parse no trace context at all: without an exporter
/// nobody would ever see them.
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Log output format.
///
/// Deserialises from (and parses, case-insensitively, from) `"pretty"` or `"json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable single-line records (ANSI colours when stderr is a terminal).
    #[default]
    Pretty,
    /// One JSON object per record, with the current span and its parents.
    Json,
}

impl LogFormat {
    /// The lowercase name, as accepted by [`FromStr`] and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(TelemetryError::UnknownLogFormat(s.to_owned())),
        }
    }
}

/// Errors returned by [`init`] and [`LogFormat::from_str`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// [`init`] has already been called successfully in this process.
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
    /// `RUST_LOG` could not be parsed.
    #[error("invalid RUST_LOG filter: {0}")]
    InvalidFilter(String),
    /// The log format string is neither `pretty` nor `json`.
    #[error("unknown log format {0:?} (expected \"pretty\" or \"json\")")]
    UnknownLogFormat(String),
    /// The OTLP span exporter could not be built.
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Another global `tracing` subscriber (or `log` logger) was already installed.
    #[error("cannot install the global tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the OpenTelemetry pipeline alive; dropping it flushes queued spans
/// and shuts the tracer provider down.
///
/// Keep it in `main` for the whole life of the process.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every span finished so far, blocking until done (no-op when
    /// not exporting). Export failures are reported through the SDK's
    /// internal logging, not returned.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            // `shutdown` flushes the batch processor first.
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global tracing subscriber, the W3C TraceContext propagator
/// and, when configured through the standard `OTEL_*` variables, the OTLP/HTTP
/// trace exporter. See the [crate docs](crate).
///
/// `service_name` becomes the `service.name` resource attribute unless
/// `OTEL_SERVICE_NAME` is set.
///
/// Call it once per process, early in `main` (inside or outside a Tokio
/// runtime: the exporter runs on its own thread). A second call returns
/// [`TelemetryError::AlreadyInitialized`] without touching the first setup.
pub fn init(service_name: &str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    let result = try_init(service_name, format);
    if result.is_err() {
        // Nothing global was installed (or the failure was that something else
        // already owns the global subscriber): let the caller retry.
        INITIALIZED.store(false, Ordering::SeqCst);
    }
    result
}

fn try_init(service_name: &str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    let filter = env_filter()?;
    let provider = if otlp_enabled_from_env() {
        // The exporter resolves the endpoint itself from the standard variables
        // (the per-signal one verbatim, the base one with `/v1/traces` appended).
        Some(build_tracer_provider(
            &resolve_service_name(service_name),
            None,
        )?)
    } else {
        None
    };

    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(format))
        .with(provider.as_ref().map(otel_layer));
    if let Err(err) = registry.try_init() {
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Err(err.into());
    }

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(TelemetryGuard { provider })
}

fn env_filter() -> Result<EnvFilter, TelemetryError> {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse(spec)
            .map_err(|err| TelemetryError::InvalidFilter(err.to_string())),
        _ => Ok(EnvFilter::new(DEFAULT_FILTER)),
    }
}

fn fmt_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .flatten_event(true);
            // `json()` for the JSON field formatter; the event format is
            // replaced by the one adding the trace ids.
            layer
                .json()
                .event_format(log_ids::WithTraceIds(json))
                .boxed()
        }
    }
}

/// Whether the standard environment asks for OTLP trace export.
fn otlp_enabled_from_env() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var(OTEL_SDK_DISABLED).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set(OTEL_EXPORTER_OTLP_ENDPOINT) || set(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
}

fn resolve_service_name(fallback: &str) -> String {
    std::env::var(OTEL_SERVICE_NAME)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

/// Builds a tracer provider exporting over OTLP/HTTP (protobuf) through a
/// batch span processor.
///
/// `endpoint` is the full traces URL (`http://host:4318/v1/traces`); `None`
/// lets the exporter resolve it from the standard environment variables.
fn build_tracer_provider(
    service_name: &str,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build()?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Target of spans that only give log lines their context (a process's
/// `gateway` span, which lives as long as the process): they are never
/// exported, so that what runs inside them starts traces of its own
/// instead of joining one trace that never ends.
///
/// ```
/// let span = tracing::info_span!(target: confab_telemetry::LOG_CONTEXT, "gateway", gateway = "gw-1");
/// # drop(span);
/// ```
pub const LOG_CONTEXT: &str = "confab_log_context";

/// The `tracing` layer turning spans into OpenTelemetry spans of `provider`
/// (every span but the [`LOG_CONTEXT`] ones).
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() != LOG_CONTEXT
        }))
}

// ---------------------------------------------------------------------------
// Context propagation through string headers.
// ---------------------------------------------------------------------------

/// Read access to a string-to-string header collection, for [`extract_context`].
///
/// Implemented for `HashMap<String, String>`, `BTreeMap<String, String>` and
/// slices/vectors of `(String, String)` pairs; implement it for other header
/// types (or copy them into a `HashMap` first).
pub trait HeaderSource {
    /// The value of `key`, if present (first one when repeated).
    fn header(&self, key: &str) -> Option<&str>;
    /// Every header name present.
    fn header_names(&self) -> Vec<&str>;
}

impl<S: BuildHasher> HeaderSource for HashMap<String, String, S> {
    fn header(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
    fn header_names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

impl HeaderSource for BTreeMap<String, String> {
    fn header(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
    fn header_names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

impl HeaderSource for [(String, String)] {
    fn header(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn header_names(&self) -> Vec<&str> {
        self.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, key: &str) -> Option<&str> {
        self.as_slice().header(key)
    }
    fn header_names(&self) -> Vec<&str> {
        self.as_slice().header_names()
    }
}

/// Adapter making any `Extend<(String, String)>` collection an OpenTelemetry
/// [`Injector`].
#[derive(Debug)]
pub struct HeaderInjector<'a, C: ?Sized>(pub &'a mut C);

impl<C> Injector for HeaderInjector<'_, C>
where
    C: Extend<(String, String)> + ?Sized,
{
    fn set(&mut self, key: &str, value: String) {
        self.0.extend(std::iter::once((key.to_owned(), value)));
    }
}

/// Adapter making any [`HeaderSource`] an OpenTelemetry [`Extractor`].
#[derive(Debug)]
pub struct HeaderExtractor<'a, C: ?Sized>(pub &'a C);

impl<C> Extractor for HeaderExtractor<'_, C>
where
    C: HeaderSource + ?Sized,
{
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.header_names()
    }
}

/// Writes the trace context of the current `tracing` span (`traceparent`, and
/// `tracestate` when non-empty) into `headers`, using the global propagator.
///
/// Writes nothing when no trace is active (for example when OTLP export is
/// off, since spans then carry no OpenTelemetry context).
pub fn inject_context<C>(headers: &mut C)
where
    C: Extend<(String, String)> + ?Sized,
{
    inject_context_from(&tracing::Span::current().context(), headers);
}

/// Writes the trace context `cx` into `headers`, using the global propagator.
pub fn inject_context_from<C>(cx: &OtelContext, headers: &mut C)
where
    C: Extend<(String, String)> + ?Sized,
{
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// Reads a trace context from `headers`, using the global propagator.
///
/// Returns an empty context when the headers carry none. Attach it to a span
/// with [`set_parent_from`] or
/// [`OpenTelemetrySpanExt::set_parent`](tracing_opentelemetry::OpenTelemetrySpanExt::set_parent).
pub fn extract_context<C>(headers: &C) -> OtelContext
where
    C: HeaderSource + ?Sized,
{
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// The remote span context carried in `headers` (`traceparent`), if any
/// valid one: what a consumer span links to.
pub fn remote_span_context<C>(headers: &C) -> Option<SpanContext>
where
    C: HeaderSource + ?Sized,
{
    use opentelemetry::trace::TraceContextExt as _;
    let cx = extract_context(headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// The span context of `span`, when it is part of an exported trace.
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// Links `span` to the span `to` (call it before `span` is first entered).
pub fn add_link(span: &tracing::Span, to: SpanContext) {
    span.add_link(to);
}

/// Makes `parent` (a remote span, e.g. a message's producer) the parent
/// of `span` (call it before `span` is first entered).
pub fn set_parent_span(span: &tracing::Span, parent: SpanContext) {
    use opentelemetry::trace::TraceContextExt as _;
    let _ = span.set_parent(OtelContext::new().with_remote_span_context(parent));
}

/// Links `span` to the trace context found in `headers` (if any): the
/// consumer side of a message whose producer is in another trace (a
/// fan-out, a batch). Call it before the span is first entered. Returns
/// whether a link was added.
pub fn link_from<C>(span: &tracing::Span, headers: &C) -> bool
where
    C: HeaderSource + ?Sized,
{
    match remote_span_context(headers) {
        Some(sc) => {
            span.add_link(sc);
            true
        }
        None => false,
    }
}

/// Makes the trace context found in `headers` (if any) the parent of `span`.
///
/// Call it before the span is first entered. Silently does nothing when the
/// headers carry no context or the OpenTelemetry layer is not installed.
pub fn set_parent_from<C>(span: &tracing::Span, headers: &C)
where
    C: HeaderSource + ?Sized,
{
    use opentelemetry::trace::TraceContextExt as _;
    let cx = extract_context(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

mod log_ids;

#[cfg(test)]
mod tests;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the one shutdown signal every
/// Confab binary hands to its `App::run`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
