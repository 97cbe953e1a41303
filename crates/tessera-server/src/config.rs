//! Configuration: one typed [`Config`], layered from a TOML file, then `TESSERA_*` environment
//! variables, then command-line flags (applied by the CLI).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_core::keys::Algorithm;
use thiserror::Error;

/// Which token format a delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// `tsr_…`: a random key to a server-side session record.
    Opaque,
    /// A signed JWT access token (`at+jwt`).
    Jwt,
}

/// Every setting of a tessera server. Field names are the TOML keys; the environment variable
/// of a key is `TESSERA_` plus the key in upper case (`idle_timeout` → `TESSERA_IDLE_TIMEOUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Data directory (SQLite database).
    pub data: PathBuf,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a generated self-signed certificate for localhost (local use only).
    pub tls_self_signed: bool,
    /// Allow plain HTTP on a non-loopback address because a TLS-terminating proxy is in front;
    /// `X-Forwarded-*` is then trusted from `trusted_proxies` only.
    pub behind_proxy: bool,
    /// Addresses whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Signature algorithm of new keys: `EdDSA` (default), `ES256` or `HS256`.
    pub jwt_algorithm: String,
    /// Token format for cookie delivery (default `opaque`).
    pub cookie_format: TokenFormat,
    /// Token format for bearer delivery (default `jwt`).
    pub bearer_format: TokenFormat,
    /// Idle timeout, seconds (default 1800).
    pub idle_timeout: u64,
    /// Absolute timeout, seconds (default 43200).
    pub absolute_timeout: u64,
    /// JWT access-token lifetime, seconds (default 600).
    pub access_token_lifetime: u64,
    /// Seconds during which a repeated refresh returns the same successor (default 10).
    pub refresh_grace: u64,
    /// Clock-skew leeway for `exp`/`nbf`, seconds (default 30).
    pub leeway: u64,
    /// Minimum seconds between two activity writes of one session (default 60).
    pub activity_write_interval: u64,
    /// Skip the per-request revocation check of JWT access tokens: revocation then takes
    /// effect only at `exp`. Off by default.
    pub stateless: bool,
    /// Most JWT access tokens remembered as verified, so a token seen before skips its
    /// signature check (default 10000, about 10 MB; 0 turns the cache off). Revocation is
    /// still checked on every request.
    pub jwt_cache_capacity: u64,
    /// Argon2id memory, KiB (default 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (default 2).
    pub argon2_iterations: u32,
    /// Argon2id lanes (default 1).
    pub argon2_parallelism: u32,
    /// Origins (`https://app.example.com`) besides the server's own that may send
    /// cookie-authenticated state-changing requests.
    pub allowed_origins: Vec<String>,
    /// Permissions each role grants: `[role_permissions] editor = ["docs:write"]`.
    pub role_permissions: BTreeMap<String, Vec<String>>,
    /// Failed logins of one username from one address before that pair is locked (default 10).
    pub login_max_failures: u32,
    /// Failed logins from one address, any usernames, before it is refused (default 100).
    pub login_max_failures_per_address: u32,
    /// Failed logins per minute over all clients before every login is refused (default 1000).
    pub login_max_failures_global: u32,
    /// Window in which failed logins are counted, seconds (default 900).
    pub login_failure_window: u64,
    /// First lockout, seconds (default 30); doubles with every further failure.
    pub login_lockout: u64,
    /// Longest lockout, seconds (default 900).
    pub login_lockout_max: u64,
    /// URL that receives audit events as signed webhooks (off when unset).
    pub webhook_url: Option<String>,
    /// Secret for the webhooks' HMAC-SHA256 signature.
    pub webhook_secret: Option<Secret>,
}

