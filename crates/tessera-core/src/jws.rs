//! JWS compact serialization (RFC 7515), signing and strict verification.
//!
//! Written here rather than taken from a JOSE crate because tessera needs rules those crates
//! do not enforce together: strict canonical base64url, refusal of duplicate JSON members,
//! refusal of every key-carrying header (`jku`, `x5u`, `jwk`, `x5c`) and of `crit`, an exact
//! `typ`, and a direct call into aws-lc with no per-token allocation of key objects.

use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, KeyError, KeySet, SigningKey, VerifyingKey};
use crate::{MAX_TOKEN_LEN, TokenError, b64};

/// `typ` of tessera access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Longest `kid` we look up; ours are 22 characters.
const MAX_KID_LEN: usize = 64;

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

/// The header tessera signs with. Its members are in the order `serde_json` would sort them,
/// so the bytes are those of the JSON object `{alg, kid, typ}`.
#[derive(Serialize)]
struct SignedHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

/// The base64url encoding of the header `{alg, kid, typ}`.
pub(crate) fn encoded_header(alg: Algorithm, kid: &str, typ: &str) -> Result<String, KeyError> {
    let header = SignedHeader {
        alg: alg.jose_name(),
        kid,
        typ,
    };
    let json = serde_json::to_vec(&header).map_err(|_| KeyError::InvalidMaterial)?;
    Ok(b64::encode(&json))
}

/// Longest signature of any tessera algorithm, in bytes (Ed25519 and P-256 `r || s`).
const MAX_SIGNATURE_LEN: usize = 64;

/// Signs `payload` (a JSON object) as a compact JWS with header `{alg, kid, typ}`.
pub fn sign(key: &SigningKey, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
    let fresh;
    let header = match key.cached_header(typ) {
        Some(header) => header,
        None => {
            fresh = encoded_header(key.algorithm(), key.kid(), typ)?;
            fresh.as_str()
        }
    };
    // One allocation of the final size: header, payload and signature are encoded in place.
    let capacity =
        header.len() + 2 + payload.len().div_ceil(3) * 4 + MAX_SIGNATURE_LEN.div_ceil(3) * 4;
    let mut token = String::with_capacity(capacity);
    token.push_str(header);
    token.push('.');
    b64::encode_to(payload, &mut token);
    let mut signature = [0u8; MAX_SIGNATURE_LEN];
    let len = key.sign_into(token.as_bytes(), &mut signature)?;
    token.push('.');
    b64::encode_to(
        signature.get(..len).ok_or(KeyError::InvalidMaterial)?,
        &mut token,
    );
    Ok(token)
}

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
pub fn verify(token: &str, keys: &KeySet, expected_typ: &str) -> Result<Vec<u8>, TokenError> {
    verify_then(token, keys, expected_typ, |payload| Ok(payload.to_vec()))
}

/// [`verify`], handing the payload to `then` from a buffer on the stack when it fits, so the
/// caller can parse it without a copy on the heap.
pub(crate) fn verify_then<R>(
    token: &str,
    keys: &KeySet,
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
            let key = keys.verifier(kid).ok_or(TokenError::UnknownKey)?;
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
/// the derived deserializers (tessera's structs have no flattened or ignored fields).
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
struct Segments<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    signing_input: &'a str,
}

impl<'a> Segments<'a> {
    fn split(token: &'a str) -> Result<Segments<'a>, TokenError> {
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

/// tessera's `kid`s are 22 base64url characters; accept up to [`MAX_KID_LEN`] of that
/// alphabet so that no path, URL or query text ever reaches a lookup or a log line.
pub(crate) fn is_well_formed_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && b64::is_alphabet_only(kid)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRecord;

    fn key_set(alg: Algorithm) -> (KeySet, KeyRecord) {
        let record = KeyRecord::generate(alg, 0).unwrap();
        (KeySet::new(&record, &[]).unwrap(), record)
    }

    fn forge(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(payload.as_bytes()),
            b64::encode(signature)
        )
    }

    #[test]
    fn round_trip_for_every_algorithm() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let (keys, _) = key_set(alg);
            let token = sign(keys.current(), ACCESS_TOKEN_TYPE, br#"{"a":1}"#).unwrap();
            assert_eq!(
                verify(&token, &keys, ACCESS_TOKEN_TYPE).unwrap(),
                br#"{"a":1}"#
            );
        }
    }

