//! [`Loader`]: defaults, then a TOML file, then `CONFAB_*` variables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::{CONFIG_FILE_ENV, EnvVar};
use crate::error::ConfigError;

/// Reads a binary's configuration sources once and extracts its typed
/// configuration from them.
///
/// Layers, later ones winning: the defaults (the `base` value given to
/// [`Loader::load`]), the TOML file (the path given, else the one named by
/// `CONFAB_CONFIG`, else none), then the `CONFAB_*` variables.
///
/// **Which variables are read.** A `CONFAB_*` variable is read when its
/// name maps onto a key of the configuration being loaded (`__` between
/// sections, any case: `CONFAB_ENGINE__PING_INTERVAL` →
/// `engine.ping_interval`). Every other `CONFAB_*` variable is ignored and
/// listed by [`Loader::ignored`], which the binaries log as a warning at
/// start: the prefix is shared with tools (`CONFAB_GATEWAY_CONFIG` of
/// `deploy/local/cluster.sh`) and with the other binaries (one environment
/// file may hold the keys of the gateway and of the membership service).
/// A file is stricter: an unknown key there is an error.
///
/// **How values are read.** A variable's value is read the way a TOML value
/// is written, without quotes: `5` a number, `true` a boolean, `[a, b]` a
/// list, anything else text. Where the key wants text, the value is taken
/// as written, so a token made of digits stays a token.
#[derive(Debug)]
pub struct Loader {
    file: Option<FileLayer>,
    env: Vec<EnvVar>,
    used: Vec<bool>,
}

/// A configuration and the `CONFAB_*` variables that were not read.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The configuration.
    pub config: T,
    /// Names of the `CONFAB_*` variables that name no key of it.
    pub ignored: Vec<String>,
}

impl<T> Loaded<T> {
    /// Logs one warning per ignored variable (call it once logging is set
    /// up).
    pub fn warn_ignored(&self) {
        for name in &self.ignored {
            tracing::warn!(
                variable = %name,
                "{name} is not a configuration key of this process: ignored"
            );
        }
    }
}

impl Loader {
    /// Reads `file` (or the file named by `CONFAB_CONFIG`) and the process
    /// environment.
    pub fn new(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        Self::with_vars(file, vars)
    }

    /// Like [`Loader::new`], with `vars` instead of the process environment.
    pub fn with_vars(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let named = vars
            .iter()
            .find(|(name, _)| name == CONFIG_FILE_ENV)
            .map(|(_, path)| PathBuf::from(path));
        let file = file
            .map(Path::to_path_buf)
            .or(named)
            .map(FileLayer::read)
            .transpose()?;
        let mut env: Vec<EnvVar> = vars
            .into_iter()
            .filter_map(|(name, text)| EnvVar::new(name, text))
            .collect();
        env.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            used: vec![false; env.len()],
            file,
            env,
        })
    }

    /// The configuration `T` over the defaults `base`, from every key.
    pub fn load<T: Serialize + DeserializeOwned>(&mut self, base: &T) -> Result<T, ConfigError> {
        self.extract(base, &|_| true)
    }

    /// Two configurations sharing one key space: the top-level keys of
    /// `extra` (those its defaults serialize) go to `E`, every other key to
    /// `T`. A binary that embeds another's configuration adds its own keys
    /// this way, unknown keys still refused.
    pub fn load_with<T, E>(&mut self, base: &T, extra: &E) -> Result<(T, E), ConfigError>
    where
        T: Serialize + DeserializeOwned,
        E: Serialize + DeserializeOwned,
    {
        let own = top_level_keys(extra)?;
        let e = self.extract(extra, &|key| own.contains(key))?;
        let t = self.extract(base, &|key| !own.contains(key))?;
        Ok((t, e))
    }

    /// The `CONFAB_*` variables no load so far has read, by name.
    pub fn ignored(&self) -> Vec<String> {
        self.env
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(var, _)| var.name.clone())
            .collect()
    }

    /// `T` from the layers, keeping only the top-level keys `routed`
    /// accepts.
    fn extract<T: Serialize + DeserializeOwned>(
        &mut self,
        base: &T,
        routed: &dyn Fn(&str) -> bool,
    ) -> Result<T, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(base));
        if let Some(file) = &self.file {
            fig = fig.merge(file.layer(routed));
        }
        for (var, used) in self.env.iter().zip(self.used.iter_mut()) {
            if !var.top().is_some_and(routed) {
                continue;
            }
            if let Some(value) = value_for(base, var) {
                *used = true;
                fig = fig.merge(env_layer(var, value));
            }
        }
        fig.extract()
            .map_err(|e| value_error(e, self.file.as_ref()))
    }
}

