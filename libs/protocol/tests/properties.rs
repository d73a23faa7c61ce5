//! Property tests: decoders never panic on arbitrary input, and encoding
//! then decoding gives back the packet.

use bytes::Bytes;
use confab_protocol::DecodeError;
use confab_protocol::engineio;
use confab_protocol::socketio::{
    Decoder, Packet, PacketType, RESERVED_EVENTS, event_frame, placeholder,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Arbitrary JSON. Floats are dyadic fractions so that their text form
/// parses back to the same value.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|i| Value::from(f64::from(i) / 8.0)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((any::<String>(), json()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// Namespaces that decode back: `/`, or `/` and no `,` nor control chars.
fn nsp() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[^,\\p{Cc}]{0,12}"]
}

fn event_name() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("reserved", |s| !RESERVED_EVENTS.contains(&s.as_str()))
}

fn attachments() -> impl Strategy<Value = Vec<Bytes>> {
    prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from),
        0..5,
    )
}

/// Args with one placeholder per attachment, each at a random position.
fn args_with_placeholders() -> impl Strategy<Value = (Vec<Value>, Vec<Bytes>)> {
    (
        prop::collection::vec(json(), 0..5),
        attachments(),
        any::<u64>(),
    )
        .prop_map(|(mut args, atts, seed)| {
            for i in 0..atts.len() {
                let at = (seed as usize).wrapping_add(i * 7) % (args.len() + 1);
                args.insert(at, placeholder(i));
            }
            (args, atts)
        })
}

