//! Errors of the service layer; the HTTP layer maps each to one problem response.

use tessera_core::TokenError;
use tessera_store::StoreError;
use thiserror::Error;

/// Why a service operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Username or password wrong, user unknown or disabled — deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No token was presented where a session is required.
    #[error("no session token was presented")]
    Unauthenticated,
    /// The presented token failed validation.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// A refresh token was used twice; the session has been revoked.
    #[error("refresh token reuse detected; the session has been revoked")]
    RefreshReuse,
    /// Authenticated, but a required role or permission is missing.
    #[error("{0}")]
    Forbidden(String),
    /// The session is valid but was not authenticated strongly or recently enough: the client
    /// must step up (RFC 9470).
    #[error("a stronger or more recent authentication is required")]
    StepUpRequired(tessera_core::assurance::StepUp),
    /// The password was right and the user has a second factor: finish with
    /// `Tessera::complete_login` and this ticket.
    #[error("a second factor is required")]
    SecondFactorRequired {
        /// Proof of the first factor, sealed; good for five minutes.
        ticket: String,
    },
    /// A DPoP proof was missing, invalid, replayed or by another key (RFC 9449).
    #[error("{0}")]
    Dpop(#[from] super::DpopRefusal),
    /// A Device Bound Session Credentials request was refused.
    #[error("{0}")]
    Dbsc(#[from] super::DbscRefusal),
    /// A one-time or recovery code was wrong, used before, or not for this user.
    #[error("the code is not valid")]
    InvalidCode,
    /// The thing asked for does not exist (or is not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// A unique value is taken.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts: retry after this many seconds.
    #[error("too many attempts; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until the next attempt may succeed.
        retry_after: i64,
    },
    /// The store cannot be reached: fail closed, retry later.
    #[error("the session store is unavailable")]
    Unavailable,
    /// Stored signing keys cannot be used: they do not decrypt with the configured master key,
    /// or were stored unencrypted. The message names the key and the likely cause.
    #[error("{0}")]
    SigningKeys(String),
    /// A bug, corrupt data or a failed resource; details go to the log, not to the client.
    #[error("internal error: {context}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// What went wrong underneath, when known.
        #[source]
        source: Option<BoxError>,
    },
}

/// Any error, kept as the source of another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl ServiceError {
    /// An internal failure with nothing underneath it.
    pub(crate) fn internal(context: &'static str) -> ServiceError {
        ServiceError::Internal {
            context,
            source: None,
        }
    }

    /// An internal failure caused by `source`, kept for the log.
    pub(crate) fn internal_from(
        context: &'static str,
        source: impl Into<BoxError>,
    ) -> ServiceError {
        ServiceError::Internal {
            context,
            source: Some(source.into()),
        }
    }

    /// The message and every source under it, joined by `: ` (for the log).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(source) = next {
            text.push_str(": ");
            text.push_str(&source.to_string());
            next = source.source();
        }
        text
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                ServiceError::Unavailable
            }
            StoreError::Conflict => ServiceError::Conflict("already exists".into()),
            other => ServiceError::internal_from("a store operation", other),
        }
    }
}

impl From<tessera_core::random::RandomError> for ServiceError {
    fn from(error: tessera_core::random::RandomError) -> Self {
        ServiceError::internal_from("the random number generator", error)
    }
}

impl From<tessera_core::keys::KeyError> for ServiceError {
    fn from(error: tessera_core::keys::KeyError) -> Self {
        ServiceError::internal_from("a signing key", error)
    }
}
