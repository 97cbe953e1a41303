//! `/v1/passkeys` (the caller's passkeys: register, list, rename, remove), and signing in and
//! stepping up with a passkey (`/v1/login/passkey`, `/v1/step-up/passkey`).
//!
//! Every ceremony has two calls: `…/options` (or `/v1/passkeys/registration`) answers with a
//! `ceremony` id and the `options` for `navigator.credentials.create`/`get`; the browser's
//! answer (`credential.toJSON()`) goes back with that id. The ceremony's state stays on the
//! server, works once, and expires after five minutes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Body, RequestProof};
use super::openapi::{BodyProblems, CrossSiteCookie, SessionProblems, StoreUnavailable};
use super::problem::{Problem, ProblemBody};
use super::routes::{NewCredentials, credentials_response, delivery_schema};
use crate::service::{Begun, ClientInfo, Delivery, PasskeyInfo};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_passkeys, register_passkey))
        .routes(routes!(begin_registration))
        .routes(routes!(rename_passkey, remove_passkey))
        .routes(routes!(begin_login))
        .routes(routes!(finish_login))
        .routes(routes!(begin_step_up))
        .routes(routes!(finish_step_up))
}

/// One of the caller's passkeys.
#[derive(Serialize, ToSchema)]
#[schema(as = Passkey)]
pub(super) struct PasskeyView {
    /// The credential id, base64url: how the API names the passkey.
    id: String,
    /// The name given at registration (or since).
    name: String,
    /// When it was registered (Unix seconds).
    created_at: i64,
    /// When it last signed in or stepped up (Unix seconds), if ever.
    last_used_at: Option<i64>,
}

impl From<PasskeyInfo> for PasskeyView {
    fn from(info: PasskeyInfo) -> PasskeyView {
        PasskeyView {
            id: info.id,
            name: info.name,
            created_at: info.created_at,
            last_used_at: info.last_used_at,
        }
    }
}

/// The caller's passkeys.
#[derive(Serialize, ToSchema)]
struct PasskeyList {
    /// Oldest first.
    passkeys: Vec<PasskeyView>,
}

/// A ceremony begun: its id and the options for the browser.
#[derive(Serialize, ToSchema)]
struct CeremonyOptions {
    /// Send it back with the authenticator's answer; it works once, for five minutes.
    ceremony: String,
    /// WebAuthn options, `{"publicKey": {…}}`, with binary values in base64url: give
    /// `options.publicKey` to `PublicKeyCredential.parseCreationOptionsFromJSON` (or
    /// `parseRequestOptionsFromJSON`) and the result to `navigator.credentials.create`
    /// (or `get`).
    #[schema(value_type = Object)]
    options: serde_json::Value,
}

fn ceremony_options<T: Serialize>(begun: Begun<T>) -> Result<Response, Problem> {
    let options = serde_json::to_value(&begun.options).map_err(|e| {
        Problem::from(crate::service::ServiceError::internal_from(
            "encoding WebAuthn options",
            e,
        ))
    })?;
    let body = CeremonyOptions {
        ceremony: begun.ceremony,
        options,
    };
    // Never cached: `no-store` goes on every API answer (`protect`).
    Ok(Json(body).into_response())
}

const RECENT: &str = "The session's sign-in is older than `recent_authentication`: step up \
    first. Problem codes: `step_up_required`, or a `SessionProblems` code.";

