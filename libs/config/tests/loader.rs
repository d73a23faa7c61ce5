//! The layered loader and its rule for environment variables.

use std::path::Path;
use std::time::Duration;

use confab_config::{ConfigError, Loader, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Cfg {
    listen: String,
    token: Option<Secret>,
    name: String,
    count: u32,
    enabled: bool,
    origins: Vec<String>,
    engine: Engine,
    nats: Option<Nats>,
}

impl Default for Cfg {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            token: None,
            name: "confab".into(),
            count: 1,
            enabled: true,
            origins: vec!["*".into()],
            engine: Engine::default(),
            nats: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Engine {
    #[serde(with = "confab_config::duration")]
    ping_interval: Duration,
    max_payload: usize,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            max_payload: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Nats {
    url: String,
    name: String,
}

impl Default for Nats {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            name: "confab".into(),
        }
    }
}

/// The all-in-one's kind of extra keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Extra {
    database_url: String,
}

impl Default for Extra {
    fn default() -> Self {
        Self {
            database_url: "sqlite::memory:".into(),
        }
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: Option<&Path>, pairs: &[(&str, &str)]) -> Result<(Cfg, Vec<String>), ConfigError> {
    let mut loader = Loader::with_vars(file, vars(pairs))?;
    let cfg = loader.load(&Cfg::default())?;
    Ok((cfg, loader.ignored()))
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("confab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_then_file_then_environment() {
    let (cfg, ignored) = load(None, &[]).unwrap();
    assert_eq!(cfg, Cfg::default());
    assert!(ignored.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "listen = \"0.0.0.0:1\"\ncount = 7\n[engine]\nping_interval = \"1m30s\"\n",
    );
    let (cfg, _) = load(Some(&file), &[("CONFAB_COUNT", "9")]).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:1");
    assert_eq!(cfg.count, 9, "the environment wins over the file");
    assert_eq!(cfg.engine.ping_interval, Duration::from_secs(90));
    assert_eq!(cfg.engine.max_payload, 1000, "untouched keys keep defaults");

    // CONFAB_CONFIG names the file when no path is given, and is no key.
    let path = file.to_str().unwrap();
    let (cfg, ignored) = load(None, &[("CONFAB_CONFIG", path)]).unwrap();
    assert_eq!(cfg.count, 7);
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[test]
fn only_variables_naming_a_key_are_read_the_others_are_listed() {
    let (cfg, ignored) = load(
        None,
        &[
            ("CONFAB_ENGINE__PING_INTERVAL", "5s"),
            ("CONFAB_ENGINE__PING_INTERVALL", "5s"),
            ("CONFAB_NOPE", "1"),
            ("CONFAB_GATEWAY_CONFIG", "bench/gateway.toml"),
            ("CONFAB_NATS__URLL", "nats://typo:1"),
            ("CONFAB_A____B", "x"),
            ("HOME", "/root"),
            ("confab_count", "3"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.engine.ping_interval, Duration::from_secs(5));
    assert_eq!(cfg.nats, None, "a misspelt key does not create its section");
    assert_eq!(cfg.count, 1, "the prefix is upper case");
    assert_eq!(
        ignored,
        [
            "CONFAB_A____B",
            "CONFAB_ENGINE__PING_INTERVALL",
            "CONFAB_GATEWAY_CONFIG",
            "CONFAB_NATS__URLL",
            "CONFAB_NOPE",
        ]
    );
}

#[test]
fn values_are_read_as_toml_words_and_text_stays_as_written() {
    let (cfg, ignored) = load(
        None,
        &[
            ("CONFAB_TOKEN", "000123"),
            ("CONFAB_NAME", "123"),
            ("CONFAB_COUNT", "5"),
            ("CONFAB_ENABLED", "false"),
            ("CONFAB_ORIGINS", "[https://a.example, https://b.example]"),
            ("CONFAB_LISTEN", "true"),
            ("CONFAB_NATS__URL", "nats://n:4222"),
            ("CONFAB_engine__max_payload", "2048"),
        ],
    )
    .unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(cfg.token.as_ref().map(Secret::expose), Some("000123"));
    assert_eq!(cfg.name, "123");
    assert_eq!(cfg.count, 5);
    assert!(!cfg.enabled);
    assert_eq!(cfg.origins, ["https://a.example", "https://b.example"]);
    assert_eq!(cfg.listen, "true");
    assert_eq!(
        cfg.nats,
        Some(Nats {
            url: "nats://n:4222".into(),
            ..Nats::default()
        }),
        "a variable creates an optional section with its defaults"
    );
    assert_eq!(cfg.engine.max_payload, 2048, "any case after the prefix");
}

#[test]
fn a_bad_value_names_the_key_and_the_variable() {
    let err = load(None, &[("CONFAB_ENGINE__PING_INTERVAL", "5000")]).unwrap_err();
    assert_eq!(err.key(), Some("engine.ping_interval"));
    let text = err.to_string();
    assert!(text.contains("add one, e.g. \"5000ms\""), "{text}");
    assert!(
        text.contains("environment variable CONFAB_ENGINE__PING_INTERVAL"),
        "{text}"
    );

    let err = load(None, &[("CONFAB_COUNT", "many")]).unwrap_err();
    assert_eq!(err.key(), Some("count"), "{err}");
    assert!(err.to_string().contains("CONFAB_COUNT"), "{err}");
}

#[test]
fn the_file_is_strict() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[engine]\nping_intervall = \"5s\"\n");
    let err = load(Some(&file), &[]).unwrap_err();
    assert_eq!(err.key(), Some("engine.ping_intervall"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("unknown key") && text.contains("ping_interval"),
        "{text}"
    );
    assert!(text.contains(&file.display().to_string()), "{text}");

    let file = write(&dir, "[engine]\nping_interval = 5000\n");
    let err = load(Some(&file), &[]).unwrap_err();
    assert_eq!(err.key(), Some("engine.ping_interval"), "{err}");
    assert!(err.to_string().contains("has no unit"), "{err}");
    assert!(err.to_string().contains("confab.toml"), "{err}");

    let file = write(&dir, "listen = \n");
    let err = load(Some(&file), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");

    let missing = dir.path().join("nope.toml");
    let err = load(Some(&missing), &[]).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = load(None, &[("CONFAB_CONFIG", missing.to_str().unwrap())]).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn extra_keys_share_the_key_space() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "count = 4\ndatabase_url = \"sqlite://x.db\"\n");
    let mut loader = Loader::with_vars(
        Some(&file),
        vars(&[
            ("CONFAB_DATABASE_URL", "postgres://db/confab"),
            ("CONFAB_LISTEN", "127.0.0.1:0"),
            ("CONFAB_DATABASE_URLL", "x"),
        ]),
    )
    .unwrap();
    let (cfg, extra) = loader
        .load_with(&Cfg::default(), &Extra::default())
        .unwrap();
    assert_eq!(cfg.count, 4);
    assert_eq!(cfg.listen, "127.0.0.1:0");
    assert_eq!(extra.database_url, "postgres://db/confab");
    assert_eq!(loader.ignored(), ["CONFAB_DATABASE_URLL"]);

    let file = write(&dir, "databse_url = \"sqlite://x.db\"\n");
    let mut loader = Loader::with_vars(Some(&file), vars(&[])).unwrap();
    let err = loader
        .load_with(&Cfg::default(), &Extra::default())
        .unwrap_err();
    assert_eq!(err.key(), Some("databse_url"), "{err}");
}
