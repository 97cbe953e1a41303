//! The embedded verifier's benchmarks (tessera-verify and the tessera-token crate under it), each
//! beside raw Ed25519 verification of the same signing input, measured in the same run (group
//! convention: the function `primitive` is the baseline; `tessera-bench report` prints ratios).
//!
//! Group `embedded_verify_EdDSA`:
//! - `primitive`: aws-lc's Ed25519 `verify_sig` of the token's signing input and signature (the
//!   primitive `tessera_token`'s keys verify with), the key parsed once beforehand.
//! - `verify_access_token`: `tessera_token::verify_access_token` (the JWS and every header and
//!   claim rule). It keeps nothing between calls, so every call is a first-seen token; here the
//!   same token each time, as in `tokens.rs`.
//! - `verify_access_token_fresh`: the same with a fresh token per iteration, signed outside the
//!   timed part: the harness of `verifier_first_seen`, so the two differ by the verifier's own
//!   work alone.
//! - `verifier_first_seen`: `Verifier::verify` of a token it has never seen (a fresh token per
//!   iteration, signed outside the timed part): a cache miss, the verification and an insertion.
//! - `verifier_first_seen_cache_off`: the same with the verified-token cache turned off
//!   (`verified_cache(0)`): what the cache's miss and insertion cost a first-seen token.
//! - `verifier_seen`: `Verifier::verify` of a token it verified before: a hit in its
//!   verified-token cache, whose claims are checked again.
//! - `block_on_empty`: `block_on` of an empty future, the harness's share of the two above.
//!
//! The verifier is built as a service builds it (`build_with_keys`, keys read from the JWKS
//! document, the system clock, the default cache); async calls run with `block_on` on a
//! multi-thread tokio runtime built like the server's, as in `service.rs`.

// A benchmark that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use tessera_bench::{sample_claims, unix_now};
use tessera_core::b64;
use tessera_core::claims;
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_verify::Verifier;
use tessera_verify::tessera_token::{ClaimRules, VerifyingKeys, verify_access_token};

fn embedded_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let record = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
    let signing = KeySet::new(&record, &[]).unwrap();
    let jwks = json!({ "keys": [record.public_jwk().unwrap()] }).to_string();
    let keys = VerifyingKeys::from_jwks(&jwks).unwrap();
    let uncached = Verifier::builder("http://unused.invalid")
        .verified_cache(0)
        .build_with_keys(VerifyingKeys::from_jwks(&jwks).unwrap());
    let verifier = Verifier::builder("http://unused.invalid")
        .build_with_keys(VerifyingKeys::from_jwks(&jwks).unwrap());
    let rules = ClaimRules {
        issuer: "tessera".into(),
        audience: "tessera".into(),
        leeway: 30,
    };
    // Valid for ten minutes from now: the verifier reads the system clock.
    let now = unix_now();
    let mint = || claims::issue(&signing, &sample_claims(now).unwrap()).unwrap();
    let token = mint();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = b64::decode(signature).unwrap();
    let public = ParsedPublicKey::new(&ED25519, &record.public).unwrap();
    assert!(public.verify_sig(signed.as_bytes(), &signature).is_ok());
    assert!(verify_access_token(&token, &keys, &rules, now).is_ok());
    runtime.block_on(verifier.verify(&token)).unwrap();

    let mut group = c.benchmark_group("embedded_verify_EdDSA");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            public
                .verify_sig(black_box(signed.as_bytes()), black_box(&signature))
                .unwrap()
        })
    });
    group.bench_function("verify_access_token", |b| {
        b.iter(|| verify_access_token(black_box(&token), &keys, &rules, now).unwrap())
    });
    // Every minted token has its own random `sub`, `sid` and `jti`: none is presented twice.
    group.bench_function("verify_access_token_fresh", |b| {
        b.iter_batched(
            mint,
            |fresh| verify_access_token(&fresh, &keys, &rules, now).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verifier_first_seen", |b| {
        b.iter_batched(
            mint,
            |fresh| runtime.block_on(verifier.verify(&fresh)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verifier_first_seen_cache_off", |b| {
        b.iter_batched(
            mint,
            |fresh| runtime.block_on(uncached.verify(&fresh)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verifier_seen", |b| {
        b.iter(|| {
            runtime
                .block_on(verifier.verify(black_box(&token)))
                .unwrap()
        })
    });
    group.bench_function("block_on_empty", |b| {
        b.iter(|| runtime.block_on(async { black_box(1u8) }))
    });
    group.finish();
}

criterion_group!(benches, embedded_verify);
criterion_main!(benches);