#[utoipa::path(
    get, path = "/v1/passkeys", operation_id = "passkeys", tag = "passkeys",
    summary = "The caller's passkeys",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = PasskeyList, description = "The caller's passkeys, oldest first."),
        SessionProblems,
    ),
)]
async fn list_passkeys(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<PasskeyList>, Problem> {
    let passkeys = state
        .service
        .passkeys_of(&auth.identity)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(Json(PasskeyList {
        passkeys: passkeys.into_iter().map(PasskeyView::from).collect(),
    }))
}

#[utoipa::path(
    post, path = "/v1/passkeys/registration", operation_id = "beginPasskeyRegistration",
    tag = "passkeys",
    summary = "Begin registering a passkey",
    description = "Options for `navigator.credentials.create`: a discoverable credential with \
        user verification, excluding the caller's passkeys. Finish with `POST /v1/passkeys`. \
        Needs a recent sign-in.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = CeremonyOptions, description = "The ceremony and its options.",
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, response = CrossSiteCookie),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "The caller has as many passkeys as allowed. Problem code: `conflict`."),
    ),
)]
async fn begin_registration(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, Problem> {
    let begun = state
        .service
        .begin_passkey_registration(&auth.identity)
        .await
        .map_err(|e| auth.problem(e))?;
    ceremony_options(begun)
}

/// The body of `POST /v1/passkeys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasskeyRegistration)]
struct RegisterBody {
    /// The `ceremony` of `POST /v1/passkeys/registration`.
    #[schema(min_length = 22, max_length = 22, pattern = r"^[A-Za-z0-9_-]{22}$")]
    ceremony: String,
    /// A name for the passkey, 1 to 64 characters ("laptop", "phone"): no control
    /// characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// The browser's answer: `credential.toJSON()` of `navigator.credentials.create`
    /// (WebAuthn's `RegistrationResponseJSON`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

#[utoipa::path(
    post, path = "/v1/passkeys", operation_id = "registerPasskey", tag = "passkeys",
    summary = "Finish registering a passkey",
    description = "Checks the authenticator's answer to a registration begun by the same \
        session and stores the passkey. Needs a recent sign-in.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    request_body(content((RegisterBody = "application/json"))),
    responses(
        (status = 201, body = PasskeyView, description = "The passkey registered."),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "The ceremony is unknown, used, expired or another session's, or \
                the answer does not verify (the session stays valid); or sent cross-site, or \
                passkeys are off. Problem codes: `invalid_code`, `cross_site_request`, \
                `forbidden`."),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "The credential is registered already. Problem code: `conflict`."),
    ),
)]
async fn register_passkey(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<RegisterBody>,
) -> Result<Response, Problem> {
    let info = state
        .service
        .finish_passkey_registration(
            &auth.identity,
            &body.ceremony,
            &body.name,
            &body.credential,
            client,
        )
        .await
        .map_err(|e| auth.problem(e))?;
    Ok((StatusCode::CREATED, Json(PasskeyView::from(info))).into_response())
}

/// The body of `PATCH /v1/passkeys/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasskeyRename)]
struct RenameBody {
    /// The new name, 1 to 64 characters: no control characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

#[utoipa::path(
    patch, path = "/v1/passkeys/{id}", operation_id = "renamePasskey", tag = "passkeys",
    summary = "Rename one of the caller's passkeys",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("id" = String, Path, description = "The passkey's id (credential id, base64url).")),
    request_body(content((RenameBody = "application/json"))),
    responses(
        (status = 204, description = "Renamed."),
        BodyProblems,
        SessionProblems,
        (status = 403, response = CrossSiteCookie),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "The caller has no such passkey. Problem code: `not_found`."),
    ),
)]
async fn rename_passkey(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Body(body): Body<RenameBody>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .rename_passkey(&auth.identity, &id, &body.name)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/v1/passkeys/{id}", operation_id = "removePasskey", tag = "passkeys",
    summary = "Remove one of the caller's passkeys",
    description = "Needs a recent sign-in.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(("id" = String, Path, description = "The passkey's id (credential id, base64url).")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, response = CrossSiteCookie),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "The caller has no such passkey. Problem code: `not_found`."),
    ),
)]
async fn remove_passkey(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .service
        .remove_passkey(&auth.identity, &id, client)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/login/passkey/options", operation_id = "beginPasskeyLogin",
    tag = "passkeys",
    summary = "Begin signing in with a passkey",
    description = "Options for `navigator.credentials.get` with no credential listed: the \
        authenticator offers the passkeys it holds for this site, and verifies the user. \
        Finish with `POST /v1/login/passkey`.",
    responses(
        (status = 200, body = CeremonyOptions, description = "The ceremony and its options.",
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Sent cross-site, or passkeys are off (no relying party \
                configured). Problem codes: `cross_site_request`, `forbidden`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn begin_login(State(state): State<AppState>) -> Result<Response, Problem> {
    ceremony_options(state.service.begin_passkey_login().await?)
}

/// The body of `POST /v1/login/passkey`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasskeyLogin)]
struct LoginBody {
    /// The `ceremony` of `POST /v1/login/passkey/options`.
    #[schema(min_length = 22, max_length = 22, pattern = r"^[A-Za-z0-9_-]{22}$")]
    ceremony: String,
    /// The browser's answer: `credential.toJSON()` of `navigator.credentials.get`
    /// (WebAuthn's `AuthenticationResponseJSON`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
    /// The username, when the person typed one first: the passkey must be that user's.
    #[schema(max_length = 256, nullable = false)]
    username: Option<String>,
    /// `cookie` (default) or `bearer`.
    #[schema(schema_with = delivery_schema)]
    delivery: Option<Delivery>,
}

#[utoipa::path(
    post, path = "/v1/login/passkey", operation_id = "passkeyLogin", tag = "passkeys",
    summary = "Sign in with a passkey",
    description = "Checks the authenticator's answer; the credential names the user. Starts a \
        session signed in with the passkey (`amr` `hwk` or `swk`, and `user`: AAL2), delivered \
        as a login's; a live session cookie presented is ended.",
    request_body(content((LoginBody = "application/json"))),
    responses(
        (status = 200, body = NewCredentials, description = "A new session, as a login's.",
            headers(
                ("Set-Cookie" = String, description = "The session cookie (cookie delivery only)."),
                ("Cache-Control" = String,
                    description = "`no-store`: the response carries a token or session data."),
            )),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = "The ceremony is unknown, used or expired, the credential is not \
                registered or not the named user's, or the answer does not verify (a \
                signature counter that went backwards included). Problem code: \
                `invalid_credentials`."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Sent cross-site, or passkeys are off (no relying party \
                configured). Problem codes: `cross_site_request`, `forbidden`."),
        (status = 503, response = StoreUnavailable),
    ),
)]
async fn finish_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    proof: RequestProof,
    Body(body): Body<LoginBody>,
) -> Result<Response, Problem> {
    let delivery = body.delivery.unwrap_or(Delivery::Cookie);
    let client = super::routes::bound_client(&state, client, &proof, delivery).await?;
    let previous = state.http.cookie.read(&headers);
    let credentials = state
        .service
        .finish_passkey_login(
            &body.ceremony,
            &body.credential,
            body.username.as_deref(),
            delivery,
            client,
            previous.as_deref(),
        )
        .await?;
    Ok(credentials_response(&state, delivery, &credentials))
}

