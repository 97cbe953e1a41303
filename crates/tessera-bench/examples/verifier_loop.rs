//! Runs one step of the embedded verifier, or raw Ed25519 verification, on N tokens: a driver
//! for instruction counts that a shared machine's load does not move (criterion's timings do).
//!
//! ```sh
//! # the bench profile keeps the symbols callgrind's toggle needs (release strips them)
//! cargo build --profile bench -p tessera-bench --example verifier_loop
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/examples/verifier_loop <operation> 2000
//! ```
//!
//! Only `measured` (one call per token) is counted, so the total divided by N is the cost of
//! one call; the tokens are signed beforehand, outside it. `<operation>` is one of
//! `primitive` (aws-lc's Ed25519 `verify_sig` of the signing input), `verify_access_token`
//! (tessera-token), `verifier_first_seen` (`Verifier::verify` of N distinct tokens) and
//! `verifier_seen` (`Verifier::verify` of one token seen before, N times). The verifier's
//! future is polled once (`now_or_never`): with fixed keys it never waits, and no runtime's
//! instructions are counted.

// A driver that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use futures_util::FutureExt as _;
use serde_json::json;
use tessera_bench::{sample_claims, unix_now};
use tessera_core::b64;
use tessera_core::claims;
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_verify::Verifier;
use tessera_verify::tessera_token::{ClaimRules, VerifyingKeys, verify_access_token};

/// What one call works on.
struct Setup {
    public: ParsedPublicKey,
    keys: VerifyingKeys,
    rules: ClaimRules,
    verifier: Verifier,
    now: i64,
}

#[inline(never)]
fn measured(op: &str, setup: &Setup, token: &str) {
    match op {
        "primitive" => {
            let (signed, signature) = token.rsplit_once('.').unwrap();
            let signature = b64::decode(signature).unwrap();
            setup
                .public
                .verify_sig(black_box(signed.as_bytes()), &signature)
                .unwrap();
        }
        "verify_access_token" => {
            black_box(verify_access_token(token, &setup.keys, &setup.rules, setup.now).unwrap());
        }
        _ => {
            let session = setup.verifier.verify(token).now_or_never();
            black_box(session.expect("never waits").unwrap());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().expect("operation");
    let n: usize = args.next().expect("iterations").parse().expect("a number");
    assert!(
        [
            "primitive",
            "verify_access_token",
            "verifier_first_seen",
            "verifier_seen"
        ]
        .contains(&op.as_str()),
        "unknown operation {op}"
    );
    let record = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
    let signing = KeySet::new(&record, &[]).unwrap();
    let jwks = json!({ "keys": [record.public_jwk().unwrap()] }).to_string();
    let setup = Setup {
        public: ParsedPublicKey::new(&ED25519, &record.public).unwrap(),
        keys: VerifyingKeys::from_jwks(&jwks).unwrap(),
        rules: ClaimRules {
            issuer: "tessera".into(),
            audience: "tessera".into(),
            leeway: 30,
        },
        verifier: Verifier::builder("http://unused.invalid")
            .build_with_keys(VerifyingKeys::from_jwks(&jwks).unwrap()),
        now: unix_now(),
    };
    let mint = || claims::issue(&signing, &sample_claims(setup.now).unwrap()).unwrap();
    let tokens: Vec<String> = if op == "verifier_seen" {
        let token = mint();
        setup
            .verifier
            .verify(&token)
            .now_or_never()
            .unwrap()
            .unwrap();
        vec![token; n]
    } else {
        (0..n).map(|_| mint()).collect()
    };
    for token in &tokens {
        measured(&op, &setup, token);
    }
}
