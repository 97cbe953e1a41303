//! The verifier: rules, keys, and where a request's token is read from.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tessera_token::{ClaimRules, TokenError, VerifyingKeys, verify_access_token};

use crate::cache::VerifiedCache;
use crate::clock::{Clock, SystemClock};
use crate::dpop::{DpopCheck, DpopOptions, ProofRequest};
use crate::feed::{Denylist, FeedClient, FeedError, FeedOptions, WhenStale};
use crate::introspect::{Introspection, IntrospectionOptions};
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

/// Checks opaque `tsr_` tokens, which only the tessera server can: where a check of one's own
/// plugs in ([`VerifierBuilder::opaque_tokens`]). tessera's own introspection is built in
/// ([`VerifierBuilder::introspection`]).
///
/// Without either, a verifier refuses every opaque token with [`RejectionKind::OpaqueToken`]
/// (401 `invalid_token`, a detail saying it needs introspection).
pub trait OpaqueTokenCheck: Send + Sync + 'static {
    /// Checks one opaque token: its session, or why it is refused.
    fn check<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Session, Rejection>> + Send + 'a>>;
}

/// tessera's introspection as the check of opaque tokens.
impl OpaqueTokenCheck for Arc<Introspection> {
    fn check<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Session, Rejection>> + Send + 'a>> {
        Box::pin(self.session(token))
    }
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
    /// Revoked sessions from the feed; `None` when the feed is off.
    revoked: Option<Arc<Denylist>>,
    when_stale: WhenStale,
    /// tessera's introspection, when configured.
    introspection: Option<Arc<Introspection>>,
    /// DPoP checks, when bound tokens are accepted.
    dpop: Option<DpopCheck>,
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
    feed: Option<FeedOptions>,
    introspection: Option<(String, IntrospectionOptions)>,
    dpop: Option<DpopOptions>,
}

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The issuer's keys could not be fetched.
    #[error(transparent)]
    Keys(#[from] JwksFetchError),
    /// The revocation feed could not be read.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The options contradict each other.
    #[error("{0}")]
    Options(&'static str),
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

    /// Ask tessera (`POST /v1/introspect`) about opaque `tsr_` tokens, and about every token
    /// while the revocation feed is stale if [`FeedOptions::when_stale`] says so. `secret` is
    /// this service's introspection secret (`tessera generate introspection-secret`).
    pub fn introspection(
        mut self,
        secret: impl Into<String>,
        options: IntrospectionOptions,
    ) -> VerifierBuilder {
        self.introspection = Some((secret.into(), options));
        self
    }

    /// How the revocation feed is followed (it is on by default, with [`FeedOptions`]'
    /// defaults).
    pub fn revocation_feed(mut self, options: FeedOptions) -> VerifierBuilder {
        self.feed = Some(options);
        self
    }

    /// Do not follow the revocation feed: a token then stays accepted until its `exp` after
    /// its session is revoked (as with any JWT library). For a tessera that cannot be
    /// reached long-term, or tokens that are checked some other way.
    pub fn without_revocation_feed(mut self) -> VerifierBuilder {
        self.feed = None;
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

    /// Fetches the issuer's keys (`GET {tessera_url}/.well-known/jwks.json`) and reads the
    /// revocation feed (`GET {tessera_url}/v1/revocations`), then returns the verifier; fails
    /// when either cannot be had now.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        let base = self.tessera_url.trim_end_matches('/').to_owned();
        let client = JwksClient::start(
            format!("{base}/.well-known/jwks.json"),
            self.jwks.clone(),
            Arc::clone(&self.clock),
        )
        .await?;
        let revoked = match &self.feed {
            Some(options) => {
                if options.max_staleness <= options.wait.min(crate::feed::MAX_WAIT) {
                    return Err(BuildError::Options(
                        "the feed's max_staleness must exceed its wait",
                    ));
                }
                if options.when_stale == WhenStale::Introspect && self.introspection.is_none() {
                    return Err(BuildError::Options(
                        "WhenStale::Introspect needs VerifierBuilder::introspection",
                    ));
                }
                Some(
                    FeedClient::start(
                        &base,
                        http_client()?,
                        options.clone(),
                        Arc::clone(&self.clock),
                    )
                    .await?,
                )
            }
            None => None,
        };
        Ok(self.assemble(Keys::Jwks(client), revoked))
    }

    /// Accepts DPoP-bound tokens (RFC 9449, `cnf.jkt`), each with a fresh proof by its key
    /// for the request, at this service's public URL. Without this, bound tokens are refused:
    /// a bound token is never accepted as a plain bearer token.
    pub fn dpop(mut self, options: DpopOptions) -> VerifierBuilder {
        self.dpop = Some(options);
        self
    }

    /// A verifier with these fixed keys and no JWKS client or revocation feed (HS256 keys,
    /// which never leave the server's store, or keys the application manages itself).
    pub fn build_with_keys(self, keys: VerifyingKeys) -> Verifier {
        self.assemble(Keys::Fixed(Arc::new(keys)), None)
    }

    fn assemble(self, keys: Keys, revoked: Option<Arc<Denylist>>) -> Verifier {
        let introspection = self.introspection.map(|(secret, options)| {
            Arc::new(Introspection::new(
                &self.tessera_url,
                secret,
                http_client_or_default(options.timeout),
                self.rules.clone(),
                Arc::clone(&self.clock),
                &options,
            ))
        });
        let opaque = self.opaque.or_else(|| {
            introspection
                .as_ref()
                .map(|check| Arc::new(Arc::clone(check)) as Arc<dyn OpaqueTokenCheck>)
        });
        Verifier {
            inner: Arc::new(Inner {
                rules: self.rules,
                keys,
                cookie_name: self.cookie_name,
                clock: self.clock,
                opaque,
                cache: VerifiedCache::new(self.cache_bytes),
                when_stale: self
                    .feed
                    .as_ref()
                    .map_or(WhenStale::FailClosed, |f| f.when_stale),
                revoked,
                introspection,
                dpop: self.dpop.map(DpopCheck::new),
            }),
        }
    }
}

/// The HTTP client of the feed.
fn http_client() -> Result<reqwest::Client, FeedError> {
    reqwest::Client::builder()
        // Security: answers come from the configured URL only, never from a redirect target.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| FeedError::Request {
            url: String::new(),
            source,
        })
}

