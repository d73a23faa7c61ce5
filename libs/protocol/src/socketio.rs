//! Socket.IO protocol version 5: packets, the reassembling [`Decoder`] and
//! the fan-out fast path [`event_frame`].
//!
//! # Wire format
//!
//! A Socket.IO packet is the body of an Engine.IO message (after its `4`):
//!
//! ```text
//! <type digit>[<attachments>-][<namespace>,][<ack id>][JSON data]
//! ```
//!
//! | digit | type          | data                                       | ack id    |
//! |-------|---------------|--------------------------------------------|-----------|
//! | `0`   | CONNECT       | absent or an object (client auth / `{"sid"}`) | no     |
//! | `1`   | DISCONNECT    | absent                                     | no        |
//! | `2`   | EVENT         | `["name", args...]`                        | optional  |
//! | `3`   | ACK           | `[args...]`                                | required  |
//! | `4`   | CONNECT_ERROR | an object (`{"message":...}`) or a string  | no        |
//! | `5`   | BINARY_EVENT  | as EVENT, with placeholders                | optional  |
//! | `6`   | BINARY_ACK    | as ACK, with placeholders                  | required  |
//!
//! * The namespace is present iff the character after the type (and
//!   attachment count) is `/`; it runs to the next `,` or to the end of the
//!   text (`40/custom` and `40/custom,` are both valid). Absent means `/`.
//!   The encoder omits `/` and writes any other namespace followed by `,`.
//! * The ack id is the decimal digits right after the namespace.
//! * An event name is a string (not one of [`RESERVED_EVENTS`]) or a number.
//! * A binary packet (`5`, `6`) writes its attachment count then `-` right
//!   after the type, e.g. `451-["up",{"_placeholder":true,"num":0}]`. Its
//!   JSON holds one [`placeholder`] per binary attachment, and the
//!   attachments follow as that many binary frames, in `num` order. This
//!   crate keeps the placeholders in [`Packet::data`] and the frames in
//!   [`Packet::attachments`] (placeholder `num` N is `attachments[N]`).
//!
//! Examples: `40`, `40/admin,{"token":"123"}`, `42["chat",1]`,
//! `42/admin,17["chat"]` (ack id 17), `4317[true]`,
//! `44{"message":"Invalid namespace"}`, `41/admin,`.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::DecodeError;

/// Event names a peer may not send: the reference implementations reserve
/// them for their own lifecycle events.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The type of a Socket.IO packet (its leading digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// `0`: joins a namespace (client) or accepts the join (server).
    Connect = 0,
    /// `1`: leaves a namespace.
    Disconnect = 1,
    /// `2`: an event, `["name", args...]`.
    Event = 2,
    /// `3`: the acknowledgement of an event that carried an ack id.
    Ack = 3,
    /// `4`: refuses a CONNECT.
    ConnectError = 4,
    /// `5`: an event with binary attachments.
    BinaryEvent = 5,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck = 6,
}

