//! tessera's shared store on PostgreSQL: what several tessera instances behind a load balancer
//! keep in common (users and their second factors, sessions, refresh tokens, signing keys, audit,
//! throttling counters).
//!
//! # Connecting
//!
//! [`PgStore::open`] takes a libpq-style URL (`postgres://user:pass@host:5432/db`, with libpq
//! parameters such as `options=-c search_path=tessera` or `application_name=…`), connects a pool
//! of up to [`POOL_SIZE`] connections and applies pending migrations.
//!
//! # TLS
//!
//! Connections use TLS (rustls) as libpq's `sslmode` in the URL says: `disable`, `prefer` (the
//! default), `require`, `verify-ca` or `verify-full`, the CA in `sslrootcert=/path/ca.pem` (or
//! `system`). `require` and `verify-*` never fall back to plain TCP; `verify-full` also checks
//! that the certificate names the host. See `tls.rs` for the table.
//!
//! # Fail closed, recover by itself
//!
//! Connecting, waiting for a pooled connection and every operation are bounded by
//! [`OP_TIMEOUT`]; past it the operation fails as [`StoreError::Unavailable`] (503 at the HTTP
//! layer), never as "not found". Broken connections are dropped from the pool and new ones made
//! on demand, so service resumes without a restart when the database returns.
//!
//! # Schema and migrations
//!
//! The same tables as the SQLite store, in the schema first on the connection's `search_path`,
//! versioned by an append-only list of steps recorded in `tessera_migrations`.
//! [`PgStore::migrate`] applies the pending ones in one transaction under an advisory lock, so
//! instances starting together migrate once.
//!
//! # Change events
//!
//! [`PgStore::event_bus`] gives an [`tessera_store::events::EventBus`] on `LISTEN`/`NOTIFY`.
//!
//! # Durability
//!
//! Every write is committed before the call returns; with PostgreSQL's default
//! `synchronous_commit = on` that means flushed to the WAL. Operators running replicas should keep
//! `synchronous_commit` at `on` or `remote_apply` with synchronous standbys, so a failover never
//! brings back a revoked session.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bus;
mod error;
mod schema;
mod tls;

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tessera_core::UnixTime;
use tessera_core::assurance::Methods;
use tessera_core::ids::{SessionId, UserId};
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::{SessionTimes, Touch};
use tessera_store::{
    AuditEvent, AuditQuery, AuditStore, Counter, CounterStore, EventKind, FactorStore, Health,
    KeyStore, NewSession, PasskeyRecord, PasskeyStore, RefreshOutcome, RevocationEntry,
    RevocationPage, Rotation, RotationDecision, Session, SessionRecord, SessionStore, StoreError,
    StoreResult, TotpFactor, User, UserStore, UserSummary,
};
use tokio_postgres::Row;

pub use bus::PgEventBus;
pub use schema::Migrated;

use crate::error::{Failure, pg, pool};

/// Longest any store operation may take, pool wait and connecting included, before it fails as
/// unavailable: a database outage must fail requests closed within about a second.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections per store (per tessera instance).
pub const POOL_SIZE: usize = 16;

/// The PostgreSQL [`Store`]. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tls::Rustls,
    channel: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show only where it points.
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// Parses a connection URL (its TLS settings included) and applies tessera's timeouts.
fn parse_config(url: &str) -> Result<(tokio_postgres::Config, tls::Rustls), StoreError> {
    let (url, settings) = tls::split(url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        StoreError::Corrupt(format!("bad PostgreSQL URL: {e}"))
    })?;
    config.ssl_mode(settings.mode.driver());
    let connector = tls::connector(&settings)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(OP_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("tessera");
    }
    // Notice a silently dead peer (a host gone from the network) instead of waiting forever.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    Ok((config, connector))
}

