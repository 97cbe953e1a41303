//! Why a token was refused.

use thiserror::Error;

/// Why a presented token failed validation.
///
/// Each variant maps to a stable problem `code` ([`TokenError::problem_code`]): most become
/// `invalid_token`, expiry becomes `token_expired` and revocation `token_revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`crate::MAX_TOKEN_LEN`]; refused before any decoding.
    #[error("token is too large")]
    Oversized,
    /// Not shaped like any token tessera issues (prefix, length, alphabet, segments, JSON).
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than the one pinned to the selected key.
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// The header carries a parameter tessera never accepts (`jku`, `x5u`, `jwk`, `x5c`, `crit`, ...).
    #[error("token header carries a forbidden parameter")]
    ForbiddenHeader,
    /// The `kid` names no key we hold.
    #[error("token key is unknown")]
    UnknownKey,
    /// The `typ` is not the one expected here (an access token where a refresh token belongs, ...).
    #[error("token type is wrong for this use")]
    WrongType,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `iss` is not ours.
    #[error("token issuer is wrong")]
    WrongIssuer,
    /// `aud` is not ours.
    #[error("token audience is wrong")]
    WrongAudience,
    /// `nbf` lies in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `exp` has passed (beyond the leeway), or the session's idle or absolute timeout has.
    #[error("token has expired")]
    Expired,
    /// The session behind the token was revoked.
    #[error("token has been revoked")]
    Revoked,
    /// The token is well formed but names no session we know.
    #[error("token is unknown")]
    Unknown,
}

impl TokenError {
    /// The problem `code` a client sees for this refusal (SPEC §4): `token_expired`,
    /// `token_revoked`, or `invalid_token` for everything else.
    ///
    /// # Security
    /// Every forgery, malformation and mismatch shares one code, so a client learns nothing
    /// about which check failed; the variant itself is for logs and tests.
    pub const fn problem_code(self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::Revoked => "token_revoked",
            _ => "invalid_token",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_codes_are_the_servers() {
        assert_eq!(TokenError::Expired.problem_code(), "token_expired");
        assert_eq!(TokenError::Revoked.problem_code(), "token_revoked");
        for error in [
            TokenError::Oversized,
            TokenError::Malformed,
            TokenError::AlgorithmMismatch,
            TokenError::ForbiddenHeader,
            TokenError::UnknownKey,
            TokenError::WrongType,
            TokenError::BadSignature,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::NotYetValid,
            TokenError::Unknown,
        ] {
            assert_eq!(error.problem_code(), "invalid_token", "{error:?}");
        }
    }
}