impl PacketType {
    /// The type of a leading digit, `None` if it names no type.
    pub fn from_char(c: char) -> Option<PacketType> {
        Some(match c {
            '0' => PacketType::Connect,
            '1' => PacketType::Disconnect,
            '2' => PacketType::Event,
            '3' => PacketType::Ack,
            '4' => PacketType::ConnectError,
            '5' => PacketType::BinaryEvent,
            '6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    /// The digit written on the wire.
    pub fn as_char(self) -> char {
        char::from(b'0' + self as u8)
    }

    /// Whether packets of this type carry binary attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }

    /// Whether this is EVENT or BINARY_EVENT.
    pub fn is_event(self) -> bool {
        matches!(self, PacketType::Event | PacketType::BinaryEvent)
    }

    /// Whether this is ACK or BINARY_ACK.
    pub fn is_ack(self) -> bool {
        matches!(self, PacketType::Ack | PacketType::BinaryAck)
    }
}

/// Builds the placeholder `{"_placeholder":true,"num":num}` that stands for
/// attachment `num` in the data of a binary packet.
pub fn placeholder(num: usize) -> Value {
    let mut m = Map::new();
    m.insert("_placeholder".to_owned(), Value::Bool(true));
    m.insert("num".to_owned(), Value::from(num));
    Value::Object(m)
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The namespace, `/` by default.
    pub nsp: String,
    /// The ack id (EVENT: the sender wants an ACK; ACK: the event answered).
    pub id: Option<u64>,
    /// The JSON data, placeholders included for binary packets.
    pub data: Option<Value>,
    /// The binary attachments of a BINARY_EVENT or BINARY_ACK, in
    /// placeholder `num` order. Ignored by the encoder for other types
    /// (except that EVENT/ACK with attachments encode as their binary type).
    pub attachments: Vec<Bytes>,
}

impl Packet {
    fn new(kind: PacketType, nsp: &str, id: Option<u64>, data: Option<Value>) -> Self {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// A CONNECT: the client's join request (`data` = auth) or the
    /// server's acceptance (`data` = `{"sid": ...}`).
    pub fn connect(nsp: &str, data: Option<Value>) -> Self {
        Packet::new(PacketType::Connect, nsp, None, data)
    }

    /// A DISCONNECT.
    pub fn disconnect(nsp: &str) -> Self {
        Packet::new(PacketType::Disconnect, nsp, None, None)
    }

    /// A CONNECT_ERROR with data `{"message": message}`.
    pub fn connect_error(nsp: &str, message: &str) -> Self {
        let mut m = Map::new();
        m.insert("message".to_owned(), Value::String(message.to_owned()));
        Packet::new(PacketType::ConnectError, nsp, None, Some(Value::Object(m)))
    }

    /// An EVENT `["event", args...]`, asking for an ack when `id` is set.
    /// Becomes a BINARY_EVENT through [`Packet::with_attachments`].
    pub fn event(nsp: &str, event: &str, args: Vec<Value>, id: Option<u64>) -> Self {
        let mut items = Vec::with_capacity(args.len() + 1);
        items.push(Value::String(event.to_owned()));
        items.extend(args);
        Packet::new(PacketType::Event, nsp, id, Some(Value::Array(items)))
    }

    /// An ACK `[args...]` answering the event with ack id `id`.
    /// Becomes a BINARY_ACK through [`Packet::with_attachments`].
    pub fn ack(nsp: &str, id: u64, args: Vec<Value>) -> Self {
        Packet::new(PacketType::Ack, nsp, Some(id), Some(Value::Array(args)))
    }

    /// Sets the binary attachments; when there are any, EVENT becomes
    /// BINARY_EVENT and ACK becomes BINARY_ACK. The data must already hold
    /// the matching [`placeholder`]s.
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Self {
        if !attachments.is_empty() {
            self.kind = match self.kind {
                PacketType::Event => PacketType::BinaryEvent,
                PacketType::Ack => PacketType::BinaryAck,
                other => other,
            };
        }
        self.attachments = attachments;
        self
    }

    /// The type actually written: EVENT/ACK with attachments are written
    /// as their binary type.
    fn wire_kind(&self) -> PacketType {
        match self.kind {
            PacketType::Event if !self.attachments.is_empty() => PacketType::BinaryEvent,
            PacketType::Ack if !self.attachments.is_empty() => PacketType::BinaryAck,
            other => other,
        }
    }

    /// Text frame (Engine.IO message body, WITHOUT the Engine.IO '4'
    /// prefix) plus the binary frames that follow.
    ///
    /// Non-binary types never return binary frames. The encoder does not
    /// validate: a namespace that does not start with `/` or contains `,` or
    /// a control character, a CONNECT/DISCONNECT/CONNECT_ERROR with an ack
    /// id, or data of the wrong shape encodes but does not decode back.
    pub fn encode(&self) -> (String, Vec<Bytes>) {
        self.encode_with(None)
    }

    /// Same as [`Packet::encode`] but the text already carries the
    /// Engine.IO '4' prefix, ready to be a WS text frame.
    pub fn encode_frame(&self) -> (String, Vec<Bytes>) {
        self.encode_with(Some(b'4'))
    }

    fn encode_with(&self, prefix: Option<u8>) -> (String, Vec<Bytes>) {
        let kind = self.wire_kind();
        let mut out: Vec<u8> = Vec::with_capacity(self.nsp.len() + 32);
        out.extend(prefix);
        out.push(b'0' + kind as u8);
        let attachments = if kind.is_binary() {
            push_decimal(&mut out, self.attachments.len() as u64);
            out.push(b'-');
            self.attachments.clone()
        } else {
            Vec::new()
        };
        push_nsp(&mut out, &self.nsp);
        if let Some(id) = self.id {
            push_decimal(&mut out, id);
        }
        if let Some(data) = &self.data {
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, data);
        }
        (into_string(out), attachments)
    }

    /// For EVENT/BINARY_EVENT: the event name (`None` when it is a number,
    /// or for other packet types). The remaining args are [`Packet::args`].
    pub fn event_name(&self) -> Option<&str> {
        if !self.kind.is_event() {
            return None;
        }
        match &self.data {
            Some(Value::Array(items)) => items.first()?.as_str(),
            _ => None,
        }
    }

    /// The arguments: for EVENT/BINARY_EVENT the array after the event
    /// name, for ACK/BINARY_ACK the whole array; empty otherwise.
    pub fn args(&self) -> &[Value] {
        let skip = if self.kind.is_event() {
            1
        } else if self.kind.is_ack() {
            0
        } else {
            return &[];
        };
        match &self.data {
            Some(Value::Array(items)) => items.get(skip..).unwrap_or(&[]),
            _ => &[],
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_nsp(out: &mut Vec<u8>, nsp: &str) {
    if !nsp.is_empty() && nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    // Only ASCII and whole UTF-8 strings were written.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Fast path for fan-out: build an EVENT frame text (`42` + optional
/// `/nsp,` + `["event",...args]`) from an event name and an
/// already-serialized JSON array of args (`args_json` is e.g. `[{"a":1}]`,
/// possibly `[]`).
///
/// When `args_json` is `serde_json::to_string(&Value::Array(args))`, the
/// result is exactly `Packet::event(nsp, event, args, None).encode_frame().0`.
/// The args are spliced in as they are, not re-serialized: other whitespace
/// or key order is kept as given. An `args_json` that is not a JSON array
/// is sent as a single argument (an empty one as no argument).
pub fn event_frame(nsp: &str, event: &str, args_json: &str) -> String {
    encode_event_frame(nsp, event, args_json, None)
}

/// [`event_frame`] with a connection-state-recovery offset appended as the
/// last argument, a JSON string, as `socket.io-client` (4.6+) expects:
/// `42["message:new",{...},"1234"]`. The client remembers the last offset it
/// received and presents it when it reconnects.
pub fn event_frame_with_offset(nsp: &str, event: &str, args_json: &str, offset: u64) -> String {
    encode_event_frame(nsp, event, args_json, Some(offset))
}

/// Replaces the offset that ends a frame made by [`event_frame_with_offset`]
/// (`...,"1234"]`) with `offset`; `None` if the frame ends with no offset.
pub fn replace_offset(frame: &str, offset: u64) -> Option<String> {
    let body = frame.strip_suffix("\"]")?;
    let start = body.rfind(",\"")?;
    let digits = &body[start + 2..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{},\"{offset}\"]", &body[..start]))
}

fn encode_event_frame(nsp: &str, event: &str, args_json: &str, offset: Option<u64>) -> String {
    let args = args_json.trim_matches(is_json_ws);
    let mut out: Vec<u8> = Vec::with_capacity(8 + nsp.len() + event.len() + args.len());
    out.extend_from_slice(b"42");
    push_nsp(&mut out, nsp);
    out.push(b'[');
    // Writing a `&str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, event);
    let rest = match args.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(inner) if inner.trim_matches(is_json_ws).is_empty() => "",
        Some(inner) => inner,
        None => args,
    };
    if !rest.is_empty() {
        out.push(b',');
        out.extend_from_slice(rest.as_bytes());
    }
    if let Some(offset) = offset {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(offset.to_string().as_bytes());
        out.push(b'"');
    }
    out.push(b']');
    into_string(out)
}

fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Parses one Socket.IO packet text. Returns the packet (no attachments
/// yet) and, for binary types, the number of attachments to await.
fn parse(text: &str, max_attachments: usize) -> Result<(Packet, usize), DecodeError> {
    let bytes = text.as_bytes();
    let Some(first) = text.chars().next() else {
        return Err(DecodeError::Empty);
    };
    let kind = PacketType::from_char(first).ok_or(DecodeError::UnknownPacketType(first))?;
    let mut i = 1;

    let mut expected = 0usize;
    if kind.is_binary() {
        let start = i;
        let mut count: Option<usize> = Some(0);
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            count = count
                .and_then(|c| c.checked_mul(10))
                .and_then(|c| c.checked_add(usize::from(b - b'0')));
            i += 1;
        }
        if i == start || bytes.get(i) != Some(&b'-') {
            return Err(DecodeError::InvalidAttachmentCount);
        }
        i += 1;
        expected = match count {
            Some(c) if c <= max_attachments => c,
            _ => {
                return Err(DecodeError::TooManyAttachments {
                    max: max_attachments,
                });
            }
        };
    }

    let nsp = if bytes.get(i) == Some(&b'/') {
        let start = i;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |p| start + p);
        // `/` and `,` are ASCII, so both ends are char boundaries.
        let nsp = &text[start..end];
        if nsp.chars().any(char::is_control) {
            return Err(DecodeError::InvalidNamespace);
        }
        i = (end + 1).min(bytes.len());
        nsp
    } else {
        "/"
    };

    let mut id: Option<u64> = None;
    if bytes.get(i).is_some_and(u8::is_ascii_digit) {
        let mut n: u64 = 0;
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(DecodeError::InvalidAckId)?;
            i += 1;
        }
        id = Some(n);
    }

    // Everything before `i` is ASCII or ends at a `,`, so `i` is a char
    // boundary.
    let rest = &text[i..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Value>(rest)
                .map_err(|e| DecodeError::InvalidJson(e.to_string()))?,
        )
    };

    validate(kind, id, data.as_ref())?;
    if kind.is_binary()
        && let Some(d) = &data
    {
        check_placeholders(d, expected)?;
    }
    Ok((Packet::new(kind, nsp, id, data), expected))
}

/// Checks the ack id and the payload shape the packet type requires.
fn validate(kind: PacketType, id: Option<u64>, data: Option<&Value>) -> Result<(), DecodeError> {
    match kind {
        PacketType::Connect => {
            no_id(id)?;
            match data {
                None | Some(Value::Object(_)) => Ok(()),
                Some(_) => Err(DecodeError::InvalidPayload(
                    "CONNECT payload must be an object",
                )),
            }
        }
        PacketType::Disconnect => {
            no_id(id)?;
            match data {
                None => Ok(()),
                Some(_) => Err(DecodeError::InvalidPayload("DISCONNECT carries no payload")),
            }
        }
        PacketType::ConnectError => {
            no_id(id)?;
            match data {
                Some(Value::Object(_) | Value::String(_)) => Ok(()),
                _ => Err(DecodeError::InvalidPayload(
                    "CONNECT_ERROR payload must be an object or a string",
                )),
            }
        }
        PacketType::Event | PacketType::BinaryEvent => match data {
            Some(Value::Array(items)) => match items.first() {
                Some(Value::Number(_)) => Ok(()),
                Some(Value::String(name)) if RESERVED_EVENTS.contains(&name.as_str()) => {
                    Err(DecodeError::InvalidPayload("reserved event name"))
                }
                Some(Value::String(_)) => Ok(()),
                Some(_) => Err(DecodeError::InvalidPayload(
                    "event name must be a string or a number",
                )),
                None => Err(DecodeError::InvalidPayload(
                    "EVENT payload must not be empty",
                )),
            },
            _ => Err(DecodeError::InvalidPayload(
                "EVENT payload must be an array",
            )),
        },
        PacketType::Ack | PacketType::BinaryAck => {
            if id.is_none() {
                return Err(DecodeError::MissingAckId);
            }
            match data {
                Some(Value::Array(_)) => Ok(()),
                _ => Err(DecodeError::InvalidPayload("ACK payload must be an array")),
            }
        }
    }
}

fn no_id(id: Option<u64>) -> Result<(), DecodeError> {
    match id {
        None => Ok(()),
        Some(_) => Err(DecodeError::UnexpectedAckId),
    }
}

/// Checks that every placeholder refers to one of `count` attachments.
/// Recursion is bounded by serde_json's nesting limit on parsed values.
fn check_placeholders(value: &Value, count: usize) -> Result<(), DecodeError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| check_placeholders(v, count)),
        Value::Object(m) if m.get("_placeholder") == Some(&Value::Bool(true)) => {
            match m.get("num").and_then(Value::as_u64) {
                Some(n) if n < count as u64 => Ok(()),
                _ => Err(DecodeError::InvalidPlaceholder),
            }
        }
        Value::Object(m) => m.values().try_for_each(|v| check_placeholders(v, count)),
        _ => Ok(()),
    }
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    expected: usize,
}

