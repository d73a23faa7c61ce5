//! Finding the token in the handshake: each source and their precedence.

use confab_auth::{
    AuthConfig, AuthError, TokenSource, Verifier, extract_token, extract_token_with_source,
};
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};
use serde_json::json;

use crate::common::*;

fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn from_the_auth_payload() {
    let auth = json!({"token": "t.a.p"});
    assert_eq!(
        extract_token_with_source(Some(&auth), &HeaderMap::new(), None),
        Some(("t.a.p".into(), TokenSource::AuthPayload))
    );
    // Trimmed; a "Bearer " prefix is tolerated.
    let auth = json!({"token": "  Bearer t.a.p "});
    assert_eq!(
        extract_token(Some(&auth), &HeaderMap::new(), None).as_deref(),
        Some("t.a.p")
    );
    // Not a usable token: absent.
    for auth in [
        json!({"token": ""}),
        json!({"token": 42}),
        json!({"tok": "x"}),
        json!("x"),
        json!(null),
    ] {
        assert_eq!(
            extract_token(Some(&auth), &HeaderMap::new(), None),
            None,
            "{auth}"
        );
    }
    assert_eq!(extract_token(None, &HeaderMap::new(), None), None);
}

#[test]
fn from_the_authorization_header() {
    for value in ["Bearer h.e.d", "bearer h.e.d", "BEARER   h.e.d  "] {
        let h = headers(&[(AUTHORIZATION, value)]);
        assert_eq!(
            extract_token_with_source(None, &h, None),
            Some(("h.e.d".into(), TokenSource::AuthorizationHeader)),
            "{value}"
        );
    }
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "Bearerh.e.d",
        "h.e.d",
    ] {
        let h = headers(&[(AUTHORIZATION, value)]);
        assert_eq!(extract_token(None, &h, None), None, "{value}");
    }
    // The first Bearer header wins when there are several.
    let h = headers(&[
        (AUTHORIZATION, "Basic x"),
        (AUTHORIZATION, "Bearer second"),
        (AUTHORIZATION, "Bearer third"),
    ]);
    assert_eq!(extract_token(None, &h, None).as_deref(), Some("second"));
}

#[test]
fn from_the_cookie() {
    let h = headers(&[(COOKIE, "theme=dark; confab_jwt=c.o.k; other=1")]);
    assert_eq!(
        extract_token_with_source(None, &h, Some("confab_jwt")),
        Some(("c.o.k".into(), TokenSource::Cookie))
    );
    // Only when a cookie name is configured, and only that exact name.
    assert_eq!(extract_token(None, &h, None), None);
    assert_eq!(extract_token(None, &h, Some("jwt")), None);
    assert_eq!(extract_token(None, &h, Some("Confab_jwt")), None);
    // Quoted value, split Cookie headers (HTTP/2), empty value skipped.
    let h = headers(&[
        (COOKIE, "a=1; confab_jwt="),
        (COOKIE, "confab_jwt=\"q.u.o\""),
    ]);
    assert_eq!(
        extract_token(None, &h, Some("confab_jwt")).as_deref(),
        Some("q.u.o")
    );
    // A cookie whose name merely ends with the configured one.
    let h = headers(&[(COOKIE, "xconfab_jwt=nope")]);
    assert_eq!(extract_token(None, &h, Some("confab_jwt")), None);
}

#[test]
fn precedence_is_payload_then_header_then_cookie() {
    let all = headers(&[
        (AUTHORIZATION, "Bearer from-header"),
        (COOKIE, "sid=from-cookie"),
    ]);
    let auth = json!({"token": "from-payload"});
    assert_eq!(
        extract_token_with_source(Some(&auth), &all, Some("sid")),
        Some(("from-payload".into(), TokenSource::AuthPayload))
    );
    assert_eq!(
        extract_token_with_source(Some(&json!({})), &all, Some("sid")),
        Some(("from-header".into(), TokenSource::AuthorizationHeader))
    );
    // An empty payload token falls through to the next source.
    assert_eq!(
        extract_token(Some(&json!({"token": " "})), &all, Some("sid")).as_deref(),
        Some("from-header")
    );
    let cookie_only = headers(&[(AUTHORIZATION, "Basic abc"), (COOKIE, "sid=from-cookie")]);
    assert_eq!(
        extract_token_with_source(None, &cookie_only, Some("sid")),
        Some(("from-cookie".into(), TokenSource::Cookie))
    );
    assert_eq!(TokenSource::Cookie.as_str(), "cookie");
}

#[tokio::test]
async fn authenticate_extracts_then_verifies() {
    let v = Verifier::new(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        cookie_name: Some("sid".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let token = hs256(&claims());
    let h = headers(&[(COOKIE, &format!("sid={token}"))]);
    let (claims, source) = v.authenticate(None, &h).await.unwrap();
    assert_eq!(
        (claims.user.as_str(), source),
        ("alice", TokenSource::Cookie)
    );

    // A bad payload token is not rescued by a good cookie: the first token
    // found is the one verified.
    let auth = json!({"token": "garbage"});
    assert_eq!(
        v.authenticate(Some(&auth), &h).await.unwrap_err().code(),
        "malformed_token"
    );

    let err = v.authenticate(None, &HeaderMap::new()).await.unwrap_err();
    assert_eq!(err, AuthError::missing_token(Some("sid")));
    assert_eq!(err.code(), "missing_token");
    let msg = err.to_string();
    assert!(
        msg.contains("auth payload")
            && msg.contains("Authorization: Bearer")
            && msg.contains("`sid` cookie"),
        "{msg}"
    );
}
