//! The account page's passkey forms: rename and remove, which work without script. Adding a
//! passkey, and logging in or stepping up with one, need the browser's WebAuthn API, so the
//! pages do those with the one script they load (`/static/passkeys.js`), through the API
//! (`/v1/passkeys`, `/v1/login/passkey`, `/v1/step-up/passkey`).

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::AppState;
use super::super::extract::Body;
use super::super::openapi::{BodyProblems, FormAnswers};
use super::factors::change_refused;
use super::{SignedIn, human_time, see_other};
use crate::clock::rfc3339;
use crate::service::{ClientInfo, PasskeyInfo, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rename_passkey_form))
        .routes(routes!(remove_passkey_form))
}

/// A passkey as the account page lists it.
pub(super) struct PasskeyRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created: String,
    pub(super) created_iso: String,
    pub(super) last_used: Option<String>,
    pub(super) last_used_iso: String,
}

impl From<PasskeyInfo> for PasskeyRow {
    fn from(info: PasskeyInfo) -> PasskeyRow {
        PasskeyRow {
            created: human_time(info.created_at),
            created_iso: rfc3339(info.created_at),
            last_used: info.last_used_at.map(human_time),
            last_used_iso: info.last_used_at.map(rfc3339).unwrap_or_default(),
            id: info.id,
            name: info.name,
        }
    }
}

/// The body of the rename form.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PasskeyRenameForm)]
struct RenameForm {
    /// The new name, 1 to 64 characters.
    name: String,
}

/// Rename a passkey (form)
#[utoipa::path(
    post, path = "/account/passkeys/{id}/rename", operation_id = "accountRenamePasskey",
    tag = "pages",
    params(("id" = String, Path, description = "The passkey's id (credential id, base64url).")),
    request_body(content((RenameForm = "application/x-www-form-urlencoded"))),
    responses(FormAnswers, BodyProblems),
)]
async fn rename_passkey_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    Path(id): Path<String>,
    Body(form): Body<RenameForm, true>,
) -> Response {
    match state
        .service
        .rename_passkey(&auth.identity, &id, &form.name)
        .await
    {
        Ok(()) => see_other("/account?done=passkey_renamed"),
        // A name the service does not take: the page again, which says what a name may be.
        Err(ServiceError::BadRequest(_)) => see_other("/account?done=passkey_name"),
        Err(error) => change_refused(&state, error, None),
    }
}

/// Remove a passkey (form button)
///
/// Needs a recent sign-in: an older session goes to the step-up page first.
#[utoipa::path(
    post, path = "/account/passkeys/{id}/remove", operation_id = "accountRemovePasskey",
    tag = "pages",
    params(("id" = String, Path, description = "The passkey's id (credential id, base64url).")),
    responses(FormAnswers),
)]
async fn remove_passkey_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Response {
    match state
        .service
        .remove_passkey(&auth.identity, &id, client)
        .await
    {
        Ok(()) => see_other("/account?done=passkey_removed"),
        Err(error) => change_refused(&state, error, None),
    }
}