impl PgStore {
    /// Connects (checking that the database answers) without migrating.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a URL that does not parse, [`StoreError::Unavailable`] when
    /// the database cannot be reached within [`OP_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let (config, tls) = parse_config(url)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                // A broken connection is dropped as soon as it is seen closed; checking every
                // connection with a query on checkout would cost a round trip per operation.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("cannot build the connection pool: {e}")))?;
        let mut store = PgStore {
            pool,
            config,
            tls,
            channel: String::new(),
        };
        let schema: String = store
            .op(async {
                let c = store.client().await?;
                c.query_one("SELECT current_schema()::text", &[])
                    .await
                    .map_err(pg)?
                    .try_get(0)
                    .map_err(pg)
            })
            .await?;
        // One channel per schema: deployments (and tests) sharing a database do not hear
        // each other.
        store.channel = format!("tessera_events:{schema}");
        Ok(store)
    }

    /// Connects and applies pending migrations.
    ///
    /// # Errors
    /// As [`PgStore::connect`] and [`PgStore::migrate`].
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; see the crate documentation.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a database migrated by a newer build or a failed step,
    /// [`StoreError::Unavailable`] when the database does not answer. Migrations may wait for
    /// another instance's; they are not bounded by [`OP_TIMEOUT`].
    pub async fn migrate(&self) -> Result<Migrated, StoreError> {
        let mut client = self.client().await?;
        Ok(schema::migrate(&mut client).await?)
    }

    /// Whether the database holds tessera's schema (of any version) in this store's schema:
    /// `false` for a database no `tessera serve` or `tessera migrate` has set up.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database does not answer.
    pub async fn has_schema(&self) -> Result<bool, StoreError> {
        self.op(async {
            let client = self.client().await?;
            schema::exists(&client).await
        })
        .await
    }

    /// The latest schema version this build knows.
    pub fn latest_version() -> u32 {
        u32::try_from(schema::MIGRATIONS.len()).unwrap_or(u32::MAX)
    }

    /// A change-event bus on `LISTEN`/`NOTIFY` in this store's database and schema.
    pub fn event_bus(&self) -> PgEventBus {
        PgEventBus::start(
            self.pool.clone(),
            self.config.clone(),
            self.tls.clone(),
            self.channel.clone(),
        )
    }

    async fn client(&self) -> Result<Object, Failure> {
        self.pool.get().await.map_err(pool)
    }

    /// One statement that changes rows: prepares (cached) `sql`, runs it with `params` and
    /// returns how many rows it changed.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        self.op(async {
            let c = self.client().await?;
            let st = c.prepare_cached(sql).await.map_err(pg)?;
            c.execute(&st, params).await.map_err(pg)
        })
        .await
    }

    /// A point lookup: prepares (cached) `sql`, runs it with `params` and maps the row found,
    /// if any, with `from_row`.
    async fn lookup<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        from_row: fn(&Row) -> Result<T, Failure>,
    ) -> StoreResult<Option<T>> {
        self.op(async {
            let c = self.client().await?;
            let st = c.prepare_cached(sql).await.map_err(pg)?;
            c.query_opt(&st, params)
                .await
                .map_err(pg)?
                .as_ref()
                .map(from_row)
                .transpose()
        })
        .await
    }

    /// Runs one operation within [`OP_TIMEOUT`].
    async fn op<T>(&self, work: impl Future<Output = Result<T, Failure>>) -> StoreResult<T> {
        match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(result) => result.map_err(StoreError::from),
            // Dropping the work rolls back its transaction, if any, on the connection.
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }
}

// ---- row decoding ----

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Failure> {
    row.try_get(idx).map_err(pg)
}

const USER_COLUMNS: &str = "id, username, password_hash, roles, permissions, disabled, created_at";

fn user_from_row(row: &Row) -> Result<User, Failure> {
    Ok(User {
        id: get(row, 0)?,
        username: get(row, 1)?,
        password_hash: get(row, 2)?,
        roles: get(row, 3)?,
        permissions: get(row, 4)?,
        disabled: get(row, 5)?,
        created_at: get(row, 6)?,
    })
}

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_expires_at, \
     s.absolute_expires_at, s.revoked_at, s.ip, s.user_agent, s.amr, s.jkt, s.device_key";

const RECORD_SELECT: &str = "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, \
     s.idle_expires_at, s.absolute_expires_at, s.revoked_at, s.ip, s.user_agent, s.amr, s.jkt, \
     s.device_key, u.username, u.roles, u.permissions, u.disabled \
     FROM sessions s JOIN users u ON u.id = s.user_id";

/// The statement a verify runs (`$1`: the access hash, 32 bytes): built once, for the store
/// and for benchmarks that time the same statement sent straight by the same client library.
pub static SESSION_BY_ACCESS_HASH: LazyLock<String> =
    LazyLock::new(|| format!("{RECORD_SELECT} WHERE s.access_hash = $1"));

fn session_from_row(row: &Row) -> Result<Session, Failure> {
    Ok(Session {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        times: SessionTimes {
            created_at: get(row, 2)?,
            last_seen_at: get(row, 3)?,
            idle_expires_at: get(row, 4)?,
            absolute_expires_at: get(row, 5)?,
            revoked_at: get(row, 6)?,
        },
        ip: get(row, 7)?,
        user_agent: get(row, 8)?,
        amr: methods(get(row, 9)?)?,
        jkt: get(row, 10)?,
        device_key: get(row, 11)?,
    })
}

/// A session's stored `amr` (a SMALLINT holding [`Methods::bits`]).
fn methods(bits: i16) -> Result<Methods, Failure> {
    u8::try_from(bits)
        .map(Methods::from_bits)
        .map_err(|_| Failure::Corrupt(format!("session amr {bits} out of range")))
}

