//! The admin API (`/v1/admin/...`): users, sessions, keys and the audit log, for holders of
//! the `admin` role. It calls the same service functions as the command line.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_store::{AuditQuery, Session, User};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Body, Via};
use super::factors::Factors;
use super::openapi::{
    AdminProblems, BadRequest, NotFound, PermissionName, RoleName, UnsupportedMediaType, Username,
    date_time, optional_date_time,
};
use super::problem::{Problem, ProblemBody, ProblemCode};
use super::query::QueryParams;
use crate::clock::rfc3339;
use crate::service::{Actor, ClientInfo, EventKind, ServiceError, UserPatch, event_json};

/// The role that may use the admin API.
pub(super) const ADMIN_ROLE: &str = "admin";

/// Largest page of users or audit events.
const MAX_PAGE: usize = 1000;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(show_user, update_user, delete_user))
        .routes(routes!(user_sessions, revoke_user_sessions))
        .routes(routes!(user_factors, reset_user_factors))
        .routes(routes!(revoke_session))
        .routes(routes!(list_keys))
        .routes(routes!(rotate_key))
        .routes(routes!(audit))
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
        // Changes need a recent sign-in ("sudo mode"): an old or stolen admin session can read
        // but must step up before it changes users, sessions or keys.
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            state
                .service
                .require_recent_authentication(&auth.identity)
                .map_err(|e| auth.problem(e))?;
        }
        let client = ClientInfo::from_request_parts(parts, state).await?;
        Ok(Admin {
            ctx: Actor::user(&auth.identity.username, client),
        })
    }
}

/// A user, as the admin API shows it (never the password hash).
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
struct UserView {
    id: String,
    username: String,
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<String>,
    #[schema(value_type = Vec<PermissionName>)]
    permissions: Vec<String>,
    disabled: bool,
    #[schema(schema_with = date_time)]
    created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView {
            id: user.id.to_string(),
            username: user.username.clone(),
            roles: user.roles.clone(),
            permissions: user.permissions.clone(),
            disabled: user.disabled,
            created_at: rfc3339(user.created_at),
        }
    }
}

/// Any user's session, as the admin API shows it.
#[derive(Serialize, ToSchema)]
struct AdminSession {
    id: String,
    user_id: String,
    #[schema(schema_with = date_time)]
    created_at: String,
    #[schema(schema_with = date_time)]
    last_seen_at: String,
    #[schema(schema_with = date_time)]
    idle_expires_at: String,
    #[schema(schema_with = date_time)]
    expires_at: String,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl From<&Session> for AdminSession {
    fn from(session: &Session) -> AdminSession {
        AdminSession {
            id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            created_at: rfc3339(session.times.created_at),
            last_seen_at: rfc3339(session.times.last_seen_at),
            idle_expires_at: rfc3339(session.times.idle_expires_at),
            expires_at: rfc3339(session.times.absolute_expires_at),
            ip: session.ip.clone(),
            user_agent: session.user_agent.clone(),
        }
    }
}

/// The query of `GET /v1/admin/users`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct UserPageQuery {
    /// Page size; 0 counts as 1 and more than 1000 as 1000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64, default = 100)]
    limit: Option<u64>,
    /// Only users whose name sorts after this.
    after: Option<String>,
}

impl UserPageQuery {
    fn read(query: &QueryParams) -> Result<UserPageQuery, Problem> {
        Ok(UserPageQuery {
            limit: query.number("limit")?,
            after: query.single("after")?.map(str::to_owned),
        })
    }
}

/// A page of users.
#[derive(Serialize, ToSchema)]
struct UserPage {
    users: Vec<UserView>,
    next: Option<String>,
}

/// List users, ordered by username, a page at a time
#[utoipa::path(
    get, path = "/v1/admin/users", operation_id = "adminListUsers", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(UserPageQuery),
    responses(
        (status = 200, body = inline(UserPage),
            description = "A page of users; `next` is the `after` value of the next page, \
                or null."),
        AdminProblems,
        (status = 400, response = BadRequest),
    ),
)]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    query: QueryParams,
) -> Result<Json<UserPage>, Problem> {
    let query = UserPageQuery::read(&query)?;
    let limit = query
        .limit
        .map_or(100, |limit| usize::try_from(limit).unwrap_or(MAX_PAGE))
        .clamp(1, MAX_PAGE);
    let users = state.service.users().await?;
    let users: Vec<UserView> = users
        .iter()
        .filter(|u| {
            query
                .after
                .as_ref()
                .is_none_or(|a| u.username.as_str() > a.as_str())
        })
        .take(limit)
        .map(UserView::from)
        .collect();
    let next = if users.len() == limit {
        users.last().map(|u| u.username.clone())
    } else {
        None
    };
    Ok(Json(UserPage { users, next }))
}

