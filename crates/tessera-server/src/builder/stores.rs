//! Opening the configured stores: the durable store (`store`), where sessions live
//! (`sessions`), and the change-event bus between instances.
//!
//! The only module of the server that names a backend; each backend is a cargo feature
//! (`sqlite`, `postgres`, `redis`, all on by default), so an embedder that brings its own
//! [`Store`] can leave them out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_store::events::{EventBus, LocalBus, Notify};
use tessera_store::{Layered, Migrated, Store};

use super::BuildError;
use crate::config::{Config, SessionsUrl, StoreUrl};

/// The stores of one process: what the service persists to and the change events of every
/// instance sharing them.
#[derive(Clone)]
pub struct Stores {
    /// Everything the service persists, publishing change events on `bus`.
    pub store: Arc<dyn Store>,
    /// Change events from every instance sharing the store.
    pub bus: Arc<dyn EventBus>,
}

impl Stores {
    /// A store of one process (or of processes on one machine that poll, like SQLite's):
    /// change events are published in-process only.
    pub fn local(store: Arc<dyn Store>) -> Stores {
        Stores::with_bus(store, Arc::new(LocalBus::new()))
    }

    /// A store whose changes reach the other instances through `bus`. Every write through
    /// the returned store publishes its event there.
    pub fn with_bus(store: Arc<dyn Store>, bus: Arc<dyn EventBus>) -> Stores {
        Stores {
            store: Arc::new(Layered::new(store, Notify::new(Arc::clone(&bus)))),
            bus,
        }
    }
}

/// The configured durable store.
enum Durable {
    Sqlite(PathBuf),
    Postgres(String),
}

fn durable(config: &Config) -> Durable {
    match &config.store {
        Some(StoreUrl::Postgres(url)) => Durable::Postgres(url.clone()),
        Some(StoreUrl::Sqlite(Some(path))) => Durable::Sqlite(path.clone()),
        Some(StoreUrl::Sqlite(None)) | None => Durable::Sqlite(config.data.join("tessera.db")),
    }
}

/// True when the durable store is shared by several machines (PostgreSQL): every instance
/// must then be given the same master key; none may invent its own.
pub fn is_shared(config: &Config) -> bool {
    matches!(durable(config), Durable::Postgres(_))
}

/// The stores `config` names, for people: the SQLite path, or the PostgreSQL and Redis URLs
/// without their passwords.
pub fn describe(config: &Config) -> String {
    let durable = match durable(config) {
        Durable::Sqlite(path) => format!("SQLite {}", path.display()),
        Durable::Postgres(url) => format!("PostgreSQL {}", without_password(&url)),
    };
    match &config.sessions {
        SessionsUrl::Same => durable,
        SessionsUrl::Redis(url) => {
            format!("{durable}, sessions on Redis {}", without_password(url))
        }
    }
}

/// A URL with its password (and any `password` query parameter) replaced, so it can be
/// logged; one that does not parse is not shown at all.
fn without_password(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(URL not shown: it does not parse)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let query: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            // `password`, `sslpassword`, `sentinel_password`…
            let hidden = key.to_ascii_lowercase().ends_with("password");
            (
                key.into_owned(),
                if hidden {
                    "***".to_owned()
                } else {
                    value.into_owned()
                },
            )
        })
        .collect();
    if !query.is_empty() {
        parsed.query_pairs_mut().clear().extend_pairs(query);
    }
    parsed.to_string()
}

