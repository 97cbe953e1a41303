//! The one protected header tessera signs access tokens with, and the shape of its `kid`:
//! shared by the key set (which recognises a genuine header without parsing it) and the JWS
//! parser, and depending on neither.

use serde::Serialize;

use crate::b64;

/// `typ` of tessera access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Longest `kid` we look up; ours are 22 characters.
pub const MAX_KID_LEN: usize = 64;

/// The header tessera signs with. Its members are in the order `serde_json` would sort them,
/// so the bytes are those of the JSON object `{alg, kid, typ}`.
#[derive(Serialize)]
struct SignedHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

/// The base64url encoding of the header `{alg, kid, typ}` (`alg` as its JOSE name); `None`
/// only if JSON serialization fails, which it does not for strings.
pub(crate) fn encoded(alg: &str, kid: &str, typ: &str) -> Option<String> {
    let json = serde_json::to_vec(&SignedHeader { alg, kid, typ }).ok()?;
    Some(b64::encode(&json))
}

/// tessera's `kid`s are 22 base64url characters; accept up to [`MAX_KID_LEN`] of that
/// alphabet so that no path, URL or query text ever reaches a lookup or a log line.
pub fn is_well_formed_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && b64::is_alphabet_only(kid)
}
