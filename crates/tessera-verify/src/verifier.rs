//! The verifier: rules, keys, and where a request's token is read from.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tessera_token::{ClaimRules, TokenError, VerifyingKeys, verify_access_token};

use crate::cache::VerifiedCache;
use crate::clock::{Clock, SystemClock};
use crate::jwks::{JwksClient, JwksFetchError, JwksOptions, Refresh};
use crate::rejection::{Rejection, RejectionKind};
use crate::session::Session;

/// The session cookie's name when tessera sets it for its own host only (its default).
pub const HOST_COOKIE_NAME: &str = "__Host-tessera";

/// The session cookie's name when tessera shares it with a parent domain (`cookie_domain`).
pub const SHARED_COOKIE_NAME: &str = "__Secure-tessera";

/// The verified-token cache's default bound, in bytes of token text.
const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// The prefix of tessera's opaque access tokens, which only the server can check.
pub const OPAQUE_TOKEN_PREFIX: &str = "tsr_";

/// Checks opaque `tsr_` tokens, which only the tessera server can: the place an
/// introspection client plugs in ([`VerifierBuilder::opaque_tokens`]).
///
/// Without one, a verifier refuses every opaque token with [`RejectionKind::OpaqueToken`]
/// (401 `invalid_token`, a detail saying it needs introspection). tessera does not offer an
/// introspection endpoint for services yet; an implementation can ask `GET /v1/verify` with
/// the token and build the [`Session`] from its answer with
/// [`Session::from_verified_claims`].
pub trait OpaqueTokenCheck: Send + Sync + 'static {
    /// Checks one opaque token: its session, or why it is refused.
    fn check<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Session, Rejection>> + Send + 'a>>;
}

/// Verifies tessera access tokens: cheap to clone (one shared state), so keep one per
/// service and hand it to the [`VerifyLayer`](crate::VerifyLayer) and the application's state.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    rules: ClaimRules,
    keys: Keys,
    cookie_name: &'static str,
    clock: Arc<dyn Clock>,
    opaque: Option<Arc<dyn OpaqueTokenCheck>>,
    cache: VerifiedCache,
}

enum Keys {
    /// Fixed keys, given by the application.
    Fixed(Arc<VerifyingKeys>),
    /// The issuer's JWKS, fetched and refreshed.
    Jwks(JwksClient),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("rules", &self.inner.rules)
            .field("cookie_name", &self.inner.cookie_name)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Verifier`]; made by [`Verifier::builder`].
#[must_use]
pub struct VerifierBuilder {
    tessera_url: String,
    rules: ClaimRules,
    cookie_name: &'static str,
    clock: Arc<dyn Clock>,
    jwks: JwksOptions,
    opaque: Option<Arc<dyn OpaqueTokenCheck>>,
    cache_bytes: usize,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("tessera_url", &self.tessera_url)
            .field("rules", &self.rules)
            .field("cookie_name", &self.cookie_name)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// The expected `iss`: tessera's `issuer` setting (default `tessera`, as the server's).
    pub fn issuer(mut self, issuer: impl Into<String>) -> VerifierBuilder {
        self.rules.issuer = issuer.into();
        self
    }

    /// The expected `aud`: tessera's `audience` setting (default `tessera`, as the server's).
    pub fn audience(mut self, audience: impl Into<String>) -> VerifierBuilder {
        self.rules.audience = audience.into();
        self
    }

    /// Tolerated clock skew for `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> VerifierBuilder {
        self.rules.leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Read the `__Secure-tessera` cookie instead of `__Host-tessera`: for a service on a
    /// subdomain of the `cookie_domain` tessera shares its cookie with.
    ///
    /// # Security
    /// Only one name is ever read, as in the server: a service on a host-only deployment never
    /// accepts a `__Secure-` cookie a sibling subdomain could plant.
    pub fn shared_cookie(mut self) -> VerifierBuilder {
        self.cookie_name = SHARED_COOKIE_NAME;
        self
    }

    /// How the JWKS is refreshed and kept through an outage.
    pub fn jwks_options(mut self, options: JwksOptions) -> VerifierBuilder {
        self.jwks = options;
        self
    }

    /// The clock expiry and refresh decisions read (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> VerifierBuilder {
        self.clock = clock;
        self
    }

    /// Check opaque `tsr_` tokens with `check` instead of refusing them.
    pub fn opaque_tokens(mut self, check: impl OpaqueTokenCheck) -> VerifierBuilder {
        self.opaque = Some(Arc::new(check));
        self
    }

    /// How much token text the verified-token cache may hold (default 4 MiB, a few thousand
    /// tokens; 0 turns it off).
    ///
    /// A token seen before, under the same keys, skips its signature check; its claims
    /// (`exp` above all) are checked again on every hit, by the same rules.
    pub fn verified_cache(mut self, max_bytes: usize) -> VerifierBuilder {
        self.cache_bytes = max_bytes;
        self
    }

    /// Fetches the issuer's keys (`GET {tessera_url}/.well-known/jwks.json`) and returns the
    /// verifier; fails when they cannot be fetched now.
    pub async fn build(self) -> Result<Verifier, JwksFetchError> {
        let url = format!(
            "{}/.well-known/jwks.json",
            self.tessera_url.trim_end_matches('/')
        );
        let client = JwksClient::start(url, self.jwks.clone(), Arc::clone(&self.clock)).await?;
        Ok(self.assemble(Keys::Jwks(client)))
    }

