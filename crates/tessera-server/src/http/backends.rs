//! Endpoints for back-end services that verify tessera's tokens themselves: the revocation
//! feed, token introspection and the issuer metadata.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_core::opaque::{self, OpaqueKind, TokenHash};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Body, authz_names_valid};
use super::openapi::{BodyProblems, StoreUnavailable};
use super::problem::{Problem, ProblemBody, ProblemCode};
use super::query::QueryParams;
use crate::service::{FEED_MAX_WAIT, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(revocations))
        .routes(routes!(introspect))
        .routes(routes!(metadata))
}

/// One answer of `GET /v1/revocations`.
#[derive(Serialize, ToSchema)]
struct RevocationFeed {
    /// Everything from the start (the first request, or a cursor this tessera does not
    /// know): add it to what is held (dropping nothing) and continue from `cursor`.
    reset: bool,
    /// Send it back as `after` in the next request.
    cursor: String,
    /// More entries are waiting: ask again at once.
    more: bool,
    /// Sessions revoked since the cursor, oldest first.
    revoked: Vec<RevokedSession>,
}

/// A revoked session in the feed.
#[derive(Serialize, ToSchema)]
struct RevokedSession {
    /// The session id: the `sid` claim of its tokens.
    sid: String,
    /// Unix time after which no token of this session can verify any more: forget it then.
    until: i64,
}

/// `GET /v1/revocations`: the revocation feed (long polling).
///
/// # Security
/// Public, like the JWKS: it lists ids of sessions that no longer exist, which grant
/// nothing (a session id is not a credential), and a verifier must reach it without a
/// secret to be safe by default. Held requests are bounded per instance (past the bound a
/// request is answered at once).
#[utoipa::path(
    get, path = "/v1/revocations", operation_id = "revocations", tag = "keys",
    summary = "Revoked sessions, for services that verify JWTs themselves",
    description = "Without `after`: every revocation whose tokens may still verify, with \
        `reset`. With the `cursor` of the previous answer as `after`: what was revoked since, \
        holding the request up to `wait` seconds until there is something. A service that \
        verifies JWTs locally refuses tokens whose `sid` is listed until `until`.",
    params(
        ("after" = Option<String>, Query, description = "The previous answer's `cursor`.",
            pattern = "^[0-9]{1,19}$"),
        ("wait" = Option<u32>, Query, description = "Seconds to hold the request when \
            nothing is new (0 to 25; default 0).", maximum = 25),
    ),
    responses(
        (status = 200, body = RevocationFeed, description = "Revocations after the cursor."),
        (status = 400, body = ProblemBody, content_type = "application/problem+json",
            description = "The cursor or the wait is not a number, or a parameter is \
                repeated. Problem code: `bad_request`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn revocations(State(state): State<AppState>, request: Request) -> Result<Response, Problem> {
    let query = QueryParams::parse(request.uri().query());
    let after = match query.single("after")? {
        None => None,
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .ok()
                .filter(|_| cursor.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Problem::bad_request("after must be a cursor this feed gave"))?,
        ),
    };
    let wait = query.number::<u64>("wait")?.unwrap_or(0);
    let wait = Duration::from_secs(wait).min(FEED_MAX_WAIT);
    let batch = state.service.revocations(after, wait).await?;
    Ok(Json(RevocationFeed {
        reset: batch.reset,
        cursor: batch.cursor.to_string(),
        more: batch.more,
        revoked: batch
            .revoked
            .into_iter()
            .map(|(sid, until)| RevokedSession {
                sid: sid.to_string(),
                until,
            })
            .collect(),
    })
    .into_response())
}

/// The body of `POST /v1/introspect` (form-encoded, as RFC 7662, or JSON).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = IntrospectionRequest)]
struct IntrospectBody {
    /// The access token to check (opaque `tsr_…` or a JWT). Anything else, of any length, is
    /// answered `active: false` (RFC 7662), never refused: the schema sets no bound.
    token: String,
    /// Accepted and ignored (RFC 7662): only access tokens are introspected.
    #[schema(nullable = false)]
    #[allow(dead_code)] // Read from the body so a standard client's request is accepted.
    token_type_hint: Option<String>,
}

