//! JWS compact serialization (RFC 7515), signing and strict verification.
//!
//! Written here rather than taken from a JOSE crate because tessera needs rules those crates
//! do not enforce together: strict canonical base64url, refusal of duplicate JSON members,
//! refusal of every key-carrying header (`jku`, `x5u`, `jwk`, `x5c`) and of `crit`, an exact
//! `typ`, and a direct call into aws-lc with no per-token allocation of key objects.

use serde::Deserialize;

use crate::keys::{KeyError, KeySet, SigningKey};
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

/// Signs `payload` (a JSON object) as a compact JWS with header `{alg, kid, typ}`.
pub fn sign(key: &SigningKey, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
    let header =
        serde_json::json!({ "alg": key.algorithm().jose_name(), "kid": key.kid(), "typ": typ });
    let mut token = b64::encode(header.to_string().as_bytes());
    token.push('.');
    token.push_str(&b64::encode(payload));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(&signature));
    Ok(token)
}

/// Verifies a compact JWS against `keys` and returns its payload bytes.
///
/// # Security
/// - Size is checked before any decoding ([`MAX_TOKEN_LEN`]).
/// - The key is chosen by `kid` only, and the header's `alg` must equal that key's algorithm
///   exactly, so `none`, algorithm substitution and key confusion cannot succeed.
/// - Header parameters that point at keys or demand extensions are refused, never followed:
///   verification makes no network request.
/// - `typ` must equal `expected_typ`, so a token minted for another use is refused.
pub fn verify(token: &str, keys: &KeySet, expected_typ: &str) -> Result<Vec<u8>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Oversized);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = b64::decode(header_b64).ok_or(TokenError::Malformed)?;
    let header: Header<'_> =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
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
    if header.typ != Some(expected_typ) {
        return Err(TokenError::WrongType);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    if kid.is_empty() || kid.len() > MAX_KID_LEN {
        return Err(TokenError::UnknownKey);
    }
    let key = keys.verifier(kid).ok_or(TokenError::UnknownKey)?;
    if header.alg != key.algorithm().jose_name() {
        return Err(TokenError::AlgorithmMismatch);
    }
    let signature = b64::decode(signature_b64).ok_or(TokenError::Malformed)?;
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let signed = token.get(..signed_len).ok_or(TokenError::Malformed)?;
    if !key.verify(signed.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }
    b64::decode(payload_b64).ok_or(TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyRecord};

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