/// The data directory holds password hashes and signing keys: owner-only access.
pub fn create_private_dir(dir: &Path) -> Result<(), BuildError> {
    let failed = |action: &'static str| {
        move |source| BuildError::DataDir {
            action,
            path: dir.to_owned(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(failed("create"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(failed("restrict"))?;
    }
    Ok(())
}

/// The default SQLite file lives in the data directory, which is created owner-only.
fn prepare_sqlite(config: &Config, path: &Path) -> Result<(), BuildError> {
    if path == config.data.join("tessera.db") {
        create_private_dir(&config.data)?;
    }
    Ok(())
}

/// Why a store could not be opened or migrated, with what was being done.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
fn store_error(what: impl Into<String>) -> impl FnOnce(tessera_store::StoreError) -> BuildError {
    let what = what.into();
    move |source| BuildError::Store { what, source }
}

/// Opens the configured stores, applying pending migrations of the durable one. With
/// `create` false a store that does not exist yet (no SQLite file, no schema in PostgreSQL) is
/// refused instead of created.
pub(super) async fn open(config: &Config, create: bool) -> Result<Stores, BuildError> {
    let (durable, bus): (Arc<dyn Store>, Option<Arc<dyn EventBus>>) = match durable(config) {
        Durable::Sqlite(path) => {
            if !create && !path.exists() {
                return Err(BuildError::NoStore(describe(config)));
            }
            prepare_sqlite(config, &path)?;
            // One machine: other processes on the same file (the CLI) are seen by polling.
            (open_sqlite(&path, config.session_cache_capacity)?, None)
        }
        Durable::Postgres(url) => {
            let (store, bus) = open_postgres(&url, create)
                .await?
                .ok_or_else(|| BuildError::NoStore(describe(config)))?;
            (store, Some(bus))
        }
    };
    let store = match &config.sessions {
        SessionsUrl::Same => durable,
        SessionsUrl::Redis(url) => open_redis(config, url, durable).await?,
    };
    Ok(match bus {
        Some(bus) => Stores::with_bus(store, bus),
        None => Stores::local(store),
    })
}

#[cfg(feature = "sqlite")]
fn open_sqlite(path: &Path, cache: u64) -> Result<Arc<dyn Store>, BuildError> {
    let store = tessera_store_sqlite::SqliteStore::open_with_cache(path, cache)
        .map_err(store_error(format!("cannot open {}", path.display())))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_: &Path, _: u64) -> Result<Arc<dyn Store>, BuildError> {
    Err(BuildError::NotBuiltIn("sqlite"))
}

/// The shared store and its event bus; `None` when `create` is false and the database holds
/// no tessera schema yet.
type Shared = Option<(Arc<dyn Store>, Arc<dyn EventBus>)>;

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, create: bool) -> Result<Shared, BuildError> {
    use tessera_store_postgres::PgStore;
    let failed = || store_error("cannot open the PostgreSQL store");
    let store = PgStore::connect(url).await.map_err(failed())?;
    if !create && !store.has_schema().await.map_err(failed())? {
        return Ok(None);
    }
    store.migrate().await.map_err(failed())?;
    let bus = store.event_bus();
    Ok(Some((Arc::new(store), Arc::new(bus))))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str, _: bool) -> Result<Shared, BuildError> {
    Err(BuildError::NotBuiltIn("postgres"))
}

/// The TLS files of the Redis connection, read.
#[cfg(feature = "redis")]
fn redis_tls(config: &Config) -> Result<tessera_store_redis::RedisTls, BuildError> {
    let read = |key: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, BuildError> {
        path.as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|e| BuildError::Store {
                    what: "cannot open the Redis session store".to_owned(),
                    source: tessera_store::StoreError::Corrupt(format!(
                        "cannot read {key} {}: {e}",
                        path.display()
                    )),
                })
            })
            .transpose()
    };
    let ca = read("redis_ca_file", &config.redis_ca_file)?;
    let cert = read("redis_client_cert", &config.redis_client_cert)?;
    let key = read("redis_client_key", &config.redis_client_key)?;
    Ok(tessera_store_redis::RedisTls {
        ca,
        client: cert.zip(key),
    })
}

#[cfg(feature = "redis")]
async fn open_redis(
    config: &Config,
    url: &str,
    durable: Arc<dyn Store>,
) -> Result<Arc<dyn Store>, BuildError> {
    let tls = redis_tls(config)?;
    // Redis reads its sessions' users from the durable store.
    let sessions = tessera_store_redis::RedisSessions::connect_with_tls(url, durable.clone(), &tls)
        .await
        .map_err(store_error("cannot open the Redis session store"))?;
    Ok(Arc::new(tessera_store::ByAbility::split(
        durable,
        Arc::new(sessions),
    )))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &Config, _: &str, _: Arc<dyn Store>) -> Result<Arc<dyn Store>, BuildError> {
    Err(BuildError::NotBuiltIn("redis"))
}

