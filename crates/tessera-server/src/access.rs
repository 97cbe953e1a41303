//! Access rules for forward auth: which protected requests need what.
//!
//! A reverse proxy asks `/v1/verify` about a request it is about to pass on; the proxy names that
//! request in `X-Forwarded-Method/-Host/-Uri`. The rules, written in the configuration, are tried
//! in order and the first one whose host, path and method all match decides: `bypass` (no
//! session needed), `authenticated` (any live session, plus the rule's `roles` and `permissions`,
//! all of which must be held) or `deny`. When no rule matches the request is denied.
//!
//! ```toml
//! [[access_rules]]
//! hosts = ["app.example.com"]
//! paths = ["/public"]
//! policy = "bypass"
//!
//! [[access_rules]]
//! hosts = ["*.example.com"]
//! paths = ["/admin"]
//! roles = ["admin"]
//!
//! [[access_rules]]
//! hosts = ["*.example.com", "example.com"]
//! methods = ["DELETE"]
//! path_regex = "^/api/v[0-9]+/"
//! permissions = ["api:delete"]
//!
//! [[access_rules]]
//! policy = "authenticated"
//! ```
//!
//! # Security
//! The rules must judge the request the application behind the proxy will serve, and
//! applications read paths differently: Tomcat, Jetty and Spring strip `;` path parameters
//! (`/admin;x=1` is `/admin`), Express matches dot segments without resolving them, some
//! frameworks decode twice. So a path is matched only when every such reading gives the same
//! path; any other is denied outright instead of guessed at ([`normalize_path`]):
//! - percent escapes are decoded once (`/%61dmin` is `/admin`) and repeated slashes merged
//!   (`//admin` is `/admin`), as every back end does or at least would not read otherwise;
//! - refused: dot segments (`.`, `..`, raw or encoded: browsers resolve them before sending,
//!   back ends disagree on them), `;` (raw or encoded), a raw `#`, `\` and encoded `/` or `\`,
//!   a `%` left after decoding (double encoding), NUL and control characters, invalid escapes
//!   and invalid (or overlong) UTF-8, and anything but an origin-form target (`/…`).
//!
//! Hosts are compared without case, port or trailing dot; a host value that is not one plain
//! `host[:port]` is denied. The method the back end may act on can be overridden by the client
//! (`X-HTTP-Method-Override` and friends, `_method` in the query): the rules are applied to the
//! real method and every override, and the strictest outcome wins.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use tessera_core::assurance::{Aal, Requirement as Assurance};
use tessera_core::authz::Requirement;
use thiserror::Error;

/// What a matching rule asks of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// No session needed: the request passes (and the store is not touched).
    Bypass,
    /// A live session, holding every role and permission the rule lists.
    #[default]
    Authenticated,
    /// Refused, whoever asks.
    Deny,
}

/// One access rule as written in the configuration (`[[access_rules]]`).
///
/// Every condition that is given must match; an empty list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRule {
    /// Hosts (`app.example.com`), `*.example.com` for any subdomain of `example.com` (not
    /// `example.com` itself), or `*` for any host. The port is ignored; case is ignored.
    pub hosts: Vec<String>,
    /// Path prefixes, matched by whole segments: `/admin` matches `/admin` and `/admin/x`, not
    /// `/administrator`. A prefix ending in `/` matches only below it.
    pub paths: Vec<String>,
    /// A regular expression the normalised path (without query) must match.
    pub path_regex: Option<String>,
    /// HTTP methods (`GET`, `POST`, …).
    pub methods: Vec<String>,
    /// What the rule requires (default `authenticated`).
    pub policy: Policy,
    /// Roles that must all be held (with `policy = "authenticated"`).
    pub roles: Vec<String>,
    /// Permissions that must all be held (with `policy = "authenticated"`).
    pub permissions: Vec<String>,
    /// A second factor is needed (AAL2): a session signed in with a password alone is asked
    /// to step up (with `policy = "authenticated"`).
    pub two_factor: bool,
    /// The sign-in must be at most this old (`"10m"`); an older session is asked to sign in
    /// again without being ended (with `policy = "authenticated"`).
    pub max_age: Option<String>,
}

