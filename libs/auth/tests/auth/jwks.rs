//! RS256 / ES256 / EdDSA through a JWKS served by a real HTTP server.

use std::time::{Duration, Instant};

use confab_auth::{Algorithm, AuthConfig, AuthError, Verifier};
use jsonwebtoken::EncodingKey;
use serde_json::json;

use crate::common::*;

fn jwks_config(url: &str) -> AuthConfig {
    AuthConfig {
        jwks_url: Some(url.to_owned()),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        jwks_min_refetch: Duration::from_secs(60),
        ..AuthConfig::default()
    }
}

fn verifier_with(cfg: AuthConfig) -> Verifier {
    Verifier::new(cfg).unwrap()
}

/// A token for an unknown kid; the signature is junk, as it is never
/// reached.
fn bogus_kid_token(i: usize) -> String {
    raw_token(
        &json!({"alg": "RS256", "typ": "JWT", "kid": format!("bogus-{i}")}),
        &claims(),
        &[7; 256],
    )
}

#[tokio::test]
async fn verifies_rs256_es256_and_eddsa() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1", "ec-1", "ed-1"]))).await;
    let v = verifier_with(jwks_config(&server.url));
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let c = with(claims(), "sub", json!(format!("user-{kid}")));
        let got = v.verify(&sign_with_fixture(kid, &c)).await.unwrap();
        assert_eq!(got.user.as_str(), format!("user-{kid}"));
    }
    assert_eq!(server.hits(), 1, "the key set is fetched once and cached");

    // A tampered signature is refused, naming the key.
    let token = sign_with_fixture("ec-1", &claims());
    let (rest, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let err = v
        .verify(&format!("{rest}.{flipped}{}", &sig[1..]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "bad_signature");
    assert!(err.to_string().contains("\"ec-1\""), "{err}");

    // Claim checks apply as for HS256.
    let expired = sign_with_fixture("ed-1", &with(claims(), "exp", json!(now() - 3600)));
    assert_eq!(
        v.verify(&expired).await.unwrap_err().code(),
        "token_expired"
    );
    let no_sub = sign_with_fixture("rsa-1", &without(claims(), "sub"));
    assert_eq!(v.verify(&no_sub).await.unwrap_err().code(), "missing_sub");
}

#[tokio::test]
async fn refresh_jwks_warms_the_cache() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1", "ec-1", "ed-1"]))).await;
    let v = verifier_with(jwks_config(&server.url));
    assert_eq!(v.refresh_jwks().await, Ok(3));
    assert_eq!(server.hits(), 1);
    v.verify(&sign_with_fixture("ed-1", &claims()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);

    let hs_only = verifier_with(AuthConfig::dev());
    assert_eq!(hs_only.refresh_jwks().await, Ok(0));
}

#[tokio::test]
async fn unknown_kid_triggers_a_refetch_that_picks_up_rotated_keys() {
    // Tokens are signed up front: RSA signing is slow in debug builds and
    // the timing below must not depend on it.
    let old_token = sign_with_fixture("rsa-1", &claims());
    let new_token = sign_with_fixture("rsa-2", &claims());
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1"]))).await;
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::from_millis(300),
        ..jwks_config(&server.url)
    });
    v.verify(&old_token).await.unwrap();
    assert_eq!(server.hits(), 1);

    // The issuer rotates: rsa-1 is retired, rsa-2 is published.
    server.set(Reply::Jwks(jwks_with(&["rsa-2"])));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let got = v.verify(&new_token).await.unwrap();
    assert_eq!(got.user.as_str(), "alice");
    assert_eq!(server.hits(), 2, "one refetch for the unknown kid");

    // The retired key is gone from the cache; the refetch it would trigger
    // is refused by the rate bound (the set was fetched just now).
    let err = v.verify(&old_token).await.unwrap_err();
    assert_eq!(err.code(), "unknown_kid");
    assert!(err.to_string().contains("jwks_min_refetch"), "{err}");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_new_kid_within_the_min_interval_waits_for_it() {
    let old_token = sign_with_fixture("rsa-1", &claims());
    let new_token = sign_with_fixture("rsa-2", &claims());
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1"]))).await;
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::from_millis(800),
        ..jwks_config(&server.url)
    });
    v.verify(&old_token).await.unwrap();
    server.set(Reply::Jwks(jwks_with(&["rsa-1", "rsa-2"])));

    let err = v.verify(&new_token).await.unwrap_err();
    assert!(
        matches!(&err, AuthError::UnknownKeyId { kid: Some(k), .. } if k == "rsa-2"),
        "{err}"
    );
    assert_eq!(server.hits(), 1, "rate-limited: no refetch yet");

    tokio::time::sleep(Duration::from_millis(850)).await;
    v.verify(&new_token).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_is_rate_bounded() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1"]))).await;
    let interval = Duration::from_millis(300);
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: interval,
        ..jwks_config(&server.url)
    });
    v.verify(&sign_with_fixture("rsa-1", &claims()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);

    let flood_for = Duration::from_millis(1200);
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < flood_for {
        let batch: Vec<_> = (0..25)
            .map(|_| {
                sent += 1;
                let v = v.clone();
                let token = bogus_kid_token(sent);
                tokio::spawn(async move { v.verify(&token).await })
            })
            .collect();
        for task in batch {
            assert_eq!(task.await.unwrap().unwrap_err().code(), "unknown_kid");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let hits = server.hits();
    // At most one fetch per interval (plus the initial load and one for a
    // partial interval); and the bound does not stop refetching altogether.
    let max = 2 + (elapsed.as_millis() / interval.as_millis()) as usize;
    assert!(sent >= 200, "flood too small: {sent}");
    assert!(
        (2..=max).contains(&hits),
        "{hits} JWKS fetches for {sent} bogus kids in {elapsed:?} (max {max})"
    );

    // Valid tokens kept working throughout.
    v.verify(&sign_with_fixture("rsa-1", &claims()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_fetch() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["ed-1"]))).await;
    server.set_delay(Duration::from_millis(500));
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::ZERO,
        ..jwks_config(&server.url)
    });
    let token = sign_with_fixture("ed-1", &claims());

    // 40 first-use verifications: one initial fetch.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(server.hits(), 1);

    // 40 concurrent unknown kids, even with no rate bound: one refetch.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let v = v.clone();
            let token = bogus_kid_token(i);
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code(), "unknown_kid");
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn jwks_server_down_is_a_clear_error() {
    let url = dead_url().await;
    let v = verifier_with(jwks_config(&url));
    let token = sign_with_fixture("ed-1", &claims());
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "jwks_unavailable");
    assert!(err.is_server_error());
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
    assert!(!err.public_message().contains(&url));

    // Immediately again: no new attempt (rate bound), same diagnosis.
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "jwks_unavailable");
    assert!(err.to_string().contains("jwks_min_refetch"), "{err}");
    assert_eq!(
        v.refresh_jwks().await.unwrap_err().code(),
        "jwks_unavailable"
    );
}