/// Applies pending migrations of the durable store and says what was done.
pub async fn migrate(config: &Config) -> Result<(String, Migrated), BuildError> {
    match durable(config) {
        Durable::Sqlite(path) => {
            prepare_sqlite(config, &path)?;
            migrate_sqlite(&path).map(|m| (format!("SQLite {}", path.display()), m))
        }
        Durable::Postgres(url) => migrate_postgres(&url)
            .await
            .map(|m| ("PostgreSQL".to_owned(), m)),
    }
}

#[cfg(feature = "sqlite")]
fn migrate_sqlite(path: &Path) -> Result<Migrated, BuildError> {
    tessera_store_sqlite::SqliteStore::migrate(path)
        .map_err(store_error(format!("cannot migrate {}", path.display())))
}

#[cfg(not(feature = "sqlite"))]
fn migrate_sqlite(_: &Path) -> Result<Migrated, BuildError> {
    Err(BuildError::NotBuiltIn("sqlite"))
}

#[cfg(feature = "postgres")]
async fn migrate_postgres(url: &str) -> Result<Migrated, BuildError> {
    let store = tessera_store_postgres::PgStore::connect(url)
        .await
        .map_err(store_error("cannot connect to PostgreSQL"))?;
    store
        .migrate()
        .await
        .map_err(store_error("cannot migrate the PostgreSQL store"))
}

#[cfg(not(feature = "postgres"))]
async fn migrate_postgres(_: &str) -> Result<Migrated, BuildError> {
    Err(BuildError::NotBuiltIn("postgres"))
}

#[cfg(test)]
mod tests {
    use super::without_password;

    /// The Redis TLS files named in the configuration are read; one that cannot be read is
    /// named by its key.
    #[cfg(feature = "redis")]
    #[test]
    fn redis_tls_files_are_read_and_a_missing_one_is_named() {
        use std::error::Error as _;

        use crate::config::{Config, SessionsUrl};

        let dir = std::env::temp_dir().join(format!(
            "tessera-redis-tls-files-{}",
            tessera_core::random::id().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in [("ca.pem", "CA"), ("c.pem", "CERT"), ("c.key", "KEY")] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let mut config = Config {
            sessions: SessionsUrl::Redis("rediss://cache:6380".into()),
            redis_ca_file: Some(dir.join("ca.pem")),
            ..Config::default()
        };
        let tls = super::redis_tls(&config).unwrap();
        assert_eq!(tls.ca.as_deref(), Some(&b"CA"[..]));
        assert!(tls.client.is_none());

        config.redis_client_cert = Some(dir.join("c.pem"));
        config.redis_client_key = Some(dir.join("c.key"));
        let tls = super::redis_tls(&config).unwrap();
        assert_eq!(tls.client, Some((b"CERT".to_vec(), b"KEY".to_vec())));

        config.redis_client_key = Some(dir.join("missing.key"));
        let error = super::redis_tls(&config).unwrap_err();
        let source = error.source().map(ToString::to_string).unwrap_or_default();
        assert!(source.contains("redis_client_key"), "{error}: {source}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn urls_are_shown_without_their_passwords() {
        for (url, hidden) in [
            ("postgres://app:pa55@db.internal:5432/tessera", "pa55"),
            ("redis://:r3dis@cache:6379/0", "r3dis"),
            ("postgres://db/tessera?user=app&password=qu3ry", "qu3ry"),
            ("rediss://user:sp%40ce@cache:6380", "sp%40ce"),
            (
                "redis+sentinel://s1:26379/m?sentinel_password=s3nt&prefix=t",
                "s3nt",
            ),
        ] {
            let shown = without_password(url);
            assert!(!shown.contains(hidden), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            without_password("postgres://app@db:5432/tessera"),
            "postgres://app@db:5432/tessera"
        );
        assert!(!without_password("not a url with s3cret").contains("s3cret"));
    }
}
