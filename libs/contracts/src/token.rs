//! The service credential: `Authorization: Bearer <service token>`,
//! parsed once and compared in constant time.

use std::sync::Arc;

use crate::error::ApiError;

/// Shortest service token any Confab binary accepts (characters): the
/// token lets a caller act for any user, so it must not be guessable.
pub const MIN_SERVICE_TOKEN_LEN: usize = 32;

/// Why a configured service token is refused (too short), naming the
/// minimum and how to make one; `None` when it is long enough.
pub fn service_token_problem(token: &str) -> Option<String> {
    (token.len() < MIN_SERVICE_TOKEN_LEN).then(|| {
        format!(
            "is {} characters; use at least {MIN_SERVICE_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
            token.len()
        )
    })
}

/// The header carrying `Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "Authorization";

/// The shared secret services present to each other. Without one
/// configured, every caller is refused.
#[derive(Clone, Default)]
pub struct ServiceToken(Option<Arc<str>>);

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "[redacted]"
        } else {
            "none"
        };
        f.debug_tuple("ServiceToken").field(&shown).finish()
    }
}

impl ServiceToken {
    /// The token; `None` or an empty string configure none.
    pub fn new(token: Option<String>) -> Self {
        Self(token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// Whether `candidate` is the token.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), candidate.as_bytes()))
    }

    /// Checks that an `Authorization` header value carries the token.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        if self.matches(bearer(authorization)?) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "the bearer token is not the service token",
            ))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    let value = authorization
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(token)
}

/// Compares without an early exit on the first differing byte, so the
/// time taken says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_token_passes() {
        let token = ServiceToken::new(Some("s3cret".into()));
        assert!(token.check(Some("Bearer s3cret")).is_ok());
        assert!(token.check(Some("bearer  s3cret ")).is_ok());
        for bad in [
            None,
            Some("s3cret"),
            Some("Bearer "),
            Some("Bearer nope"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(token.check(bad).unwrap_err().0.code, "unauthorized");
        }
        let none = ServiceToken::new(Some(String::new()));
        assert!(none.check(Some("Bearer ")).is_err());
        assert!(!none.matches(""));
        assert_eq!(format!("{token:?}"), "ServiceToken(\"[redacted]\")");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
