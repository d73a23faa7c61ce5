//! Engine.IO protocol version 4: packets, polling payloads and the
//! handshake query.
//!
//! # Packets
//!
//! A text packet is one ASCII type digit followed by its data:
//!
//! | digit | packet  | data                                              |
//! |-------|---------|---------------------------------------------------|
//! | `0`   | open    | JSON [`OpenPacket`] (server → client)             |
//! | `1`   | close   | none                                              |
//! | `2`   | ping    | optional text, e.g. `2probe`                      |
//! | `3`   | pong    | optional text, e.g. `3probe`                      |
//! | `4`   | message | the text message (a Socket.IO packet)             |
//! | `5`   | upgrade | none                                              |
//! | `6`   | noop    | none                                              |
//!
//! Over WebSocket a binary message is a plain binary frame, with no type
//! prefix ([`Packet::decode_binary`]). Where binary cannot travel as such
//! (HTTP long-polling text payloads) it is written `b` followed by the
//! standard base64 of the bytes; [`Packet::decode_text`] understands that
//! form too, [`encode_payload`] writes it.
//!
//! # Handshake
//!
//! The client opens `GET /engine.io/?EIO=4&transport=websocket`;
//! [`parse_handshake`] validates that query. A failed handshake is answered
//! with HTTP 400 (403 for [`HandshakeError::Forbidden`]) and the JSON body of
//! [`HandshakeError::to_json`], e.g. `{"code":0,"message":"Transport unknown"}`.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// The Engine.IO protocol version this crate speaks (the `EIO` query value).
pub const PROTOCOL_VERSION: u8 = 4;

/// Separates the packets of an HTTP long-polling payload (ASCII record
/// separator).
pub const PAYLOAD_SEPARATOR: char = '\u{1e}';

