//! HS256 with a shared secret: claims, signatures, algorithm pinning, dev
//! tokens.

use std::time::Duration;

use confab_auth::{
    Algorithm, AuthConfig, AuthError, ConfigError, DEV_SECRET, MAX_TOKEN_BYTES, MintError,
    Verifier, mint_hs256, mint_hs256_with_claims,
};
use jsonwebtoken::EncodingKey;
use serde_json::json;

use crate::common::*;

fn config() -> AuthConfig {
    AuthConfig {
        hs256_secret: Some(SECRET.into()),
        leeway: Duration::from_secs(5),
        ..AuthConfig::default()
    }
}

fn verifier() -> Verifier {
    Verifier::new(config()).unwrap()
}

fn strict_verifier() -> Verifier {
    Verifier::new(AuthConfig {
        issuer: Some("https://id.confab.test".into()),
        audience: Some("confab".into()),
        ..config()
    })
    .unwrap()
}

async fn code_of(v: &Verifier, token: &str) -> &'static str {
    v.verify(token).await.unwrap_err().code()
}

#[tokio::test]
async fn valid_token_yields_the_claims() {
    let c = with(with(claims(), "name", json!("Alice")), "admin", json!(true));
    let got = verifier().verify(&hs256(&c)).await.unwrap();
    assert_eq!(got.user.as_str(), "alice");
    assert_eq!(got.expires_at, c["exp"].as_u64().unwrap());
    assert_eq!(got.issued_at, c["iat"].as_u64());
    assert_eq!(got.name.as_deref(), Some("Alice"));
    assert_eq!(got.raw["name"], "Alice");
    assert_eq!(got.raw["admin"], true, "other claims are kept as sent");
}

#[tokio::test]
async fn expired_token_says_when() {
    let exp = now() - 120;
    let err = verifier()
        .verify(&hs256(&with(claims(), "exp", json!(exp))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::Expired { expired_at, leeway_secs: 5, .. } if expired_at == exp)
    );
    assert_eq!(err.code(), "token_expired");
    assert!(err.to_string().starts_with("token expired at 20"), "{err}");
    // Inside the leeway it still passes.
    let ok = hs256(&with(claims(), "exp", json!(now() - 2)));
    assert!(verifier().verify(&ok).await.is_ok());
}

#[tokio::test]
async fn exp_is_required() {
    let err = verifier()
        .verify(&hs256(&without(claims(), "exp")))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::MissingClaim { claim: "exp" });
    assert_eq!(
        code_of(&verifier(), &hs256(&with(claims(), "exp", json!("soon")))).await,
        "invalid_claim"
    );
}

