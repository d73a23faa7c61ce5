//! [`redact_url`]: URLs as they may be shown in logs, errors and status.

/// The credentials of a URL (or of each URL of a comma-separated list)
/// replaced by `***`, so that the URL can be shown.
///
/// Everything before the last `@` of a URL is its user info and is hidden
/// whole, user name included (NATS carries tokens there:
/// `nats://token@host`). Hiding up to the last `@` also covers passwords
/// with an unescaped `@` or `/`; an `@` later in the URL only hides more.
/// Query parameters that carry a credential (`password`, `token`,
/// `secret`, ... in their name) keep their name, not their value.
///
/// ```
/// use confab_config::redact_url;
///
/// assert_eq!(redact_url("postgres://u:pw@db:5432/confab"), "postgres://***@db:5432/confab");
/// assert_eq!(redact_url("nats://tok@a:4222, nats://b:4222"), "nats://***@a:4222,nats://b:4222");
/// assert_eq!(redact_url("postgres://db/confab?password=pw"), "postgres://db/confab?password=***");
/// assert_eq!(redact_url("sqlite://confab.db?mode=rwc"), "sqlite://confab.db?mode=rwc");
/// ```
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| redact_one(one.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Query parameter names (lowercase parts) whose values are credentials.
const SECRET_PARAMS: &[&str] = &[
    "password", "passwd", "pass", "pwd", "token", "secret", "key",
];

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (hidden, rest) = match rest.rfind('@') {
        Some(at) => ("***", &rest[at..]),
        None => ("", rest),
    };
    format!("{scheme}{hidden}{}", redact_query(rest))
}

fn redact_query(rest: &str) -> String {
    let Some((before, query)) = rest.split_once('?') else {
        return rest.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| SECRET_PARAMS.contains(&part))
        || SECRET_PARAMS
            .iter()
            .any(|s| s.len() > 4 && name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_shown() {
        for (url, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://***@h:5432/db"),
            ("nats://u:p@h:4222", "nats://***@h:4222"),
            ("nats://tok@a:1, nats://b:2", "nats://***@a:1,nats://b:2"),
            ("u:p@h:4222", "***@h:4222"),
            ("postgres://u:p@ss/w@rd@h/db", "postgres://***@h/db"),
            (
                "postgres://h/db?sslmode=require&password=pw",
                "postgres://h/db?sslmode=require&password=***",
            ),
            ("nats://h:1?auth_token=t", "nats://h:1?auth_token=***"),
            (
                "postgres://h/db?dbpassword=pw",
                "postgres://h/db?dbpassword=***",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "nats://h:4222",
            "sqlite://confab.db?mode=rwc",
            "sqlite::memory:",
            "postgres://h:5432/db?sslmode=require",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