/// The body of `POST /v1/admin/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[schema(value_type = Username)]
    username: String,
    #[schema(min_length = 8, max_length = 1024, format = Password)]
    password: String,
    #[serde(default)]
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<PermissionName>)]
    permissions: Vec<String>,
}

/// Create a user
#[utoipa::path(
    post, path = "/v1/admin/users", operation_id = "adminCreateUser", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    request_body(content((inline(NewUser) = "application/json"))),
    responses(
        (status = 201, body = UserView, description = "Created."),
        AdminProblems,
        (status = 400, response = BadRequest),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "The username is taken (`conflict`)."),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
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
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

/// Show a user
#[utoipa::path(
    get, path = "/v1/admin/users/{username}", operation_id = "adminShowUser", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, body = UserView, description = "The user."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn show_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<UserView>, Problem> {
    Ok(Json(UserView::from(&state.service.user(&username).await?)))
}

/// The body of `PATCH /v1/admin/users/{username}`: `null` or absent leaves a field unchanged.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Patch {
    /// `null` or absent: unchanged.
    #[schema(value_type = Option<Vec<RoleName>>)]
    roles: Option<Vec<String>>,
    /// `null` or absent: unchanged.
    #[schema(value_type = Option<Vec<PermissionName>>)]
    permissions: Option<Vec<String>>,
    /// `null` or absent: unchanged.
    disabled: Option<bool>,
    /// `null` or absent: unchanged.
    #[schema(min_length = 8, max_length = 1024, format = Password)]
    password: Option<String>,
}

/// Change roles, permissions, disabled or password; revokes all the user's sessions
#[utoipa::path(
    patch, path = "/v1/admin/users/{username}", operation_id = "adminUpdateUser", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    request_body(content((inline(Patch) = "application/json"))),
    responses(
        (status = 200, body = UserView, description = "The updated user."),
        AdminProblems,
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
async fn update_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
    Body(body): Body<Patch>,
) -> Result<Json<UserView>, Problem> {
    let patch = UserPatch {
        roles: body.roles,
        permissions: body.permissions,
        disabled: body.disabled,
        password: body.password,
    };
    let user = state
        .service
        .update_user(&admin.ctx, &username, patch)
        .await?;
    Ok(Json(UserView::from(&user)))
}

/// Delete a user and all their sessions
#[utoipa::path(
    delete, path = "/v1/admin/users/{username}", operation_id = "adminDeleteUser", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 204, description = "Deleted."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn delete_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<StatusCode, Problem> {
    state.service.remove_user(&admin.ctx, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's second factors
#[utoipa::path(
    get, path = "/v1/admin/users/{username}/factors", operation_id = "adminUserFactors",
    tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, body = Factors,
            description = "TOTP state, recovery codes left, passkeys."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn user_factors(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Factors>, Problem> {
    let status = state.service.user_factors(&username).await?;
    Ok(Json(Factors::from(status)))
}

/// Reset a user's second factors (a lost phone); revokes all their sessions
#[utoipa::path(
    delete, path = "/v1/admin/users/{username}/factors", operation_id = "adminResetFactors",
    tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 204, description = "Every factor removed and every session revoked; the \
            user signs in with the password and enrols again."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn reset_user_factors(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<StatusCode, Problem> {
    state.service.reset_factors(&admin.ctx, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's sessions.
#[derive(Serialize, ToSchema)]
struct AdminSessionList {
    sessions: Vec<AdminSession>,
}

/// A user's live sessions
#[utoipa::path(
    get, path = "/v1/admin/users/{username}/sessions",
    operation_id = "adminUserSessions", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, body = inline(AdminSessionList), description = "Live sessions."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn user_sessions(
    State(state): State<AppState>,
    _admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<AdminSessionList>, Problem> {
    let sessions = state.service.list_sessions(Some(&username)).await?;
    Ok(Json(AdminSessionList {
        sessions: sessions.iter().map(AdminSession::from).collect(),
    }))
}

/// How many sessions were revoked.
#[derive(Serialize, ToSchema)]
struct Revoked {
    revoked: u64,
}

/// Revoke every session of a user
#[utoipa::path(
    delete, path = "/v1/admin/users/{username}/sessions",
    operation_id = "adminRevokeUserSessions", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, body = inline(Revoked), description = "How many were revoked."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn revoke_user_sessions(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Revoked>, Problem> {
    let revoked = state.service.revoke_user(&admin.ctx, &username).await?;
    Ok(Json(Revoked { revoked }))
}

/// Revoke any session
#[utoipa::path(
    delete, path = "/v1/admin/sessions/{id}", operation_id = "adminRevokeSession", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked."),
        AdminProblems,
        (status = 404, response = NotFound),
    ),
)]
async fn revoke_session(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.service.revoke_session(&admin.ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A signing key's public metadata.
#[derive(Serialize, ToSchema)]
struct KeyInfo {
    kid: String,
    algorithm: &'static str,
    #[schema(schema_with = date_time)]
    created_at: String,
    #[schema(schema_with = optional_date_time)]
    retired_at: Option<String>,
    current: bool,
}

/// The signing keys.
#[derive(Serialize, ToSchema)]
struct KeyList {
    keys: Vec<KeyInfo>,
}

/// Signing keys (public metadata only)
#[utoipa::path(
    get, path = "/v1/admin/keys", operation_id = "adminListKeys", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = inline(KeyList), description = "Keys, oldest first."),
        AdminProblems,
    ),
)]
async fn list_keys(State(state): State<AppState>, _admin: Admin) -> Result<Json<KeyList>, Problem> {
    let keys = state
        .service
        .signing_keys()
        .await?
        .iter()
        .map(|k| KeyInfo {
            kid: k.kid.clone(),
            algorithm: k.algorithm.jose_name(),
            created_at: rfc3339(k.created_at),
            retired_at: k.retired_at.map(rfc3339),
            current: k.retired_at.is_none(),
        })
        .collect();
    Ok(Json(KeyList { keys }))
}

/// The key a rotation made.
#[derive(Serialize, ToSchema)]
struct NewKey {
    kid: String,
    algorithm: &'static str,
    #[schema(schema_with = date_time)]
    created_at: String,
}

/// Rotate the signing key; the previous one verifies until its tokens expire
#[utoipa::path(
    post, path = "/v1/admin/keys/rotate", operation_id = "adminRotateKey", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = inline(NewKey), description = "The new key."),
        AdminProblems,
    ),
)]
async fn rotate_key(State(state): State<AppState>, admin: Admin) -> Result<Json<NewKey>, Problem> {
    let key = state.service.rotate_key(&admin.ctx).await?;
    Ok(Json(NewKey {
        kid: key.kid,
        algorithm: key.algorithm.jose_name(),
        created_at: rfc3339(key.created_at),
    }))
}

