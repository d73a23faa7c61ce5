//! The header codec: a [`BusMessage`] to NATS headers and body, and a NATS
//! message (live, stored or direct-get reply) back to a [`BusMessage`].
//!
//! On the wire a room message is its JSON array of arguments as the body
//! and these headers:
//!
//! * `Confab-Event`: the Socket.IO event name;
//! * `Nats-Msg-Id`: [`BusMessage::msg_id`], JetStream's de-duplication id;
//! * `traceparent` / `tracestate`: the publishing span's W3C trace context
//!   (it wins over a carried one);
//! * any other extra header of the message, except `Nats-*` ones (set by
//!   the bus and the server) other than publish preconditions such as
//!   `Nats-Expected-Last-Subject-Sequence`.
//!
//! Decoding keeps every header except `Confab-Event` and `Nats-*`
//! (`Nats-Msg-Id` becomes [`BusMessage::msg_id`], the stream sequence
//! [`BusMessage::seq`]) and drops, counting them, messages without an
//! event or whose body is not a UTF-8 JSON array. NATS trims header values
//! and forbids CR/LF, so event names and ids that would not arrive intact
//! are refused when sending.

use std::str::FromStr;
use std::sync::Arc;

use async_nats::jetstream;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use confab_events::RoomId;

use super::stats::{Counters, bump};
use crate::subjects::{
    HEADER_EVENT, HEADER_MSG_ID, HEADER_TRACEPARENT, HEADER_TRACESTATE, room_from_subject,
};
use crate::{BusError, BusMessage, TailItem};

/// Builds the headers of an outgoing room message.
pub(super) fn outgoing_headers(msg: &BusMessage) -> Result<HeaderMap, BusError> {
    check_event_name(&msg.event)?;
    let mut trace: Vec<(String, String)> = Vec::new();
    confab_telemetry::inject_context(&mut trace);
    let has_trace = !trace.is_empty();

    let mut headers = HeaderMap::new();
    let extra = msg.headers.iter().filter(|(k, _)| {
        !(k.eq_ignore_ascii_case(HEADER_EVENT)
            // Set from the fields, or by the server (Nats-Sequence, ...);
            // only publish preconditions (Nats-Expected-*) pass.
            || (starts_with_ignore_case(k, "Nats-")
                && !starts_with_ignore_case(k, "Nats-Expected-"))
            // The current span's context wins over a carried one.
            || (has_trace
                && (k.eq_ignore_ascii_case(HEADER_TRACEPARENT)
                    || k.eq_ignore_ascii_case(HEADER_TRACESTATE))))
    });
    for (name, value) in extra.chain(trace.iter()) {
        let name = HeaderName::from_str(name).map_err(|_| {
            BusError::Rejected(format!(
                "invalid header name {name:?}: printable ASCII without ':' only"
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            BusError::Rejected(format!(
                "invalid value for header {name}: contains CR or LF"
            ))
        })?;
        headers.append(name, value);
    }
    headers.insert(HEADER_EVENT, &*msg.event);
    if let Some(id) = &msg.msg_id {
        let id = HeaderValue::from_str(id)
            .ok()
            .filter(|_| !id.is_empty() && id.trim() == &**id)
            .ok_or_else(|| {
                BusError::Rejected(format!(
                    "invalid msg_id {id:?}: must be non-empty, without CR/LF or surrounding spaces"
                ))
            })?;
        headers.insert(HEADER_MSG_ID, id);
    }
    Ok(headers)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Event names travel in a header: NATS trims header values and forbids
/// CR/LF, so such names would not arrive intact.
fn check_event_name(event: &str) -> Result<(), BusError> {
    if event.is_empty() || event.chars().any(char::is_control) || event.trim() != event {
        return Err(BusError::Rejected(format!(
            "event name {event:?} cannot be sent over NATS: it must be non-empty, without \
             control characters or leading/trailing whitespace"
        )));
    }
    Ok(())
}

/// Lets a message body share the `Arc<str>` of `args_json` without copying.
pub(super) struct ArcStrBytes(pub(super) Arc<str>);

impl AsRef<[u8]> for ArcStrBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A numeric header, e.g. `Nats-Sequence`.
pub(super) fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().trim().parse().ok()
}

/// Turns a NATS message into a [`BusMessage`], or counts and logs why not.
pub(super) fn decode(
    room: &RoomId,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    seq: Option<u64>,
    counters: &Counters,
) -> Option<BusMessage> {
    if let Some(seq) = seq {
        counters.saw(seq);
    }
    let Some(event) = headers
        .and_then(|h| h.get(HEADER_EVENT))
        .map(HeaderValue::as_str)
        .filter(|e| !e.is_empty())
    else {
        bump(&counters.missing_event, 1);
        tracing::warn!(%room, ?seq, "dropping a bus message without a {HEADER_EVENT} header");
        return None;
    };
    let Some(args_json) = std::str::from_utf8(payload)
        .ok()
        .filter(|s| is_json_array(s))
    else {
        bump(&counters.invalid_payload, 1);
        tracing::warn!(%room, ?seq, event, "dropping a bus message whose body is not a UTF-8 JSON array");
        return None;
    };
    let mut msg_id = None;
    let mut extra = Vec::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(HEADER_MSG_ID) {
                msg_id = values.first().map(|v| Arc::from(v.as_str()));
            } else if !(name.eq_ignore_ascii_case(HEADER_EVENT)
                || name
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("Nats-")))
            {
                extra.extend(values.iter().map(|v| (name.to_owned(), v.to_string())));
            }
        }
    }
    Some(BusMessage {
        event: event.into(),
        args_json: args_json.into(),
        seq,
        headers: extra.into(),
        msg_id,
        volatile: seq.is_none(),
    })
}

