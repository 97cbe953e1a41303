//! Assembling a server, the one way it is done: configuration → stores → service → router and
//! background tasks. The `tessera` binary is its command line over this; tests and embedders
//! use it to get a server identical to the one the binary runs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tessera_server::{Builder, Config};
//!
//! let server = Builder::new(Config::default()).build().await?;
//! server.create_first_admin(None).await?;
//! server
//!     .serve(|addr| println!("listening on {addr}"), std::future::pending())
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod stores;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tessera_core::at_rest::MasterKey;
use tessera_store::StoreError;
use thiserror::Error;

pub use stores::{Stores, create_private_dir, describe, is_shared, migrate};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::master_key::{self, MasterKeyError, MasterKeySource};
use crate::metrics::Exporter;
use crate::serve::{self, Listener, ServeError};
use crate::service::{Actor, ServiceError, Settings, Tessera};

/// How often an instance reads the revocation log's counter when no notice came: the bound
/// on a held feed request's delay when the event bus loses a notice.
const REVOCATION_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a server could not be assembled.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A store could not be opened, connected to or migrated.
    #[error("{what}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        source: StoreError,
    },
    /// The data directory could not be created or restricted to its owner.
    #[error("cannot {action} {}", path.display())]
    DataDir {
        /// `create` or `restrict`.
        action: &'static str,
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An administration command was pointed at a store that does not exist.
    #[error(
        "no tessera store here ({0}); only `tessera serve` and `tessera migrate` create one: \
         run the command where the server keeps its data, or pass --data or --config"
    )]
    NoStore(String),
    /// The configuration names a backend this build was compiled without.
    #[error("this build of tessera has no {0} store (cargo feature `{0}` of tessera-server)")]
    NotBuiltIn(&'static str),
    /// A shared store (PostgreSQL) with no master key configured.
    #[error(
        "a shared store (PostgreSQL) needs the same master key on every instance: set {} \
         or master_key_file (generate one with: head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')",
        master_key::ENV_VAR
    )]
    SharedStoreNeedsMasterKey,
    /// No usable master key.
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    /// The signing keys could not be read.
    #[error("cannot read the signing keys")]
    SigningKeys(#[source] StoreError),
    /// The service could not start (a stored key does not decrypt, …).
    #[error("cannot start the service (master key from {source_of_key})")]
    Service {
        /// Where the master key came from.
        source_of_key: MasterKeySource,
        /// The service's error.
        source: ServiceError,
    },
}

/// Where the master key comes from.
enum MasterKeyChoice {
    /// `TESSERA_MASTER_KEY` (read at build), `master_key_file` or the data directory's file.
    Configured,
    /// Given by the caller.
    Given(MasterKey),
}

/// Assembles a [`Server`] from a [`Config`]. By default it opens the configured stores, finds
/// the master key as `tessera serve` does and runs on the system clock; each can be replaced.
pub struct Builder {
    config: Config,
    stores: Option<Stores>,
    create_store: bool,
    master_key: MasterKeyChoice,
    clock: Arc<dyn Clock>,
}

