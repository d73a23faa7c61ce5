//! [`Verifier`]: checks a token end to end.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::config::{AuthConfig, ConfigError, alg_from_header_name, alg_name};
use crate::error::{AuthError, quoted};
use crate::extract::{TokenSource, extract_token_with_source};
use crate::hmac::DEV_SECRET;
use crate::jwks::JwksCache;

/// Longest token accepted, in bytes. Real JWTs are well under 4 KiB; the
/// bound keeps base64/JSON work on hostile input small.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies tokens against an [`AuthConfig`].
///
/// Cheap to clone (an `Arc` inside); share one per process so the JWKS
/// cache is shared. `verify` must run inside a Tokio runtime (the JWKS is
/// fetched with reqwest).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    /// The HMAC key, present iff an HS algorithm is allowed.
    hmac: Option<DecodingKey>,
    /// The key set, present iff an asymmetric algorithm is allowed.
    jwks: Option<Arc<JwksCache>>,
    allowed: Vec<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier after [`AuthConfig::validate`]. Does no I/O: the
    /// JWKS is fetched on first use (or by [`Verifier::refresh_jwks`]).
    pub fn new(config: AuthConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let hmac = match (&config.hs256_secret, config.uses_secret()) {
            (Some(secret), true) => {
                if secret.expose() == DEV_SECRET {
                    tracing::warn!(
                        "auth uses the public development secret (DEV_SECRET): anyone can mint tokens; never use it in production"
                    );
                }
                Some(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            (Some(_), false) => {
                tracing::warn!(
                    "auth.hs256_secret is set but no HS algorithm is in auth.algorithms; it is ignored"
                );
                None
            }
            (None, _) => None,
        };
        let jwks = match (&config.jwks_url, config.uses_jwks()) {
            (Some(url), true) => {
                if config.jwks_min_refetch.is_zero() {
                    tracing::warn!(
                        "auth.jwks_min_refetch is 0: unknown key ids can make the gateway fetch the JWKS on every handshake"
                    );
                }
                if url.starts_with("http://") {
                    tracing::warn!(
                        url,
                        "auth.jwks_url is plain http: keys can be tampered with in transit"
                    );
                }
                Some(Arc::new(JwksCache::new(url, &config)?))
            }
            (Some(_), false) => {
                tracing::warn!(
                    "auth.jwks_url is set but no asymmetric algorithm is in auth.algorithms; it is ignored"
                );
                None
            }
            (None, _) => None,
        };
        let allowed = config
            .algorithms
            .iter()
            .map(|a| alg_name(*a).to_owned())
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                hmac,
                jwks,
                allowed,
            }),
        })
    }

    /// The configuration this verifier enforces.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Fetches the JWKS now (e.g. at startup, to fail fast and to spare the
    /// first client the latency), subject to `jwks_min_refetch`. Returns the
    /// number of usable keys; `Ok(0)` when no JWKS is configured.
    pub async fn refresh_jwks(&self) -> Result<usize, AuthError> {
        match &self.inner.jwks {
            Some(jwks) => jwks.load().await,
            None => Ok(0),
        }
    }

    /// Finds the token in the handshake ([`extract_token_with_source`] with
    /// the configured cookie) and verifies it.
    pub async fn authenticate(
        &self,
        auth: Option<&Value>,
        headers: &HeaderMap,
    ) -> Result<(Claims, TokenSource), AuthError> {
        let cookie = self.inner.config.cookie_name.as_deref();
        let (token, source) = extract_token_with_source(auth, headers, cookie)
            .ok_or_else(|| AuthError::missing_token(cookie))?;
        Ok((self.verify(&token).await?, source))
    }

    /// Verifies a compact JWS token: shape, algorithm allow-list, key
    /// selection, signature, then `exp` / `nbf` / `iss` / `aud` / `sub`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        let inner = &*self.inner;
        if token.is_empty() {
            return Err(AuthError::malformed("the token is empty"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::malformed(format!(
                "the token is {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            )));
        }
        let header = parse_header(token)?;
        let alg = inner.allowed_algorithm(&header)?;
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(AuthError::malformed("the header's `kid` is not a string")),
        };

        let payload = if alg.family() == AlgorithmFamily::Hmac {
            let key = inner
                .hmac
                .as_ref()
                .ok_or_else(|| inner.not_allowed(alg_name(alg)))?;
            check_signature(
                token,
                key,
                alg,
                kid,
                "HS secret (auth.hs256_secret)".to_owned(),
            )?
        } else {
            let jwks = inner
                .jwks
                .as_ref()
                .ok_or_else(|| inner.not_allowed(alg_name(alg)))?;
            let candidates = jwks.candidates(kid, alg).await?;
            let mut last_err = None;
            let mut verified = None;
            for key in candidates {
                match check_signature(token, &key.key, alg, kid, key.label()) {
                    Ok(payload) => {
                        verified = Some(payload);
                        break;
                    }
                    Err(err) => last_err = Some(err),
                }
            }
            match (verified, last_err) {
                (Some(payload), _) => payload,
                (None, Some(err)) => return Err(err),
                (None, None) => {
                    return Err(AuthError::UnknownKeyId {
                        kid: kid.map(quoted),
                        alg: alg_name(alg).to_owned(),
                        detail: format!("no key in {}", jwks.url()),
                    });
                }
            }
        };

        Claims::check(payload, &inner.config, unix_now())
    }
}

impl Inner {
    /// The header's algorithm, if it is in the allow-list.
    fn allowed_algorithm(&self, header: &Map<String, Value>) -> Result<Algorithm, AuthError> {
        let name = match header.get("alg") {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(AuthError::malformed("the header's `alg` is not a string")),
            None => return Err(AuthError::malformed("the header has no `alg`")),
        };
        match alg_from_header_name(name) {
            Some(alg) if self.config.algorithms.contains(&alg) => Ok(alg),
            _ => Err(self.not_allowed(name)),
        }
    }

    fn not_allowed(&self, name: &str) -> AuthError {
        AuthError::AlgorithmNotAllowed {
            alg: quoted(name),
            allowed: self.allowed.clone(),
        }
    }
}

/// Decodes and sanity-checks the JOSE header (before any key is chosen).
fn parse_header(token: &str) -> Result<Map<String, Value>, AuthError> {
    let segments = token.split('.').count();
    if segments == 5 {
        return Err(AuthError::malformed(
            "the token has 5 segments: encrypted tokens (JWE) are not supported",
        ));
    }
    if segments != 3 {
        return Err(AuthError::malformed(format!(
            "expected 3 dot-separated base64url segments (header.payload.signature), found {segments}"
        )));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::malformed("the header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::malformed("the header is not a JSON object"))?;
    if let Some(crit) = header.get("crit") {
        return Err(AuthError::malformed(format!(
            "the header marks extensions as critical ({}), which Confab does not support",
            quoted(&crit.to_string())
        )));
    }
    Ok(header)
}

/// Checks the signature with one key and decodes the payload. Only the
/// signature and the algorithm/key pairing are checked here; the claims are
/// checked by [`Claims::check`].
fn check_signature(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    kid: Option<&str>,
    key_label: String,
) -> Result<Map<String, Value>, AuthError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature { key: key_label },
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => AuthError::KeyMismatch {
                kid: kid.map(quoted),
                alg: alg_name(alg).to_owned(),
                reason: format!("the {key_label} is not usable for it ({err})"),
            },
            ErrorKind::Json(_) => AuthError::malformed(
                "the payload (or a header field) is not valid JSON of the expected shape; the claims must be a JSON object",
            ),
            ErrorKind::Base64(_) => AuthError::malformed("a segment is not base64url"),
            ErrorKind::Utf8(_) => AuthError::malformed("a segment is not UTF-8"),
            _ => AuthError::malformed(format!("could not decode the token ({err})")),
        }),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
