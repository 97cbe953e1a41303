//! Safe return addresses (`rd`) after login.
//!
//! # Security
//! An open redirect on a login page is a phishing tool: a link to the real login page would
//! send the user, freshly authenticated, wherever the attacker likes. So `rd` is followed only
//! when it is a path on this server or a URL whose origin is listed in `redirect_origins`;
//! anything else falls back to `/account`. URLs are read with the WHATWG parser (the `url`
//! crate), the one browsers use, so the origin checked is the origin the browser would visit.
//!
//! The same origin type serves the cross-site check (`super::protect`): one parser
//! and one comparison (scheme, host and port, RFC 6454) for every origin tessera reads.

use url::{Origin, Url};

/// Longest `rd` accepted.
const MAX_RD_BYTES: usize = 2048;

/// Where a browser goes after login when `rd` is missing or refused.
pub(crate) const DEFAULT_RETURN: &str = "/account";

/// The origin of an absolute `http`/`https` URL as a browser computes it (WHATWG parser:
/// host lowercased and IDNA-mapped, default port filled in), or `None` for anything else
/// (`null`, `data:`, a relative or malformed URL).
///
/// # Security
/// Two origins are the same only when scheme, host and port all are: `http://host` is not
/// `https://host`, so a page on a plain-HTTP sibling cannot pass for the HTTPS server.
pub(crate) fn web_origin(url: &str) -> Option<Origin> {
    let url = Url::parse(url).ok()?;
    let origin = url.origin();
    (matches!(url.scheme(), "http" | "https") && origin.is_tuple()).then_some(origin)
}

