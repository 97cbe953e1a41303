//! The admin API (`/v1/admin/...`): users, sessions, keys and the audit log, for holders of
//! the `admin` role. It calls the same service functions as the command line.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_store::{AuditQuery, Session, User};

use super::AppState;
use super::extract::{Authenticated, Body, Via};
use super::problem::Problem;
use super::query::QueryParams;
use crate::clock::rfc3339;
use crate::service::{Actor, ClientInfo, ServiceError, UserPatch, event_json};

/// The role that may use the admin API.
pub const ADMIN_ROLE: &str = "admin";

/// Largest page of users or audit events.
const MAX_PAGE: usize = 1000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route(
            "/v1/admin/users/{username}",
            get(show_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/v1/admin/users/{username}/sessions",
            get(user_sessions).delete(revoke_user_sessions),
        )
        .route("/v1/admin/sessions/{id}", delete(revoke_session))
        .route("/v1/admin/keys", get(list_keys))
        .route("/v1/admin/keys/rotate", post(rotate_key))
        .route("/v1/admin/audit", get(audit))
}

/// An authenticated request by a holder of the `admin` role, with its audit context.
struct Admin {
    ctx: Actor,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let auth = Authenticated::from_request_parts(parts, state).await?;
        if !auth.identity.roles.iter().any(|r| r == ADMIN_ROLE) {
            let problem =
                Problem::from(ServiceError::Forbidden("the admin role is required".into()));
            return Err(problem.for_bearer(auth.via == Via::Bearer));
        }
        let client = ClientInfo::from_request_parts(parts, state).await?;
        Ok(Admin {
            ctx: Actor::user(&auth.identity.username, client),
        })
    }
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "roles": user.roles,
        "permissions": user.permissions,
        "disabled": user.disabled,
        "created_at": rfc3339(user.created_at),
    })
}

fn session_json(session: &Session) -> Value {
    json!({
        "id": session.id,
        "user_id": session.user_id,
        "created_at": rfc3339(session.times.created_at),
        "last_seen_at": rfc3339(session.times.last_seen_at),
        "idle_expires_at": rfc3339(session.times.idle_expires_at),
        "expires_at": rfc3339(session.times.absolute_expires_at),
        "ip": session.ip,
        "user_agent": session.user_agent,
    })
}

/// `GET /v1/admin/users?limit=N&after=USERNAME`: users ordered by name, a page at a time.
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    query: QueryParams,
) -> Result<Json<Value>, Problem> {
    let limit = query
        .number::<usize>("limit")?
        .unwrap_or(100)
        .clamp(1, MAX_PAGE);
    let after = query.single("after")?.map(str::to_owned);
    let users = state.service.users().await?;
    let page: Vec<Value> = users
        .iter()
        .filter(|u| {
            after
                .as_ref()
                .is_none_or(|a| u.username.as_str() > a.as_str())
        })
        .take(limit)
        .map(user_json)
        .collect();
    let next = if page.len() == limit {
        page.last()
            .and_then(|u| u["username"].as_str())
            .map(str::to_owned)
    } else {
        None
    };
    Ok(Json(json!({ "users": page, "next": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    Body(body): Body<NewUser>,
) -> Result<Response, Problem> {
    let user = state
        .service
        .create_user(
            &admin.ctx,
            &body.username,
            &body.password,
            body.roles,
            body.permissions,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

async fn show_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(user_json(&state.service.user(&username).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    disabled: Option<bool>,
    password: Option<String>,
}

async fn update_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
    Body(body): Body<Patch>,
) -> Result<Json<Value>, Problem> {
    let patch = UserPatch {
        roles: body.roles,
        permissions: body.permissions,
        disabled: body.disabled,
        password: body.password,
    };
    Ok(Json(user_json(
        &state
            .service
            .update_user(&admin.ctx, &username, patch)
            .await?,
    )))
}

async fn delete_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<StatusCode, Problem> {
    state.service.remove_user(&admin.ctx, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_sessions(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Value>, Problem> {
    let sessions = state.service.list_sessions(Some(&username)).await?;
    Ok(Json(
        json!({ "sessions": sessions.iter().map(session_json).collect::<Vec<_>>() }),
    ))
}

async fn revoke_user_sessions(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Value>, Problem> {
    let revoked = state.service.revoke_user(&admin.ctx, &username).await?;
    Ok(Json(json!({ "revoked": revoked })))
}

async fn revoke_session(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.service.revoke_session(&admin.ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, Problem> {
    let keys: Vec<Value> = state
        .service
        .signing_keys()
        .await?
        .iter()
        .map(|k| {
            json!({
                "kid": k.kid,
                "algorithm": k.algorithm.jose_name(),
                "created_at": rfc3339(k.created_at),
                "retired_at": k.retired_at.map(rfc3339),
                "current": k.retired_at.is_none(),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn rotate_key(State(state): State<AppState>, admin: Admin) -> Result<Json<Value>, Problem> {
    let key = state.service.rotate_key(&admin.ctx).await?;
    Ok(Json(
        json!({ "kid": key.kid, "algorithm": key.algorithm.jose_name(), "created_at": rfc3339(key.created_at) }),
    ))
}

/// `GET /v1/admin/audit?user=&kind=&since=&until=&before=&limit=` (times in Unix seconds).
async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    q: QueryParams,
) -> Result<Json<Value>, Problem> {
    let query = AuditQuery {
        user: q.single("user")?.map(str::to_owned),
        kind: q.single("kind")?.map(str::to_owned),
        since: q.number("since")?,
        until: q.number("until")?,
        before_id: q.number("before")?,
        limit: q.number::<u32>("limit")?.unwrap_or(100),
    };
    let events = state.service.audit_events(query).await?;
    Ok(Json(
        json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() }),
    ))
}
