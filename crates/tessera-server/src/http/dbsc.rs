//! Device Bound Session Credentials (W3C DBSC draft) over HTTP: the registration offered with
//! every new session cookie (`Secure-Session-Registration`), `POST /v1/dbsc/registration` and
//! `POST /v1/dbsc/refresh`. The rules are the service's (`crate::service::dbsc`); browsers
//! without DBSC ignore the header and keep their ordinary cookie.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Via};
use super::openapi::StoreUnavailable;
use super::problem::{Problem, ProblemBody};
use crate::service::{ClientInfo, Credentials, DBSC_REFRESH_PATH, DeviceRefresh, ServiceError};

const REGISTRATION: HeaderName = HeaderName::from_static("secure-session-registration");
const RESPONSE: HeaderName = HeaderName::from_static("secure-session-response");
const CHALLENGE: HeaderName = HeaderName::from_static("secure-session-challenge");
const SESSION_ID: HeaderName = HeaderName::from_static("sec-secure-session-id");

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(refresh))
}

/// Sets the cookie carrying `credentials` on a response, and offers the browser a DBSC
/// registration for its session when DBSC is on. Returns the cookie's `Max-Age`.
pub(super) fn issue_cookie(
    state: &AppState,
    headers: &mut HeaderMap,
    credentials: &Credentials,
) -> i64 {
    let max_age = state
        .http
        .cookie
        .issue(headers, credentials, state.service.now());
    if let Some(offer) = state.service.dbsc_offer(credentials)
        && let Ok(value) = HeaderValue::from_str(&offer)
    {
        headers.insert(REGISTRATION, value);
    }
    max_age
}

/// How the browser keeps a device-bound session (the draft's "session instructions").
#[derive(Serialize, ToSchema)]
pub(super) struct SessionInstructions {
    session_identifier: String,
    refresh_url: &'static str,
    scope: SessionScope,
    credentials: Vec<BoundCookie>,
}

/// The origin a device-bound session covers.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionScope {
    /// The origin, when tessera knows the one it is reached at.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    origin: Option<String>,
    /// Subdomains are not covered.
    include_site: bool,
}

/// The cookie a device-bound session keeps alive.
#[derive(Serialize, ToSchema)]
pub(super) struct BoundCookie {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    attributes: String,
}

fn instructions(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    credentials: &Credentials,
) -> Response {
    let mut response_headers = HeaderMap::new();
    issue_cookie(state, &mut response_headers, credentials);
    let body = SessionInstructions {
        session_identifier: credentials.session_id.to_string(),
        refresh_url: DBSC_REFRESH_PATH,
        scope: SessionScope {
            origin: super::ops::public_base(state, headers, extensions),
            include_site: false,
        },
        credentials: vec![BoundCookie {
            kind: "cookie",
            name: state.http.cookie.name(),
            attributes: state.http.cookie.attribute_list(),
        }],
    };
    (response_headers, axum::Json(body)).into_response()
}

/// The `Secure-Session-Response` of a request, if it has exactly one.
fn session_response(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let mut values = headers.get_all(RESPONSE).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(Some)
            .map_err(|_| Problem::bad_request("Secure-Session-Response is not text")),
        (Some(_), Some(_)) => Err(Problem::bad_request("Secure-Session-Response is repeated")),
    }
}

