//! Loading: the file, then the environment, each value read into its type once. A problem is
//! reported with where it came from (file, line and column, or environment variable), the key
//! it is about and, for a misspelt key or variable, the one probably meant.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::Config;
use super::keys::{ENV_PREFIX, Key, did_you_mean};

/// Environment variables starting with this are the test suite's own (database and Redis
/// URLs of the tests, their artifacts directory); tessera ignores them, so test binaries can
/// pass their environment on to the servers they start.
pub const TEST_ENV_PREFIX: &str = "TESSERA_TEST_";

/// The environment variable holding the master key of the signing keys (a secret: never a
/// configuration key, so it cannot end up in a config file).
pub const MASTER_KEY_ENV: &str = "TESSERA_MASTER_KEY";

/// The `TESSERA_*` variables tessera reads that are not configuration keys.
const OTHER_VARIABLES: &[&str] = &[
    // The configuration file (`--config`).
    "TESSERA_CONFIG",
    // The first admin's password (`serve`, on first start).
    "TESSERA_ADMIN_PASSWORD",
    // The master key of the signing keys.
    MASTER_KEY_ENV,
];

/// True for a `TESSERA_*` variable that tessera reads, or leaves alone, other than the
/// configuration keys: `TESSERA_CONFIG`, `TESSERA_ADMIN_PASSWORD`, `TESSERA_MASTER_KEY` and the
/// test suite's `TESSERA_TEST_*`. Any other `TESSERA_*` variable that is not a key is refused.
pub fn is_other_variable(name: &str) -> bool {
    OTHER_VARIABLES.contains(&name) || name.starts_with(TEST_ENV_PREFIX)
}

/// Why configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read. (The I/O error is the source, not repeated here:
    /// `{:#}` would print it twice.)
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key or value of the file, the environment or the settings is not valid.
    #[error("invalid configuration: {0}")]
    Invalid(Box<Problem>),
}

/// What is wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the bad key or value was written.
    pub origin: Origin,
    /// The key it is about (for an unknown key, the key as written), when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// For a misspelt key or variable, the one probably meant.
    pub suggestion: Option<String>,
}

/// Where a configuration problem was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// In the config file, at this line and column (both from 1).
    File {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column in characters, from 1.
        column: usize,
    },
    /// In an environment variable.
    Environment {
        /// The variable's name.
        variable: String,
    },
    /// In the settings as given: built in code, or changed by command-line flags.
    Settings,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}: ", path.display())?
            }
            Origin::Environment { variable } => write!(f, "environment variable {variable}: ")?,
            Origin::Settings => {}
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, "; did you mean `{suggestion}`?")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// A problem with `key` in the settings (where it was written is added by the loader).
    pub(super) fn about(key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid(Box::new(Problem {
            origin: Origin::Settings,
            key: Some(key.to_owned()),
            message: message.to_owned(),
            suggestion: None,
        }))
    }

    /// What is wrong, when the configuration is invalid (not when its file cannot be read).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid(problem) => Some(problem),
            ConfigError::Read { .. } => None,
        }
    }
}

impl Config {
    /// Loads the file (if any), then applies `TESSERA_*` variables from `env`, and checks the
    /// result. An unknown key or variable, a value that does not read as its key's type and a
    /// value [`Config::validate`] refuses are all errors naming where they were written.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = file.map(ConfigFile::read).transpose()?;
        let mut table = file.as_ref().map(|f| f.table.clone()).unwrap_or_default();
        let env = read_env(env)?;
        for setting in &env {
            table.insert(setting.key.name.to_owned(), setting.value.clone());
        }
        // Every value was read on its own above; keys are independent, so this only fails if
        // that stops being true.
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            invalid(Origin::Settings, None, e.message().to_owned(), None)
        })?;
        config.validate().map_err(|error| {
            let ConfigError::Invalid(mut problem) = error else {
                return error;
            };
            if let Some(key) = &problem.key {
                if let Some(setting) = env.iter().find(|s| s.key.name == key) {
                    problem.origin = Origin::Environment {
                        variable: setting.variable.clone(),
                    };
                } else if let Some(file) = &file
                    && let Some((_, span)) = file.keys.iter().find(|(name, _)| name == key)
                {
                    problem.origin = file.origin_at(span.start);
                }
            }
            ConfigError::Invalid(problem)
        })?;
        Ok(config)
    }
}

fn invalid(
    origin: Origin,
    key: Option<&str>,
    message: String,
    suggestion: Option<&str>,
) -> ConfigError {
    ConfigError::Invalid(Box::new(Problem {
        origin,
        key: key.map(str::to_owned),
        message,
        suggestion: suggestion.map(str::to_owned),
    }))
}

