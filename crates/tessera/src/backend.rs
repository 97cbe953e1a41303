//! Opening the configured stores: the durable store (`store`), where sessions live
//! (`sessions`), and the change-event bus between instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tessera_server::config::{Config, SessionsUrl, StoreUrl};
use tessera_store::events::{EventBus, LocalBus, Notify};
use tessera_store::{ByAbility, Layered, Migrated, Store};
use tessera_store_postgres::PgStore;
use tessera_store_redis::RedisSessions;
use tessera_store_sqlite::SqliteStore;

/// The stores of one process.
pub struct Backend {
    /// Everything the service persists, publishing change events on `bus`.
    pub store: Arc<dyn Store>,
    /// Change events from every instance sharing the store.
    pub bus: Arc<dyn EventBus>,
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

/// The data directory holds password hashes and signing keys: owner-only access.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

/// Opens the configured stores, applying pending migrations of the durable one.
/// True when the durable store is shared by several machines (PostgreSQL): every instance
/// must then be given the same master key; none may invent its own.
pub fn is_shared(config: &Config) -> bool {
    matches!(durable(config), Durable::Postgres(_))
}

pub async fn open(config: &Config) -> Result<Backend> {
    let (durable, bus): (Arc<dyn Store>, Arc<dyn EventBus>) = match durable(config) {
        Durable::Sqlite(path) => {
            if path == config.data.join("tessera.db") {
                create_private_dir(&config.data)?;
            }
            let store = SqliteStore::open_with_cache(&path, config.session_cache_capacity)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // One machine: other processes on the same file (the CLI) are seen by polling.
            (Arc::new(store), Arc::new(LocalBus::new()))
        }
        Durable::Postgres(url) => {
            let store = PgStore::open(&url)
                .await
                .context("cannot open the PostgreSQL store")?;
            let bus = store.event_bus();
            (Arc::new(store), Arc::new(bus))
        }
    };
    let store: Arc<dyn Store> = match &config.sessions {
        SessionsUrl::Same => durable,
        SessionsUrl::Redis(url) => {
            let sessions = RedisSessions::connect(url, durable.clone())
                .await
                .context("cannot open the Redis session store")?;
            Arc::new(ByAbility::split(durable, Arc::new(sessions)))
        }
    };
    Ok(Backend {
        store: Arc::new(Layered::new(store, Notify::new(Arc::clone(&bus)))),
        bus,
    })
}

/// Applies pending migrations of the durable store and says what was done.
pub async fn migrate(config: &Config) -> Result<(String, Migrated)> {
    match durable(config) {
        Durable::Sqlite(path) => {
            if path == config.data.join("tessera.db") {
                create_private_dir(&config.data)?;
            }
            let migrated = SqliteStore::migrate(&path)
                .with_context(|| format!("cannot migrate {}", path.display()))?;
            Ok((format!("SQLite {}", path.display()), migrated))
        }
        Durable::Postgres(url) => {
            let store = PgStore::connect(&url)
                .await
                .context("cannot connect to PostgreSQL")?;
            let migrated = store
                .migrate()
                .await
                .context("cannot migrate the PostgreSQL store")?;
            Ok(("PostgreSQL".to_owned(), migrated))
        }
    }
}
