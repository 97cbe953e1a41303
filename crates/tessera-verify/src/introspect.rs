//! Asking tessera about a token (`POST /v1/introspect`): for opaque `tsr_` tokens, which only
//! tessera can check, and for any token while the revocation feed is stale
//! ([`WhenStale::Introspect`](crate::WhenStale::Introspect)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tessera_token::{AccessClaims, ClaimRules, TokenError, UnixTime};

use crate::body::read_bounded;
use crate::clock::Clock;
use crate::rejection::{Rejection, RejectionKind};
use crate::session::Session;

/// Answers kept at once; past it the cache starts over (a burst of distinct tokens cannot
/// grow it without bound).
const MAX_CACHED: usize = 10_000;

/// The largest answer read (roles and permissions included, a few KB at most).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How the introspection client asks and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionOptions {
    /// How long an active answer is reused (default 5 s; never past the token's expiry).
    /// A revocation the feed reports ends a cached answer at once; one it cannot report
    /// (the feed is off or stale) is seen within this time.
    pub cache_for: Duration,
    /// The timeout of one request (default 5 s).
    pub timeout: Duration,
}

impl Default for IntrospectionOptions {
    fn default() -> IntrospectionOptions {
        IntrospectionOptions {
            cache_for: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// tessera's answer (RFC 7662).
#[derive(Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    aud: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    sid: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    perms: Vec<String>,
    iat: Option<UnixTime>,
    exp: Option<UnixTime>,
    /// How the user signed in; absent from an older tessera (then no step-up rule is met).
    #[serde(default)]
    amr: tessera_token::Methods,
    auth_time: Option<UnixTime>,
    /// The key a bound token is bound to (RFC 9449 §6.2).
    #[serde(default)]
    cnf: Option<tessera_token::Confirmation>,
}

/// Checks tokens by asking tessera, with a short cache.
pub(crate) struct Introspection {
    url: String,
    secret: String,
    http: reqwest::Client,
    rules: ClaimRules,
    clock: Arc<dyn Clock>,
    cache_for: UnixTime,
    /// Token → its session and until when the answer may be reused.
    cache: Mutex<HashMap<String, (Session, UnixTime)>>,
}

impl Introspection {
    pub(crate) fn new(
        tessera_url: &str,
        secret: String,
        http: reqwest::Client,
        rules: ClaimRules,
        clock: Arc<dyn Clock>,
        options: &IntrospectionOptions,
    ) -> Introspection {
        Introspection {
            url: format!("{}/v1/introspect", tessera_url.trim_end_matches('/')),
            secret,
            http,
            rules,
            clock,
            cache_for: UnixTime::try_from(options.cache_for.as_secs()).unwrap_or(UnixTime::MAX),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token's session, from the cache or from tessera.
    pub(crate) async fn session(&self, token: &str) -> Result<Session, Rejection> {
        let now = self.clock.now();
        if let Some(session) = self.cached(token, now) {
            return Ok(session);
        }
        let answer = self.ask(token).await?;
        if !answer.active {
            return Err(RejectionKind::Token(TokenError::Unknown).into());
        }
        let issued = answer.iat.unwrap_or(now);
        let claims = AccessClaims {
            iss: answer.iss,
            aud: answer.aud,
            sub: answer.sub,
            sid: answer.sid,
            name: answer.username,
            roles: answer.roles,
            perms: answer.perms,
            iat: issued,
            nbf: issued.min(now),
            exp: answer.exp.unwrap_or(now),
            jti: String::new(),
            acr: Some(answer.amr.level().acr().to_owned()),
            amr: answer.amr,
            auth_time: answer.auth_time,
            cnf: answer.cnf,
        };
        // The same issuer, audience and expiry rules as a JWT: a verifier pointed at another
        // deployment's tessera does not take its sessions.
        self.rules
            .check(&claims, now)
            .map_err(|error| Rejection::from(RejectionKind::Token(error)))?;
        let until = claims.exp.min(now.saturating_add(self.cache_for));
        let session = Session::from_verified_claims(claims);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(token.to_owned(), (session.clone(), until));
        }
        Ok(session)
    }

    fn cached(&self, token: &str, now: UnixTime) -> Option<Session> {
        let cache = self.cache.lock().ok()?;
        let (session, until) = cache.get(token)?;
        (now < *until).then(|| session.clone())
    }

    async fn ask(&self, token: &str) -> Result<Answer, Rejection> {
        let unavailable = |why: String| Rejection::from(RejectionKind::IssuerUnavailable(why));
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.secret)
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|error| unavailable(format!("introspection failed: {error}")))?;
        if response.status() != reqwest::StatusCode::OK {
            // A 401 means this service's secret is wrong: an operator's error, not the
            // user's, so it is not answered as a refused token.
            tracing::warn!(status = %response.status(), "introspection refused");
            return Err(unavailable(format!(
                "introspection answered {}",
                response.status()
            )));
        }
        read_bounded(response, MAX_ANSWER_BYTES)
            .await
            .ok()
            .flatten()
            .and_then(|body| serde_json::from_slice::<Answer>(&body).ok())
            .ok_or_else(|| unavailable("introspection answered something else".into()))
    }
}