fn record_from_row(row: &Row) -> Result<SessionRecord, Failure> {
    let session = session_from_row(row)?;
    let user = UserSummary {
        id: session.user_id.clone(),
        username: get(row, 12)?,
        roles: get(row, 13)?,
        permissions: get(row, 14)?,
        disabled: get(row, 15)?,
    };
    Ok(SessionRecord { session, user })
}

fn counter_from_row(row: &Row) -> Result<Counter, Failure> {
    let count: i32 = get(row, 0)?;
    Ok(Counter {
        count: u32::try_from(count)
            .map_err(|_| Failure::Corrupt(format!("negative counter {count}")))?,
        window_start: get(row, 1)?,
        last_at: get(row, 2)?,
    })
}

fn bytes(hash: &TokenHash) -> &[u8] {
    hash.as_bytes()
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.execute(
            "INSERT INTO users (id, username, password_hash, roles, permissions, disabled,
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &user.id,
                &user.username,
                &user.password_hash,
                &user.roles,
                &user.permissions,
                &user.disabled,
                &user.created_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.lookup(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"),
            &[&username],
            user_from_row,
        )
        .await
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        self.lookup(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            &[&id],
            user_from_row,
        )
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.op(async {
            let c = self.client().await?;
            // Byte order, like SQLite's default collation, whatever the database's locale.
            let st = c
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users ORDER BY username COLLATE \"C\""
                ))
                .await
                .map_err(pg)?;
            c.query(&st, &[])
                .await
                .map_err(pg)?
                .iter()
                .map(user_from_row)
                .collect()
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.op(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached("SELECT count(*) FROM users")
                .await
                .map_err(pg)?;
            let n: i64 = get(&c.query_one(&st, &[]).await.map_err(pg)?, 0)?;
            u64::try_from(n).map_err(|_| Failure::Corrupt(format!("negative user count {n}")))
        })
        .await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        Ok(self
            .execute(
                "UPDATE users SET password_hash = $2, roles = $3, permissions = $4,
                         disabled = $5
                     WHERE id = $1",
                &[
                    &user.id,
                    &user.password_hash,
                    &user.roles,
                    &user.permissions,
                    &user.disabled,
                ],
            )
            .await?
            > 0)
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM users WHERE id = $1", &[&id])
            .await?
            > 0)
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            let s = &new.session;
            let st = tx
                .prepare_cached(
                    "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at,
                         idle_expires_at, absolute_expires_at, revoked_at, ip, user_agent, amr, jkt,
                         device_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &st,
                &[
                    &s.id,
                    &s.user_id,
                    &new.access_hash.as_ref().map(bytes),
                    &s.times.created_at,
                    &s.times.last_seen_at,
                    &s.times.idle_expires_at,
                    &s.times.absolute_expires_at,
                    &s.times.revoked_at,
                    &s.ip,
                    &s.user_agent,
                    &i16::from(s.amr.bits()),
                    &s.jkt,
                    &s.device_key,
                ],
            )
            .await
            .map_err(pg)?;
            if let Some(refresh) = &new.refresh_hash {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO refresh_tokens (hash, session_id, issued_at)
                         VALUES ($1, $2, $3)",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&st, &[&bytes(refresh), &s.id, &s.times.created_at])
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.lookup(&SESSION_BY_ACCESS_HASH, &[&bytes(hash)], record_from_row)
            .await
    }

    async fn session_by_id(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        self.lookup(
            &format!("{RECORD_SELECT} WHERE s.id = $1"),
            &[&id],
            record_from_row,
        )
        .await
    }

    async fn touch_session(&self, id: &SessionId, touch: Touch) -> StoreResult<()> {
        self.execute(
            "UPDATE sessions SET last_seen_at = $2, idle_expires_at = $3 WHERE id = $1",
            &[&id, &touch.last_seen_at, &touch.idle_expires_at],
        )
        .await?;
        Ok(())
    }

    async fn revoke_session(&self, id: &SessionId, now: UnixTime) -> StoreResult<bool> {
        Ok(self
            .execute(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now],
            )
            .await?
            > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
    ) -> StoreResult<Vec<SessionId>> {
        self.op(async {
            let c = self.client().await?;
            // One statement: a concurrent revocation of the same rows makes this one wait and
            // then skip them (the WHERE is checked again), so each id is returned by one call.
            let st = c
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = $3
                     WHERE user_id = $1 AND revoked_at IS NULL
                       AND ($2::text IS NULL OR id <> $2)
                     RETURNING id",
                )
                .await
                .map_err(pg)?;
            c.query(&st, &[&user_id, &except, &now])
                .await
                .map_err(pg)?
                .iter()
                .map(|row| get::<String>(row, 0).map(SessionId::from))
                .collect()
        })
        .await
    }

    async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()> {
        // Refresh tokens go by ON DELETE CASCADE.
        self.execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
            .await
            .map(drop)
    }

    async fn list_sessions(
        &self,
        user_id: Option<&UserId>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.op(async {
            let c = self.client().await?;
            // Live means what SessionPolicy::check accepts: now before both expiries.
            let st = c
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s
                     WHERE ($2::text IS NULL OR s.user_id = $2)
                       AND s.revoked_at IS NULL
                       AND s.idle_expires_at > $1 AND s.absolute_expires_at > $1
                     ORDER BY s.created_at DESC, s.seq DESC"
                ))
                .await
                .map_err(pg)?;
            c.query(&st, &[&now, &user_id])
                .await
                .map_err(pg)?
                .iter()
                .map(session_from_row)
                .collect()
        })
        .await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        self.lookup(
            &format!(
                "{RECORD_SELECT} JOIN refresh_tokens r ON r.session_id = s.id
                     WHERE r.hash = $1"
            ),
            &[&bytes(hash)],
            record_from_row,
        )
        .await
    }

    /// Rotation in one transaction. The presented token's row is locked first (`FOR UPDATE`),
    /// so concurrent rotations of one token, from any instance, run one after the other and all
    /// but the first see it spent; the session row is locked next, so a concurrent revocation
    /// is either seen or waits.
    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            let st = tx
                .prepare_cached(
                    "SELECT session_id, used_at, sealed_successor FROM refresh_tokens
                     WHERE hash = $1 FOR UPDATE",
                )
                .await
                .map_err(pg)?;
            let Some(row) = tx
                .query_opt(&st, &[&bytes(&rotation.presented)])
                .await
                .map_err(pg)?
            else {
                return Ok(RefreshOutcome::Unknown);
            };
            let session_id: String = get(&row, 0)?;
            let used_at: Option<i64> = get(&row, 1)?;
            let sealed: Option<Vec<u8>> = get(&row, 2)?;
            let st = tx
                .prepare_cached(&format!("{RECORD_SELECT} WHERE s.id = $1 FOR UPDATE OF s"))
                .await
                .map_err(pg)?;
            let Some(row) = tx.query_opt(&st, &[&session_id]).await.map_err(pg)? else {
                // The foreign key makes this impossible short of a hand-edited database.
                return Ok(RefreshOutcome::Unknown);
            };
            let mut record = record_from_row(&row)?;
            let now = rotation.now;
            let times = record.session.times;
            match rotation.decide(&times, used_at) {
                RotationDecision::Ended { revoked } => {
                    return Ok(RefreshOutcome::SessionEnded { revoked });
                }
                RotationDecision::Repeat => {
                    let sealed_successor = sealed.ok_or_else(|| {
                        Failure::Corrupt("a spent refresh token has no sealed successor".into())
                    })?;
                    return Ok(RefreshOutcome::Repeated {
                        sealed_successor,
                        record,
                    });
                }
                RotationDecision::Revoke => {
                    let st = tx
                        .prepare_cached(
                            "UPDATE sessions SET revoked_at = $2
                             WHERE id = $1 AND revoked_at IS NULL",
                        )
                        .await
                        .map_err(pg)?;
                    tx.execute(&st, &[&session_id, &now]).await.map_err(pg)?;
                    tx.commit().await.map_err(pg)?;
                    return Ok(RefreshOutcome::ReuseDetected {
                        session_id: session_id.into(),
                    });
                }
                RotationDecision::Rotate => {}
            }
            let st = tx
                .prepare_cached(
                    "UPDATE refresh_tokens SET used_at = $2, sealed_successor = $3 WHERE hash = $1",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &st,
                &[
                    &bytes(&rotation.presented),
                    &now,
                    &rotation.sealed_successor,
                ],
            )
            .await
            .map_err(pg)?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)",
                )
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&bytes(&rotation.successor), &session_id, &now])
                .await
                .map_err(pg)?;
            let touch = rotation.touch(times.absolute_expires_at);
            let st = tx
                .prepare_cached(
                    "UPDATE sessions SET access_hash = coalesce($2, access_hash),
                         last_seen_at = $3, idle_expires_at = $4
                     WHERE id = $1",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &st,
                &[
                    &session_id,
                    &rotation.new_access_hash.as_ref().map(bytes),
                    &touch.last_seen_at,
                    &touch.idle_expires_at,
                ],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            record.session.times.last_seen_at = touch.last_seen_at;
            record.session.times.idle_expires_at = touch.idle_expires_at;
            Ok(RefreshOutcome::Rotated(record))
        })
        .await
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        self.op(async {
            let c = self.client().await?;
            // Refresh tokens go by ON DELETE CASCADE. Expired counters go too.
            let st = c
                .prepare_cached("DELETE FROM counters WHERE expires_at <= $1")
                .await
                .map_err(pg)?;
            c.execute(&st, &[&before]).await.map_err(pg)?;
            let st = c
                .prepare_cached("DELETE FROM sessions WHERE absolute_expires_at < $1")
                .await
                .map_err(pg)?;
            c.execute(&st, &[&before]).await.map_err(pg)
        })
        .await
    }

    /// Appends in one transaction under `REVOCATIONS_WRITE_LOCK`, so numbers become visible
    /// in the order they were handed out (see there).
    async fn log_revocations(&self, session_ids: &[SessionId], now: UnixTime) -> StoreResult<()> {
        if session_ids.is_empty() {
            return Ok(());
        }
        let count = i64::try_from(session_ids.len())
            .map_err(|_| StoreError::Corrupt("too many revocations at once".to_owned()))?;
        let ids: Vec<&str> = session_ids.iter().map(|id| id.as_str()).collect();
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            tx.batch_execute(REVOCATIONS_WRITE_LOCK).await.map_err(pg)?;
            // Numbers first, then the rows with them in the order given: the numbers are
            // sorted here rather than trusting the order a statement evaluates nextval in.
            let st = tx
                .prepare_cached(
                    "SELECT nextval('revocations_seq_seq') FROM generate_series(1, $1::bigint)",
                )
                .await
                .map_err(pg)?;
            let mut seqs = tx
                .query(&st, &[&count])
                .await
                .map_err(pg)?
                .iter()
                .map(|row| get::<i64>(row, 0))
                .collect::<Result<Vec<i64>, Failure>>()?;
            seqs.sort_unstable();
            let st = tx
                .prepare_cached(
                    "INSERT INTO revocations (seq, session_id, revoked_at)
                     SELECT seq, session_id, $3 FROM unnest($1::bigint[], $2::text[])
                         AS t(seq, session_id)",
                )
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&seqs, &ids, &now]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
        .await
    }

    /// Reads under `REVOCATIONS_READ_LOCK`: no append is under way meanwhile, so `last_seq`
    /// (read from the sequence, which is not transactional) never counts a number whose entry
    /// is not yet visible.
    async fn revocations_after(&self, after: u64, limit: usize) -> StoreResult<RevocationPage> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let seq = |value: i64| {
            u64::try_from(value)
                .map_err(|_| Failure::Corrupt(format!("negative revocation number {value}")))
        };
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            tx.batch_execute(REVOCATIONS_READ_LOCK).await.map_err(pg)?;
            let st = tx
                .prepare_cached(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                     FROM revocations_seq_seq",
                )
                .await
                .map_err(pg)?;
            let last: i64 = get(&tx.query_one(&st, &[]).await.map_err(pg)?, 0)?;
            let mut entries = Vec::new();
            if limit > 0 {
                let st = tx
                    .prepare_cached(
                        "SELECT seq, session_id, revoked_at FROM revocations
                         WHERE seq > $1 ORDER BY seq LIMIT $2",
                    )
                    .await
                    .map_err(pg)?;
                for row in tx.query(&st, &[&after, &limit]).await.map_err(pg)? {
                    entries.push(RevocationEntry {
                        seq: seq(get(&row, 0)?)?,
                        session_id: get::<String>(&row, 1)?.into(),
                        revoked_at: get(&row, 2)?,
                    });
                }
            }
            tx.commit().await.map_err(pg)?;
            Ok(RevocationPage {
                entries,
                last_seq: seq(last)?,
            })
        })
        .await
    }

    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64> {
        self.execute("DELETE FROM revocations WHERE revoked_at < $1", &[&before])
            .await
    }
}

