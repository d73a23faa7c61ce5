//! Socket.IO v5 packets: the official test-suite vectors, every packet type
//! in both directions, malformed input and binary reassembly.

use bytes::Bytes;
use confab_protocol::DecodeError;
use confab_protocol::engineio;
use confab_protocol::socketio::{
    Decoder, Packet, PacketType, RESERVED_EVENTS, event_frame, event_frame_with_offset,
    placeholder, replace_offset,
};
use serde_json::{Value, json};

const MAX: usize = 10;

/// Decodes a complete non-binary packet.
fn decode(text: &str) -> Result<Packet, DecodeError> {
    let mut d = Decoder::new(MAX);
    let p = d.push_text(text)?;
    assert!(!d.is_awaiting_attachments(), "{text} awaits attachments");
    Ok(p.expect("complete packet"))
}

/// Decodes a text packet plus its binary frames.
fn decode_binary(text: &str, frames: &[&'static [u8]]) -> Packet {
    let mut d = Decoder::new(MAX);
    assert_eq!(d.push_text(text).unwrap(), None);
    let (last, init) = frames.split_last().unwrap();
    for f in init {
        assert!(d.is_awaiting_attachments());
        assert_eq!(d.push_binary(Bytes::from_static(f)).unwrap(), None);
    }
    let p = d.push_binary(Bytes::from_static(last)).unwrap().unwrap();
    assert!(!d.is_awaiting_attachments());
    p
}

fn packet(kind: PacketType, nsp: &str, id: Option<u64>, data: Option<Value>) -> Packet {
    Packet {
        kind,
        nsp: nsp.into(),
        id,
        data,
        attachments: vec![],
    }
}

fn round_trip(text: &str, expected: &Packet) {
    let decoded = decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(&decoded, expected, "{text}");
    let (encoded, bins) = expected.encode();
    assert!(bins.is_empty());
    assert_eq!(decode(&encoded).unwrap(), decoded, "{text} -> {encoded}");
}

// ---- The official Socket.IO v5 test-suite vectors --------------------------

#[test]
fn vector_connect_main_namespace() {
    let p = decode("0").unwrap();
    assert_eq!(p, packet(PacketType::Connect, "/", None, None));
    assert_eq!(p, Packet::connect("/", None));
    assert_eq!(p.encode().0, "0");
    assert_eq!(p.encode_frame().0, "40");
}

#[test]
fn vector_connect_with_auth() {
    let p = decode(r#"0{"token":"123"}"#).unwrap();
    assert_eq!(p, Packet::connect("/", Some(json!({"token": "123"}))));
    assert_eq!(p.encode_frame().0, r#"40{"token":"123"}"#);
}

#[test]
fn vector_connect_custom_namespace_with_and_without_comma() {
    let expected = Packet::connect("/custom", None);
    assert_eq!(decode("0/custom,").unwrap(), expected);
    assert_eq!(decode("0/custom").unwrap(), expected);
    assert_eq!(expected.encode_frame().0, "40/custom,");
}

#[test]
fn vector_connect_custom_namespace_with_auth() {
    let p = decode(r#"0/custom,{"token":"abc"}"#).unwrap();
    assert_eq!(p, Packet::connect("/custom", Some(json!({"token": "abc"}))));
    assert_eq!(p.encode_frame().0, r#"40/custom,{"token":"abc"}"#);
}

#[test]
fn vector_connect_error_random_namespace() {
    let p = decode(r#"4/random,{"message":"Invalid namespace"}"#).unwrap();
    assert_eq!(p, Packet::connect_error("/random", "Invalid namespace"));
    assert_eq!(
        p.encode_frame().0,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
}

#[test]
fn vector_disconnect() {
    assert_eq!(decode("1").unwrap(), Packet::disconnect("/"));
    assert_eq!(decode("1/custom").unwrap(), Packet::disconnect("/custom"));
    assert_eq!(decode("1/custom,").unwrap(), Packet::disconnect("/custom"));
    assert_eq!(Packet::disconnect("/").encode_frame().0, "41");
    assert_eq!(Packet::disconnect("/custom").encode_frame().0, "41/custom,");
}

#[test]
fn vector_event() {
    let p = decode(r#"2["message",1,"2",{"3":[true]}]"#).unwrap();
    assert_eq!(
        p,
        Packet::event(
            "/",
            "message",
            vec![json!(1), json!("2"), json!({"3": [true]})],
            None
        )
    );
    assert_eq!(p.event_name(), Some("message"));
    assert_eq!(p.args(), &[json!(1), json!("2"), json!({"3": [true]})]);
    assert_eq!(p.encode_frame().0, r#"42["message",1,"2",{"3":[true]}]"#);
}

#[test]
fn vector_event_with_ack_and_its_answer() {
    let p = decode(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).unwrap();
    assert_eq!(p.kind, PacketType::Event);
    assert_eq!(p.id, Some(456));
    assert_eq!(p.event_name(), Some("message-with-ack"));
    assert_eq!(
        p.encode_frame().0,
        r#"42456["message-with-ack",1,"2",{"3":[false]}]"#
    );
    let ack = Packet::ack(&p.nsp, p.id.unwrap(), p.args().to_vec());
    assert_eq!(
        ack.encode_frame(),
        (r#"43456[1,"2",{"3":[false]}]"#.into(), vec![])
    );
    let back = decode(r#"3456[1,"2",{"3":[false]}]"#).unwrap();
    assert_eq!(back, ack);
    assert_eq!(back.args(), &[json!(1), json!("2"), json!({"3": [false]})]);
    assert_eq!(back.event_name(), None);
}

#[test]
fn vector_binary_event() {
    let text = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let p = decode_binary(text, &[&[1, 2, 3], &[4, 5, 6]]);
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert_eq!(p.nsp, "/");
    assert_eq!(p.id, None);
    assert_eq!(p.event_name(), Some("message"));
    assert_eq!(p.args(), &[placeholder(0), placeholder(1)]);
    assert_eq!(
        p.attachments,
        vec![
            Bytes::from_static(&[1, 2, 3]),
            Bytes::from_static(&[4, 5, 6])
        ]
    );
    let built = Packet::event("/", "message", vec![placeholder(0), placeholder(1)], None)
        .with_attachments(p.attachments.clone());
    assert_eq!(built, p);
    let (frame, bins) = built.encode_frame();
    assert_eq!(frame, format!("4{text}"));
    assert_eq!(bins, p.attachments);
}

#[test]
fn vector_binary_event_with_ack_and_binary_ack() {
    let text =
        r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let p = decode_binary(text, &[b"a", b"b"]);
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert_eq!(p.id, Some(789));
    assert_eq!(p.event_name(), Some("message-with-ack"));
    let ack = Packet::ack("/", 789, p.args().to_vec()).with_attachments(p.attachments.clone());
    assert_eq!(ack.kind, PacketType::BinaryAck);
    let (frame, bins) = ack.encode_frame();
    assert_eq!(
        frame,
        r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(
        bins,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
    let back = decode_binary(&frame[1..], &[b"a", b"b"]);
    assert_eq!(back, ack);
}

#[test]
fn vector_invalid_packets() {
    assert!(matches!(
        decode("abc"),
        Err(DecodeError::UnknownPacketType('a'))
    ));
    assert!(matches!(decode("2{}"), Err(DecodeError::InvalidPayload(_))));
    assert!(matches!(
        decode(r#"2abc["message-with-ack",1]"#),
        Err(DecodeError::InvalidJson(_))
    ));
}

#[test]
fn vector_invalid_packets_as_full_frames() {
    // The same vectors as the client sends them: through Engine.IO first.
    for frame in ["4abc", "42{}", r#"42abc["message-with-ack",1]"#] {
        let engineio::Packet::Message(body) = engineio::Packet::decode_text(frame).unwrap() else {
            panic!("{frame} is an Engine.IO message");
        };
        assert!(Decoder::new(MAX).push_text(&body).is_err(), "{frame}");
    }
}

#[test]
fn server_connect_reply() {
    let p = Packet::connect("/", Some(json!({"sid": "oSO0OpakMV_3jnilAAAA"})));
    assert_eq!(p.encode_frame().0, r#"40{"sid":"oSO0OpakMV_3jnilAAAA"}"#);
    let p = Packet::connect("/admin", Some(json!({"sid": "x"})));
    assert_eq!(p.encode_frame().0, r#"40/admin,{"sid":"x"}"#);
    assert_eq!(decode(r#"0/admin,{"sid":"x"}"#).unwrap(), p);
}

// ---- Every packet type in both directions ------------------------------------

#[test]
fn all_types_round_trip() {
    let cases: Vec<(&str, Packet)> = vec![
        ("0", Packet::connect("/", None)),
        ("0{}", Packet::connect("/", Some(json!({})))),
        (
            "0/a,{\"x\":[1]}",
            Packet::connect("/a", Some(json!({"x": [1]}))),
        ),
        ("1", Packet::disconnect("/")),
        ("1/a/b,", Packet::disconnect("/a/b")),
        ("2[\"x\"]", Packet::event("/", "x", vec![], None)),
        (
            "2[7,\"a\"]",
            packet(PacketType::Event, "/", None, Some(json!([7, "a"]))),
        ),
        (
            "2/n,0[\"x\",null]",
            Packet::event("/n", "x", vec![Value::Null], Some(0)),
        ),
        (
            "2/n,18446744073709551615[\"x\"]",
            Packet::event("/n", "x", vec![], Some(u64::MAX)),
        ),
        ("30[]", Packet::ack("/", 0, vec![])),
        (
            "3/n,12[\"r\",{}]",
            Packet::ack("/n", 12, vec![json!("r"), json!({})]),
        ),
        ("4{\"message\":\"no\"}", Packet::connect_error("/", "no")),
        (
            "4\"plain string\"",
            packet(
                PacketType::ConnectError,
                "/",
                None,
                Some(json!("plain string")),
            ),
        ),
        (
            "4/x,{\"message\":\"m\",\"data\":{\"code\":1}}",
            packet(
                PacketType::ConnectError,
                "/x",
                None,
                Some(json!({"message": "m", "data": {"code": 1}})),
            ),
        ),
    ];
    for (text, expected) in &cases {
        round_trip(text, expected);
    }
}

#[test]
fn binary_with_namespace_round_trip() {
    let text = r#"51-/bin,3["up",{"_placeholder":true,"num":0}]"#;
    let p = decode_binary(text, &[b"payload"]);
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert_eq!(p.nsp, "/bin");
    assert_eq!(p.id, Some(3));
    assert_eq!(p.encode().0, text);
    assert_eq!(p.encode().1, vec![Bytes::from_static(b"payload")]);

    let ack = r#"61-/bin,3[{"deep":[{"_placeholder":true,"num":0}]}]"#;
    let p = decode_binary(ack, &[b""]);
    assert_eq!(p.kind, PacketType::BinaryAck);
    assert_eq!(p.encode().0, ack);
    assert_eq!(p.attachments, vec![Bytes::new()]);
}

#[test]
fn binary_packet_with_zero_attachments_is_immediate() {
    let p = decode(r#"50-["x"]"#).unwrap();
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert!(p.attachments.is_empty());
    assert_eq!(p.encode().0, r#"50-["x"]"#);
    let p = decode(r#"60-1[]"#).unwrap();
    assert_eq!(p.kind, PacketType::BinaryAck);
    assert_eq!(p.id, Some(1));
}

#[test]
fn leading_zeros_are_accepted() {
    let p = decode(r#"2007["x"]"#).unwrap();
    assert_eq!(p.id, Some(7));
    let mut d = Decoder::new(MAX);
    assert_eq!(
        d.push_text(r#"5001-["x",{"_placeholder":true,"num":0}]"#),
        Ok(None)
    );
    assert!(d.push_binary(Bytes::new()).unwrap().is_some());
}

#[test]
fn unicode_everywhere() {
    let p = Packet::event(
        "/ñs",
        "é✓",
        vec![json!("日本語"), json!({"k€y": "\u{0}"})],
        Some(5),
    );
    let (text, _) = p.encode();
    assert_eq!(decode(&text).unwrap(), p);
    let (frame, _) = p.encode_frame();
    assert_eq!(frame, format!("4{text}"));
}

// ---- Constructors and helpers --------------------------------------------------

#[test]
fn constructors() {
    assert_eq!(
        Packet::connect_error("/", "nope").data,
        Some(json!({"message": "nope"}))
    );
    let e = Packet::event("/", "e", vec![json!(1)], Some(4));
    assert_eq!(e.kind, PacketType::Event);
    assert_eq!(e.id, Some(4));
    assert_eq!(e.data, Some(json!(["e", 1])));
    let a = Packet::ack("/", 9, vec![]);
    assert_eq!(
        (a.kind, a.id, a.data),
        (PacketType::Ack, Some(9), Some(json!([])))
    );
    assert_eq!(
        Packet::event("/", "e", vec![], None)
            .with_attachments(vec![])
            .kind,
        PacketType::Event
    );
    assert_eq!(
        Packet::ack("/", 1, vec![])
            .with_attachments(vec![Bytes::new()])
            .kind,
        PacketType::BinaryAck
    );
    // Attachments only promote events and acks.
    let c = Packet::connect("/", None).with_attachments(vec![Bytes::new()]);
    assert_eq!(c.kind, PacketType::Connect);
    assert_eq!(c.encode(), ("0".to_owned(), vec![]));
}

#[test]
fn encode_promotes_event_with_attachments_set_directly() {
    let mut p = Packet::event("/", "e", vec![placeholder(0)], None);
    p.attachments.push(Bytes::from_static(b"z"));
    assert_eq!(p.kind, PacketType::Event);
    let (text, bins) = p.encode();
    assert_eq!(text, r#"51-["e",{"_placeholder":true,"num":0}]"#);
    assert_eq!(bins.len(), 1);
}

#[test]
fn event_name_and_args() {
    let numeric = decode("2[42,\"a\"]").unwrap();
    assert_eq!(numeric.event_name(), None);
    assert_eq!(numeric.args(), &[json!("a")]);
    assert_eq!(Packet::connect("/", Some(json!({}))).event_name(), None);
    assert!(Packet::connect("/", Some(json!({}))).args().is_empty());
    assert!(Packet::disconnect("/").args().is_empty());
    assert_eq!(
        Packet::event("/", "only", vec![], None).args(),
        &[] as &[Value]
    );
}

#[test]
fn placeholder_shape() {
    assert_eq!(placeholder(3), json!({"_placeholder": true, "num": 3}));
    assert_eq!(
        serde_json::to_string(&placeholder(0)).unwrap(),
        r#"{"_placeholder":true,"num":0}"#
    );
}

#[test]
fn packet_type_values() {
    use PacketType::*;
    let all = [
        Connect,
        Disconnect,
        Event,
        Ack,
        ConnectError,
        BinaryEvent,
        BinaryAck,
    ];
    for (i, t) in all.iter().enumerate() {
        assert_eq!(*t as u8 as usize, i);
        assert_eq!(PacketType::from_char(t.as_char()), Some(*t));
    }
    assert!(BinaryEvent.is_binary() && BinaryAck.is_binary() && !Event.is_binary());
    assert!(Event.is_event() && BinaryEvent.is_event() && !Ack.is_event());
    assert!(Ack.is_ack() && BinaryAck.is_ack() && !Connect.is_ack());
}

// ---- event_frame --------------------------------------------------------------

#[test]
fn event_frame_matches_encode_frame() {
    let cases: Vec<(&str, &str, Vec<Value>)> = vec![
        ("/", "message", vec![]),
        ("/", "message", vec![json!({"a": 1})]),
        (
            "/chat",
            "say \"hi\"\n",
            vec![json!(1), json!("two"), json!([null, true])],
        ),
        ("", "e", vec![json!("x")]),
        ("/ü", "日本", vec![json!({"z": 1, "a": [1.5, -2]})]),
    ];
    for (nsp, event, args) in cases {
        let args_json = serde_json::to_string(&Value::Array(args.clone())).unwrap();
        let expected = Packet::event(nsp, event, args, None).encode_frame().0;
        assert_eq!(event_frame(nsp, event, &args_json), expected);
    }
}

#[test]
fn event_frame_tolerates_loose_args() {
    assert_eq!(event_frame("/", "e", "[]"), r#"42["e"]"#);
    assert_eq!(event_frame("/", "e", " [ ] "), r#"42["e"]"#);
    assert_eq!(event_frame("/", "e", ""), r#"42["e"]"#);
    assert_eq!(event_frame("/", "e", "[1, 2]"), r#"42["e",1, 2]"#);
    // Not an array: sent as one argument.
    assert_eq!(
        event_frame("/n", "e", r#"{"a":1}"#),
        r#"42/n,["e",{"a":1}]"#
    );
    for text in [
        event_frame("/", "e", " [ ] "),
        event_frame("/", "e", "[1, 2]"),
        event_frame("/n", "e", r#"{"a":1}"#),
    ] {
        assert!(decode(&text[1..]).is_ok(), "{text}");
    }
}

#[test]
fn event_frame_with_offset_appends_the_offset_as_the_last_string_argument() {
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("/", vec![]),
        ("/", vec![json!({"id": "m1"})]),
        ("/chat", vec![json!(1), json!("two")]),
    ];
    for (nsp, args) in cases {
        let args_json = serde_json::to_string(&Value::Array(args.clone())).unwrap();
        let mut with_offset = args.clone();
        with_offset.push(json!("18446744073709551615"));
        let expected = Packet::event(nsp, "message:new", with_offset, None)
            .encode_frame()
            .0;
        assert_eq!(
            event_frame_with_offset(nsp, "message:new", &args_json, u64::MAX),
            expected
        );
    }
    assert_eq!(
        event_frame_with_offset("/", "e", " [ ] ", 7),
        r#"42["e","7"]"#
    );
    let frame = event_frame_with_offset("/", "e", r#"[{"a":"x,\"1\"]"}]"#, 7);
    assert_eq!(
        replace_offset(&frame, 12).as_deref(),
        Some(r#"42["e",{"a":"x,\"1\"]"},"12"]"#)
    );
    assert_eq!(replace_offset(r#"42["e","x"]"#, 3), None);
    assert_eq!(replace_offset(r#"42["e",1]"#, 3), None);
}

// ---- Malformed input -----------------------------------------------------------

#[test]
fn malformed_packets_return_the_right_error() {
    use DecodeError::*;
    let max = MAX;
    let cases: Vec<(&str, DecodeError)> = vec![
        ("", Empty),
        ("7", UnknownPacketType('7')),
        ("9[]", UnknownPacketType('9')),
        ("x", UnknownPacketType('x')),
        ("é", UnknownPacketType('é')),
        ("-1", UnknownPacketType('-')),
        // Attachment counts.
        ("5", InvalidAttachmentCount),
        ("5-[\"a\"]", InvalidAttachmentCount),
        ("51[\"a\"]", InvalidAttachmentCount),
        ("5a-[\"a\"]", InvalidAttachmentCount),
        ("6[]", InvalidAttachmentCount),
        ("511-[\"a\"]", TooManyAttachments { max }),
        (
            "599999999999999999999999999-[\"a\"]",
            TooManyAttachments { max },
        ),
        // Ack ids.
        ("218446744073709551616[\"x\"]", InvalidAckId),
        ("299999999999999999999999999[\"x\"]", InvalidAckId),
        ("3[]", MissingAckId),
        ("3/n,[]", MissingAckId),
        ("60-[]", MissingAckId),
        ("05", UnexpectedAckId),
        ("01{}", UnexpectedAckId),
        ("1/n,5", UnexpectedAckId),
        ("42{\"message\":\"x\"}", UnexpectedAckId),
        // Namespaces.
        ("0/a\nb,", InvalidNamespace),
        ("0/\u{7f}", InvalidNamespace),
        // Placeholders.
        (
            r#"51-["a",{"_placeholder":true,"num":1}]"#,
            InvalidPlaceholder,
        ),
        (
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            InvalidPlaceholder,
        ),
        (
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            InvalidPlaceholder,
        ),
        (r#"51-["a",{"_placeholder":true}]"#, InvalidPlaceholder),
        (
            r#"50-["a",{"_placeholder":true,"num":0}]"#,
            InvalidPlaceholder,
        ),
        (
            r#"61-1[{"x":[{"_placeholder":true,"num":0.5}]}]"#,
            InvalidPlaceholder,
        ),
    ];
    for (text, err) in cases {
        assert_eq!(
            Decoder::new(MAX).push_text(text),
            Err(err.clone()),
            "{text:?} should fail with {err}"
        );
    }
}

#[test]
fn invalid_payloads() {
    let cases = [
        // CONNECT: absent or object.
        "0[]",
        "0\"s\"",
        "0null",
        // DISCONNECT: absent.
        "1{}",
        "1/a,{}",
        "1\"bye\"",
        // EVENT: non-empty array, first element a string or number.
        "2{}",
        "2[]",
        "2\"x\"",
        "2[null]",
        "2[true]",
        "2[[\"x\"]]",
        "2[{\"x\":1}]",
        "21",
        "2/n,",
        // ACK: array.
        "31",
        "31{}",
        "31\"x\"",
        // CONNECT_ERROR: object or string.
        "4",
        "4/x,",
        "4[]",
        "41",
        // BINARY_EVENT.
        "50-{}",
        "50-[]",
        "50-[\"connect\"]",
        // BINARY_ACK.
        "60-1{}",
        "60-1",
    ];
    for text in cases {
        let r = Decoder::new(MAX).push_text(text);
        assert!(
            matches!(
                r,
                Err(DecodeError::InvalidPayload(_) | DecodeError::UnexpectedAckId)
            ),
            "{text:?}: {r:?}"
        );
    }
}

#[test]
fn reserved_event_names_are_refused() {
    for name in RESERVED_EVENTS {
        let text = format!("2[\"{name}\",1]");
        assert_eq!(
            decode(&text),
            Err(DecodeError::InvalidPayload("reserved event name")),
            "{text}"
        );
        let text = format!("2/n,5[\"{name}\"]");
        assert!(decode(&text).is_err(), "{text}");
    }
    // Near misses are fine.
    for name in ["Connect", "connected", "disconnect ", "message", ""] {
        assert!(decode(&format!("2[\"{name}\"]")).is_ok(), "{name}");
    }
}

#[test]
fn invalid_json() {
    for text in [
        "4abc",
        "0{",
        "0{\"a\":}",
        "2[\"x\",]",
        "2[\"x\"]junk",
        "2[\"x\"][\"y\"]",
        "2/n,abc[\"x\"]",
        "2abc[\"message-with-ack\",1]",
        "212abc[\"x\"]",
        "2 ",
        "3\u{0}",
        "2[\"\u{1}\"]",
        "2[NaN]",
        "0'{}'",
    ] {
        assert!(
            matches!(decode(text), Err(DecodeError::InvalidJson(_))),
            "{text:?}: {:?}",
            decode(text)
        );
    }
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(DecodeError::Empty.to_string(), "empty packet");
    assert_eq!(
        DecodeError::UnknownPacketType('9').to_string(),
        "unknown packet type '9'"
    );
    assert_eq!(
        DecodeError::TooManyAttachments { max: 3 }.to_string(),
        "too many attachments (at most 3)"
    );
    assert!(
        decode("2{}")
            .unwrap_err()
            .to_string()
            .starts_with("invalid payload: ")
    );
    assert!(
        decode("2x")
            .unwrap_err()
            .to_string()
            .starts_with("invalid JSON: ")
    );
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let deep = format!("2[\"e\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(decode(&deep), Err(DecodeError::InvalidJson(_))));
    let deep = format!(
        "51-[\"e\",{}{}]",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    assert!(matches!(
        Decoder::new(MAX).push_text(&deep),
        Err(DecodeError::InvalidJson(_))
    ));
}

// ---- Decoder state machine ------------------------------------------------------

#[test]
fn binary_frame_without_pending_packet() {
    let mut d = Decoder::new(MAX);
    assert_eq!(
        d.push_binary(Bytes::from_static(b"x")),
        Err(DecodeError::UnexpectedBinary)
    );
    assert_eq!(
        d.push_text("2[\"ok\"]").unwrap().unwrap().event_name(),
        Some("ok")
    );
    assert_eq!(
        d.push_binary(Bytes::new()),
        Err(DecodeError::UnexpectedBinary)
    );
}

#[test]
fn text_while_awaiting_attachments() {
    let mut d = Decoder::new(MAX);
    let text = r#"52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    assert_eq!(d.push_text(text), Ok(None));
    assert_eq!(d.push_binary(Bytes::from_static(b"1")), Ok(None));
    assert_eq!(
        d.push_text("2[\"x\"]"),
        Err(DecodeError::AwaitingAttachments)
    );
    // Still awaiting: the pending packet survives the error.
    assert!(d.is_awaiting_attachments());
    let p = d.push_binary(Bytes::from_static(b"2")).unwrap().unwrap();
    assert_eq!(p.attachments.len(), 2);
    assert_eq!(
        d.push_binary(Bytes::new()),
        Err(DecodeError::UnexpectedBinary)
    );
}

#[test]
fn reset_drops_pending_packet() {
    let mut d = Decoder::new(MAX);
    assert_eq!(
        d.push_text(r#"51-["m",{"_placeholder":true,"num":0}]"#),
        Ok(None)
    );
    d.reset();
    assert!(!d.is_awaiting_attachments());
    assert_eq!(
        d.push_binary(Bytes::new()),
        Err(DecodeError::UnexpectedBinary)
    );
    assert!(d.push_text("2[\"x\"]").unwrap().is_some());
}

#[test]
fn failed_text_leaves_decoder_usable() {
    let mut d = Decoder::new(MAX);
    assert!(d.push_text("2{}").is_err());
    assert!(d.push_text("599-[\"x\"]").is_err());
    assert!(!d.is_awaiting_attachments());
    assert!(d.push_text("2[\"x\"]").unwrap().is_some());
}

#[test]
fn attachment_limit_is_configurable() {
    let text = r#"53-["m",{"_placeholder":true,"num":0}]"#;
    assert_eq!(
        Decoder::new(2).push_text(text),
        Err(DecodeError::TooManyAttachments { max: 2 })
    );
    assert_eq!(Decoder::new(3).push_text(text), Ok(None));
    assert_eq!(
        Decoder::new(0).push_text(r#"51-["m"]"#),
        Err(DecodeError::TooManyAttachments { max: 0 })
    );
    assert!(Decoder::new(0).push_text(r#"50-["m"]"#).unwrap().is_some());
    let mut big = Decoder::new(usize::MAX);
    assert_eq!(big.push_text(&format!("5{}-[\"m\"]", usize::MAX)), Ok(None));
    assert!(big.is_awaiting_attachments());
}

#[test]
fn interleaved_sequence() {
    let mut d = Decoder::new(MAX);
    let mut out = Vec::new();
    let frames: Vec<Result<&str, &'static [u8]>> = vec![
        Ok("0"),
        Ok("2[\"a\"]"),
        Ok(r#"51-1["b",{"_placeholder":true,"num":0}]"#),
        Err(b"bin-b"),
        Ok("31[]"),
        Ok(r#"61-/x,2[{"_placeholder":true,"num":0}]"#),
        Err(b"bin-c"),
        Ok("1"),
    ];
    for f in frames {
        let r = match f {
            Ok(t) => d.push_text(t),
            Err(b) => d.push_binary(Bytes::from_static(b)),
        };
        if let Some(p) = r.unwrap() {
            out.push(p);
        }
    }
    let kinds: Vec<PacketType> = out.iter().map(|p| p.kind).collect();
    use PacketType::*;
    assert_eq!(
        kinds,
        [Connect, Event, BinaryEvent, Ack, BinaryAck, Disconnect]
    );
    assert_eq!(out[2].attachments, vec![Bytes::from_static(b"bin-b")]);
    assert_eq!(out[4].nsp, "/x");
    assert_eq!(out[4].attachments, vec![Bytes::from_static(b"bin-c")]);
}
