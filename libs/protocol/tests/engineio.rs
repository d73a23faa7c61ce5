//! Engine.IO v4 packets, payloads and handshake.

use bytes::Bytes;
use confab_protocol::DecodeError;
use confab_protocol::engineio::{
    self, Handshake, HandshakeError, OpenPacket, PROTOCOL_VERSION, Packet, Transport,
    parse_handshake,
};

fn open() -> OpenPacket {
    OpenPacket {
        sid: "lv_VI97HAXpY6yYWAAAC".into(),
        upgrades: vec![],
        ping_interval: 25000,
        ping_timeout: 20000,
        max_payload: 1_000_000,
    }
}

#[test]
fn protocol_version_is_4() {
    assert_eq!(PROTOCOL_VERSION, 4);
}

#[test]
fn open_packet_has_exact_key_order() {
    let text = Packet::Open(open()).encode_text().unwrap();
    assert_eq!(
        text,
        r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
    );
    assert_eq!(Packet::decode_text(&text).unwrap(), Packet::Open(open()));
}

#[test]
fn open_packet_with_upgrades_and_unknown_keys() {
    let p = Packet::decode_text(
        r#"0{"maxPayload":5,"pingTimeout":2,"pingInterval":1,"upgrades":["websocket"],"sid":"x","extra":true}"#,
    )
    .unwrap();
    assert_eq!(
        p,
        Packet::Open(OpenPacket {
            sid: "x".into(),
            upgrades: vec!["websocket".into()],
            ping_interval: 1,
            ping_timeout: 2,
            max_payload: 5,
        })
    );
}

#[test]
fn invalid_open_packets() {
    for text in [
        "0",
        "0{}",
        "0{\"sid\":\"x\"}",
        "0[]",
        "0nope",
        r#"0{"sid":"x","upgrades":[],"pingInterval":-1,"pingTimeout":1,"maxPayload":1}"#,
    ] {
        assert!(
            matches!(Packet::decode_text(text), Err(DecodeError::InvalidJson(_))),
            "{text}"
        );
    }
}