/// Taken by every append to the revocation log, for the rest of its transaction.
///
/// A sequence hands numbers out when asked, not when the rows carrying them commit: two
/// writers could take 5 and 6 and commit 6 first, and a reader that saw 6 and moved on would
/// never see 5. Appending under one exclusive lock makes commit order equal number order. The
/// key is fixed per schema (as the migrations' is), so deployments or tests in separate
/// schemas of one database do not wait for each other; advisory locks are database-wide.
const REVOCATIONS_WRITE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('tessera-revocations:' || current_schema()))";

/// The shared side of [`REVOCATIONS_WRITE_LOCK`], taken by readers of the log: readers do not
/// wait for each other, only for an append under way, so the sequence's value they read
/// belongs to committed entries (or to none, after a failed append: a number never used).
const REVOCATIONS_READ_LOCK: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtext('tessera-revocations:' || current_schema()))";

#[async_trait]
impl FactorStore for PgStore {
    async fn totp_factor(&self, user_id: &UserId) -> StoreResult<Option<TotpFactor>> {
        self.lookup(
            "SELECT sealed_secret, confirmed, created_at, last_step FROM totp_factors
             WHERE user_id = $1",
            &[&user_id],
            |row| {
                Ok(TotpFactor {
                    sealed_secret: get(row, 0)?,
                    confirmed: get(row, 1)?,
                    created_at: get(row, 2)?,
                    last_step: get(row, 3)?,
                })
            },
        )
        .await
    }

