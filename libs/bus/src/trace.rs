//! Spans of the bus, after the OpenTelemetry semantic conventions for
//! messaging: a producer span `send …` around every publish (its trace
//! context travels in the message headers, `traceparent`), and the
//! consumer span `process …` a receiver opens per message, linked to the
//! producer span.
//!
//! Room ids make destination names high-cardinality, so span names use the
//! destination template (`in.rooms.channel.{id}`) and the attribute
//! `messaging.destination.name` the actual subject (room). Nothing here
//! builds a span unless spans are exported
//! ([`confab_telemetry::is_exporting`]).

use confab_events::{RoomId, RoomKind};
use tracing::Span;

use crate::BusMessage;
use crate::subjects::{HEADER_TRACEPARENT, HEADER_TRACESTATE};

/// `messaging.system` of the NATS bus.
pub const SYSTEM_NATS: &str = "nats";
/// `messaging.system` of the Redis bus.
pub const SYSTEM_REDIS: &str = "redis";
/// `messaging.system` of the in-process bus (not a semantic-conventions
/// value: there is no broker).
pub const SYSTEM_IN_PROCESS: &str = "confab_in_process";

/// The destination template of a room's durable (`in.rooms.…`) or live
/// (`rooms.…`) subject.
pub fn template(room: &RoomId, durable: bool) -> &'static str {
    match (room.kind(), durable) {
        (RoomKind::Channel, true) => "in.rooms.channel.{id}",
        (RoomKind::Dm, true) => "in.rooms.dm.{id}",
        (RoomKind::Workspace, true) => "in.rooms.workspace.{id}",
        (RoomKind::User, true) => "in.rooms.user.{id}",
        (RoomKind::Channel, false) => "rooms.channel.{id}",
        (RoomKind::Dm, false) => "rooms.dm.{id}",
        (RoomKind::Workspace, false) => "rooms.workspace.{id}",
        (RoomKind::User, false) => "rooms.user.{id}",
    }
}

/// The producer span of a publish of `msg` to `room` on `system`
/// (`Span::none()` when spans are not exported). Publish inside it: the
/// bus then carries its context in the message headers.
pub fn send_span(system: &'static str, room: &RoomId, msg: &BusMessage) -> Span {
    if !confab_telemetry::is_exporting() {
        return Span::none();
    }
    let durable = !msg.volatile;
    let template = template(room, durable);
    let destination = if system == SYSTEM_NATS {
        if durable {
            crate::subjects::publish_subject(room)
        } else {
            crate::subjects::live_subject(room)
        }
    } else {
        room.to_string()
    };
    tracing::info_span!(
        "bus.send",
        otel.name = %format_args!("send {template}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %destination,
        messaging.destination.template = template,
        messaging.message.id = msg.msg_id.as_deref(),
        messaging.message.body.size = msg.args_json.len(),
        confab.event = &*msg.event,
        confab.room = %room,
        confab.seq = tracing::field::Empty,
    )
}

/// The consumer span of processing one received `msg` of `room` (one per
/// message per process, never per socket), linked to the producer span
/// named by its headers; `Span::none()` when spans are not exported or the
/// message carries no trace context, so an untraced message costs nothing
/// but this check.
pub fn process_span(system: &'static str, room: &RoomId, msg: &BusMessage) -> Span {
    if !confab_telemetry::is_exporting() {
        return Span::none();
    }
    let Some(producer) = producer_of(msg) else {
        return Span::none();
    };
    let template = template(room, false);
    let span = tracing::info_span!(
        "bus.process",
        otel.name = %format_args!("process {template}"),
        otel.kind = "consumer",
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %room,
        messaging.destination.template = template,
        messaging.message.id = msg.msg_id.as_deref(),
        confab.event = &*msg.event,
        confab.seq = msg.seq,
        confab.sockets = tracing::field::Empty,
    );
    confab_telemetry::add_link(&span, producer);
    span
}

/// The producer's span context carried by `msg`, if any.
pub fn producer_of(msg: &BusMessage) -> Option<confab_telemetry::SpanContext> {
    // Most messages of an untraced deployment have no header at all.
    if !msg.headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case(HEADER_TRACEPARENT) || k.eq_ignore_ascii_case(HEADER_TRACESTATE)
    }) {
        return None;
    }
    confab_telemetry::remote_span_context(&msg.headers[..])
}

/// `msg` with the current span's trace context in its headers (replacing
/// a carried one), for buses that keep headers in the message itself
/// (Redis, in-process). Unchanged when spans are not exported.
pub(crate) fn with_current_context(msg: BusMessage) -> BusMessage {
    if !confab_telemetry::is_exporting() {
        return msg;
    }
    let mut trace: Vec<(String, String)> = Vec::new();
    confab_telemetry::inject_context(&mut trace);
    if trace.is_empty() {
        return msg;
    }
    let mut headers: Vec<(String, String)> = msg
        .headers
        .iter()
        .filter(|(k, _)| {
            !(k.eq_ignore_ascii_case(HEADER_TRACEPARENT)
                || k.eq_ignore_ascii_case(HEADER_TRACESTATE))
        })
        .cloned()
        .collect();
    headers.extend(trace);
    msg.with_headers(headers)
}
