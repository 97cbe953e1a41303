//! In-process token benchmarks: issue and verify for each format and algorithm, each beside the
//! raw crypto primitive it rests on, measured in the same run (group convention: the function
//! `primitive` is the baseline; `tessera-bench report` prints the ratios). Also the raw
//! primitives alone and Argon2id at the configured parameters.

// A benchmark that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, ParsedPublicKey};
use criterion::{Criterion, criterion_group, criterion_main};
use tessera_bench::{sample_claims, sha256};
use tessera_core::claims::{self, ClaimRules};
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_core::opaque::{self, OpaqueKind, TokenHash};
use tessera_core::password::{PasswordHasher, PasswordParams};
use tessera_core::{b64, random};

const NOW: i64 = 1_800_000_000;

fn primitives(c: &mut Criterion) {
    let input = [7u8; 32];
    let mut group = c.benchmark_group("sha256_32B");
    group.bench_function("primitive", |b| b.iter(|| sha256(black_box(&input))));
    group.finish();
}

fn opaque_tokens(c: &mut Criterion) {
    // A map of 10 000 sessions, as an in-memory store would hold them.
    let tokens: Vec<_> = (0..10_000)
        .map(|_| opaque::generate(OpaqueKind::Session).unwrap())
        .collect();
    let by_hash: HashMap<TokenHash, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.hash, i))
        .collect();
    let by_bytes: HashMap<[u8; 32], usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (*t.hash.as_bytes(), i))
        .collect();
    let token = tokens[4321].token.clone();

    let mut group = c.benchmark_group("opaque_verify");
    group.bench_function("primitive", |b| {
        b.iter(|| by_bytes.get(&sha256(black_box(token.as_bytes()))).copied())
    });
    group.bench_function("tessera", |b| {
        b.iter(|| {
            let hash = opaque::parse(black_box(&token), OpaqueKind::Session).unwrap();
            by_hash.get(&hash).copied()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("opaque_issue");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            let bytes = random::bytes::<32>().unwrap();
            sha256(&bytes)
        })
    });
    group.bench_function("tessera", |b| {
        b.iter(|| opaque::generate(OpaqueKind::Session).unwrap())
    });
    group.finish();
}

/// The raw signature operations of one key, built once, outside the timed loop.
enum Raw {
    Ed25519(Ed25519KeyPair, ParsedPublicKey),
    Es256(EcdsaKeyPair, ParsedPublicKey, SystemRandom),
    Hs256(Box<hmac::Key>),
}

impl Raw {
    fn new(record: &KeyRecord) -> Raw {
        match record.algorithm {
            Algorithm::EdDsa => Raw::Ed25519(
                Ed25519KeyPair::from_pkcs8(&record.private).unwrap(),
                ParsedPublicKey::new(&signature::ED25519, &record.public).unwrap(),
            ),
            Algorithm::Es256 => Raw::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &record.private,
                )
                .unwrap(),
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &record.public).unwrap(),
                SystemRandom::new(),
            ),
            Algorithm::Hs256 => {
                Raw::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &record.private)))
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Raw::Ed25519(pair, _) => pair.sign(message).as_ref().to_vec(),
            Raw::Es256(pair, _, rng) => pair.sign(rng, message).unwrap().as_ref().to_vec(),
            Raw::Hs256(key) => hmac::sign(key, message).as_ref().to_vec(),
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Raw::Ed25519(_, public) | Raw::Es256(_, public, _) => {
                public.verify_sig(message, sig).is_ok()
            }
            Raw::Hs256(key) => hmac::verify(key, message, sig).is_ok(),
        }
    }
}

fn jwt_tokens(c: &mut Criterion) {
    let rules = ClaimRules {
        issuer: "tessera".into(),
        audience: "tessera".into(),
        leeway: 30,
    };
    for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
        let record = KeyRecord::generate(alg, 0).unwrap();
        let keys = KeySet::new(&record, &[]).unwrap();
        let raw = Raw::new(&record);
        let claims = sample_claims(NOW).unwrap();
        let token = claims::issue(&keys, &claims).unwrap();
        let (signed, sig_b64) = token.rsplit_once('.').unwrap();
        let sig = b64::decode(sig_b64).unwrap();
        assert!(raw.verify(signed.as_bytes(), &sig));

        let mut group = c.benchmark_group(format!("jwt_verify_{alg}"));
        group.bench_function("primitive", |b| {
            b.iter(|| raw.verify(black_box(signed.as_bytes()), black_box(&sig)))
        });
        group.bench_function("tessera", |b| {
            b.iter(|| claims::verify(black_box(&token), &keys, &rules, NOW).unwrap())
        });
        group.finish();

        let mut group = c.benchmark_group(format!("jwt_issue_{alg}"));
        group.bench_function("primitive", |b| {
            b.iter(|| raw.sign(black_box(signed.as_bytes())))
        });
        group.bench_function("tessera", |b| {
            b.iter(|| claims::issue(&keys, black_box(&claims)).unwrap())
        });
        group.finish();
    }
}

fn argon2id(c: &mut Criterion) {
    let hasher = PasswordHasher::new(PasswordParams::default()).unwrap();
    let stored = hasher.hash("correct horse battery").unwrap();
    let mut group = c.benchmark_group("argon2id_m19456_t2_p1");
    group.sample_size(10);
    group.bench_function("hash", |b| {
        b.iter(|| hasher.hash(black_box("correct horse battery")).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| hasher.verify(black_box("correct horse battery"), Some(&stored)))
    });
    group.finish();
}

/// `dpop_proof_ES256`: `tessera_token::dpop::check_proof` on a fresh P-256 proof (header and
/// claims parsed strictly, the key read from its JWK and its thumbprint taken, the signature,
/// `htm`/`htu`/`iat`/`ath`) against the signature verification alone on the same bytes.
fn dpop_proofs(c: &mut Criterion) {
    use tessera_core::dpop::{ProofCheck, access_token_hash, check_proof};
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = aws_lc_rs::signature::KeyPair::public_key(&key)
        .as_ref()
        .to_vec();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65]),
    });
    let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk });
    let url = "https://auth.example/v1/session";
    let claims = serde_json::json!({
        "jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": url, "iat": NOW,
        "ath": access_token_hash("token"),
    });
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let signature = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    let proof = format!("{input}.{}", b64::encode(signature.as_ref()));
    let public = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point).unwrap();
    let check = ProofCheck {
        method: "GET",
        url,
        now: NOW,
        max_age: 60,
        leeway: 30,
        access_token: Some("token"),
        nonces: &[],
    };
    assert!(check_proof(&proof, &check).is_ok());
    let mut group = c.benchmark_group("dpop_proof_ES256");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            assert!(
                public
                    .verify_sig(black_box(input.as_bytes()), signature.as_ref())
                    .is_ok()
            )
        })
    });
    group.bench_function("tessera", |b| {
        b.iter(|| check_proof(black_box(&proof), &check).unwrap())
    });
    group.finish();
}

criterion_group!(
    benches,
    primitives,
    opaque_tokens,
    jwt_tokens,
    argon2id,
    dpop_proofs
);
criterion_main!(benches);