    /// One statement, inserting only when the user row is there: `FOR KEY SHARE` holds off a
    /// concurrent deletion of the user until this commits (it then cascades), or, when the
    /// deletion came first, finds no row and inserts nothing.
    async fn put_totp_factor(&self, user_id: &UserId, factor: &TotpFactor) -> StoreResult<bool> {
        Ok(self
            .execute(
                "INSERT INTO totp_factors (user_id, sealed_secret, confirmed, created_at,
                     last_step)
                 SELECT id, $2, $3, $4, $5 FROM users WHERE id = $1 FOR KEY SHARE
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                     confirmed = excluded.confirmed, created_at = excluded.created_at,
                     last_step = excluded.last_step",
                &[
                    &user_id,
                    &factor.sealed_secret,
                    &factor.confirmed,
                    &factor.created_at,
                    &factor.last_step,
                ],
            )
            .await?
            > 0)
    }

    async fn remove_totp_factor(&self, user_id: &UserId) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM totp_factors WHERE user_id = $1", &[&user_id])
            .await?
            > 0)
    }

    /// One statement: concurrent calls for the row wait for each other, and each checks
    /// `last_step` again on the row as the one before left it, so one step is accepted once.
    async fn accept_totp_step(
        &self,
        user_id: &UserId,
        step: i64,
        confirm: bool,
    ) -> StoreResult<bool> {
        Ok(self
            .execute(
                "UPDATE totp_factors SET last_step = $2, confirmed = (confirmed OR $3)
                 WHERE user_id = $1 AND last_step < $2",
                &[&user_id, &step, &confirm],
            )
            .await?
            > 0)
    }

    /// One transaction, under a lock on the user row (`FOR NO KEY UPDATE`): replacements for
    /// one user run one after the other (never leaving both sets), and the user's deletion
    /// waits for it (then cascades) or came first (nothing is stored).
    async fn put_recovery_codes(
        &self,
        user_id: &UserId,
        hashes: &[TokenHash],
    ) -> StoreResult<bool> {
        let hashes: Vec<&[u8]> = hashes.iter().map(bytes).collect();
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            let st = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
                .await
                .map_err(pg)?;
            if tx.query_opt(&st, &[&user_id]).await.map_err(pg)?.is_none() {
                return Ok(false);
            }
            let st = tx
                .prepare_cached("DELETE FROM recovery_codes WHERE user_id = $1")
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&user_id]).await.map_err(pg)?;
            // A hash given twice is one code.
            let st = tx
                .prepare_cached(
                    "INSERT INTO recovery_codes (user_id, hash)
                     SELECT $1, hash FROM unnest($2::bytea[]) AS t(hash)
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&user_id, &hashes]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
        .await
    }

    /// One DELETE: of concurrent uses of a code, one removes it and the others, waiting for
    /// its row, find it gone.
    async fn use_recovery_code(&self, user_id: &UserId, hash: &TokenHash) -> StoreResult<bool> {
        Ok(self
            .execute(
                "DELETE FROM recovery_codes WHERE user_id = $1 AND hash = $2",
                &[&user_id, &bytes(hash)],
            )
            .await?
            > 0)
    }

    async fn count_recovery_codes(&self, user_id: &UserId) -> StoreResult<u32> {
        self.op(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached("SELECT count(*) FROM recovery_codes WHERE user_id = $1")
                .await
                .map_err(pg)?;
            let n: i64 = get(&c.query_one(&st, &[&user_id]).await.map_err(pg)?, 0)?;
            u32::try_from(n)
                .map_err(|_| Failure::Corrupt(format!("recovery code count {n} out of range")))
        })
        .await
    }
}

