//! Shared pieces of tessera's benchmarks: a service on a temporary SQLite store with a logged-in
//! user, token minting for benchmarks that need many distinct tokens, bulk seeding of sessions
//! for the scale runs, and latency summaries.
//!
//! Nothing here is part of tessera itself; the crate is `publish = false`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tessera_core::claims::{self, AccessClaims};
use tessera_core::opaque::{self, OpaqueKind};
use tessera_core::{UnixTime, b64, random};
use tessera_server::builder::Stores;
use tessera_server::service::{Actor, ClientInfo, Delivery, Tessera};
use tessera_server::{Builder, Config};
use tessera_store::User;
use tessera_store_sqlite::SqliteStore;

pub mod baseline;
pub mod embedded;
pub mod mixed;
pub mod report;
pub mod scale;

/// Password of the benchmark user.
pub const PASSWORD: &str = "bench password 1";

/// A directory under the system temp dir (or `parent`), removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(parent: Option<&Path>) -> Result<TempDir> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let path = parent.join(format!("tessera-bench-{}", random::id()?));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tessera service on its own SQLite file, with one user logged in twice.
pub struct Fixture {
    /// The service under test.
    pub service: Arc<Tessera>,
    /// The store it uses.
    pub store: SqliteStore,
    /// The benchmark user.
    pub user: User,
    /// An opaque session token (cookie delivery).
    pub opaque: String,
    /// A JWT access token (bearer delivery).
    pub jwt: String,
    /// The claims of `jwt`, to mint more tokens of the same session.
    pub claims: AccessClaims,
    _dir: TempDir,
}

/// SHA-256 of `bytes` with aws-lc alone: the primitive the token benchmarks measure against.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

/// Typical access-token claims issued at `now` (two roles, two permissions, ten minutes), with
/// fresh random ids: what the token benchmarks sign and verify.
pub fn sample_claims(now: UnixTime) -> Result<AccessClaims> {
    Ok(AccessClaims {
        iss: "tessera".into(),
        aud: "tessera".into(),
        sub: tessera_core::random::id()?,
        sid: tessera_core::random::id()?,
        name: "alice".into(),
        roles: vec!["user".into(), "editor".into()],
        perms: vec!["docs:read".into(), "docs:write".into()],
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: tessera_core::random::id()?,
        amr: tessera_core::assurance::Methods::PASSWORD,
        acr: None,
        auth_time: None,
        cnf: None,
    })
}

/// The configuration benchmarks run with: the defaults, except a cheap Argon2id (logins only
/// set up the fixture here; login cost has its own benchmark) and `tweak`.
pub fn bench_config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        ..Config::default()
    };
    tweak(&mut config);
    config
}

impl Fixture {
    /// A multi-thread runtime built like the server's, with a fixture of the default benchmark
    /// configuration ([`bench_config`]) built on it.
    pub fn on_new_runtime() -> Result<(tokio::runtime::Runtime, Fixture)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let fixture = runtime.block_on(Fixture::new(&bench_config(|_| {})))?;
        Ok((runtime, fixture))
    }

    /// Builds the service on a fresh database and logs the user in with each delivery.
    pub async fn new(config: &Config) -> Result<Fixture> {
        let dir = TempDir::new(None)?;
        let store = SqliteStore::open_with_cache(
            &dir.path().join("tessera.db"),
            config.session_cache_capacity,
        )?;
        // Assembled as the binary assembles it, on this database and a fresh master key.
        let server = Builder::new(config.clone())
            .stores(Stores::local(Arc::new(store.clone())))
            .master_key(tessera_core::at_rest::MasterKey::generate()?)
            .build()
            .await?;
        let service = Arc::clone(server.service());
        let user = add_bench_user(&service).await?;
        let login = |delivery| {
            service.login(
                "bench",
                PASSWORD,
                None,
                delivery,
                ClientInfo::default(),
                None,
            )
        };
        let opaque = login(Delivery::Cookie).await?.access_token;
        let jwt = login(Delivery::Bearer).await?.access_token;
        let claims = decode_claims(&jwt)?;
        Ok(Fixture {
            service,
            store,
            user,
            opaque,
            jwt,
            claims,
            _dir: dir,
        })
    }

    /// A new JWT for the fixture's session, distinct from every other (its `jti` is `n`),
    /// signed with the service's current key.
    pub fn mint_jwt(&self, n: u64) -> Result<String> {
        mint_variant(&self.service, &self.claims, n)
    }
}

