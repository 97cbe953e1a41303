//! The crate-level example's JWKS and token are what the test keys make.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{TestKey, claims, jwks};
use tessera_token::Algorithm;

#[test]
fn the_crate_example_uses_a_genuine_token() {
    let key = TestKey::new(Algorithm::EdDsa, 0x42);
    let token = key.sign(&claims());
    let jwks = jwks(&[&key]);
    let doc = include_str!("../src/lib.rs");
    // The literal pieces of `let token = concat!(...)`, joined.
    let start = doc.find("let token = concat!(").unwrap();
    let end = start + doc[start..].find(");").unwrap();
    let pieces: String = doc[start..end].split('"').skip(1).step_by(2).collect();
    assert_eq!(pieces, token);
    assert!(jwks.contains("\"kty\":\"OKP\""));
    let jwk = key.jwk().unwrap();
    assert!(doc.contains(jwk["kid"].as_str().unwrap()), "kid");
    assert!(doc.contains(jwk["x"].as_str().unwrap()), "x");
}
