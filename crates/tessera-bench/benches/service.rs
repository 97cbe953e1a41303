//! In-process service benchmarks: store lookups by token hash and `Tessera::authenticate` on the
//! SQLite store, each beside its raw parts measured in the same run (group convention: the
//! function `primitive` is the baseline).
//!
//! - `store_lookup_by_hash`: `SqliteStore::session_by_access_hash` without its session-record
//!   cache (`sqlite_store`) and with it, a session seen before (`sqlite_store_cached`), vs the
//!   same SELECT on a bare rusqlite connection reading the same columns into owned values.
//! - `verify_opaque`: `authenticate` of an opaque token without the record cache
//!   (`authenticate`) and with it (`authenticate_cached`) vs SHA-256 + that bare SELECT.
//! - `verify_jwt_EdDSA`: `authenticate` of a JWT never seen before (a fresh token per iteration)
//!   and of one seen before (verified-token cache hit), vs Ed25519 verify + the bare SELECT by
//!   session id; both on the default store, whose record cache answers the `sid` lookup.
//!
//! Async calls run with `block_on` on a multi-thread tokio runtime built like the server's.

// A benchmark that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension};
use tessera_bench::{Fixture, bench_config, sha256};
use tessera_core::b64;
use tessera_core::opaque::{OpaqueKind, parse};
use tessera_store::SessionStore;

/// The columns the store reads for a session record, on a plain connection.
const SELECT: &str = "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_expires_at, \
     s.absolute_expires_at, s.revoked_at, s.ip, s.user_agent, u.username, u.roles, \
     u.permissions, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id";

/// The same columns the store reads, as owned values (the store also parses the two JSON lists).
#[allow(dead_code)] // Read only through black_box.
struct Row {
    strings: [String; 3],
    times: [i64; 4],
    revoked_at: Option<i64>,
    client: [Option<String>; 2],
    lists: [String; 2],
    disabled: bool,
}

fn select(conn: &Connection, sql: &str, key: &dyn rusqlite::ToSql) -> Option<Row> {
    conn.prepare_cached(sql)
        .unwrap()
        .query_row([key], |r| {
            Ok(Row {
                strings: [r.get(0)?, r.get(1)?, r.get(9)?],
                times: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                revoked_at: r.get(6)?,
                client: [r.get(7)?, r.get(8)?],
                lists: [r.get(10)?, r.get(11)?],
                disabled: r.get(12)?,
            })
        })
        .optional()
        .unwrap()
}

fn service(c: &mut Criterion) {
    let (runtime, fixture) = Fixture::on_new_runtime().unwrap();
    // The same service without the SQLite store's session-record cache: every lookup reads
    // the database, as a session not seen recently does.
    let uncached = runtime
        .block_on(Fixture::new(&bench_config(|c| {
            c.session_cache_capacity = 0
        })))
        .unwrap();
    let uncached_hash = parse(&uncached.opaque, OpaqueKind::Session).unwrap();
    let raw = Connection::open(fixture.store.path()).unwrap();
    // As the store's connections: no re-prepare on every new binding.
    raw.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .unwrap();
    let by_hash = format!("{SELECT} WHERE s.access_hash = ?1");
    let by_id = format!("{SELECT} WHERE s.id = ?1");
    let opaque = fixture.opaque.clone();
    let hash = parse(&opaque, OpaqueKind::Session).unwrap();
    assert!(select(&raw, &by_hash, &&hash.as_bytes()[..]).is_some());

    let mut group = c.benchmark_group("store_lookup_by_hash");
    group.bench_function("primitive", |b| {
        b.iter(|| select(&raw, &by_hash, &&black_box(hash.as_bytes())[..]))
    });
    group.bench_function("sqlite_store", |b| {
        b.iter(|| {
            runtime
                .block_on(
                    uncached
                        .store
                        .session_by_access_hash(black_box(&uncached_hash)),
                )
                .unwrap()
        })
    });
    group.bench_function("sqlite_store_cached", |b| {
        b.iter(|| {
            runtime
                .block_on(fixture.store.session_by_access_hash(black_box(&hash)))
                .unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("verify_opaque");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            let hash = sha256(black_box(opaque.as_bytes()));
            select(&raw, &by_hash, &&hash[..])
        })
    });
    group.bench_function("authenticate", |b| {
        b.iter(|| {
            runtime
                .block_on(uncached.service.authenticate(black_box(&uncached.opaque)))
                .unwrap()
        })
    });
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| {
            runtime
                .block_on(fixture.service.authenticate(black_box(&opaque)))
                .unwrap()
        })
    });
    group.finish();

    let jwks = fixture.service.key_ring().jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let public = ParsedPublicKey::new(&ED25519, b64::decode(x).unwrap()).unwrap();
    let jwt = fixture.jwt.clone();
    let sid = fixture.claims.sid.clone();
    let mut group = c.benchmark_group("verify_jwt_EdDSA");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            let (signed, sig) = black_box(&jwt).rsplit_once('.').unwrap();
            let sig = b64::decode(sig).unwrap();
            assert!(public.verify_sig(signed.as_bytes(), &sig).is_ok());
            select(&raw, &by_id, &sid)
        })
    });
    // Criterion calls this closure once per phase (warm-up, measurement): the counter lives
    // outside it so no token is ever presented twice.
    let minted = std::cell::Cell::new(0u64);
    group.bench_function("authenticate_first_seen", |b| {
        b.iter_batched(
            || {
                minted.set(minted.get() + 1);
                fixture.mint_jwt(minted.get()).unwrap()
            },
            |token| {
                runtime
                    .block_on(fixture.service.authenticate(&token))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| {
            runtime
                .block_on(fixture.service.authenticate(black_box(&jwt)))
                .unwrap()
        })
    });
    group.finish();
}

