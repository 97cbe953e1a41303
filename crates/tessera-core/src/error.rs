//! Why a token was refused.

use thiserror::Error;

/// Why a presented token failed validation.
///
/// Each variant maps to a stable problem `code` in the HTTP layer; most become
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
