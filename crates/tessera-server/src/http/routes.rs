//! Route handlers: thin translations between HTTP and the service layer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Body, RequestProof};
use super::openapi::{
    BodyProblems, CrossSiteCookie, SessionProblems, StoreUnavailable, Username, date_time,
    optional_date_time,
};
use super::problem::{Problem, ProblemBody, ProblemCode};
use super::query::QueryParams;
use crate::clock::rfc3339;
use crate::service::{ClientInfo, Credentials, Delivery, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(session))
        .routes(routes!(list_sessions, revoke_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(change_password))
        .routes(routes!(complete_login))
        .routes(routes!(step_up))
        .routes(routes!(jwks))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The body of `POST /v1/login` (JSON or form-encoded).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LoginRequest)]
pub struct LoginBody {
    /// The username (see `Username`).
    #[schema(value_type = Username)]
    pub username: String,
    /// The password.
    #[schema(max_length = 1024, format = Password)]
    pub password: String,
    /// `cookie` (default) or `bearer`.
    #[schema(schema_with = delivery_schema)]
    pub delivery: Option<Delivery>,
    /// Where a browser's form login returns to (checked against `redirect_origins`).
    #[schema(nullable = false)]
    pub rd: Option<String>,
    /// For an account with a second factor: a TOTP code or a recovery code. Without it such
    /// a login answers 401 `second_factor_required` with a ticket for
    /// `POST /v1/login/second-factor`; a browser's form is shown again asking for it.
    #[schema(nullable = false, max_length = 64)]
    pub code: Option<String>,
}

/// [`Delivery`] in the document: its serde names, `cookie` when absent.
pub(super) fn delivery_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["cookie", "bearer"]))
        .default(Some("cookie".into()))
        .into()
}

/// The body of a login or password change answered with a cookie: the token is only
/// in `Set-Cookie`.
#[derive(Serialize, ToSchema)]
pub(super) struct CookieSession {
    session_id: String,
    /// Seconds the cookie lives (`Max-Age`).
    expires_in: i64,
}

/// The body of a login, refresh or password change answered with bearer tokens.
#[derive(Serialize, ToSchema)]
pub(super) struct BearerTokens {
    access_token: String,
    #[schema(schema_with = bearer_token_type)]
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: i64,
    /// `tsrf_…`, single use.
    #[schema(value_type = String)]
    refresh_token: Option<String>,
    /// Seconds to the session's absolute end.
    refresh_expires_in: i64,
    session_id: String,
}

fn bearer_token_type() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["Bearer", "DPoP"]))
        .into()
}

/// New credentials, shaped by their delivery.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum NewCredentials {
    /// Cookie delivery.
    Cookie(CookieSession),
    /// Bearer delivery.
    Bearer(BearerTokens),
}