/// Standard base64, writing padding and accepting it or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The data of the open packet the server sends first.
///
/// Serializes with its keys in this exact order:
/// `{"sid":"...","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPacket {
    /// The Engine.IO session id.
    pub sid: String,
    /// Transports the client may upgrade to (empty over WebSocket).
    pub upgrades: Vec<String>,
    /// Interval between two server pings, in milliseconds.
    pub ping_interval: u64,
    /// How long the server waits for a pong after a ping, in milliseconds.
    pub ping_timeout: u64,
    /// Largest message the server accepts, in bytes.
    pub max_payload: u64,
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0{...}`: session parameters, sent by the server first.
    Open(OpenPacket),
    /// `1`: closes the session.
    Close,
    /// `2` or `2<payload>` (e.g. `2probe`).
    Ping(Option<String>),
    /// `3` or `3<payload>` (e.g. `3probe`).
    Pong(Option<String>),
    /// `4<text>`: a text message, here a Socket.IO packet.
    Message(String),
    /// A binary message: a WebSocket binary frame (or `b<base64>` in text).
    Binary(Bytes),
    /// `5`: completes a transport upgrade.
    Upgrade,
    /// `6`: does nothing (used to end a polling cycle).
    Noop,
}

impl Packet {
    /// Decodes a WebSocket text frame (or one packet of a polling payload).
    ///
    /// `1`, `5` and `6` must carry no data; an empty ping/pong payload
    /// decodes as `None`. A `b`-prefixed frame decodes its base64 data into
    /// [`Packet::Binary`].
    pub fn decode_text(frame: &str) -> Result<Packet, DecodeError> {
        let mut chars = frame.chars();
        let Some(kind) = chars.next() else {
            return Err(DecodeError::Empty);
        };
        let data = chars.as_str();
        let optional = |data: &str| (!data.is_empty()).then(|| data.to_owned());
        let nothing = |packet: Packet, what: &'static str| {
            if data.is_empty() {
                Ok(packet)
            } else {
                Err(DecodeError::InvalidPayload(what))
            }
        };
        match kind {
            '0' => serde_json::from_str(data)
                .map(Packet::Open)
                .map_err(|e| DecodeError::InvalidJson(e.to_string())),
            '1' => nothing(Packet::Close, "CLOSE carries no data"),
            '2' => Ok(Packet::Ping(optional(data))),
            '3' => Ok(Packet::Pong(optional(data))),
            '4' => Ok(Packet::Message(data.to_owned())),
            '5' => nothing(Packet::Upgrade, "UPGRADE carries no data"),
            '6' => nothing(Packet::Noop, "NOOP carries no data"),
            'b' => BASE64
                .decode(data)
                .map(|v| Packet::Binary(Bytes::from(v)))
                .map_err(|_| DecodeError::InvalidBase64),
            other => Err(DecodeError::UnknownPacketType(other)),
        }
    }

    /// Decodes a WebSocket binary frame: always a binary message.
    pub fn decode_binary(frame: Bytes) -> Packet {
        Packet::Binary(frame)
    }

    /// Encodes the packet as a WebSocket text frame; `None` for
    /// [`Packet::Binary`], which travels as a binary frame (see
    /// [`Packet::binary_frame`]).
    pub fn encode_text(&self) -> Option<String> {
        let text = match self {
            Packet::Open(open) => {
                // Serializing a struct of strings and integers cannot fail.
                let json = serde_json::to_string(open).unwrap_or_default();
                let mut s = String::with_capacity(json.len() + 1);
                s.push('0');
                s.push_str(&json);
                s
            }
            Packet::Close => "1".to_owned(),
            Packet::Ping(p) => with_prefix('2', p.as_deref().unwrap_or("")),
            Packet::Pong(p) => with_prefix('3', p.as_deref().unwrap_or("")),
            Packet::Message(m) => with_prefix('4', m),
            Packet::Upgrade => "5".to_owned(),
            Packet::Noop => "6".to_owned(),
            Packet::Binary(_) => return None,
        };
        Some(text)
    }

    /// The bytes of a binary message, to send as a WebSocket binary frame;
    /// `None` for every other packet.
    pub fn binary_frame(&self) -> Option<&Bytes> {
        match self {
            Packet::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Encodes the packet as text, binary messages as `b<base64>` (the form
    /// used inside long-polling payloads).
    fn encode_text_or_base64(&self) -> String {
        match self {
            Packet::Binary(b) => {
                let mut s = String::with_capacity(1 + b.len().div_ceil(3) * 4);
                s.push('b');
                BASE64.encode_string(b, &mut s);
                s
            }
            other => other.encode_text().unwrap_or_default(),
        }
    }
}

fn with_prefix(prefix: char, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 1);
    s.push(prefix);
    s.push_str(data);
    s
}

/// Encodes packets as one HTTP long-polling payload: their text forms
/// joined by [`PAYLOAD_SEPARATOR`], binary messages as `b<base64>`.
pub fn encode_payload(packets: &[Packet]) -> String {
    let mut out = String::new();
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.push(PAYLOAD_SEPARATOR);
        }
        out.push_str(&p.encode_text_or_base64());
    }
    out
}

/// Decodes an HTTP long-polling payload (packets joined by
/// [`PAYLOAD_SEPARATOR`]). Fails on the first invalid packet, including an
/// empty one.
pub fn decode_payload(payload: &str) -> Result<Vec<Packet>, DecodeError> {
    payload
        .split(PAYLOAD_SEPARATOR)
        .map(Packet::decode_text)
        .collect()
}

/// One packet of a client's polling POST body (see [`split_client_payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPart<'a> {
    /// A valid text packet exactly as sent: it is also its WebSocket text
    /// frame, so the gateway hands it on without re-encoding.
    Text(&'a str),
    /// A `b<base64>` packet, decoded: a binary message.
    Binary(Bytes),
}

/// Splits the body of a client's HTTP long-polling POST into its packets,
/// checking each: the body must be UTF-8, every packet valid, and none an
/// OPEN (the server alone sends that). Fails on the first bad packet, so a
/// malformed body delivers nothing.
///
/// The gateway's POST handler uses it; it is pure so that it can be fuzzed
/// (`libs/protocol/fuzz`, target `polling`).
pub fn split_client_payload(body: &[u8]) -> Result<Vec<PayloadPart<'_>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    text.split(PAYLOAD_SEPARATOR)
        .map(|part| match Packet::decode_text(part)? {
            Packet::Binary(b) => Ok(PayloadPart::Binary(b)),
            Packet::Open(_) => Err(DecodeError::InvalidPayload(
                "OPEN is sent by the server only",
            )),
            _ => Ok(PayloadPart::Text(part)),
        })
        .collect()
}

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling (`transport=polling`).
    Polling,
    /// WebSocket (`transport=websocket`).
    WebSocket,
}

impl Transport {
    /// The name used in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }

    /// Parses a `transport` query value (exact, lowercase).
    pub fn parse(name: &str) -> Option<Transport> {
        match name {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::WebSocket),
            _ => None,
        }
    }
}

/// Validated handshake query (EIO, transport, sid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The requested transport.
    pub transport: Transport,
    /// The session id, when the request targets an existing session
    /// (an upgrade or a polling request); `None` for a new session.
    pub sid: Option<String>,
}

