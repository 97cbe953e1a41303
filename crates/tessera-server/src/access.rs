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
//! Paths are matched after the proxy's raw request URI is decoded and normalised (dot segments
//! resolved, repeated slashes merged), so `/public/../admin` and `/%61dmin` meet the `/admin`
//! rule as the application behind the proxy would see them. A path that cannot be read one way
//! only — an encoded `/` or `\`, a NUL or control character, an invalid escape or invalid UTF-8
//! — is denied outright instead of guessed at.

use regex::Regex;
use serde::{Deserialize, Serialize};
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
    paths: Vec<String>,
    regex: Option<Regex>,
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

    /// A policy that refuses everything (used when the configured rules cannot be compiled).
    pub fn deny_all() -> AccessPolicy {
        AccessPolicy {
            rules: vec![CompiledRule {
                index: 1,
                hosts: Vec::new(),
                paths: Vec::new(),
                regex: None,
                methods: Vec::new(),
                policy: Policy::Deny,
                requirement: Requirement::default(),
            }],
        }
    }

    /// True when no rule is configured: forward auth then only asks for a live session.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides a request: the first matching rule wins, no match denies.
    pub fn decide(&self, target: &Target<'_>) -> Decision {
        let Some(path) = normalize_path(target.uri) else {
            return Decision::Deny { rule: None };
        };
        let host = host_name(target.host);
        let method = target.method.to_ascii_uppercase();
        let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.matches(&host, &path, &method))
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

impl CompiledRule {
    fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|pattern| match pattern {
                HostPattern::Any => true,
                HostPattern::Exact(h) => h == host,
                HostPattern::Subdomains(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            });
        let path_ok = self.paths.is_empty()
            || self
                .paths
                .iter()
                .any(|prefix| path_has_prefix(path, prefix));
        let regex_ok = self.regex.as_ref().is_none_or(|re| re.is_match(path));
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
    let regex = rule
        .path_regex
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| AccessRuleError::Regex {
            index,
            source: Box::new(e),
        })?;
    let methods = rule
        .methods
        .iter()
        .map(|m| {
            let m = m.trim().to_ascii_uppercase();
            if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) {
                Ok(m)
            } else {
                Err(invalid(format!("method {m:?} is not an HTTP method")))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requirement = Requirement {
        roles: rule.roles.clone(),
        permissions: rule.permissions.clone(),
    };
    if rule.policy != Policy::Authenticated && requirement != Requirement::default() {
        return Err(invalid(
            "roles and permissions only go with policy = \"authenticated\"".into(),
        ));
    }
    Ok(CompiledRule {
        index,
        hosts,
        paths: rule
            .paths
            .iter()
            .map(|p| normalize_path(p).unwrap_or_default())
            .collect(),
        regex,
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

/// The host name of a `Host`-style value: lower case, without port or trailing dot.
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [IPv6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Decodes and normalises the path of a raw request URI (query and fragment dropped): percent
/// escapes decoded, `.` and `..` segments resolved, repeated slashes merged. `None` when the
/// path cannot be read one way only (see the module's security notes).
pub fn normalize_path(uri: &str) -> Option<String> {
    let raw = uri.split(['?', '#']).next().unwrap_or("");
    if !raw.starts_with('/') || raw.chars().any(|c| c.is_control() || c == '\\' || c == ' ') {
        return None;
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = *bytes.get(i)?;
        if byte == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            // An encoded separator or NUL means different things to different servers.
            if matches!(value, b'/' | b'\\' | 0) {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = decoded.ends_with('/');
            }
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if trailing_slash && !segments.is_empty() {
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
        Target { method, host, uri }
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
        })
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
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
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
    fn traversal_and_encoding_tricks_meet_the_rule_of_the_real_path() {
        let policy = example_policy();
        let d = |u| policy.decide(&target("GET", "app.example.com", u));
        let admin = needs(&["admin"], &[]);
        for uri in [
            "/public/../admin",
            "/public/./../admin/x",
            "/%61dmin",
            "//admin",
            "/public/%2e%2e/admin",
            "/./admin?x=/public",
            "/public/../../../admin",
        ] {
            assert_eq!(d(uri), admin, "{uri}");
        }
        // Ambiguous spellings are refused outright.
        for uri in [
            "/public%2F..%2Fadmin",
            "/public%5c..%5cadmin",
            "/public\\..\\admin",
            "/public/%00",
            "/public/%zz",
            "/public/%C3",
            "/public/\u{1}",
            "public",
            "",
            "https://app.example.com/public",
        ] {
            assert_eq!(d(uri), Decision::Deny { rule: None }, "{uri:?}");
        }
    }

    #[test]
    fn normalisation_keeps_meaningful_trailing_slashes() {
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/a/b/").as_deref(), Some("/a/b/"));
        assert_eq!(normalize_path("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/a/./b?q=1#f").as_deref(), Some("/a/b"));
        assert_eq!(normalize_path("/..").as_deref(), Some("/"));
        assert_eq!(normalize_path("/caf%C3%A9").as_deref(), Some("/café"));
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
    fn deny_all_and_empty_policies() {
        assert!(AccessPolicy::compile(&[]).unwrap().is_empty());
        let deny = AccessPolicy::deny_all();
        assert!(!deny.is_empty());
        assert!(matches!(
            deny.decide(&target("GET", "a.test", "/")),
            Decision::Deny { .. }
        ));
    }
}