/// The answer of `POST /v1/introspect` (RFC 7662): `active` alone when the token is not.
#[derive(Serialize, ToSchema)]
#[schema(as = IntrospectionResponse)]
struct Introspection {
    /// Whether the token is valid now (signature or record, expiry, revocation).
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    aud: Option<String>,
    /// The user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    sub: Option<String>,
    /// The session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    sid: Option<String>,
    /// The username.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    /// Effective permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    perms: Option<Vec<String>>,
    /// When the session began (opaque tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    iat: Option<i64>,
    /// When the token stops being valid if nothing else ends it first: a JWT's `exp`, or
    /// an opaque token's idle or absolute expiry, whichever is first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    exp: Option<i64>,
    /// How the user signed in (RFC 8176 names).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    amr: Option<Vec<&'static str>>,
    /// When the user signed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    auth_time: Option<i64>,
    /// The DPoP key a bound token is bound to (RFC 9449 §6.2): the service must then accept
    /// the token only with a proof by that key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    cnf: Option<IntrospectedBinding>,
}

/// `cnf` of an introspected bound token.
#[derive(Serialize, ToSchema)]
struct IntrospectedBinding {
    /// The JWK SHA-256 thumbprint (RFC 7638) of the client's key.
    jkt: String,
}

impl Introspection {
    fn inactive() -> Introspection {
        Introspection {
            active: false,
            iss: None,
            aud: None,
            sub: None,
            sid: None,
            username: None,
            roles: None,
            perms: None,
            iat: None,
            exp: None,
            amr: None,
            auth_time: None,
            cnf: None,
        }
    }
}