#[tokio::test]
async fn bad_jwks_responses_are_clear_errors_and_recovery_works() {
    let server = JwksServer::start(Reply::Status(503)).await;
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::ZERO,
        ..jwks_config(&server.url)
    });
    let token = sign_with_fixture("ed-1", &claims());
    let expect = |err: AuthError, needle: &str| {
        assert_eq!(err.code(), "jwks_unavailable");
        assert!(err.to_string().contains(needle), "{err}");
    };
    expect(v.verify(&token).await.unwrap_err(), "HTTP 503");
    server.set(Reply::Body("<html>login</html>".into()));
    expect(v.verify(&token).await.unwrap_err(), "not JSON");
    server.set(Reply::Jwks(
        json!({"issuer": "x", "jwks_uri": "http://x/jwks"}),
    ));
    expect(v.verify(&token).await.unwrap_err(), "jwks_uri");
    server.set(Reply::Body(" ".repeat(confab_auth::MAX_JWKS_BYTES + 1)));
    expect(v.verify(&token).await.unwrap_err(), "larger than");

    server.set(Reply::Jwks(jwks_with(&["ed-1"])));
    v.verify(&token).await.unwrap();
}

#[tokio::test]
async fn cached_keys_survive_an_outage() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["ed-1"]))).await;
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::from_millis(20),
        jwks_max_age: Duration::from_millis(50),
        ..jwks_config(&server.url)
    });
    let token = sign_with_fixture("ed-1", &claims());
    v.verify(&token).await.unwrap();
    server.set(Reply::Status(500));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        v.verify(&token).await.unwrap();
    }
    assert!(server.hits() >= 2, "background refreshes were attempted");
}

