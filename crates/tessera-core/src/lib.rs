//! tessera's token engine.
//!
//! Everything here is pure computation: token formats ([`opaque`], [`jws`]), signing keys
//! ([`keys`]), access-token claims and their validation ([`claims`]), the session model and its
//! timeouts ([`session`]), role-to-permission mapping ([`authz`]), the names users, roles and
//! permissions may take ([`names`]), password hashing ([`password`]), the sealing of refresh
//! successors ([`seal`]) and the encryption of private signing keys at rest ([`at_rest`]).
//!
//! There is no I/O, no clock and no async in this crate: callers pass the current time in as
//! `now` (Unix seconds), which keeps every rule testable with fixed inputs.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod at_rest;
pub mod authz;
pub mod b64;
pub mod claims;
pub mod error;
pub mod jws;
pub mod keys;
pub mod names;
pub mod opaque;
pub mod password;
pub mod random;
pub mod seal;
pub mod session;

pub use error::TokenError;

/// Seconds since the Unix epoch. Every time in tessera is one of these, passed in by the caller.
pub type UnixTime = i64;

/// Upper bound on any token we are asked to parse (SPEC §6): checked before any decoding work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