/// A config file, read and checked key by key.
struct ConfigFile {
    path: PathBuf,
    text: String,
    /// Each top-level key as written, with the span of its key and value.
    keys: Vec<(String, Range<usize>)>,
    /// The file's keys and values.
    table: toml::Table,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut file = ConfigFile {
            path: path.to_owned(),
            text,
            keys: Vec::new(),
            table: toml::Table::new(),
        };
        let keys = match toml::de::DeTable::parse(&file.text) {
            Ok(root) => root
                .get_ref()
                .iter()
                .map(|(key, value)| {
                    let span = key.span().start..value.span().end.max(key.span().end);
                    (key.get_ref().to_string(), span)
                })
                .collect(),
            Err(e) => return Err(file.problem(&e, None)),
        };
        file.keys = keys;
        for (name, span) in &file.keys {
            if Config::key(name).is_none() {
                let suggestion = did_you_mean(name, Config::KEYS.iter().map(|key| key.name));
                return Err(invalid(
                    file.origin_at(span.start),
                    Some(name),
                    "unknown key".to_owned(),
                    suggestion,
                ));
            }
        }
        // Read as the typed configuration first: a bad value is then reported at its place.
        if let Err(e) = toml::from_str::<Config>(&file.text) {
            let key = e.span().and_then(|span| file.key_at(span.start));
            return Err(file.problem(&e, key));
        }
        file.table = toml::from_str(&file.text).map_err(|e| file.problem(&e, None))?;
        Ok(file)
    }

    /// The top-level key written at or last before `offset`.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(_, span)| span.start <= offset)
            .max_by_key(|(_, span)| span.start)
            .map(|(name, _)| name.as_str())
    }

    fn origin_at(&self, offset: usize) -> Origin {
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Origin::File {
            path: self.path.clone(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// A parse or type error of the file, at its place.
    fn problem(&self, error: &toml::de::Error, key: Option<&str>) -> ConfigError {
        let origin = match error.span() {
            Some(span) => self.origin_at(span.start),
            None => Origin::File {
                path: self.path.clone(),
                line: 1,
                column: 1,
            },
        };
        let (message, suggestion) = explain(error.message());
        invalid(origin, key, message, suggestion)
    }
}

/// A deserialization message, with a did-you-mean for an unknown field of a nested table
/// (`unknown field `pathz`, expected one of `hosts`, `paths`, …`).
fn explain(message: &str) -> (String, Option<&str>) {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return (message.to_owned(), None);
    };
    let Some((name, expected)) = rest.split_once('`') else {
        return (message.to_owned(), None);
    };
    let candidates = expected.split('`').skip(1).step_by(2);
    (
        format!("unknown key `{name}`"),
        did_you_mean(name, candidates),
    )
}

/// A configuration key set by an environment variable.
struct EnvSetting {
    key: &'static Key,
    variable: String,
    value: toml::Value,
}

/// The `TESSERA_*` variables of `env` that set configuration keys, each value read alone so a
/// bad one names its variable. Any other `TESSERA_*` variable, unless [`is_other_variable`],
/// is refused: a misspelt one would otherwise be silently ignored.
fn read_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvSetting>, ConfigError> {
    let defaults = Config::default_values();
    let mut settings = Vec::new();
    for (variable, raw) in env {
        let Some(name) = variable.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if is_other_variable(&variable) {
            continue;
        }
        let Some(key) = Config::key(&name.to_ascii_lowercase()) else {
            // Compared without the common prefix, which would make every name look close.
            let others = OTHER_VARIABLES
                .iter()
                .filter_map(|v| v.strip_prefix(ENV_PREFIX));
            let known: Vec<String> = Config::KEYS
                .iter()
                .map(|key| key.name.to_ascii_uppercase())
                .chain(others.map(str::to_owned))
                .collect();
            let suggestion = did_you_mean(name, known.iter().map(String::as_str))
                .map(|meant| format!("{ENV_PREFIX}{meant}"));
            return Err(invalid(
                Origin::Environment { variable },
                None,
                "not a configuration key's variable, nor one tessera reads".to_owned(),
                suggestion.as_deref(),
            ));
        };
        let is_list = matches!(defaults.get(key.name), Some(toml::Value::Array(_)));
        let value = env_value(&raw, is_list);
        let mut alone = toml::Table::new();
        alone.insert(key.name.to_owned(), value.clone());
        if let Err(e) = alone.try_into::<Config>() {
            let (message, suggestion) = explain(e.message());
            return Err(invalid(
                Origin::Environment { variable },
                Some(key.name),
                message,
                suggestion,
            ));
        }
        settings.push(EnvSetting {
            key,
            variable,
            value,
        });
    }
    Ok(settings)
}

/// Reads an environment value as TOML when it parses as one, else as a string; list keys also
/// accept comma-separated plain text.
fn env_value(raw: &str, is_list: bool) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut doc| doc.remove("v"));
    if let Some(value) = parsed.filter(|v| !is_list || v.is_array()) {
        return value;
    }
    if is_list {
        let items = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
        return toml::Value::Array(items.map(|s| toml::Value::String(s.to_owned())).collect());
    }
    toml::Value::String(raw.to_owned())
}
