//! Scale runs: verify latency and store size with many live sessions, in SQLite, PostgreSQL or
//! Redis.
//!
//! Seeding goes straight into the store's own layout in large batches (SQLite: batched INSERTs,
//! PostgreSQL: `COPY`, Redis: pipelined commands; see each module): going through
//! `Store::create_session` would wait for one commit per session and take hours for 10 million.
//! Each batch is a list of [`NewSession`]s, and each store's writer puts down exactly what
//! `create_session` writes for them (the tests check it against the real `create_session`):
//! random 128-bit ids, the SHA-256 of an opaque token (real tokens for the sampled sessions,
//! random 32-byte values — which are indistinguishable — for the rest), an address and a browser
//! user agent. No refresh tokens are seeded, in any store.
//!
//! Measurement then goes through the real service and store (`Tessera::authenticate` on the
//! store the server would use), on a tokio multi-thread runtime like the server's, over sampled
//! sessions spread uniformly through the seeding, in shuffled order. The sampling and the
//! summaries are shared; only writing a batch, the size measurement and the bare store lookup
//! are per store (the `Backend` trait).

mod store_postgres;
mod store_redis;
mod store_sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tessera_core::claims::{self, AccessClaims};
use tessera_core::opaque::TokenHash;
use tessera_core::session::SessionTimes;
use tessera_core::{UnixTime, b64, random};
use tessera_server::service::{Actor, Settings, Tessera};
use tessera_server::{Config, clock::SystemClock};
use tessera_store::{NewSession, Session, Store, User};

use crate::{PASSWORD, Summary, bench_config, opaque_token, unix_now};

/// Sessions per seeding batch (one transaction, one `COPY` or one pipeline).
const BATCH: u64 = 100_000;
/// A typical browser user agent, stored with every seeded session.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
/// The address stored with every seeded session.
const IP: &str = "203.0.113.7";
/// Idle and absolute lifetime of seeded sessions (seconds), and the configured timeouts: longer
/// than any run, so no sampled session idles out or is touched while a long seeding runs.
const LIFETIME: i64 = 43_200;

/// Which store to seed and measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A fresh SQLite database file.
    Sqlite,
    /// A schema of its own in a PostgreSQL database.
    Postgres,
    /// Sessions in Redis under a key prefix of their own, users and keys in SQLite.
    Redis,
}

impl StoreKind {
    /// The name used on the command line and in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store under test.
    pub store: StoreKind,
    /// Directory for the SQLite database (created; an existing database in it is replaced).
    /// For Redis it holds the users and keys; PostgreSQL does not use it.
    pub dir: Option<PathBuf>,
    /// PostgreSQL URL (a schema of the run's own is created in its database and dropped after).
    pub database_url: Option<String>,
    /// Redis URL, `redis://host:port[/db]` (keys go under a prefix of the run's own, deleted
    /// after).
    pub redis_url: Option<String>,
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
    /// The store measured.
    pub store: StoreKind,
    /// What [`Outcome::db_bytes`] measures.
    pub size_of: &'static str,
    /// Live sessions in the store.
    pub sessions: u64,
    /// Time taken to seed them.
    pub seed_time: Duration,
    /// The store's size after seeding (see [`Outcome::size_of`]).
    pub db_bytes: u64,
    /// Growth of the store's size per session seeded.
    pub bytes_per_session: f64,
    /// The store's `session_by_access_hash` alone.
    pub store_lookup: Summary,
    /// The same statement or script sent straight ([`Backend::raw_lookup`]), where there is a
    /// round trip.
    pub raw_lookup: Option<Summary>,
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
        c.idle_timeout = Duration::from_secs(LIFETIME as u64);
        c.absolute_timeout = Duration::from_secs(LIFETIME as u64);
        c.activity_write_interval = Duration::from_secs(LIFETIME as u64);
    })
}

/// One store under test: everything about a run that differs between stores.
trait Backend {
    /// What [`Backend::size`] measures, for the report.
    const SIZE_OF: &'static str;