/// What a variable contributes to `T`: `None` when it names no key of `T`.
fn value_for<T: Serialize + DeserializeOwned>(base: &T, var: &EnvVar) -> Option<Value> {
    let parsed = var.parsed();
    match probe(base, var, parsed.clone()) {
        Probe::Fits => Some(parsed),
        Probe::Unknown => None,
        Probe::Misfit => {
            let text = var.verbatim();
            if parsed != text && probe(base, var, text.clone()) == Probe::Fits {
                Some(text)
            } else {
                // Kept, so that loading reports what is wrong with it.
                Some(parsed)
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// `T` reads the defaults with this variable.
    Fits,
    /// The variable names no key of `T`.
    Unknown,
    /// The key exists; the value does not fit it.
    Misfit,
}

/// Whether `T` reads its defaults with `var` set to `value` on top.
fn probe<T: Serialize + DeserializeOwned>(base: &T, var: &EnvVar, value: Value) -> Probe {
    let fig = Figment::from(Serialized::defaults(base)).merge(env_layer(var, value));
    match fig.extract::<T>() {
        Ok(_) => Probe::Fits,
        Err(e) => {
            if e.into_iter()
                .any(|e| matches!(e.kind, Kind::UnknownField(..)))
            {
                Probe::Unknown
            } else {
                Probe::Misfit
            }
        }
    }
}

/// The top-level keys `value` serializes.
fn top_level_keys<E: Serialize>(value: &E) -> Result<BTreeSet<String>, ConfigError> {
    let data = Serialized::defaults(value)
        .data()
        .map_err(|e| value_error(e, None))?;
    Ok(data
        .get(&Profile::Default)
        .map(|dict| dict.keys().cloned().collect())
        .unwrap_or_default())
}

/// The configuration file, parsed.
#[derive(Debug)]
struct FileLayer {
    path: PathBuf,
    dict: Dict,
}

impl FileLayer {
    fn read(path: PathBuf) -> Result<Self, ConfigError> {
        let fail = |problem: String| ConfigError::File {
            path: path.clone(),
            problem,
        };
        if !path.exists() {
            return Err(fail("does not exist".into()));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let mut data = Toml::string(&text)
            .data()
            .map_err(|e| fail(e.to_string()))?;
        let dict = data.remove(&Profile::Default).unwrap_or_default();
        Ok(Self { path, dict })
    }

    fn layer(&self, routed: &dyn Fn(&str) -> bool) -> Layer {
        Layer {
            metadata: Metadata::named("TOML file").source(Source::File(self.path.clone())),
            dict: self
                .dict
                .iter()
                .filter(|(key, _)| routed(key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn env_layer(var: &EnvVar, value: Value) -> Layer {
    let key = var.key.as_deref().unwrap_or_default();
    Layer {
        metadata: Metadata::named(format!("environment variable {}", var.name)),
        dict: figment::util::nest(key, value)
            .into_dict()
            .unwrap_or_default(),
    }
}

/// One layer's data and where it came from.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A figment error as a [`ConfigError::Value`] naming the key.
fn value_error(error: figment::Error, file: Option<&FileLayer>) -> ConfigError {
    let mut key = error.path.join(".");
    let (problem, origin) = match &error.kind {
        Kind::UnknownField(field, expected) => {
            // figment's path ends with the unknown key; serde's alone would not.
            if error.path.last() != Some(field) {
                key = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
            }
            let problem = format!("unknown key; known here: {}", expected.join(", "));
            // Variables naming no key are never merged, so the file has it.
            let origin = file.map_or_else(|| "defaults".to_owned(), |f| in_file(&f.path));
            (problem, origin)
        }
        kind => (kind.to_string(), origin(error.metadata.as_ref())),
    };
    if key.is_empty() {
        key = "(top level)".into();
    }
    ConfigError::Value {
        key,
        origin,
        problem,
    }
}

fn origin(metadata: Option<&Metadata>) -> String {
    match metadata {
        Some(Metadata {
            source: Some(Source::File(path)),
            ..
        }) => in_file(path),
        Some(m) if m.name.starts_with("environment") => m.name.to_string(),
        _ => "defaults".to_owned(),
    }
}

fn in_file(path: &Path) -> String {
    format!("in {}", path.display())
}
