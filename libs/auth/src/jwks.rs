//! The JWKS cache: fetches the public keys, refetches on unknown `kid` with a
//! bounded rate, shares concurrent fetches, refreshes by age in the
//! background.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};

use crate::config::{AuthConfig, ConfigError, alg_from_header_name, alg_name};
use crate::error::{AuthError, quoted};

/// Timeout of one JWKS request (connect + response).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS response accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// RSA modulus sizes accepted, in bits (the RustCrypto backend verifies up
/// to 4096).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The kind of public key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::P256 => "an EC P-256 key",
            KeyKind::P384 => "an EC P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }

    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    fn default_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// One usable signature-verification key from the JWKS.
#[derive(Debug)]
pub(crate) struct JwkKey {
    pub(crate) kid: Option<String>,
    pub(crate) kind: KeyKind,
    /// The key's own `alg`, if it declares one: then only that algorithm.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl JwkKey {
    /// Why this key cannot verify `alg` tokens, if it cannot.
    fn misfit(&self, alg: Algorithm) -> Option<String> {
        if !self.kind.fits(alg) {
            return Some(format!(
                "it is {} ({}), so the token's algorithm does not match the key",
                self.kind.describe(),
                alg_name(self.alg.unwrap_or(self.kind.default_alg()))
            ));
        }
        match self.alg {
            Some(own) if own != alg => {
                Some(format!("the JWKS publishes it for {} only", alg_name(own)))
            }
            _ => None,
        }
    }

    /// How the key is named in messages.
    pub(crate) fn label(&self) -> String {
        match &self.kid {
            Some(kid) => format!("JWKS key {kid:?}"),
            None => "JWKS key (no kid)".to_owned(),
        }
    }
}

type KeySet = Arc<Vec<Arc<JwkKey>>>;

struct State {
    keys: KeySet,
    /// When a fetch last succeeded.
    loaded_at: Option<Instant>,
    /// When a fetch last finished, successfully or not.
    last_attempt: Option<Instant>,
    /// The last attempt's failure, if it failed.
    last_error: Option<String>,
    /// Number of finished fetch attempts; lets a waiter tell that someone
    /// else fetched while it waited (single-flight).
    attempts: u64,
}

/// What a refresh request came to.
enum Refresh {
    /// A fetch (ours or a concurrent caller's) finished and succeeded.
    Loaded,
    /// A fetch finished and failed.
    Failed(String),
    /// No fetch: the last one finished less than `min_refetch` ago.
    RateLimited {
        since: Duration,
        last_error: Option<String>,
    },
}

/// Resets the "background refresh running" flag even if the task panics.
struct BackgroundFlag(Arc<JwksCache>);

impl Drop for BackgroundFlag {
    fn drop(&mut self) {
        self.0.background.store(false, Ordering::Release);
    }
}

/// The cached key set of one JWKS URL.
pub(crate) struct JwksCache {
    url: String,
    client: reqwest::Client,
    min_refetch: Duration,
    max_age: Duration,
    state: RwLock<State>,
    /// Held for the whole of a fetch: concurrent misses queue here and then
    /// reuse the result instead of fetching again.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    background: AtomicBool,
}