/// The audit kinds, from the service: the query's `kind` and an event's `kind`.
fn audit_kind_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(EventKind::ALL.iter().map(|k| k.as_str())))
        .into()
}

/// An audit event kind: the service's [`EventKind`]s.
struct AuditKind;

impl PartialSchema for AuditKind {
    fn schema() -> RefOr<Schema> {
        audit_kind_schema()
    }
}

impl ToSchema for AuditKind {}

/// One audit event (the command line's `tessera audit` writes the same).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Documents the body `event_json` builds.
struct AuditEvent {
    id: i64,
    #[schema(schema_with = date_time)]
    at: String,
    #[schema(schema_with = audit_kind_schema)]
    kind: String,
    actor: Option<String>,
    subject: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

/// Audit events.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Documents the body `audit` builds.
struct AuditEvents {
    events: Vec<AuditEvent>,
}

/// The query of `GET /v1/admin/audit` (times in Unix seconds).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Events where this username acted or was acted upon.
    user: Option<String>,
    /// Only this kind; any other value is refused with 400 `bad_request`.
    #[param(value_type = Option<AuditKind>, inline)]
    kind: Option<EventKind>,
    /// Unix seconds, inclusive.
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    since: Option<i64>,
    /// Unix seconds, exclusive.
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    until: Option<i64>,
    /// Only events with a smaller id (paging).
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    before: Option<i64>,
    /// At most this many; 0 counts as 1 and more than 1000 as 1000.
    #[param(minimum = 0, maximum = 4294967295_u64, default = 100)]
    limit: Option<u32>,
}

impl AuditParams {
    fn read(q: &QueryParams) -> Result<AuditParams, Problem> {
        Ok(AuditParams {
            user: q.single("user")?.map(str::to_owned),
            kind: q
                .single("kind")?
                .map(str::parse::<EventKind>)
                .transpose()
                .map_err(|unknown| Problem::new(ProblemCode::BadRequest, unknown.to_string()))?,
            since: q.number("since")?,
            until: q.number("until")?,
            before: q.number("before")?,
            limit: q.number("limit")?,
        })
    }
}

/// Audit events, newest first
#[utoipa::path(
    get, path = "/v1/admin/audit", operation_id = "adminAudit", tag = "admin",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(AuditParams),
    responses(
        (status = 200, body = inline(AuditEvents), description = "Events."),
        AdminProblems,
        (status = 400, response = BadRequest),
    ),
)]
async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    q: QueryParams,
) -> Result<Json<Value>, Problem> {
    let params = AuditParams::read(&q)?;
    let query = AuditQuery {
        user: params.user,
        kind: params.kind,
        since: params.since,
        until: params.until,
        before_id: params.before,
        limit: params.limit.unwrap_or(100),
    };
    let events = state.service.audit_events(query).await?;
    Ok(Json(
        serde_json::json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() }),
    ))
}
