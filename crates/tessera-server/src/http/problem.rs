//! Errors as RFC 9457 problem details, mapped in this one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_core::TokenError;

use crate::service::ServiceError;

/// The stable `code` of a problem response, kept in the response's extensions so middleware
/// (metrics) can read the outcome without parsing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemCode(pub &'static str);

/// An error response: `application/problem+json` with a stable `code`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    /// Add `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750) to a 401.
    bearer_challenge: bool,
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem with a status, a stable code, a short title and a detail.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            bearer_challenge: false,
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad request",
            detail,
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            "the request body exceeds 16 KiB",
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send application/json (or application/x-www-form-urlencoded for login)",
        )
    }

    /// 403 `cross_site_request`.
    pub fn cross_site() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "Cross-site request refused",
            "state-changing requests must come from this site",
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "no such resource",
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            "this method is not allowed on this resource",
        )
    }

    /// 408 `request_timeout`: the request body did not arrive in time.
    pub fn request_timeout() -> Problem {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "Request timeout",
            "the request body did not arrive in time",
        )
    }

    /// 500 `internal_error`, with a generic body (details belong in the log only).
    pub fn internal_error() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "an internal error occurred",
        )
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
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Problem {
        use StatusCode as S;
        match error {
            ServiceError::InvalidCredentials => Problem::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid credentials",
                "invalid username or password",
            ),
            ServiceError::Unauthenticated => Problem::new(
                S::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                "no session token was presented",
            ),
            ServiceError::Token(e) => token_problem(e),
            ServiceError::RefreshReuse => Problem::new(
                S::UNAUTHORIZED,
                "token_revoked",
                "Token revoked",
                "this refresh token was already used; the session has been revoked",
            ),
            ServiceError::Forbidden(detail) => {
                Problem::new(S::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            ServiceError::NotFound(detail) => {
                Problem::new(S::NOT_FOUND, "not_found", "Not found", detail)
            }
            ServiceError::BadRequest(detail) => Problem::bad_request(detail),
            ServiceError::Conflict(detail) => {
                Problem::new(S::CONFLICT, "conflict", "Conflict", detail)
            }
            ServiceError::RateLimited { retry_after } => {
                let mut p = Problem::new(
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many attempts",
                    "too many attempts; retry later",
                );
                p.retry_after = Some(u64::try_from(retry_after.max(1)).unwrap_or(1));
                p
            }
            ServiceError::Unavailable => {
                let mut p = Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "Service unavailable",
                    "the session store is unavailable; retry shortly",
                );
                p.retry_after = Some(1);
                p
            }
            ServiceError::SigningKeys(detail) | ServiceError::Internal(detail) => {
                // The detail goes to the log only; the client gets a generic body.
                tracing::error!(%detail, "internal error");
                Problem::internal_error()
            }
        }
    }
}

fn token_problem(error: TokenError) -> Problem {
    // The code comes from tessera-token, so embedded verifiers answer with the same codes.
    let code = error.problem_code();
    let title = [
        ("token_expired", "Token expired"),
        ("token_revoked", "Token revoked"),
        ("invalid_token", "Invalid token"),
    ]
    .into_iter()
    .find_map(|(known, title)| (known == code).then_some(title))
    .unwrap_or("Invalid token");
    Problem::new(StatusCode::UNAUTHORIZED, code, title, error.to_string())
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("urn:tessera:problem:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED && self.bearer_challenge {
            let value = if self.code == "unauthenticated" {
                HeaderValue::from_static("Bearer")
            } else {
                HeaderValue::from_static("Bearer error=\"invalid_token\"")
            };
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ProblemCode(self.code));
        response
    }
}