#[utoipa::path(
    post, path = "/v1/step-up/passkey/options", operation_id = "beginPasskeyStepUp",
    tag = "passkeys",
    summary = "Begin a step-up with a passkey",
    description = "Options for `navigator.credentials.get` listing the caller's passkeys. \
        Finish with `POST /v1/step-up/passkey`.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = CeremonyOptions, description = "The ceremony and its options.",
            headers(("Cache-Control" = String, description = "`no-store`."))),
        SessionProblems,
        (status = 403, response = CrossSiteCookie),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "The caller has no passkey. Problem code: `not_found`."),
    ),
)]
async fn begin_step_up(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, Problem> {
    let begun = state
        .service
        .begin_passkey_step_up(&auth.identity)
        .await
        .map_err(|e| auth.problem(e))?;
    ceremony_options(begun)
}

/// The body of `POST /v1/step-up/passkey`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasskeyStepUp)]
struct StepUpBody {
    /// The `ceremony` of `POST /v1/step-up/passkey/options`.
    #[schema(min_length = 22, max_length = 22, pattern = r"^[A-Za-z0-9_-]{22}$")]
    ceremony: String,
    /// The browser's answer: `credential.toJSON()` of `navigator.credentials.get`.
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

#[utoipa::path(
    post, path = "/v1/step-up/passkey", operation_id = "passkeyStepUp", tag = "passkeys",
    summary = "Step the session up with a passkey",
    description = "Checks the answer to a step-up begun by the same session and starts a new \
        session with the old one's methods and the passkey's (same delivery as the request); \
        the old session ends.",
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
            description = "The answer does not verify or the ceremony is not this session's \
                (the session stays valid), or sent cross-site. Problem codes: \
                `invalid_code`, `cross_site_request`."),
    ),
)]
async fn finish_step_up(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<StepUpBody>,
) -> Result<Response, Problem> {
    let delivery = auth.delivery();
    let credentials = state
        .service
        .finish_passkey_step_up(
            &auth.identity,
            &body.ceremony,
            &body.credential,
            delivery,
            client,
        )
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(credentials_response(&state, delivery, &credentials))
}
