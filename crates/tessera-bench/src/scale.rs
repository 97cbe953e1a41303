//! Scale runs: verify latency and store size with many live sessions in SQLite.
//!
//! Seeding goes straight into tessera's schema with batched INSERTs on a connection of its own
//! (`synchronous=OFF`, large page cache, foreign-key checks off, one transaction per batch):
//! going through `Store::create_session` would fsync once per session and take hours for 10
//! million. The rows are what `create_session` writes: random 128-bit ids, the SHA-256 of an
//! opaque token (real tokens for the sampled sessions, random 32-byte values — which are
//! indistinguishable — for the rest), an address and a browser user agent.
//!
//! Measurement then goes through the real service and store (`Tessera::authenticate` on the
//! `SqliteStore` the server uses), on a tokio multi-thread runtime like the server's, over
//! sampled sessions spread uniformly through the table, in shuffled order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, params};
use tessera_core::claims::{self, AccessClaims};
use tessera_core::opaque::TokenHash;
use tessera_core::{b64, random};
use tessera_server::service::{Actor, Settings, Tessera};
use tessera_server::{Config, clock::SystemClock};
use tessera_store::{Store, User};
use tessera_store_sqlite::SqliteStore;

use crate::{PASSWORD, Summary, bench_config, opaque_token, unix_now};

/// Rows per seeding transaction.
const BATCH: u64 = 100_000;
/// A typical browser user agent, stored with every seeded session.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory for the database (created; an existing database in it is replaced).
    pub dir: PathBuf,
    /// Live sessions to seed.
    pub sessions: u64,
    /// Sessions whose tokens are kept for measuring (spread evenly through the seeding).
    pub samples: usize,
    /// Timed verifications per series.
    pub lookups: usize,
}

/// The figures of one scale run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Live sessions in the store.
    pub sessions: u64,
    /// Time taken to seed them.
    pub seed_time: Duration,
    /// Database file size after seeding (WAL checkpointed into it).
    pub db_bytes: u64,
    /// Growth of the database per session seeded.
    pub bytes_per_session: f64,
    /// `Store::session_by_access_hash` alone.
    pub store_lookup: Summary,
    /// `Tessera::authenticate` of opaque tokens.
    pub opaque_verify: Summary,
    /// `Tessera::authenticate` of JWTs seen before (verified-token cache hit + `sid` lookup).
    pub jwt_verify: Summary,
}

/// The configuration of the scale run: the defaults, except a cheap Argon2id (no logins are
/// measured), timeouts long enough that no sampled session idles out or is touched (activity
/// write) while a long seeding runs — the run measures the read path — and a verified-token
/// cache that holds every sampled JWT.
pub fn config(samples: usize) -> Config {
    bench_config(|c| {
        c.jwt_cache_capacity = 2 * samples as u64;
        c.idle_timeout = 43_200;
        c.absolute_timeout = 43_200;
        c.activity_write_interval = 43_200;
    })
}

/// Seeds `options.sessions` sessions and measures verification.
pub fn run(options: &Options) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&options.dir)?;
    let db = options.dir.join("tessera.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = SqliteStore::open(&db)?;
    let master = tessera_core::at_rest::MasterKey::generate()?;
    let service = runtime.block_on(async {
        Tessera::new(
            Arc::new(store.clone()),
            Settings::from_config(&config(options.samples)),
            master,
            Arc::new(SystemClock),
        )
        .await
    })?;
    let users = runtime.block_on(create_users(&service, options.sessions))?;

    let mut seeder = Connection::open(&db)?;
    let before = checkpointed_size(&seeder, &db)?;
    let started = Instant::now();
    let samples = seed(&mut seeder, &users, options, &service)?;
    let seed_time = started.elapsed();
    let db_bytes = checkpointed_size(&seeder, &db)?;
    drop(seeder);
    let bytes_per_session = db_bytes.saturating_sub(before) as f64 / options.sessions as f64;

    let (store_lookup, opaque_verify, jwt_verify) =
        runtime.block_on(measure(&service, &store, &samples, options.lookups))?;
    Ok(Outcome {
        sessions: options.sessions,
        seed_time,
        db_bytes,
        bytes_per_session,
        store_lookup,
        opaque_verify,
        jwt_verify,
    })
}

/// One user per ten sessions, at most 1000; every user has the same password.
async fn create_users(service: &Tessera, sessions: u64) -> Result<Vec<User>> {
    let count = (sessions / 10).clamp(1, 1000);
    let mut users = Vec::new();
    for i in 0..count {
        users.push(
            service
                .create_user(
                    &Actor::cli(),
                    &format!("user{i}"),
                    PASSWORD,
                    vec!["user".into()],
                    vec!["docs:read".into()],
                )
                .await?,
        );
    }
    Ok(users)
}

/// A sampled session: its opaque token and a JWT for it.
struct Sample {
    opaque: String,
    jwt: String,
    hash: TokenHash,
}

/// Random bytes handed out in slices, refilled from the OS in 1 MiB blocks.
struct Randomness {
    buf: Vec<u8>,
    at: usize,
}

