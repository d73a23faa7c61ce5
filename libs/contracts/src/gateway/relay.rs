//! The relay of a WebSocket upgrade that reached a gateway (the *relay*)
//! other than the session's owner.
//!
//! 1. The relay subscribes to a fresh inbox (`to_client`) and sends the
//!    owner an [`UpgradeRequest`] on its `upgrade` subject. The owner
//!    starts the upgrade (a second WebSocket for the sid is refused from
//!    now on), subscribes to a fresh inbox of its own and answers
//!    [`super::PollAnswer::Relay`] with it (`from_client`), or refuses.
//! 2. The relay accepts the WebSocket and runs the probe with the client;
//!    each step goes to `from_client` as a request whose [`STEP_HEADER`]
//!    names a [`Step`]: `probed` (the client got `3probe`: the owner
//!    answers the held GET with a noop and keeps packets for the
//!    WebSocket), `upgraded` (the client sent `5`: the owner's connection
//!    moves to the relay and sends what was queued first), then `frames`
//!    (the client's frames, [`encode_frames`]) and finally `close`.
//! 3. The owner sends its frames to `to_client` the same way (`frames`,
//!    `close`).
//!
//! Each side sends one request at a time in each direction and waits for
//! its answer ([`super::PollAnswer::Ok`], given once the frames were handed
//! on) before the next: at most one batch in flight each way, frames in
//! order. A request that fails, times out or is refused ends the relay and
//! the session; it is never retried (a retry could duplicate). The client
//! then reconnects and recovers what it missed (connection-state recovery).

use async_nats::HeaderMap;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The header naming a relay request's [`Step`].
pub const STEP_HEADER: &str = "Confab-Relay";

/// Bytes a frame costs in a batch besides its data (kind and length).
pub const FRAME_OVERHEAD: usize = 5;

/// A relayed upgrade's first request, to the owner's `upgrade` subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRequest {
    /// The session.
    pub sid: String,
    /// Where the owner sends frames for the client (the relay's inbox).
    pub to_client: String,
}

/// What a relay request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The client sent `2probe` and was answered `3probe`.
    Probed,
    /// The client sent `5`: the upgrade is complete.
    Upgraded,
    /// A batch of frames (the body, [`encode_frames`]).
    Frames,
    /// The other side ended: the WebSocket closed, the probe failed, or
    /// the session ended.
    Close,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Probed => "probed",
            Self::Upgraded => "upgraded",
            Self::Frames => "frames",
            Self::Close => "close",
        }
    }

    /// The headers of a request for this step.
    pub fn headers(self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(STEP_HEADER, self.name());
        headers
    }

    /// The step a request's headers name.
    pub fn of(headers: Option<&HeaderMap>) -> Option<Self> {
        let name = headers?.get(STEP_HEADER)?.as_str();
        [Self::Probed, Self::Upgraded, Self::Frames, Self::Close]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// One WebSocket message of a relayed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message (UTF-8 is checked by whoever turns it into one).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    /// Its bytes in a batch.
    pub fn encoded_len(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Self::Text(b) | Self::Binary(b) => b.len(),
            }
    }
}

/// A batch of frames as one body: per frame, `t` or `b`, the length
/// (u32, big-endian) and the bytes. Nothing is escaped.
pub fn encode_frames<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Bytes {
    let mut out = BytesMut::new();
    for f in frames {
        let (kind, data) = match f {
            Frame::Text(b) => (b't', b),
            Frame::Binary(b) => (b'b', b),
        };
        out.put_u8(kind);
        out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        out.put_slice(data);
    }
    out.freeze()
}

/// The frames of a batch (sharing its bytes); `None` when it is not one.
pub fn decode_frames(mut body: Bytes) -> Option<Vec<Frame>> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        if body.len() < FRAME_OVERHEAD {
            return None;
        }
        let kind = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() - FRAME_OVERHEAD < len {
            return None;
        }
        let data = body.slice(FRAME_OVERHEAD..FRAME_OVERHEAD + len);
        body = body.slice(FRAME_OVERHEAD + len..);
        frames.push(match kind {
            b't' => Frame::Text(data),
            b'b' => Frame::Binary(data),
            _ => return None,
        });
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_unescaped() {
        let frames = vec![
            Frame::Text(Bytes::from_static(b"42[\"m\",\"\\\"\"]")),
            Frame::Binary(Bytes::from_static(&[0, 1, 0xff])),
            Frame::Text(Bytes::new()),
        ];
        let body = encode_frames(&frames);
        let size: usize = frames.iter().map(Frame::encoded_len).sum();
        assert_eq!(body.len(), size);
        assert_eq!(decode_frames(body.clone()), Some(frames));
        assert_eq!(decode_frames(body.slice(..body.len() - 1)), None);
        assert_eq!(decode_frames(Bytes::from_static(b"x\0\0\0\0")), None);
    }

    #[test]
    fn steps_round_trip() {
        for s in [Step::Probed, Step::Upgraded, Step::Frames, Step::Close] {
            assert_eq!(Step::of(Some(&s.headers())), Some(s));
        }
        assert_eq!(Step::of(None), None);
    }
}