/// `POST /v1/login`: a new session, delivered as a cookie or as bearer tokens; a browser's
/// form login is answered with redirects instead (`super::pages::after_form_login`).
#[utoipa::path(
    post, path = "/v1/login", operation_id = "login", tag = "sessions",
    summary = "Log in with a username and password",
    description = "Starts a new session (a login that presents a live session cookie ends that \
        session). Unknown users and wrong passwords are indistinguishable. A bearer login with \
        a `DPoP` proof header (RFC 9449) gets tokens bound to the proof's key \
        (`token_type: \"DPoP\"`): see docs/bound-tokens.md.",
    request_body(content(
        (LoginBody = "application/json"),
        (LoginBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, body = NewCredentials,
            description = "A new session. Cookie delivery: the token is only in `Set-Cookie` \
                (`__Host-tessera=…; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=…`), the \
                body carries the session id. Bearer delivery: the tokens are in the body.",
            headers(
                ("Set-Cookie" = String, description = "The session cookie (cookie delivery only)."),
                ("Cache-Control" = String,
                    description = "`no-store`: the response carries a token or session data."),
            )),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "Wrong username or password (`invalid_credentials`), or the right \
                password for an account with a second factor and no code given \
                (`second_factor_required`, with a ticket)."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Sent cross-site, or the code given is wrong or used. Problem codes: \
                `cross_site_request`, `invalid_code`."),
        (status = 429, body = ProblemBody, content_type = "application/problem+json",
            description = "Too many attempts for this account or client. Problem code: \
                `rate_limited`.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    proof: RequestProof,
    Body(body): Body<LoginBody, true>,
) -> Result<Response, Problem> {
    let browser = super::pages::is_browser_form(&headers);
    // A browser's form always gets a cookie.
    let (delivery, client) = if browser {
        (Delivery::Cookie, client)
    } else {
        let delivery = body.delivery.unwrap_or(Delivery::Cookie);
        (
            delivery,
            bound_client(&state, client, &proof, delivery).await?,
        )
    };
    let previous = state.http.cookie.read(&headers);
    let result = state
        .service
        .login(
            &body.username,
            &body.password,
            body.code.as_deref().filter(|c| !c.is_empty()),
            delivery,
            client,
            previous.as_deref(),
        )
        .await;
    if browser {
        return Ok(super::pages::after_form_login(
            &state,
            body.rd.as_deref(),
            &body.username,
            result,
        ));
    }
    Ok(credentials_response(&state, delivery, &result?))
}

/// The body of `POST /v1/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefreshRequest)]
pub struct RefreshBody {
    /// The refresh token to exchange (`tsrf_…`).
    pub refresh_token: String,
}

/// `POST /v1/refresh`: rotates a refresh token.
#[utoipa::path(
    post, path = "/v1/refresh", operation_id = "refresh", tag = "sessions",
    summary = "Exchange a refresh token for new tokens",
    description = "Each refresh token works once. Repeating it within `refresh_grace` seconds \
        returns the same new pair; repeating it later revokes the whole session. The refresh \
        token of a DPoP-bound session needs a `DPoP` proof by the session's key (400 \
        `invalid_dpop_proof` without one; the token stays unspent).",
    request_body(content((RefreshBody = "application/json"))),
    responses(
        (status = 200, body = BearerTokens, description = "A new access and refresh token.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the response carries a token or session data."))),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "Unknown, expired or revoked refresh token, or a replay (which \
                revokes the session). Problem codes: `invalid_token`, `token_expired`, \
                `token_revoked`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    proof: RequestProof,
    Body(body): Body<RefreshBody>,
) -> Result<Response, Problem> {
    let proof = proof.presented()?;
    let credentials = state
        .service
        .refresh(&body.refresh_token, client, proof.as_ref())
        .await
        .map_err(|e| Problem::from(e).at_token_endpoint())?;
    Ok(credentials_response(&state, Delivery::Bearer, &credentials))
}

/// End the caller's session
#[utoipa::path(
    post, path = "/v1/logout", operation_id = "logout", tag = "sessions",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 204, description = "Revoked. The cookie is cleared.",
            headers(
                ("Set-Cookie" = String, description = "Clears the session cookie (`Max-Age=0`)."),
                ("Clear-Site-Data" = String, description = "`\"cookies\"`"),
            )),
        SessionProblems,
        (status = 403, response = CrossSiteCookie),
    ),
)]
async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<Response, Problem> {
    state.service.logout(&auth.identity, client).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    state.http.cookie.clear(response.headers_mut());
    Ok(response)
}

/// The caller's user.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionUser {
    id: String,
    username: String,
}

/// `GET /v1/session`.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionInfo {
    session_id: String,
    user: SessionUser,
    roles: Vec<String>,
    permissions: Vec<String>,
    /// How the user signed in (RFC 8176 names: `pwd`, `otp`, …).
    amr: Vec<&'static str>,
    /// The assurance level reached: `aal1` or `aal2` (NIST SP 800-63B).
    acr: &'static str,
    /// When the user signed in (the session's start; a step-up starts a new session).
    #[schema(schema_with = optional_date_time)]
    auth_time: Option<String>,
    #[schema(schema_with = optional_date_time)]
    created_at: Option<String>,
    #[schema(schema_with = optional_date_time)]
    expires_at: Option<String>,
    #[schema(schema_with = optional_date_time)]
    idle_expires_at: Option<String>,
}

/// The caller's session
#[utoipa::path(
    get, path = "/v1/session", operation_id = "session", tag = "sessions",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = SessionInfo,
            description = "The session, its user, roles, permissions and expiry times."),
        SessionProblems,
    ),
)]
pub(super) async fn session(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, Problem> {
    let id = &auth.identity;
    let (created_at, expires_at, idle_expires_at) = match id.times {
        Some(t) => (
            Some(t.created_at),
            Some(t.absolute_expires_at),
            Some(t.idle_expires_at),
        ),
        None => (None, id.token_expires_at, None),
    };
    let body = SessionInfo {
        session_id: id.session_id.to_string(),
        user: SessionUser {
            id: id.user_id.to_string(),
            username: id.username.clone(),
        },
        roles: id.roles.clone(),
        permissions: id.permissions.clone(),
        amr: id.amr.names(),
        acr: id.amr.level().acr(),
        auth_time: id.auth_time.map(rfc3339),
        created_at: created_at.map(rfc3339),
        expires_at: expires_at.map(rfc3339),
        idle_expires_at: idle_expires_at.map(rfc3339),
    };
    let mut response = Json(body).into_response();
    auth.renew_cookie_jwt(&state, &mut response)?;
    Ok(response)
}

/// One of the caller's sessions.
#[derive(Serialize, ToSchema)]
pub(super) struct OwnSession {
    id: String,
    #[schema(schema_with = date_time)]
    created_at: String,
    #[schema(schema_with = date_time)]
    last_seen_at: String,
    ip: Option<String>,
    user_agent: Option<String>,
    current: bool,
}

/// `GET /v1/sessions`.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionList {
    sessions: Vec<OwnSession>,
}