/// `POST /v1/dbsc/registration`: a browser registers its key for the session of its cookie.
#[utoipa::path(
    post, path = "/v1/dbsc/registration", operation_id = "registerDeviceBoundSession",
    tag = "sessions",
    summary = "Bind the cookie session to a browser key (DBSC)",
    description = "Called by a browser that supports Device Bound Session Credentials, after a \
        response offered it `Secure-Session-Registration`. Starts a session bound to the \
        browser's key (with the same sign-in) and ends the cookie's session; the new cookie \
        lives `access_token_lifetime` and is renewed at `/v1/dbsc/refresh`. See \
        docs/bound-tokens.md.",
    security(("cookieAuth" = [])),
    params(("Secure-Session-Response" = String, Header,
        description = "A `dbsc+jwt` signed by the browser's new key, the challenge as `jti`.")),
    responses(
        (status = 200, body = SessionInstructions,
            description = "Bound: the new cookie is in `Set-Cookie`.",
            headers(("Set-Cookie" = String, description = "The device-bound session cookie."))),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "No session cookie, or not a valid one. Problem codes: \
                `unauthenticated`, `invalid_token`, `token_expired`, `token_revoked`."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "The response is missing or not valid (a challenge of another \
                session, expired or answered before; a bad signature), or the session is bound \
                already. Problem code: `forbidden`."),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "DBSC is off (`dbsc = false`). Problem code: `not_found`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn register(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, _) = request.into_parts();
    if !state.service.dbsc_enabled() {
        return Err(ServiceError::Dbsc(crate::service::DbscRefusal::Off).into());
    }
    if auth.via != Via::Cookie {
        return Err(ServiceError::Dbsc(crate::service::DbscRefusal::NotBindable).into());
    }
    let response = session_response(&parts.headers)?.ok_or_else(|| {
        Problem::from(ServiceError::Dbsc(crate::service::DbscRefusal::Response(
            "Secure-Session-Response is missing".into(),
        )))
    })?;
    let credentials = state
        .service
        .register_device(&auth.identity, response, client)
        .await?;
    Ok(instructions(
        &state,
        &parts.headers,
        &parts.extensions,
        &credentials,
    ))
}

/// `POST /v1/dbsc/refresh`: a browser renews a device-bound session's cookie.
#[utoipa::path(
    post, path = "/v1/dbsc/refresh", operation_id = "refreshDeviceBoundSession",
    tag = "sessions",
    summary = "Renew a device-bound session's cookie (DBSC)",
    description = "Without `Secure-Session-Response`: 403 with a challenge \
        (`Secure-Session-Challenge`). With a signature by the session's key over a challenge \
        issued for it: the next cookie.",
    params(
        ("Sec-Secure-Session-Id" = String, Header, pattern = "^[A-Za-z0-9_-]{1,128}$",
            description = "The session's id."),
        ("Secure-Session-Response" = Option<String>, Header,
            description = "A `dbsc+jwt` signed by the session's key, the challenge as `jti`."),
    ),
    responses(
        (status = 200, body = SessionInstructions,
            description = "Renewed: the new cookie is in `Set-Cookie`.",
            headers(("Set-Cookie" = String, description = "The device-bound session cookie."))),
        (status = 400, body = ProblemBody, content_type = "application/problem+json",
            description = "`Sec-Secure-Session-Id` is missing or not a session id. Problem \
                code: `bad_request`."),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "The session has ended. Problem codes: `token_expired`, \
                `token_revoked`."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "A challenge to sign (in `Secure-Session-Challenge`), or a response \
                that is not valid. Problem code: `forbidden`.",
            headers(("Secure-Session-Challenge" = String,
                description = "`\"<challenge>\";id=\"<session id>\"`"))),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "No device-bound session by that id, or DBSC is off. Problem code: \
                `not_found`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, _) = request.into_parts();
    let sid = parts
        .headers
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| {
            Problem::bad_request("Sec-Secure-Session-Id is missing or not a session id")
        })?;
    let response = session_response(&parts.headers)?;
    match state.service.refresh_device(sid, response, client).await? {
        DeviceRefresh::Challenge(challenge) => {
            let mut answer = Problem::new(
                super::problem::ProblemCode::Forbidden,
                "sign the challenge with the session's key",
            )
            .into_response();
            if let Some(value) = tessera_core::dbsc::challenge_header(&challenge, sid)
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                answer.headers_mut().insert(CHALLENGE, value);
            }
            answer
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(answer)
        }
        DeviceRefresh::Renewed(credentials) => Ok(instructions(
            &state,
            &parts.headers,
            &parts.extensions,
            &credentials,
        )),
    }
}
