//! CORS for the Engine.IO endpoint: long-polling from browsers is plain
//! cross-origin XHR/fetch, which browsers only let a page read when the
//! response names its origin.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::config::CorsConfig;

/// Adds the CORS headers for an allowed `origin` (the caller refused the
/// others). The origin is echoed, never `*`, with
/// `Access-Control-Allow-Credentials: true`: `socket.io-client` with
/// `withCredentials: true` needs both, and browsers refuse `*` with
/// credentials. This grants an unlisted origin nothing: a token from a
/// cookie still counts only from an origin listed by name (the CONNECT
/// handling's rule), so its requests carry no identity.
pub(crate) fn allow(origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// Answers a preflight (`OPTIONS`) request from an allowed origin.
pub(crate) fn preflight(origin: Option<&HeaderValue>, request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow(origin, headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Whether `origin` (absent for non-browser clients) may use the endpoint.
pub(crate) fn permitted(cors: &CorsConfig, origin: Option<&HeaderValue>) -> bool {
    origin.is_none_or(|o| o.to_str().is_ok_and(|o| cors.allows(o)))
}