/// The HTTP client of introspection; the default client if the builder fails (it only fails
/// when the TLS backend cannot start, which the JWKS fetch would have shown already).
fn http_client_or_default(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

impl Verifier {
    /// The current time by the verifier's clock (what expiry and step-up checks read).
    pub fn now(&self) -> tessera_token::UnixTime {
        self.inner.clock.now()
    }

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
            feed: Some(FeedOptions::default()),
            introspection: None,
            dpop: None,
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
    ///
    /// A DPoP-bound token is refused here: it needs [`Verifier::verify_with_proof`].
    pub async fn verify(&self, token: &str) -> Result<Session, Rejection> {
        let session = self.verify_unbound(token).await?;
        if session.claims().cnf.is_some() {
            return Err(RejectionKind::Dpop(
                "the token is DPoP-bound: send it as `Authorization: DPoP` with a DPoP proof"
                    .into(),
            )
            .into());
        }
        Ok(session)
    }

    /// Verifies a token presented as `Authorization: DPoP` with the request's proof: the
    /// token must be bound (`cnf.jkt`), and the proof fresh, for this request, signed by that
    /// key and not seen before by this verifier.
    pub async fn verify_with_proof(
        &self,
        token: &str,
        request: &ProofRequest<'_>,
    ) -> Result<Session, Rejection> {
        let session = self.verify_unbound(token).await?;
        let Some(cnf) = &session.claims().cnf else {
            return Err(RejectionKind::Dpop(
                "the token is not DPoP-bound: send it as `Authorization: Bearer`".into(),
            )
            .into());
        };
        let Some(check) = &self.inner.dpop else {
            return Err(RejectionKind::Dpop(
                "this service does not accept DPoP-bound tokens".into(),
            )
            .into());
        };
        let now = self.inner.clock.now();
        check.check(token, &cnf.jkt, request, now, self.inner.rules.leeway)?;
        Ok(session)
    }

    /// How many DPoP proofs the verifier remembers now (0 without DPoP).
    pub fn dpop_proofs_remembered(&self) -> usize {
        self.inner.dpop.as_ref().map_or(0, DpopCheck::remembered)
    }

    /// The token's session, bound or not: signature or introspection, then revocation.
    async fn verify_unbound(&self, token: &str) -> Result<Session, Rejection> {
        let session = if token.starts_with(OPAQUE_TOKEN_PREFIX) {
            match &self.inner.opaque {
                Some(check) => check.check(token).await?,
                None => return Err(RejectionKind::OpaqueToken.into()),
            }
        } else {
            self.verify_jwt(token).await?
        };
        self.not_revoked(token, session).await
    }

    /// The revocation check every accepted token passes last: refused when the feed lists its
    /// session; while the feed is stale, as [`WhenStale`] says.
    async fn not_revoked(&self, token: &str, session: Session) -> Result<Session, Rejection> {
        let Some(revoked) = &self.inner.revoked else {
            return Ok(session);
        };
        if revoked.is_revoked(session.session_id()) {
            return Err(RejectionKind::Token(TokenError::Revoked).into());
        }
        if revoked.fresh() {
            return Ok(session);
        }
        match (self.inner.when_stale, &self.inner.introspection) {
            (WhenStale::Introspect, Some(introspection)) => introspection.session(token).await,
            _ => Err(RejectionKind::RevocationsStale.into()),
        }
    }

    /// How many revoked sessions the verifier holds from the feed (0 when the feed is off).
    pub fn revoked_sessions(&self) -> usize {
        self.inner
            .revoked
            .as_ref()
            .map_or(0, |revoked| revoked.len())
    }

    /// Signature and claims of a JWT, with the verified-token cache.
    async fn verify_jwt(&self, token: &str) -> Result<Session, Rejection> {
        let inner = &self.inner;
        let (keys, generation) = match &inner.keys {
            Keys::Fixed(keys) => (Arc::clone(keys), 0),
            Keys::Jwks(client) => client
                .current()
                .await
                .ok_or(RejectionKind::KeysUnavailable)?,
        };
        let now = inner.clock.now();
        if let Some(cached) = inner.cache.get(token, generation, &inner.rules, now) {
            return cached.map_err(refused);
        }
        let verified = match verify_access_token(token, &keys, &inner.rules, now) {
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

    /// Verifies the token a request carries, if it carries one. Without the request's method
    /// and path, a DPoP-bound token is refused: see [`Verifier::authenticate_request`].
    pub async fn authenticate_optional(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, Rejection> {
        self.authenticate_request(None, headers).await
    }

    /// Verifies the token a request (`method` and `path`, for a DPoP proof) carries, if it
    /// carries one: `Authorization: DPoP` with the `DPoP` header, `Authorization: Bearer`, or
    /// the session cookie.
    pub async fn authenticate_request(
        &self,
        target: Option<(&str, &str)>,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, Rejection> {
        let Some((token, scheme)) = presented_token(headers, self.inner.cookie_name) else {
            return Ok(None);
        };
        let result = match (scheme, target) {
            (Scheme::Dpop, Some((method, path))) => {
                let mut proofs = headers.get_all("dpop").iter();
                let proof = match (proofs.next(), proofs.next()) {
                    (Some(proof), None) => proof.to_str().ok(),
                    _ => None,
                };
                let request = ProofRequest {
                    proof,
                    method,
                    path,
                };
                self.verify_with_proof(token, &request).await
            }
            (Scheme::Dpop, None) => Err(RejectionKind::Dpop(
                "a DPoP proof cannot be checked without the request".into(),
            )
            .into()),
            _ => self.verify(token).await,
        };
        result
            .map(Some)
            .map_err(|rejection| rejection.for_bearer(scheme != Scheme::Cookie))
    }
}

fn refused(error: TokenError) -> Rejection {
    RejectionKind::Token(error).into()
}

/// How a token came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
    Cookie,
}

/// The token a request carries and how, read as the server reads it: `Authorization: Bearer`
/// or `DPoP` first, then the one session cookie name; never the URL.
fn presented_token<'h>(headers: &'h HeaderMap, cookie_name: &str) -> Option<(&'h str, Scheme)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some((token.trim(), Scheme::Bearer));
        }
        if scheme.eq_ignore_ascii_case("dpop") {
            return Some((token.trim(), Scheme::Dpop));
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| (value.trim_matches('"'), Scheme::Cookie))
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
            Some(("abc", Scheme::Bearer))
        );
        let dpop = headers(&[(header::AUTHORIZATION, "DPoP abc")]);
        assert_eq!(
            presented_token(&dpop, HOST_COOKIE_NAME),
            Some(("abc", Scheme::Dpop))
        );
        let cookie = headers(&[(header::COOKIE, "a=1; __Host-tessera=\"xyz\"; b=2")]);
        assert_eq!(
            presented_token(&cookie, HOST_COOKIE_NAME),
            Some(("xyz", Scheme::Cookie))
        );
        // A __Secure- cookie is not read where the host-only name is configured.
        let planted = headers(&[(header::COOKIE, "__Secure-tessera=xyz")]);
        assert_eq!(presented_token(&planted, HOST_COOKIE_NAME), None);
        assert_eq!(
            presented_token(&planted, SHARED_COOKIE_NAME),
            Some(("xyz", Scheme::Cookie))
        );
        // Another scheme is no token; the cookie is still read.
        let basic = headers(&[(header::AUTHORIZATION, "Basic eA==")]);
        assert_eq!(presented_token(&basic, HOST_COOKIE_NAME), None);
    }
}
