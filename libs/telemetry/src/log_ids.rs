//! `trace_id` / `span_id` in JSON log lines, so that a log line leads to
//! its trace (and a trace to its log lines).
//!
//! The JSON formatter of `tracing-subscriber` knows nothing of
//! OpenTelemetry; [`WithTraceIds`] wraps it and puts the current span's
//! ids first in the object. Lines logged outside any exported span carry
//! no ids (nothing could be looked up with them).

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// An event formatter writing `"trace_id"` and `"span_id"` (W3C hex) ahead
/// of what the inner JSON formatter writes.
pub(crate) struct WithTraceIds<F>(pub(crate) F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Looked up before formatting: the lookup takes the span's
        // extensions, which the inner formatter reads too.
        let ids = if crate::is_exporting() {
            current_ids()
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                r#"{{"trace_id":"{trace_id}","span_id":"{span_id}",{rest}"#
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The current span's trace and span ids, when it is part of a trace.
fn current_ids() -> Option<(String, String)> {
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