/// A real tessera (SQLite in a temporary directory, plain HTTP on a loopback port) serving its
/// whole API, revocation feed included: the issuer a feed-following verifier is built against.
/// It serves until dropped with the runtime it was started on.
pub struct Issuer {
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its service, to sign tokens with its current key and to revoke sessions.
    pub service: Arc<Tessera>,
    _dir: TempDir,
}

impl Issuer {
    /// Builds a server as the binary does and serves it on a task of the current runtime.
    pub async fn start() -> Result<Issuer> {
        let dir = TempDir::new(None)?;
        let config = bench_config(|config| {
            config.listen = "127.0.0.1:0".into();
            config.data = dir.path().to_path_buf();
        });
        let listener = tessera_server::serve::Listener::bind(&config)?;
        let url = format!("http://{}", listener.local_addr());
        let server = Builder::new(config).build().await?;
        let service = Arc::clone(server.service());
        tokio::spawn(server.serve_on(listener, std::future::pending()));
        Ok(Issuer {
            url,
            service,
            _dir: dir,
        })
    }

    /// A token of `claims` signed with the issuer's current key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        Ok(claims::issue(&self.service.key_ring().keys().set, claims)?)
    }
}

/// Creates the benchmark user (`bench`, [`PASSWORD`], role `user`) in `service`.
pub async fn add_bench_user(service: &Tessera) -> Result<User> {
    Ok(service
        .create_user(
            &Actor::cli(),
            "bench",
            PASSWORD,
            vec!["user".into()],
            vec![],
        )
        .await?)
}

/// A copy of `claims` with `jti` set to `n`, signed with `service`'s current key.
pub fn mint_variant(service: &Tessera, claims: &AccessClaims, n: u64) -> Result<String> {
    let mut claims = claims.clone();
    claims.jti = format!("bench-{n}");
    Ok(claims::issue(&service.key_ring().keys().set, &claims)?)
}

/// The claims of a JWT, read without verification (the caller minted it).
pub fn decode_claims(jwt: &str) -> Result<AccessClaims> {
    let payload = jwt.split('.').nth(1).context("not a JWS")?;
    let bytes = b64::decode(payload).context("payload is not base64url")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The current Unix time.
pub fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A fresh opaque session token and the bytes of its hash.
pub fn opaque_token() -> Result<(String, [u8; 32])> {
    let token = opaque::generate(OpaqueKind::Session)?;
    Ok((token.token, *token.hash.as_bytes()))
}

/// Latency figures of a series of timings.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index.min(samples.len() - 1)]
        };
        let total: Duration = samples.iter().sum();
        Some(Summary {
            count: samples.len(),
            mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
            p50: at(0.50),
            p99: at(0.99),
        })
    }
}

/// Times `f` once.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Microseconds with two decimals, for tables.
pub fn micros(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_the_right_order_statistics() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&mut samples).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_micros(51));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.mean, Duration::from_nanos(50_500));
        assert!(Summary::of(&mut []).is_none());
    }

    #[tokio::test]
    async fn fixture_tokens_authenticate_and_minted_variants_are_distinct() {
        let fixture = Fixture::new(&bench_config(|_| {})).await.unwrap();
        let service = &fixture.service;
        let a = service.authenticate(&fixture.opaque).await.unwrap();
        let b = service.authenticate(&fixture.jwt).await.unwrap();
        assert_eq!(a.user_id, fixture.user.id);
        assert_eq!(b.user_id, fixture.user.id);
        let one = fixture.mint_jwt(1).unwrap();
        let two = fixture.mint_jwt(2).unwrap();
        assert_ne!(one, two);
        assert_eq!(
            service.authenticate(&two).await.unwrap().session_id,
            b.session_id
        );
    }
}
