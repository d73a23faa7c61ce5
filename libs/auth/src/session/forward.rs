//! The allow-list of handshake headers forwarded to the app, and the cache
//! key derived from the credentials among them.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::config::SessionConfig;

/// `X-Forwarded-For`.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Longest `X-Forwarded-For` kept from a trusted proxy, in bytes.
const MAX_FORWARDED_FOR: usize = 512;

/// What is sent to the app for one handshake.
pub(crate) struct Forwarded {
    /// Only `Cookie` (the configured cookies), `Authorization`,
    /// `X-Forwarded-For`.
    pub(crate) headers: HeaderMap,
    /// SHA-256 of the credentials (cookies and `Authorization`), never of
    /// the address: one session, one key.
    pub(crate) key: [u8; 32],
}

/// The handshake's configured session cookies as one `Cookie` value
/// (`name=value; ...`), in the order they came.
fn session_cookies(cfg: &SessionConfig, headers: &HeaderMap) -> String {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, v)| !v.is_empty() && cfg.cookies.iter().any(|c| c == n))
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the handshake carries a credential to forward.
pub(crate) fn has_credentials(cfg: &SessionConfig, headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || !session_cookies(cfg, headers).is_empty()
}

/// Whether the handshake carries a configured session cookie.
pub(crate) fn has_session_cookie(cfg: &SessionConfig, headers: &HeaderMap) -> bool {
    !session_cookies(cfg, headers).is_empty()
}

/// The forwarded headers, or `None` without any credential.
pub(crate) fn forwarded(
    cfg: &SessionConfig,
    headers: &HeaderMap,
    remote: Option<IpAddr>,
) -> Option<Forwarded> {
    let cookies = session_cookies(cfg, headers);
    let authorization: Vec<&HeaderValue> = headers.get_all(AUTHORIZATION).iter().collect();
    if cookies.is_empty() && authorization.is_empty() {
        return None;
    }
    let mut hash = Sha256::new();
    let mut out = HeaderMap::new();
    hash.update(b"cookie\0");
    hash.update(cookies.as_bytes());
    if let Ok(value) = HeaderValue::from_str(&cookies)
        && !cookies.is_empty()
    {
        out.insert(COOKIE, value);
    }
    for value in authorization {
        hash.update(b"\0authorization\0");
        hash.update(value.as_bytes());
        out.append(AUTHORIZATION, value.clone());
    }
    if let Some(xff) = forwarded_for(cfg, headers, remote) {
        out.insert(X_FORWARDED_FOR.clone(), xff);
    }
    Some(Forwarded {
        headers: out,
        key: hash.finalize().into(),
    })
}

/// The client's address; appended to the handshake's own header only when
/// a trusted proxy set it.
fn forwarded_for(
    cfg: &SessionConfig,
    headers: &HeaderMap,
    remote: Option<IpAddr>,
) -> Option<HeaderValue> {
    let incoming = cfg
        .trust_forwarded_for
        .then(|| {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|v| !v.is_empty() && v.len() <= MAX_FORWARDED_FOR);
    let value = match (incoming, remote) {
        (Some(chain), Some(ip)) => format!("{chain}, {ip}"),
        (Some(chain), None) => chain,
        (None, Some(ip)) => ip.to_string(),
        (None, None) => return None,
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SessionConfig {
        SessionConfig::default()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_the_allow_list_is_forwarded() {
        let h = headers(&[
            (
                "cookie",
                "theme=dark; better-auth.session_token=abc.sig; other=1",
            ),
            ("cookie", "__Secure-better-auth.session_token=def"),
            ("x-forwarded-for", "6.6.6.6"),
            ("user-agent", "x"),
            ("origin", "https://app"),
        ]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let f = forwarded(&cfg(), &h, Some(ip)).unwrap();
        assert_eq!(
            f.headers.get(COOKIE).unwrap(),
            "better-auth.session_token=abc.sig; __Secure-better-auth.session_token=def"
        );
        assert_eq!(f.headers.get(&X_FORWARDED_FOR).unwrap(), "10.1.2.3");
        assert_eq!(f.headers.len(), 2);

        let trusted = SessionConfig {
            trust_forwarded_for: true,
            ..cfg()
        };
        let f = forwarded(&trusted, &h, Some(ip)).unwrap();
        assert_eq!(
            f.headers.get(&X_FORWARDED_FOR).unwrap(),
            "6.6.6.6, 10.1.2.3"
        );
    }

    #[test]
    fn keys_follow_the_credentials_only() {
        let a = headers(&[("cookie", "better-auth.session_token=abc; theme=dark")]);
        let b = headers(&[("cookie", "theme=light; better-auth.session_token=abc")]);
        let c = headers(&[("cookie", "better-auth.session_token=abd")]);
        let ka = forwarded(&cfg(), &a, None).unwrap().key;
        assert_eq!(
            ka,
            forwarded(&cfg(), &b, "1.1.1.1".parse().ok()).unwrap().key
        );
        assert_ne!(ka, forwarded(&cfg(), &c, None).unwrap().key);
        assert!(forwarded(&cfg(), &headers(&[("cookie", "theme=dark")]), None).is_none());
        let bearer = headers(&[("authorization", "Bearer xyz")]);
        let f = forwarded(&cfg(), &bearer, None).unwrap();
        assert_eq!(f.headers.get(AUTHORIZATION).unwrap(), "Bearer xyz");
        assert!(f.headers.get(COOKIE).is_none());
    }
}