    /// The store the service runs on, as the server would build it.
    fn store(&self) -> Arc<dyn Store>;

    /// Bytes the store takes now, in the sense of [`Backend::SIZE_OF`].
    async fn size(&mut self) -> Result<u64>;

    /// Writes one batch of sessions exactly as `create_session` would write each of them.
    async fn write(&mut self, batch: &[NewSession]) -> Result<()>;

    /// Brings the store to its steady state after seeding (before the size is taken).
    async fn settle(&mut self) -> Result<()> {
        Ok(())
    }

    /// The store's own `session_by_access_hash`; true when the session was found.
    async fn lookup(&self, hash: &TokenHash) -> Result<bool>;

    /// The same statement or script `session_by_access_hash` sends, sent straight by the same
    /// client library on a connection of its own (no pool, timeout or decoding): the floor a
    /// verify's round trip can reach. `None` for an embedded store, which has no round trip
    /// (its floor is the in-process benchmark's `store_lookup_by_hash` primitive).
    async fn raw_lookup(&self, _hash: &TokenHash) -> Result<Option<bool>> {
        Ok(None)
    }

    /// What the store holds for session `id`, as comparable text, with `id` and `hash` (its
    /// access hash) written as `<id>` and `<hash>`: equal for two sessions written alike.
    #[cfg(test)]
    async fn raw(&mut self, id: &str, hash: &TokenHash) -> Result<Vec<String>>;
}

