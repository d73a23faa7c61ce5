//! Finding the token in a Socket.IO handshake.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use serde_json::Value;

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// The Socket.IO CONNECT packet's auth payload: `{"token": "..."}`.
    AuthPayload,
    /// An `Authorization: Bearer ...` header on the handshake request.
    AuthorizationHeader,
    /// The configured cookie. Cookies are sent by browsers on cross-site
    /// requests too: the gateway must check `Origin` before trusting a
    /// cookie-borne token (cross-site WebSocket hijacking).
    Cookie,
}

impl TokenSource {
    /// A short stable name (`auth_payload`, `authorization_header`,
    /// `cookie`), e.g. for a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::AuthPayload => "auth_payload",
            TokenSource::AuthorizationHeader => "authorization_header",
            TokenSource::Cookie => "cookie",
        }
    }
}

/// Finds the token, trying in order: the CONNECT auth payload's `token`
/// field, the `Authorization: Bearer` header, then the cookie named
/// `cookie_name` (if any). See [`extract_token_with_source`].
pub fn extract_token(
    auth: Option<&Value>,
    headers: &HeaderMap,
    cookie_name: Option<&str>,
) -> Option<String> {
    extract_token_with_source(auth, headers, cookie_name).map(|(token, _)| token)
}

/// Like [`extract_token`], also telling where the token came from.
///
/// Rules: values are trimmed, and an empty value counts as absent (the next
/// source is tried). In the auth payload, `token` must be a JSON string; a
/// leading `Bearer ` is tolerated there too. The header scheme is matched
/// case-insensitively; with several `Authorization` headers the first
/// Bearer one wins. The cookie is looked up in every `Cookie` header, its
/// name compared exactly, surrounding double quotes removed.
pub fn extract_token_with_source(
    auth: Option<&Value>,
    headers: &HeaderMap,
    cookie_name: Option<&str>,
) -> Option<(String, TokenSource)> {
    if let Some(token) = auth
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .and_then(|t| non_empty(strip_bearer(t).unwrap_or(t)))
    {
        return Some((token, TokenSource::AuthPayload));
    }
    if let Some(token) = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| strip_bearer(v).and_then(non_empty))
    {
        return Some((token, TokenSource::AuthorizationHeader));
    }
    let name = cookie_name?;
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .find_map(|(_, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            non_empty(value)
        })
        .map(|token| (token, TokenSource::Cookie))
}

/// `Bearer <token>` (scheme case-insensitive) -> `<token>`.
fn strip_bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// RFC 6265 `token` characters (what a cookie name may contain).
pub(crate) fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
