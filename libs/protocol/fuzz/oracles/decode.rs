//! The oracle of the `decode` fuzz target: feeds arbitrary bytes through
//! every decoder of confab-protocol. Shared with the regression test
//! `libs/protocol/tests/fuzz_regressions.rs`, which replays the kept corpus.
//!
//! 1. The whole input, as one frame: Engine.IO text (lossy UTF-8) and
//!    binary decode, polling payload, handshake query, Socket.IO text.
//! 2. A session: the input split on 0xFF into frames; a frame whose first
//!    byte is even is a WebSocket text frame (its rest, lossy UTF-8), else a
//!    binary frame (its rest). Frames go through the Engine.IO decoder and
//!    then a Socket.IO `Decoder`, as the gateway does.
//!
//! Oracles: no panic; the decoder's state answers as documented; every
//! decoded packet re-encodes to text that decodes to the same packet (floats
//! within rounding); `event_frame` agrees with `encode_frame`.

use bytes::Bytes;
use confab_protocol::socketio::{self, Decoder, PacketType};
use confab_protocol::{DecodeError, engineio};
use serde_json::Value;

const MAX_ATTACHMENTS: usize = 4;

/// Runs every oracle on one input; panics on a violation.
pub fn check(data: &[u8]) {
    one_shot(data);
    session(data);
}

fn one_shot(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = engineio::Packet::decode_text(&text);
    let _ = engineio::decode_payload(&text);
    let _ = engineio::parse_handshake(Some(&text));
    let bin = engineio::Packet::decode_binary(Bytes::copy_from_slice(data));
    assert!(matches!(bin, engineio::Packet::Binary(b) if b == data));
    if let Ok(Some(p)) = Decoder::new(MAX_ATTACHMENTS).push_text(&text) {
        check_packet(&p);
    }
}

fn session(data: &[u8]) {
    let mut decoder = Decoder::new(MAX_ATTACHMENTS);
    for frame in data.split(|&b| b == 0xFF) {
        let Some((&head, rest)) = frame.split_first() else {
            continue;
        };
        let was_awaiting = decoder.is_awaiting_attachments();
        let decoded = if head % 2 == 0 {
            match engineio::Packet::decode_text(&String::from_utf8_lossy(rest)) {
                Ok(engineio::Packet::Message(body)) => {
                    let r = decoder.push_text(&body);
                    if was_awaiting {
                        assert_eq!(r, Err(DecodeError::AwaitingAttachments));
                    }
                    r
                }
                Ok(engineio::Packet::Binary(b)) => decoder.push_binary(b),
                Ok(other) => {
                    if let Some(t) = other.encode_text() {
                        assert_eq!(engineio::Packet::decode_text(&t).ok(), Some(other));
                    }
                    continue;
                }
                Err(_) => continue,
            }
        } else {
            let engineio::Packet::Binary(b) =
                engineio::Packet::decode_binary(Bytes::copy_from_slice(rest))
            else {
                unreachable!("binary frames are binary messages");
            };
            let r = decoder.push_binary(b);
            if !was_awaiting {
                assert_eq!(r, Err(DecodeError::UnexpectedBinary));
            }
            r
        };
        if let Ok(Some(p)) = decoded {
            assert!(!decoder.is_awaiting_attachments());
            check_packet(&p);
        }
    }
}

/// Re-encodes a decoded packet and checks it decodes back the same.
fn check_packet(p: &socketio::Packet) {
    let (text, bins) = p.encode();
    let (frame, frame_bins) = p.encode_frame();
    assert_eq!(frame, format!("4{text}"));
    assert_eq!(bins, frame_bins);
    assert_eq!(
        bins.len(),
        if p.kind.is_binary() {
            p.attachments.len()
        } else {
            0
        }
    );

    let mut d = Decoder::new(MAX_ATTACHMENTS);
    let mut again = d
        .push_text(&text)
        .unwrap_or_else(|e| panic!("re-encoded {text:?} fails: {e}"));
    for b in bins {
        assert!(again.is_none());
        again = d.push_binary(b).expect("attachment");
    }
    let again = again.expect("complete packet");
    assert_eq!(again.kind, p.kind);
    assert_eq!(again.nsp, p.nsp);
    assert_eq!(again.id, p.id);
    assert_eq!(again.attachments, p.attachments);
    match (&again.data, &p.data) {
        (Some(a), Some(b)) => assert!(same_json(a, b), "{a} != {b}"),
        (None, None) => {}
        (a, b) => panic!("data {a:?} != {b:?}"),
    }

    if p.kind == PacketType::Event
        && p.id.is_none()
        && let Some(name) = p.event_name()
    {
        let args = serde_json::to_string(&Value::Array(p.args().to_vec())).expect("serialize");
        assert_eq!(socketio::event_frame(&p.nsp, name, &args), frame);
    }
}

/// JSON equality where floats may differ by parsing rounding.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}
