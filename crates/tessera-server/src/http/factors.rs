//! `/v1/factors`: the caller's second factors — TOTP enrolment and recovery codes.
//!
//! Every change needs a recent sign-in (`recent_authentication`): a session older than that
//! gets 401 `step_up_required` and steps up first (`POST /v1/step-up`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Body};
use super::openapi::{BodyProblems, CrossSiteCookie, SessionProblems};
use super::passkeys::PasskeyView;
use super::problem::{Problem, ProblemBody};
use crate::service::{ClientInfo, FactorStatus};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(factors))
        .routes(routes!(begin_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(new_recovery_codes))
}

/// A user's second factors (the caller's, or for an administrator, anyone's).
#[derive(Serialize, ToSchema)]
pub(super) struct Factors {
    /// `none`, `pending` (enrolment begun, not confirmed) or `confirmed`.
    totp: &'static str,
    /// Unused recovery codes.
    recovery_codes_left: u32,
    /// Registered passkeys, oldest first.
    passkeys: Vec<PasskeyView>,
}

impl From<FactorStatus> for Factors {
    fn from(status: FactorStatus) -> Factors {
        Factors {
            totp: status.totp,
            recovery_codes_left: status.recovery_codes_left,
            passkeys: status.passkeys.into_iter().map(PasskeyView::from).collect(),
        }
    }
}

#[utoipa::path(
    get, path = "/v1/factors", operation_id = "factors", tag = "factors",
    summary = "The caller's second factors",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = Factors, description = "TOTP state, recovery codes left, passkeys."),
        SessionProblems,
    ),
)]
async fn factors(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Factors>, Problem> {
    let status = state
        .service
        .factors_of(&auth.identity)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(Json(Factors::from(status)))
}

/// A TOTP enrolment, shown once.
#[derive(Serialize, ToSchema)]
struct TotpEnrolment {
    /// The secret in base32, for typing into an app.
    secret: String,
    /// The `otpauth://totp/…` URI.
    uri: String,
    /// The URI as a QR code, an SVG document drawn by tessera.
    qr_svg: String,
}

const RECENT: &str = "The session's sign-in is older than `recent_authentication`: step up \
    first. Problem codes: `step_up_required`, or a `SessionProblems` code.";

#[utoipa::path(
    post, path = "/v1/factors/totp", operation_id = "beginTotp", tag = "factors",
    summary = "Begin TOTP enrolment",
    description = "A new secret, shown once; it signs nobody in until a code confirms it \
        (`POST /v1/factors/totp/confirm`). Replaces an unconfirmed enrolment.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = TotpEnrolment, description = "The secret, its URI and QR code.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the response carries a secret."))),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, response = CrossSiteCookie),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "A TOTP factor is enrolled already. Problem codes: `conflict`."),
    ),
)]
async fn begin_totp(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<TotpEnrolment>, Problem> {
    let enrolment = state
        .service
        .begin_totp(&auth.identity)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(Json(TotpEnrolment {
        secret: enrolment.secret,
        uri: enrolment.uri,
        qr_svg: enrolment.qr_svg,
    }))
}

/// The body of `POST /v1/factors/totp/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TotpConfirmation)]
struct ConfirmBody {
    /// The current code from the app.
    #[schema(max_length = 64)]
    code: String,
}

/// Recovery codes, shown once.
#[derive(Serialize, ToSchema)]
struct RecoveryCodes {
    /// Ten single-use codes; each signs in once in place of a TOTP code.
    recovery_codes: Vec<String>,
}

#[utoipa::path(
    post, path = "/v1/factors/totp/confirm", operation_id = "confirmTotp", tag = "factors",
    summary = "Confirm TOTP enrolment with a code",
    description = "From now on, logins of this account need a code. Answers with ten \
        recovery codes, shown once.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    request_body(content((ConfirmBody = "application/json"))),
    responses(
        (status = 200, body = RecoveryCodes, description = "Confirmed.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the response carries secrets."))),
        BodyProblems,
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "Wrong code, or sent cross-site. Problem codes: `invalid_code`, \
                `cross_site_request`."),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "No enrolment was begun. Problem codes: `not_found`."),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "Confirmed already. Problem codes: `conflict`."),
        (status = 429, body = ProblemBody, content_type = "application/problem+json",
            description = "Too many wrong codes. Problem code: `rate_limited`.",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
)]
async fn confirm_totp(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    Body(body): Body<ConfirmBody>,
) -> Result<Json<RecoveryCodes>, Problem> {
    let recovery_codes = state
        .service
        .confirm_totp(&auth.identity, &body.code, client)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

#[utoipa::path(
    delete, path = "/v1/factors/totp", operation_id = "removeTotp", tag = "factors",
    summary = "Remove the TOTP factor and its recovery codes",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, response = CrossSiteCookie),
        (status = 404, body = ProblemBody, content_type = "application/problem+json",
            description = "No TOTP factor is enrolled. Problem codes: `not_found`."),
    ),
)]
async fn remove_totp(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<StatusCode, Problem> {
    state
        .service
        .remove_totp(&auth.identity, client)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/factors/recovery-codes", operation_id = "newRecoveryCodes", tag = "factors",
    summary = "Replace the recovery codes",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 200, body = RecoveryCodes, description = "Ten new codes; the old ones no \
            longer work.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the response carries secrets."))),
        (status = 401, body = ProblemBody, content_type = "application/problem+json",
            description = RECENT),
        (status = 403, response = CrossSiteCookie),
        (status = 409, body = ProblemBody, content_type = "application/problem+json",
            description = "No second factor is enrolled. Problem codes: `conflict`."),
    ),
)]
async fn new_recovery_codes(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<Json<RecoveryCodes>, Problem> {
    let recovery_codes = state
        .service
        .new_recovery_codes(&auth.identity, client)
        .await
        .map_err(|e| auth.problem(e))?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}
