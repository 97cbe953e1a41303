//! Route handlers: thin translations between HTTP and the service layer.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Authenticated, Body, Via};
use super::problem::Problem;
use super::query::QueryParams;
use crate::clock::rfc3339;
use crate::config::TokenFormat;
use crate::service::{ClientInfo, Credentials, Delivery, ServiceError};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/refresh", post(refresh))
        .route("/v1/logout", post(logout))
        .route("/v1/session", get(session))
        .route("/v1/sessions", get(list_sessions).delete(revoke_sessions))
        .route("/v1/sessions/{id}", delete(revoke_session))
        .route("/v1/password", post(change_password))
        .route("/v1/verify", any(verify_unless_trace))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The `Allow` of `/v1/verify`'s 405: the methods its API document lists.
const VERIFY_ALLOW: &str = "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS";

/// `/v1/verify` on the methods its API document lists, and on any other but `TRACE` and
/// `CONNECT` when nginx's `auth_request` asks (it carries `X-Original-URI`): nginx keeps the
/// protected request's method, WebDAV's `PROPFIND` included, so verify must answer them.
///
/// # Security
/// `TRACE` and `CONNECT` always get 405, as on every other route: no proxy passes them on for
/// a decision, and `TRACE`, which echoes the request, is how cross-site tracing reads
/// credentials.
async fn verify_unless_trace(state: State<AppState>, request: Request) -> Response {
    let method = request.method();
    let documented = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method);
    let from_nginx = request
        .headers()
        .contains_key(super::forward_auth::X_ORIGINAL_URI);
    let never = *method == Method::TRACE || *method == Method::CONNECT;
    if never || !(documented || from_nginx) {
        let mut response = Problem::method_not_allowed().into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(VERIFY_ALLOW));
        return response;
    }
    super::forward_auth::verify(state, request).await
}

/// The body of `POST /v1/login` (JSON or form-encoded).
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// `cookie` (default) or `bearer`.
    pub delivery: Option<Delivery>,
    /// Where a browser's form login returns to (checked against `redirect_origins`).
    pub rd: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    Body(body): Body<LoginBody, true>,
) -> Result<Response, Problem> {
    let browser = super::pages::is_browser_form(&headers);
    // A browser's form always gets a cookie.
    let delivery = if browser {
        Delivery::Cookie
    } else {
        body.delivery.unwrap_or(Delivery::Cookie)
    };
    let previous = state.http.cookie.read(&headers);
    let result = state
        .service
        .login(
            &body.username,
            &body.password,
            delivery,
            client,
            previous.as_deref(),
        )
        .await;
    if browser {
        return Ok(super::pages::after_form_login(
            &state,
            body.rd.as_deref(),
            result,
        ));
    }
    Ok(credentials_response(&state, delivery, &result?))
}

/// The body of `POST /v1/refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token to exchange.
    pub refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(body): Body<RefreshBody>,
) -> Result<Response, Problem> {
    let credentials = state.service.refresh(&body.refresh_token, client).await?;
    Ok(credentials_response(&state, Delivery::Bearer, &credentials))
}

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

async fn session(State(state): State<AppState>, auth: Authenticated) -> Result<Response, Problem> {
    let id = &auth.identity;
    let (created_at, expires_at, idle_expires_at) = match id.times {
        Some(t) => (
            Some(t.created_at),
            Some(t.absolute_expires_at),
            Some(t.idle_expires_at),
        ),
        None => (None, id.token_expires_at, None),
    };
    let body = json!({
        "session_id": id.session_id,
        "user": { "id": id.user_id, "username": id.username },
        "roles": id.roles,
        "permissions": id.permissions,
        "created_at": created_at.map(rfc3339),
        "expires_at": expires_at.map(rfc3339),
        "idle_expires_at": idle_expires_at.map(rfc3339),
    });
    let mut response = Json(body).into_response();
    renew_cookie_jwt(&state, &auth, &mut response)?;
    Ok(response)
}

async fn list_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Value>, Problem> {
    let sessions = state.service.sessions_of(&auth.identity.user_id).await?;
    let list: Vec<Value> = sessions
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "created_at": rfc3339(s.times.created_at),
                "last_seen_at": rfc3339(s.times.last_seen_at),
                "ip": s.ip,
                "user_agent": s.user_agent,
                "current": s.id == auth.identity.session_id,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": list })))
}

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
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<PasswordBody>,
) -> Result<Response, Problem> {
    let delivery = match auth.via {
        Via::Cookie => Delivery::Cookie,
        Via::Bearer => Delivery::Bearer,
    };
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
        .map_err(|e| match e {
            // The session is fine; only the proof was wrong. A 401 would make clients drop it.
            ServiceError::InvalidCredentials => Problem::new(
                StatusCode::FORBIDDEN,
                "invalid_credentials",
                "Invalid credentials",
                "the current password is wrong",
            ),
            other => other.into(),
        })?;
    Ok(credentials_response(&state, delivery, &credentials))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.service.key_ring().jwks()).into_response();
    // Public keys only: caching is safe, and short enough to pick up a rotation quickly.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers and the signing keys work (sign and verify a probe).
async fn readyz(State(state): State<AppState>) -> Response {
    if state.service.store().ping().await.is_err() {
        return Problem::from(ServiceError::Unavailable).into_response();
    }
    if !state.service.key_ring().self_check() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "Not ready",
            "the signing keys are not loaded",
        )
        .into_response();
    }
    Json(json!({ "status": "ready", "checks": { "store": "ok", "keys": "ok" } })).into_response()
}

// ------------------------------------------------------------------------ helpers

/// The response to a login, refresh or password change, shaped by delivery.
fn credentials_response(
    state: &AppState,
    delivery: Delivery,
    credentials: &Credentials,
) -> Response {
    let now = state.service.now();
    let access_expires_in = (credentials.access_expires_at - now).max(0);
    match delivery {
        Delivery::Cookie => {
            let mut headers = HeaderMap::new();
            let max_age = state.http.cookie.issue(&mut headers, credentials, now);
            let body = Json(json!({
                "session_id": credentials.session_id,
                "expires_in": max_age,
            }));
            (headers, body).into_response()
        }
        Delivery::Bearer => Json(json!({
            "access_token": credentials.access_token,
            "token_type": "Bearer",
            "expires_in": access_expires_in,
            "refresh_token": credentials.refresh_token,
            "refresh_expires_in": (credentials.session_expires_at - now).max(0),
            "session_id": credentials.session_id,
        }))
        .into_response(),
    }
}

/// Cookie sessions with JWT access tokens cannot call `/v1/refresh`; renew them on use.
pub(super) fn renew_cookie_jwt(
    state: &AppState,
    auth: &Authenticated,
    response: &mut Response,
) -> Result<(), Problem> {
    if auth.via != Via::Cookie || auth.identity.format != TokenFormat::Jwt {
        return Ok(());
    }
    if let Some(credentials) = state.service.renew_jwt_if_due(&auth.identity)? {
        state
            .http
            .cookie
            .issue(response.headers_mut(), &credentials, state.service.now());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