/// A stored message of `ROOMS` with its room; `None` (logged or counted)
/// for one outside the room subjects or without a valid event.
pub(super) fn stored_item(
    message: &jetstream::Message,
    seq: u64,
    counters: &Counters,
) -> Option<TailItem> {
    let room = match room_from_subject(message.subject.as_str()) {
        Ok(room) => room,
        Err(error) => {
            tracing::warn!(%error, seq, "skipping a stored message outside the room subjects");
            return None;
        }
    };
    let msg = decode(
        &room,
        message.headers.as_ref(),
        &message.payload,
        Some(seq),
        counters,
    )?;
    Some(TailItem { room, msg })
}

fn is_json_array(s: &str) -> bool {
    s.trim_start().starts_with('[') && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::subjects::HEADER_SEQUENCE;

    #[test]
    fn event_names_must_survive_a_header() {
        assert!(check_event_name("message:new").is_ok());
        assert!(check_event_name("réaction ✓").is_ok());
        for bad in ["", " x", "x ", "a\r\nb", "a\u{0}b"] {
            assert!(
                matches!(check_event_name(bad), Err(BusError::Rejected(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn builds_outgoing_headers() {
        let msg = BusMessage::new("message:new", &serde_json::json!(1))
            .with_msg_id("m-1")
            .with_headers(vec![
                (HEADER_TRACEPARENT.into(), "00-abc-def-01".into()),
                ("Confab-Event".into(), "spoofed".into()),
                ("Nats-Sequence".into(), "999".into()),
                ("nats-msg-id".into(), "spoofed".into()),
                ("Nats-Expected-Last-Subject-Sequence".into(), "4".into()),
                ("x-a".into(), "1".into()),
            ]);
        let h = outgoing_headers(&msg).unwrap();
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(get(HEADER_EVENT).as_deref(), Some("message:new"));
        assert_eq!(get(HEADER_MSG_ID).as_deref(), Some("m-1"));
        assert_eq!(get(HEADER_TRACEPARENT).as_deref(), Some("00-abc-def-01"));
        assert_eq!(
            get("Nats-Expected-Last-Subject-Sequence").as_deref(),
            Some("4")
        );
        assert_eq!(get("x-a").as_deref(), Some("1"));
        assert_eq!(get(HEADER_SEQUENCE), None);
        assert_eq!(get("nats-msg-id"), None);
        assert_eq!(h.len(), 5);

        let plain = outgoing_headers(&BusMessage::new("e", &serde_json::json!(1))).unwrap();
        assert_eq!(
            plain.len(),
            1,
            "no msg id, no trace context: only the event"
        );
    }

    #[test]
    fn decodes_headers_and_body() {
        let counters = Counters::default();
        let room = RoomId::parse("channel:1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(HEADER_EVENT, "message:new");
        h.insert(HEADER_SEQUENCE, "7");
        h.insert(HEADER_MSG_ID, "m1");
        h.insert(
            HEADER_TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let body = Bytes::from_static(br#"[{"id":"m1"}]"#);
        let m = decode(&room, Some(&h), &body, Some(7), &counters).unwrap();
        assert_eq!(&*m.event, "message:new");
        assert_eq!(&*m.args_json, r#"[{"id":"m1"}]"#);
        assert_eq!(m.seq, Some(7));
        assert_eq!(m.msg_id.as_deref(), Some("m1"));
        assert!(!m.volatile);
        assert!(m.header(HEADER_TRACEPARENT).is_some());
        assert!(
            m.header(HEADER_SEQUENCE).is_none(),
            "Nats-* headers are not kept"
        );
        assert!(m.header(HEADER_EVENT).is_none());

        assert!(decode(&room, None, &body, None, &counters).is_none());
        assert!(
            decode(
                &room,
                Some(&h),
                &Bytes::from_static(b"\xff["),
                None,
                &counters
            )
            .is_none()
        );
        assert!(decode(&room, Some(&h), &Bytes::from_static(b"{}"), None, &counters).is_none());
        assert!(decode(&room, Some(&h), &Bytes::from_static(b"[1"), None, &counters).is_none());
        assert_eq!(counters.missing_event.load(Ordering::Relaxed), 1);
        assert_eq!(counters.invalid_payload.load(Ordering::Relaxed), 3);
        let v = decode(&room, Some(&h), &Bytes::from_static(b"[]"), None, &counters).unwrap();
        assert!(v.volatile && v.seq.is_none());
    }
}