#[test]
fn simple_packets_both_directions() {
    let cases: Vec<(&str, Packet)> = vec![
        ("1", Packet::Close),
        ("2", Packet::Ping(None)),
        ("3", Packet::Pong(None)),
        ("2probe", Packet::Ping(Some("probe".into()))),
        ("3probe", Packet::Pong(Some("probe".into()))),
        ("4", Packet::Message(String::new())),
        ("4hello", Packet::Message("hello".into())),
        (
            r#"42["message",1,"2",{"3":[true]}]"#,
            Packet::Message(r#"2["message",1,"2",{"3":[true]}]"#.into()),
        ),
        ("4héllo ✓", Packet::Message("héllo ✓".into())),
        ("5", Packet::Upgrade),
        ("6", Packet::Noop),
    ];
    for (text, packet) in cases {
        assert_eq!(Packet::decode_text(text).unwrap(), packet, "{text}");
        assert_eq!(packet.encode_text().unwrap(), text, "{text}");
    }
}

#[test]
fn empty_ping_payload_encodes_like_none() {
    assert_eq!(
        Packet::Ping(Some(String::new())).encode_text().unwrap(),
        "2"
    );
    assert_eq!(
        Packet::Pong(Some(String::new())).encode_text().unwrap(),
        "3"
    );
}

#[test]
fn binary_frames() {
    let bytes = Bytes::from_static(&[1, 2, 3]);
    let p = Packet::decode_binary(bytes.clone());
    assert_eq!(p, Packet::Binary(bytes.clone()));
    assert_eq!(p.encode_text(), None);
    assert_eq!(p.binary_frame(), Some(&bytes));
    assert_eq!(Packet::Close.binary_frame(), None);
    // Binary frames are never interpreted: a leading '4' is data.
    assert_eq!(
        Packet::decode_binary(Bytes::from_static(b"4abc")),
        Packet::Binary(Bytes::from_static(b"4abc"))
    );
    assert_eq!(
        Packet::decode_binary(Bytes::new()),
        Packet::Binary(Bytes::new())
    );
}

#[test]
fn base64_binary_in_text() {
    assert_eq!(
        Packet::decode_text("bAQID").unwrap(),
        Packet::Binary(Bytes::from_static(&[1, 2, 3]))
    );
    assert_eq!(
        Packet::decode_text("b").unwrap(),
        Packet::Binary(Bytes::new())
    );
    assert_eq!(Packet::decode_text("b!!!"), Err(DecodeError::InvalidBase64));
}

#[test]
fn malformed_text_frames() {
    assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
    assert_eq!(
        Packet::decode_text("7"),
        Err(DecodeError::UnknownPacketType('7'))
    );
    assert_eq!(
        Packet::decode_text("x4"),
        Err(DecodeError::UnknownPacketType('x'))
    );
    assert_eq!(
        Packet::decode_text("é"),
        Err(DecodeError::UnknownPacketType('é'))
    );
    for text in ["1x", "5probe", "6 "] {
        assert!(
            matches!(
                Packet::decode_text(text),
                Err(DecodeError::InvalidPayload(_))
            ),
            "{text}"
        );
    }
}

#[test]
fn polling_payloads() {
    let packets = vec![
        Packet::Message("hello €".into()),
        Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        Packet::Ping(None),
        Packet::Noop,
    ];
    let payload = engineio::encode_payload(&packets);
    assert_eq!(payload, "4hello €\u{1e}bAQIDBA==\u{1e}2\u{1e}6");
    assert_eq!(engineio::decode_payload(&payload).unwrap(), packets);
    assert_eq!(engineio::encode_payload(&[]), "");
    assert_eq!(engineio::decode_payload(""), Err(DecodeError::Empty));
    assert_eq!(
        engineio::decode_payload("4a\u{1e}"),
        Err(DecodeError::Empty)
    );
    assert_eq!(
        engineio::decode_payload("4a\u{1e}9"),
        Err(DecodeError::UnknownPacketType('9'))
    );
}

#[test]
fn handshake_errors_match_the_protocol() {
    let all = [
        (
            HandshakeError::UnknownTransport,
            0,
            "Transport unknown",
            400,
        ),
        (HandshakeError::UnknownSid, 1, "Session ID unknown", 400),
        (
            HandshakeError::BadHandshakeMethod,
            2,
            "Bad handshake method",
            400,
        ),
        (HandshakeError::BadRequest, 3, "Bad request", 400),
        (HandshakeError::Forbidden, 4, "Forbidden", 403),
        (
            HandshakeError::UnsupportedProtocolVersion,
            5,
            "Unsupported protocol version",
            400,
        ),
    ];
    for (e, code, message, status) in all {
        assert_eq!(e.code(), code);
        assert_eq!(e.message(), message);
        assert_eq!(e.to_string(), message);
        assert_eq!(e.http_status(), status);
        let json = e.to_json();
        assert_eq!(json, format!(r#"{{"code":{code},"message":"{message}"}}"#));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["code"], code);
        assert_eq!(v["message"], message);
    }
    assert_eq!(
        HandshakeError::UnknownTransport.to_json(),
        r#"{"code":0,"message":"Transport unknown"}"#
    );
}

#[test]
fn valid_handshakes() {
    let ws = Handshake {
        transport: Transport::WebSocket,
        sid: None,
    };
    assert_eq!(
        parse_handshake(Some("EIO=4&transport=websocket")),
        Ok(ws.clone())
    );
    assert_eq!(
        parse_handshake(Some("?EIO=4&transport=websocket&t=OkX2&token=a%26b")),
        Ok(ws.clone())
    );
    assert_eq!(
        parse_handshake(Some("transport=websocket&&EIO=4&flag")),
        Ok(ws.clone())
    );
    assert_eq!(
        parse_handshake(Some("EIO=4&transport=websocket&sid=")),
        Ok(ws.clone())
    );
    assert_eq!(
        parse_handshake(Some("EIO=4&transport=polling")),
        Ok(Handshake {
            transport: Transport::Polling,
            sid: None
        })
    );
    assert_eq!(
        parse_handshake(Some("EIO=4&transport=websocket&sid=ab%2Dc_d")),
        Ok(Handshake {
            transport: Transport::WebSocket,
            sid: Some("ab-c_d".into())
        })
    );
    // Percent-encoded keys and values.
    assert_eq!(
        parse_handshake(Some("%45IO=%34&transport=web%73ocket")),
        Ok(ws)
    );
}

#[test]
fn invalid_handshakes() {
    use HandshakeError::*;
    let cases = [
        (None, UnknownTransport),
        (Some(""), UnknownTransport),
        (Some("EIO=4"), UnknownTransport),
        (Some("EIO=4&transport=abc"), UnknownTransport),
        (Some("EIO=4&transport=WebSocket"), UnknownTransport),
        (Some("EIO=4&transport=webtransport"), UnknownTransport),
        (Some("EIO=4&transport"), UnknownTransport),
        (
            Some("EIO=4&transport=websocket&transport=websocket"),
            UnknownTransport,
        ),
        (Some("transport=polling"), UnsupportedProtocolVersion),
        (Some("transport=websocket"), UnsupportedProtocolVersion),
        (
            Some("EIO=abc&transport=polling"),
            UnsupportedProtocolVersion,
        ),
        (
            Some("EIO=3&transport=websocket"),
            UnsupportedProtocolVersion,
        ),
        (
            Some("EIO=5&transport=websocket"),
            UnsupportedProtocolVersion,
        ),
        (
            Some("EIO=04&transport=websocket"),
            UnsupportedProtocolVersion,
        ),
        (Some("EIO=&transport=websocket"), UnsupportedProtocolVersion),
        (
            Some("EIO=4&EIO=4&transport=websocket"),
            UnsupportedProtocolVersion,
        ),
        (Some("EIO=4&transport=websocket&sid=a&sid=b"), BadRequest),
    ];
    for (query, err) in cases {
        assert_eq!(parse_handshake(query), Err(err), "{query:?}");
    }
}

#[test]
fn transport_names() {
    for t in [Transport::Polling, Transport::WebSocket] {
        assert_eq!(Transport::parse(t.as_str()), Some(t));
    }
    assert_eq!(Transport::parse("flashsocket"), None);
}

#[test]
fn a_client_post_body_splits_into_its_packets() {
    use confab_protocol::engineio::{PayloadPart, split_client_payload};
    assert_eq!(
        split_client_payload("4hi\u{1e}bAQID\u{1e}2".as_bytes()),
        Ok(vec![
            PayloadPart::Text("4hi"),
            PayloadPart::Binary(Bytes::from_static(&[1, 2, 3])),
            PayloadPart::Text("2"),
        ])
    );
    // Not UTF-8, an empty packet, an unknown type, bad base64, an OPEN
    // from the client: the whole body is refused.
    assert_eq!(
        split_client_payload(b"4\xff"),
        Err(DecodeError::InvalidUtf8)
    );
    assert_eq!(split_client_payload(b"4a\x1e"), Err(DecodeError::Empty));
    assert!(split_client_payload(b"4a\x1e9").is_err());
    assert_eq!(
        split_client_payload(b"b!!"),
        Err(DecodeError::InvalidBase64)
    );
    let open = r#"0{"sid":"x","upgrades":[],"pingInterval":1,"pingTimeout":1,"maxPayload":1}"#;
    assert!(matches!(
        split_client_payload(open.as_bytes()),
        Err(DecodeError::InvalidPayload(_))
    ));
}
