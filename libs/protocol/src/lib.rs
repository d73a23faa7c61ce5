//! Pure codecs for the protocols the Confab gateway speaks to unchanged
//! `socket.io-client` 4.x apps: Engine.IO v4 and Socket.IO v5 over
//! WebSocket. No I/O and no runtime: bytes and strings in, packets out.
//!
//! # Layers
//!
//! A WebSocket *text* frame is one Engine.IO packet: a type digit and its
//! data ([`engineio::Packet`]), e.g. `0{"sid":...}` (open, server first),
//! `2`/`3` (ping/pong), `4...` (message). A WebSocket *binary* frame is a
//! binary Engine.IO message, with no prefix.
//!
//! The body of an Engine.IO message is one Socket.IO packet
//! ([`socketio::Packet`]): `<type>[<attachments>-][<nsp>,][<ack id>][JSON]`,
//! e.g. `2/chat,7["say","hi"]` inside the frame `42/chat,7["say","hi"]`.
//! A binary Socket.IO packet (`5`, `6`) is one text frame with placeholders
//! followed by its attachments as binary frames; [`socketio::Decoder`]
//! reassembles them.
//!
//! ```
//! use confab_protocol::{engineio, socketio};
//!
//! let mut decoder = socketio::Decoder::new(10);
//! let frame = r#"42["chat",{"text":"hi"}]"#;
//! let engineio::Packet::Message(body) = engineio::Packet::decode_text(frame)? else {
//!     unreachable!()
//! };
//! let packet = decoder.push_text(&body)?.expect("not a binary packet");
//! assert_eq!(packet.event_name(), Some("chat"));
//!
//! let reply = socketio::Packet::ack("/", 3, vec![serde_json::json!("ok")]);
//! assert_eq!(reply.encode_frame().0, r#"433["ok"]"#);
//! # Ok::<(), confab_protocol::DecodeError>(())
//! ```
//!
//! Decoders return a [`DecodeError`] on any malformed input and never panic.

mod error;

pub mod engineio;
pub mod socketio;

pub use engineio::HandshakeError;
pub use error::DecodeError;
