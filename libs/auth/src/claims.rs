//! [`Claims`]: what a verified token says, and the registered-claim checks.

use confab_events::UserId;
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::error::{AuthError, quoted};

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The user, from the `sub` claim.
    pub user: UserId,
    /// The `exp` claim, in Unix seconds. The gateway may disconnect the
    /// socket at this time.
    pub expires_at: u64,
    /// The `iat` claim, in Unix seconds, if present.
    pub issued_at: Option<u64>,
    /// A display name: the `name` claim, else `preferred_username`, if
    /// either is a string.
    pub name: Option<String>,
    /// Every claim of the token, as sent.
    pub raw: Map<String, Value>,
}

impl Claims {
    /// Checks the registered claims of a signature-verified payload against
    /// the config at time `now` (Unix seconds) and extracts the user.
    ///
    /// Order of checks: `exp`, `nbf`, `iat` (type only), `iss`, `aud`, `sub`.
    pub(crate) fn check(
        raw: Map<String, Value>,
        config: &AuthConfig,
        now: u64,
    ) -> Result<Claims, AuthError> {
        let leeway = config.leeway.as_secs();

        let expires_at =
            numeric_date(&raw, "exp")?.ok_or(AuthError::MissingClaim { claim: "exp" })?;
        if now >= expires_at.saturating_add(leeway) {
            return Err(AuthError::Expired {
                expired_at: expires_at,
                now,
                leeway_secs: leeway,
            });
        }
        if let Some(not_before) = numeric_date(&raw, "nbf")?
            && now.saturating_add(leeway) < not_before
        {
            return Err(AuthError::NotYetValid {
                not_before,
                now,
                leeway_secs: leeway,
            });
        }
        let issued_at = numeric_date(&raw, "iat")?;

        if let Some(expected) = &config.issuer {
            match raw.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                other => {
                    return Err(AuthError::WrongIssuer {
                        expected: expected.clone(),
                        actual: other.map(describe_value),
                    });
                }
            }
        }

        if let Some(expected) = &config.audience {
            let ok = match raw.get("aud") {
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
                _ => false,
            };
            if !ok {
                let actual = match raw.get("aud") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(auds)) => auds.iter().take(8).map(describe_value).collect(),
                    Some(other) => vec![describe_value(other)],
                };
                return Err(AuthError::WrongAudience {
                    expected: expected.clone(),
                    actual,
                });
            }
        }

        let user = match raw.get("sub") {
            None | Some(Value::Null) => return Err(AuthError::MissingSubject),
            Some(Value::String(sub)) => {
                UserId::parse(sub).map_err(|e| AuthError::InvalidSubject {
                    sub: quoted(sub),
                    reason: e.to_string(),
                })?
            }
            Some(other) => {
                return Err(AuthError::InvalidSubject {
                    sub: describe_value(other),
                    reason: "`sub` must be a string".to_owned(),
                });
            }
        };

        let name = ["name", "preferred_username"]
            .iter()
            .find_map(|k| raw.get(*k).and_then(Value::as_str))
            .map(str::to_owned);

        Ok(Claims {
            user,
            expires_at,
            issued_at,
            name,
            raw,
        })
    }
}

/// Reads a NumericDate claim (RFC 7519 §2): a non-negative JSON number of
/// seconds, fractions allowed (rounded down).
fn numeric_date(raw: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, AuthError> {
    let invalid = |v: &Value| AuthError::InvalidClaim {
        claim,
        reason: format!(
            "expected a NumericDate (non-negative seconds since the Unix epoch), got {}",
            describe_value(v)
        ),
    };
    match raw.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Ok(Some(secs))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
                    _ => Err(invalid(&raw[claim])),
                }
            }
        }
        Some(other) => Err(invalid(other)),
    }
}