/// A configured origin that must be matched exactly (`allowed_origins`): the form of
/// `redirect_origins` without the `*.` wildcard.
pub(crate) fn exact_origin(entry: &str) -> Result<Origin, String> {
    match parse_origin(entry)? {
        OriginPattern {
            host: HostMatch::Exact(origin),
            ..
        } => Ok(origin),
        OriginPattern { .. } => Err(format!(
            "allowed origin {entry:?} must name one origin (no *. wildcard)"
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// One origin.
    Exact(Origin),
    /// `scheme://*.example.com[:port]`: the suffix is kept as `.example.com`.
    Subdomains {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    host: HostMatch,
    /// The entry as CSP source expression (`https://*.example.com`).
    source: String,
}

impl OriginPattern {
    fn matches(&self, origin: &Origin) -> bool {
        match (&self.host, origin) {
            (HostMatch::Exact(ours), theirs) => ours == theirs,
            (
                HostMatch::Subdomains {
                    scheme,
                    suffix,
                    port,
                },
                Origin::Tuple(their_scheme, host, their_port),
            ) => {
                let host = host.to_string();
                scheme == their_scheme
                    && *port == Some(*their_port)
                    && host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
            }
            (HostMatch::Subdomains { .. }, Origin::Opaque(_)) => false,
        }
    }
}

/// The origins `rd` may point to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectPolicy {
    origins: Vec<OriginPattern>,
}

impl RedirectPolicy {
    /// Reads the configured origins: `https://app.example.com`, `http://127.0.0.1:8081` or
    /// `https://*.example.com` (any subdomain of `example.com`, not `example.com` itself).
    pub fn new(entries: &[String]) -> Result<RedirectPolicy, String> {
        let origins = entries
            .iter()
            .map(|entry| parse_origin(entry))
            .collect::<Result<_, _>>()?;
        Ok(RedirectPolicy { origins })
    }

    /// The address to send the browser to: `rd` when it is safe, else `/account`.
    pub fn target(&self, rd: Option<&str>) -> String {
        rd.and_then(|rd| self.check(rd))
            .unwrap_or_else(|| DEFAULT_RETURN.to_owned())
    }

    /// `rd` when it is a local path or a URL on an allowed origin; `None` otherwise.
    pub fn check(&self, rd: &str) -> Option<String> {
        // Browsers drop tabs and newlines and read `\` as `/`; refuse such input rather than
        // re-implement their repairs.
        if rd.is_empty()
            || rd.len() > MAX_RD_BYTES
            || rd
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
        if rd.starts_with('/') {
            // `//host` and `/\host` are network-path references: another host.
            if rd.starts_with("//") {
                return None;
            }
            let base = Url::parse("https://tessera.invalid/").ok()?;
            let joined = base.join(rd).ok()?;
            return (joined.origin() == base.origin()).then(|| rd.to_owned());
        }
        let url = Url::parse(rd).ok()?;
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let origin = web_origin(url.as_str())?;
        self.origins
            .iter()
            .any(|o| o.matches(&origin))
            .then(|| url.to_string())
    }

    /// The allowed origins as CSP source expressions (for `form-action`: the login form's
    /// redirect to `rd` is a form navigation too).
    pub fn csp_sources(&self) -> Vec<String> {
        self.origins.iter().map(|o| o.source.clone()).collect()
    }
}

fn parse_origin(entry: &str) -> Result<OriginPattern, String> {
    let bad = || {
        format!(
            "origin {entry:?} must look like https://app.example.com, \
             https://*.example.com or http://127.0.0.1:8080 (no path)"
        )
    };
    let entry = entry.trim().trim_end_matches('/');
    let (scheme, rest) = entry.split_once("://").ok_or_else(bad)?;
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || rest.contains(['/', '?', '#', '@'])
    {
        return Err(bad());
    }
    let host = url.host_str().ok_or_else(bad)?.to_ascii_lowercase();
    let source = match url.port() {
        Some(p) => format!(
            "{}://{}{host}:{p}",
            url.scheme(),
            if wildcard { "*." } else { "" }
        ),
        None => format!(
            "{}://{}{host}",
            url.scheme(),
            if wildcard { "*." } else { "" }
        ),
    };
    let host = if wildcard {
        HostMatch::Subdomains {
            scheme: url.scheme().to_owned(),
            suffix: format!(".{host}"),
            port: url.port_or_known_default(),
        }
    } else {
        HostMatch::Exact(web_origin(url.as_str()).ok_or_else(bad)?)
    };
    Ok(OriginPattern { host, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(&[
            "https://app.example.com".into(),
            "https://*.corp.example".into(),
            "http://127.0.0.1:8081/".into(),
        ])
        .unwrap()
    }

    #[test]
    fn local_paths_and_allowed_origins_pass() {
        let p = policy();
        for rd in [
            "/account",
            "/a/b?c=d&e=%2F",
            "https://app.example.com/",
            "https://app.example.com:443/x?y=1",
            "https://wiki.corp.example/page",
            "https://a.b.corp.example/",
            "http://127.0.0.1:8081/private",
        ] {
            assert!(p.check(rd).is_some(), "{rd}");
        }
        assert_eq!(
            p.target(Some("HTTPS://APP.example.com/Path")),
            "https://app.example.com/Path"
        );
    }

    #[test]
    fn everything_else_falls_back_to_the_account_page() {
        let p = policy();
        for rd in [
            "",
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://evilapp.example.com/",
            "http://app.example.com/",       // wrong scheme
            "https://app.example.com:8443/", // wrong port
            "https://corp.example/",         // wildcard needs a subdomain
            "http://127.0.0.1:8082/",
            "https://user:pw@app.example.com/",
            "https://app.example.com@evil.example/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "/\t/evil.example",
            "/\n/evil.example",
            " https://app.example.com/",
            "evil.example",
            "account",
        ] {
            assert_eq!(p.check(rd), None, "{rd:?}");
            assert_eq!(p.target(Some(rd)), DEFAULT_RETURN);
        }
        assert_eq!(p.target(None), DEFAULT_RETURN);
        assert_eq!(p.check(&format!("/{}", "a".repeat(3000))), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let ours = web_origin("https://App.Example.com/x?y#z");
        assert!(ours.is_some());
        assert_eq!(web_origin("https://app.example.com:443"), ours);
        for other in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
            "wss://app.example.com",
        ] {
            assert_ne!(web_origin(other), ours, "{other}");
        }
        for none in [
            "null",
            "",
            "data:text/html,x",
            "/path",
            "file:///etc/passwd",
        ] {
            assert_eq!(web_origin(none), None, "{none}");
        }
        assert_eq!(exact_origin("https://app.example.com/").ok(), ours);
        assert!(exact_origin("https://*.example.com").is_err());
    }

    #[test]
    fn config_entries_are_checked_and_become_csp_sources() {
        assert_eq!(
            policy().csp_sources(),
            vec![
                "https://app.example.com",
                "https://*.corp.example",
                "http://127.0.0.1:8081"
            ]
        );
        for bad in [
            "app.example.com",
            "ftp://x.test",
            "https://x.test/path",
            "https://x.test?q",
            "https://u@x.test",
        ] {
            assert!(RedirectPolicy::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
