//! Configuration: one typed [`Config`], layered from a TOML file, then `TESSERA_*` environment
//! variables, then command-line flags (applied by the CLI).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_core::keys::Algorithm;
use tessera_core::names;
use thiserror::Error;

use crate::access::{AccessPolicy, AccessRule};
use crate::http::redirect::{self, RedirectPolicy};

/// Which token format a delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// `tsr_…`: a random key to a server-side session record.
    Opaque,
    /// A signed JWT access token (`at+jwt`).
    Jwt,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (structured `tracing` fields), for log collectors.
    Json,
}

/// Every setting of a tessera server. Field names are the TOML keys; the environment variable
/// of a key is `TESSERA_` plus the key in upper case (`idle_timeout` → `TESSERA_IDLE_TIMEOUT`).
/// Durations are written with units (`"90s"`, `"30m"`, `"12h"`) or as an integer of seconds.
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
    #[serde(with = "algorithm_name")]
    pub jwt_algorithm: Algorithm,
    /// Token format for cookie delivery (default `opaque`).
    pub cookie_format: TokenFormat,
    /// Token format for bearer delivery (default `jwt`).
    pub bearer_format: TokenFormat,
    /// Idle timeout (default 30m).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Absolute timeout (default 12h).
    #[serde(with = "duration")]
    pub absolute_timeout: Duration,
    /// JWT access-token lifetime (default 10m).
    #[serde(with = "duration")]
    pub access_token_lifetime: Duration,
    /// Time during which a repeated refresh returns the same successor (default 10s).
    #[serde(with = "duration")]
    pub refresh_grace: Duration,
    /// Clock-skew leeway for `exp`/`nbf` (default 30s).
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Least time between two activity writes of one session (default 1m).
    #[serde(with = "duration")]
    pub activity_write_interval: Duration,
    /// Skip the per-request revocation check of JWT access tokens: revocation then takes
    /// effect only at `exp`. Off by default.
    pub stateless: bool,
    /// Most JWT access tokens remembered as verified, so a token seen before skips its
    /// signature check (default 10000, about 10 MB; 0 turns the cache off). Revocation is
    /// still checked on every request.
    pub jwt_cache_capacity: u64,
    /// Session records the SQLite store keeps in memory for the verify path, per key kind
    /// (default 10000, about 10 MB in all; 0 turns the cache off). A record is served only
    /// while the change counters shared by every process on the database say nothing it
    /// depends on was written since, so revocation stays instant.
    pub session_cache_capacity: u64,
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
    /// The login page browsers are sent to by `/v1/verify` when they have no session (a path
    /// such as `/login` on the protected host, or an absolute URL). Unset: always 401.
    pub login_url: Option<String>,
    /// Origins the login page may send a browser back to (`rd`): `https://app.example.com`,
    /// `https://*.example.com`. Local paths are always allowed; anything else goes to `/account`.
    pub redirect_origins: Vec<String>,
    /// Parent domain to share the session cookie with (SSO across subdomains). The cookie then
    /// becomes `__Secure-tessera; Domain=<domain>` instead of the host-only `__Host-tessera`.
    pub cookie_domain: Option<String>,
    /// Forward-auth access rules, tried in order; see [`crate::access`].
    pub access_rules: Vec<AccessRule>,
    /// Failed logins of one username from one address before that pair is locked (default 10).
    pub login_max_failures: u32,
    /// Failed logins from one address, any usernames, before it is refused (default 100).
    pub login_max_failures_per_address: u32,
    /// Failed logins per minute over all clients before every login is refused (default 1000).
    pub login_max_failures_global: u32,
    /// Window in which failed logins are counted (default 15m).
    #[serde(with = "duration")]
    pub login_failure_window: Duration,
    /// First lockout (default 30s); doubles with every further failure.
    #[serde(with = "duration")]
    pub login_lockout: Duration,
    /// Longest lockout (default 15m).
    #[serde(with = "duration")]
    pub login_lockout_max: Duration,
    /// IPv6 clients are counted per network of this prefix length, 1 to 128 (default 64: one
    /// client usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
    pub login_ipv6_prefix: u8,
    /// URL that receives audit events as signed webhooks (off when unset).
    pub webhook_url: Option<String>,
    /// Secret for the webhooks' HMAC-SHA256 signature.
    pub webhook_secret: Option<Secret>,
    /// Whether webhooks may go to private (RFC 1918, `fc00::/7`, `100.64.0.0/10`) and
    /// link-local (`169.254.0.0/16`, `fe80::/10`) addresses (default false).
    pub webhook_allow_private: bool,
    /// Time a client has to send a whole request head (default 10s); an HTTP/1.1
    /// connection idle between requests is closed after the same time.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body (default 30s); past it, 408.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Time a connection may stay silent, HTTP/2 included, before it is closed (default 1m).
    #[serde(with = "duration")]
    pub keep_alive_timeout: Duration,
    /// Log format on stderr: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// The durable store: `sqlite://PATH` or `postgres://…` (libpq URL). Unset: SQLite in
    /// `data`. May hold a password: keep config files private.
    pub store: Option<StoreUrl>,
    /// Where sessions live: `same` (the store) or `redis://…`, `redis+sentinel://…`,
    /// `redis+cluster://…`.
    pub sessions: SessionsUrl,
    /// Time between two reloads of the signing keys from the store, the fallback for lost
    /// change notifications (default 15s).
    #[serde(with = "duration")]
    pub key_poll_interval: Duration,
    /// File holding the master key that encrypts private signing keys at rest (default: the
    /// `TESSERA_MASTER_KEY` variable, else `master.key` in the data directory, generated on
    /// first start). See [`crate::master_key`].
    pub master_key_file: Option<PathBuf>,
}