/// The caller's live sessions
#[utoipa::path(
    get, path = "/v1/sessions", operation_id = "listSessions", tag = "sessions",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = SessionList, description = "Newest first."),
        SessionProblems,
    ),
)]
async fn list_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SessionList>, Problem> {
    let sessions = state.service.sessions_of(&auth.identity.user_id).await?;
    let sessions = sessions
        .into_iter()
        .map(|s| OwnSession {
            created_at: rfc3339(s.times.created_at),
            last_seen_at: rfc3339(s.times.last_seen_at),
            ip: s.ip,
            user_agent: s.user_agent,
            current: s.id == auth.identity.session_id,
            id: s.id.to_string(),
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Revoke one of the caller's sessions
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", operation_id = "revokeSession", tag = "sessions",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked."),
        SessionProblems,
        (status = 403, response = CrossSiteCookie),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "No such session among the caller's. Problem codes: `not_found`."),
    ),
)]
async fn revoke_session(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .revoke_own_session(&auth.identity, &id, client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `scope` of `DELETE /v1/sessions`: the one value it accepts.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documents the value the handler compares `scope` with.
enum RevokeScope {
    Others,
}

/// Revoke the caller's other sessions
#[utoipa::path(
    delete, path = "/v1/sessions", operation_id = "revokeOtherSessions", tag = "sessions",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("scope" = inline(RevokeScope), Query)),
    responses(
        (status = 204, description = "Every other session of the caller is revoked."),
        (status = 400, body = ProblemBody, content_type = "application/problem+json",
            description = "`scope=others` is missing. Problem codes: `bad_request`."),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "No valid session token (`unauthenticated`, `invalid_token`, \
                `token_expired`, `token_revoked`), or a sign-in older than \
                `recent_authentication`: step up first (`step_up_required`).",
            headers(("WWW-Authenticate" = String,
                description = "The RFC 6750 or RFC 9470 challenge (bearer requests)."))),
        (status = 403, response = CrossSiteCookie),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn revoke_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    query: QueryParams,
) -> Result<StatusCode, Problem> {
    if query.single("scope")? != Some("others") {
        return Err(Problem::bad_request(
            "DELETE /v1/sessions needs ?scope=others",
        ));
    }
    state
        .service
        .revoke_other_sessions(&auth.identity, client)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordChange)]
struct PasswordBody {
    #[schema(format = Password)]
    current_password: String,
    #[schema(min_length = 8, max_length = 1024, format = Password)]
    new_password: String,
}

/// `POST /v1/password`.
#[utoipa::path(
    post, path = "/v1/password", operation_id = "changePassword", tag = "sessions",
    summary = "Change the caller's password",
    description = "Answers with fresh credentials (same delivery as the request) and revokes \
        every other session of the user, the calling one included.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    request_body(content((PasswordBody = "application/json"))),
    responses(
        (status = 200, body = NewCredentials,
            description = "A new session. Cookie delivery: the token is only in `Set-Cookie` \
                (`__Host-tessera=…; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=…`), the \
                body carries the session id. Bearer delivery: the tokens are in the body.",
            headers(
                ("Set-Cookie" = String, description = "The session cookie (cookie delivery only)."),
                ("Cache-Control" = String,
                    description = "`no-store`: the response carries a token or session data."),
            )),
        BodyProblems,
        SessionProblems,
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "The current password is wrong (the session stays valid), or the \
                request came cross-site. Problem codes: `invalid_credentials`, \
                `cross_site_request`."),
        (status = 429, body = ProblemBody, content_type = "application/problem+json",
            description = "Too many wrong current passwords (or failed logins) for this account \
                from this client: throttled on the login counters. Problem code: \
                `rate_limited`.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
)]
async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<PasswordBody>,
) -> Result<Response, Problem> {
    let delivery = auth.delivery();
    let credentials = state
        .service
        .change_password(
            &auth.identity,
            &body.current_password,
            &body.new_password,
            delivery,
            client,
        )
        .await
        .map_err(|e| auth.proof_refused(e))?;
    Ok(credentials_response(&state, delivery, &credentials))
}