/// Seeds `options.sessions` sessions into the chosen store and measures verification.
///
/// A PostgreSQL schema or Redis key prefix of the run's own is removed when the run ends, by
/// error or by SIGINT/SIGTERM too (within a seeding batch).
pub fn run(options: &Options) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let work = async {
            match options.store {
                StoreKind::Sqlite => {
                    let mut backend = store_sqlite::Sqlite::open(&required_dir(options)?)?;
                    run_on(&mut backend, options).await
                }
                StoreKind::Postgres => {
                    let Some(url) = &options.database_url else {
                        bail!("--store postgres needs --database-url or TESSERA_TEST_DATABASE_URL");
                    };
                    // The schema is dropped when the backend is, error or not.
                    let mut backend = store_postgres::Postgres::open(url).await?;
                    run_on(&mut backend, options).await
                }
                StoreKind::Redis => {
                    let Some(url) = &options.redis_url else {
                        bail!("--store redis needs --redis-url or TESSERA_TEST_REDIS_URL");
                    };
                    // The keys are deleted when the backend is dropped, error or not.
                    let mut backend =
                        store_redis::Redis::open(url, &required_dir(options)?).await?;
                    run_on(&mut backend, options).await
                }
            }
        };
        tokio::select! {
            outcome = work => outcome,
            // Dropping `work` drops the backend, which removes what the run put in the store.
            signal = interrupted() => {
                signal?;
                bail!("interrupted; the run's data has been removed")
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn required_dir(options: &Options) -> Result<PathBuf> {
    match &options.dir {
        Some(dir) => Ok(dir.clone()),
        None => bail!("--store {} needs --dir", options.store.name()),
    }
}

/// The shared part of a run: users, seeding in batches, the size, then the three series.
async fn run_on<B: Backend>(backend: &mut B, options: &Options) -> Result<Outcome> {
    let service = service(backend.store(), options.samples).await?;
    let users = create_users(&service, options.sessions).await?;
    let before = backend.size().await?;
    let started = Instant::now();
    let mut seeder = Seeder::new(&service, &users, options)?;
    while let Some(batch) = seeder.next_batch()? {
        backend.write(&batch).await?;
        // Writers may not await at all: give a signal the chance to stop the run.
        tokio::task::yield_now().await;
    }
    backend.settle().await?;
    let seed_time = started.elapsed();
    let db_bytes = backend.size().await?;
    let bytes_per_session = db_bytes.saturating_sub(before) as f64 / options.sessions as f64;
    let samples = seeder.samples;
    let Measured {
        raw_lookup,
        store_lookup,
        opaque_verify,
        jwt_verify,
    } = measure(&service, backend, &samples, options.lookups).await?;
    Ok(Outcome {
        store: options.store,
        size_of: B::SIZE_OF,
        sessions: options.sessions,
        seed_time,
        db_bytes,
        bytes_per_session,
        raw_lookup,
        store_lookup,
        opaque_verify,
        jwt_verify,
    })
}

/// The series of one run.
struct Measured {
    raw_lookup: Option<Summary>,
    store_lookup: Summary,
    opaque_verify: Summary,
    jwt_verify: Summary,
}

async fn service(store: Arc<dyn Store>, samples: usize) -> Result<Tessera> {
    let master = tessera_core::at_rest::MasterKey::generate()?;
    Ok(Tessera::new(
        store,
        Settings::from_config(&config(samples)),
        master,
        Arc::new(SystemClock),
    )
    .await?)
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

/// The times of a session created at `now` (idle and absolute expiry alike, see [`LIFETIME`]).
fn times(now: UnixTime) -> SessionTimes {
    SessionTimes {
        created_at: now,
        last_seen_at: now,
        idle_expires_at: now + LIFETIME,
        absolute_expires_at: now + LIFETIME,
        revoked_at: None,
    }
}

/// The session `create_session` would be given for a login of `user` at `now`.
fn new_session(id: String, user: &User, hash: [u8; 32], now: UnixTime) -> NewSession {
    NewSession {
        session: Session {
            id: id.into(),
            user_id: user.id.clone(),
            times: times(now),
            ip: Some(IP.to_owned()),
            user_agent: Some(USER_AGENT.to_owned()),
            amr: tessera_core::assurance::Methods::PASSWORD,
            jkt: None,
            device_key: None,
        },
        user: tessera_store::UserSummary {
            id: user.id.clone(),
            username: user.username.clone(),
            roles: user.roles.clone(),
            permissions: user.permissions.clone(),
            disabled: user.disabled,
        },
        access_hash: Some(TokenHash::from_bytes(hash)),
        refresh_hash: None,
    }
}

/// Makes the sessions to seed, batch by batch, keeping tokens for the sampled ones.
struct Seeder<'a> {
    service: &'a Tessera,
    users: &'a [User],
    total: u64,
    wanted: usize,
    every: u64,
    seeded: u64,
    rng: Randomness,
    samples: Vec<Sample>,
}

impl<'a> Seeder<'a> {
    fn new(service: &'a Tessera, users: &'a [User], options: &Options) -> Result<Seeder<'a>> {
        if users.is_empty() || options.sessions == 0 || options.samples == 0 {
            bail!("nothing to seed");
        }
        Ok(Seeder {
            service,
            users,
            total: options.sessions,
            wanted: options.samples,
            every: (options.sessions / options.samples as u64).max(1),
            seeded: 0,
            rng: Randomness::new(),
            samples: Vec::with_capacity(options.samples),
        })
    }

    /// The next batch, `None` once every session has been handed out.
    fn next_batch(&mut self) -> Result<Option<Vec<NewSession>>> {
        if self.seeded >= self.total {
            return Ok(None);
        }
        let now = unix_now();
        let keys = self.service.key_ring().keys();
        let end = (self.seeded + BATCH).min(self.total);
        let mut batch = Vec::with_capacity((end - self.seeded) as usize);
        for n in self.seeded..end {
            let id = b64::encode(&self.rng.take::<16>()?);
            let user = &self.users[(n % self.users.len() as u64) as usize];
            let hash = if n % self.every == 0 && self.samples.len() < self.wanted {
                let (token, hash) = opaque_token()?;
                let claims = AccessClaims {
                    iss: "tessera".into(),
                    aud: "tessera".into(),
                    sub: user.id.to_string(),
                    sid: id.clone(),
                    name: user.username.clone(),
                    roles: user.roles.clone(),
                    perms: user.permissions.clone(),
                    iat: now,
                    nbf: now,
                    exp: now + 3600,
                    jti: random::id()?,
                    amr: tessera_core::assurance::Methods::PASSWORD,
                    acr: None,
                    auth_time: None,
                    cnf: None,
                };
                self.samples.push(Sample {
                    opaque: token,
                    jwt: claims::issue(&keys.set, &claims)?,
                    hash: TokenHash::from_bytes(hash),
                });
                hash
            } else {
                self.rng.take::<32>()?
            };
            batch.push(new_session(id, user, hash, now));
        }
        self.seeded = end;
        Ok(Some(batch))
    }
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

async fn measure<B: Backend>(
    service: &Tessera,
    backend: &B,
    samples: &[Sample],
    lookups: usize,
) -> Result<Measured> {
    // Warm-up: every sample once (pages into the cache, JWTs into the verified-token cache).
    for sample in samples {
        service.authenticate(&sample.opaque).await?;
        service.authenticate(&sample.jwt).await?;
    }
    // Each series in its own pass, so none runs on pages another just touched.
    let order = shuffled(samples.len(), lookups);
    let mut raw = Vec::with_capacity(lookups);
    for &i in &order {
        let start = Instant::now();
        let Some(found) = backend.raw_lookup(&samples[i].hash).await? else {
            break;
        };
        raw.push(start.elapsed());
        if !found {
            bail!("a seeded session was not found by the raw lookup");
        }
    }
    let mut series = [
        Vec::with_capacity(lookups),
        Vec::with_capacity(lookups),
        Vec::with_capacity(lookups),
    ];
    for &i in &order {
        let start = Instant::now();
        let found = backend.lookup(&samples[i].hash).await?;
        series[0].push(start.elapsed());
        if !found {
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
        (Some(store_lookup), Some(opaque_verify), Some(jwt_verify)) => Ok(Measured {
            raw_lookup: Summary::of(&mut raw),
            store_lookup,
            opaque_verify,
            jwt_verify,
        }),
        _ => bail!("no lookups measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shuffle_stays_in_range_and_spreads() {
        let order = shuffled(10, 1000);
        assert!(order.iter().all(|&i| i < 10));
        for i in 0..10 {
            assert!(order.contains(&i));
        }
    }

    /// Seeds two sessions through `backend.write` and creates two alike (same user, times,
    /// address and agent; other ids and hashes) through the real `Store::create_session`: the
    /// store must hold the same for both, and find both by access hash with the same record.
    pub(super) async fn seeded_sessions_are_stored_as_create_session_stores_them<B: Backend>(
        backend: &mut B,
    ) {
        let service = service(backend.store(), 10).await.unwrap();
        let users = create_users(&service, 20).await.unwrap();
        let now = unix_now();
        let make = |user: &User| {
            let (_, hash) = opaque_token().unwrap();
            new_session(random::id().unwrap(), user, hash, now)
        };
        let seeded: Vec<NewSession> = users.iter().map(make).collect();
        let created: Vec<NewSession> = users.iter().map(make).collect();
        backend.write(&seeded).await.unwrap();
        let store = backend.store();
        for new in &created {
            store.create_session(new).await.unwrap();
        }
        for (seeded, created) in seeded.iter().zip(&created) {
            let (s_hash, c_hash) = (
                seeded.access_hash.as_ref().unwrap(),
                created.access_hash.as_ref().unwrap(),
            );
            let want = backend.raw(&created.session.id, c_hash).await.unwrap();
            assert!(!want.is_empty());
            assert_eq!(
                backend.raw(&seeded.session.id, s_hash).await.unwrap(),
                want,
                "a seeded session is stored unlike a created one"
            );
            assert!(backend.lookup(s_hash).await.unwrap());
            let found = store.session_by_access_hash(s_hash).await.unwrap().unwrap();
            let mut like = store.session_by_access_hash(c_hash).await.unwrap().unwrap();
            assert_eq!(found.session, seeded.session);
            like.session.id = seeded.session.id.clone();
            assert_eq!(found, like);
        }
    }
}
