//! tessera's token engine.
//!
//! Everything here is pure computation: token formats ([`opaque`], [`jws`]), signing keys
//! ([`keys`]), access-token claims and their issuance ([`claims`]), the session model and its
//! timeouts ([`session`]), role-to-permission mapping ([`authz`]), the names users, roles and
//! permissions may take ([`names`]), password hashing ([`password`]), the sealing of refresh
//! successors ([`seal`]) and the encryption of private signing keys at rest ([`at_rest`]).
//!
//! Everything on the verifying side of a JWT — strict JWS parsing, claim checks, verifying
//! keys, base64url, [`TokenError`] — lives in [`tessera_token`], which services embed to verify
//! tessera's tokens; it is re-exported here under the same paths ([`b64`], [`error`],
//! [`jws::verify`], [`claims::verify`], [`keys::VerifyingKey`], ...), so there is one copy of
//! every rule.
//!
//! There is no I/O, no clock and no async in this crate: callers pass the current time in as
//! `now` (Unix seconds), which keeps every rule testable with fixed inputs.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod at_rest;
pub mod authz;
pub mod claims;
pub mod ids;
pub mod jws;
pub mod keys;
pub mod names;
pub mod opaque;
pub mod password;
pub mod random;
pub mod seal;
pub mod session;
pub mod totp;

pub use tessera_token::{MAX_TOKEN_LEN, TokenError, UnixTime, assurance, b64, dbsc, dpop, error};
