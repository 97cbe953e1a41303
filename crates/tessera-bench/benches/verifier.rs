//! The embedded verifier's benchmarks (tessera-verify and the tessera-token crate under it), each
//! beside raw Ed25519 verification measured in the same run (group convention: the function
//! `primitive` is the baseline; `tessera-bench report` prints ratios).
//!
//! The issuer is a real tessera started in-process (`VerifierBench`: SQLite, plain HTTP on
//! loopback), so one verifier can be built as a service builds it by default: keys from the
//! JWKS and the revocation feed followed. Criterion times one function after another, so a
//! drift of the machine's speed between them moves the ratios; `examples/verifier_paired.rs`
//! alternates the primitive and each contender call by call instead.
//!
//! Group `embedded_verify_EdDSA`, one token presented again and again:
//! - `primitive`: aws-lc's Ed25519 `verify_sig` of the token's signing input and signature (the
//!   primitive `tessera_token`'s keys verify with), the key parsed once beforehand.
//! - `verify_access_token`: `tessera_token::verify_access_token` (the JWS and every header and
//!   claim rule). It keeps nothing between calls, so every call is a first-seen token.
//! - `verifier_seen`: `Verifier::verify` of a token it verified before (fixed keys, no feed): a
//!   hit in its verified-token cache, whose claims are checked again.
//! - `verifier_seen_following`: the same with the default verifier (JWKS client and revocation
//!   feed): also the current keys' lookup and the denylist probe.
//! - `block_on_empty`: `block_on` of an empty future, the harness's share of the two above.
//!
//! Groups `embedded_first_seen_EdDSA_round<N>`, a fresh token per iteration, signed outside
//! the timed part; three rounds, so each ratio has two neighbours to be read against (this
//! machine's speed drifts by ±10 % between minutes):
//! - `primitive`: `verify_sig` of that fresh token's signing input and signature (split and
//!   decoded outside the timed part): the same memory traffic as the functions beside it.
//! - `verify_access_token`: as above, on the fresh token.
//! - `verifier`: `Verifier::verify`, fixed keys, no feed: a cache miss, the verification and an
//!   insertion. `verifier_cache_off`: the same with `verified_cache(0)`.
//! - `verifier_following`: the default verifier (JWKS client, feed followed, default cache).
//!
//! Async calls run with `block_on` on a multi-thread tokio runtime built like the server's, as
//! in `service.rs`; the issuer serves on that runtime's workers.

// A benchmark that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tessera_bench::embedded::{VerifierBench, split};
use tessera_verify::tessera_token::verify_access_token;

/// Rounds of the first-seen group.
const ROUNDS: usize = 3;

fn embedded_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = runtime.block_on(VerifierBench::start()).unwrap();
    let VerifierBench {
        public,
        keys,
        rules,
        verifier,
        uncached,
        following,
        now,
        ..
    } = &bench;
    let mint = || bench.mint().unwrap();
    let token = mint();
    let (signed, signature) = split(&token).unwrap();
    assert!(public.verify_sig(signed.as_bytes(), &signature).is_ok());
    assert!(verify_access_token(&token, keys, rules, *now).is_ok());
    for v in [verifier, uncached, following] {
        runtime.block_on(v.verify(&token)).unwrap();
    }

    let mut group = c.benchmark_group("embedded_verify_EdDSA");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            public
                .verify_sig(black_box(signed.as_bytes()), black_box(&signature))
                .unwrap()
        })
    });
    group.bench_function("verify_access_token", |b| {
        b.iter(|| verify_access_token(black_box(&token), keys, rules, *now).unwrap())
    });
    for (name, v) in [
        ("verifier_seen", verifier),
        ("verifier_seen_following", following),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(v.verify(black_box(&token))).unwrap())
        });
    }
    group.bench_function("block_on_empty", |b| {
        b.iter(|| runtime.block_on(async { black_box(1u8) }))
    });
    group.finish();

    for round in 1..=ROUNDS {
        let mut group = c.benchmark_group(format!("embedded_first_seen_EdDSA_round{round}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        group.bench_function("primitive", |b| {
            b.iter_batched(
                || {
                    let fresh = mint();
                    let (signed, signature) = split(&fresh).unwrap();
                    (signed.len(), signature, fresh)
                },
                |(signed, signature, fresh)| {
                    public
                        .verify_sig(&fresh.as_bytes()[..signed], &signature)
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("verify_access_token", |b| {
            b.iter_batched(
                mint,
                |fresh| verify_access_token(&fresh, keys, rules, *now).unwrap(),
                BatchSize::SmallInput,
            )
        });
        for (name, v) in [
            ("verifier", verifier),
            ("verifier_cache_off", uncached),
            ("verifier_following", following),
        ] {
            group.bench_function(name, |b| {
                b.iter_batched(
                    mint,
                    |fresh| runtime.block_on(v.verify(&fresh)).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, embedded_verify);
criterion_main!(benches);
