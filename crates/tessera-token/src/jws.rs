//! JWS compact serialization (RFC 7515): strict parsing and verification, and the header
//! tessera signs with.
//!
//! Written here rather than taken from a JOSE crate because tessera needs rules those crates
//! do not enforce together: strict canonical base64url, refusal of duplicate JSON members,
//! refusal of every key-carrying header (`jku`, `x5u`, `jwk`, `x5c`) and of `crit`, an exact
//! `typ`, and a direct call into aws-lc with no per-token allocation of key objects.

use serde::Deserialize;

use crate::header;
pub use crate::header::{ACCESS_TOKEN_TYPE, MAX_KID_LEN, is_well_formed_kid};
use crate::keys::{Algorithm, KeyError, VerifyingKey, VerifyingKeys};
use crate::{MAX_TOKEN_LEN, TokenError, b64};

/// The protected header tessera accepts. Anything else fails to parse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    #[serde(borrow)]
    alg: &'a str,
    #[serde(borrow)]
    kid: Option<&'a str>,
    #[serde(borrow)]
    typ: Option<&'a str>,
    // Present only so that their appearance is reported as forbidden rather than malformed.
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    jwk: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    x5t: Option<serde::de::IgnoredAny>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

/// The base64url encoding of the header `{alg, kid, typ}`: the one header tessera signs
/// with, and the one [`VerifyingKeys::access_verifier`] recognises without parsing.
pub fn encoded_header(alg: Algorithm, kid: &str, typ: &str) -> Result<String, KeyError> {
    header::encoded(alg.jose_name(), kid, typ).ok_or(KeyError::InvalidMaterial)
}

/// Longest signature of any tessera algorithm, in bytes (Ed25519 and P-256 `r || s`).
pub const MAX_SIGNATURE_LEN: usize = 64;

/// Verifies a compact JWS against `keys` and returns its payload bytes.
///
/// # Security
/// - Size is checked before any decoding ([`MAX_TOKEN_LEN`]).
/// - Every segment must be canonical unpadded base64url ([`b64`]); header and payload must be
///   UTF-8 JSON objects without duplicate members.
/// - Header parameters that point at keys or demand extensions (`jku`, `x5u`, `jwk`, `x5c`,
///   `x5t`, `crit`) are refused, never followed: verification makes no network request.
/// - `typ` must equal `expected_typ`, so a token minted for another use is refused.
/// - The key is chosen by `kid` only (a short base64url name, never a path), and the header's
///   `alg` must equal that key's one algorithm exactly, so `none`, algorithm substitution and
///   key confusion (an HMAC keyed with a public key) cannot succeed (RFC 8725 §3.1).
pub fn verify(
    token: &str,
    keys: &impl AsRef<VerifyingKeys>,
    expected_typ: &str,
) -> Result<Vec<u8>, TokenError> {
    verify_then(token, keys.as_ref(), expected_typ, |payload| {
        Ok(payload.to_vec())
    })
}

/// [`verify`], handing the payload to `then` from a buffer on the stack when it fits, so the
/// caller can parse it without a copy on the heap.
pub(crate) fn verify_then<R>(
    token: &str,
    keys: &VerifyingKeys,
    expected_typ: &str,
    then: impl FnOnce(&[u8]) -> Result<R, TokenError>,
) -> Result<R, TokenError> {
    let segments = Segments::split(token)?;
    let fast = match expected_typ {
        ACCESS_TOKEN_TYPE => keys.access_verifier(segments.header),
        _ => None,
    };
    match fast {
        // The header is byte for byte the one tessera signs access tokens with for this key:
        // decoding and parsing it would give exactly this key's `alg` and `kid` and the
        // expected `typ` and nothing else, so every header rule below holds already.
        Some(key) => check_signature(&segments, key.algorithm().jose_name(), key)?,
        None => with_header(segments.header, |header| {
            if header.typ != Some(expected_typ) {
                return Err(TokenError::WrongType);
            }
            let kid = header.kid.ok_or(TokenError::UnknownKey)?;
            if !is_well_formed_kid(kid) {
                return Err(TokenError::UnknownKey);
            }
            let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
            check_signature(&segments, header.alg, key)
        })?,
    }
    let mut payload_buf = [0u8; PAYLOAD_STACK_LEN];
    let payload = decode_in(segments.payload, &mut payload_buf)?;
    then(&payload)
}

/// Verifies a compact JWS against one given key, whatever its `kid` and `typ`, and returns
/// its payload bytes. Used for published test vectors, which carry no tessera `typ`.
///
/// # Security
/// Every rule of [`verify`] applies except the `kid` lookup and the `typ` check: size,
/// strict encoding, JSON objects without duplicates, forbidden header parameters, and the
/// header's `alg` must be the key's one algorithm.
pub fn verify_with_key(token: &str, key: &VerifyingKey) -> Result<Vec<u8>, TokenError> {
    let segments = Segments::split(token)?;
    with_header(segments.header, |header| {
        check_signature(&segments, header.alg, key)
    })?;
    b64::decode(segments.payload).ok_or(TokenError::Malformed)
}

