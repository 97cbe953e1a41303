//! First-seen verification beside raw Ed25519, call by call: each round signs two fresh tokens
//! (untimed), then times aws-lc's `verify_sig` of one and a contender's verification of the
//! other, in alternating order. Both calls of a round run within ~100 µs of each other, so a
//! drift of the machine's speed (±15 % between criterion's functions on this machine) moves
//! both alike; the medians ignore the rounds a preemption hit.
//!
//! ```sh
//! cargo run --release -p tessera-bench --example verifier_paired -- 4000
//! ```
//!
//! Contenders: `verify_access_token` (tessera-token), `Verifier::verify` with fixed keys and no
//! feed (`verifier`), and the default verifier with its JWKS client and the revocation feed
//! followed (`verifier_following`). Prints a Markdown table: each median, their ratio, and the
//! median of the per-round ratios.

// A driver that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use tessera_bench::embedded::{VerifierBench, split};
use tessera_verify::Verifier;
use tessera_verify::tessera_token::verify_access_token;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(4000, |n| n.parse().expect("rounds: a number"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = runtime.block_on(VerifierBench::start()).unwrap();
    let contender = |name: &str, token: &str| match name {
        "verify_access_token" => {
            black_box(verify_access_token(token, &bench.keys, &bench.rules, bench.now).unwrap());
        }
        _ => {
            let verifier: &Verifier = if name == "verifier" {
                &bench.verifier
            } else {
                &bench.following
            };
            black_box(runtime.block_on(verifier.verify(token)).unwrap());
        }
    };
    println!(
        "| contender | primitive (median) | contender (median) | ratio of medians | median of per-round ratios |"
    );
    println!("|---|---:|---:|---:|---:|");
    for name in ["verify_access_token", "verifier", "verifier_following"] {
        let (mut primitive, mut measured, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (raw, fresh) = (bench.mint().unwrap(), bench.mint().unwrap());
            let (signed, signature) = split(&raw).unwrap();
            let time_primitive = || {
                let started = Instant::now();
                bench
                    .public
                    .verify_sig(black_box(signed.as_bytes()), black_box(&signature))
                    .unwrap();
                started.elapsed()
            };
            let time_contender = || {
                let started = Instant::now();
                contender(name, &fresh);
                started.elapsed()
            };
            let (p, c) = if round % 2 == 0 {
                let p = time_primitive();
                (p, time_contender())
            } else {
                let c = time_contender();
                (time_primitive(), c)
            };
            primitive.push(micros(p));
            measured.push(micros(c));
            ratios.push(micros(c) / micros(p));
        }
        let (p, c) = (median(&mut primitive), median(&mut measured));
        println!(
            "| {name} | {p:.2} µs | {c:.2} µs | {:.3}× | {:.3}× |",
            c / p,
            median(&mut ratios)
        );
    }
    println!("({rounds} rounds per contender)");
}
