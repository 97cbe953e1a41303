//! Configuration: one typed [`Config`], layered from a TOML file, then `TESSERA_*` environment
//! variables, then command-line flags (applied by the CLI).
//!
//! The keys are defined once, below, with `config_keys!` (see `keys.rs`): each field's doc
//! comment is the key's help text and its `= …` its default. The list of keys ([`Config::KEYS`]), the
//! environment variable names, the README's table ([`Config::docs_table`]) and
//! `tessera config defaults` ([`Config::defaults_toml`]) all come from that definition.
//! Loading ([`Config::load`]) reads every value into its type once and reports a bad key or
//! value with where it came from: file, line and column, or environment variable, plus a
//! did-you-mean for a misspelt key.

mod keys;
mod load;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_core::keys::Algorithm;
use tessera_core::names;
use tessera_core::opaque::TokenHash;

use crate::access::AccessRules;
use crate::http::redirect::{self, RedirectPolicy};
use keys::config_keys;
pub use keys::{ENV_PREFIX, Key};
pub use load::{ConfigError, MASTER_KEY_ENV, Origin, Problem, TEST_ENV_PREFIX, is_other_variable};
pub use values::{Secret, SessionsUrl, StoreUrl, whole_seconds};
use values::{algorithm_name, duration};

/// Which token format a delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// `tsr_…`: a random key to a server-side session record.
    Opaque,
    /// A signed JWT access token (`at+jwt`).
    Jwt,
}

/// Whether bearer tokens are bound to a client key by DPoP (RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopMode {
    /// A `DPoP` header is ignored: every bearer token is a plain bearer token.
    Off,
    /// A bearer login or refresh with a proof gets tokens bound to the proof's key; one
    /// without gets plain bearer tokens.
    Allowed,
    /// Bearer delivery needs a proof: every bearer token is bound.
    Required,
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

