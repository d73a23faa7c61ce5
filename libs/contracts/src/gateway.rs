//! Gateway to gateway: the polling requests one gateway forwards to the
//! gateway that owns the session (no sticky sessions behind a load
//! balancer).
//!
//! Every gateway answers on subjects of its own id, outside any queue
//! group: `confab.gateway.v1.{gateway}.poll` (a GET) and
//! `confab.gateway.v1.{gateway}.post` (a POST). The id comes from a sid
//! a client sent, so it is checked by [`GatewayName::parse`] before it
//! becomes a subject token. Requests carry `Authorization: Bearer <service
//! token>` when one is configured.
//!
//! A forwarded GET is confirmed: the request names a `control` subject
//! (the forwarder's inbox) on which the forwarder publishes [`ACK`] once
//! it has the reply, or [`CANCEL`] when its client went away. The owner
//! keeps the packets it answered with until [`ACK`] arrives and puts them
//! back for the next GET otherwise (core NATS is at-most-once).
//!
//! Payloads travel as they are, never escaped into JSON (a GET answer or
//! POST body may be `maxPayload`, 1 MB, which must fit a NATS message):
//! a POST's sid rides in the [`SID_HEADER`], an answer's kind in the
//! [`ANSWER_HEADER`] (see [`PollAnswer::encode`]).
//!
//! A WebSocket upgrade that lands on another gateway is relayed
//! (`confab.gateway.v1.{gateway}.upgrade`, see [`relay`]).
//!
//! On a Redis deployment the same messages travel over Redis pub/sub:
//! every message for a subject of gateway `G` is an [`envelope`]
//! published on `G`'s one topic ([`GatewayName::topic`]).

pub mod envelope;
pub mod relay;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The header naming the kind of an owner's answer: `payload` (the body is
/// the GET's payload), `ok`, `relay` (the body is the owner's relay
/// subject) or `refused` (the body is the [`Refusal`]'s code).
pub const ANSWER_HEADER: &str = "Confab-Answer";

/// The header carrying a forwarded POST's sid (its body is the payload).
pub const SID_HEADER: &str = "Confab-Sid";

/// The subject prefix of gateway-to-gateway requests.
pub const PREFIX: &str = "confab.gateway.v1";

/// The forwarder has the reply to a forwarded GET: the owner may drop
/// the packets it sent.
pub const ACK: &[u8] = b"ack";

/// The forwarder's client went away: the owner releases its held GET (or
/// puts back the packets it answered with).
pub const CANCEL: &[u8] = b"cancel";

/// A gateway id fit to be a subject token: 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayName<'a>(&'a str);

impl<'a> GatewayName<'a> {
    /// The id, when it is fit to be a subject token.
    pub fn parse(id: &'a str) -> Option<Self> {
        let fits = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        fits.then_some(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Where this gateway answers forwarded GETs.
    pub fn poll_subject(&self) -> String {
        format!("{PREFIX}.{}.poll", self.0)
    }

    /// Where this gateway answers forwarded POSTs.
    pub fn post_subject(&self) -> String {
        format!("{PREFIX}.{}.post", self.0)
    }

    /// Where this gateway answers relayed WebSocket upgrades.
    pub fn upgrade_subject(&self) -> String {
        format!("{PREFIX}.{}.upgrade", self.0)
    }

    /// The prefix of this gateway's inboxes on Redis
    /// (`confab.gateway.v1.{gateway}.inbox.`): a peer that answers an
    /// inbox finds the gateway's topic from it.
    pub fn inbox_prefix(&self) -> String {
        format!("{PREFIX}.{}.inbox.", self.0)
    }

    /// The Redis topic carrying every message for this gateway's subjects
    /// (requests and its inboxes), as [`envelope::Envelope`]s.
    pub fn topic(&self) -> String {
        format!("{PREFIX}.{}", self.0)
    }

    /// The gateway a subject of this protocol belongs to
    /// (`confab.gateway.v1.{gateway}.…`); `None` for any other subject.
    pub fn of_subject(subject: &'a str) -> Option<Self> {
        let rest = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
        let (gateway, tail) = rest.split_once('.')?;
        if tail.is_empty() {
            return None;
        }
        Self::parse(gateway)
    }
}

/// Whether `subject` may be a [`PollRequest::control`]: an inbox-like
/// subject without wildcards or spaces.
pub fn valid_control(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 256
        && subject
            .split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">")
        && !subject
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'*' || b == b'>')
}

/// A forwarded GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    /// The session.
    pub sid: String,
    /// Where the forwarder publishes [`ACK`] or [`CANCEL`].
    pub control: String,
}

/// A forwarded POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRequest {
    /// The session.
    pub sid: String,
    /// The POST body (an Engine.IO v4 payload is text).
    pub body: Bytes,
}

impl PostRequest {
    /// Headers and body of the NATS request: the sid in [`SID_HEADER`],
    /// the payload as it is.
    pub fn encode(&self) -> (HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(SID_HEADER, self.sid.as_str());
        (headers, self.body.clone())
    }

    /// The request from a NATS message's headers and body.
    pub fn decode(headers: Option<&HeaderMap>, body: Bytes) -> Option<Self> {
        let sid = headers?.get(SID_HEADER)?.as_str().to_owned();
        Some(Self { sid, body })
    }
}