/// Why a rule could not be compiled.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AccessRuleError {
    /// The rule's `path_regex` is not a valid regular expression.
    #[error("access rule {index}: invalid path_regex: {source}")]
    Regex {
        /// Position of the rule (from 1).
        index: usize,
        /// The regex error.
        #[source]
        source: Box<regex::Error>,
    },
    /// Some other field of the rule is not valid.
    #[error("access rule {index}: {reason}")]
    Invalid {
        /// Position of the rule (from 1).
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The protected request a proxy asks about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Its method.
    pub method: &'a str,
    /// Methods the client asks the back end to act on instead (values of method-override
    /// headers, each possibly a comma-separated list); `_method` in the URI's query is read
    /// from `uri`.
    pub method_overrides: &'a [&'a str],
    /// Its host, possibly with a port.
    pub host: &'a str,
    /// Its raw request URI (path and query), as the client sent it.
    pub uri: &'a str,
}

/// The outcome of the rules for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pass without a session.
    Bypass,
    /// Pass with a session that meets this requirement.
    Require(Requirement),
    /// Refuse; `rule` is the matching deny rule (from 1), or `None` when no rule matched or
    /// the path could not be read unambiguously.
    Deny {
        /// Which rule denied, if one did.
        rule: Option<usize>,
    },
}

#[derive(Debug, Clone)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone)]
struct CompiledRule {
    index: usize,
    hosts: Vec<HostPattern>,
    /// Normalised path prefixes, as written and lower-cased (for the case-blind reading).
    paths: Vec<String>,
    paths_lower: Vec<String>,
    /// `path_regex` as written, and case-insensitive.
    regex: Option<Regex>,
    regex_caseless: Option<Regex>,
    methods: Vec<String>,
    policy: Policy,
    requirement: Requirement,
}

/// The compiled, ordered access rules.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    rules: Vec<CompiledRule>,
}

impl AccessPolicy {
    /// Compiles the configured rules, checking every field.
    pub fn compile(rules: &[AccessRule]) -> Result<AccessPolicy, AccessRuleError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(i + 1, rule))
            .collect::<Result<_, _>>()?;
        Ok(AccessPolicy { rules })
    }

    /// True when no rule is configured: forward auth then only asks for a live session.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides a request: the first matching rule wins, no match denies. With method
    /// overrides, the strictest decision over the real method and each override.
    pub fn decide(&self, target: &Target<'_>) -> Decision {
        const UNREADABLE: Decision = Decision::Deny { rule: None };
        let (Some(paths), Some(host), Some(methods)) = (
            path_readings(target.uri),
            host_name(target.host),
            methods_acted_on(target),
        ) else {
            return UNREADABLE;
        };
        let mut decisions = paths.iter().flat_map(|path| {
            methods
                .iter()
                .map(|method| self.decide_one(&host, path, method))
        });
        let first = decisions.next().unwrap_or(UNREADABLE);
        decisions.fold(first, Decision::strictest)
    }

    fn decide_one(&self, host: &str, path: &Reading, method: &str) -> Decision {
        let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.matches(host, path, method))
        else {
            return Decision::Deny { rule: None };
        };
        match rule.policy {
            Policy::Bypass => Decision::Bypass,
            Policy::Deny => Decision::Deny {
                rule: Some(rule.index),
            },
            Policy::Authenticated => Decision::Require(rule.requirement.clone()),
        }
    }
}

/// The `access_rules` key: the rules as written, compiled once when the configuration is read,
/// so a loaded configuration cannot hold a rule that does not compile.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<AccessRule>", into = "Vec<AccessRule>")]
pub struct AccessRules {
    written: Vec<AccessRule>,
    compiled: AccessPolicy,
}