/// `verify_dpop_ES256`: what a DPoP proof adds to a verify. `bearer` is `authenticate` of a JWT
/// seen before (the common case); `dpop_first_sight` is `authenticate` of a bound JWT seen
/// before plus `check_token_binding` with a proof never seen before (a fresh one per
/// iteration: its parse and checks, its signature, the thumbprint and `ath`, and the replay
/// count in the store); `primitive` is the one extra signature verification alone (P-256 on
/// the proof's signing input). The target: `dpop_first_sight - bearer <= 1.2 × primitive`.
fn dpop(c: &mut Criterion) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    };
    use serde_json::json;
    use tessera_core::claims::{self, Confirmation};
    use tessera_server::service::{ClientInfo, PresentedProof};

    let (runtime, fixture) = Fixture::on_new_runtime().unwrap();
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = key.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65]),
    });
    let jkt = tessera_core::dpop::thumbprint(jwk.as_object().unwrap()).unwrap();
    let mut bound = fixture.claims.clone();
    bound.jti = "bench-dpop".into();
    bound.cnf = Some(Confirmation { jkt });
    let token = claims::issue(&fixture.service.key_ring().keys().set, &bound).unwrap();
    let url = "https://auth.example/v1/session";
    let ath = tessera_core::dpop::access_token_hash(&token);
    let header = b64::encode(
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk })
            .to_string()
            .as_bytes(),
    );
    let rng = SystemRandom::new();
    let proof = |n: u64| {
        let claims = json!({
            "jti": format!("bench-proof-{n}"), "htm": "GET", "htu": url,
            "iat": fixture.service.now(), "ath": ath,
        });
        let input = format!("{header}.{}", b64::encode(claims.to_string().as_bytes()));
        let signature = key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(signature.as_ref()))
    };
    let use_proof = |proof: &str| {
        let presented = PresentedProof {
            proof,
            method: "GET",
            url,
        };
        runtime.block_on(async {
            let identity = fixture.service.authenticate(&token).await.unwrap();
            fixture
                .service
                .check_token_binding(
                    &identity,
                    &token,
                    true,
                    Some(&presented),
                    &ClientInfo::default(),
                )
                .await
                .unwrap();
        })
    };
    use_proof(&proof(0));
    let sample = proof(0);
    let (input, signature) = sample.rsplit_once('.').unwrap();
    let signature = b64::decode(signature).unwrap();
    let public = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).unwrap();

    let mut group = c.benchmark_group("verify_dpop_ES256");
    group.bench_function("primitive", |b| {
        b.iter(|| {
            assert!(
                public
                    .verify_sig(black_box(input.as_bytes()), &signature)
                    .is_ok()
            )
        })
    });
    group.bench_function("bearer", |b| {
        b.iter(|| {
            runtime
                .block_on(fixture.service.authenticate(black_box(&fixture.jwt)))
                .unwrap()
        })
    });
    // As above: the counter outlives criterion's phases, so no proof is presented twice.
    let made = std::cell::Cell::new(1u64);
    group.bench_function("dpop_first_sight", |b| {
        b.iter_batched(
            || {
                made.set(made.get() + 1);
                proof(made.get())
            },
            |proof| use_proof(&proof),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, service, dpop);
criterion_main!(benches);
