//! Every token of the shared corpus (`vectors/refused.json`) is refused, with the expected
//! error, for keys of every algorithm; the server's attack tests run the same corpus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "vectors/corpus.rs"]
mod corpus;
mod support;

use support::{NOW, TestKey, claims, key_set, rules};
use tessera_token::{Algorithm, TokenError, verify_access_token};

fn error_named(name: &str) -> TokenError {
    match name {
        "Oversized" => TokenError::Oversized,
        "Malformed" => TokenError::Malformed,
        "AlgorithmMismatch" => TokenError::AlgorithmMismatch,
        "ForbiddenHeader" => TokenError::ForbiddenHeader,
        "UnknownKey" => TokenError::UnknownKey,
        "WrongType" => TokenError::WrongType,
        "BadSignature" => TokenError::BadSignature,
        "WrongIssuer" => TokenError::WrongIssuer,
        "WrongAudience" => TokenError::WrongAudience,
        "NotYetValid" => TokenError::NotYetValid,
        "Expired" => TokenError::Expired,
        other => panic!("unknown error {other}"),
    }
}

#[test]
fn every_corpus_token_is_refused_with_its_error_for_every_algorithm() {
    let cases = corpus::cases();
    assert!(cases.len() > 150, "{}", cases.len());
    let mut failures = Vec::new();
    for algorithm in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
        let key = TestKey::new(algorithm, 0x21);
        // The set also holds a key of every other algorithm, as a JWKS with several keys does.
        let others: Vec<TestKey> = [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256]
            .into_iter()
            .filter(|a| *a != algorithm)
            .map(|a| TestKey::new(a, 0x31))
            .collect();
        let keys = key_set(&[&key, &others[0], &others[1]]);
        let sign = |input: &[u8]| key.signature(input);
        let genuine = corpus::Genuine {
            header: key.header(),
            claims: claims(),
            now: NOW,
            sign: &sign,
        };
        // The control: the genuine token verifies.
        let control = genuine.token(&serde_json::Map::new());
        assert!(verify_access_token(&control, &keys, &rules(), NOW).is_ok());
        let mut applied = 0;
        for case in &cases {
            if !genuine.applies(case) {
                continue;
            }
            applied += 1;
            let name = case["name"].as_str().unwrap();
            let expected = error_named(case["error"].as_str().unwrap());
            assert_eq!(expected.problem_code(), case["code"], "{name}");
            let token = genuine.token(case);
            let outcome = verify_access_token(&token, &keys, &rules(), NOW);
            if outcome != Err(expected) {
                failures.push(format!(
                    "{algorithm}: {name}: {outcome:?}, expected {expected:?}"
                ));
            }
        }
        assert!(applied + 2 >= cases.len(), "{algorithm}: {applied}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