impl AccessRules {
    /// Compiles the rules, checking every field.
    pub fn new(rules: Vec<AccessRule>) -> Result<AccessRules, AccessRuleError> {
        let compiled = AccessPolicy::compile(&rules)?;
        Ok(AccessRules {
            written: rules,
            compiled,
        })
    }

    /// The compiled rules.
    pub fn policy(&self) -> &AccessPolicy {
        &self.compiled
    }
}

impl std::ops::Deref for AccessRules {
    type Target = [AccessRule];

    fn deref(&self) -> &[AccessRule] {
        &self.written
    }
}

/// Two rule lists are equal when they are written the same (the compiled form follows).
impl PartialEq for AccessRules {
    fn eq(&self, other: &AccessRules) -> bool {
        self.written == other.written
    }
}

impl TryFrom<Vec<AccessRule>> for AccessRules {
    type Error = AccessRuleError;

    fn try_from(rules: Vec<AccessRule>) -> Result<AccessRules, AccessRuleError> {
        AccessRules::new(rules)
    }
}

impl From<AccessRules> for Vec<AccessRule> {
    fn from(rules: AccessRules) -> Vec<AccessRule> {
        rules.written
    }
}

impl Decision {
    /// The stricter of two decisions: a deny beats everything, a requirement beats a bypass,
    /// and two requirements add up.
    fn strictest(self, other: Decision) -> Decision {
        match (self, other) {
            (deny @ Decision::Deny { .. }, _) | (_, deny @ Decision::Deny { .. }) => deny,
            (Decision::Bypass, other) | (other, Decision::Bypass) => other,
            (Decision::Require(mut a), Decision::Require(b)) => {
                for role in b.roles {
                    if !a.roles.contains(&role) {
                        a.roles.push(role);
                    }
                }
                for permission in b.permissions {
                    if !a.permissions.contains(&permission) {
                        a.permissions.push(permission);
                    }
                }
                Decision::Require(a)
            }
        }
    }
}

/// Query parameter some frameworks (Rails, Laravel, Symfony) take as the method to act on.
const METHOD_QUERY_OVERRIDE: &str = "_method";

/// The methods a back end may act on for `target`, upper-cased and without repeats: the real
/// one, every header override and every `_method` query value. `None` when one is not a
/// method name (it could not be matched against the rules one way only).
fn methods_acted_on(target: &Target<'_>) -> Option<Vec<String>> {
    let query = target.uri.split_once('?').map_or("", |(_, q)| q);
    let from_query = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == METHOD_QUERY_OVERRIDE)
        .map(|(_, value)| value.into_owned());
    let from_headers = target
        .method_overrides
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::to_owned);
    let mut methods = vec![method_name(target.method)?];
    for method in from_headers.chain(from_query) {
        let method = method_name(&method)?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    Some(methods)
}

/// An HTTP method name, upper-cased: ASCII letters only, as rules are written.
fn method_name(method: &str) -> Option<String> {
    let method = method.trim();
    (!method.is_empty() && method.len() <= 32 && method.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| method.to_ascii_uppercase())
}

impl CompiledRule {
    fn matches(&self, host: &str, reading: &Reading, method: &str) -> bool {
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|pattern| match pattern {
                HostPattern::Any => true,
                HostPattern::Exact(h) => h == host,
                HostPattern::Subdomains(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            });
        let (path, paths, regex) = match reading {
            Reading::Exact(path) => (path, &self.paths, &self.regex),
            Reading::Caseless(path) => (path, &self.paths_lower, &self.regex_caseless),
        };
        let path_ok = paths.is_empty() || paths.iter().any(|prefix| path_has_prefix(path, prefix));
        let regex_ok = regex.as_ref().is_none_or(|re| re.is_match(path));
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        host_ok && path_ok && regex_ok && method_ok
    }
}