    #[test]
    fn alg_none_is_refused_in_any_case() {
        let (keys, record) = key_set(Algorithm::EdDsa);
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = format!(r#"{{"alg":"{alg}","kid":"{}","typ":"at+jwt"}}"#, record.kid);
            let token = forge(&header, r#"{"a":1}"#, b"");
            assert_eq!(
                verify(&token, &keys, ACCESS_TOKEN_TYPE),
                Err(TokenError::AlgorithmMismatch),
                "{alg}"
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        use aws_lc_rs::hmac;
        let (keys, record) = key_set(Algorithm::EdDsa);
        let header = format!(r#"{{"alg":"HS256","kid":"{}","typ":"at+jwt"}}"#, record.kid);
        let signing_input = format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(b"{}"));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &record.public),
            signing_input.as_bytes(),
        );
        let token = format!("{signing_input}.{}", b64::encode(tag.as_ref()));
        assert_eq!(
            verify(&token, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::AlgorithmMismatch)
        );
    }

    #[test]
    fn key_carrying_headers_are_forbidden() {
        let (keys, record) = key_set(Algorithm::EdDsa);
        for extra in [
            r#""jku":"http://127.0.0.1:9/k""#,
            r#""x5u":"http://x""#,
            r#""jwk":{}"#,
            r#""x5c":[]"#,
            r#""crit":["exp"]"#,
        ] {
            let header = format!(
                r#"{{"alg":"EdDSA","kid":"{}","typ":"at+jwt",{extra}}}"#,
                record.kid
            );
            assert_eq!(
                verify(&forge(&header, "{}", b"x"), &keys, ACCESS_TOKEN_TYPE),
                Err(TokenError::ForbiddenHeader),
                "{extra}"
            );
        }
    }

    #[test]
    fn duplicate_header_members_are_malformed() {
        let (keys, record) = key_set(Algorithm::EdDsa);
        let header = format!(
            r#"{{"alg":"EdDSA","alg":"EdDSA","kid":"{}","typ":"at+jwt"}}"#,
            record.kid
        );
        assert_eq!(
            verify(&forge(&header, "{}", b"x"), &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn wrong_typ_unknown_kid_and_oversize_are_refused() {
        let (keys, record) = key_set(Algorithm::EdDsa);
        let token = sign(keys.current(), "rt+jwt", b"{}").unwrap();
        assert_eq!(
            verify(&token, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::WrongType)
        );
        let header = r#"{"alg":"EdDSA","kid":"../../etc/passwd","typ":"at+jwt"}"#;
        assert_eq!(
            verify(&forge(header, "{}", b"x"), &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::UnknownKey)
        );
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&big, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::Oversized)
        );
        let _ = record;
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let (keys, _) = key_set(alg);
            let token = sign(keys.current(), ACCESS_TOKEN_TYPE, br#"{"sub":"u1"}"#).unwrap();
            let bytes = token.as_bytes();
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.to_vec();
                    flipped[i] ^= 1 << bit;
                    let Ok(text) = String::from_utf8(flipped) else {
                        continue;
                    };
                    assert!(
                        verify(&text, &keys, ACCESS_TOKEN_TYPE).is_err(),
                        "{alg}: byte {i} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn header_and_payload_must_be_utf8_json_objects() {
        let (keys, record) = key_set(Algorithm::Hs256);
        let signer = keys.current();
        let signed = |header: &[u8], payload: &[u8]| {
            let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
            let signature = signer.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", b64::encode(&signature))
        };
        let kid = &record.kid;
        let good_header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"at+jwt"}}"#);
        // The same header as a JSON array: serde would take it for the struct.
        let array_header =
            format!(r#"["HS256","{kid}","at+jwt",null,null,null,null,null,null,null]"#);
        let mut not_utf8 = good_header.clone().into_bytes();
        not_utf8.insert(1, 0xff);
        for header in [
            array_header.as_bytes(),
            &not_utf8,
            b"\"HS256\"",
            b"null",
            good_header.replace('}', "} {}").as_bytes(),
        ] {
            assert_eq!(
                verify(&signed(header, b"{}"), &keys, ACCESS_TOKEN_TYPE),
                Err(TokenError::Malformed),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        assert!(
            verify(
                &signed(good_header.as_bytes(), b"{}"),
                &keys,
                ACCESS_TOKEN_TYPE
            )
            .is_ok()
        );
    }

    #[test]
    fn kid_must_be_a_short_base64url_name() {
        let (keys, _) = key_set(Algorithm::EdDsa);
        for kid in [
            "",
            "../keys/current",
            "a/b",
            "a b",
            "k%2e",
            &"k".repeat(65),
            "é",
        ] {
            let header = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
            assert_eq!(
                verify(
                    &forge(&header.to_string(), "{}", b"x"),
                    &keys,
                    ACCESS_TOKEN_TYPE
                ),
                Err(TokenError::UnknownKey),
                "{kid:?}"
            );
            assert_eq!(peek_kid(&forge(&header.to_string(), "{}", b"x")), None);
        }
        let header = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
        assert_eq!(
            verify(&forge(header, "{}", b"x"), &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::UnknownKey),
            "no kid at all"
        );
    }

    #[test]
    fn verify_with_key_applies_every_rule_but_kid_and_typ() {
        let (keys, record) = key_set(Algorithm::EdDsa);
        let key = record.verifying_key().unwrap();
        let token = sign(keys.current(), "anything", b"{}").unwrap();
        assert_eq!(verify_with_key(&token, &key).unwrap(), b"{}");
        assert_eq!(peek_kid(&token).as_deref(), Some(record.kid.as_str()));
        let header = r#"{"alg":"EdDSA","jku":"http://127.0.0.1:9/"}"#;
        assert_eq!(
            verify_with_key(&forge(header, "{}", b"x"), &key),
            Err(TokenError::ForbiddenHeader)
        );
        assert_eq!(
            verify_with_key(&forge(r#"{"alg":"none"}"#, "{}", b""), &key),
            Err(TokenError::AlgorithmMismatch)
        );
        assert_eq!(
            verify_with_key(&"a".repeat(MAX_TOKEN_LEN + 1), &key),
            Err(TokenError::Oversized)
        );
    }

    #[test]
    fn signed_headers_are_exactly_the_json_object_alg_kid_typ() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let (keys, record) = key_set(alg);
            // The access-token header made in advance and one made per call.
            for typ in [ACCESS_TOKEN_TYPE, "rt+jwt", "a\"b"] {
                let token = sign(keys.current(), typ, b"{}").unwrap();
                let header = b64::decode(token.split('.').next().unwrap()).unwrap();
                let expected =
                    serde_json::json!({"alg": alg.jose_name(), "kid": record.kid, "typ": typ});
                assert_eq!(header, expected.to_string().into_bytes(), "{alg} {typ}");
                if !typ.contains('"') {
                    assert_eq!(verify(&token, &keys, typ).unwrap(), b"{}");
                }
            }
        }
    }

    #[test]
    fn large_headers_payloads_and_signatures_take_the_same_rules() {
        let (keys, record) = key_set(Algorithm::Hs256);
        let signer = keys.current();
        let signed = |header: &str, payload: &[u8]| {
            let input = format!(
                "{}.{}",
                b64::encode(header.as_bytes()),
                b64::encode(payload)
            );
            let signature = signer.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", b64::encode(&signature))
        };
        let kid = &record.kid;
        // A header over the stack buffer: fine when clean, refused when it carries `jku`.
        let padding = " ".repeat(2 * HEADER_STACK_LEN);
        let big_header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"at+jwt"{padding}}}"#);
        let payload = format!(r#"{{"a":"{}"}}"#, "x".repeat(2 * PAYLOAD_STACK_LEN));
        let token = signed(&big_header, payload.as_bytes());
        assert_eq!(
            verify(&token, &keys, ACCESS_TOKEN_TYPE).unwrap(),
            payload.as_bytes()
        );
        let forbidden =
            format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"at+jwt","jku":"x"{padding}}}"#);
        assert_eq!(
            verify(&signed(&forbidden, b"{}"), &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::ForbiddenHeader)
        );
        // A signature too long for any algorithm is a bad signature; a non-canonical one is
        // malformed, whatever its size.
        let good = signed(&big_header, b"{}");
        let (input, _) = good.rsplit_once('.').unwrap();
        let long = format!("{input}.{}", b64::encode(&[7u8; 4 * MAX_SIGNATURE_LEN]));
        assert_eq!(
            verify(&long, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::BadSignature)
        );
        let non_canonical = format!("{input}.{}R", b64::encode(&[7u8; 4 * MAX_SIGNATURE_LEN]));
        assert_eq!(
            verify(&non_canonical, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::Malformed)
        );
        let padded = format!("{good}=");
        assert_eq!(
            verify(&padded, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn the_exact_access_header_shortcut_keeps_every_rule() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let (keys, record) = key_set(alg);
            let other = KeyRecord::generate(alg, 0).unwrap();
            let both = KeySet::new(&record, std::slice::from_ref(&other)).unwrap();
            let token = sign(keys.current(), ACCESS_TOKEN_TYPE, b"{}").unwrap();
            let (header, rest) = token.split_once('.').unwrap();
            assert!(keys.access_verifier(header).is_some());
            assert_eq!(verify(&token, &both, ACCESS_TOKEN_TYPE).unwrap(), b"{}");
            // Another use of the same header is still judged by the full rules.
            assert_eq!(verify(&token, &keys, "rt+jwt"), Err(TokenError::WrongType));
            // The same header, signed by the other key of the set: a bad signature.
            let other_keys = KeySet::new(&other, &[]).unwrap();
            let forged = sign(other_keys.current(), ACCESS_TOKEN_TYPE, b"{}").unwrap();
            let (_, forged_rest) = forged.split_once('.').unwrap();
            let (_, forged_sig) = forged_rest.split_once('.').unwrap();
            let (payload, _) = rest.split_once('.').unwrap();
            assert_eq!(
                verify(
                    &format!("{header}.{payload}.{forged_sig}"),
                    &both,
                    ACCESS_TOKEN_TYPE
                ),
                Err(TokenError::BadSignature)
            );
            // A key set without that key knows no shortcut for it.
            assert_eq!(
                verify(&token, &other_keys, ACCESS_TOKEN_TYPE),
                Err(TokenError::UnknownKey)
            );
            // The same members spelled differently take the full path and verify too.
            let spaced = format!(
                r#"{{ "typ":"at+jwt", "alg":"{}", "kid":"{}" }}"#,
                alg.jose_name(),
                record.kid
            );
            let input = format!("{}.{}", b64::encode(spaced.as_bytes()), payload);
            let sig = keys.current().sign(input.as_bytes()).unwrap();
            let respelled = format!("{input}.{}", b64::encode(&sig));
            assert!(
                keys.access_verifier(respelled.split('.').next().unwrap())
                    .is_none()
            );
            assert_eq!(verify(&respelled, &keys, ACCESS_TOKEN_TYPE).unwrap(), b"{}");
        }
    }

    #[test]
    fn keys_with_malformed_kids_get_no_shortcut() {
        let mut record = KeyRecord::generate(Algorithm::Hs256, 0).unwrap();
        record.kid = "a/b".into();
        let keys = KeySet::new(&record, &[]).unwrap();
        let token = sign(keys.current(), ACCESS_TOKEN_TYPE, b"{}").unwrap();
        assert!(
            keys.access_verifier(token.split('.').next().unwrap())
                .is_none()
        );
        assert_eq!(
            verify(&token, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn token_from_another_key_set_is_refused() {
        let (keys, _) = key_set(Algorithm::EdDsa);
        let (other, _) = key_set(Algorithm::EdDsa);
        let token = sign(other.current(), ACCESS_TOKEN_TYPE, b"{}").unwrap();
        assert_eq!(
            verify(&token, &keys, ACCESS_TOKEN_TYPE),
            Err(TokenError::UnknownKey)
        );
    }
}
