//! The `CONFAB_*` environment variables: which ones are configuration and
//! the key each one names.

use figment::value::Value;

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "CONFAB_";

/// The variable naming the configuration file; never a key itself.
pub const CONFIG_FILE_ENV: &str = "CONFAB_CONFIG";

/// The variable that sets `key` (`engine.ping_interval` →
/// `CONFAB_ENGINE__PING_INTERVAL`).
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join("__")
    )
}

/// One `CONFAB_*` variable of the environment (other than
/// [`CONFIG_FILE_ENV`]).
#[derive(Debug, Clone)]
pub(crate) struct EnvVar {
    /// The variable's name, as set.
    pub(crate) name: String,
    /// The dotted key it names, lowercase; `None` when the name cannot be a
    /// key (an empty part, as in `CONFAB_A____B` or `CONFAB_`).
    pub(crate) key: Option<String>,
    /// Its value, as set.
    pub(crate) text: String,
}

impl EnvVar {
    /// The variable, if `name` is a configuration variable.
    pub(crate) fn new(name: String, text: String) -> Option<Self> {
        let rest = name.strip_prefix(ENV_PREFIX)?;
        if name == CONFIG_FILE_ENV {
            return None;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let key = (!parts.iter().any(String::is_empty)).then(|| parts.join("."));
        Some(Self { name, key, text })
    }

    /// The top-level key it sets (`engine` for `CONFAB_ENGINE__PING_INTERVAL`).
    pub(crate) fn top(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| k.split('.').next())
    }

    /// The value read the way TOML values are written, without quotes:
    /// `5` a number, `true` a boolean, `[a, b]` a list, anything else text.
    pub(crate) fn parsed(&self) -> Value {
        match self.text.parse::<Value>() {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// The value as written, as text (for keys that want text, such as a
    /// token made of digits only).
    pub(crate) fn verbatim(&self) -> Value {
        Value::from(self.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_onto_keys() {
        let var = EnvVar::new("CONFAB_ENGINE__PING_INTERVAL".into(), "5s".into()).unwrap();
        assert_eq!(var.key.as_deref(), Some("engine.ping_interval"));
        assert_eq!(var.top(), Some("engine"));
        assert_eq!(
            env_name("engine.ping_interval"),
            "CONFAB_ENGINE__PING_INTERVAL"
        );
        assert_eq!(env_name("service_token"), "CONFAB_SERVICE_TOKEN");
        assert!(EnvVar::new("CONFAB_CONFIG".into(), "x".into()).is_none());
        assert!(EnvVar::new("HOME".into(), "x".into()).is_none());
        assert!(EnvVar::new("confab_listen".into(), "x".into()).is_none());
        let empty = EnvVar::new("CONFAB_A____B".into(), "x".into()).unwrap();
        assert_eq!(empty.key, None);
    }
}