/// A short, quoted rendering of a claim value for error messages.
fn describe_value(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        other => quoted(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn cfg() -> AuthConfig {
        AuthConfig {
            leeway: std::time::Duration::from_secs(10),
            issuer: Some("https://id.example".into()),
            audience: Some("confab".into()),
            ..AuthConfig::default()
        }
    }

    fn check(claims: Value) -> Result<Claims, AuthError> {
        let Value::Object(map) = claims else {
            panic!("not an object")
        };
        Claims::check(map, &cfg(), NOW)
    }

    fn good() -> Value {
        json!({
            "sub": "alice",
            "exp": NOW + 60,
            "iat": NOW,
            "iss": "https://id.example",
            "aud": "confab",
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    fn without(key: &str) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    #[test]
    fn extracts_the_documented_fields() {
        let claims = check(good()).unwrap();
        assert_eq!(claims.user.as_str(), "alice");
        assert_eq!(claims.expires_at, NOW + 60);
        assert_eq!(claims.issued_at, Some(NOW));
        assert_eq!(claims.name, None);
        assert_eq!(claims.raw["aud"], "confab");

        let claims = check(with("preferred_username", json!("Al"))).unwrap();
        assert_eq!(claims.name.as_deref(), Some("Al"));
        let mut v = with("preferred_username", json!("Al"));
        v["name"] = json!("Alice A.");
        assert_eq!(check(v).unwrap().name.as_deref(), Some("Alice A."));
    }

    #[test]
    fn exp_is_required_and_checked_with_leeway() {
        assert_eq!(
            check(without("exp")),
            Err(AuthError::MissingClaim { claim: "exp" })
        );
        assert!(check(with("exp", json!(NOW - 5))).is_ok(), "within leeway");
        assert_eq!(
            check(with("exp", json!(NOW - 10))),
            Err(AuthError::Expired {
                expired_at: NOW - 10,
                now: NOW,
                leeway_secs: 10
            })
        );
        assert!(check(with("exp", json!((NOW + 60) as f64 + 0.5))).is_ok());
        for bad in [json!("tomorrow"), json!(-1), json!(null), json!([1])] {
            let err = check(with("exp", bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_claim", "{err}");
        }
    }

    #[test]
    fn nbf_is_honored_with_leeway() {
        assert!(check(with("nbf", json!(NOW + 10))).is_ok(), "within leeway");
        assert_eq!(
            check(with("nbf", json!(NOW + 11))),
            Err(AuthError::NotYetValid {
                not_before: NOW + 11,
                now: NOW,
                leeway_secs: 10
            })
        );
        assert_eq!(
            check(with("nbf", json!("soon"))).unwrap_err().code(),
            "invalid_claim"
        );
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        assert_eq!(
            check(with("iss", json!("https://evil.example"))),
            Err(AuthError::WrongIssuer {
                expected: "https://id.example".into(),
                actual: Some("https://evil.example".into())
            })
        );
        assert_eq!(
            check(without("iss")),
            Err(AuthError::WrongIssuer {
                expected: "https://id.example".into(),
                actual: None
            })
        );
        assert!(check(with("aud", json!(["other", "confab"]))).is_ok());
        assert_eq!(
            check(with("aud", json!(["other"]))),
            Err(AuthError::WrongAudience {
                expected: "confab".into(),
                actual: vec!["other".into()]
            })
        );
        assert_eq!(
            check(without("aud")).unwrap_err().to_string(),
            "wrong audience: expected \"confab\", token has no `aud` claim"
        );
        // Not configured: not checked.
        let mut map = without("iss");
        map["aud"] = json!("anything");
        let Value::Object(map) = map else { panic!() };
        let open = AuthConfig::default();
        assert!(Claims::check(map, &open, NOW).is_ok());
    }

    #[test]
    fn sub_must_be_a_valid_user_id() {
        assert_eq!(check(without("sub")), Err(AuthError::MissingSubject));
        let err = check(with("sub", json!("a.b"))).unwrap_err();
        assert_eq!(err.code(), "invalid_sub");
        assert!(err.to_string().contains("\"a.b\""), "{err}");
        assert_eq!(
            check(with("sub", json!(42))).unwrap_err().code(),
            "invalid_sub"
        );
        assert_eq!(
            check(with("sub", json!(""))).unwrap_err().code(),
            "invalid_sub"
        );
    }
}