/// The durable store (`store`), read once at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// `sqlite://PATH`; `sqlite://` alone is `tessera.db` in the data directory.
    Sqlite(Option<PathBuf>),
    /// `postgres://…` or `postgresql://…`, a libpq URL handed whole to the driver.
    Postgres(String),
}

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(StoreUrl::Sqlite(
                (!path.is_empty()).then(|| PathBuf::from(path)),
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url));
        }
        Err("store must be sqlite://PATH or postgres://…".to_owned())
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> String {
        match url {
            StoreUrl::Sqlite(None) => "sqlite://".to_owned(),
            StoreUrl::Sqlite(Some(path)) => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => url,
        }
    }
}

/// Where sessions live (`sessions`), read once at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SessionsUrl {
    /// `same`: in the durable store.
    Same,
    /// `redis://…`, `redis+sentinel://…` or `redis+cluster://…`, handed whole to the Redis store.
    Redis(String),
}

impl TryFrom<String> for SessionsUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        if url == "same" {
            return Ok(SessionsUrl::Same);
        }
        if ["redis://", "redis+sentinel://", "redis+cluster://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Ok(SessionsUrl::Redis(url));
        }
        Err(
            "sessions must be \"same\", redis://…, redis+sentinel://… or redis+cluster://…"
                .to_owned(),
        )
    }
}

