//! Errors as RFC 9457 problem details, mapped in this one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::TokenError;
use tessera_core::assurance::StepUp;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};

use crate::service::ServiceError;

/// The stable `code` of a problem response: every code tessera answers with, and the one
/// place its HTTP status and title are defined. The API document lists these codes (the
/// `Problem` schema), and the response carries its code in its extensions so middleware
/// (metrics) can read the outcome without parsing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// 400: malformed body, parameters or values.
    BadRequest,
    /// 409: the resource exists already (a taken username).
    Conflict,
    /// 403: a cookie-authenticated state-changing request (or a login) sent cross-site.
    CrossSiteRequest,
    /// 403: a required role, permission or access rule refuses.
    Forbidden,
    /// 500: anything unexpected; the details go to the log only.
    InternalError,
    /// 401: wrong username or password (403 from `POST /v1/password`, where the session
    /// stays valid: see [`Problem::wrong_current_password`]).
    InvalidCredentials,
    /// 403: a one-time or recovery code, or a passkey's answer, that is wrong or was used
    /// before.
    InvalidCode,
    /// 401 (400 from the endpoints that issue tokens): a DPoP proof that is missing,
    /// malformed, replayed, for another request or by another key than the token's (RFC 9449).
    InvalidDpopProof,
    /// 401: a token that is malformed, unknown or fails its signature or claims.
    InvalidToken,
    /// 405: the resource does not answer this method.
    MethodNotAllowed,
    /// 404: no such resource.
    NotFound,
    /// 503: the signing keys are not usable (`/readyz`).
    NotReady,
    /// 413: the request body exceeds [`super::MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 429: too many attempts; `Retry-After` says when to try again.
    RateLimited,
    /// 408: the request body did not arrive within `body_read_timeout`.
    RequestTimeout,
    /// 401: the password was right and the account has a second factor; the problem carries a
    /// `ticket` for `POST /v1/login/second-factor`.
    SecondFactorRequired,
    /// 401: the session is valid but not authenticated strongly or recently enough (RFC 9470
    /// `insufficient_user_authentication`); the problem says what to step up to.
    StepUpRequired,
    /// 503: the session store is unavailable; nothing was decided.
    StoreUnavailable,
    /// 401: the token has expired.
    TokenExpired,
    /// 401: the token's session was revoked (or a refresh token was replayed).
    TokenRevoked,
    /// 401: no session token was presented.
    Unauthenticated,
    /// 415: the body is not JSON (or, for login, form-encoded).
    UnsupportedMediaType,
    /// 401 (400 from the endpoints that issue tokens): the DPoP proof must carry the nonce of
    /// the response's `DPoP-Nonce` header (RFC 9449 §8).
    UseDpopNonce,
}

impl ProblemCode {
    /// Every code, in the order the API document lists them (alphabetical).
    pub const ALL: [ProblemCode; 23] = [
        ProblemCode::BadRequest,
        ProblemCode::Conflict,
        ProblemCode::CrossSiteRequest,
        ProblemCode::Forbidden,
        ProblemCode::InternalError,
        ProblemCode::InvalidCode,
        ProblemCode::InvalidCredentials,
        ProblemCode::InvalidDpopProof,
        ProblemCode::InvalidToken,
        ProblemCode::MethodNotAllowed,
        ProblemCode::NotFound,
        ProblemCode::NotReady,
        ProblemCode::PayloadTooLarge,
        ProblemCode::RateLimited,
        ProblemCode::RequestTimeout,
        ProblemCode::SecondFactorRequired,
        ProblemCode::StepUpRequired,
        ProblemCode::StoreUnavailable,
        ProblemCode::TokenExpired,
        ProblemCode::TokenRevoked,
        ProblemCode::Unauthenticated,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::UseDpopNonce,
    ];