/// `POST /v1/introspect`: whether an access token is valid now, for a back-end service
/// holding an introspection secret (RFC 7662 in spirit).
///
/// # Security
/// Only services whose secret's SHA-256 is configured may ask (RFC 7662 §4: a token
/// scanner must not get an oracle). The secret is compared by hash, in constant time, with
/// every configured digest. A refused token is `active: false` whatever the reason, as the
/// RFC says: the reason is the user's business, not the service's.
#[utoipa::path(
    post, path = "/v1/introspect", operation_id = "introspect", tag = "keys",
    summary = "Check an access token (for back-end services)",
    description = "RFC 7662 in spirit: the caller authenticates with `Authorization: Bearer` \
        and an introspection secret (`tsri_…`) whose SHA-256 is in \
        `introspection_secret_digests`. The session is checked as `/v1/verify` checks it \
        (expiry, revocation, the user's current roles) and counts as activity.",
    request_body(content(
        (IntrospectBody = "application/x-www-form-urlencoded"),
        (IntrospectBody = "application/json"),
    )),
    responses(
        (status = 200, body = Introspection, description = "The token's state."),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "No introspection secret, or not a configured one. Problem code: \
                `unauthenticated`.",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, response = StoreUnavailable),
    ),
    security(("introspectionSecret" = [])),
)]
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<IntrospectBody, true>,
) -> Result<Response, Problem> {
    if !service_admitted(&headers, &state.http.introspection_secrets) {
        let mut response = Problem::new(
            ProblemCode::Unauthenticated,
            "introspection needs a configured service secret in Authorization: Bearer",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    let identity = match state.service.authenticate(&body.token).await {
        Ok(identity) if authz_names_valid(&identity) => identity,
        // Stored names that break the rules fail closed here too.
        Ok(_) | Err(ServiceError::Token(_) | ServiceError::Unauthenticated) => {
            return Ok(Json(Introspection::inactive()).into_response());
        }
        Err(error) => return Err(error.into()),
    };
    let rules = &state.service.settings().rules;
    let (iat, exp) = match identity.times {
        Some(times) => (
            Some(times.created_at),
            Some(
                identity
                    .token_expires_at
                    .unwrap_or(i64::MAX)
                    .min(times.idle_expires_at)
                    .min(times.absolute_expires_at),
            ),
        ),
        None => (None, identity.token_expires_at),
    };
    Ok(Json(Introspection {
        active: true,
        iss: Some(rules.issuer.clone()),
        aud: Some(rules.audience.clone()),
        sub: Some(identity.user_id.to_string()),
        sid: Some(identity.session_id.to_string()),
        username: Some(identity.username),
        roles: Some(identity.roles),
        perms: Some(identity.permissions),
        iat,
        exp,
        amr: Some(identity.amr.names()),
        auth_time: identity.auth_time,
        cnf: identity.jkt.map(|jkt| IntrospectedBinding { jkt }),
    })
    .into_response())
}

/// True when the request's bearer credential is a configured introspection secret.
fn service_admitted(headers: &HeaderMap, admitted: &[TokenHash]) -> bool {
    let Some(secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
    else {
        return false;
    };
    let Ok(presented) = opaque::parse(secret, OpaqueKind::Introspection) else {
        return false;
    };
    // Every digest is compared (constant-time `TokenHash` equality, no early exit), so the
    // time taken says nothing about which one matched.
    admitted
        .iter()
        .fold(false, |found, digest| found | (*digest == presented))
}

/// The issuer metadata (RFC 8414 members tessera has).
#[derive(Serialize, ToSchema)]
#[schema(as = IssuerMetadata)]
struct Metadata {
    /// The `iss` of tessera's tokens (the `issuer` setting).
    issuer: String,
    /// The JWK set that verifies them.
    jwks_uri: String,
    /// Token introspection for back-end services (RFC 7662).
    introspection_endpoint: String,
    /// The revocation feed (a tessera extension).
    revocation_feed_endpoint: String,
    /// Signing algorithms of access tokens that other services can verify.
    token_signing_alg_values_supported: Vec<&'static str>,
}

/// `GET /.well-known/oauth-authorization-server`: where a verifier finds the keys, the
/// feed and introspection.
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", operation_id = "issuer_metadata",
    tag = "keys",
    summary = "Issuer metadata (RFC 8414 style)",
    description = "URLs are built from `public_url`, else from the request's own origin. \
        Generic clients that insist on RFC 8414's rule that `issuer` equals the URL the \
        metadata was fetched from need `issuer` set to that URL.",
    responses(
        (status = 200, body = Metadata, description = "The metadata.",
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "No public URL is configured and the request names no usable \
                host. Problem code: `not_found`."),
    ),
)]
async fn metadata(State(state): State<AppState>, request: Request) -> Response {
    let Some(base) = super::ops::public_base(&state, request.headers(), request.extensions())
    else {
        return Problem::not_found().into_response();
    };
    let mut response = Json(Metadata {
        issuer: state.service.settings().rules.issuer.clone(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        introspection_endpoint: format!("{base}/v1/introspect"),
        revocation_feed_endpoint: format!("{base}/v1/revocations"),
        // HS256 keys never leave the store: no other service can verify those tokens.
        token_signing_alg_values_supported: vec!["EdDSA", "ES256"],
    })
    .into_response();
    super::ops::cache_as_public(&state, &mut response);
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_introspection_secret_is_admitted() {
        let secret = opaque::generate(OpaqueKind::Introspection).unwrap();
        let other = opaque::generate(OpaqueKind::Introspection).unwrap();
        let admitted = [other.hash, secret.hash];
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(service_admitted(
            &with(&format!("Bearer {}", secret.token)),
            &admitted
        ));
        assert!(service_admitted(
            &with(&format!("bearer  {}", secret.token)),
            &admitted
        ));
        let session = opaque::generate(OpaqueKind::Session).unwrap();
        for refused in [
            String::new(),
            secret.token.clone(),
            format!("Basic {}", secret.token),
            format!("Bearer {}x", secret.token),
            format!("Bearer {}", session.token),
            format!("Bearer {}", TokenHash::of(&secret.token).to_hex()),
        ] {
            assert!(!service_admitted(&with(&refused), &admitted), "{refused:?}");
        }
        assert!(!service_admitted(&HeaderMap::new(), &admitted));
        assert!(!service_admitted(
            &with(&format!("Bearer {}", secret.token)),
            &[]
        ));
    }
}
