//! Dev tokens: HS256 tokens minted locally (`confab token USER`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_events::{IdError, UserId};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::hmac::MIN_SECRET_LEN;

/// Why a dev token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The user is not a valid [`UserId`].
    #[error("cannot mint a token for user {user:?}: {source}")]
    InvalidUser {
        /// The user as given.
        user: String,
        /// Why it is not a valid user id.
        source: IdError,
    },
    /// The secret is shorter than the verifier accepts.
    #[error("the signing secret is {len} bytes; the verifier requires at least {MIN_SECRET_LEN}")]
    SecretTooShort {
        /// Length of the secret, in bytes.
        len: usize,
    },
    /// Signing failed.
    #[error("could not sign the token: {0}")]
    Signing(String),
}

/// Mints an HS256 token for `user`, valid for `ttl` from now.
///
/// Claims: `sub` = `user`, `iat` = now, `exp` = now + `ttl` (rounded up to
/// a whole second), plus `iss` / `aud` when given. The user must be a valid
/// [`UserId`] and the secret at least [`MIN_SECRET_LEN`] bytes, so the
/// token is one a [`Verifier`](crate::Verifier) with the same secret
/// accepts.
pub fn mint_hs256(
    secret: &str,
    user: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, MintError> {
    mint_hs256_with_claims(secret, user, ttl, issuer, audience, &Map::new())
}

/// Like [`mint_hs256`], with extra claims (e.g. `{"name": "Alice"}`). The standard claims (`sub`, `iat`, `exp`, and `iss` /
/// `aud` when given) take precedence over same-named extra claims.
pub fn mint_hs256_with_claims(
    secret: &str,
    user: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
    extra: &Map<String, Value>,
) -> Result<String, MintError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(MintError::SecretTooShort { len: secret.len() });
    }
    let user = UserId::parse(user).map_err(|source| MintError::InvalidUser {
        user: user.to_owned(),
        source,
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);

    let mut claims = extra.clone();
    claims.insert("sub".into(), user.as_str().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl_secs).into());
    if let Some(iss) = issuer {
        claims.insert("iss".into(), iss.into());
    }
    if let Some(aud) = audience {
        claims.insert("aud".into(), aud.into());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| MintError::Signing(e.to_string()))
}