/// Why the owner refused a forwarded request (its HTTP answer follows
/// from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such session.
    UnknownSid,
    /// The session moved to WebSocket, or the request does not fit it.
    BadRequest,
    /// A second GET while one was held: the session ended.
    Overlap,
    /// A POST body over `maxPayload`.
    TooLarge,
    /// A POST body that is not a valid payload: the session ended.
    Malformed,
    /// The service token was missing or wrong.
    Unauthorized,
}

const REFUSALS: [(Refusal, &str); 6] = [
    (Refusal::UnknownSid, "unknown_sid"),
    (Refusal::BadRequest, "bad_request"),
    (Refusal::Overlap, "overlap"),
    (Refusal::TooLarge, "too_large"),
    (Refusal::Malformed, "malformed"),
    (Refusal::Unauthorized, "unauthorized"),
];

impl Refusal {
    /// Its stable snake_case code.
    pub fn code(self) -> &'static str {
        REFUSALS
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("bad_request", |(_, c)| c)
    }

    /// The refusal a code names.
    pub fn from_code(code: &[u8]) -> Option<Self> {
        REFUSALS
            .iter()
            .find(|(_, c)| c.as_bytes() == code)
            .map(|(r, _)| *r)
    }
}

/// The owner's answer to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAnswer {
    /// A GET's payload (to be confirmed with [`ACK`]), as it is.
    Payload(Bytes),
    /// A POST's packets (or a relay message) reached the connection.
    Ok,
    /// An upgrade is relayed: where the forwarder sends the client's side
    /// of it (see [`relay`]).
    Relay(String),
    /// Refused.
    Refused(Refusal),
}

impl PollAnswer {
    /// Headers and body of the NATS reply: the kind in [`ANSWER_HEADER`],
    /// a payload as it is (not escaped: 1 MB of payload is 1 MB here).
    pub fn encode(&self) -> (HeaderMap, Bytes) {
        let (kind, body) = match self {
            Self::Payload(p) => ("payload", p.clone()),
            Self::Ok => ("ok", Bytes::new()),
            Self::Relay(s) => ("relay", Bytes::copy_from_slice(s.as_bytes())),
            Self::Refused(r) => ("refused", Bytes::from_static(r.code().as_bytes())),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ANSWER_HEADER, kind);
        (headers, body)
    }

    /// The answer from a NATS reply's headers and body; `None` when it is
    /// not one.
    pub fn decode(headers: Option<&HeaderMap>, body: Bytes) -> Option<Self> {
        match headers?.get(ANSWER_HEADER)?.as_str() {
            "payload" => Some(Self::Payload(body)),
            "ok" => Some(Self::Ok),
            "relay" => String::from_utf8(body.to_vec()).ok().map(Self::Relay),
            "refused" => Refusal::from_code(&body).map(Self::Refused),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_become_subject_tokens() {
        let gw = GatewayName::parse("gw-00ff").unwrap();
        assert_eq!(gw.poll_subject(), "confab.gateway.v1.gw-00ff.poll");
        assert_eq!(gw.post_subject(), "confab.gateway.v1.gw-00ff.post");
        for bad in ["", "a.b", "*", ">", "a b", "gw\n", &"x".repeat(65)] {
            assert!(GatewayName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_name_their_gateway() {
        let gw = GatewayName::parse("gw-1").unwrap();
        for s in [
            gw.poll_subject(),
            gw.upgrade_subject(),
            format!("{}x", gw.inbox_prefix()),
        ] {
            assert_eq!(GatewayName::of_subject(&s), Some(gw), "{s}");
        }
        for bad in [
            "confab.gateway.v1.gw-1",
            "confab.gateway.v1.gw-1.",
            "_INBOX.a.b",
            "confab.gateway.v1.a*b.poll",
        ] {
            assert_eq!(GatewayName::of_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn control_subjects_have_no_wildcards() {
        assert!(valid_control("_INBOX.abc.def"));
        for bad in ["", "_INBOX.*", "_INBOX.>", "a..b", "a b"] {
            assert!(!valid_control(bad), "{bad:?}");
        }
    }

    #[test]
    fn answers_round_trip() {
        let mut answers = vec![
            PollAnswer::Payload(Bytes::from_static(b"4hi")),
            PollAnswer::Ok,
            PollAnswer::Relay("_INBOX.x".into()),
        ];
        answers.extend(REFUSALS.iter().map(|(r, _)| PollAnswer::Refused(*r)));
        for a in answers {
            let (headers, body) = a.encode();
            assert_eq!(PollAnswer::decode(Some(&headers), body), Some(a));
        }
        assert_eq!(PollAnswer::decode(None, Bytes::new()), None);
    }

    #[test]
    fn a_payload_travels_unescaped() {
        let payload = Bytes::from("42[\"m\",\"\\\"\"]\u{1e}3".repeat(1000));
        let (_, body) = PollAnswer::Payload(payload.clone()).encode();
        assert_eq!(body, payload, "no byte added");
        let post = PostRequest {
            sid: "gw-1.abc".into(),
            body: payload.clone(),
        };
        let (headers, body) = post.encode();
        assert_eq!(body.len(), payload.len());
        assert_eq!(PostRequest::decode(Some(&headers), body), Some(post));
    }
}