impl From<SessionsUrl> for String {
    fn from(url: SessionsUrl) -> String {
        match url {
            SessionsUrl::Same => "same".to_owned(),
            SessionsUrl::Redis(url) => url,
        }
    }
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
            jwt_algorithm: Algorithm::EdDsa,
            cookie_format: TokenFormat::Opaque,
            bearer_format: TokenFormat::Jwt,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            access_token_lifetime: Duration::from_secs(10 * 60),
            refresh_grace: Duration::from_secs(10),
            leeway: Duration::from_secs(30),
            activity_write_interval: Duration::from_secs(60),
            stateless: false,
            jwt_cache_capacity: 10_000,
            session_cache_capacity: 10_000,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            allowed_origins: Vec::new(),
            role_permissions: BTreeMap::new(),
            login_max_failures: 10,
            login_max_failures_per_address: 100,
            login_max_failures_global: 1000,
            login_failure_window: Duration::from_secs(900),
            login_lockout: Duration::from_secs(30),
            login_lockout_max: Duration::from_secs(900),
            login_ipv6_prefix: 64,
            webhook_url: None,
            webhook_secret: None,
            webhook_allow_private: false,
            login_url: None,
            redirect_origins: Vec::new(),
            cookie_domain: None,
            access_rules: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            log_format: LogFormat::Text,
            store: None,
            sessions: SessionsUrl::Same,
            key_poll_interval: Duration::from_secs(15),
            master_key_file: None,
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
        // The error's display names the key the bad value belongs to (`… in `idle_timeout``).
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Invalid(e.to_string().trim_end().replace('\n', " "))
        })?;
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
        "session_cache_capacity",
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
        "login_ipv6_prefix",
        "webhook_url",
        "webhook_secret",
        "webhook_allow_private",
        "login_url",
        "redirect_origins",
        "cookie_domain",
        "access_rules",
        "header_read_timeout",
        "body_read_timeout",
        "keep_alive_timeout",
        "log_format",
        "store",
        "sessions",
        "key_poll_interval",
        "master_key_file",
    ];

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad("listen must be an IP address and port, e.g. 127.0.0.1:8080");
        }
        if self.idle_timeout.is_zero()
            || self.absolute_timeout.is_zero()
            || self.access_token_lifetime.is_zero()
        {
            return bad("timeouts and lifetimes must be positive");
        }
        if self.idle_timeout > self.absolute_timeout {
            return bad("idle_timeout cannot exceed absolute_timeout");
        }
        if self.header_read_timeout.is_zero()
            || self.body_read_timeout.is_zero()
            || self.keep_alive_timeout.is_zero()
        {
            return bad(
                "header_read_timeout, body_read_timeout and keep_alive_timeout must be positive",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        if self.webhook_url.is_some() && self.webhook_secret.as_ref().is_none_or(|s| s.0.len() < 16)
        {
            return bad("webhook_url needs a webhook_secret of at least 16 characters");
        }
        if let Some(url) = &self.webhook_url
            && let Err(why) =
                crate::service::check_webhook_destination(url, self.webhook_allow_private)
        {
            return Err(ConfigError::Invalid(why));
        }
        if self.tls_self_signed && self.tls_cert.is_some() {
            return bad("choose tls_cert/tls_key or tls_self_signed, not both");
        }
        if let Some(url) = &self.login_url
            && !valid_login_url(url)
        {
            return bad("login_url must be a path such as /login or an http(s) URL");
        }
        if let Some(domain) = &self.cookie_domain
            && !valid_cookie_domain(domain)
        {
            return bad("cookie_domain must be a domain name such as example.com");
        }
        RedirectPolicy::new(&self.redirect_origins).map_err(ConfigError::Invalid)?;
        for origin in &self.allowed_origins {
            redirect::exact_origin(origin).map_err(ConfigError::Invalid)?;
        }
        // Roles and permissions reach headers and tokens: the same charset as every other way in.
        for (role, permissions) in &self.role_permissions {
            let invalid =
                |e: names::NameError| ConfigError::Invalid(format!("role_permissions: {e}"));
            names::check_role(role).map_err(invalid)?;
            for permission in permissions {
                names::check_permission(permission).map_err(invalid)?;
            }
        }
        AccessPolicy::compile(&self.access_rules)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !(1..=128).contains(&self.login_ipv6_prefix) {
            return bad("login_ipv6_prefix must be between 1 and 128");
        }
        if self.key_poll_interval.is_zero() {
            return bad("key_poll_interval must be positive");
        }
        Ok(())
    }

    /// True when HTTPS is configured.
    pub fn serves_tls(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }
}

/// A configured duration as the whole seconds the service counts in (durations load as whole
/// seconds; one beyond `i64::MAX` seconds saturates).
pub fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Serde for duration keys: an integer is seconds (the original form), a string has units
/// (`"90s"`, `"30m"`, `"12h"`, `"1h 30m"`) as `humantime` reads them. Written back with units.
mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30m\", \"12h\" or \"10s\", or whole seconds")
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format_args!("a duration cannot be negative ({seconds})")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            let duration = humantime::parse_duration(text).map_err(|e| {
                E::custom(format_args!(
                    "invalid duration {text:?} ({e}); write e.g. \"30m\", \"12h\", \"10s\" or whole seconds"
                ))
            })?;
            // Sessions, tokens and lockouts count whole seconds: refuse rather than round.
            if duration.subsec_nanos() != 0 {
                return Err(E::custom(format_args!(
                    "invalid duration {text:?}: durations are whole seconds"
                )));
            }
            Ok(duration)
        }
    }
}

/// Serde for `jwt_algorithm`: the exact JOSE name, as [`Algorithm`]'s `FromStr` reads it.
mod algorithm_name {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde::ser::Serializer;
    use tessera_core::keys::Algorithm;