    /// A verifier with these fixed keys and no JWKS client (HS256 keys, which never leave
    /// the server's store, or keys the application manages itself).
    pub fn build_with_keys(self, keys: VerifyingKeys) -> Verifier {
        self.assemble(Keys::Fixed(Arc::new(keys)))
    }

    fn assemble(self, keys: Keys) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                rules: self.rules,
                keys,
                cookie_name: self.cookie_name,
                clock: self.clock,
                opaque: self.opaque,
                cache: VerifiedCache::new(self.cache_bytes),
            }),
        }
    }
}

impl Verifier {
    /// A builder for a verifier of the tokens the tessera at `tessera_url` (its public base
    /// URL, e.g. `https://auth.example`) issues.
    pub fn builder(tessera_url: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            tessera_url: tessera_url.into(),
            rules: ClaimRules {
                issuer: "tessera".into(),
                audience: "tessera".into(),
                leeway: 30,
            },
            cookie_name: HOST_COOKIE_NAME,
            clock: Arc::new(SystemClock),
            jwks: JwksOptions::default(),
            opaque: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }

    /// The name of the session cookie this verifier reads.
    pub fn cookie_name(&self) -> &'static str {
        self.inner.cookie_name
    }

    /// Verifies one access token.
    ///
    /// An opaque `tsr_` token goes to the [`OpaqueTokenCheck`] if one was configured, and is
    /// otherwise refused with [`RejectionKind::OpaqueToken`]: only the tessera server can
    /// check it. A service that receives opaque tokens must ask tessera itself
    /// (`GET /v1/verify`) or have tessera issue JWTs (`bearer_format = "jwt"`,
    /// `cookie_format = "jwt"`).
    pub async fn verify(&self, token: &str) -> Result<Session, Rejection> {
        if token.starts_with(OPAQUE_TOKEN_PREFIX) {
            return match &self.inner.opaque {
                Some(check) => check.check(token).await,
                None => Err(RejectionKind::OpaqueToken.into()),
            };
        }
        let inner = &self.inner;
        let (keys, generation) = match &inner.keys {
            Keys::Fixed(keys) => (Arc::clone(keys), 0),
            Keys::Jwks(client) => client
                .current()
                .await
                .ok_or(RejectionKind::KeysUnavailable)?,
        };
        if let Some(cached) = inner
            .cache
            .get(token, generation, &inner.rules, inner.clock.now())
        {
            return cached.map_err(refused);
        }
        let verified = match verify_access_token(token, &keys, &inner.rules, inner.clock.now()) {
            // The issuer may have rotated since the last fetch: look once more.
            Err(TokenError::UnknownKey) => match &inner.keys {
                Keys::Jwks(client) if client.refresh(Refresh::UnknownKid).await => {
                    let (keys, new_generation) = client
                        .current()
                        .await
                        .ok_or(RejectionKind::KeysUnavailable)?;
                    verify_access_token(token, &keys, &inner.rules, inner.clock.now())
                        .map(|claims| (claims, new_generation))
                }
                _ => Err(TokenError::UnknownKey),
            },
            other => other.map(|claims| (claims, generation)),
        };
        let (claims, generation) = verified.map_err(refused)?;
        let session = Session::from_verified_claims(claims);
        inner.cache.insert(token, generation, &session);
        Ok(session)
    }

    /// Verifies the token a request carries: 401 `unauthenticated` when there is none.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Session, Rejection> {
        self.authenticate_optional(headers)
            .await?
            .ok_or_else(|| RejectionKind::Unauthenticated.into())
    }

    /// Verifies the token a request carries, if it carries one.
    pub async fn authenticate_optional(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, Rejection> {
        let Some((token, bearer)) = presented_token(headers, self.inner.cookie_name) else {
            return Ok(None);
        };
        self.verify(token)
            .await
            .map(Some)
            .map_err(|rejection| rejection.for_bearer(bearer))
    }
}

fn refused(error: TokenError) -> Rejection {
    RejectionKind::Token(error).into()
}

/// The token a request carries and whether it came as a bearer token, read as the server
/// reads it: `Authorization: Bearer` first, then the one session cookie name; never the URL.
fn presented_token<'h>(headers: &'h HeaderMap, cookie_name: &str) -> Option<(&'h str, bool)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some((token.trim(), true));
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| (value.trim_matches('"'), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_comes_first_then_the_one_cookie_name() {
        let both = headers(&[
            (header::AUTHORIZATION, "bearer  abc "),
            (header::COOKIE, "__Host-tessera=xyz"),
        ]);
        assert_eq!(
            presented_token(&both, HOST_COOKIE_NAME),
            Some(("abc", true))
        );
        let cookie = headers(&[(header::COOKIE, "a=1; __Host-tessera=\"xyz\"; b=2")]);
        assert_eq!(
            presented_token(&cookie, HOST_COOKIE_NAME),
            Some(("xyz", false))
        );
        // A __Secure- cookie is not read where the host-only name is configured.
        let planted = headers(&[(header::COOKIE, "__Secure-tessera=xyz")]);
        assert_eq!(presented_token(&planted, HOST_COOKIE_NAME), None);
        assert_eq!(
            presented_token(&planted, SHARED_COOKIE_NAME),
            Some(("xyz", false))
        );
        // Another scheme is no token; the cookie is still read.
        let basic = headers(&[(header::AUTHORIZATION, "Basic eA==")]);
        assert_eq!(presented_token(&basic, HOST_COOKIE_NAME), None);
    }
}
