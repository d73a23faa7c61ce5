//! [`AuthError`]: why a connection was not authenticated.

/// Longest piece of attacker-controlled text (alg, kid, iss, aud, sub) quoted
/// in an error message.
const MAX_QUOTED: usize = 64;

/// Why a token was refused.
///
/// `Display` is a human message meant for developers (it is safe to send to
/// the client, except for [`AuthError::JwksUnavailable`], which names the
/// JWKS URL and the transport error: prefer [`AuthError::public_message`]
/// for what goes over the wire). [`AuthError::code`] is a short stable
/// machine code, suitable as a Prometheus label value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in any of the places it is looked for.
    #[error("{}", missing_token_message(.cookie_name.as_deref()))]
    MissingToken {
        /// The cookie that was also looked at, if any.
        cookie_name: Option<String>,
    },
    /// The token is not a well-formed JWT (shape, base64url, JSON, header).
    #[error("malformed token: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error(
        "token expired at {} ({} s ago; allowed clock skew is {leeway_secs} s)",
        format_unix(*.expired_at),
        .now.saturating_sub(*.expired_at)
    )]
    Expired {
        /// The token's `exp`, in Unix seconds.
        expired_at: u64,
        /// The verifier's clock, in Unix seconds.
        now: u64,
        /// The leeway that was applied.
        leeway_secs: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error(
        "token is not valid before {} (that is in {} s; allowed clock skew is {leeway_secs} s)",
        format_unix(*.not_before),
        .not_before.saturating_sub(*.now)
    )]
    NotYetValid {
        /// The token's `nbf`, in Unix seconds.
        not_before: u64,
        /// The verifier's clock, in Unix seconds.
        now: u64,
        /// The leeway that was applied.
        leeway_secs: u64,
    },
    /// The signature does not match the key.
    #[error(
        "bad signature: the token was not signed with the configured {key} (wrong secret or key, or the token was altered)"
    )]
    BadSignature {
        /// Which key was tried: `"HS256 secret"`, `"JWKS key \"k1\""`, ...
        key: String,
    },
    /// The header's `alg` is not in the allow-list (or is `none`).
    #[error(
        "token algorithm {alg:?} is not allowed; allowed: {} (auth.algorithms)",
        .allowed.join(", ")
    )]
    AlgorithmNotAllowed {
        /// The algorithm named by the token (quoted, truncated).
        alg: String,
        /// The configured allow-list.
        allowed: Vec<String>,
    },
    /// The key selected by `kid` cannot verify the header's algorithm
    /// (wrong key type or curve, or the key's own `alg` differs).
    #[error("key {} cannot verify {alg} tokens: {reason}", describe_kid(.kid.as_deref()))]
    KeyMismatch {
        /// The token's `kid`, if any.
        kid: Option<String>,
        /// The token's algorithm.
        alg: String,
        /// Why the key does not fit.
        reason: String,
    },
    /// `iss` differs from the configured issuer.
    #[error(
        "wrong issuer: expected {expected:?}, token has {}",
        .actual.as_ref().map_or("no `iss` claim".to_owned(), |a| format!("{a:?}"))
    )]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss` (truncated), if any.
        actual: Option<String>,
    },
    /// `aud` does not contain the configured audience.
    #[error(
        "wrong audience: expected {expected:?}, token has {}",
        if .actual.is_empty() { "no `aud` claim".to_owned() } else { format!("{:?}", .actual) }
    )]
    WrongAudience {
        /// The configured audience.
        expected: String,
        /// The token's `aud` values (truncated).
        actual: Vec<String>,
    },
    /// No key in the JWKS has the token's `kid`, even after a refetch (or a
    /// refetch was not allowed yet: see `auth.jwks_min_refetch`).
    #[error("{}", unknown_kid_message(.kid.as_deref(), .alg, .detail))]
    UnknownKeyId {
        /// The token's `kid`, if any (truncated).
        kid: Option<String>,
        /// The token's algorithm.
        alg: String,
        /// What was done about it (refetched, or refetch rate-limited).
        detail: String,
    },
    /// The JWKS could not be fetched or parsed, and no usable cached copy
    /// could decide the token.
    #[error("JWKS unavailable: could not load keys from {url}: {reason}")]
    JwksUnavailable {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A required registered claim is absent (`exp`).
    #[error("token has no `{claim}` claim, which is required")]
    MissingClaim {
        /// The claim name.
        claim: &'static str,
    },
    /// A registered claim has the wrong type or value.
    #[error("token claim `{claim}` is invalid: {reason}")]
    InvalidClaim {
        /// The claim name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No `sub` claim: Confab cannot tell who the user is.
    #[error("token has no `sub` claim; it must name the user")]
    MissingSubject,
    /// `sub` is not a valid Confab user id.
    #[error("token `sub` claim {sub:?} is not a valid user id: {reason}")]
    InvalidSubject {
        /// The claim as found (truncated; JSON for non-strings).
        sub: String,
        /// Why it is not a valid user id.
        reason: String,
    },
}

/// Every value [`AuthError::code`] can return, for pre-registering metric
/// label values.
pub const ERROR_CODES: &[&str] = &[
    "missing_token",
    "malformed_token",
    "token_expired",
    "token_not_yet_valid",
    "bad_signature",
    "algorithm_not_allowed",
    "key_mismatch",
    "wrong_issuer",
    "wrong_audience",
    "unknown_kid",
    "jwks_unavailable",
    "missing_claim",
    "invalid_claim",
    "missing_sub",
    "invalid_sub",
];

impl AuthError {
    /// A short, stable, snake_case code for this error (one of
    /// [`ERROR_CODES`]); use it for metrics labels and client-side handling.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken { .. } => "missing_token",
            AuthError::Malformed { .. } => "malformed_token",
            AuthError::Expired { .. } => "token_expired",
            AuthError::NotYetValid { .. } => "token_not_yet_valid",
            AuthError::BadSignature { .. } => "bad_signature",
            AuthError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            AuthError::KeyMismatch { .. } => "key_mismatch",
            AuthError::WrongIssuer { .. } => "wrong_issuer",
            AuthError::WrongAudience { .. } => "wrong_audience",
            AuthError::UnknownKeyId { .. } => "unknown_kid",
            AuthError::JwksUnavailable { .. } => "jwks_unavailable",
            AuthError::MissingClaim { .. } => "missing_claim",
            AuthError::InvalidClaim { .. } => "invalid_claim",
            AuthError::MissingSubject => "missing_sub",
            AuthError::InvalidSubject { .. } => "invalid_sub",
        }
    }

    /// Whether the failure is on the server's side (the key set could not
    /// be loaded) rather than the token's: the client may retry the same
    /// token later, and the server should alert.
    pub fn is_server_error(&self) -> bool {
        matches!(self, AuthError::JwksUnavailable { .. })
    }

    /// The message to send to the client: the same as `Display`, except
    /// that server-side failures do not reveal internal URLs or transport
    /// errors (log the `Display` form instead).
    pub fn public_message(&self) -> String {
        if self.is_server_error() {
            "authentication is temporarily unavailable (the token signing keys could not be loaded); retry shortly".to_owned()
        } else {
            self.to_string()
        }
    }

    /// The error for "no token found", naming where it was looked for.
    pub fn missing_token(cookie_name: Option<&str>) -> Self {
        AuthError::MissingToken {
            cookie_name: cookie_name.map(str::to_owned),
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        AuthError::Malformed {
            reason: reason.into(),
        }
    }
}

fn missing_token_message(cookie_name: Option<&str>) -> String {
    let mut msg = "no token: send it as the Socket.IO CONNECT auth payload {\"token\": \"<jwt>\"} \
                   (io(url, { auth: { token } })), or an `Authorization: Bearer <jwt>` header"
        .to_owned();
    match cookie_name {
        Some(name) => msg.push_str(&format!(", or the `{name}` cookie")),
        None => msg.push_str(" (cookie authentication is off: auth.cookie_name is not set)"),
    }
    msg
}

fn describe_kid(kid: Option<&str>) -> String {
    kid.map_or_else(|| "(no kid)".to_owned(), |k| format!("{k:?}"))
}

fn unknown_kid_message(kid: Option<&str>, alg: &str, detail: &str) -> String {
    match kid {
        Some(kid) => {
            format!("unknown key id {kid:?}: no {alg} key with that kid in the JWKS; {detail}")
        }
        None => {
            format!("the token has no `kid` header and no {alg} key in the JWKS matches; {detail}")
        }
    }
}

/// Truncates attacker-controlled text before it is quoted in a message.
pub(crate) fn quoted(text: &str) -> String {
    if text.len() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`).