    pub(super) fn serialize<S: Serializer>(value: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.jose_name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        let name = String::deserialize(d)?;
        // No fallback: an unknown name (`none`, `eddsa`) stops the server at load.
        name.parse()
            .map_err(|e| D::Error::custom(format_args!("{name:?}: {e}")))
    }
}

fn valid_login_url(url: &str) -> bool {
    if url.starts_with('/') {
        return !url.starts_with("//")
            && !url.contains(['\\', '#'])
            && !url.contains(char::is_whitespace);
    }
    url::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none())
}

fn valid_cookie_domain(domain: &str) -> bool {
    let domain = domain.trim_start_matches('.');
    domain.contains('.')
        && domain.parse::<IpAddr>().is_err()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
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
        keys.extend([
            "tls_cert",
            "tls_key",
            "webhook_url",
            "webhook_secret",
            "login_url",
            "cookie_domain",
            "store",
            "master_key_file",
        ]);
        keys.sort();
        let mut listed = Config::KEYS.to_vec();
        listed.sort();
        assert_eq!(keys, listed);
    }

    /// Every key holding a duration, with a value in units and the same value in seconds.
    const DURATIONS: &[(&str, &str, u64)] = &[
        ("idle_timeout", "30m", 1800),
        ("absolute_timeout", "12h", 43_200),
        ("access_token_lifetime", "10m", 600),
        ("refresh_grace", "10s", 10),
        ("leeway", "1m 30s", 90),
        ("activity_write_interval", "2m", 120),
        ("login_failure_window", "1h", 3600),
        ("login_lockout", "45s", 45),
        ("login_lockout_max", "2h", 7200),
        ("header_read_timeout", "5s", 5),
        ("body_read_timeout", "1m", 60),
        ("keep_alive_timeout", "90s", 90),
        ("key_poll_interval", "1min", 60),
    ];

    /// Loads `text` as a config file (in a directory of its own, `name`), without environment.
    fn load_file(name: &str, text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, text).unwrap();
        let loaded = Config::load(Some(&file), []);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    fn duration_of(config: &Config, key: &str) -> Duration {
        let table = toml::Table::try_from(config).unwrap();
        let text = table[key].as_str().unwrap();
        humantime::parse_duration(text).unwrap()
    }

    #[test]
    fn durations_load_with_units_or_as_seconds_from_file_and_env() {
        for &(key, units, seconds) in DURATIONS {
            let expected = Duration::from_secs(seconds);
            let env_name = format!("TESSERA_{}", key.to_ascii_uppercase());
            let mut loaded = Vec::new();
            for value in [format!("{units:?}"), seconds.to_string()] {
                loaded.push(load_file("cfg7", &format!("{key} = {value}\n")).unwrap());
            }
            for value in [units.to_owned(), seconds.to_string()] {
                loaded.push(Config::load(None, env(&[(&env_name, &value)])).unwrap());
            }
            for config in loaded {
                assert_eq!(duration_of(&config, key), expected, "{key}");
            }
        }
        let cfg = Config::load(None, env(&[("TESSERA_IDLE_TIMEOUT", "30m")])).unwrap();
        assert_eq!(cfg.idle_timeout, Duration::from_secs(1800));
        assert_eq!(whole_seconds(cfg.idle_timeout), 1800);
    }

    #[test]
    fn a_bad_duration_is_refused_naming_its_key() {
        for &(key, _, _) in DURATIONS {
            let env_name = format!("TESSERA_{}", key.to_ascii_uppercase());
            // Fractions of a second are refused rather than rounded: the service counts seconds.
            for bad in ["abc", "10 parsecs", "-1", "1.5", "500ms", "1s 500ms"] {
                match Config::load(None, env(&[(&env_name, bad)])) {
                    Err(ConfigError::Invalid(message)) => {
                        assert!(
                            message.contains(&format!("`{key}`")),
                            "{key}={bad}: {message}"
                        )
                    }
                    other => panic!("{key}={bad} loaded: {other:?}"),
                }
            }
        }
        let message = load_file("cfg8", "leeway = \"5 minutes ago\"\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("`leeway`"), "{message}");
    }

    #[test]
    fn the_algorithm_is_parsed_at_load_with_no_fallback() {
        let es = Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", "ES256")])).unwrap();
        assert_eq!(es.jwt_algorithm, Algorithm::Es256);
        assert_eq!(Config::default().jwt_algorithm, Algorithm::EdDsa);
        // Names are exact: a misspelt or `none` algorithm stops the load instead of becoming EdDSA.
        for bad in ["none", "eddsa", "RS256", "HS256 ", ""] {
            match Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", bad)])) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.contains("`jwt_algorithm`"), "{bad}: {message}");
                    assert!(
                        message.contains("EdDSA, ES256 or HS256"),
                        "{bad}: {message}"
                    );
                }
                other => panic!("{bad:?} loaded: {other:?}"),
            }
        }
    }

    #[test]
    fn the_defaults_written_as_toml_load_back_unchanged() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert!(text.contains("idle_timeout = \"30m\""), "{text}");
        assert!(text.contains("jwt_algorithm = \"EdDSA\""), "{text}");
        assert_eq!(load_file("cfg9", &text).unwrap(), Config::default());
    }

    #[test]
    fn store_urls_are_read_once_into_their_kind() {
        let load = |key: &str, value: &str| Config::load(None, env(&[(key, value)]));
        let store = |value: &str| load("TESSERA_STORE", value).map(|c| c.store);
        assert_eq!(
            store("sqlite:///var/lib/t.db").unwrap(),
            Some(StoreUrl::Sqlite(Some(PathBuf::from("/var/lib/t.db"))))
        );
        assert_eq!(store("sqlite://").unwrap(), Some(StoreUrl::Sqlite(None)));
        assert_eq!(
            store("postgresql://u@h/db").unwrap(),
            Some(StoreUrl::Postgres("postgresql://u@h/db".into()))
        );
        let sessions = |value: &str| load("TESSERA_SESSIONS", value).map(|c| c.sessions);
        assert_eq!(sessions("same").unwrap(), SessionsUrl::Same);
        assert_eq!(
            sessions("redis+cluster://h:7000").unwrap(),
            SessionsUrl::Redis("redis+cluster://h:7000".into())
        );
        for (key, value) in [
            ("TESSERA_STORE", "mysql://x"),
            ("TESSERA_STORE", "/var/lib/t.db"),
            ("TESSERA_SESSIONS", "Same"),
            ("TESSERA_SESSIONS", "rediss//h"),
        ] {
            let message = load(key, value).unwrap_err().to_string();
            let name = key.trim_start_matches("TESSERA_").to_ascii_lowercase();
            assert!(
                message.contains(&format!("`{name}`")),
                "{key}={value}: {message}"
            );
        }
    }

    #[test]
    fn webhook_destinations_are_validated() {
        let with = |url: &str, allow_private: bool| Config {
            webhook_url: Some(url.to_owned()),
            webhook_secret: Some(Secret("sixteen characters!".to_owned())),
            webhook_allow_private: allow_private,
            ..Config::default()
        };
        for (url, allow_private) in [
            ("http://hooks.example/h", true),
            ("https://192.168.1.10/h", false),
            ("https://[fd00::1]/h", false),
            ("https://169.254.169.254/h", false),
            ("https://0.0.0.0/h", true),
        ] {
            assert!(
                matches!(
                    with(url, allow_private).validate(),
                    Err(ConfigError::Invalid(_))
                ),
                "{url} refused (allow_private {allow_private})"
            );
        }
        for (url, allow_private) in [
            ("https://hooks.example/h", false),
            ("http://127.0.0.1:9000/h", false),
            ("https://192.168.1.10/h", true),
        ] {
            assert!(
                with(url, allow_private).validate().is_ok(),
                "{url} allowed (allow_private {allow_private})"
            );
        }
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
        assert_eq!(cfg.idle_timeout, Duration::from_secs(200));
        assert_eq!(cfg.leeway, Duration::from_secs(5));
        assert_eq!(
            cfg.allowed_origins,
            vec!["https://a.test", "https://b.test"]
        );
        assert_eq!(cfg.role_permissions["editor"], vec!["w"]);
        let json = Config::load(None, env(&[("TESSERA_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
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
        assert!(Config::load(None, env(&[("TESSERA_HEADER_READ_TIMEOUT", "0")])).is_err());
        assert!(Config::load(None, env(&[("TESSERA_LOG_FORMAT", "xml")])).is_err());
        assert!(Config::load(None, env(&[("TESSERA_STORE", "mysql://x")])).is_err());
        assert!(Config::load(None, env(&[("TESSERA_SESSIONS", "memcached://x")])).is_err());
        let shared = Config::load(
            None,
            env(&[
                ("TESSERA_STORE", "postgres://db.internal/tessera"),
                (
                    "TESSERA_SESSIONS",
                    "redis+sentinel://s1:26379,s2:26379/main",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            shared.store,
            Some(StoreUrl::Postgres("postgres://db.internal/tessera".into()))
        );
        assert_eq!(
            shared.sessions,
            SessionsUrl::Redis("redis+sentinel://s1:26379,s2:26379/main".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn role_permission_names_keep_to_the_charset() {
        let dir = std::env::temp_dir().join(format!("tessera-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        for (map, ok) in [
            ("editor = [\"docs:write\", \"team/a.b_c-d\"]", true),
            ("\"editor,admin\" = [\"w\"]", false),
            ("editor = [\"w\\r\\nx\"]", false),
            ("editor = [\"a b\"]", false),
            ("\"\" = []", false),
        ] {
            std::fs::write(&file, format!("[role_permissions]\n{map}\n")).unwrap();
            let loaded = Config::load(Some(&file), []);
            assert_eq!(loaded.is_ok(), ok, "{map}: {loaded:?}");
            if let Err(ConfigError::Invalid(message)) = loaded {
                assert!(message.starts_with("role_permissions: "), "{message}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ipv6_prefix_loads_from_env_and_file_and_must_be_1_to_128() {
        assert_eq!(Config::default().login_ipv6_prefix, 64);
        let env_cfg = Config::load(None, env(&[("TESSERA_LOGIN_IPV6_PREFIX", "56")])).unwrap();
        assert_eq!(env_cfg.login_ipv6_prefix, 56);
        let dir = std::env::temp_dir().join(format!("tessera-cfg6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "login_ipv6_prefix = 128\n").unwrap();
        assert_eq!(
            Config::load(Some(&file), []).unwrap().login_ipv6_prefix,
            128
        );
        std::fs::remove_dir_all(&dir).unwrap();
        for bad in ["0", "129", "-1", "64.5", "x"] {
            assert!(
                Config::load(None, env(&[("TESSERA_LOGIN_IPV6_PREFIX", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn browser_and_proxy_keys_load_from_env_and_are_checked() {
        let cfg = Config::load(
            None,
            env(&[
                ("TESSERA_LOGIN_URL", "/login"),
                (
                    "TESSERA_REDIRECT_ORIGINS",
                    "https://app.example.com, https://*.example.com",
                ),
                ("TESSERA_COOKIE_DOMAIN", "example.com"),
                (
                    "TESSERA_ACCESS_RULES",
                    r#"[{ paths = ["/public"], policy = "bypass" }, { roles = ["admin"] }]"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.login_url.as_deref(), Some("/login"));
        assert_eq!(cfg.redirect_origins.len(), 2);
        assert_eq!(cfg.cookie_domain.as_deref(), Some("example.com"));
        assert_eq!(cfg.access_rules.len(), 2);
        assert_eq!(cfg.access_rules[1].roles, vec!["admin"]);
        for (key, value) in [
            ("TESSERA_LOGIN_URL", "//evil.example/login"),
            ("TESSERA_LOGIN_URL", "javascript:alert(1)"),
            ("TESSERA_REDIRECT_ORIGINS", "evil.example"),
            ("TESSERA_COOKIE_DOMAIN", "com"),
            ("TESSERA_COOKIE_DOMAIN", "127.0.0.1"),
            ("TESSERA_COOKIE_DOMAIN", "https://example.com"),
            ("TESSERA_ACCESS_RULES", r#"[{ path_regex = "(" }]"#),
            ("TESSERA_ACCESS_RULES", r#"[{ policy = "maybe" }]"#),
            ("TESSERA_ACCESS_RULES", r#"[{ pathz = ["/"] }]"#),
            ("TESSERA_ALLOWED_ORIGINS", "app.example.com"),
            ("TESSERA_ALLOWED_ORIGINS", "https://*.example.com"),
            ("TESSERA_ALLOWED_ORIGINS", "null"),
        ] {
            assert!(
                Config::load(None, env(&[(key, value)])).is_err(),
                "{key}={value}"
            );
        }
        assert!(
            Config::load(
                None,
                env(&[("TESSERA_LOGIN_URL", "https://auth.example.com/login")])
            )
            .is_ok()
        );
    }
}
