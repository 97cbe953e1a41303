//! Why a request was refused, and its problem+json answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_token::{StepUp, TokenError};

/// Why a request was refused: answered as `application/problem+json` with the codes, statuses
/// and `WWW-Authenticate` challenges the tessera server itself uses.
///
/// | kind | status | `code` |
/// |---|---|---|
/// | [`RejectionKind::Unauthenticated`] | 401 | `unauthenticated` |
/// | [`RejectionKind::Token`] | 401 | `invalid_token` or `token_expired` ([`TokenError::problem_code`]) |
/// | [`RejectionKind::OpaqueToken`] | 401 | `invalid_token` |
/// | [`RejectionKind::StepUp`] | 401 | `step_up_required` |
/// | [`RejectionKind::Dpop`] | 401 | `invalid_dpop_proof` |
/// | [`RejectionKind::Forbidden`] | 403 | `forbidden` |
/// | [`RejectionKind::KeysUnavailable`] | 503 | `not_ready` |
/// | [`RejectionKind::RevocationsStale`] | 503 | `not_ready` |
/// | [`RejectionKind::IssuerUnavailable`] | 503 | `not_ready` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    bearer: bool,
}

/// The reason inside a [`Rejection`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No token in `Authorization: Bearer` nor in the session cookie.
    #[error("no session token was presented")]
    Unauthenticated,
    /// The token was refused by `tessera_token` (signature, header or claims).
    #[error("{0}")]
    Token(TokenError),
    /// An opaque `tsr_` token: only the tessera server can tell whether it is valid.
    #[error(
        "opaque tessera tokens (tsr_...) can only be checked by the tessera server \
         (introspection); this service verifies JWT access tokens only"
    )]
    OpaqueToken,
    /// A DPoP-bound token (`cnf.jkt`) without a valid, fresh proof by its key for this
    /// request, or a proof with a token that is not bound (RFC 9449); the text says which.
    #[error("{0}")]
    Dpop(String),
    /// The session lacks a role or permission the route requires.
    #[error("{0}")]
    Forbidden(String),
    /// The session was not signed in strongly or recently enough for the route: the client
    /// must step up at tessera (RFC 9470).
    #[error("{}", .0.detail())]
    StepUp(StepUp),
    /// The issuer's keys could not be fetched for longer than the configured staleness.
    #[error("the issuer's verification keys are unavailable; retry shortly")]
    KeysUnavailable,
    /// The revocation feed has not answered for longer than its `max_staleness` (and
    /// [`WhenStale::FailClosed`](crate::WhenStale::FailClosed) is in force): the token may
    /// have been revoked.
    #[error("revocations from the issuer are not current; retry shortly")]
    RevocationsStale,
    /// tessera could not be asked about the token (introspection failed).
    #[error("{0}")]
    IssuerUnavailable(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            RejectionKind::Token(error) => Some(error),
            _ => None,
        }
    }
}

impl From<RejectionKind> for Rejection {
    fn from(kind: RejectionKind) -> Rejection {
        Rejection {
            kind,
            bearer: false,
        }
    }
}

impl Rejection {
    /// A 403 `forbidden` with this detail.
    pub fn forbidden(detail: impl Into<String>) -> Rejection {
        RejectionKind::Forbidden(detail.into()).into()
    }

    /// Why the request was refused.
    pub fn kind(&self) -> &RejectionKind {
        &self.kind
    }

    /// Marks the rejection as answering a token sent in `Authorization: Bearer`, so a 401
    /// carries `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), as the server's do.
    /// (A step-up gets RFC 9470's challenge instead.)
    pub(crate) fn for_bearer(mut self, bearer: bool) -> Rejection {
        self.bearer = bearer;
        self
    }

    /// The stable problem `code`, the same string the tessera server answers with.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            RejectionKind::Unauthenticated => "unauthenticated",
            RejectionKind::Token(error) => error.problem_code(),
            RejectionKind::OpaqueToken => "invalid_token",
            RejectionKind::Dpop(_) => "invalid_dpop_proof",
            RejectionKind::Forbidden(_) => "forbidden",
            RejectionKind::StepUp(_) => "step_up_required",
            RejectionKind::KeysUnavailable
            | RejectionKind::RevocationsStale
            | RejectionKind::IssuerUnavailable(_) => "not_ready",
        }
    }

    /// What a `step_up_required` rejection asks for.
    fn step_up(&self) -> Option<&StepUp> {
        match &self.kind {
            RejectionKind::StepUp(step_up) => Some(step_up),
            _ => None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            RejectionKind::Unauthenticated
            | RejectionKind::Token(_)
            | RejectionKind::OpaqueToken
            | RejectionKind::Dpop(_)
            | RejectionKind::StepUp(_) => StatusCode::UNAUTHORIZED,
            RejectionKind::Forbidden(_) => StatusCode::FORBIDDEN,
            RejectionKind::KeysUnavailable
            | RejectionKind::RevocationsStale
            | RejectionKind::IssuerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The server's titles for the codes a verifier answers with.
fn title(code: &str) -> &'static str {
    match code {
        "unauthenticated" => "Authentication required",
        "token_expired" => "Token expired",
        "token_revoked" => "Token revoked",
        "forbidden" => "Forbidden",
        "step_up_required" => "Step-up authentication required",
        "not_ready" => "Not ready",
        "invalid_dpop_proof" => "Invalid DPoP proof",
        _ => "Invalid token",
    }
}

/// RFC 9457 problem details, shaped as the tessera server's.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: String,
    code: &'a str,
    /// `step_up_required`: the level asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    aal: Option<u8>,
    /// `step_up_required`: the longest age of the sign-in asked for, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age: Option<i64>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = self.status();
        let body = ProblemBody {
            type_uri: format!("urn:tessera:problem:{code}"),
            title: title(code),
            status: status.as_u16(),
            detail: self.kind.to_string(),
            code,
            aal: self
                .step_up()
                .and_then(|s| s.required.aal)
                .map(|aal| aal.number()),
            max_age: self.step_up().and_then(|s| s.required.max_age),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        // As the server: a missing token always gets the bare challenge; a refused token only
        // when it came as a bearer token (a browser's cookie has nothing to retry with).
        if status == StatusCode::UNAUTHORIZED {
            if self.kind == RejectionKind::Unauthenticated {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            } else if let RejectionKind::Dpop(_) = self.kind {
                // RFC 9449 §7.1, as the server answers.
                let algs = tessera_token::dpop::PROOF_ALGORITHMS.join(" ");
                let challenge = format!("DPoP error=\"invalid_dpop_proof\", algs=\"{algs}\"");
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            } else if let (Some(step_up), true) = (self.step_up(), self.bearer) {
                if let Ok(value) = HeaderValue::from_str(&step_up.challenge()) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            } else if self.bearer {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        response
    }
}