/// Encodes as a WebSocket frame, goes through the Engine.IO decoder, then
/// through a fresh Socket.IO decoder.
fn through_the_wire(p: &Packet) -> Packet {
    let (frame, bins) = p.encode_frame();
    let (body, bins2) = p.encode();
    assert_eq!(frame, format!("4{body}"));
    assert_eq!(bins, bins2);
    let engineio::Packet::Message(message) = engineio::Packet::decode_text(&frame).unwrap() else {
        panic!("not a message: {frame}");
    };
    let mut d = Decoder::new(8);
    let mut out = d
        .push_text(&message)
        .unwrap_or_else(|e| panic!("{frame}: {e}"));
    for b in bins {
        assert!(out.is_none());
        assert!(d.is_awaiting_attachments());
        let binary = engineio::Packet::decode_binary(b);
        let engineio::Packet::Binary(b) = binary else {
            unreachable!()
        };
        out = d.push_binary(b).unwrap();
    }
    assert!(!d.is_awaiting_attachments());
    out.expect("complete packet")
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Text that looks like Socket.IO packets, to get past the first checks.
fn packetish() -> impl Strategy<Value = String> {
    "[0-7]?[0-9]{0,3}-?(/[a-z,/]{0,5})?,?[0-9]{0,22}[\\[\\]{}\",:0-9a-z_ ]{0,24}"
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        packetish().prop_map(Frame::Text),
        any::<String>().prop_map(Frame::Text),
        r#"5[0-3]-\["e"(,\{"_placeholder":true,"num":[0-3]\}){0,3}\]"#.prop_map(Frame::Text),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Frame::Binary),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn engineio_text_never_panics(s in any::<String>()) {
        let _ = engineio::Packet::decode_text(&s);
        let _ = engineio::decode_payload(&s);
        let _ = engineio::parse_handshake(Some(&s));
    }

    #[test]
    fn engineio_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
        let text = String::from_utf8_lossy(&b);
        let _ = engineio::Packet::decode_text(&text);
        prop_assert_eq!(
            engineio::Packet::decode_binary(Bytes::from(b.clone())),
            engineio::Packet::Binary(Bytes::from(b))
        );
    }

    #[test]
    fn socketio_text_never_panics(s in any::<String>(), p in packetish()) {
        let _ = Decoder::new(4).push_text(&s);
        let _ = Decoder::new(4).push_text(&p);
        let _ = Decoder::new(usize::MAX).push_text(&p);
    }

    #[test]
    fn decoder_state_machine(frames in prop::collection::vec(frame(), 0..24)) {
        let mut d = Decoder::new(3);
        for f in frames {
            let was_awaiting = d.is_awaiting_attachments();
            match f {
                Frame::Text(t) => {
                    let r = d.push_text(&t);
                    if was_awaiting {
                        prop_assert_eq!(r, Err(DecodeError::AwaitingAttachments));
                        prop_assert!(d.is_awaiting_attachments());
                    } else if let Ok(Some(p)) = r {
                        prop_assert!(!d.is_awaiting_attachments());
                        if p.kind.is_binary() {
                            prop_assert!(p.attachments.is_empty());
                        }
                    } else if r.is_err() {
                        prop_assert!(!d.is_awaiting_attachments());
                    }
                }
                Frame::Binary(b) => {
                    let r = d.push_binary(Bytes::from(b));
                    if !was_awaiting {
                        prop_assert_eq!(r, Err(DecodeError::UnexpectedBinary));
                    } else if let Ok(Some(p)) = r {
                        prop_assert!(p.kind.is_binary());
                        prop_assert!(!p.attachments.is_empty());
                        prop_assert!(!d.is_awaiting_attachments());
                    } else {
                        prop_assert_eq!(r, Ok(None));
                        prop_assert!(d.is_awaiting_attachments());
                    }
                }
            }
        }
    }

    #[test]
    fn events_round_trip(
        nsp in nsp(),
        name in event_name(),
        (args, atts) in args_with_placeholders(),
        id in any::<Option<u64>>(),
    ) {
        let p = Packet::event(&nsp, &name, args.clone(), id).with_attachments(atts.clone());
        let expected_kind = if atts.is_empty() { PacketType::Event } else { PacketType::BinaryEvent };
        prop_assert_eq!(p.kind, expected_kind);
        let back = through_the_wire(&p);
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.event_name(), Some(name.as_str()));
        prop_assert_eq!(back.args(), &args[..]);
        prop_assert_eq!(back.attachments, atts);
    }

    #[test]
    fn numeric_event_names_round_trip(nsp in nsp(), name in any::<i64>(), args in prop::collection::vec(json(), 0..4)) {
        let mut items = vec![Value::from(name)];
        items.extend(args);
        let p = Packet { kind: PacketType::Event, nsp, id: None, data: Some(Value::Array(items)), attachments: vec![] };
        prop_assert_eq!(through_the_wire(&p), p);
    }

    #[test]
    fn acks_round_trip(nsp in nsp(), id in any::<u64>(), (args, atts) in args_with_placeholders()) {
        let p = Packet::ack(&nsp, id, args).with_attachments(atts.clone());
        let expected_kind = if atts.is_empty() { PacketType::Ack } else { PacketType::BinaryAck };
        prop_assert_eq!(p.kind, expected_kind);
        prop_assert_eq!(through_the_wire(&p), p);
    }

    #[test]
    fn other_packets_round_trip(nsp in nsp(), auth in prop::option::of(object()), message in any::<String>(), err_data in object()) {
        let connect = Packet::connect(&nsp, auth);
        prop_assert_eq!(through_the_wire(&connect), connect);
        let disconnect = Packet::disconnect(&nsp);
        prop_assert_eq!(through_the_wire(&disconnect), disconnect);
        let refused = Packet::connect_error(&nsp, &message);
        prop_assert_eq!(through_the_wire(&refused), refused);
        let refused = Packet { data: Some(err_data), ..Packet::connect_error(&nsp, "") };
        prop_assert_eq!(through_the_wire(&refused), refused);
        let refused = Packet { data: Some(Value::String(message)), ..Packet::connect_error(&nsp, "") };
        prop_assert_eq!(through_the_wire(&refused), refused);
    }

    #[test]
    fn event_frame_matches_encode_frame(
        nsp in prop_oneof![Just(String::new()), nsp()],
        name in any::<String>(),
        args in prop::collection::vec(json(), 0..5),
    ) {
        let args_json = serde_json::to_string(&Value::Array(args.clone())).unwrap();
        let fast = event_frame(&nsp, &name, &args_json);
        let (slow, bins) = Packet::event(&nsp, &name, args, None).encode_frame();
        prop_assert!(bins.is_empty());
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn engineio_packets_round_trip(
        text in any::<String>(),
        probe in prop::option::of("[a-z]{1,8}"),
        bin in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let packets = vec![
            engineio::Packet::Message(text),
            engineio::Packet::Ping(probe.clone()),
            engineio::Packet::Pong(probe),
            engineio::Packet::Close,
            engineio::Packet::Upgrade,
            engineio::Packet::Noop,
        ];
        for p in &packets {
            let t = p.encode_text().unwrap();
            prop_assert_eq!(&engineio::Packet::decode_text(&t).unwrap(), p);
        }
        let mut all = packets;
        all.push(engineio::Packet::Binary(Bytes::from(bin)));
        // A message containing the separator cannot travel in a payload.
        if !matches!(&all[0], engineio::Packet::Message(m) if m.contains(engineio::PAYLOAD_SEPARATOR)) {
            let payload = engineio::encode_payload(&all);
            prop_assert_eq!(engineio::decode_payload(&payload).unwrap(), all);
        }
    }
}