fn compile_rule(index: usize, rule: &AccessRule) -> Result<CompiledRule, AccessRuleError> {
    let invalid = |reason: String| AccessRuleError::Invalid { index, reason };
    let hosts = rule
        .hosts
        .iter()
        .map(|h| {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h == "*" {
                return Ok(HostPattern::Any);
            }
            let (pattern, name) = match h.strip_prefix("*.") {
                Some(rest) => (HostPattern::Subdomains(format!(".{rest}")), rest.to_owned()),
                None => (HostPattern::Exact(h.clone()), h.clone()),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
            if valid {
                Ok(pattern)
            } else {
                Err(invalid(format!(
                    "host {h:?} is not a host name, *.domain or *"
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    for prefix in &rule.paths {
        if !prefix.starts_with('/') || normalize_path(prefix).is_none() {
            return Err(invalid(format!(
                "path {prefix:?} must be a plain path starting with /"
            )));
        }
    }
    let regex_error = |e| AccessRuleError::Regex {
        index,
        source: Box::new(e),
    };
    let compile = |caseless: bool| {
        rule.path_regex
            .as_deref()
            .map(|re| RegexBuilder::new(re).case_insensitive(caseless).build())
            .transpose()
            .map_err(regex_error)
    };
    let (regex, regex_caseless) = (compile(false)?, compile(true)?);
    let paths: Vec<String> = rule
        .paths
        .iter()
        .map(|p| normalize_path(p).unwrap_or_default())
        .collect();
    let methods = rule
        .methods
        .iter()
        .map(|m| {
            method_name(m).ok_or_else(|| invalid(format!("method {m:?} is not an HTTP method")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_age = rule
        .max_age
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text)
                .ok()
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "max_age {text:?} is not a duration such as \"10m\""
                    ))
                })
        })
        .transpose()?;
    let requirement = Requirement {
        roles: rule.roles.clone(),
        permissions: rule.permissions.clone(),
        assurance: Assurance {
            aal: rule.two_factor.then_some(Aal::Aal2),
            max_age,
        },
    };
    if rule.policy != Policy::Authenticated && requirement != Requirement::default() {
        return Err(invalid(
            "roles, permissions, two_factor and max_age only go with policy = \"authenticated\""
                .into(),
        ));
    }
    Ok(CompiledRule {
        index,
        hosts,
        paths_lower: paths.iter().map(|p| p.to_ascii_lowercase()).collect(),
        paths,
        regex,
        regex_caseless,
        methods,
        policy: rule.policy,
        requirement,
    })
}

/// `prefix` covers `path` by whole segments.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The host name of a `Host`-style value: lower case, without port or trailing dot. `None`
/// for anything but one plain `host[:port]` or `[ipv6][:port]`: a list (`a, b`), user info
/// (`a@b`), a path or spaces would let the proxy, tessera and the back end each pick another
/// host.
pub fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if address.is_empty()
            || !address
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = if after.is_empty() {
            after
        } else {
            after.strip_prefix(':')?
        };
        (address, port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let plain_name = host.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let plain_port = port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    (plain_name && plain_port).then(|| name.to_ascii_lowercase())
}

/// One way a back end may read a request's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// Matched as it is, with case.
    Exact(String),
    /// Lower-cased, matched against lower-cased prefixes and a case-insensitive regex.
    Caseless(String),
}

/// The readings of a raw request URI's path the rules must all allow: decoded
/// ([`normalize_path`]), undecoded (Express and others match the raw path) and without case
/// (Express's default router, IIS, case-blind file systems). `None` when the path is refused.
fn path_readings(uri: &str) -> Option<Vec<Reading>> {
    let decoded = normalize_path(uri)?;
    let mut readings = Vec::with_capacity(3);
    if uri.contains('%') {
        // Repeated slashes merged, as in the decoded reading; nothing else can differ (dot
        // segments, `;`, `\` and `#` were refused).
        let raw = uri.split('?').next().unwrap_or("");
        let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        let mut undecoded = format!("/{}", segments.join("/"));
        if raw.ends_with('/') && !segments.is_empty() {
            undecoded.push('/');
        }
        readings.push(Reading::Exact(undecoded));
    }
    readings.push(Reading::Caseless(decoded.to_ascii_lowercase()));
    readings.push(Reading::Exact(decoded));
    Some(readings)
}

/// Decodes and normalises the path of a raw request URI (the query dropped): percent escapes
/// decoded once, repeated slashes merged. `None` when the path could be read another way by
/// some back end (see the module's security notes): then no rule may match it.
pub fn normalize_path(uri: &str) -> Option<String> {
    // A raw `#` is cut by some servers and passed on by others (nginx): two paths in one.
    if uri.contains('#') {
        return None;
    }
    let raw = uri.split('?').next().unwrap_or("");
    if !raw.starts_with('/')
        || raw
            .chars()
            .any(|c| c.is_control() || matches!(c, '\\' | ' ' | ';'))
    {
        return None;
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = *bytes.get(i)?;
        if byte == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let value = u8::from_str_radix(hex, 16).ok()?;
            // An encoded separator, path parameter, NUL or `%` (a second encoding) means
            // different things to different servers.
            if matches!(value, b'/' | b'\\' | b';' | b'%' | 0) {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    // Overlong and other invalid UTF-8 is refused here.
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            // Resolved by browsers before they send; read, ignored or resolved by back ends.
            "." | ".." => return None,
            s => segments.push(s),
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if decoded.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(policy: Policy) -> AccessRule {
        AccessRule {
            policy,
            ..AccessRule::default()
        }
    }

    fn target<'a>(method: &'a str, host: &'a str, uri: &'a str) -> Target<'a> {
        Target {
            method,
            method_overrides: &[],
            host,
            uri,
        }
    }

    fn example_policy() -> AccessPolicy {
        AccessPolicy::compile(&[
            AccessRule {
                hosts: vec!["app.example.com".into()],
                paths: vec!["/public".into()],
                ..rule(Policy::Bypass)
            },
            AccessRule {
                hosts: vec!["*.example.com".into()],
                paths: vec!["/admin".into()],
                roles: vec!["admin".into()],
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                methods: vec!["delete".into()],
                path_regex: Some("^/api/v[0-9]+/".into()),
                permissions: vec!["api:delete".into()],
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                hosts: vec!["internal.example.com".into()],
                ..rule(Policy::Deny)
            },
            AccessRule {
                hosts: vec!["app.example.com".into(), "api.example.com".into()],
                ..rule(Policy::Authenticated)
            },
        ])
        .unwrap()
    }

    fn needs(roles: &[&str], permissions: &[&str]) -> Decision {
        Decision::Require(Requirement {
            roles: roles.iter().map(|s| s.to_string()).collect(),
            permissions: permissions.iter().map(|s| s.to_string()).collect(),
            ..Requirement::default()
        })
    }

    #[test]
    fn two_factor_and_max_age_become_the_rules_assurance() {
        let policy = AccessPolicy::compile(&[AccessRule {
            paths: vec!["/admin".into()],
            two_factor: true,
            max_age: Some("10m".into()),
            ..rule(Policy::Authenticated)
        }])
        .unwrap();
        let Decision::Require(required) = policy.decide(&target("GET", "a.test", "/admin/x"))
        else {
            panic!("the rule requires a session");
        };
        assert_eq!(required.assurance.aal, Some(Aal::Aal2));
        assert_eq!(required.assurance.max_age, Some(600));
        for (bad, policy_kind) in [
            (Some("soon"), Policy::Authenticated),
            (Some("10m"), Policy::Bypass),
        ] {
            let compiled = AccessPolicy::compile(&[AccessRule {
                max_age: bad.map(str::to_owned),
                ..rule(policy_kind)
            }]);
            assert!(compiled.is_err(), "{bad:?} with {policy_kind:?}");
        }
        let two_factor_bypass = AccessPolicy::compile(&[AccessRule {
            two_factor: true,
            ..rule(Policy::Deny)
        }]);
        assert!(two_factor_bypass.is_err());
    }

    #[test]
    fn first_matching_rule_wins_and_no_match_denies() {
        let policy = example_policy();
        let d = |m, h, u| policy.decide(&target(m, h, u));
        assert_eq!(
            d("GET", "app.example.com", "/public/a.css"),
            Decision::Bypass
        );
        assert_eq!(d("GET", "app.example.com", "/public"), Decision::Bypass);
        assert_eq!(
            d("GET", "app.example.com", "/admin/x"),
            needs(&["admin"], &[])
        );
        assert_eq!(d("GET", "app.example.com", "/"), needs(&[], &[]));
        // A rule earlier in the list wins over a later one that also matches.
        assert_eq!(
            d("DELETE", "api.example.com", "/api/v2/things/1"),
            needs(&[], &["api:delete"])
        );
        assert_eq!(
            d("GET", "api.example.com", "/api/v2/things/1"),
            needs(&[], &[])
        );
        assert_eq!(
            d("GET", "internal.example.com", "/"),
            Decision::Deny { rule: Some(4) }
        );
        // Not covered by any rule: default deny.
        assert_eq!(
            d("GET", "other.test", "/public"),
            Decision::Deny { rule: None }
        );
    }

    #[test]
    fn hosts_match_without_port_or_case_and_wildcards_need_a_subdomain() {
        let policy = example_policy();
        let d = |h| policy.decide(&target("GET", h, "/admin"));
        assert_eq!(d("APP.Example.com:8443"), needs(&["admin"], &[]));
        assert_eq!(d("deep.sub.example.com"), needs(&["admin"], &[]));
        assert_eq!(d("app.example.com."), needs(&["admin"], &[]));
        // `*.example.com` is not `example.com`, nor `evilexample.com`.
        assert_eq!(d("example.com"), Decision::Deny { rule: None });
        assert_eq!(d("evilexample.com"), Decision::Deny { rule: None });
        assert_eq!(host_name("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host_name("[::1]").as_deref(), Some("::1"));
        assert_eq!(host_name("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn host_values_that_are_not_one_plain_host_are_denied() {
        let policy = example_policy();
        for host in [
            "app.example.com, internal.example.com",
            "evil.test@app.example.com",
            "app.example.com/x",
            "app.example.com:8443:1",
            "app.example.com:http",
            "app example.com",
            "",
            ":443",
            "[::1",
            "[::1]x",
            "[app.example.com]",
            "app.example.com%2e",
        ] {
            assert_eq!(host_name(host), None, "{host:?}");
            assert_eq!(
                policy.decide(&target("GET", host, "/public")),
                Decision::Deny { rule: None },
                "{host:?}"
            );
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_has_prefix("/admin", "/admin"));
        assert!(path_has_prefix("/admin/", "/admin"));
        assert!(path_has_prefix("/admin/users", "/admin"));
        assert!(!path_has_prefix("/administrator", "/admin"));
        assert!(!path_has_prefix("/admin", "/admin/"));
        assert!(path_has_prefix("/admin/x", "/admin/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn methods_are_matched_case_insensitively() {
        let policy = example_policy();
        let d = |m| policy.decide(&target(m, "app.example.com", "/api/v1/x"));
        assert_eq!(d("delete"), needs(&[], &["api:delete"]));
        assert_eq!(d("DELETE"), needs(&[], &["api:delete"]));
        assert_eq!(d("POST"), needs(&[], &[]));
    }

    #[test]
    fn encodings_every_back_end_reads_alike_meet_the_rule_of_the_real_path() {
        let policy = example_policy();
        let d = |u| policy.decide(&target("GET", "app.example.com", u));
        let admin = needs(&["admin"], &[]);
        for uri in [
            "/%61dmin",
            "/%61%64%6D%69%6E/x",
            "//admin",
            "/admin//x",
            "/admin?x=/public",
            "/admin?;x=../public",
        ] {
            assert_eq!(d(uri), admin, "{uri}");
        }
    }

    #[test]
    fn paths_back_ends_read_differently_are_denied() {
        let policy = example_policy();
        let d = |u| policy.decide(&target("GET", "app.example.com", u));
        for uri in [
            // Dot segments, raw and encoded: Express matches them unresolved.
            "/public/../admin",
            "/public/./../admin/x",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/.%2e/admin",
            "/public/../../../admin",
            "/./admin",
            "/public/.",
            // Path parameters: Tomcat, Jetty and Spring strip them.
            "/public/..;/admin/x",
            "/public/%2e%2e;/admin",
            "/public/..%3B/admin",
            "/public/..%3b/admin",
            "/admin;x=1",
            "/public;/x",
            // A raw fragment: nginx forwards it, others cut it.
            "/public#/../admin",
            "/public/x#",
            // Double encoding: a `%` left after one decode.
            "/public/%252e%252e/admin",
            "/%2561dmin",
            "/public/%25",
            // Separators that are not `/`, or `/` encoded.
            "/public%2F..%2Fadmin",
            "/public%2f..%2fadmin",
            "/public%5c..%5cadmin",
            "/public\\..\\admin",
            // NUL, controls, spaces, bad escapes, invalid or overlong UTF-8.
            "/public/%00",
            "/public/%0a",
            "/public/%7f",
            "/public/\u{1}",
            "/public /x",
            "/public/%zz",
            "/public/%+1",
            "/public/%2",
            "/public/%C3",
            "/public/%C0%AE%C0%AE/admin",
            "/public/%E0%80%AE",
            // Not an origin-form target.
            "public",
            "",
            "*",
            "https://app.example.com/public",
        ] {
            assert_eq!(d(uri), Decision::Deny { rule: None }, "{uri:?}");
        }
    }

    #[test]
    fn method_overrides_get_the_strictest_rule() {
        let policy = example_policy();
        let d = |method, overrides: &[&str], uri| {
            policy.decide(&Target {
                method,
                method_overrides: overrides,
                host: "api.example.com",
                uri,
            })
        };
        let delete = needs(&[], &["api:delete"]);
        assert_eq!(d("GET", &[], "/api/v1/x"), needs(&[], &[]));
        assert_eq!(d("POST", &["DELETE"], "/api/v1/x"), delete);
        assert_eq!(d("POST", &["get, delete"], "/api/v1/x"), delete);
        assert_eq!(d("GET", &[], "/api/v1/x?_method=delete"), delete);
        assert_eq!(d("GET", &[], "/api/v1/x?a=1&_method=DELETE"), delete);
        // An override that is not a method name cannot be matched one way only.
        for bad in ["DEL ETE", "", "DELETE\u{0}", "DÉLETE"] {
            assert_eq!(
                d("POST", &[bad], "/api/v1/x"),
                Decision::Deny { rule: None },
                "{bad:?}"
            );
        }
        assert_eq!(
            d("GET", &[], "/api/v1/x?_method="),
            Decision::Deny { rule: None }
        );
        assert_eq!(d("P0ST", &[], "/api/v1/x"), Decision::Deny { rule: None });
        // A bypass stays a bypass only when every method gets it.
        let public = AccessPolicy::compile(&[
            AccessRule {
                methods: vec!["GET".into()],
                ..rule(Policy::Bypass)
            },
            AccessRule {
                methods: vec!["DELETE".into()],
                ..rule(Policy::Deny)
            },
            rule(Policy::Authenticated),
        ])
        .unwrap();
        let d = |overrides: &[&str], uri| {
            public.decide(&Target {
                method: "GET",
                method_overrides: overrides,
                host: "a.test",
                uri,
            })
        };
        assert_eq!(d(&[], "/x"), Decision::Bypass);
        assert_eq!(d(&["GET"], "/x"), Decision::Bypass);
        assert_eq!(d(&["POST"], "/x"), needs(&[], &[]));
        assert_eq!(d(&["DELETE"], "/x"), Decision::Deny { rule: Some(2) });
        assert_eq!(
            d(&[], "/x?_method=DELETE"),
            Decision::Deny { rule: Some(2) }
        );
    }

    #[test]
    fn every_reading_of_the_path_must_be_allowed() {
        let policy = example_policy();
        let d = |u| policy.decide(&target("GET", "app.example.com", u));
        // Back ends that match the raw path, or ignore case, must not get a bypass tessera
        // granted to another reading, nor skip the admin rule.
        assert_eq!(d("/pub%6cic/a.css"), needs(&[], &[]));
        assert_eq!(d("/Public/a.css"), needs(&[], &[]));
        assert_eq!(d("/PUBLIC"), needs(&[], &[]));
        assert_eq!(d("/ADMIN/x"), needs(&["admin"], &[]));
        assert_eq!(d("/Admin"), needs(&["admin"], &[]));
        assert_eq!(d("/%41dmin"), needs(&["admin"], &[]));
        assert_eq!(d("/public/caf%C3%A9"), Decision::Bypass);
        // Prefixes written with capitals still match their own spelling.
        let docs = AccessPolicy::compile(&[
            AccessRule {
                paths: vec!["/Docs".into()],
                ..rule(Policy::Bypass)
            },
            AccessRule {
                path_regex: Some("^/Secret".into()),
                roles: vec!["spy".into()],
                ..rule(Policy::Authenticated)
            },
            rule(Policy::Authenticated),
        ])
        .unwrap();
        let d = |u| docs.decide(&target("GET", "a.test", u));
        assert_eq!(d("/Docs/x"), Decision::Bypass);
        assert_eq!(d("/docs/x"), needs(&[], &[]));
        assert_eq!(d("/secret/x"), needs(&["spy"], &[]));
        assert_eq!(d("/SECRET"), needs(&["spy"], &[]));
    }

    #[test]
    fn strictest_adds_requirements_up() {
        let a = needs(&["a"], &["p"]);
        let b = needs(&["b", "a"], &["q"]);
        assert_eq!(a.strictest(b), needs(&["a", "b"], &["p", "q"]));
        assert_eq!(
            Decision::Bypass.strictest(needs(&["a"], &[])),
            needs(&["a"], &[])
        );
        assert_eq!(
            needs(&["a"], &[]).strictest(Decision::Deny { rule: Some(3) }),
            Decision::Deny { rule: Some(3) }
        );
    }

    #[test]
    fn invalid_rules_are_refused_with_their_position() {
        let bad = [
            AccessRule {
                path_regex: Some("(".into()),
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                paths: vec!["admin".into()],
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                hosts: vec!["https://x.test".into()],
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                methods: vec!["GET /".into()],
                ..rule(Policy::Authenticated)
            },
            AccessRule {
                roles: vec!["admin".into()],
                ..rule(Policy::Bypass)
            },
        ];
        for r in bad {
            let error = AccessPolicy::compile(&[rule(Policy::Bypass), r.clone()])
                .expect_err(&format!("{r:?}"));
            assert!(error.to_string().starts_with("access rule 2:"), "{error}");
        }
    }

    #[test]
    fn empty_policies_and_rules_compiled_once() {
        assert!(AccessPolicy::compile(&[]).unwrap().is_empty());
        let rules = AccessRules::new(vec![rule(Policy::Deny)]).unwrap();
        assert!(!rules.policy().is_empty());
        assert!(matches!(
            rules.policy().decide(&target("GET", "a.test", "/")),
            Decision::Deny { rule: Some(1) }
        ));
        assert_eq!(rules.len(), 1);
        // A rule that does not compile never becomes `AccessRules`, whichever way it comes in.
        let bad = AccessRule {
            path_regex: Some("(".into()),
            ..rule(Policy::Bypass)
        };
        assert!(AccessRules::new(vec![bad.clone()]).is_err());
        assert!(AccessRules::try_from(vec![rule(Policy::Bypass), bad]).is_err());
    }
}
