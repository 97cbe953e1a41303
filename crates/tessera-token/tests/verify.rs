//! Verifying tokens with keys from a JWKS: every algorithm tessera publishes, claims a later
//! server may add, and the keys a verifier must not take.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::{NOW, TestKey, claims, jwks, key_set, rules};
use tessera_token::{
    Algorithm, JwksError, TokenError, VerifyingKeys, claims::decode, verify_access_token,
};

fn published() -> (TestKey, TestKey, VerifyingKeys) {
    let ed = TestKey::new(Algorithm::EdDsa, 1);
    let es = TestKey::new(Algorithm::Es256, 2);
    let keys = VerifyingKeys::from_jwks(jwks(&[&ed, &es])).unwrap();
    (ed, es, keys)
}

#[test]
fn tokens_of_every_published_algorithm_verify_with_the_jwks() {
    let (ed, es, keys) = published();
    assert_eq!(keys.len(), 2);
    for key in [&ed, &es] {
        let token = key.sign(&claims());
        let verified = verify_access_token(&token, &keys, &rules(), NOW).unwrap();
        assert_eq!(verified.sub, "u-42", "{}", key.algorithm);
        assert_eq!(verified.roles, ["editor"]);
        // Through the access-header shortcut, and through the full path when respelled.
        let header = token.split('.').next().unwrap();
        assert!(keys.access_verifier(header).is_some());
        let respelled = json!({"typ": "at+jwt", "kid": key.kid, "alg": key.algorithm.jose_name()});
        let token = key.sign_raw(
            format!(" {respelled}").as_bytes(),
            claims().to_string().as_bytes(),
        );
        assert!(verify_access_token(&token, &keys, &rules(), NOW).is_ok());
    }
}

#[test]
fn hs256_keys_are_never_in_a_jwks_and_their_tokens_name_an_unknown_key() {
    let (ed, _, keys) = published();
    let hs = TestKey::new(Algorithm::Hs256, 3);
    assert_eq!(jwks(&[&ed, &hs]), jwks(&[&ed]));
    let token = hs.sign(&claims());
    assert_eq!(
        verify_access_token(&token, &keys, &rules(), NOW),
        Err(TokenError::UnknownKey)
    );
    // A server holding the secret verifies the same token.
    assert!(verify_access_token(&token, &key_set(&[&hs]), &rules(), NOW).is_ok());
}

#[test]
fn claims_a_later_server_adds_are_accepted() {
    let (ed, es, keys) = published();
    for extra in [
        json!({"email": "alice@example.com"}),
        json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
        json!({"x-amr": ["pwd", "otp"], "x-auth": {"time": null}}),
        json!({"x-future": {"nested": [{"a": 1}, {"a": 2}], "n": 1.5}, "scope": "docs"}),
    ] {
        let mut claims = claims();
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        for key in [&ed, &es] {
            let verified = verify_access_token(&key.sign(&claims), &keys, &rules(), NOW);
            assert_eq!(verified.unwrap().sid, "s-42", "{extra}");
        }
        assert!(decode(claims.to_string().as_bytes()).is_ok(), "{extra}");
    }
}

#[test]
fn how_the_user_signed_in_is_read_and_unknown_methods_are_ignored() {
    let (ed, _, keys) = published();
    let mut signed_in = claims();
    signed_in["amr"] = json!(["pwd", "otp", "face"]);
    signed_in["acr"] = json!("aal2");
    signed_in["auth_time"] = json!(1_799_999_000);
    let verified = verify_access_token(&ed.sign(&signed_in), &keys, &rules(), NOW).unwrap();
    assert_eq!(verified.amr.names(), ["pwd", "otp"]);
    assert_eq!(verified.amr.level(), tessera_token::Aal::Aal2);
    assert_eq!(verified.auth_time, Some(1_799_999_000));
    // Absent, as in tokens from before tessera recorded them: no method, no time.
    let verified = verify_access_token(&ed.sign(&claims()), &keys, &rules(), NOW).unwrap();
    assert_eq!(verified.amr, tessera_token::Methods::NONE);
    assert_eq!(verified.auth_time, None);
    // Wrongly typed, they are refused like any known claim.
    for (name, value) in [
        ("amr", json!("pwd")),
        ("amr", json!([1])),
        ("acr", json!(null)),
        ("auth_time", json!("1799999000")),
    ] {
        let mut wrong = claims();
        wrong[name] = value.clone();
        let refused = verify_access_token(&ed.sign(&wrong), &keys, &rules(), NOW);
        assert_eq!(refused, Err(TokenError::Malformed), "{name}: {value}");
    }
}