/// The `kid` of the token's header, if the token is shaped like a JWS and names one; for
/// logs and for deciding whether an unknown key is worth a reload. Does not verify anything.
pub fn peek_kid(token: &str) -> Option<String> {
    let segments = Segments::split(token).ok()?;
    with_header(segments.header, |header| {
        Ok(header
            .kid
            .filter(|kid| is_well_formed_kid(kid))
            .map(str::to_owned))
    })
    .ok()
    .flatten()
}

/// Decodes (on the stack when it fits) and parses the header segment, and hands it to `f`.
fn with_header<R>(
    segment: &str,
    f: impl FnOnce(Header<'_>) -> Result<R, TokenError>,
) -> Result<R, TokenError> {
    let mut buf = [0u8; HEADER_STACK_LEN];
    let json = decode_in(segment, &mut buf)?;
    f(parse_header(&json)?)
}

/// Decoded bytes of a header above this size go to the heap (tessera's are ~70 bytes).
const HEADER_STACK_LEN: usize = 256;
/// Decoded payloads above this size go to the heap (tessera's claims are ~300–600 bytes).
const PAYLOAD_STACK_LEN: usize = 1536;

/// Bytes decoded into a caller's stack buffer, or onto the heap when they do not fit.
enum Decoded<'a> {
    Stack(&'a [u8]),
    Heap(Vec<u8>),
}

impl std::ops::Deref for Decoded<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Decoded::Stack(bytes) => bytes,
            Decoded::Heap(bytes) => bytes,
        }
    }
}

/// Decodes one segment strictly ([`b64`]), into `stack` when it is large enough.
fn decode_in<'a>(segment: &str, stack: &'a mut [u8]) -> Result<Decoded<'a>, TokenError> {
    let len = b64::decoded_len(segment.len()).ok_or(TokenError::Malformed)?;
    match stack.get_mut(..len) {
        Some(buf) => {
            b64::decode_to(segment, buf).ok_or(TokenError::Malformed)?;
            Ok(Decoded::Stack(buf))
        }
        None => b64::decode(segment)
            .map(Decoded::Heap)
            .ok_or(TokenError::Malformed),
    }
}

/// Parses bytes as a JSON object into `T`.
///
/// # Security
/// The bytes must be UTF-8 and the top-level value an object: serde would otherwise accept a
/// JSON array for a struct, giving one token two spellings. Duplicate members are refused by
/// the deserializers: the derived ones of structs without ignored fields (the header), and the
/// hand-written one of [`crate::claims::AccessClaims`], which also refuses duplicate unknown
/// members.
pub(crate) fn from_json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, TokenError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(TokenError::Malformed);
    }
    serde_json::from_str(text).map_err(|_| TokenError::Malformed)
}

/// The three segments of a compact JWS, split without decoding.
pub(crate) struct Segments<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    pub(crate) signing_input: &'a str,
}

impl<'a> Segments<'a> {
    pub(crate) fn split(token: &'a str) -> Result<Segments<'a>, TokenError> {
        // Before anything else: an oversized token costs nothing but this comparison.
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized);
        }
        // Exactly three segments: two dots, and none in the signature.
        let (header, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let (payload, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        if signature.contains('.') {
            return Err(TokenError::Malformed);
        }
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or(TokenError::Malformed)?;
        Ok(Segments {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

fn parse_header(json: &[u8]) -> Result<Header<'_>, TokenError> {
    let header: Header<'_> = from_json_object(json)?;
    if header.jku.is_some()
        || header.x5u.is_some()
        || header.jwk.is_some()
        || header.x5c.is_some()
        || header.x5t.is_some()
        || header.x5t_s256.is_some()
        || header.crit.is_some()
    {
        return Err(TokenError::ForbiddenHeader);
    }
    Ok(header)
}

/// Checks the header's `alg` against `key` and the signature over the signing input.
fn check_signature(
    segments: &Segments<'_>,
    alg: &str,
    key: &VerifyingKey,
) -> Result<(), TokenError> {
    // The algorithm is the key's; the header may only agree with it (exact, case-sensitive).
    if alg != key.algorithm().jose_name() {
        return Err(TokenError::AlgorithmMismatch);
    }
    // Room for any tessera signature; a longer one is decoded on the heap and then refused
    // by the key, as before.
    let mut signature_buf = [0u8; 2 * MAX_SIGNATURE_LEN];
    let signature = decode_in(segments.signature, &mut signature_buf)?;
    if !key.verify(segments.signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }
    Ok(())
}
