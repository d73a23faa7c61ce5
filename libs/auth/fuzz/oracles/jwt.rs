//! The oracle of the `jwt` fuzz target: arbitrary bytes through
//! `Verifier::verify` (HS256/HS512 with a secret, issuer and audience set),
//! in two ways:
//!
//! 1. The input (lossy UTF-8) as the token itself: shape, header and
//!    base64 parsing of a token nobody signed.
//! 2. The input split at its first `0x00` into a JOSE header and a claims
//!    document, each base64url-encoded and the pair signed with the
//!    verifier's secret by the header's `alg` (HS512 if it says so, else
//!    HS256): the header and claims parsing behind a valid signature.
//!
//! Oracles: no panic; every error has a code from `ERROR_CODES` and a
//! public message; an accepted token's claims are exactly the signed claims
//! document, with `sub` as the user, `exp` in the future (with leeway), the
//! configured `iss` and an `aud` naming the configured audience; the same
//! token with one signature byte changed is refused.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_auth::{Algorithm, AuthConfig, AuthError, ERROR_CODES, Verifier};
use jsonwebtoken::EncodingKey;
use serde_json::{Map, Value};

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";
const ISSUER: &str = "fuzz-iss";
const AUDIENCE: &str = "fuzz-aud";

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            algorithms: vec![Algorithm::HS256, Algorithm::HS512],
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            ..AuthConfig::default()
        })
        .expect("valid fuzz config")
    })
}

/// Verifies without a runtime: the HMAC path never awaits I/O.
fn verify(token: &str) -> Result<confab_auth::Claims, AuthError> {
    futures::executor::block_on(verifier().verify(token))
}

fn check_error(e: &AuthError) {
    assert!(ERROR_CODES.contains(&e.code()), "unknown code {}", e.code());
    let _ = e.public_message();
    let _ = e.to_string();
}

/// Runs every oracle on one input; panics on a violation.
pub fn check(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    if let Err(e) = verify(&raw) {
        check_error(&e);
    }

    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    accepted(header, claims);
}

/// Signs `header` and `claims` (raw bytes, base64url-encoded as they are)
/// with the verifier's secret, verifies the token and checks the outcome;
/// whether it was accepted.
pub fn accepted(header: &[u8], claims: &[u8]) -> bool {
    let alg = match serde_json::from_slice::<Map<String, Value>>(header) {
        Ok(h) if h.get("alg").and_then(Value::as_str) == Some("HS512") => Algorithm::HS512,
        _ => Algorithm::HS256,
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        alg,
    )
    .expect("HMAC signing never fails");
    let token = format!("{signing_input}.{signature}");
    match verify(&token) {
        Err(e) => {
            check_error(&e);
            false
        }
        Ok(c) => {
            let doc: Map<String, Value> =
                serde_json::from_slice(claims).expect("accepted claims are a JSON object");
            assert_eq!(c.raw, doc, "the claims are the signed document");
            assert_eq!(
                doc.get("sub").and_then(Value::as_str),
                Some(c.user.as_str())
            );
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs();
            assert!(
                c.expires_at.saturating_add(30) > now,
                "expired token accepted"
            );
            assert_eq!(doc.get("iss").and_then(Value::as_str), Some(ISSUER));
            let aud_ok = match doc.get("aud") {
                Some(Value::String(a)) => a == AUDIENCE,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(AUDIENCE)),
                _ => false,
            };
            assert!(aud_ok, "wrong audience accepted: {:?}", doc.get("aud"));
            let header: Map<String, Value> =
                serde_json::from_slice(header).expect("accepted header is a JSON object");
            assert!(!header.contains_key("crit"), "crit accepted");

            // One signature character changed: refused.
            let mut forged = token.into_bytes();
            let last = forged.len() - 2;
            forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).expect("ASCII");
            match verify(&forged) {
                Ok(_) => panic!("a forged signature was accepted"),
                Err(e) => check_error(&e),
            }
            true
        }
    }
}