impl JwksCache {
    pub(crate) fn new(url: &str, config: &AuthConfig) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .user_agent(concat!("confab-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(error_chain(&e)))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            min_refetch: config.jwks_min_refetch,
            max_age: config.jwks_max_age,
            state: RwLock::new(State {
                keys: Arc::new(Vec::new()),
                loaded_at: None,
                last_attempt: None,
                last_error: None,
                attempts: 0,
            }),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            background: AtomicBool::new(false),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys that may verify a token with this `kid` and `alg`: the key
    /// with that kid, or, without a kid, every key that fits `alg`.
    /// Loads the set on first use, refetches once (rate-bounded) when no key
    /// matches, and triggers a background refresh when the set is old.
    pub(crate) async fn candidates(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<JwkKey>>, AuthError> {
        let (keys, loaded_at, seen) = {
            let st = self.read();
            (Arc::clone(&st.keys), st.loaded_at, st.attempts)
        };

        let keys = match loaded_at {
            None => match self.refresh(seen).await {
                Refresh::Loaded => {
                    let keys = Arc::clone(&self.read().keys);
                    return self.select_or_unknown(&keys, kid, alg, "the JWKS was just fetched");
                }
                Refresh::Failed(reason) => return Err(self.unavailable(reason)),
                Refresh::RateLimited { since, last_error } => {
                    return Err(self.unavailable(format!(
                        "{}; the last attempt was {} ago and the next is allowed after auth.jwks_min_refetch = {}",
                        last_error.as_deref().unwrap_or("no key set has been loaded yet"),
                        fmt_duration(since),
                        fmt_duration(self.min_refetch),
                    )));
                }
            },
            Some(at) => {
                if !self.max_age.is_zero() && at.elapsed() >= self.max_age {
                    self.refresh_in_background(seen);
                }
                keys
            }
        };

        if let Some(found) = select(&keys, kid, alg)? {
            return Ok(found);
        }
        // Not there: the issuer may have rotated keys since the last fetch.
        match self.refresh(seen).await {
            Refresh::Loaded => {
                let keys = Arc::clone(&self.read().keys);
                self.select_or_unknown(
                    &keys,
                    kid,
                    alg,
                    "the JWKS was refetched and does not have it either",
                )
            }
            Refresh::Failed(reason) => Err(self.unavailable(format!(
                "refetching it to look for the token's key failed: {reason}"
            ))),
            Refresh::RateLimited { since, .. } => Err(AuthError::UnknownKeyId {
                kid: kid.map(quoted),
                alg: alg_name(alg).to_owned(),
                detail: format!(
                    "the JWKS was fetched {} ago and is refetched at most once per auth.jwks_min_refetch = {}",
                    fmt_duration(since),
                    fmt_duration(self.min_refetch)
                ),
            }),
        }
    }

    fn select_or_unknown(
        &self,
        keys: &[Arc<JwkKey>],
        kid: Option<&str>,
        alg: Algorithm,
        detail: &str,
    ) -> Result<Vec<Arc<JwkKey>>, AuthError> {
        select(keys, kid, alg)?.ok_or_else(|| AuthError::UnknownKeyId {
            kid: kid.map(quoted),
            alg: alg_name(alg).to_owned(),
            detail: detail.to_owned(),
        })
    }

    fn unavailable(&self, reason: String) -> AuthError {
        AuthError::JwksUnavailable {
            url: self.url.clone(),
            reason,
        }
    }

    /// Fetches the key set now, subject to the rate bound. For warming the
    /// cache at startup.
    pub(crate) async fn load(self: &Arc<Self>) -> Result<usize, AuthError> {
        let seen = self.read().attempts;
        match self.refresh(seen).await {
            Refresh::Loaded => Ok(self.read().keys.len()),
            Refresh::Failed(reason) => Err(self.unavailable(reason)),
            Refresh::RateLimited { last_error, .. } => match last_error {
                Some(reason) => Err(self.unavailable(reason)),
                None => Ok(self.read().keys.len()),
            },
        }
    }

    /// Fetches the key set unless a fetch finished since the caller's
    /// snapshot (`seen` attempts) — then its result is shared — or the last
    /// fetch finished less than `min_refetch` ago. The fetch runs in its own
    /// task, so a caller that gives up does not cancel it for the others.
    async fn refresh(self: &Arc<Self>, seen: u64) -> Refresh {
        let guard = Arc::clone(&self.fetch_lock).lock_owned().await;
        {
            let st = self.read();
            if st.attempts != seen {
                return match &st.last_error {
                    None => Refresh::Loaded,
                    Some(e) => Refresh::Failed(e.clone()),
                };
            }
            if let Some(at) = st.last_attempt {
                let since = at.elapsed();
                if since < self.min_refetch {
                    return Refresh::RateLimited {
                        since,
                        last_error: st.last_error.clone(),
                    };
                }
            }
        }
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _guard = guard;
            let result = this.fetch().await;
            this.record(result)
        });
        task.await
            .unwrap_or_else(|e| Refresh::Failed(format!("the JWKS fetch task failed: {e}")))
    }

    fn record(&self, result: Result<Vec<Arc<JwkKey>>, String>) -> Refresh {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        st.attempts += 1;
        st.last_attempt = Some(now);
        match result {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS loaded");
                st.keys = Arc::new(keys);
                st.loaded_at = Some(now);
                st.last_error = None;
                Refresh::Loaded
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, error = %reason, "JWKS fetch failed");
                st.last_error = Some(reason.clone());
                Refresh::Failed(reason)
            }
        }
    }

    /// Starts a refresh in the background unless one is running or the
    /// rate bound forbids it; the caller keeps using the current keys.
    fn refresh_in_background(self: &Arc<Self>, seen: u64) {
        if self
            .read()
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.min_refetch)
        {
            return;
        }
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let flag = BackgroundFlag(Arc::clone(self));
        tokio::spawn(async move {
            let cache = Arc::clone(&flag.0);
            if let Refresh::Failed(reason) = cache.refresh(seen).await {
                tracing::warn!(
                    url = %cache.url,
                    error = %reason,
                    "JWKS background refresh failed; still using the previous key set"
                );
            }
            drop(flag);
        });
    }

    async fn fetch(&self) -> Result<Vec<Arc<JwkKey>>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered HTTP {status}"));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!(
                "the response is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "the response is larger than {MAX_JWKS_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// Picks the keys for a token. `Ok(None)`: no key with that kid (or, with no
/// kid, none that fits the algorithm). `Err`: the kid exists but its key
/// cannot verify this algorithm.
fn select(
    keys: &[Arc<JwkKey>],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<Vec<Arc<JwkKey>>>, AuthError> {
    let Some(kid) = kid else {
        let fitting: Vec<_> = keys
            .iter()
            .filter(|k| k.misfit(alg).is_none())
            .cloned()
            .collect();
        return Ok((!fitting.is_empty()).then_some(fitting));
    };
    let mut misfit = None;
    let mut fitting = Vec::new();
    for key in keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
        match key.misfit(alg) {
            None => fitting.push(Arc::clone(key)),
            Some(reason) => misfit = misfit.or(Some(reason)),
        }
    }
    match (fitting.is_empty(), misfit) {
        (false, _) => Ok(Some(fitting)),
        (true, Some(reason)) => Err(AuthError::KeyMismatch {
            kid: Some(quoted(kid)),
            alg: alg_name(alg).to_owned(),
            reason,
        }),
        (true, None) => Ok(None),
    }
}

/// Why a JWKS entry was skipped; `warn` for entries that look like they
/// were meant as signature keys.
#[derive(Debug)]
pub(crate) struct Skip {
    warn: bool,
    reason: String,
}

fn ignored(reason: impl Into<String>) -> Skip {
    Skip {
        warn: false,
        reason: reason.into(),
    }
}

fn invalid(reason: impl Into<String>) -> Skip {
    Skip {
        warn: true,
        reason: reason.into(),
    }
}

/// Parses a JWKS document, keeping the usable signature keys.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<Arc<JwkKey>>, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        let hint = if doc.get("jwks_uri").is_some() {
            " (it looks like an OpenID configuration document: set auth.jwks_url to its `jwks_uri`)"
        } else {
            ""
        };
        return Err(format!("the response has no `keys` array{hint}"));
    };
    let mut keys = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        match parse_jwk(entry) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(skip) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                if skip.warn {
                    tracing::warn!(index, kid, reason = %skip.reason, "ignoring unusable JWKS key");
                } else {
                    tracing::debug!(index, kid, reason = %skip.reason, "ignoring JWKS key");
                }
            }
        }
    }
    if keys.is_empty() {
        tracing::warn!(
            entries = entries.len(),
            "the JWKS has no usable signature key"
        );
    }
    Ok(keys)
}