impl Builder {
    /// A builder for a server configured by `config`.
    pub fn new(config: Config) -> Builder {
        Builder {
            config,
            stores: None,
            create_store: true,
            master_key: MasterKeyChoice::Configured,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses these stores instead of opening the configured ones (see [`Stores::local`]).
    pub fn stores(mut self, stores: Stores) -> Builder {
        self.stores = Some(stores);
        self
    }

    /// Refuses to create the configured store when it does not exist yet (no SQLite file, no
    /// tessera schema in the PostgreSQL database): administration commands pointed at the wrong
    /// place must not start a fresh, empty store.
    pub fn existing_store_only(mut self) -> Builder {
        self.create_store = false;
        self
    }

    /// Uses this master key instead of the configured one.
    pub fn master_key(mut self, key: MasterKey) -> Builder {
        self.master_key = MasterKeyChoice::Given(key);
        self
    }

    /// Reads the time from `clock` instead of the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Builder {
        self.clock = clock;
        self
    }

    /// Opens the stores, finds the master key and starts the service (loading or creating the
    /// signing keys). Binds nothing: see [`Server::serve`].
    pub async fn build(self) -> Result<Server, BuildError> {
        // Before the store opens, so start-up store operations are measured too.
        crate::metrics::install();
        let stores = match self.stores {
            Some(stores) => stores,
            None => stores::open(&self.config, self.create_store).await?,
        };
        let (master, master_key_source) = match self.master_key {
            MasterKeyChoice::Given(key) => (key, MasterKeySource::Given),
            MasterKeyChoice::Configured => configured_master_key(&self.config, &stores).await?,
        };
        let service = Tessera::new(
            Arc::clone(&stores.store),
            Settings::from_config(&self.config),
            master,
            self.clock,
        )
        .await
        .map_err(|source| BuildError::Service {
            source_of_key: master_key_source.clone(),
            source,
        })?;
        Ok(Server {
            config: self.config,
            service: Arc::new(service),
            stores,
            master_key_source,
        })
    }
}

/// The master key as `tessera serve` finds it: `TESSERA_MASTER_KEY`, `master_key_file` or the
/// data directory's file, generated on first start of an unshared store only.
async fn configured_master_key(
    config: &Config,
    stores: &Stores,
) -> Result<(MasterKey, MasterKeySource), BuildError> {
    let store_has_keys = !stores
        .store
        .signing_keys()
        .await
        .map_err(BuildError::SigningKeys)?
        .is_empty();
    let env_key = std::env::var(master_key::ENV_VAR).ok();
    // Instances sharing a store must share the key: one inventing its own would write signing
    // keys nobody else can decrypt.
    if is_shared(config)
        && env_key.as_deref().is_none_or(|k| k.trim().is_empty())
        && config.master_key_file.is_none()
    {
        return Err(BuildError::SharedStoreNeedsMasterKey);
    }
    Ok(master_key::resolve(
        config,
        env_key.as_deref(),
        store_has_keys,
    )?)
}

/// The first administrator, created on a store without users.
#[derive(Debug)]
pub struct FirstAdmin {
    /// The user's name (`admin`).
    pub username: String,
    /// The generated password to show once, or `None` when the caller gave it.
    pub generated_password: Option<String>,
}

/// An assembled server: the service on its stores, ready to serve.
pub struct Server {
    config: Config,
    service: Arc<Tessera>,
    stores: Stores,
    master_key_source: MasterKeySource,
}

impl Server {
    /// The service (login, verify, administration), shared by HTTP and the CLI.
    pub fn service(&self) -> &Arc<Tessera> {
        &self.service
    }

    /// The configuration the server was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The stores in use.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Where the master key came from.
    pub fn master_key_source(&self) -> &MasterKeySource {
        &self.master_key_source
    }

    /// On a store with no user at all, creates `admin` (role `admin`) with `password`, or a
    /// random one returned for showing once. `None` when users exist (or another instance
    /// sharing the store created the first one at the same moment).
    pub async fn create_first_admin(
        &self,
        password: Option<String>,
    ) -> Result<Option<FirstAdmin>, ServiceError> {
        if self.service.store().count_users().await? > 0 {
            return Ok(None);
        }
        let actor = Actor {
            actor: Some(tessera_core::names::SYSTEM_ACTOR.into()),
            ..Actor::default()
        };
        let (password, generated) = match password.filter(|p| !p.is_empty()) {
            Some(password) => (password, false),
            // 128 random bits: a password nobody will guess.
            None => (tessera_core::random::id()?, true),
        };
        match self
            .service
            .create_user(&actor, "admin", &password, vec!["admin".into()], Vec::new())
            .await
        {
            Ok(user) => Ok(Some(FirstAdmin {
                username: user.username,
                generated_password: generated.then_some(password),
            })),
            // Another instance sharing the store created it first (instances started together).
            Err(ServiceError::Conflict(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The HTTP API as a router, for serving with a transport of one's own. Background work
    /// (key reloads, purges, metric upkeep) runs only under [`Server::serve`].
    pub fn router(&self) -> Router {
        crate::http::router_with(
            Arc::clone(&self.service),
            crate::http::HttpSettings::from_config(&self.config),
            Arc::new(Exporter::new()),
        )
    }

    /// Serves the API with the configured transport until `shutdown` resolves, then drains and
    /// flushes; reloads signing keys on every change notice (or poll) meanwhile. `on_bound` is
    /// told the bound address (useful with port 0).
    pub async fn serve(
        self,
        on_bound: impl FnOnce(SocketAddr),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let listener = Listener::bind(&self.config)?;
        on_bound(listener.local_addr());
        self.serve_on(listener, shutdown).await
    }

    /// [`Server::serve`] on a listener bound before the server was built, as `tessera serve`
    /// does: a start that cannot bind then fails before it creates anything.
    pub async fn serve_on(
        self,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // Subscribe before anything else can rotate: no notice is missed from here on.
        let key_watch = self
            .service
            .watch_keys(self.stores.bus.subscribe(), self.config.key_poll_interval);
        let feed_watch = self
            .service
            .watch_revocations(self.stores.bus.subscribe(), REVOCATION_POLL_INTERVAL);
        let result = serve::run_on(&self.config, listener, self.service, shutdown).await;
        key_watch.abort();
        feed_watch.abort();
        result
    }
}