    /// The stable string clients match on (`code`, and the end of `type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "bad_request",
            ProblemCode::Conflict => "conflict",
            ProblemCode::CrossSiteRequest => "cross_site_request",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::InternalError => "internal_error",
            ProblemCode::InvalidCredentials => "invalid_credentials",
            ProblemCode::InvalidCode => "invalid_code",
            ProblemCode::InvalidDpopProof => "invalid_dpop_proof",
            ProblemCode::InvalidToken => "invalid_token",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::NotFound => "not_found",
            ProblemCode::NotReady => "not_ready",
            ProblemCode::PayloadTooLarge => "payload_too_large",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::RequestTimeout => "request_timeout",
            ProblemCode::SecondFactorRequired => "second_factor_required",
            ProblemCode::StepUpRequired => "step_up_required",
            ProblemCode::StoreUnavailable => "store_unavailable",
            ProblemCode::TokenExpired => "token_expired",
            ProblemCode::TokenRevoked => "token_revoked",
            ProblemCode::Unauthenticated => "unauthenticated",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::UseDpopNonce => "use_dpop_nonce",
        }
    }

    /// The HTTP status a problem with this code is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            ProblemCode::BadRequest => StatusCode::BAD_REQUEST,
            ProblemCode::Conflict => StatusCode::CONFLICT,
            ProblemCode::CrossSiteRequest | ProblemCode::Forbidden | ProblemCode::InvalidCode => {
                StatusCode::FORBIDDEN
            }
            ProblemCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::InvalidCredentials
            | ProblemCode::InvalidToken
            | ProblemCode::TokenExpired
            | ProblemCode::TokenRevoked
            | ProblemCode::SecondFactorRequired
            | ProblemCode::StepUpRequired
            | ProblemCode::InvalidDpopProof
            | ProblemCode::UseDpopNonce
            | ProblemCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemCode::NotFound => StatusCode::NOT_FOUND,
            ProblemCode::NotReady | ProblemCode::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProblemCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The short human-readable `title`.
    pub const fn title(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "Bad request",
            ProblemCode::Conflict => "Conflict",
            ProblemCode::CrossSiteRequest => "Cross-site request refused",
            ProblemCode::Forbidden => "Forbidden",
            ProblemCode::InternalError => "Internal error",
            ProblemCode::InvalidCredentials => "Invalid credentials",
            ProblemCode::InvalidCode => "Invalid code",
            ProblemCode::InvalidDpopProof => "Invalid DPoP proof",
            ProblemCode::InvalidToken => "Invalid token",
            ProblemCode::MethodNotAllowed => "Method not allowed",
            ProblemCode::NotFound => "Not found",
            ProblemCode::NotReady => "Not ready",
            ProblemCode::PayloadTooLarge => "Payload too large",
            ProblemCode::RateLimited => "Too many attempts",
            ProblemCode::RequestTimeout => "Request timeout",
            ProblemCode::SecondFactorRequired => "Second factor required",
            ProblemCode::StepUpRequired => "Step-up authentication required",
            ProblemCode::StoreUnavailable => "Service unavailable",
            ProblemCode::TokenExpired => "Token expired",
            ProblemCode::TokenRevoked => "Token revoked",
            ProblemCode::Unauthenticated => "Authentication required",
            ProblemCode::UnsupportedMediaType => "Unsupported media type",
            ProblemCode::UseDpopNonce => "DPoP nonce required",
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a problem response.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem, description = "RFC 9457 problem details.")]
pub(super) struct ProblemBody {
    /// `urn:tessera:problem:<code>`
    #[serde(rename = "type")]
    #[schema(examples("urn:tessera:problem:invalid_token"))]
    type_uri: String,
    title: &'static str,
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    detail: String,
    #[schema(schema_with = problem_code_schema)]
    code: ProblemCode,
    /// `second_factor_required`: the ticket for `POST /v1/login/second-factor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    ticket: Option<String>,
    /// `step_up_required`: the assurance level asked for (1 or 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 2)]
    aal: Option<u8>,
    /// `step_up_required`: the longest age, in seconds, of the authentication asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    max_age: Option<i64>,
}

/// The `code` of a problem: every [`ProblemCode`], or a string (new codes may be added).
fn problem_code_schema() -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(ProblemCode::ALL.map(ProblemCode::as_str))),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "Stable machine-readable code. New codes may be added.",
        ))
        .into()
}