impl Randomness {
    fn new() -> Randomness {
        Randomness {
            buf: vec![0; 1 << 20],
            at: 1 << 20,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.at + N > self.buf.len() {
            random::fill(&mut self.buf)?;
            self.at = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        Ok(out)
    }
}

fn seed(
    conn: &mut Connection,
    users: &[User],
    options: &Options,
    service: &Tessera,
) -> Result<Vec<Sample>> {
    if users.is_empty() || options.sessions == 0 || options.samples == 0 {
        bail!("nothing to seed");
    }
    // Seeding only: durability and integrity checks are the production path's business.
    conn.execute_batch(
        "PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576; PRAGMA foreign_keys = OFF;",
    )?;
    let every = (options.sessions / options.samples as u64).max(1);
    let keys = service.key_ring().keys();
    let mut rng = Randomness::new();
    let mut samples = Vec::with_capacity(options.samples);
    let mut seeded = 0u64;
    while seeded < options.sessions {
        let now = unix_now();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at,
                     idle_expires_at, absolute_expires_at, revoked_at, ip, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?5, NULL, ?6, ?7)",
            )?;
            let end = (seeded + BATCH).min(options.sessions);
            for n in seeded..end {
                let id = b64::encode(&rng.take::<16>()?);
                let user = &users[(n % users.len() as u64) as usize];
                let hash = if n % every == 0 && samples.len() < options.samples {
                    let (token, hash) = opaque_token()?;
                    let claims = AccessClaims {
                        iss: "tessera".into(),
                        aud: "tessera".into(),
                        sub: user.id.clone(),
                        sid: id.clone(),
                        name: user.username.clone(),
                        roles: user.roles.clone(),
                        perms: user.permissions.clone(),
                        iat: now,
                        nbf: now,
                        exp: now + 3600,
                        jti: random::id()?,
                    };
                    samples.push(Sample {
                        opaque: token,
                        jwt: claims::issue(&keys.set, &claims)?,
                        hash: TokenHash::from_bytes(hash),
                    });
                    hash
                } else {
                    rng.take::<32>()?
                };
                insert.execute(params![
                    id,
                    user.id,
                    &hash[..],
                    now,
                    now + 43_200,
                    "203.0.113.7",
                    USER_AGENT
                ])?;
            }
            seeded = end;
        }
        tx.commit()?;
    }
    Ok(samples)
}

/// Size of the database file once the WAL has been folded into it.
fn checkpointed_size(conn: &Connection, db: &Path) -> Result<u64> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(db)
        .with_context(|| format!("{}", db.display()))?
        .len())
}

/// A deterministic shuffle (xorshift), so runs at different sizes visit samples alike.
fn shuffled(len: usize, count: usize) -> Vec<usize> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % len as u64) as usize
        })
        .collect()
}

async fn measure(
    service: &Tessera,
    store: &SqliteStore,
    samples: &[Sample],
    lookups: usize,
) -> Result<(Summary, Summary, Summary)> {
    // Warm-up: every sample once (pages into the cache, JWTs into the verified-token cache).
    for sample in samples {
        service.authenticate(&sample.opaque).await?;
        service.authenticate(&sample.jwt).await?;
    }
    // Each series in its own pass, so none runs on pages another just touched.
    let order = shuffled(samples.len(), lookups);
    let mut series = [
        Vec::with_capacity(lookups),
        Vec::with_capacity(lookups),
        Vec::with_capacity(lookups),
    ];
    for &i in &order {
        let start = Instant::now();
        let found = store.session_by_access_hash(&samples[i].hash).await?;
        series[0].push(start.elapsed());
        if found.is_none() {
            bail!("a seeded session was not found");
        }
    }
    for &i in &order {
        let start = Instant::now();
        service.authenticate(&samples[i].opaque).await?;
        series[1].push(start.elapsed());
    }
    for &i in &order {
        let start = Instant::now();
        service.authenticate(&samples[i].jwt).await?;
        series[2].push(start.elapsed());
    }
    let [a, b, c] = &mut series;
    match (Summary::of(a), Summary::of(b), Summary::of(c)) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
        _ => bail!("no lookups measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_seeds_every_session_and_verifies_the_samples() {
        let dir = crate::TempDir::new(None).unwrap();
        let outcome = run(&Options {
            dir: dir.path().to_path_buf(),
            sessions: 2_000,
            samples: 50,
            lookups: 200,
        })
        .unwrap();
        assert_eq!(outcome.sessions, 2_000);
        assert_eq!(outcome.opaque_verify.count, 200);
        assert!(outcome.bytes_per_session > 64.0, "{outcome:?}");
        let conn = Connection::open(dir.path().join("tessera.db")).unwrap();
        let live: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND access_hash IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(live, 2_000);
    }

    #[test]
    fn the_shuffle_stays_in_range_and_spreads() {
        let order = shuffled(10, 1000);
        assert!(order.iter().all(|&i| i < 10));
        for i in 0..10 {
            assert!(order.contains(&i));
        }
    }
}
