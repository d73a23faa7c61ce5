//! The error every decoder of this crate returns.

/// Why a frame could not be decoded.
///
/// Every malformed input maps to one of these variants; no decoder of this
/// crate panics on any input. The `Display` text is meant for logs and close
/// reasons, it never echoes more than a short excerpt of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame (or the Engine.IO message body) was empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a known packet type.
    #[error("unknown packet type {0:?}")]
    UnknownPacketType(char),
    /// The namespace contains a control character.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// The ack id does not fit in a `u64`.
    #[error("invalid ack id")]
    InvalidAckId,
    /// An ACK or BINARY_ACK packet without an ack id.
    #[error("ack packet without an ack id")]
    MissingAckId,
    /// An ack id on a packet type that cannot carry one
    /// (CONNECT, DISCONNECT, CONNECT_ERROR).
    #[error("ack id not allowed on this packet type")]
    UnexpectedAckId,
    /// The attachment count of a binary packet is missing, not decimal, or
    /// not followed by `-`.
    #[error("invalid attachment count")]
    InvalidAttachmentCount,
    /// A binary packet announces more attachments than the decoder accepts.
    #[error("too many attachments (at most {max})")]
    TooManyAttachments {
        /// The decoder's limit.
        max: usize,
    },
    /// The payload is not valid JSON (the message is serde_json's).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The payload is valid JSON but not of the shape the packet type requires.
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// A `{"_placeholder":true,...}` object whose `num` is not the index of
    /// one of the packet's attachments.
    #[error("invalid attachment placeholder")]
    InvalidPlaceholder,
    /// A base64 (`b`-prefixed) Engine.IO packet whose data is not base64.
    #[error("invalid base64 data")]
    InvalidBase64,
    /// A polling POST body that is not UTF-8.
    #[error("payload is not UTF-8")]
    InvalidUtf8,
    /// A binary frame arrived while no binary packet awaited attachments.
    #[error("unexpected binary frame")]
    UnexpectedBinary,
    /// A text packet arrived while a binary packet still awaited attachments.
    #[error("text packet received while awaiting binary attachments")]
    AwaitingAttachments,
}