const PASSKEY_COLUMNS: &str = "credential_id, user_id, name, passkey, created_at, last_used_at";

fn passkey_from_row(row: &Row) -> Result<PasskeyRecord, Failure> {
    Ok(PasskeyRecord {
        credential_id: get(row, 0)?,
        user_id: get(row, 1)?,
        name: get(row, 2)?,
        passkey: get(row, 3)?,
        created_at: get(row, 4)?,
        last_used_at: get(row, 5)?,
    })
}

#[async_trait]
impl PasskeyStore for PgStore {
    /// One statement, inserting only when the user row is there (`FOR KEY SHARE`, as
    /// `put_totp_factor`); a credential id taken is a unique violation (Conflict).
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<bool> {
        Ok(self
            .execute(
                "INSERT INTO passkeys (credential_id, user_id, name, passkey, created_at,
                     last_used_at)
                 SELECT $1, id, $3, $4, $5, $6 FROM users WHERE id = $2 FOR KEY SHARE",
                &[
                    &passkey.credential_id,
                    &passkey.user_id,
                    &passkey.name,
                    &passkey.passkey,
                    &passkey.created_at,
                    &passkey.last_used_at,
                ],
            )
            .await?
            > 0)
    }

    async fn passkeys(&self, user_id: &UserId) -> StoreResult<Vec<PasskeyRecord>> {
        self.op(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1
                     ORDER BY created_at, credential_id"
                ))
                .await
                .map_err(pg)?;
            c.query(&st, &[&user_id])
                .await
                .map_err(pg)?
                .iter()
                .map(passkey_from_row)
                .collect()
        })
        .await
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> StoreResult<Option<PasskeyRecord>> {
        self.lookup(
            &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"),
            &[&credential_id],
            passkey_from_row,
        )
        .await
    }

    async fn rename_passkey(
        &self,
        user_id: &UserId,
        credential_id: &[u8],
        name: &str,
    ) -> StoreResult<bool> {
        Ok(self
            .execute(
                "UPDATE passkeys SET name = $3 WHERE user_id = $1 AND credential_id = $2",
                &[&user_id, &credential_id, &name],
            )
            .await?
            > 0)
    }

    async fn passkey_used(
        &self,
        user_id: &UserId,
        credential_id: &[u8],
        passkey: Option<&[u8]>,
        sign_count: u32,
        at: UnixTime,
    ) -> StoreResult<bool> {
        let sign_count = i64::from(sign_count);
        Ok(self
            .execute(
                "UPDATE passkeys SET passkey = coalesce($3, passkey), sign_count = $4,
                     last_used_at = $5
                 WHERE user_id = $1 AND credential_id = $2
                   AND (sign_count < $4 OR (sign_count = 0 AND $4 = 0))",
                &[&user_id, &credential_id, &passkey, &sign_count, &at],
            )
            .await?
            > 0)
    }

    async fn remove_passkey(&self, user_id: &UserId, credential_id: &[u8]) -> StoreResult<bool> {
        Ok(self
            .execute(
                "DELETE FROM passkeys WHERE user_id = $1 AND credential_id = $2",
                &[&user_id, &credential_id],
            )
            .await?
            > 0)
    }

    async fn put_ceremony(
        &self,
        id: &TokenHash,
        state: &[u8],
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        self.execute(
            "DELETE FROM passkey_ceremonies WHERE expires_at <= $1",
            &[&now],
        )
        .await?;
        self.execute(
            "INSERT INTO passkey_ceremonies (id, state, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                 expires_at = excluded.expires_at",
            &[&bytes(id), &state, &expires_at],
        )
        .await?;
        Ok(())
    }

    /// One DELETE … RETURNING: concurrent takers wait on the row lock, and all but the first
    /// find it gone.
    async fn take_ceremony(&self, id: &TokenHash, now: UnixTime) -> StoreResult<Option<Vec<u8>>> {
        let taken = self
            .lookup(
                "DELETE FROM passkey_ceremonies WHERE id = $1 RETURNING state, expires_at",
                &[&bytes(id)],
                |row| Ok((get::<Vec<u8>>(row, 0)?, get::<i64>(row, 1)?)),
            )
            .await?;
        Ok(taken.and_then(|(state, expires_at)| (expires_at > now).then_some(state)))
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.op(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached(
                    "SELECT kid, algorithm, private_key, public_key, created_at, retired_at
                     FROM signing_keys ORDER BY created_at, seq",
                )
                .await
                .map_err(pg)?;
            c.query(&st, &[])
                .await
                .map_err(pg)?
                .iter()
                .map(|row| {
                    let algorithm: String = get(row, 1)?;
                    Ok(KeyRecord {
                        kid: get(row, 0)?,
                        algorithm: algorithm.parse().map_err(|_| {
                            Failure::Corrupt(format!("unknown key algorithm {algorithm:?}"))
                        })?,
                        private: get(row, 2)?,
                        public: get(row, 3)?,
                        created_at: get(row, 4)?,
                        retired_at: get(row, 5)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()> {
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(pg)?;
            // Serialises concurrent rotations, so exactly one key ends up current.
            tx.batch_execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                .await
                .map_err(pg)?;
            let st = tx
                .prepare_cached("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&now]).await.map_err(pg)?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO signing_keys (kid, algorithm, private_key, public_key,
                         created_at, retired_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &st,
                &[
                    &key.kid,
                    &key.algorithm.jose_name(),
                    &key.private,
                    &key.public,
                    &key.created_at,
                    &key.retired_at,
                ],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        self.op(async {
            let c = self.client().await?;
            let st = c
                .prepare_cached(
                    "INSERT INTO audit_events (at, kind, actor, subject, session_id, ip,
                         user_agent, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await
                .map_err(pg)?;
            c.execute(
                &st,
                &[
                    &e.at,
                    &e.kind.as_str(),
                    &e.actor,
                    &e.subject,
                    &e.session_id,
                    &e.ip,
                    &e.user_agent,
                    &e.detail,
                ],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.op(async {
            let c = self.client().await?;
            // NULL parameters switch their condition off, so one statement serves every query.
            let st = c
                .prepare_cached(
                    "SELECT id, at, kind, actor, subject, session_id, ip, user_agent, detail
                     FROM audit_events
                     WHERE ($1::text IS NULL OR actor = $1 OR subject = $1)
                       AND ($2::text IS NULL OR kind = $2)
                       AND ($3::bigint IS NULL OR at >= $3)
                       AND ($4::bigint IS NULL OR at < $4)
                       AND ($5::bigint IS NULL OR id < $5)
                     ORDER BY id DESC
                     LIMIT $6",
                )
                .await
                .map_err(pg)?;
            let limit = i64::from(q.limit);
            c.query(
                &st,
                &[
                    &q.user,
                    &q.kind.map(EventKind::as_str),
                    &q.since,
                    &q.until,
                    &q.before_id,
                    &limit,
                ],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: get(row, 0)?,
                    at: get(row, 1)?,
                    kind: get::<String>(row, 2)?.parse().map_err(
                        |e: tessera_store::UnknownEventKind| Failure::Corrupt(e.to_string()),
                    )?,
                    actor: get(row, 3)?,
                    subject: get(row, 4)?,
                    session_id: get(row, 5)?,
                    ip: get(row, 6)?,
                    user_agent: get(row, 7)?,
                    detail: get(row, 8)?,
                })
            })
            .collect()
        })
        .await
    }
}

#[async_trait]
impl CounterStore for PgStore {
    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        self.op(async {
            let c = self.client().await?;
            // One atomic upsert: a counter whose window has passed starts over at 1.
            let st = c
                .prepare_cached(
                    "INSERT INTO counters AS k (key, count, window_start, last_at, expires_at)
                     VALUES ($1::text, 1, $2::bigint, $2, $2 + $3::bigint)
                     ON CONFLICT (key) DO UPDATE SET
                         count = CASE WHEN k.window_start + $3 <= $2 THEN 1 ELSE k.count + 1 END,
                         window_start = CASE WHEN k.window_start + $3 <= $2
                             THEN $2 ELSE k.window_start END,
                         expires_at = CASE WHEN k.window_start + $3 <= $2
                             THEN $2 + $3 ELSE k.expires_at END,
                         last_at = $2
                     RETURNING count, window_start, last_at",
                )
                .await
                .map_err(pg)?;
            counter_from_row(&c.query_one(&st, &[&key, &now, &window]).await.map_err(pg)?)
        })
        .await
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        self.lookup(
            "SELECT count, window_start, last_at FROM counters
                     WHERE key = $1 AND window_start + $3 > $2",
            &[&key, &now, &window],
            counter_from_row,
        )
        .await
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        // One statement, so atomic; a restarted window has another start and is left alone.
        self.execute(
            "UPDATE counters SET count = count - 1
             WHERE key = $1 AND window_start = $2 AND count > 0",
            &[&key, &window_start],
        )
        .await?;
        Ok(())
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        self.execute("DELETE FROM counters WHERE key = $1", &[&key])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Health for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.op(async {
            let c = self.client().await?;
            // Reads the schema version: proves the tables are there, not just the server.
            c.query_one("SELECT count(*) FROM tessera_migrations", &[])
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

/// A schema of its own in a shared database, for tests: created empty, dropped with everything
/// in it when the value is dropped.
///
/// Tests of every crate use it, so that they can run concurrently against one PostgreSQL.
#[derive(Debug)]
pub struct TestSchema {
    base: String,
    name: String,
    url: String,
}

impl TestSchema {
    /// Creates schema `tessera_test_<random>` in the database of `base_url`.
    ///
    /// # Errors
    /// When the database cannot be reached or the schema cannot be created.
    pub async fn create(base_url: &str) -> Result<TestSchema, StoreError> {
        let id = tessera_core::random::id()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .to_ascii_lowercase()
            .replace(['-', '_'], "");
        let name = format!("tessera_test_{id}");
        let (config, tls) = parse_config(base_url)?;
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        drop(client);
        let _ = driver.await;
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options=-c%20search_path%3D{name}");
        Ok(TestSchema {
            base: base_url.to_owned(),
            name,
            url,
        })
    }

    /// A URL whose connections use this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let name = self.name.clone();
        // Drop cannot await: a thread of its own with a small runtime drops the schema.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok((config, tls)) = parse_config(&base) else {
                    return;
                };
                if let Ok((client, connection)) = config.connect(tls).await {
                    let driver = tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        });
        let _ = dropper.join();
    }
}
