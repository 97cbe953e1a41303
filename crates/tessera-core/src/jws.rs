//! JWS compact serialization (RFC 7515): signing here; parsing and strict verification
//! re-exported from [`tessera_token::jws`], the one place their rules live.

use crate::b64;
use crate::keys::{KeyError, SigningKey};

pub use tessera_token::jws::{
    ACCESS_TOKEN_TYPE, MAX_SIGNATURE_LEN, encoded_header, is_well_formed_kid, peek_kid, verify,
    verify_with_key,
};

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
        signature.get(..len).ok_or(KeyError::INVALID_MATERIAL)?,
        &mut token,
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyRecord, KeySet};
    use crate::{MAX_TOKEN_LEN, TokenError};

    /// The sizes up to which `tessera_token::jws` decodes a header and a payload on the stack.
    const HEADER_STACK_LEN: usize = 256;
    const PAYLOAD_STACK_LEN: usize = 1536;

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
            assert!(keys.verifying_keys().access_verifier(header).is_some());
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
                keys.verifying_keys()
                    .access_verifier(respelled.split('.').next().unwrap())
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
            keys.verifying_keys()
                .access_verifier(token.split('.').next().unwrap())
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
