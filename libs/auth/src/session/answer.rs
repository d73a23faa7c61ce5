//! Reading the app's answer under each [`Preset`].

use confab_events::{RoomId, UserId};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::Preset;

/// Most rooms a generic answer may name.
const MAX_ROOMS: usize = 1000;

/// Who the app says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    /// The user.
    pub user: UserId,
    /// When the app's session ends, Unix seconds.
    pub expires_at: u64,
    /// Rooms the app puts the socket in at connect, besides those of the
    /// membership service (generic preset only).
    pub rooms: Vec<RoomId>,
}

/// What a `200` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A signed-in user.
    User(SessionUser),
    /// Not signed in (`null`).
    NoSession,
}

/// Parses a `200` body; `Err` says what is wrong with its shape (a
/// configuration mistake: wrong preset or URL).
pub(crate) fn parse(preset: Preset, body: &[u8], now: u64) -> Result<Answer, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    if value.is_null() {
        return Ok(Answer::NoSession);
    }
    let user = match preset {
        Preset::BetterAuth => better_auth(&value)?,
        Preset::Generic => generic(&value)?,
    };
    // An answer for a session that already ended is no session.
    if user.expires_at <= now {
        return Ok(Answer::NoSession);
    }
    Ok(Answer::User(user))
}

fn better_auth(value: &Value) -> Result<SessionUser, String> {
    let id = value
        .pointer("/user/id")
        .ok_or("better-auth answer without user.id (is auth.session.url get-session?)")?;
    let expires = value
        .pointer("/session/expiresAt")
        .ok_or("better-auth answer without session.expiresAt")?;
    Ok(SessionUser {
        user: user_id(id)?,
        expires_at: timestamp(expires).map_err(|e| format!("session.expiresAt: {e}"))?,
        rooms: Vec::new(),
    })
}

fn generic(value: &Value) -> Result<SessionUser, String> {
    let id = value.get("userId").ok_or("generic answer without userId")?;
    let expires = value
        .get("expiresAt")
        .ok_or("generic answer without expiresAt")?;
    let rooms = match value.get("rooms") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_ROOMS => items
            .iter()
            .map(|r| {
                r.as_str()
                    .and_then(|s| RoomId::parse(s).ok())
                    .ok_or_else(|| format!("rooms: {r} is not a room name such as \"channel:42\""))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "rooms must be a list of at most {MAX_ROOMS} room names"
            ));
        }
    };
    Ok(SessionUser {
        user: user_id(id)?,
        expires_at: timestamp(expires).map_err(|e| format!("expiresAt: {e}"))?,
        rooms,
    })
}

fn user_id(value: &Value) -> Result<UserId, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err("the user id is not a string".into()),
    };
    UserId::parse(&text).map_err(|e| format!("the user id is not a valid Confab user id: {e}"))
}

/// An RFC 3339 string, or Unix seconds.
fn timestamp(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| "not whole Unix seconds".into()),
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("{s:?} is not an RFC 3339 date ({e})"))
            .and_then(|t| u64::try_from(t.unix_timestamp()).map_err(|_| "before 1970".into())),
        _ => Err("neither an RFC 3339 string nor Unix seconds".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn better_auth_answers() {
        let body = br#"{"session":{"id":"s1","token":"t","userId":"u_1","expiresAt":"2099-01-01T00:00:00.000Z"},"user":{"id":"u_1","email":"a@b"}}"#;
        let Answer::User(u) = parse(Preset::BetterAuth, body, NOW).unwrap() else {
            panic!("user expected")
        };
        assert_eq!(u.user.as_str(), "u_1");
        assert_eq!(u.expires_at, 4_070_908_800);
        assert_eq!(
            parse(Preset::BetterAuth, b"null", NOW),
            Ok(Answer::NoSession)
        );
        let past = br#"{"session":{"expiresAt":"2001-01-01T00:00:00Z"},"user":{"id":"u"}}"#;
        assert_eq!(parse(Preset::BetterAuth, past, NOW), Ok(Answer::NoSession));
        assert!(parse(Preset::BetterAuth, br#"{"user":{"id":"u"}}"#, NOW).is_err());
        assert!(parse(Preset::BetterAuth, b"<html>", NOW).is_err());
        let bad_id = br#"{"session":{"expiresAt":"2099-01-01T00:00:00Z"},"user":{"id":"a.b"}}"#;
        assert!(parse(Preset::BetterAuth, bad_id, NOW).is_err());
    }

    #[test]
    fn generic_answers() {
        let body = br#"{"userId":"alice","expiresAt":4070908800,"rooms":["channel:42"]}"#;
        let Answer::User(u) = parse(Preset::Generic, body, NOW).unwrap() else {
            panic!("user expected")
        };
        assert_eq!(u.rooms, vec![RoomId::parse("channel:42").unwrap()]);
        assert!(
            parse(
                Preset::Generic,
                br#"{"userId":"a","expiresAt":4070908800,"rooms":["x.y"]}"#,
                NOW
            )
            .is_err()
        );
        assert!(parse(Preset::Generic, br#"{"userId":"a"}"#, NOW).is_err());
    }
}
