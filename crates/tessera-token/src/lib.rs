//! Verification of tessera access tokens, for tessera itself and for any Rust service.
//!
//! This crate holds every rule tessera applies to a presented JWT access token, and nothing
//! that signs: strict compact-JWS parsing and signature checks ([`jws`]), the access-token
//! claims and their checks ([`claims`]), the verifying keys of a JWKS document ([`keys`],
//! [`jwks`]), strict base64url ([`b64`]), the checks of a DPoP proof ([`dpop`], RFC 9449) and
//! the reasons for a refusal ([`TokenError`]).
//! The tessera server verifies its own tokens with this code, so a service that embeds it
//! refuses exactly what the server refuses.
//!
//! There is no I/O, no clock and no async: the caller fetches the JWKS and passes the current
//! time in as `now` (Unix seconds).
//!
//! # Example
//!
//! ```
//! use tessera_token::{ClaimRules, TokenError, VerifyingKeys, verify_access_token};
//!
//! // tessera's GET /.well-known/jwks.json, fetched however the service likes.
//! let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"QgUHBwcHBwcHBwcHBwcHBw","alg":"EdDSA",
//!     "use":"sig","x":"IVL40Zt5HSRFMkLhXy6rbLfP-ntqXtMAl5YOBpiB2xI"}]}"#;
//! let keys = VerifyingKeys::from_jwks(jwks)?;
//!
//! // What this service expects of every token: tessera's issuer and audience settings.
//! let rules = ClaimRules {
//!     issuer: "https://auth.example".into(),
//!     audience: "apps".into(),
//!     leeway: 30,
//! };
//!
//! let token = concat!(
//!     "eyJhbGciOiJFZERTQSIsImtpZCI6IlFnVUhCd2NIQndjSEJ3Y0hCd2NIQnciLCJ0eXAiOiJhdCtqd3Qi",
//!     "fQ.eyJhdWQiOiJhcHBzIiwiZXhwIjoxODAwMDAwNjAwLCJpYXQiOjE4MDAwMDAwMDAsImlzcyI6Imh0d",
//!     "HBzOi8vYXV0aC5leGFtcGxlIiwianRpIjoiai00MiIsIm5hbWUiOiJhbGljZSIsIm5iZiI6MTgwMDAwM",
//!     "DAwMCwicGVybXMiOlsiZG9jczpyZWFkIiwiZG9jczp3cml0ZSJdLCJyb2xlcyI6WyJlZGl0b3IiXSwic",
//!     "2lkIjoicy00MiIsInN1YiI6InUtNDIifQ.5cKHyCtqqmuBBL-VyVn3GBl5rmfwmNXLlczhOpO0fx-mTO",
//!     "dHLw6FVAWRwXekI7ia-tFQsBH-hSBgTr6c-uuqBw",
//! );
//! let now = 1_800_000_100;
//! let claims = verify_access_token(token, &keys, &rules, now)?;
//! assert_eq!(claims.sub, "u-42");
//! assert!(claims.perms.iter().any(|p| p == "docs:read"));
//!
//! // Refusals carry the problem code tessera itself would answer with.
//! let later = verify_access_token(token, &keys, &rules, now + 3600);
//! assert_eq!(later, Err(TokenError::Expired));
//! assert_eq!(TokenError::Expired.problem_code(), "token_expired");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What this does not check
//! Whether the session behind a token was revoked: only tessera knows that. A token verified
//! here is valid until its `exp` (at most the access-token lifetime) unless the service also
//! asks tessera about its `sid`.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod assurance;
pub mod b64;
pub mod claims;
pub mod dbsc;
pub mod dpop;
pub mod error;
mod header;
pub mod jwks;
pub mod jws;
pub mod keys;
#[cfg(test)]
mod test_keys;

mod json;

pub use assurance::{Aal, Method, Methods, Requirement, StepUp};
pub use claims::{AccessClaims, ClaimRules, Confirmation};
pub use error::TokenError;
pub use jwks::JwksError;
pub use keys::{Algorithm, VerifyingKey, VerifyingKeys};

/// Seconds since the Unix epoch. Every time in tessera is one of these, passed in by the caller.
pub type UnixTime = i64;

/// Upper bound on any token we are asked to parse (SPEC §6): checked before any decoding work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies a tessera access token: its signature with the key its `kid` names in `keys`, its
/// header (`typ` `at+jwt`, no key-carrying or critical parameters), and its claims against
/// `rules` at `now`, with `rules.leeway` seconds of clock skew for `exp` and `nbf`.
///
/// The same function as [`claims::verify`], at the crate root.
pub fn verify_access_token(
    token: &str,
    keys: &VerifyingKeys,
    rules: &ClaimRules,
    now: UnixTime,
) -> Result<AccessClaims, TokenError> {
    claims::verify(token, keys, rules, now)
}