/// Stateful decoder: feeds Engine.IO message texts and binary frames,
/// yields complete packets (reassembles binary packets).
///
/// One decoder serves one Engine.IO session. After an error the decoder is
/// left as it was before the failing call (except that a binary frame
/// completing a packet always ends that packet); callers normally close the
/// session on any error, or call [`Decoder::reset`].
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    pending: Option<Pending>,
}

impl Decoder {
    /// A decoder that refuses binary packets announcing more than
    /// `max_attachments` attachments.
    pub fn new(max_attachments: usize) -> Self {
        Decoder {
            max_attachments,
            pending: None,
        }
    }

    /// Decodes a text message (the Engine.IO message body, after its `4`).
    ///
    /// Returns `Ok(None)` for a binary packet whose attachments are still to
    /// come through [`Decoder::push_binary`] (a binary packet announcing 0
    /// attachments is returned at once). Fails with
    /// [`DecodeError::AwaitingAttachments`] while a binary packet still
    /// awaits attachments.
    pub fn push_text(&mut self, text: &str) -> Result<Option<Packet>, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::AwaitingAttachments);
        }
        let (mut packet, expected) = parse(text, self.max_attachments)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        // The count is peer-controlled: grow as frames arrive.
        packet.attachments.reserve(expected.min(16));
        self.pending = Some(Pending { packet, expected });
        Ok(None)
    }

    /// Adds a binary frame to the pending binary packet; returns the packet
    /// once its last attachment arrived. Fails with
    /// [`DecodeError::UnexpectedBinary`] when no packet awaits attachments.
    pub fn push_binary(&mut self, frame: Bytes) -> Result<Option<Packet>, DecodeError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        pending.packet.attachments.push(frame);
        if pending.packet.attachments.len() < pending.expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|p| p.packet))
    }

    /// Whether a binary packet still awaits attachments.
    pub fn is_awaiting_attachments(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops any partially received binary packet.
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
    }

    #[test]
    fn type_digits() {
        for c in '0'..='6' {
            let t = PacketType::from_char(c).unwrap();
            assert_eq!(t.as_char(), c);
            assert_eq!(t as u8, c as u8 - b'0');
        }
        assert_eq!(PacketType::from_char('7'), None);
        assert_eq!(PacketType::from_char('a'), None);
    }
}