#[tokio::test]
async fn max_age_refresh_retires_removed_keys() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["ed-1", "ec-1"]))).await;
    let v = verifier_with(AuthConfig {
        jwks_min_refetch: Duration::from_millis(20),
        jwks_max_age: Duration::from_millis(100),
        ..jwks_config(&server.url)
    });
    let token = sign_with_fixture("ed-1", &claims());
    v.verify(&token).await.unwrap();
    server.set(Reply::Jwks(jwks_with(&["ec-1"])));

    // Once the set is older than max_age, a background refresh drops ed-1.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        match v.verify(&token).await {
            Ok(_) => assert!(Instant::now() < deadline, "removed key still accepted"),
            Err(err) => {
                assert_eq!(err.code(), "unknown_kid", "{err}");
                break;
            }
        }
    }
    v.verify(&sign_with_fixture("ec-1", &claims()))
        .await
        .unwrap();
}

#[tokio::test]
async fn hs_rs_confusion_is_refused() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1"]))).await;
    let both = verifier_with(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        ..jwks_config(&server.url)
    });
    // The classic attack: HMAC-sign with the RSA public key (PEM, as a
    // library that treats "the key" as bytes would) and claim HS256.
    let public_pem = fixture("rsa-1.pub.pem");
    let forged = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    );
    let err = both.verify(&forged).await.unwrap_err();
    assert_eq!(err.code(), "bad_signature", "{err}");
    assert_eq!(server.hits(), 0, "an HS token never consults the JWKS");
    // Also with the key as DER or as its JWK modulus bytes.
    let jwk = &jwks_with(&["rsa-1"])["keys"][0];
    let forged = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(),
        &EncodingKey::from_secret(jwk["n"].as_str().unwrap().as_bytes()),
    );
    assert_eq!(
        both.verify(&forged).await.unwrap_err().code(),
        "bad_signature"
    );

    // With only RS256 configured, HS256 is refused outright.
    let rs_only = verifier_with(AuthConfig {
        algorithms: vec![Algorithm::RS256],
        ..jwks_config(&server.url)
    });
    assert_eq!(
        rs_only.verify(&forged).await.unwrap_err().code(),
        "algorithm_not_allowed"
    );

    // The reverse: an "RS256" token whose signature is an HMAC with the
    // shared secret does not pass either.
    let hmac = hs256(&claims());
    let (_, hmac_sig) = hmac.rsplit_once('.').unwrap();
    let header = raw_token(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims(), b"");
    let (signing_input, _) = header.rsplit_once('.').unwrap();
    let err = both
        .verify(&format!("{signing_input}.{hmac_sig}"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "bad_signature");

    // Real RS256 tokens still pass on the same verifier.
    both.verify(&sign_with_fixture("rsa-1", &claims()))
        .await
        .unwrap();
}

