//! Polling requests as HTTP: methods, content types and the reference
//! server's statuses and bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use confab_protocol::engineio::HandshakeError;
use http::{HeaderMap, Method, StatusCode, header};

use super::{PollError, PollingSessions};

/// The content type of GET responses (the reference server's).
const TEXT: &str = "text/plain; charset=UTF-8";

/// Answers a polling request. `sid` is the query's; without one the
/// request is a handshake, and `open` makes the session and returns the
/// open packet to answer with.
pub(crate) async fn handle(
    sessions: &Arc<PollingSessions>,
    method: &Method,
    sid: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    open: impl FnOnce() -> String,
) -> Response {
    let Some(sid) = sid else {
        if method != Method::GET {
            return error(HandshakeError::BadHandshakeMethod);
        }
        return text(open());
    };
    match *method {
        Method::GET => match sessions.get_request(sid).await {
            Ok(payload) => text(payload),
            Err(e) => refused(e),
        },
        Method::POST => post(sessions, sid, headers, body).await,
        _ => error(HandshakeError::BadRequest),
    }
}

async fn post(
    sessions: &Arc<PollingSessions>,
    sid: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/octet-stream"));
    if binary {
        // Engine.IO v4 sends binary as base64 text: a v3 client, or not a
        // client at all.
        sessions.kill(sid);
        return error(HandshakeError::BadRequest);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > sessions.max_payload) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let body = match axum::body::to_bytes(body, sessions.max_payload).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    match sessions.post_request(sid, body).await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
        Err(e) => refused(e),
    }
}

fn text(body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, TEXT)], body.into()).into_response()
}

/// The reference server's answer to each refusal.
pub(super) fn refused(e: PollError) -> Response {
    match e {
        PollError::UnknownSid => error(HandshakeError::UnknownSid),
        PollError::BadRequest | PollError::Malformed => error(HandshakeError::BadRequest),
        PollError::Overlap => StatusCode::BAD_REQUEST.into_response(),
        PollError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    }
}

/// An Engine.IO error: `{"code", "message"}` with its status.
pub(crate) fn error(e: HandshakeError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response()
}
