//! The administration API (`/v1/admin/...`), for callers holding the role `admin`.
//!
//! Only key rotation lives here so far; the rest of the admin API joins it.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::AppState;
use super::extract::Authenticated;
use super::problem::Problem;
use crate::clock::rfc3339;
use crate::service::{Identity, ServiceError};

/// The role that may call the admin API.
pub const ADMIN_ROLE: &str = "admin";

/// Routes under `/v1/admin`.
pub(super) fn admin_routes() -> Router<AppState> {
    Router::new().route("/v1/admin/keys/rotate", post(rotate_key))
}

/// Refuses callers without the admin role: authenticated but not allowed is 403.
fn require_admin(identity: &Identity) -> Result<(), Problem> {
    if identity.roles.iter().any(|r| r == ADMIN_ROLE) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!("this needs the role {ADMIN_ROLE:?}")).into())
    }
}

/// `POST /v1/admin/keys/rotate`: a new signing key signs from now on; the previous key keeps
/// verifying, and stays in the JWKS, until every token it signed has expired.
async fn rotate_key(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Value>, Problem> {
    require_admin(&auth.identity)?;
    let key = state.service.rotate_key().await?;
    tracing::info!(kid = %key.kid, by = %auth.identity.username, "signing key rotated");
    // The record's private part never leaves this function.
    Ok(Json(json!({
        "kid": key.kid,
        "algorithm": key.algorithm.jose_name(),
        "created_at": rfc3339(key.created_at),
    })))
}
