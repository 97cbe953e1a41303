//! Runs one tessera-core operation, or the primitive it rests on, in a loop: a small driver
//! for instruction counts (`valgrind --tool=callgrind`) and `perf`, repeatable where criterion
//! timings on a shared machine are not. The per-call cost is the difference between two runs
//! with different iteration counts divided by the difference in iterations (setup cancels).
//!
//! `cargo run --release -p tessera-bench --example core_loop -- <operation> <iterations>`
//! with `<operation>` one of: `opaque_verify`, `opaque_verify_primitive`, `jwt_verify_hs256`,
//! `jwt_verify_hs256_primitive`, `jwt_issue_hs256`, `jwt_issue_hs256_primitive`,
//! `argon2id_verify`, `argon2id_hash`.

// A driver that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use aws_lc_rs::hmac;
use tessera_bench::{sample_claims, sha256};
use tessera_core::b64;
use tessera_core::claims::{self, ClaimRules};
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_core::opaque::{self, OpaqueKind, TokenHash};
use tessera_core::password::{PasswordHasher, PasswordParams};

const NOW: i64 = 1_800_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().expect("operation");
    let n: u64 = args.next().expect("iterations").parse().expect("a number");
    match op.as_str() {
        "opaque_verify" | "opaque_verify_primitive" => {
            let tokens: Vec<_> = (0..10_000)
                .map(|_| opaque::generate(OpaqueKind::Session).unwrap())
                .collect();
            let token = tokens[4321].token.clone();
            if op == "opaque_verify" {
                let map: HashMap<TokenHash, usize> = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.hash, i))
                    .collect();
                for _ in 0..n {
                    let hash = opaque::parse(black_box(&token), OpaqueKind::Session).unwrap();
                    black_box(map.get(&hash).copied());
                }
            } else {
                let map: HashMap<[u8; 32], usize> = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (*t.hash.as_bytes(), i))
                    .collect();
                for _ in 0..n {
                    black_box(map.get(&sha256(black_box(token.as_bytes()))).copied());
                }
            }
        }
        "jwt_verify_hs256"
        | "jwt_verify_hs256_primitive"
        | "jwt_issue_hs256"
        | "jwt_issue_hs256_primitive" => {
            let record = KeyRecord::generate(Algorithm::Hs256, 0).unwrap();
            let keys = KeySet::new(&record, &[]).unwrap();
            let key = hmac::Key::new(hmac::HMAC_SHA256, &record.private);
            let rules = ClaimRules {
                issuer: "tessera".into(),
                audience: "tessera".into(),
                leeway: 30,
            };
            let claims = sample_claims(NOW).unwrap();
            let token = claims::issue(&keys, &claims).unwrap();
            let (signed, sig_b64) = token.rsplit_once('.').unwrap();
            let sig = b64::decode(sig_b64).unwrap();
            for _ in 0..n {
                match op.as_str() {
                    "jwt_verify_hs256" => {
                        black_box(claims::verify(black_box(&token), &keys, &rules, NOW).unwrap());
                    }
                    "jwt_verify_hs256_primitive" => {
                        black_box(
                            hmac::verify(&key, black_box(signed.as_bytes()), black_box(&sig))
                                .is_ok(),
                        );
                    }
                    "jwt_issue_hs256" => {
                        black_box(claims::issue(&keys, black_box(&claims)).unwrap());
                    }
                    _ => {
                        black_box(
                            hmac::sign(&key, black_box(signed.as_bytes()))
                                .as_ref()
                                .to_vec(),
                        );
                    }
                }
            }
        }
        "argon2id_verify" | "argon2id_hash" => {
            let hasher = PasswordHasher::new(PasswordParams::default()).unwrap();
            let stored = hasher.hash("correct horse battery").unwrap();
            for _ in 0..n {
                if op == "argon2id_verify" {
                    assert!(hasher.verify(black_box("correct horse battery"), Some(&stored)));
                } else {
                    black_box(hasher.hash(black_box("correct horse battery")).unwrap());
                }
            }
        }
        other => panic!("unknown operation {other}"),
    }
}