impl Serialize for ProblemCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error response: `application/problem+json` with a stable `code`.
#[derive(Debug)]
pub struct Problem {
    code: ProblemCode,
    status: StatusCode,
    detail: String,
    /// Add `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750) to a 401.
    bearer_challenge: bool,
    retry_after: Option<u64>,
    ticket: Option<String>,
    step_up: Option<StepUp>,
}

impl Problem {
    /// A problem with a code (which gives its status and title) and a detail.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            status: code.status(),
            detail: detail.into(),
            bearer_challenge: false,
            retry_after: None,
            ticket: None,
            step_up: None,
        }
    }

    /// 401 `step_up_required`: what the session lacks, echoed in the body and, for bearer
    /// requests, in RFC 9470's challenge.
    pub fn step_up(step_up: StepUp) -> Problem {
        let mut problem = Problem::new(ProblemCode::StepUpRequired, step_up.detail());
        problem.step_up = Some(step_up);
        problem
    }

    /// What a `step_up_required` problem asks for.
    pub fn step_up_asked(&self) -> Option<&StepUp> {
        self.step_up.as_ref()
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::BadRequest, detail)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Problem {
        Problem::new(
            ProblemCode::PayloadTooLarge,
            "the request body exceeds 16 KiB",
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Problem {
        Problem::new(
            ProblemCode::UnsupportedMediaType,
            "send application/json (or application/x-www-form-urlencoded for login)",
        )
    }

    /// 403 `cross_site_request`.
    pub fn cross_site() -> Problem {
        Problem::new(
            ProblemCode::CrossSiteRequest,
            "state-changing requests must come from this site",
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Problem {
        Problem::new(ProblemCode::NotFound, "no such resource")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Problem {
        Problem::new(
            ProblemCode::MethodNotAllowed,
            "this method is not allowed on this resource",
        )
    }

    /// 408 `request_timeout`: the request body did not arrive in time.
    pub fn request_timeout() -> Problem {
        Problem::new(
            ProblemCode::RequestTimeout,
            "the request body did not arrive in time",
        )
    }

    /// 500 `internal_error`, with a generic body (details belong in the log only).
    pub fn internal_error() -> Problem {
        Problem::new(ProblemCode::InternalError, "an internal error occurred")
    }

    /// 403 `invalid_credentials`: the current password given to a password change is wrong.
    /// The session is fine; only the proof was wrong, and a 401 would make clients drop it.
    pub fn wrong_current_password() -> Problem {
        let mut problem = Problem::new(
            ProblemCode::InvalidCredentials,
            "the current password is wrong",
        );
        problem.status = StatusCode::FORBIDDEN;
        problem
    }

    /// The answer of an endpoint that issues tokens (login, refresh): a DPoP refusal is 400
    /// there, as RFC 9449 §5 has the authorization server answer (OAuth's token endpoint
    /// error), rather than a resource's 401 with a challenge.
    pub fn at_token_endpoint(mut self) -> Problem {
        if matches!(
            self.code,
            ProblemCode::InvalidDpopProof | ProblemCode::UseDpopNonce
        ) {
            self.status = StatusCode::BAD_REQUEST;
        }
        self
    }

    /// Marks a 401 as answering a bearer request, so it carries the RFC 6750 challenge.
    pub fn for_bearer(mut self, bearer: bool) -> Problem {
        self.bearer_challenge = bearer;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> ProblemCode {
        self.code
    }
}

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Problem {
        use ProblemCode as C;
        match error {
            ServiceError::InvalidCredentials => {
                Problem::new(C::InvalidCredentials, "invalid username or password")
            }
            ServiceError::Unauthenticated => {
                Problem::new(C::Unauthenticated, "no session token was presented")
            }
            ServiceError::Token(e) => token_problem(e),
            ServiceError::RefreshReuse => Problem::new(
                C::TokenRevoked,
                "this refresh token was already used; the session has been revoked",
            ),
            ServiceError::Forbidden(detail) => Problem::new(C::Forbidden, detail),
            ServiceError::StepUpRequired(step_up) => Problem::step_up(step_up),
            ServiceError::SecondFactorRequired { ticket } => {
                let mut p = Problem::new(
                    C::SecondFactorRequired,
                    "enter a code from your authenticator app (or a recovery code)",
                );
                p.ticket = Some(ticket);
                p
            }
            ServiceError::Dpop(refusal) => {
                let code = match refusal.error_code() {
                    "use_dpop_nonce" => C::UseDpopNonce,
                    "invalid_token" => C::InvalidToken,
                    _ => C::InvalidDpopProof,
                };
                Problem::new(code, refusal.to_string()).for_bearer(true)
            }
            ServiceError::Dbsc(refusal) => match refusal {
                crate::service::DbscRefusal::Off | crate::service::DbscRefusal::UnknownSession => {
                    Problem::new(C::NotFound, refusal.to_string())
                }
                _ => Problem::new(C::Forbidden, refusal.to_string()),
            },
            ServiceError::InvalidCode => Problem::new(C::InvalidCode, "the code is not valid"),
            ServiceError::NotFound(detail) => Problem::new(C::NotFound, detail),
            ServiceError::BadRequest(detail) => Problem::bad_request(detail),
            ServiceError::Conflict(detail) => Problem::new(C::Conflict, detail),
            ServiceError::RateLimited { retry_after } => {
                let mut p = Problem::new(C::RateLimited, "too many attempts; retry later");
                p.retry_after = Some(u64::try_from(retry_after.max(1)).unwrap_or(1));
                p
            }
            ServiceError::Unavailable => {
                let mut p = Problem::new(
                    C::StoreUnavailable,
                    "the session store is unavailable; retry shortly",
                );
                p.retry_after = Some(1);
                p
            }
            ServiceError::SigningKeys(detail) => {
                // The detail goes to the log only; the client gets a generic body.
                tracing::error!(%detail, "internal error");
                Problem::internal_error()
            }
            error @ ServiceError::Internal { .. } => {
                tracing::error!(error = %error.chain(), "internal error");
                Problem::internal_error()
            }
        }
    }
}

fn token_problem(error: TokenError) -> Problem {
    // The code comes from tessera-token, so embedded verifiers answer with the same codes.
    let code = ProblemCode::ALL
        .into_iter()
        .find(|known| known.as_str() == error.problem_code())
        .unwrap_or(ProblemCode::InvalidToken);
    Problem::new(code, error.to_string())
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            type_uri: format!("urn:tessera:problem:{}", self.code),
            title: self.code.title(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            ticket: self.ticket,
            aal: self
                .step_up
                .and_then(|s| s.required.aal)
                .map(|aal| aal.number()),
            max_age: self.step_up.and_then(|s| s.required.max_age),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED && self.bearer_challenge {
            let value = match (self.code, self.step_up) {
                (ProblemCode::Unauthenticated, _) => HeaderValue::from_static("Bearer"),
                // RFC 9449 §7.1: the DPoP scheme's challenge, with the algorithms accepted.
                (code @ (ProblemCode::InvalidDpopProof | ProblemCode::UseDpopNonce), _) => {
                    let algs = tessera_core::dpop::PROOF_ALGORITHMS.join(" ");
                    HeaderValue::from_str(&format!("DPoP error=\"{code}\", algs=\"{algs}\""))
                        .unwrap_or(HeaderValue::from_static("DPoP"))
                }
                (_, Some(step_up)) => HeaderValue::from_str(&step_up.challenge())
                    .unwrap_or(HeaderValue::from_static("Bearer")),
                _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
            };
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` is the document's list: sorted, each code once, each with its own string.
    #[test]
    fn every_code_is_listed_once_in_order() {
        let names: Vec<&str> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_problem_takes_status_and_title_from_its_code() {
        for code in ProblemCode::ALL {
            let problem = Problem::new(code, "detail");
            assert_eq!(problem.status(), code.status());
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(!code.title().is_empty());
        }
        let wrong = Problem::wrong_current_password();
        assert_eq!(wrong.code(), ProblemCode::InvalidCredentials);
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_body_is_rfc_9457_with_the_code() {
        let response = Problem::new(ProblemCode::TokenExpired, "expired").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(
            response.extensions().get::<ProblemCode>(),
            Some(&ProblemCode::TokenExpired)
        );
    }
}