pub(crate) fn format_unix(secs: u64) -> String {
    // Beyond year 9999 the calendar form is not useful.
    if secs > 253_402_300_799 {
        return format!("Unix time {secs}");
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_times() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(format_unix(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(format_unix(u64::MAX), format!("Unix time {}", u64::MAX));
    }

    #[test]
    fn quoting_truncates_on_char_boundaries() {
        assert_eq!(quoted("abc"), "abc");
        let long = "é".repeat(100);
        let q = quoted(&long);
        assert!(q.ends_with('…') && q.len() <= MAX_QUOTED + '…'.len_utf8());
    }

    #[test]
    fn codes_are_listed_unique_and_snake_case() {
        let samples = [
            AuthError::missing_token(None),
            AuthError::malformed("x"),
            AuthError::Expired {
                expired_at: 1,
                now: 2,
                leeway_secs: 0,
            },
            AuthError::NotYetValid {
                not_before: 2,
                now: 1,
                leeway_secs: 0,
            },
            AuthError::BadSignature { key: "k".into() },
            AuthError::AlgorithmNotAllowed {
                alg: "none".into(),
                allowed: vec!["HS256".into()],
            },
            AuthError::KeyMismatch {
                kid: None,
                alg: "RS256".into(),
                reason: "r".into(),
            },
            AuthError::WrongIssuer {
                expected: "a".into(),
                actual: None,
            },
            AuthError::WrongAudience {
                expected: "a".into(),
                actual: vec![],
            },
            AuthError::UnknownKeyId {
                kid: Some("k".into()),
                alg: "RS256".into(),
                detail: "d".into(),
            },
            AuthError::JwksUnavailable {
                url: "u".into(),
                reason: "r".into(),
            },
            AuthError::MissingClaim { claim: "exp" },
            AuthError::InvalidClaim {
                claim: "exp",
                reason: "r".into(),
            },
            AuthError::MissingSubject,
            AuthError::InvalidSubject {
                sub: "a.b".into(),
                reason: "r".into(),
            },
        ];
        let codes: Vec<&str> = samples.iter().map(AuthError::code).collect();
        assert_eq!(codes, ERROR_CODES);
        for code in ERROR_CODES {
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        for e in &samples {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn messages_are_actionable() {
        let msg = AuthError::missing_token(Some("sid")).to_string();
        assert!(msg.contains("auth") && msg.contains("Bearer") && msg.contains("`sid` cookie"));
        let msg = AuthError::missing_token(None).to_string();
        assert!(msg.contains("auth.cookie_name is not set"), "{msg}");
        let msg = AuthError::Expired {
            expired_at: 1_700_000_000,
            now: 1_700_000_100,
            leeway_secs: 30,
        }
        .to_string();
        assert_eq!(
            msg,
            "token expired at 2023-11-14T22:13:20Z (100 s ago; allowed clock skew is 30 s)"
        );
        let msg = AuthError::AlgorithmNotAllowed {
            alg: "none".into(),
            allowed: vec!["HS256".into(), "RS256".into()],
        }
        .to_string();
        assert_eq!(
            msg,
            "token algorithm \"none\" is not allowed; allowed: HS256, RS256 (auth.algorithms)"
        );
        let err = AuthError::JwksUnavailable {
            url: "http://internal:8080/jwks".into(),
            reason: "connection refused".into(),
        };
        assert!(err.is_server_error());
        assert!(!err.public_message().contains("internal"));
    }
}