config_keys! {
    /// Every setting of a tessera server. Field names are the TOML keys; the environment
    /// variable of a key is `TESSERA_` plus the key in upper case (`idle_timeout` →
    /// `TESSERA_IDLE_TIMEOUT`). Durations are written with units (`"90s"`, `"30m"`, `"12h"`)
    /// or as an integer of seconds.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Config {
        /// Address and port to listen on.
        listen: String = "127.0.0.1:8080".into(),
        /// Data directory (the embedded SQLite store, the generated master key).
        data: PathBuf = PathBuf::from("./tessera-data"),
        /// PEM certificate chain: serve HTTPS (TLS 1.2/1.3); goes with `tls_key`.
        tls_cert: Option<PathBuf> = None,
        /// PEM private key of `tls_cert`.
        tls_key: Option<PathBuf> = None,
        /// Serve HTTPS with a generated self-signed certificate for localhost (local use only).
        tls_self_signed: bool = false,
        /// Allow plain HTTP off loopback because a TLS-terminating proxy is in front; its
        /// `X-Forwarded-*` (client address; the request forward auth protects) is then
        /// believed from `trusted_proxies` only.
        behind_proxy: bool = false,
        /// Proxies whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed.
        trusted_proxies: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ],
        /// `iss` of issued JWTs.
        issuer: String = "tessera".into(),
        /// `aud` of issued JWTs.
        audience: String = "tessera".into(),
        /// Signature algorithm of new keys: `EdDSA`, `ES256` or `HS256`, exactly (anything
        /// else is refused at start; HS256 keys never leave the store).
        #[serde(with = "algorithm_name")]
        jwt_algorithm: Algorithm = Algorithm::EdDsa,
        /// Token format for cookie delivery: `opaque` or `jwt`.
        cookie_format: TokenFormat = TokenFormat::Opaque,
        /// Token format for bearer delivery: `opaque` or `jwt`.
        bearer_format: TokenFormat = TokenFormat::Jwt,
        /// DPoP-bound bearer tokens (RFC 9449): `off` (a `DPoP` header is ignored),
        /// `allowed` (a bearer login or refresh with a proof gets tokens only that key can
        /// use) or `required` (bearer delivery needs a proof). See docs/bound-tokens.md.
        dpop: DpopMode = DpopMode::Allowed,
        /// DPoP proofs must carry a nonce from the server's `DPoP-Nonce` header (RFC 9449
        /// §8), so a proof made in advance, by malware that held the key for a moment, soon
        /// stops working.
        dpop_nonce: bool = false,
        /// DPoP proofs one instance remembers, each for its two-minute window (about 30
        /// bytes each). With an embedded store it is the whole replay cache, and once full of
        /// live proofs new ones are refused: keep it above 120 × proofs per second. With a
        /// shared store it only spares the store the replays this instance saw.
        dpop_replay_cache_capacity: u64 = 1_000_000,
        /// Offer Device Bound Session Credentials (W3C DBSC draft) on cookie logins: a browser
        /// that registers a key gets a session cookie that lives `access_token_lifetime` and is
        /// re-issued only against a signature by that key. Browsers without DBSC are not
        /// affected. Experimental (see docs/bound-tokens.md); not with `stateless`.
        dbsc: bool = false,
        /// Inactivity that ends a session.
        #[serde(with = "duration")]
        idle_timeout: Duration = Duration::from_secs(30 * 60),
        /// Time after login that ends a session, whatever happens.
        #[serde(with = "duration")]
        absolute_timeout: Duration = Duration::from_secs(12 * 3600),
        /// Lifetime of a JWT access token.
        #[serde(with = "duration")]
        access_token_lifetime: Duration = Duration::from_secs(10 * 60),
        /// Time in which a repeated refresh returns the same successor pair.
        #[serde(with = "duration")]
        refresh_grace: Duration = Duration::from_secs(10),
        /// Clock skew tolerated on `exp`/`nbf`.
        #[serde(with = "duration")]
        leeway: Duration = Duration::from_secs(30),
        /// Least time between two activity writes of one session.
        #[serde(with = "duration")]
        activity_write_interval: Duration = Duration::from_secs(60),
        /// Skip the per-request revocation check of JWT access tokens: revocation then takes
        /// effect only at `exp`.
        stateless: bool = false,
        /// JWT access tokens remembered as verified, so a token seen before skips its
        /// signature check (about 1 KB each; 0 turns the cache off). Revocation is still
        /// checked on every request.
        jwt_cache_capacity: u64 = 10_000,
        /// Session records the SQLite store keeps in memory for `/v1/verify`, per key kind
        /// (about 1 KB each; 0 turns the cache off). A record is served only while change
        /// counters shared by every process on the database (`tessera.db-changes`) show no
        /// write to its session or user since, so revocation stays instant.
        session_cache_capacity: u64 = 10_000,
        /// Argon2id memory, KiB.
        argon2_memory_kib: u32 = 19_456,
        /// Argon2id iterations.
        argon2_iterations: u32 = 2,
        /// Argon2id lanes.
        argon2_parallelism: u32 = 1,
        /// Threads that hash passwords, in Linux's idle scheduling class (below the threads
        /// that answer requests), so a login flood cannot starve verification; 0 means one
        /// fewer than the cores (at least one).
        password_hashing_threads: u32 = 0,
        /// Origins besides the server's own (`https://host[:port]`, compared as scheme, host
        /// and port) that may send cookie-authenticated state-changing requests.
        allowed_origins: Vec<String> = Vec::new(),
        /// Permissions each role grants: `[role_permissions]` then `editor = ["docs:write"]`.
        role_permissions: BTreeMap<String, Vec<String>> = BTreeMap::new(),
        /// Failed logins of one username from one client before that pair is locked.
        login_max_failures: u32 = 10,
        /// Failed logins from one client, any usernames, before it is refused.
        login_max_failures_per_address: u32 = 100,
        /// Failed logins per minute over all clients past which clients with failures of
        /// their own are refused (clients without any still get through).
        login_max_failures_global: u32 = 1000,
        /// Window in which failed logins are counted.
        #[serde(with = "duration")]
        login_failure_window: Duration = Duration::from_secs(900),
        /// First lockout; it doubles with every further failure.
        #[serde(with = "duration")]
        login_lockout: Duration = Duration::from_secs(30),
        /// Longest lockout.
        #[serde(with = "duration")]
        login_lockout_max: Duration = Duration::from_secs(900),
        /// IPv6 clients are counted per network of this prefix length, 1 to 128 (one client
        /// usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
        login_ipv6_prefix: u8 = 64,
        /// Roles that count only in sessions signed in with a second factor (AAL2), e.g.
        /// `["admin"]`: a holder who signs in with a password alone gets a session without
        /// them (enough to enrol a factor), and steps up to use them.
        second_factor_roles: Vec<String> = Vec::new(),
        /// Every session needs a second factor (AAL2), whatever its roles: a password-only
        /// session holds no role and `/v1/verify` asks it to step up for anything it protects
        /// — enough to enrol a factor on the account page and step up. Enrolment is then
        /// enforced for every user; per role, use `second_factor_roles`.
        second_factor_required: bool = false,
        /// Wrong one-time or recovery codes per account, counted over every client and
        /// instance in `login_failure_window`, before codes for it are refused.
        second_factor_max_failures: u32 = 5,
        /// How recent the sign-in of a session must be to enrol or remove a second factor or
        /// get new recovery codes (older sessions step up first).
        #[serde(with = "duration")]
        recent_authentication: Duration = Duration::from_secs(600),
        /// The issuer name authenticator apps show beside the account (`otpauth` URIs).
        totp_issuer: String = "tessera".to_owned(),
        /// URL that receives every audit event as a signed webhook (off when unset): `https`,
        /// or `http` only to loopback; redirects are not followed.
        webhook_url: Option<String> = None,
        /// Secret for the webhooks' HMAC-SHA256 signature (at least 16 characters).
        webhook_secret: Option<Secret> = None,
        /// Allow webhooks to private (RFC 1918, `fc00::/7`, `100.64.0.0/10`) and link-local
        /// (`169.254.0.0/16`, `fe80::/10`) addresses, checked for IP literals at start and
        /// for resolved names at connect time.
        webhook_allow_private: bool = false,
        /// Where `/v1/verify` sends browsers without a session, with `rd`: a path such as
        /// `/login` on the protected host, or an absolute URL. Unset: always 401.
        login_url: Option<String> = None,
        /// Origins the login page may send a browser back to (`https://app.example.com`,
        /// `https://*.example.com`). Local paths are always allowed; anything else goes to
        /// `/account`.
        redirect_origins: Vec<String> = Vec::new(),
        /// Parent domain to share the session cookie with (one login for several
        /// subdomains): the cookie becomes `__Secure-tessera; Domain=…` instead of the
        /// host-only `__Host-tessera` (see docs/forward-auth.md).
        cookie_domain: Option<String> = None,
        /// The product name the pages show (title, header), e.g. your company's own
        /// name for it; 1 to 64 printable characters.
        product_name: String = "tessera".to_owned(),
        /// The URL clients reach tessera at (`https://auth.example.com`), named as the
        /// server in `/openapi.json`. Unset: the request's own scheme and host, as tessera
        /// sees them (a trusted proxy's `X-Forwarded-Proto`/`-Host`, else `Host`).
        public_url: Option<String> = None,
        /// The WebAuthn relying-party id passkeys are registered to: a domain, the host of
        /// every origin in `webauthn_origins` or a parent of it (`example.com`). Unset: the
        /// host of `public_url`; with neither, passkeys are off. Changing it orphans every
        /// passkey registered before (see docs/passkeys.md).
        webauthn_rp_id: Option<String> = None,
        /// The origins browsers run passkey ceremonies from (`https://auth.example.com`).
        /// Empty: the origin of `public_url`.
        webauthn_origins: Vec<String> = Vec::new(),
        /// SHA-256 digests (64 hex digits) of the secrets back-end services send to
        /// `POST /v1/introspect` as `Authorization: Bearer`; `tessera generate
        /// introspection-secret` makes a secret and its digest. Empty: no service may
        /// introspect.
        introspection_secret_digests: Vec<String> = Vec::new(),
        /// Forward-auth access rules, `[[access_rules]]`, tried in order: first match wins,
        /// no match denies (see docs/forward-auth.md).
        access_rules: AccessRules = AccessRules::default(),
        /// Time a client has to send a whole request head; an HTTP/1.1 connection idle
        /// between requests is closed after the same time.
        #[serde(with = "duration")]
        header_read_timeout: Duration = Duration::from_secs(10),
        /// Time a client has to send a whole request body; past it, 408 `request_timeout`.
        #[serde(with = "duration")]
        body_read_timeout: Duration = Duration::from_secs(30),
        /// Time a connection (HTTP/2 included) may stay silent before it is closed.
        #[serde(with = "duration")]
        keep_alive_timeout: Duration = Duration::from_secs(60),
        /// Log format on stderr: `text` or `json` (one JSON object per line).
        log_format: LogFormat = LogFormat::Text,
        /// The durable store: `sqlite://PATH` or `postgres://user:pass@host:5432/db` (a libpq
        /// URL). Unset: SQLite in `data`. May hold a password: keep config files private.
        store: Option<StoreUrl> = None,
        /// Where sessions, refresh tokens and login counters live: `same` (the store),
        /// `redis://host:6379/0`, `redis+sentinel://[:pass@]host:26379[,host:port…]/MASTER[/db]`
        /// (the sentinels' own credentials in `?sentinel_username=…&sentinel_password=…`)
        /// or `redis+cluster://[:pass@]host:7000[,host:port…]`; `rediss://`,
        /// `rediss+sentinel://`, `rediss+cluster://` for TLS; `?prefix=NAME` (default
        /// `tessera`) lets deployments share a Redis.
        sessions: SessionsUrl = SessionsUrl::Same,
        /// PEM CA certificate(s) that sign the Redis servers' certificates, for a TLS
        /// (`rediss…`) `sessions` URL. Unset: the system's trusted roots.
        redis_ca_file: Option<PathBuf> = None,
        /// PEM client certificate chain sent to Redis over TLS (servers with
        /// `tls-auth-clients yes`); goes with `redis_client_key`.
        redis_client_cert: Option<PathBuf> = None,
        /// PEM private key of `redis_client_cert`.
        redis_client_key: Option<PathBuf> = None,
        /// Time between two reloads of the signing keys from the store, in case a change
        /// notice was lost.
        #[serde(with = "duration")]
        key_poll_interval: Duration = Duration::from_secs(15),
        /// File holding the master key that encrypts private signing keys at rest. Unset:
        /// the `TESSERA_MASTER_KEY` variable, else `master.key` in the data directory,
        /// generated on first start.
        master_key_file: Option<PathBuf> = None,
    }
}