#[tokio::test]
async fn nbf_is_honored() {
    let nbf = now() + 600;
    let err = verifier()
        .verify(&hs256(&with(claims(), "nbf", json!(nbf))))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid { not_before, .. } if not_before == nbf));
    assert_eq!(err.code(), "token_not_yet_valid");
    let ok = hs256(&with(claims(), "nbf", json!(now() + 2)));
    assert!(verifier().verify(&ok).await.is_ok(), "within leeway");
    let ok = hs256(&with(claims(), "nbf", json!(now() - 60)));
    assert!(verifier().verify(&ok).await.is_ok());
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let good = with(
        with(claims(), "iss", json!("https://id.confab.test")),
        "aud",
        json!(["other", "confab"]),
    );
    assert!(strict_verifier().verify(&hs256(&good)).await.is_ok());

    let err = strict_verifier()
        .verify(&hs256(&with(
            good.clone(),
            "iss",
            json!("https://evil.test"),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "wrong_issuer");
    assert!(err.to_string().contains("https://evil.test"), "{err}");
    assert_eq!(
        code_of(&strict_verifier(), &hs256(&without(good.clone(), "iss"))).await,
        "wrong_issuer"
    );

    let err = strict_verifier()
        .verify(&hs256(&with(good.clone(), "aud", json!("billing"))))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::WrongAudience {
            expected: "confab".into(),
            actual: vec!["billing".into()]
        }
    );
    assert_eq!(
        code_of(&strict_verifier(), &hs256(&without(good.clone(), "aud"))).await,
        "wrong_audience"
    );

    // Without issuer/audience configured, neither is checked.
    let any = with(with(claims(), "iss", json!("x")), "aud", json!("y"));
    assert!(verifier().verify(&hs256(&any)).await.is_ok());
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let other = EncodingKey::from_secret(b"another-secret-that-is-long-enough-000");
    let token = sign(Algorithm::HS256, None, &claims(), &other);
    let err = verifier().verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "bad_signature");
    assert!(err.to_string().contains("hs256_secret"), "{err}");

    // A valid token whose payload was altered.
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = base64_url(&with(claims(), "sub", json!("mallory")).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(code_of(&verifier(), &forged).await, "bad_signature");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn sub_must_be_present_and_a_valid_user_id() {
    let err = verifier()
        .verify(&hs256(&without(claims(), "sub")))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::MissingSubject);
    assert_eq!(err.code(), "missing_sub");

    for bad in [
        json!("a.b"),
        json!("a b"),
        json!("rooms.*"),
        json!(""),
        json!(7),
    ] {
        let err = verifier()
            .verify(&hs256(&with(claims(), "sub", bad.clone())))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_sub", "{bad}: {err}");
    }
    let err = verifier()
        .verify(&hs256(&with(claims(), "sub", json!("a.b"))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"a.b\""), "{err}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims(), b"");
        let err = verifier().verify(&token).await.unwrap_err();
        assert_eq!(err.code(), "algorithm_not_allowed", "{alg}");
        assert_eq!(
            err.to_string(),
            format!("token algorithm \"{alg}\" is not allowed; allowed: HS256 (auth.algorithms)")
        );
    }
    // Even when something is in the signature segment.
    let token = raw_token(&json!({"alg": "none"}), &claims(), b"sig");
    assert_eq!(code_of(&verifier(), &token).await, "algorithm_not_allowed");
}

#[tokio::test]
async fn algorithms_outside_the_allow_list_are_refused() {
    // Same secret, but HS512 is not allowed.
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = sign(Algorithm::HS512, None, &claims(), &key);
    let err = verifier().verify(&token).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::AlgorithmNotAllowed {
            alg: "HS512".into(),
            allowed: vec!["HS256".into()]
        }
    );
    // Allowing it makes the same token pass.
    let v = Verifier::new(AuthConfig {
        algorithms: vec![Algorithm::HS256, Algorithm::HS512],
        ..config()
    })
    .unwrap();
    assert!(v.verify(&token).await.is_ok());

    // An RS256 token when only HS256 is configured: refused before any key
    // is looked at.
    let token = sign_with_fixture("rsa-1", &claims());
    assert_eq!(code_of(&verifier(), &token).await, "algorithm_not_allowed");
    // Header names are exact: "hs256" is not HS256.
    let token = raw_token(&json!({"alg": "hs256"}), &claims(), b"x");
    assert_eq!(code_of(&verifier(), &token).await, "algorithm_not_allowed");
}

