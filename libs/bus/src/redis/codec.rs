//! [`BusMessage`] to the bytes Redis keeps and publishes, and back.
//!
//! A message is stored (stream field `b`) and published as one JSON object
//! `{"e": event, "a": args_json, "h": [[name, value]…], "m": msg_id}`.
//! A live payload is a first line, `{seq} {prev}` for a stored message
//! (`prev` is the room's previous sequence, 0 for none) or `v` for a
//! volatile one, then `\n` and the body.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{BusError, BusMessage};

/// The longest de-duplication id accepted (it becomes part of a key).
const MAX_MSG_ID: usize = 512;

#[derive(Serialize, Deserialize)]
struct Body {
    e: String,
    a: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    h: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
}

/// Checks what a publish carries before anything is written.
pub(super) fn validate(msg: &BusMessage) -> Result<(), BusError> {
    let event = &*msg.event;
    if event.is_empty() || event.chars().any(char::is_control) {
        return Err(BusError::Rejected(format!(
            "event name {event:?} must be non-empty without control characters"
        )));
    }
    if serde_json::from_str::<Vec<serde::de::IgnoredAny>>(&msg.args_json).is_err() {
        return Err(BusError::Rejected(format!(
            "the arguments of {event:?} must be a JSON array"
        )));
    }
    if let Some(id) = msg.msg_id.as_deref()
        && (id.is_empty() || id.len() > MAX_MSG_ID || id.chars().any(char::is_control))
    {
        return Err(BusError::Rejected(format!(
            "msg_id must be 1 to {MAX_MSG_ID} bytes without control characters"
        )));
    }
    Ok(())
}

/// The stored (and published) body of `msg`.
pub(super) fn encode(msg: &BusMessage) -> String {
    let body = Body {
        e: msg.event.to_string(),
        a: msg.args_json.to_string(),
        h: msg.headers.to_vec(),
        m: msg.msg_id.as_deref().map(str::to_owned),
    };
    serde_json::to_string(&body).expect("strings and pairs always serialize")
}

/// A stored body back to a message with sequence `seq` (`None` for a
/// volatile one); `None` when it is not one of ours.
pub(super) fn decode(body: &[u8], seq: Option<u64>) -> Option<BusMessage> {
    let body: Body = serde_json::from_slice(body).ok()?;
    Some(BusMessage {
        event: body.e.into(),
        args_json: body.a.into(),
        seq,
        headers: Arc::from(body.h),
        msg_id: body.m.map(Into::into),
        volatile: seq.is_none(),
    })
}

/// A live payload for a volatile message.
pub(super) fn volatile_payload(msg: &BusMessage) -> String {
    format!("v\n{}", encode(msg))
}

/// A live message as received.
#[derive(Debug, Clone)]
pub(super) enum Live {
    /// A stored message with the room's previous sequence (0: none).
    Stored { prev: u64, msg: BusMessage },
    /// A volatile message.
    Volatile(BusMessage),
}

/// Parses a live payload; `None` when it is not one of ours.
pub(super) fn decode_live(payload: &[u8]) -> Option<Live> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let (head, body) = (
        std::str::from_utf8(&payload[..split]).ok()?,
        &payload[split + 1..],
    );
    if head == "v" {
        return decode(body, None).map(Live::Volatile);
    }
    let (seq, prev) = head.split_once(' ')?;
    let (seq, prev) = (seq.parse().ok()?, prev.parse().ok()?);
    Some(Live::Stored {
        prev,
        msg: decode(body, Some(seq))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msg = BusMessage::new("message:new", &serde_json::json!({"x": "a\nb"}))
            .with_msg_id("m1")
            .with_headers(vec![("traceparent".into(), "00-x".into())]);
        let back = decode(encode(&msg).as_bytes(), Some(4)).unwrap();
        assert_eq!(
            (
                &*back.event,
                &*back.args_json,
                back.seq,
                back.msg_id.as_deref()
            ),
            ("message:new", &*msg.args_json, Some(4), Some("m1"))
        );
        assert_eq!(back.header("traceparent"), Some("00-x"));
        let live = format!("7 3\n{}", encode(&msg));
        assert!(matches!(
            decode_live(live.as_bytes()),
            Some(Live::Stored { prev: 3, msg }) if msg.seq == Some(7)
        ));
        assert!(matches!(
            decode_live(volatile_payload(&msg).as_bytes()),
            Some(Live::Volatile(m)) if m.volatile && m.seq.is_none()
        ));
        assert!(decode_live(b"garbage").is_none());
    }

    #[test]
    fn validation() {
        assert!(validate(&BusMessage::from_args_json("a", "[1]".into())).is_ok());
        assert!(validate(&BusMessage::from_args_json("", "[]".into())).is_err());
        assert!(validate(&BusMessage::from_args_json("a", "{}".into())).is_err());
        let id = BusMessage::from_args_json("a", "[]".into()).with_msg_id("");
        assert!(validate(&id).is_err());
    }
}