/// One public key of the JWK set (RFC 7517).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Documents the body `KeyRing::jwks` builds.
struct Jwk {
    kty: String,
    kid: String,
    #[schema(nullable = false)]
    alg: Option<String>,
    #[serde(rename = "use")]
    #[schema(nullable = false)]
    key_use: Option<String>,
}

/// The body of `GET /.well-known/jwks.json`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Documents the body `KeyRing::jwks` builds.
struct Jwks {
    keys: Vec<Jwk>,
}

/// `GET /.well-known/jwks.json`.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", operation_id = "jwks", tag = "keys",
    summary = "Public keys that verify tessera's JWTs",
    description = "The current key and retired keys still verifying. HS256 keys are secret and \
        never listed.",
    responses(
        (status = 200, body = Jwks, description = "A JWK set (RFC 7517).",
            headers(("Cache-Control" = String, description = "`public, max-age=60`"))),
    ),
)]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.service.key_ring().jwks()).into_response();
    // Public keys only: caching is safe, and short enough to pick up a rotation quickly.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// A check that passed: `ok`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Fine {
    Ok,
}

/// The body of `GET /healthz`.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub(super) struct HealthBody {
    #[schema(inline)]
    status: Fine,
}

/// `ready`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ReadyStatus {
    Ready,
}

/// What `/readyz` checked.
#[derive(Serialize, ToSchema)]
struct ReadyChecks {
    #[schema(inline)]
    store: Fine,
    #[schema(inline)]
    keys: Fine,
}

/// The body of `GET /readyz`.
#[derive(Serialize, ToSchema)]
#[schema(as = Ready)]
struct ReadyBody {
    #[schema(inline)]
    status: ReadyStatus,
    #[schema(inline)]
    checks: ReadyChecks,
}