#[tokio::test]
async fn malformed_tokens_are_explained() {
    let v = verifier();
    let cases = [
        ("", "empty"),
        ("abc", "found 1"),
        ("a.b", "found 2"),
        ("a.b.c.d.e", "JWE"),
        ("!!!.e30.sig", "base64url"),
        (&format!("{}.e30.c2ln", base64_url("[1,2]")), "JSON object"),
        (
            &format!("{}.e30.c2ln", base64_url("{\"typ\":\"JWT\"}")),
            "no `alg`",
        ),
    ];
    for (token, needle) in cases {
        let err = v.verify(token).await.unwrap_err();
        assert_eq!(err.code(), "malformed_token", "{token}");
        assert!(err.to_string().contains(needle), "{token}: {err}");
    }
    // Signed, but the payload is not an object.
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!([1, 2]), &key).unwrap();
    assert_eq!(code_of(&v, &token).await, "malformed_token");
    // Critical header extensions are refused.
    let token = raw_token(
        &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        &claims(),
        b"x",
    );
    let err = v.verify(&token).await.unwrap_err();
    assert!(err.to_string().contains("critical"), "{err}");
    // Oversized tokens are refused before any decoding.
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(
        v.verify(&huge)
            .await
            .unwrap_err()
            .to_string()
            .contains("bytes")
    );
}

#[tokio::test]
async fn minted_dev_tokens_verify() {
    let v = Verifier::new(AuthConfig {
        issuer: Some("confab-dev".into()),
        audience: Some("confab".into()),
        ..AuthConfig::dev()
    })
    .unwrap();
    let token = mint_hs256(
        DEV_SECRET,
        "dev_user-1",
        Duration::from_secs(3600),
        Some("confab-dev"),
        Some("confab"),
    )
    .unwrap();
    let claims = v.verify(&token).await.unwrap();
    assert_eq!(claims.user.as_str(), "dev_user-1");
    let iat = claims.issued_at.unwrap();
    assert_eq!(claims.expires_at, iat + 3600);

    let extra = json!({"name": "Dev", "admin": true, "sub": "ignored"});
    let token = mint_hs256_with_claims(
        DEV_SECRET,
        "dev",
        Duration::from_millis(1500),
        Some("confab-dev"),
        Some("confab"),
        extra.as_object().unwrap(),
    )
    .unwrap();
    let claims = v.verify(&token).await.unwrap();
    assert_eq!(claims.user.as_str(), "dev", "standard claims win");
    assert_eq!(claims.raw["admin"], true);
    assert_eq!(claims.name.as_deref(), Some("Dev"));
    assert_eq!(
        claims.expires_at,
        claims.issued_at.unwrap() + 2,
        "ttl rounds up"
    );

    // Another secret does not verify it.
    let token = mint_hs256(&"z".repeat(32), "dev", Duration::from_secs(60), None, None).unwrap();
    assert_eq!(code_of(&verifier(), &token).await, "bad_signature");
}

#[test]
fn minting_refuses_what_the_verifier_would_refuse() {
    let err = mint_hs256(DEV_SECRET, "a.b", Duration::from_secs(60), None, None).unwrap_err();
    assert!(matches!(err, MintError::InvalidUser { .. }), "{err}");
    assert!(err.to_string().contains("\"a.b\""), "{err}");
    let err = mint_hs256("short", "alice", Duration::from_secs(60), None, None).unwrap_err();
    assert_eq!(err, MintError::SecretTooShort { len: 5 });
}

#[test]
fn verifier_refuses_bad_configs() {
    assert_eq!(
        Verifier::new(AuthConfig::default()).unwrap_err(),
        ConfigError::MissingSecret { alg: "HS256" }
    );
    assert_eq!(
        Verifier::new(AuthConfig {
            algorithms: vec![Algorithm::RS256],
            ..config()
        })
        .unwrap_err(),
        ConfigError::MissingJwksUrl { alg: "RS256" }
    );
    assert_eq!(
        Verifier::new(AuthConfig {
            hs256_secret: Some("x".repeat(31).into()),
            ..config()
        })
        .unwrap_err(),
        ConfigError::SecretTooShort { len: 31 }
    );
}

#[tokio::test]
async fn verifier_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Verifier>();
    let v = verifier();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let v = v.clone();
        let token = hs256(&with(claims(), "sub", json!(format!("user{i}"))));
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().user.as_str(), format!("user{i}"));
    }
    assert!(
        !format!("{v:?}").contains(SECRET),
        "Debug must not leak the secret"
    );
}