#[tokio::test]
async fn symmetric_keys_in_the_jwks_are_never_used() {
    let leaked = "jwks-published-secret-0123456789abcdef";
    let mut jwks = jwks_with(&["rsa-1"]);
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "oct",
        "kid": "shared",
        "k": base64_url(leaked.as_bytes()),
    }));
    let server = JwksServer::start(Reply::Jwks(jwks)).await;
    let v = verifier_with(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        ..jwks_config(&server.url)
    });
    let token = sign(
        Algorithm::HS256,
        Some("shared"),
        &claims(),
        &EncodingKey::from_secret(leaked.as_bytes()),
    );
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "bad_signature");
    let token = raw_token(&json!({"alg": "RS256", "kid": "shared"}), &claims(), b"x");
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "unknown_kid");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn the_key_must_fit_the_algorithm() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1", "ec-1"]))).await;
    let v = verifier_with(AuthConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::RS512, Algorithm::ES256],
        ..jwks_config(&server.url)
    });
    // ES256 token that points at the RSA key.
    let ec_pem = fixture("ec-1.pem");
    let ec_key = EncodingKey::from_ec_pem(ec_pem.as_bytes()).unwrap();
    let token = sign(Algorithm::ES256, Some("rsa-1"), &claims(), &ec_key);
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "key_mismatch");
    assert!(err.to_string().contains("an RSA key"), "{err}");
    // RS256 token that points at the EC key.
    let rsa_pem = fixture("rsa-1.pem");
    let rsa_key = EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, Some("ec-1"), &claims(), &rsa_key);
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "key_mismatch");
    // RS512 with a key the JWKS publishes for RS256 only.
    let rs512 = sign(Algorithm::RS512, Some("rsa-1"), &claims(), &rsa_key);
    let err = v.verify(&rs512).await.unwrap_err();
    assert_eq!(err.code(), "key_mismatch");
    assert!(err.to_string().contains("RS256 only"), "{err}");

    // Without an `alg` on the JWK, any RSA algorithm that is allowed fits.
    let mut jwks = jwks_with(&["rsa-1"]);
    jwks["keys"][0].as_object_mut().unwrap().remove("alg");
    server.set(Reply::Jwks(jwks));
    let v = verifier_with(AuthConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::RS512],
        ..jwks_config(&server.url)
    });
    v.verify(&rs512).await.unwrap();
}

#[tokio::test]
async fn tokens_without_kid_try_every_fitting_key() {
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1", "rsa-2", "ed-1"]))).await;
    let v = verifier_with(jwks_config(&server.url));
    let rsa2 = EncodingKey::from_rsa_pem(fixture("rsa-2.pem").as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, None, &claims(), &rsa2);
    v.verify(&token).await.unwrap();
    let ed = EncodingKey::from_ed_pem(fixture("ed-1.pem").as_bytes()).unwrap();
    v.verify(&sign(Algorithm::EdDSA, None, &claims(), &ed))
        .await
        .unwrap();
    // No fitting key at all (no EC key published): unknown key.
    let ec = EncodingKey::from_ec_pem(fixture("ec-1.pem").as_bytes()).unwrap();
    let err = v
        .verify(&sign(Algorithm::ES256, None, &claims(), &ec))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_kid");
    assert!(err.to_string().contains("no `kid`"), "{err}");
}

#[tokio::test]
async fn keys_embedded_in_the_token_header_are_ignored() {
    // Only rsa-1 is trusted; the attacker holds rsa-2 and ships its public
    // key in the header (`jwk`) or points at their own key set (`jku`).
    let server = JwksServer::start(Reply::Jwks(jwks_with(&["rsa-1"]))).await;
    let v = verifier_with(jwks_config(&server.url));
    let attacker_jwk = jwks_with(&["rsa-2"])["keys"][0].clone();
    let attacker_key = EncodingKey::from_rsa_pem(fixture("rsa-2.pem").as_bytes()).unwrap();
    let forge = |header: serde_json::Value| {
        let unsigned = raw_token(&header, &claims(), b"");
        let (signing_input, _) = unsigned.rsplit_once('.').unwrap();
        let sig =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &attacker_key, Algorithm::RS256)
                .unwrap();
        format!("{signing_input}.{sig}")
    };

    let token = forge(json!({"alg": "RS256", "jwk": attacker_jwk}));
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "bad_signature");
    let token = forge(json!({"alg": "RS256", "kid": "rsa-2", "jwk": attacker_jwk}));
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "unknown_kid");
    let token =
        forge(json!({"alg": "RS256", "kid": "rsa-1", "jku": "http://127.0.0.1:9/evil.json"}));
    assert_eq!(v.verify(&token).await.unwrap_err().code(), "bad_signature");
}
