//! The session cookie: its name, attributes, and reading it back.
//!
//! By default the cookie is `__Host-tessera`, bound to the exact host that set it. With
//! `cookie_domain` configured (one login for every subdomain of a parent domain) it becomes
//! `__Secure-tessera; Domain=<parent>`, since the `__Host-` prefix forbids `Domain`.
//!
//! [`SessionCookie`] is the only way a response sets or clears the cookie: its `Max-Age` is
//! computed in [`SessionCookie::max_age`] and clearing always goes with `Clear-Site-Data`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use tessera_core::UnixTime;

use crate::config::TokenFormat;
use crate::service::Credentials;

/// The `Clear-Site-Data` response header.
const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// Name of the session cookie. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
pub const COOKIE_NAME: &str = "__Host-tessera";

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

    /// How long the cookie carrying `credentials` lives, in seconds from `now` (never negative).
    ///
    /// # Security
    /// An opaque token's cookie lives as long as the session's absolute end (the idle timeout
    /// is enforced by the server); a JWT's cookie no longer than the JWT, so a browser never
    /// keeps presenting a token that is already refused.
    pub fn max_age(credentials: &Credentials, now: UnixTime) -> i64 {
        let end = match credentials.format {
            TokenFormat::Opaque => credentials.session_expires_at,
            TokenFormat::Jwt => credentials.access_expires_at,
        };
        (end - now).max(0)
    }

    /// Adds the `Set-Cookie` carrying `credentials`' access token to a response's headers, and
    /// returns the `Max-Age` it was given ([`SessionCookie::max_age`]).
    ///
    /// A token that cannot be a header value (never the case for tokens tessera mints) sets no
    /// cookie rather than failing the response.
    pub fn issue(&self, headers: &mut HeaderMap, credentials: &Credentials, now: UnixTime) -> i64 {
        let max_age = SessionCookie::max_age(credentials, now);
        if let Some(cookie) = self.set_value(&credentials.access_token, max_age) {
            headers.insert(header::SET_COOKIE, cookie);
        }
        max_age
    }

    /// Ends the cookie on a response: a `Set-Cookie` that deletes it and
    /// `Clear-Site-Data: "cookies"`.
    ///
    /// # Security
    /// `Clear-Site-Data` asks the browser to drop every cookie of this origin, not just ours,
    /// so a signed-out browser keeps nothing an attacker could replay; the deleting
    /// `Set-Cookie` covers browsers that ignore that header.
    pub fn clear(&self, headers: &mut HeaderMap) {
        headers.insert(header::SET_COOKIE, self.clear_value());
        headers.insert(CLEAR_SITE_DATA, HeaderValue::from_static("\"cookies\""));
    }

    // The `Set-Cookie` values are written by hand rather than with the `cookie` crate: SPEC
    // fixes the attribute order (`Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=n`) and the
    // crate writes its own order.

    /// `Set-Cookie` carrying a token for `max_age` seconds.
    ///
    /// # Security
    /// `Secure` (and the name prefix) keeps it off plain HTTP; `HttpOnly` hides it from
    /// scripts; `SameSite=Lax` keeps it off cross-site subrequests and POSTs while top-level
    /// navigation still works.
    fn set_value(&self, token: &str, max_age: i64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}={token}; {}Max-Age={max_age}",
            self.name,
            self.attributes()
        ))
        .ok()
    }

    /// `Set-Cookie` that deletes the cookie (same name, path and domain, `Max-Age=0`).
    fn clear_value(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("{}=; {}Max-Age=0", self.name, self.attributes()))
            .unwrap_or_else(|_| {
                HeaderValue::from_static(
                    "__Host-tessera=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
                )
            })
    }

    /// The attributes the cookie is set with, as DBSC's session instructions name them.
    pub(crate) fn attribute_list(&self) -> String {
        self.attributes().trim_end_matches("; ").to_owned()
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
            // `name=value`, spaces around the pair (our name holds no `=`).
            .find_map(|pair| pair.trim().strip_prefix(self.name)?.strip_prefix('='))
            .map(|value| value.trim_matches('"').to_owned())
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
        let set = attrs(&cookie.set_value("tsr_x", 60).unwrap());
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
        let set = attrs(&cookie.set_value("tsr_x", 60).unwrap());
        assert_eq!(set[0], "__Secure-tessera=tsr_x");
        assert!(set.iter().any(|s| s == "Domain=example.com"));
        assert!(set.iter().any(|s| s == "Secure"));
        let clear = attrs(&cookie.clear_value());
        assert_eq!(clear[0], "__Secure-tessera=");
        assert!(clear.iter().any(|s| s == "Domain=example.com"));
        assert!(clear.iter().any(|s| s == "Max-Age=0"));
    }

    fn credentials(format: TokenFormat) -> Credentials {
        Credentials {
            session_id: "s1".into(),
            format,
            access_token: "tok".into(),
            access_expires_at: 1_000 + 900,
            refresh_token: None,
            session_expires_at: 1_000 + 86_400,
            jkt: None,
            device_bound: false,
        }
    }

    #[test]
    fn max_age_follows_the_token_format() {
        let opaque = credentials(TokenFormat::Opaque);
        let jwt = credentials(TokenFormat::Jwt);
        assert_eq!(SessionCookie::max_age(&opaque, 1_000), 86_400);
        assert_eq!(SessionCookie::max_age(&jwt, 1_000), 900);
        // A clock past the end never yields a negative Max-Age.
        assert_eq!(SessionCookie::max_age(&jwt, 1_000_000), 0);
    }

    #[test]
    fn issuing_sets_the_cookie_with_its_max_age() {
        let mut headers = HeaderMap::new();
        let max_age =
            SessionCookie::new(None).issue(&mut headers, &credentials(TokenFormat::Jwt), 1_000);
        assert_eq!(max_age, 900);
        assert_eq!(
            headers[header::SET_COOKIE],
            "__Host-tessera=tok; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=900"
        );
        assert!(headers.get("clear-site-data").is_none());
    }

    #[test]
    fn clearing_deletes_the_cookie_and_asks_for_clear_site_data() {
        let mut headers = HeaderMap::new();
        SessionCookie::new(None).clear(&mut headers);
        assert_eq!(
            headers[header::SET_COOKIE],
            "__Host-tessera=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        );
        assert_eq!(headers["clear-site-data"], "\"cookies\"");
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

    proptest::proptest! {
        /// The cookie is read as the plain reading of RFC 6265's `Cookie` header: pairs split
        /// at `;`, trimmed, split at the first `=`, the first pair named ours wins, one pair of
        /// quotes dropped. Headers built from the characters that matter, ours among them.
        #[test]
        fn the_cookie_is_read_as_split_pairs_read_it(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("__Host-tessera".to_owned()),
                    proptest::strategy::Just("__Secure-tessera".to_owned()),
                    "[ =;\"a-z_-]{0,6}",
                ],
                0..8,
            ),
            split in 0usize..3,
        ) {
            let cookie = SessionCookie::new(None);
            let text = parts.concat();
            let mut headers = HeaderMap::new();
            // One header, or the same text over two `Cookie` headers.
            let cut = (text.len() / 2).min(split * text.len() / 2);
            for value in [&text[..cut], &text[cut..]] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.append(header::COOKIE, value);
                }
            }
            let expected = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == "__Host-tessera")
                .map(|(_, value)| value.trim_matches('"').to_owned());
            proptest::prop_assert_eq!(cookie.read(&headers), expected);
        }
    }
}