impl Config {
    /// Checks values that parse but make no sense, alone or together. The problem names the
    /// key it is about; [`Config::load`] adds where that key was set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| Err(ConfigError::about(key, message));
        if self.dbsc && self.stateless {
            return bad(
                "dbsc",
                "cannot be combined with stateless: a device-bound session is read on every \
                 request, so that its cookie is never renewed without the browser's key",
            );
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "listen",
                "must be an IP address and port, e.g. 127.0.0.1:8080",
            );
        }
        for (key, value) in [
            ("idle_timeout", self.idle_timeout),
            ("absolute_timeout", self.absolute_timeout),
            ("access_token_lifetime", self.access_token_lifetime),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("key_poll_interval", self.key_poll_interval),
        ] {
            if value.is_zero() {
                return bad(key, "must be positive");
            }
        }
        if self.idle_timeout > self.absolute_timeout {
            return bad("idle_timeout", "cannot exceed absolute_timeout");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let key = if self.tls_cert.is_some() {
                "tls_cert"
            } else {
                "tls_key"
            };
            return bad(key, "tls_cert and tls_key go together");
        }
        if self.redis_client_cert.is_some() != self.redis_client_key.is_some() {
            let key = if self.redis_client_cert.is_some() {
                "redis_client_cert"
            } else {
                "redis_client_key"
            };
            return bad(key, "redis_client_cert and redis_client_key go together");
        }
        let redis_tls =
            matches!(&self.sessions, SessionsUrl::Redis(url) if url.starts_with("rediss"));
        for (key, set) in [
            ("redis_ca_file", self.redis_ca_file.is_some()),
            ("redis_client_cert", self.redis_client_cert.is_some()),
        ] {
            if set && !redis_tls {
                return bad(key, "applies to a TLS sessions URL (rediss://…) only");
            }
        }
        if self.tls_self_signed && self.tls_cert.is_some() {
            return bad(
                "tls_self_signed",
                "choose tls_cert/tls_key or tls_self_signed, not both",
            );
        }
        if self.webhook_url.is_some() && self.webhook_secret.as_ref().is_none_or(|s| s.0.len() < 16)
        {
            return bad(
                "webhook_secret",
                "webhook_url needs a webhook_secret of at least 16 characters",
            );
        }
        if let Some(url) = &self.webhook_url
            && let Err(why) =
                crate::service::check_webhook_destination(url, self.webhook_allow_private)
        {
            return bad("webhook_url", &why);
        }
        if let Some(url) = &self.login_url
            && !valid_login_url(url)
        {
            return bad(
                "login_url",
                "must be a path such as /login or an http(s) URL",
            );
        }
        if !valid_product_name(&self.product_name) {
            return bad("product_name", "must be 1 to 64 printable characters");
        }
        if !valid_product_name(&self.totp_issuer) {
            return bad("totp_issuer", "must be 1 to 64 printable characters");
        }
        if self.second_factor_max_failures == 0 {
            return bad("second_factor_max_failures", "must be at least 1");
        }
        if let Some(rp_id) = &self.webauthn_rp_id
            && !valid_rp_id(rp_id)
        {
            return bad(
                "webauthn_rp_id",
                "must be a domain name such as example.com (no scheme, port or path)",
            );
        }
        if let Some(origin) = self.webauthn_origins.iter().find(|o| !valid_origin(o)) {
            return bad(
                "webauthn_origins",
                &format!("{origin:?} is not an origin such as https://auth.example.com"),
            );
        }
        if let Some(url) = &self.public_url
            && !valid_public_url(url)
        {
            return bad(
                "public_url",
                "must be an http(s) URL such as https://auth.example.com, without user, \
                 query or fragment",
            );
        }
        if let Some(domain) = &self.cookie_domain
            && !valid_cookie_domain(domain)
        {
            return bad("cookie_domain", "must be a domain name such as example.com");
        }
        if !self
            .introspection_secret_digests
            .iter()
            .all(|digest| TokenHash::from_hex(digest).is_some())
        {
            return bad(
                "introspection_secret_digests",
                "each must be a SHA-256 digest in 64 hex digits (tessera generate \
                 introspection-secret)",
            );
        }
        if let Err(why) = RedirectPolicy::new(&self.redirect_origins) {
            return bad("redirect_origins", &why);
        }
        for origin in &self.allowed_origins {
            if let Err(why) = redirect::exact_origin(origin) {
                return bad("allowed_origins", &why);
            }
        }
        // Roles and permissions reach headers and tokens: the same charset as every other way in.
        for (role, permissions) in &self.role_permissions {
            let names = std::iter::once(names::check_role(role))
                .chain(permissions.iter().map(|p| names::check_permission(p)));
            for checked in names {
                if let Err(why) = checked {
                    return bad("role_permissions", &why.to_string());
                }
            }
        }
        for role in &self.second_factor_roles {
            if let Err(why) = names::check_role(role) {
                return bad("second_factor_roles", &why.to_string());
            }
        }
        // Each hashing thread may hold one Argon2id memory block at a time.
        if self.password_hashing_threads > 256 {
            return bad("password_hashing_threads", "must be at most 256");
        }
        if !(1..=128).contains(&self.login_ipv6_prefix) {
            return bad("login_ipv6_prefix", "must be between 1 and 128");
        }
        Ok(())
    }

    /// How many threads hash passwords: `password_hashing_threads`, or one fewer than the
    /// cores this process may run on when it is 0 (at least one).
    pub fn hashing_threads(&self) -> usize {
        match self.password_hashing_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |cores| usize::from(cores).saturating_sub(1))
                .max(1),
            threads => usize::try_from(threads).unwrap_or(usize::MAX),
        }
    }

    /// True when HTTPS is configured.
    pub fn serves_tls(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }
}

fn valid_product_name(name: &str) -> bool {
    let length = name.chars().count();
    (1..=64).contains(&length) && !name.chars().any(char::is_control) && !name.trim().is_empty()
}

/// An http(s) URL without credentials, query or fragment: it is published as is.
fn valid_public_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|parsed| {
        matches!(parsed.scheme(), "http" | "https")
            && parsed.host().is_some()
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && parsed.query().is_none()
            && parsed.fragment().is_none()
    })
}

/// A domain name (what WebAuthn takes as an RP id): lower-case labels, no IP address.
fn valid_rp_id(rp_id: &str) -> bool {
    !rp_id.is_empty()
        && rp_id.len() <= 253
        && rp_id.parse::<std::net::IpAddr>().is_err()
        && rp_id.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An http(s) origin: scheme, host and optional port, nothing else.
fn valid_origin(origin: &str) -> bool {
    url::Url::parse(origin).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
            && u.path() == "/"
            && u.query().is_none()
            && u.fragment().is_none()
            && !origin.trim_end_matches('/').ends_with(':')
    })
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