/// A handshake refused with one of the protocol's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Code 0: missing or unknown `transport`.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: the `sid` names no session.
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a new session must be opened with `GET`.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: any other bad request.
    #[error("Bad request")]
    BadRequest,
    /// Code 4: refused by policy (answered with HTTP 403).
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: missing `EIO` or an `EIO` other than 4.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl HandshakeError {
    /// The protocol's numeric error code (0 to 5).
    pub fn code(&self) -> u8 {
        match self {
            HandshakeError::UnknownTransport => 0,
            HandshakeError::UnknownSid => 1,
            HandshakeError::BadHandshakeMethod => 2,
            HandshakeError::BadRequest => 3,
            HandshakeError::Forbidden => 4,
            HandshakeError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The protocol's error message, e.g. `"Transport unknown"`.
    pub fn message(&self) -> &'static str {
        match self {
            HandshakeError::UnknownTransport => "Transport unknown",
            HandshakeError::UnknownSid => "Session ID unknown",
            HandshakeError::BadHandshakeMethod => "Bad handshake method",
            HandshakeError::BadRequest => "Bad request",
            HandshakeError::Forbidden => "Forbidden",
            HandshakeError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status to answer with: 403 for `Forbidden`, else 400.
    pub fn http_status(&self) -> u16 {
        match self {
            HandshakeError::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON response body, e.g. `{"code":0,"message":"Transport unknown"}`.
    pub fn to_json(&self) -> String {
        // The messages are plain ASCII without quotes or backslashes.
        format!(
            r#"{{"code":{},"message":"{}"}}"#,
            self.code(),
            self.message()
        )
    }
}

/// Parses the query string of a request to the Engine.IO endpoint (raw
/// query, e.g. `"EIO=4&transport=websocket&t=abc"`; a leading `?` is
/// ignored).
///
/// Checks, in the reference server's order:
/// 1. `transport` present once and `polling` or `websocket`, else
///    [`HandshakeError::UnknownTransport`];
/// 2. `EIO` present once and exactly `4`, else
///    [`HandshakeError::UnsupportedProtocolVersion`];
/// 3. `sid` at most once, else [`HandshakeError::BadRequest`]; an empty
///    `sid` counts as absent.
///
/// Values are percent-decoded (`+` is a space). Other parameters (`t`,
/// application ones) are ignored.
pub fn parse_handshake(query: Option<&str>) -> Result<Handshake, HandshakeError> {
    let query = query.unwrap_or("");
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut eio: Lookup = Lookup::Absent;
    let mut transport: Lookup = Lookup::Absent;
    let mut sid: Lookup = Lookup::Absent;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match percent_decode(key).as_str() {
            "EIO" => &mut eio,
            "transport" => &mut transport,
            "sid" => &mut sid,
            _ => continue,
        };
        slot.add(percent_decode(value));
    }
    let transport = match transport {
        Lookup::Once(t) => Transport::parse(&t).ok_or(HandshakeError::UnknownTransport)?,
        _ => return Err(HandshakeError::UnknownTransport),
    };
    match eio {
        Lookup::Once(v) if v == "4" => {}
        _ => return Err(HandshakeError::UnsupportedProtocolVersion),
    }
    let sid = match sid {
        Lookup::Absent => None,
        Lookup::Once(s) => (!s.is_empty()).then_some(s),
        Lookup::Repeated => return Err(HandshakeError::BadRequest),
    };
    Ok(Handshake { transport, sid })
}

/// What a query holds for one key.
enum Lookup {
    Absent,
    Once(String),
    Repeated,
}

impl Lookup {
    fn add(&mut self, value: String) {
        *self = match self {
            Lookup::Absent => Lookup::Once(value),
            _ => Lookup::Repeated,
        };
    }
}

/// Decodes `%XX` escapes and `+`; a malformed escape is kept as is, and
/// invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let hi = (h[0] as char).to_digit(16)?;
                    let lo = (h[1] as char).to_digit(16)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("é%"), "é%");
    }

    #[test]
    fn base64_round_trip() {
        let p = Packet::Binary(Bytes::from_static(&[0, 1, 2, 255]));
        assert_eq!(p.encode_text_or_base64(), "bAAEC/w==");
        assert_eq!(Packet::decode_text("bAAEC/w==").unwrap(), p);
        assert_eq!(Packet::decode_text("bAAEC/w").unwrap(), p);
    }
}