/// A configuration secret: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data: PathBuf::from("./tessera-data"),
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            behind_proxy: false,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            issuer: "tessera".into(),
            audience: "tessera".into(),
            jwt_algorithm: "EdDSA".into(),
            cookie_format: TokenFormat::Opaque,
            bearer_format: TokenFormat::Jwt,
            idle_timeout: 30 * 60,
            absolute_timeout: 12 * 3600,
            access_token_lifetime: 10 * 60,
            refresh_grace: 10,
            leeway: 30,
            activity_write_interval: 60,
            stateless: false,
            jwt_cache_capacity: 10_000,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            allowed_origins: Vec::new(),
            role_permissions: BTreeMap::new(),
            login_max_failures: 10,
            login_max_failures_per_address: 100,
            login_max_failures_global: 1000,
            login_failure_window: 900,
            login_lockout: 30,
            login_lockout_max: 900,
            webhook_url: None,
            webhook_secret: None,
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file or an environment variable is not valid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the file (if any), then applies `TESSERA_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("TESSERA_").map(str::to_ascii_lowercase) else {
                continue;
            };
            // Only configuration keys are read; TESSERA_ADMIN_PASSWORD and test variables are not.
            if !Self::KEYS.contains(&key.as_str()) {
                continue;
            }
            let is_list = matches!(defaults.get(&key), Some(toml::Value::Array(_)))
                || key == "trusted_proxies"
                || key == "allowed_origins";
            table.insert(key, env_value(&raw, is_list));
        }
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// Every configuration key (TOML name).
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "data",
        "tls_cert",
        "tls_key",
        "tls_self_signed",
        "behind_proxy",
        "trusted_proxies",
        "issuer",
        "audience",
        "jwt_algorithm",
        "cookie_format",
        "bearer_format",
        "idle_timeout",
        "absolute_timeout",
        "access_token_lifetime",
        "refresh_grace",
        "leeway",
        "activity_write_interval",
        "stateless",
        "jwt_cache_capacity",
        "argon2_memory_kib",
        "argon2_iterations",
        "argon2_parallelism",
        "allowed_origins",
        "role_permissions",
        "login_max_failures",
        "login_max_failures_per_address",
        "login_max_failures_global",
        "login_failure_window",
        "login_lockout",
        "login_lockout_max",
        "webhook_url",
        "webhook_secret",
    ];

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad("listen must be an IP address and port, e.g. 127.0.0.1:8080");
        }
        if self.jwt_algorithm.parse::<Algorithm>().is_err() {
            return bad("jwt_algorithm must be EdDSA, ES256 or HS256");
        }
        if self.idle_timeout == 0 || self.absolute_timeout == 0 || self.access_token_lifetime == 0 {
            return bad("timeouts and lifetimes must be positive");
        }
        if self.idle_timeout > self.absolute_timeout {
            return bad("idle_timeout cannot exceed absolute_timeout");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        if self.webhook_url.is_some() && self.webhook_secret.as_ref().is_none_or(|s| s.0.len() < 16)
        {
            return bad("webhook_url needs a webhook_secret of at least 16 characters");
        }
        if self.tls_self_signed && self.tls_cert.is_some() {
            return bad("choose tls_cert/tls_key or tls_self_signed, not both");
        }
        Ok(())
    }

    /// The configured JWT algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.jwt_algorithm.parse().unwrap_or(Algorithm::EdDsa)
    }

    /// True when HTTPS is configured.
    pub fn serves_tls(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_list_every_field() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        // Fields whose default is None are absent from the serialized table.
        keys.extend(["tls_cert", "tls_key", "webhook_url", "webhook_secret"]);
        keys.sort();
        let mut listed = Config::KEYS.to_vec();
        listed.sort();
        assert_eq!(keys, listed);
    }

    #[test]
    fn env_overrides_file_and_unknown_env_is_ignored() {
        let dir = std::env::temp_dir().join(format!("tessera-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "idle_timeout = 100\nleeway = 5\n[role_permissions]\neditor = [\"w\"]\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("TESSERA_IDLE_TIMEOUT", "200"),
                ("TESSERA_ADMIN_PASSWORD", "x"),
                ("TESSERA_ALLOWED_ORIGINS", "https://a.test, https://b.test"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.idle_timeout, 200);
        assert_eq!(cfg.leeway, 5);
        assert_eq!(
            cfg.allowed_origins,
            vec!["https://a.test", "https://b.test"]
        );
        assert_eq!(cfg.role_permissions["editor"], vec!["w"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("tessera-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "idle_timeut = 100\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file), []),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", "none")])).is_err());
        assert!(Config::load(None, env(&[("TESSERA_IDLE_TIMEOUT", "abc")])).is_err());
        assert!(Config::load(None, env(&[("TESSERA_LISTEN", "nowhere")])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