/// Parses one JWK into a verification key.
pub(crate) fn parse_jwk(entry: &Value) -> Result<JwkKey, Skip> {
    let obj = entry
        .as_object()
        .ok_or_else(|| invalid("the entry is not a JSON object"))?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("`kid` is not a string")),
    };
    if let Some(usage) = obj.get("use")
        && usage != "sig"
    {
        return Err(ignored(format!("`use` is {usage}, not \"sig\"")));
    }
    if let Some(ops) = obj.get("key_ops")
        && !ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "verify"))
    {
        return Err(ignored("`key_ops` does not include \"verify\""));
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(alg_from_header_name(name).ok_or_else(|| {
            ignored(format!(
                "`alg` {:?} is not a signature algorithm Confab supports",
                quoted(name)
            ))
        })?),
        Some(_) => return Err(invalid("`alg` is not a string")),
    };

    let (kind, key) = match str_field(obj, "kty")? {
        "RSA" => {
            let n = b64_field(obj, "n")?;
            let e = b64_field(obj, "e")?;
            let bits = bit_len(&n);
            if !RSA_BITS.contains(&bits) {
                return Err(invalid(format!(
                    "the RSA modulus is {bits} bits; {}..={} are accepted",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                )));
            }
            let e_bits = bit_len(&e);
            if !(2..=33).contains(&e_bits) || e.last().is_some_and(|b| b & 1 == 0) {
                return Err(invalid("the RSA public exponent is not usable"));
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, len) = match str_field(obj, "crv")? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                other => {
                    return Err(ignored(format!(
                        "EC curve {:?} is not supported",
                        quoted(other)
                    )));
                }
            };
            let x = b64_field(obj, "x")?;
            let y = b64_field(obj, "y")?;
            if x.len() != len || y.len() != len {
                return Err(invalid(format!("EC coordinates must be {len} bytes each")));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04); // SEC1 uncompressed point
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            match str_field(obj, "crv")? {
                "Ed25519" => {}
                other => {
                    return Err(ignored(format!(
                        "OKP curve {:?} is not supported",
                        quoted(other)
                    )));
                }
            }
            let x = b64_field(obj, "x")?;
            if x.len() != 32 {
                return Err(invalid("an Ed25519 public key must be 32 bytes"));
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            return Err(ignored(
                "symmetric (oct) keys are never taken from a JWKS; use auth.hs256_secret",
            ));
        }
        other => {
            return Err(ignored(format!(
                "key type {:?} is not supported",
                quoted(other)
            )));
        }
    };
    if let Some(alg) = alg
        && !kind.fits(alg)
    {
        return Err(invalid(format!(
            "`alg` {} does not match {}",
            alg_name(alg),
            kind.describe()
        )));
    }
    // Let the crypto backend parse the key now (e.g. the EC point must be on
    // the curve) rather than fail every token later.
    jsonwebtoken::crypto::verify("AA", b"probe", &key, alg.unwrap_or(kind.default_alg()))
        .map_err(|e| invalid(format!("the key is not usable: {e}")))?;
    Ok(JwkKey {
        kid,
        kind,
        alg,
        key,
    })
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Skip> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{name}` is missing or not a string")))
}

fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, Skip> {
    let text = str_field(obj, name)?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| invalid(format!("`{name}` is not base64url")))
}

/// Significant bits of a big-endian unsigned integer.
fn bit_len(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b != 0) {
        None => 0,
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
    }
}

/// `err: source: source...`, as reqwest's own message omits the cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `1.5s`, `250ms`, `30s`.
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture_jwks() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/jwks.json")).unwrap()
    }

    fn fixture_key(kid: &str) -> Value {
        fixture_jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    }

    #[test]
    fn parses_the_fixture_keys() {
        let keys = parse_jwks(fixture_jwks().to_string().as_bytes()).unwrap();
        let kinds: Vec<_> = keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("rsa-1".to_owned(), KeyKind::Rsa),
                ("rsa-2".to_owned(), KeyKind::Rsa),
                ("ec-1".to_owned(), KeyKind::P256),
                ("ed-1".to_owned(), KeyKind::Ed25519),
            ]
        );
    }

    #[test]
    fn skips_keys_that_must_not_or_cannot_be_used() {
        let mut enc = fixture_key("rsa-1");
        enc["use"] = json!("enc");
        assert!(!parse_jwk(&enc).unwrap_err().warn);

        let mut ops = fixture_key("rsa-1");
        ops["key_ops"] = json!(["encrypt"]);
        assert!(parse_jwk(&ops).is_err());

        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(parse_jwk(&oct).unwrap_err().reason.contains("never"));

        let mut small = fixture_key("rsa-1");
        small["n"] = json!(URL_SAFE_NO_PAD.encode([0xffu8; 128]));
        assert!(parse_jwk(&small).unwrap_err().reason.contains("1024 bits"));

        let mut wrong_alg = fixture_key("ec-1");
        wrong_alg["alg"] = json!("RS256");
        assert!(parse_jwk(&wrong_alg).unwrap_err().warn);

        let mut off_curve = fixture_key("ec-1");
        off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        let skip = parse_jwk(&off_curve).unwrap_err();
        assert!(skip.reason.contains("not usable"), "{skip:?}");

        let mut short_ed = fixture_key("ed-1");
        short_ed["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]));
        assert!(parse_jwk(&short_ed).is_err());

        let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
        assert!(parse_jwk(&p521).is_err());
        let enc_alg = json!({"kty": "RSA", "alg": "RSA-OAEP", "n": "AA", "e": "AQAB"});
        assert!(parse_jwk(&enc_alg).is_err());
    }

    #[test]
    fn unusable_entries_do_not_spoil_the_set() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            42,
            fixture_key("ed-1"),
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kind, KeyKind::Ed25519);
    }

    #[test]
    fn bad_documents_explain_themselves() {
        assert!(parse_jwks(b"<html>").unwrap_err().contains("not JSON"));
        let oidc = json!({"issuer": "x", "jwks_uri": "https://x/jwks"});
        let err = parse_jwks(oidc.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("jwks_uri"), "{err}");
    }

    #[test]
    fn selection_by_kid_and_algorithm() {
        let keys = parse_jwks(fixture_jwks().to_string().as_bytes()).unwrap();
        let pick = |kid, alg| select(&keys, kid, alg);
        assert_eq!(
            pick(Some("rsa-2"), Algorithm::RS256)
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert!(pick(Some("nope"), Algorithm::RS256).unwrap().is_none());
        // The fixture keys declare alg RS256: RS512 with them is refused.
        let err = pick(Some("rsa-1"), Algorithm::RS512).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
        let err = pick(Some("ec-1"), Algorithm::RS256).unwrap_err();
        assert!(err.to_string().contains("EC P-256"), "{err}");
        // No kid: every key that fits.
        assert_eq!(pick(None, Algorithm::RS256).unwrap().unwrap().len(), 2);
        assert_eq!(pick(None, Algorithm::EdDSA).unwrap().unwrap().len(), 1);
        assert!(pick(None, Algorithm::ES384).unwrap().is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(bit_len(&[0, 0, 1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }
}
