//! The session cookie: its name, attributes, and reading it back.
//!
//! By default the cookie is `__Host-tessera`, bound to the exact host that set it. With
//! `cookie_domain` configured (one login for every subdomain of a parent domain) it becomes
//! `__Secure-tessera; Domain=<parent>`, since the `__Host-` prefix forbids `Domain`.

use axum::http::{HeaderMap, HeaderValue, header};

use super::extract::COOKIE_NAME;

/// Name of the session cookie when `cookie_domain` is set. The `__Secure-` prefix still makes
/// browsers insist on `Secure`.
pub const SECURE_COOKIE_NAME: &str = "__Secure-tessera";

/// How the session cookie is written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    name: &'static str,
    domain: Option<String>,
}

impl Default for SessionCookie {
    fn default() -> Self {
        SessionCookie::new(None)
    }
}

impl SessionCookie {
    /// The cookie for this deployment: host-only, or shared with `domain`'s subdomains.
    ///
    /// # Security
    /// Sharing the cookie with a parent domain lets every subdomain's server receive it, and
    /// lets any of them plant a `__Secure-tessera` cookie of its own: only use it when every
    /// subdomain is trusted. Only the configured name is ever read, so a deployment without a
    /// domain never accepts a `__Secure-` cookie a sibling host could set.
    pub fn new(domain: Option<&str>) -> SessionCookie {
        match domain
            .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
        {
            Some(domain) => SessionCookie {
                name: SECURE_COOKIE_NAME,
                domain: Some(domain),
            },
            None => SessionCookie {
                name: COOKIE_NAME,
                domain: None,
            },
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Set-Cookie` carrying a token for `max_age` seconds.
    ///
    /// # Security
    /// `Secure` (and the name prefix) keeps it off plain HTTP; `HttpOnly` hides it from
    /// scripts; `SameSite=Lax` keeps it off cross-site subrequests and POSTs while top-level
    /// navigation still works.
    pub fn set(&self, token: &str, max_age: i64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}={token}; {}Max-Age={max_age}",
            self.name,
            self.attributes()
        ))
        .ok()
    }

    /// `Set-Cookie` that deletes the cookie (same name, path and domain, `Max-Age=0`).
    pub fn clear(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("{}=; {}Max-Age=0", self.name, self.attributes()))
            .unwrap_or_else(|_| {
                HeaderValue::from_static(
                    "__Host-tessera=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
                )
            })
    }

    fn attributes(&self) -> String {
        match &self.domain {
            Some(domain) => format!("Domain={domain}; Path=/; Secure; HttpOnly; SameSite=Lax; "),
            None => "Path=/; Secure; HttpOnly; SameSite=Lax; ".to_owned(),
        }
    }

    /// The cookie's value from the request's `Cookie` headers.
    pub fn read(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value.trim_matches('"').to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(value: &HeaderValue) -> Vec<String> {
        value
            .to_str()
            .unwrap()
            .split("; ")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn host_only_cookie_by_default() {
        let cookie = SessionCookie::new(None);
        let set = attrs(&cookie.set("tsr_x", 60).unwrap());
        assert_eq!(set[0], "__Host-tessera=tsr_x");
        for a in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=60"] {
            assert!(set.iter().any(|s| s == a), "{a} in {set:?}");
        }
        assert!(!set.iter().any(|s| s.starts_with("Domain")));
        assert_eq!(SessionCookie::new(Some("  ")), cookie);
    }

    #[test]
    fn parent_domain_cookie_is_secure_prefixed_with_domain() {
        let cookie = SessionCookie::new(Some(".Example.COM"));
        assert_eq!(cookie.name(), "__Secure-tessera");
        let set = attrs(&cookie.set("tsr_x", 60).unwrap());
        assert_eq!(set[0], "__Secure-tessera=tsr_x");
        assert!(set.iter().any(|s| s == "Domain=example.com"));
        assert!(set.iter().any(|s| s == "Secure"));
        let clear = attrs(&cookie.clear());
        assert_eq!(clear[0], "__Secure-tessera=");
        assert!(clear.iter().any(|s| s == "Domain=example.com"));
        assert!(clear.iter().any(|s| s == "Max-Age=0"));
    }

    #[test]
    fn only_the_configured_name_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Secure-tessera=planted; __Host-tessera=real"),
        );
        assert_eq!(
            SessionCookie::new(None).read(&headers).as_deref(),
            Some("real")
        );
        assert_eq!(
            SessionCookie::new(Some("example.com"))
                .read(&headers)
                .as_deref(),
            Some("planted")
        );
    }
}