#[test]
fn known_claims_of_the_wrong_type_are_refused_even_beside_new_ones() {
    let (ed, _, keys) = published();
    for (name, value) in [
        ("exp", json!("1800000600")),
        ("nbf", json!(1.8e9)),
        ("roles", json!("editor")),
        ("perms", json!([["docs:read"]])),
        ("sub", json!(42)),
        ("sid", Value::Null),
    ] {
        let mut claims = claims();
        claims["x-new"] = json!(true);
        claims[name] = value.clone();
        assert_eq!(
            verify_access_token(&ed.sign(&claims), &keys, &rules(), NOW),
            Err(TokenError::Malformed),
            "{name} = {value}"
        );
    }
}

#[test]
fn tesseras_own_jwks_document_is_accepted_as_bytes_or_text() {
    let (ed, es, _) = published();
    let text = jwks(&[&ed, &es]);
    assert_eq!(VerifyingKeys::from_jwks(text.as_bytes()).unwrap().len(), 2);
    assert_eq!(VerifyingKeys::from_jwks(text.clone()).unwrap().len(), 2);
    assert!(
        VerifyingKeys::from_jwks(r#"{"keys":[]}"#)
            .unwrap()
            .is_empty()
    );
    // Members tessera does not use are ignored, so is a missing `alg` or `use`.
    let mut jwk = ed.jwk().unwrap();
    jwk["key_ops"] = json!(["verify"]);
    jwk.as_object_mut().unwrap().remove("alg");
    jwk.as_object_mut().unwrap().remove("use");
    let document = json!({"keys": [jwk], "other": 1}).to_string();
    let keys = VerifyingKeys::from_jwks(document).unwrap();
    assert_eq!(keys.get(&ed.kid).unwrap().algorithm(), Algorithm::EdDsa);
}

/// A JWKS with `ed`'s key changed by `change`.
fn refused(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> JwksError {
    let ed = TestKey::new(Algorithm::EdDsa, 1);
    let mut jwk = ed.jwk().unwrap();
    change(jwk.as_object_mut().unwrap());
    VerifyingKeys::from_jwks(json!({ "keys": [jwk] }).to_string()).unwrap_err()
}

#[test]
fn keys_a_verifier_cannot_use_are_refused_with_clear_errors() {
    let es = TestKey::new(Algorithm::Es256, 2).jwk().unwrap();
    let kid = TestKey::new(Algorithm::EdDsa, 1).kid;
    let unsupported = |e: JwksError| matches!(e, JwksError::Unsupported { .. });
    assert!(unsupported(refused(|k| {
        k.insert("kty".into(), json!("oct"));
    })));
    assert!(unsupported(refused(|k| {
        k.insert("kty".into(), json!("RSA"));
    })));
    assert!(unsupported(refused(|k| {
        k.insert("crv".into(), json!("X25519"));
    })));
    assert!(unsupported(refused(|k| {
        k.insert("crv".into(), json!("P-256"));
    })));
    assert!(unsupported(refused(|k| {
        k.remove("kty");
    })));
    for alg in ["ES256", "HS256", "none", "eddsa", "RS256"] {
        let error = refused(|k| {
            k.insert("alg".into(), json!(alg));
        });
        assert!(unsupported(error.clone()), "{alg}");
        assert!(error.to_string().contains(&kid), "{error}");
    }
    assert!(unsupported(refused(|k| {
        k.insert("use".into(), json!("enc"));
    })));
    assert!(unsupported(refused(|k| {
        k.insert("alg".into(), json!(7));
    })));
    for member in ["d", "k", "p"] {
        assert_eq!(
            refused(|k| {
                k.insert(member.into(), json!("AAAA"));
            }),
            JwksError::PrivateMember {
                kid: kid.clone(),
                member: member.into()
            }
        );
    }
    for bad in [
        json!(null),
        json!(""),
        json!("a/b"),
        json!("k".repeat(65)),
        json!(7),
    ] {
        assert_eq!(
            refused(|k| {
                k.insert("kid".into(), bad.clone());
            }),
            JwksError::BadKid { index: 0 },
            "{bad}"
        );
    }
    let invalid = JwksError::InvalidMaterial { kid: kid.clone() };
    assert_eq!(refused(|k| drop(k.remove("x"))), invalid);
    assert_eq!(
        refused(|k| {
            let x = k["x"].as_str().unwrap().to_owned();
            k.insert("x".into(), json!(format!("{x}=")));
        }),
        invalid
    );
    assert_eq!(
        refused(|k| {
            k.insert("x".into(), json!("AAAA"));
        }),
        invalid
    );
    assert_eq!(
        refused(|k| {
            k.insert("y".into(), es["y"].clone());
        }),
        invalid
    );
    // A P-256 "point" off the curve.
    let mut off_curve = es.clone();
    off_curve["y"] = off_curve["x"].clone();
    let error = VerifyingKeys::from_jwks(json!({ "keys": [off_curve] }).to_string()).unwrap_err();
    assert!(
        matches!(error, JwksError::InvalidMaterial { .. }),
        "{error}"
    );
}

#[test]
fn malformed_documents_and_duplicate_kids_are_refused_whole() {
    let (ed, es, _) = published();
    let (ed_jwk, es_jwk) = (ed.jwk().unwrap(), es.jwk().unwrap());
    let mut same_kid = es_jwk.clone();
    same_kid["kid"] = ed_jwk["kid"].clone();
    assert_eq!(
        VerifyingKeys::from_jwks(json!({ "keys": [ed_jwk, same_kid] }).to_string()).unwrap_err(),
        JwksError::DuplicateKid {
            kid: ed.kid.clone()
        }
    );
    let duplicate_member = format!(r#"{{"keys":[{}],"keys":[]}}"#, ed_jwk);
    let nested_duplicate = ed_jwk.to_string().replacen('{', r#"{"kty":"EC","#, 1);
    for document in [
        "".to_owned(),
        "[]".to_owned(),
        "null".to_owned(),
        r#"{"keys":{}}"#.to_owned(),
        r#"{"keys":[1]}"#.to_owned(),
        r#"{"key":[]}"#.to_owned(),
        duplicate_member,
        format!(r#"{{"keys":[{nested_duplicate}]}}"#),
        format!(r#"{{"keys":[{ed_jwk}]}} x"#),
    ] {
        assert!(
            matches!(
                VerifyingKeys::from_jwks(&document),
                Err(JwksError::NotAJwks(_))
            ),
            "{document}"
        );
    }
    assert!(matches!(
        VerifyingKeys::from_jwks(b"\xff{}".as_slice()),
        Err(JwksError::NotAJwks(_))
    ));
    let huge = format!(
        r#"{{"keys":[],"pad":"{}"}}"#,
        "a".repeat(tessera_token::jwks::MAX_JWKS_LEN)
    );
    assert_eq!(
        VerifyingKeys::from_jwks(huge).unwrap_err(),
        JwksError::TooLarge
    );
}

#[test]
fn a_token_from_a_key_outside_the_jwks_names_an_unknown_key() {
    let (_, _, keys) = published();
    let stranger = TestKey::new(Algorithm::EdDsa, 9);
    assert_eq!(
        verify_access_token(&stranger.sign(&claims()), &keys, &rules(), NOW),
        Err(TokenError::UnknownKey)
    );
}
