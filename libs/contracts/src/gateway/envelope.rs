//! The gateway-to-gateway messages on Redis, where pub/sub has neither
//! headers nor reply subjects: one [`Envelope`] per message, published on
//! the topic of the gateway its subject belongs to
//! ([`super::GatewayName::topic`]). The subjects, headers and bodies are
//! those of the NATS wire (the rest of [`super`]); only the framing is
//! Redis'.
//!
//! Layout: the magic `CGW1`, then the subject, the reply subject (empty:
//! none), the number of headers (u16) and each header's name and value,
//! every string as a u16 big-endian length and its bytes; the body is the
//! rest, as it is (never escaped).

use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use bytes::{BufMut, Bytes, BytesMut};

/// The first bytes of every envelope (the layout's version).
pub const MAGIC: &[u8] = b"CGW1";

/// The header of the answer a gateway's router gives a request for a
/// subject nobody there subscribes to (NATS answers "no responders").
pub const NO_RESPONDERS_HEADER: &str = "Confab-No-Responders";

/// One message for a gateway's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The subject it is for (`confab.gateway.v1.{gateway}.…`).
    pub subject: String,
    /// Where the answer goes, for a request.
    pub reply: Option<String>,
    /// The NATS wire's headers (`Authorization`, `Confab-Answer`, ...).
    pub headers: HeaderMap,
    /// The body, as it is.
    pub body: Bytes,
}

fn put_str(out: &mut BytesMut, s: &str) -> Option<()> {
    out.put_u16(u16::try_from(s.len()).ok()?);
    out.put_slice(s.as_bytes());
    Some(())
}

fn take_str(buf: &mut Bytes) -> Option<String> {
    if buf.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() - 2 < len {
        return None;
    }
    let s = String::from_utf8(buf.slice(2..2 + len).to_vec()).ok()?;
    *buf = buf.slice(2 + len..);
    Some(s)
}

impl Envelope {
    /// The bytes to publish; `None` when a subject, header or the header
    /// count does not fit its u16 length.
    pub fn encode(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(64 + self.subject.len() + self.body.len());
        out.put_slice(MAGIC);
        put_str(&mut out, &self.subject)?;
        put_str(&mut out, self.reply.as_deref().unwrap_or(""))?;
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .flat_map(|(name, values)| {
                let name: &str = name.as_ref();
                values.iter().map(move |v| (name, v.as_str()))
            })
            .collect();
        out.put_u16(u16::try_from(headers.len()).ok()?);
        for (name, value) in headers {
            put_str(&mut out, name)?;
            put_str(&mut out, value)?;
        }
        out.put_slice(&self.body);
        Some(out.freeze())
    }

    /// The envelope in `bytes` (sharing the body); `None` when it is not
    /// one (a header that NATS would refuse included).
    pub fn decode(bytes: Bytes) -> Option<Self> {
        let mut buf = bytes
            .strip_prefix(MAGIC)
            .map(|_| bytes.slice(MAGIC.len()..))?;
        let subject = take_str(&mut buf)?;
        let reply = Some(take_str(&mut buf)?).filter(|r| !r.is_empty());
        if buf.len() < 2 {
            return None;
        }
        let count = u16::from_be_bytes([buf[0], buf[1]]);
        buf = buf.slice(2..);
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = HeaderName::from_str(&take_str(&mut buf)?).ok()?;
            let value = HeaderValue::from_str(&take_str(&mut buf)?).ok()?;
            headers.append(name, value);
        }
        Some(Self {
            subject,
            reply,
            headers,
            body: buf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_the_body_unescaped() {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", "Bearer x");
        headers.insert(super::super::ANSWER_HEADER, "payload");
        let body = Bytes::from("42[\"m\",\"\\\"\"]\u{1e}3".repeat(100));
        let e = Envelope {
            subject: "confab.gateway.v1.gw-1.poll".into(),
            reply: Some("confab.gateway.v1.gw-2.inbox.abc".into()),
            headers,
            body: body.clone(),
        };
        let bytes = e.encode().unwrap();
        assert!(bytes.ends_with(&body), "the body as it is");
        assert_eq!(Envelope::decode(bytes.clone()), Some(e.clone()));
        let plain = Envelope {
            reply: None,
            headers: HeaderMap::new(),
            ..e
        };
        assert_eq!(Envelope::decode(plain.encode().unwrap()), Some(plain));
        assert_eq!(Envelope::decode(bytes.slice(..10)), None);
        assert_eq!(Envelope::decode(Bytes::from_static(b"XGW1")), None);
    }
}