/// Liveness
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, body = HealthBody, description = "The process answers.")),
)]
pub(super) async fn healthz() -> Response {
    let mut response = Response::new(axum::body::Body::from(axum::body::Bytes::from_static(
        HEALTHY,
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The body of every `/healthz` answer, [`HealthBody`] serialised once: a probe asks often,
/// and serialising it per request was a tenth of the work of answering.
const HEALTHY: &[u8] = br#"{"status":"ok"}"#;

/// Readiness
///
/// Ready when the store answers and the signing keys work (sign and verify a probe).
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, body = ReadyBody,
            description = "The store answers and the signing keys are loaded."),
        (status = 503, body = ProblemBody, content_type = "application/problem+json",
            description = "Not ready: the store is unreachable (`store_unavailable`) or the keys \
                are not usable (`not_ready`).",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.service.store().ping().await.is_err() {
        return Problem::from(ServiceError::Unavailable).into_response();
    }
    if !state.service.key_ring().self_check() {
        return Problem::new(ProblemCode::NotReady, "the signing keys are not loaded")
            .into_response();
    }
    let body = ReadyBody {
        status: ReadyStatus::Ready,
        checks: ReadyChecks {
            store: Fine::Ok,
            keys: Fine::Ok,
        },
    };
    Json(body).into_response()
}

/// The body of `POST /v1/login/second-factor`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecondFactorRequest)]
struct SecondFactorBody {
    /// The `ticket` of the `second_factor_required` problem.
    #[schema(max_length = 1024)]
    ticket: String,
    /// A TOTP code (six digits) or a recovery code.
    #[schema(max_length = 64)]
    code: String,
    /// `cookie` (default) or `bearer`.
    #[schema(schema_with = delivery_schema)]
    delivery: Option<Delivery>,
}

/// `POST /v1/login/second-factor`: the second step of a login.
#[utoipa::path(
    post, path = "/v1/login/second-factor", operation_id = "loginSecondFactor", tag = "sessions",
    summary = "Finish a login with a one-time or recovery code",
    description = "Takes the ticket of a `second_factor_required` login (good for five \
        minutes) and a code; starts a session authenticated by password and code.",
    request_body(content((SecondFactorBody = "application/json"))),
    responses(
        (status = 200, body = NewCredentials, description = "A new session, as a login's.",
            headers(
                ("Set-Cookie" = String, description = "The session cookie (cookie delivery only)."),
                ("Cache-Control" = String,
                    description = "`no-store`: the response carries a token or session data."),
            )),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "The ticket is not valid or has expired: log in again. Problem \
                codes: `invalid_credentials`."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Wrong or used code, or sent cross-site. Problem codes: \
                `invalid_code`, `cross_site_request`."),
        (status = 429, body = ProblemBody, content_type = "application/problem+json",
            description = "Too many wrong codes for this account. Problem code: `rate_limited`.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn complete_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    proof: RequestProof,
    Body(body): Body<SecondFactorBody>,
) -> Result<Response, Problem> {
    let delivery = body.delivery.unwrap_or(Delivery::Cookie);
    let client = bound_client(&state, client, &proof, delivery).await?;
    let previous = state.http.cookie.read(&headers);
    let credentials = state
        .service
        .complete_login(
            &body.ticket,
            &body.code,
            delivery,
            client,
            previous.as_deref(),
        )
        .await?;
    Ok(credentials_response(&state, delivery, &credentials))
}

/// The body of `POST /v1/step-up`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StepUpRequest, min_properties = 1)]
struct StepUpBody {
    /// The password, to authenticate afresh (meets `max_age`).
    #[schema(max_length = 1024, format = Password, nullable = false)]
    password: Option<String>,
    /// A TOTP or recovery code, to add a second factor (meets `aal=2`).
    #[schema(max_length = 64, nullable = false)]
    code: Option<String>,
}

/// `POST /v1/step-up`: a stronger or fresher authentication for the caller's session.
#[utoipa::path(
    post, path = "/v1/step-up", operation_id = "stepUp", tag = "sessions",
    summary = "Step the session up with the password, a code, or both",
    description = "Checks what is given and starts a new session authenticated by the old \
        session's methods and these (same delivery as the request); the old session ends. \
        Answer to a `step_up_required` problem.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    request_body(content((StepUpBody = "application/json"))),
    responses(
        (status = 200, body = NewCredentials, description = "The new session.",
            headers(
                ("Set-Cookie" = String, description = "The session cookie (cookie delivery only)."),
                ("Cache-Control" = String,
                    description = "`no-store`: the response carries a token or session data."),
            )),
        BodyProblems,
        SessionProblems,
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Wrong password or code (the session stays valid), or sent \
                cross-site. Problem codes: `invalid_credentials`, `invalid_code`, \
                `cross_site_request`."),
        (status = 429, body = ProblemBody, content_type = "application/problem+json",
            description = "Too many wrong passwords or codes. Problem code: `rate_limited`.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
)]
async fn step_up(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<StepUpBody>,
) -> Result<Response, Problem> {
    let delivery = auth.delivery();
    let credentials = state
        .service
        .step_up(
            &auth.identity,
            body.password.as_deref(),
            body.code.as_deref(),
            delivery,
            client,
        )
        .await
        .map_err(|e| auth.proof_refused(e))?;
    Ok(credentials_response(&state, delivery, &credentials))
}

// ------------------------------------------------------------------------ helpers

/// The client of a request that starts a session, with the DPoP key its proof binds the new
/// tokens to (see [`crate::service::Tessera::binding_for_login`]).
pub(super) async fn bound_client(
    state: &AppState,
    mut client: ClientInfo,
    proof: &RequestProof,
    delivery: Delivery,
) -> Result<ClientInfo, Problem> {
    let presented = proof.presented()?;
    client.dpop_jkt = state
        .service
        .binding_for_login(presented.as_ref(), delivery)
        .await
        .map_err(|e| Problem::from(e).at_token_endpoint())?;
    Ok(client)
}

/// The response to a login, refresh or password change, shaped by delivery.
pub(super) fn credentials_response(
    state: &AppState,
    delivery: Delivery,
    credentials: &Credentials,
) -> Response {
    let now = state.service.now();
    match delivery {
        Delivery::Cookie => {
            let mut headers = HeaderMap::new();
            let max_age = super::dbsc::issue_cookie(state, &mut headers, credentials);
            let body = NewCredentials::Cookie(CookieSession {
                session_id: credentials.session_id.to_string(),
                expires_in: max_age,
            });
            (headers, Json(body)).into_response()
        }
        Delivery::Bearer => Json(NewCredentials::Bearer(BearerTokens {
            access_token: credentials.access_token.clone(),
            // RFC 9449 §5: a bound token says so, and the client must present it as such.
            token_type: if credentials.jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: (credentials.access_expires_at - now).max(0),
            refresh_token: credentials.refresh_token.clone(),
            refresh_expires_in: (credentials.session_expires_at - now).max(0),
            session_id: credentials.session_id.to_string(),
        }))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthz_body_is_health_serialised() {
        let body = serde_json::to_vec(&HealthBody { status: Fine::Ok }).unwrap();
        assert_eq!(body, HEALTHY);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
