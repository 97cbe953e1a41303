//! tessera's embedded store: one SQLite database file, in WAL mode, driven from tokio's
//! blocking pool.
//!
//! # Files
//!
//! [`SqliteStore::open`] takes the path of the database file (conventionally
//! `<data dir>/tessera.db`). It creates missing parent directories (mode 0700 on Unix) and the
//! file itself (mode 0600: it holds password hashes and signing keys). Next to it SQLite keeps
//! `tessera.db-wal` and `tessera.db-shm`; back up the three together, or use SQLite's online
//! backup. tessera adds `tessera.db-changes` (0600, 32 KiB), the change counters of the
//! session-record cache: it holds no data and need not be backed up (it is bound to the
//! database's identity and rebuilt when missing; removing or replacing it while tessera runs
//! turns the running processes' caches off until they restart, see `changes.rs`).
//!
//! # Schema
//!
//! Tables: `users` (roles and permissions as JSON arrays), `sessions` (the current opaque
//! access token's SHA-256 as a unique 32-byte BLOB, and `amr`, the bits of how the user signed
//! in), `refresh_tokens` (every refresh token of a
//! session, keyed by its SHA-256, with when it was spent and the successor pair sealed under it,
//! deleted with its session), `totp_factors` and `recovery_codes` (a user's second factors:
//! the TOTP secret sealed by the caller, recovery codes by SHA-256; deleted with the user),
//! `signing_keys`, and `revocations` (the revocation log, numbered
//! by AUTOINCREMENT so numbers are never reused). Token values are never stored, only their
//! hashes. The schema is versioned with `PRAGMA user_version` and brought up to date on open by
//! applying the pending steps of an append-only migration list in one transaction; a database
//! from a newer build is refused rather than misread.
//!
//! # Concurrency
//!
//! One writer connection behind a mutex serialises every write; a few reader connections serve
//! lookups alongside it (WAL lets readers run while a write is in progress, each seeing the last
//! committed state). SQLite calls run on tokio's blocking pool, never on an async worker, with
//! one exception: the verify path's point lookups (`session_by_access_hash`, `session_by_id`)
//! run inline on the calling task when a reader connection is free, with the busy handler off
//! (a busy database is retried on the blocking pool) — see `SqliteStore::lookup`. Those two
//! lookups are also served from a bounded cache of session records, trusted only while shared
//! change counters say nothing the record depends on was written since, by any process: see
//! `changes.rs` (the counters, in `<database>-changes`) and `cache.rs`.
//! Multi-statement writes are IMMEDIATE transactions, so they take the write lock up front:
//! refresh rotations of the same token serialise even across processes sharing the file (the
//! CLI run next to a server), and a lock held elsewhere for longer than the busy timeout (1 s)
//! fails the operation as [`StoreError::Unavailable`] instead of hanging.
//!
//! # Durability
//!
//! `synchronous=FULL`: every commit is fsynced to the WAL before the call returns, so a crash or
//! power loss never loses an acknowledged login, logout or revocation (with WAL's default
//! `NORMAL`, the last commits before a power loss can vanish and a revoked session come back).
//! `foreign_keys=ON` makes user deletion cascade to sessions and refresh tokens.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cache;
mod changes;
mod error;
mod queries;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use async_trait::async_trait;
use rusqlite::Connection;
use tessera_core::UnixTime;
use tessera_core::ids::{SessionId, UserId};
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;
use tessera_store::{
    AuditEvent, AuditQuery, AuditStore, Counter, CounterStore, FactorStore, Health, KeyStore,
    NewSession, PasskeyRecord, PasskeyStore, RefreshOutcome, RevocationPage, Rotation, Session,
    SessionRecord, SessionStore, StoreError, StoreResult, TotpFactor, User, UserStore,
};

use crate::cache::{RecordCache, Records};
use crate::changes::{ChangeCounters, Writing};
use crate::error::Failure;

/// Reader connections per store. Lookups beyond this many at once wait for a free one.
const READERS: usize = 4;

/// Session records [`SqliteStore::open`] keeps for the verify path, per key kind (access hash,
/// session id): ~0.5 KiB each.
pub const DEFAULT_RECORD_CACHE: u64 = 10_000;

/// The SQLite [`Store`]. Cheap to clone: clones share the same connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    counters: ChangeCounters,
    cache: RecordCache,
    /// Test builds: set when the writer updated or deleted a row a session record is read from.
    #[cfg(test)]
    record_rows_changed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    ///
    /// This does blocking file I/O; call it at startup or from a blocking task.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory or file cannot be created or opened, or the
    /// database is locked by another process for longer than the busy timeout;
    /// [`StoreError::Corrupt`] when the file is not a tessera database this build can read
    /// (including one migrated by a newer build).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_RECORD_CACHE)
    }

    /// Like [`SqliteStore::open`], keeping at most `capacity` session records per key kind
    /// in memory for the verify path (0: none, every lookup reads the database).
    ///
    /// # Errors
    /// As [`SqliteStore::open`], and [`StoreError::Unavailable`] when the change-counters file
    /// next to the database cannot be created, read or written.
    pub fn open_with_cache(path: &Path, capacity: u64) -> Result<SqliteStore, StoreError> {
        Ok(Self::open_inner(path, capacity)?)
    }

    fn open_inner(path: &Path, capacity: u64) -> Result<SqliteStore, Failure> {
        create_private_file(path)?;
        let mut writer = schema::connect(path, true)?;
        schema::migrate(&mut writer)?;
        #[cfg(test)]
        let record_rows_changed = watch_record_rows(&mut writer)?;
        // Opened whether or not this process caches: its writes must bump the counters that
        // other processes' caches trust.
        let counters = ChangeCounters::open(path, schema::identity(&writer)?)?;
        let readers = (0..READERS)
            .map(|_| schema::connect(path, false).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                counters,
                cache: RecordCache::new(capacity),
                #[cfg(test)]
                record_rows_changed,
            }),
        })
    }

    /// Opens (creating if needed) the database file at `path`, applies pending migrations and
    /// reports the schema versions before and after, without keeping the store open: what
    /// `tessera migrate` runs. [`SqliteStore::open`] migrates the same way.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn migrate(path: &Path) -> Result<tessera_store::Migrated, StoreError> {
        create_private_file(path)?;
        let mut writer = schema::connect(path, true)?;
        Ok(schema::migrate(&mut writer)?)
    }

    /// The latest schema version this build knows.
    pub fn latest_version() -> u32 {
        u32::try_from(schema::MIGRATIONS.len()).unwrap_or(u32::MAX)
    }

    /// The database file this store uses.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let conn = inner.reader();
            f(&conn)
        })
        .await
    }

    /// Runs a point lookup on a free reader connection right here, on the calling task, or on
    /// the blocking pool like [`Self::read`] when no reader is free.
    ///
    /// For the verify path only: an indexed lookup of one row in a warm database takes a few
    /// microseconds, less than handing it to the blocking pool and waking the task again (two
    /// thread switches per request, which dominated `/v1/verify` on one core). The connection's
    /// busy handler is off for the inline attempt so it never sleeps on a lock on an async
    /// worker: a database that answers busy (WAL recovery by another process, say) is retried
    /// on the blocking pool, which waits up to the busy timeout as usual. A page that is not
    /// in memory is read from the file inline, as a memory-mapped read would be.
    async fn lookup<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        if let Some(conn) = self.inner.free_reader() {
            match inline(&conn, &f) {
                Some(result) => return result.map_err(StoreError::from),
                None => drop(conn),
            }
        }
        self.read(f).await
    }

    /// A verify-path lookup through the session-record cache: a current record cached under
    /// `key` is returned as it is; otherwise [`Self::lookup`] runs `read`, and a record it finds
    /// is kept under `to_key()` if no write began meanwhile (see `cache.rs`).
    async fn cached_lookup<K, Q, F>(
        &self,
        records: &Records<K>,
        key: &Q,
        to_key: impl FnOnce() -> K,
        read: F,
    ) -> StoreResult<Option<SessionRecord>>
    where
        K: Eq + std::hash::Hash + Clone + std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
        F: Fn(&Connection) -> Result<Option<SessionRecord>, Failure> + Send + 'static,
    {
        let counters = &self.inner.counters;
        if let Some(record) = records.get(counters, key) {
            return Ok(Some(record));
        }
        let ticket = records.ticket(counters);
        let found = self.lookup(read).await?;
        if let (Some(ticket), Some(record)) = (ticket, &found) {
            records.keep(counters, ticket, to_key(), record);
        }
        Ok(found)
    }

    /// Runs `f` on the writer connection, on the blocking pool. `f` names the sessions and
    /// users it changes on the [`Writing`] before it commits (see `changes.rs`): the SQL that
    /// changes them in `queries.rs` takes what naming them returns, not an id; the write is
    /// marked finished after `f` returns, on the blocking thread, so a caller that stops
    /// waiting cannot mark it finished before its commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Writing<'_>) -> Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let writing = inner.counters.writing();
            let mut conn = lock(&inner.writer);
            let result = f(&mut conn, &writing);
            #[cfg(test)]
            assert!(
                !inner.record_rows_changed.swap(false, Ordering::Relaxed) || writing.names_any(),
                "a write changed sessions or users without naming them to the change counters"
            );
            drop(conn);
            drop(writing);
            result
        })
        .await
    }
}

/// Test builds only: a flag set whenever a statement on `writer` updates or deletes a row of
/// `sessions` or `users` (what a cached session record is read from), so that
/// [`SqliteStore::write`] fails every test in which a write changes them without naming any
/// session or user to the change counters — new SQL that took an id where it should take a
/// `SessionChange` or `UserChange`. Inserts change no cached record.
#[cfg(test)]
fn watch_record_rows(
    writer: &mut Connection,
) -> Result<Arc<std::sync::atomic::AtomicBool>, Failure> {
    use rusqlite::hooks::Action;
    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&changed);
    writer.update_hook(Some(
        move |action: Action, _db: &str, table: &str, _rowid: i64| {
            if matches!(action, Action::SQLITE_UPDATE | Action::SQLITE_DELETE)
                && matches!(table, "sessions" | "users")
            {
                flag.store(true, Ordering::Relaxed);
            }
        },
    ))?;
    Ok(changed)
}

/// Runs `f` on `conn` without its busy handler; `None` when the database answered busy.
fn inline<T>(
    conn: &Connection,
    f: &impl Fn(&Connection) -> Result<T, Failure>,
) -> Option<Result<T, Failure>> {
    if conn.busy_timeout(std::time::Duration::ZERO).is_err() {
        return None;
    }
    let result = f(conn);
    if let Err(error) = conn.busy_timeout(schema::BUSY_TIMEOUT) {
        tracing::warn!(%error, "could not restore a reader's busy timeout");
    }
    match result {
        Err(Failure::Sql(rusqlite::Error::SqliteFailure(e, _)))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            None
        }
        other => Some(other),
    }
}

impl Inner {
    /// A reader connection nobody is using, if there is one.
    fn free_reader(&self) -> Option<MutexGuard<'_, Connection>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        (0..self.readers.len()).find_map(|i| {
            let reader = self.readers.get((start + i) % self.readers.len())?;
            match reader.try_lock() {
                Ok(conn) => Some(conn),
                Err(TryLockError::Poisoned(poisoned)) => Some(recover(poisoned.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            }
        })
    }

    /// A free reader connection if there is one, else waits for one (round robin).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Some(reader) = self.readers.get((start + i) % self.readers.len()) {
                match reader.try_lock() {
                    Ok(conn) => return conn,
                    Err(TryLockError::Poisoned(poisoned)) => return recover(poisoned.into_inner()),
                    Err(TryLockError::WouldBlock) => {}
                }
            }
        }
        match self.readers.get(start % self.readers.len().max(1)) {
            Some(reader) => lock(reader),
            // No readers configured: read on the writer.
            None => lock(&self.writer),
        }
    }
}

/// Locks a connection. A poisoned lock (a panic while it was held) is taken over: any
/// transaction left open is rolled back first, so the connection is usable again and the store
/// recovers without a restart.
fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    recover(mutex.lock().unwrap_or_else(PoisonError::into_inner))
}

fn recover(conn: MutexGuard<'_, Connection>) -> MutexGuard<'_, Connection> {
    if !conn.is_autocommit()
        && let Err(error) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(%error, "could not roll back a transaction left open");
    }
    conn
}

/// Runs blocking database work on tokio's blocking pool.
async fn run_blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StoreError::from),
        // The task panicked or the runtime is shutting down.
        Err(join) => Err(StoreError::Unavailable(Box::new(join))),
    }
}

/// Creates the parent directories (0700) and the database file (0600) when missing.
fn create_private_file(path: &Path) -> Result<(), Failure> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(path)?;
    Ok(())
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        // A new user has no sessions: nothing cached depends on it.
        self.write(move |c, _| queries::create_user(c, &user)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let username = username.to_owned();
        self.read(move |c| queries::user_by_name(c, &username))
            .await
    }

    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |c| queries::user_by_id(c, &id)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read(queries::list_users).await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.read(queries::count_users).await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.write(move |c, w| queries::update_user(c, w.user(&user.id), &user))
            .await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |c, w| queries::delete_user(c, w.user(&id)))
            .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        let new = new.clone();
        // Only lookups that found a session are cached, so a new one changes no entry.
        self.write(move |c, _| queries::create_session(c, &new))
            .await
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let hash = *hash;
        self.cached_lookup(
            &self.inner.cache.by_hash,
            &hash,
            || hash,
            move |c| queries::session_by_access_hash(c, &hash),
        )
        .await
    }

    async fn session_by_id(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let owned = id.clone();
        self.cached_lookup(
            &self.inner.cache.by_id,
            id.as_str(),
            || id.as_str().into(),
            move |c| queries::session_by_id(c, &owned),
        )
        .await
    }

    async fn touch_session(&self, id: &SessionId, touch: Touch) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c, w| queries::touch_session(c, w.session(&id), touch))
            .await
    }

    async fn revoke_session(&self, id: &SessionId, now: UnixTime) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |c, w| queries::revoke_session(c, w.session(&id), now))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
    ) -> StoreResult<Vec<SessionId>> {
        let user_id = user_id.clone();
        let except = except.cloned();
        self.write(move |c, w| {
            queries::revoke_user_sessions(c, w.user(&user_id), except.as_deref(), now)
        })
        .await
    }

    async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |c, w| queries::delete_user_sessions(c, w.user(&user_id)))
            .await
    }

    async fn list_sessions(
        &self,
        user_id: Option<&UserId>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        let user_id = user_id.cloned();
        self.read(move |c| queries::list_sessions(c, user_id.as_deref(), now))
            .await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        let hash = *hash;
        self.read(move |c| queries::session_by_refresh_hash(c, &hash))
            .await
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        let rotation = rotation.clone();
        self.write(move |c, w| queries::rotate_refresh(c, &rotation, w))
            .await
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        self.write(move |c, w| queries::purge_sessions(c, w.everything(), before))
            .await
    }

    async fn log_revocations(&self, session_ids: &[SessionId], now: UnixTime) -> StoreResult<()> {
        let session_ids = session_ids.to_vec();
        // The log is not part of a session record.
        self.write(move |c, _| queries::log_revocations(c, &session_ids, now))
            .await
    }

    async fn revocations_after(&self, after: u64, limit: usize) -> StoreResult<RevocationPage> {
        self.read(move |c| queries::revocations_after(c, after, limit))
            .await
    }

    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64> {
        self.write(move |c, _| queries::purge_revocations(c, before))
            .await
    }
}

/// Factors are read by no session lookup and kept in no cache, so their writes name nothing to
/// the change counters (`changes.rs`); a user's deletion, which does, removes them by cascade.
#[async_trait]
impl FactorStore for SqliteStore {
    async fn totp_factor(&self, user_id: &UserId) -> StoreResult<Option<TotpFactor>> {
        let user_id = user_id.to_owned();
        self.read(move |c| queries::totp_factor(c, &user_id)).await
    }

    async fn put_totp_factor(&self, user_id: &UserId, factor: &TotpFactor) -> StoreResult<bool> {
        let (user_id, factor) = (user_id.to_owned(), factor.clone());
        self.write(move |c, _| queries::put_totp_factor(c, &user_id, &factor))
            .await
    }

    async fn remove_totp_factor(&self, user_id: &UserId) -> StoreResult<bool> {
        let user_id = user_id.to_owned();
        self.write(move |c, _| queries::remove_totp_factor(c, &user_id))
            .await
    }

    async fn accept_totp_step(
        &self,
        user_id: &UserId,
        step: i64,
        confirm: bool,
    ) -> StoreResult<bool> {
        let user_id = user_id.to_owned();
        self.write(move |c, _| queries::accept_totp_step(c, &user_id, step, confirm))
            .await
    }

    async fn put_recovery_codes(
        &self,
        user_id: &UserId,
        hashes: &[TokenHash],
    ) -> StoreResult<bool> {
        let (user_id, hashes) = (user_id.to_owned(), hashes.to_vec());
        self.write(move |c, _| queries::put_recovery_codes(c, &user_id, &hashes))
            .await
    }

    async fn use_recovery_code(&self, user_id: &UserId, hash: &TokenHash) -> StoreResult<bool> {
        let (user_id, hash) = (user_id.to_owned(), *hash);
        self.write(move |c, _| queries::use_recovery_code(c, &user_id, &hash))
            .await
    }

    async fn count_recovery_codes(&self, user_id: &UserId) -> StoreResult<u32> {
        let user_id = user_id.to_owned();
        self.read(move |c| queries::count_recovery_codes(c, &user_id))
            .await
    }
}

/// Passkeys and ceremony states are read by no session lookup and kept in no cache, like
/// factors: their writes name nothing to the change counters.
#[async_trait]
impl PasskeyStore for SqliteStore {
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<bool> {
        let passkey = passkey.clone();
        self.write(move |c, _| queries::add_passkey(c, &passkey))
            .await
    }

    async fn passkeys(&self, user_id: &UserId) -> StoreResult<Vec<PasskeyRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| queries::passkeys(c, &user_id)).await
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> StoreResult<Option<PasskeyRecord>> {
        let credential_id = credential_id.to_vec();
        self.read(move |c| queries::passkey_by_credential(c, &credential_id))
            .await
    }

    async fn rename_passkey(
        &self,
        user_id: &UserId,
        credential_id: &[u8],
        name: &str,
    ) -> StoreResult<bool> {
        let (user_id, credential_id, name) =
            (user_id.to_owned(), credential_id.to_vec(), name.to_owned());
        self.write(move |c, _| queries::rename_passkey(c, &user_id, &credential_id, &name))
            .await
    }

    async fn passkey_used(
        &self,
        user_id: &UserId,
        credential_id: &[u8],
        passkey: Option<&[u8]>,
        sign_count: u32,
        at: UnixTime,
    ) -> StoreResult<bool> {
        let (user_id, credential_id, passkey) = (
            user_id.to_owned(),
            credential_id.to_vec(),
            passkey.map(<[u8]>::to_vec),
        );
        self.write(move |c, _| {
            let passkey = passkey.as_deref();
            queries::passkey_used(c, &user_id, &credential_id, passkey, sign_count, at)
        })
        .await
    }

    async fn remove_passkey(&self, user_id: &UserId, credential_id: &[u8]) -> StoreResult<bool> {
        let (user_id, credential_id) = (user_id.to_owned(), credential_id.to_vec());
        self.write(move |c, _| queries::remove_passkey(c, &user_id, &credential_id))
            .await
    }

    async fn put_ceremony(
        &self,
        id: &TokenHash,
        state: &[u8],
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        let (id, state) = (*id, state.to_vec());
        self.write(move |c, _| queries::put_ceremony(c, &id, &state, expires_at, now))
            .await
    }

    async fn take_ceremony(&self, id: &TokenHash, now: UnixTime) -> StoreResult<Option<Vec<u8>>> {
        let id = *id;
        self.write(move |c, _| queries::take_ceremony(c, &id, now))
            .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.read(queries::signing_keys).await
    }

    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()> {
        let key = key.clone();
        // Keys, audit events and counters are not part of a session record.
        self.write(move |c, _| queries::add_signing_key(c, &key, now))
            .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let event = event.clone();
        self.write(move |c, _| queries::append_audit(c, &event))
            .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let query = query.clone();
        self.read(move |c| queries::audit_events(c, &query)).await
    }
}

#[async_trait]
impl CounterStore for SqliteStore {
    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        let key = key.to_owned();
        self.write(move |c, _| queries::hit_counter(c, &key, now, window))
            .await
    }

    fn counters_shared_across_hosts(&self) -> bool {
        false
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        let key = key.to_owned();
        self.read(move |c| queries::counter(c, &key, now, window))
            .await
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |c, _| queries::release_counter(c, &key, window_start))
            .await
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |c, _| queries::clear_counter(c, &key))
            .await
    }
}

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(queries::ping).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use rusqlite::Connection;
    use tessera_core::assurance::Methods;
    use tessera_core::ids::SessionId;
    use tessera_core::opaque::TokenHash;
    use tessera_core::session::{SessionTimes, Touch};
    use tessera_store::conformance::Fixture;
    use tessera_store::prelude::*;
    use tessera_store::{NewSession, RefreshOutcome, Rotation, Session, StoreError, User};

    use super::SqliteStore;
    use crate::error::Failure;
    use crate::queries;
    use crate::schema::MIGRATIONS;

    /// A directory under the system temp dir, removed with everything in it when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let name = format!("tessera-sqlite-{}", tessera_core::random::id().unwrap());
            TempDir(std::env::temp_dir().join(name))
        }

        fn db(&self) -> PathBuf {
            self.0.join("data").join("tessera.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A store on its own fresh database file. The store is declared first so its connections
    /// close before the directory is removed.
    struct TempStore {
        store: SqliteStore,
        _dir: TempDir,
    }

    impl Fixture for TempStore {
        fn store(&self) -> &dyn Store {
            &self.store
        }
    }

    async fn fresh() -> TempStore {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        TempStore { store, _dir: dir }
    }

    tessera_store::store_conformance_tests!(fresh);

    fn user(name: &str) -> User {
        User {
            id: tessera_core::random::id().unwrap().into(),
            username: name.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            roles: vec!["admin".to_owned()],
            permissions: Vec::new(),
            disabled: false,
            created_at: 1_700_000_000,
        }
    }

    fn summary(user: &User) -> tessera_store::UserSummary {
        tessera_store::UserSummary {
            id: user.id.clone(),
            username: user.username.clone(),
            roles: user.roles.clone(),
            permissions: user.permissions.clone(),
            disabled: user.disabled,
        }
    }

    #[tokio::test]
    async fn session_lookups_reuse_their_prepared_statements() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let alice = user("alice");
        store.create_user(&alice).await.unwrap();
        let mut sessions = Vec::new();
        for i in 0..3u8 {
            let session = Session {
                id: format!("session-{i}").into(),
                user_id: alice.id.clone(),
                times: SessionTimes {
                    created_at: 1,
                    last_seen_at: 1,
                    idle_expires_at: 2,
                    absolute_expires_at: 3,
                    revoked_at: None,
                },
                ip: None,
                user_agent: None,
                amr: Methods::PASSWORD,
                jkt: None,
                device_key: None,
            };
            let hash = TokenHash::from_bytes([i; 32]);
            store
                .create_session(&NewSession {
                    session: session.clone(),
                    user: summary(&alice),
                    access_hash: Some(hash),
                    refresh_hash: None,
                })
                .await
                .unwrap();
            sessions.push((session.id, hash));
        }
        // Each lookup binds a new value; the cached statement must be reused as prepared, not
        // re-parsed and re-planned (see QPSG in schema::connect).
        let conn = super::lock(&store.inner.readers[0]);
        for (id, hash) in &sessions {
            assert!(
                queries::session_by_access_hash(&conn, hash)
                    .unwrap()
                    .is_some()
            );
            assert_eq!(
                queries::session_by_id(&conn, id)
                    .unwrap()
                    .unwrap()
                    .session
                    .id,
                *id
            );
        }
        for sql in [queries::SESSION_BY_ACCESS_HASH, queries::SESSION_BY_ID] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 3, "{sql}");
        }
    }

    /// A session of `user` with an opaque access token hashing to `[tag; 32]` and a refresh
    /// token hashing to `[tag + 100; 32]`.
    async fn opaque_session(store: &SqliteStore, user: &User, tag: u8) -> (SessionId, TokenHash) {
        let id = SessionId::from(format!("session-{tag}"));
        let hash = TokenHash::from_bytes([tag; 32]);
        let session = Session {
            id: id.clone(),
            user_id: user.id.clone(),
            times: SessionTimes {
                created_at: 1,
                last_seen_at: 1,
                idle_expires_at: 1000,
                absolute_expires_at: 2000,
                revoked_at: None,
            },
            ip: None,
            user_agent: None,
            amr: Methods::PASSWORD,
            jkt: None,
            device_key: None,
        };
        store
            .create_session(&NewSession {
                session,
                user: summary(user),
                access_hash: Some(hash),
                refresh_hash: Some(TokenHash::from_bytes([tag + 100; 32])),
            })
            .await
            .unwrap();
        (id, hash)
    }

    /// How many times the lookup statements ran on every reader connection.
    fn lookups_run(store: &SqliteStore) -> i32 {
        store
            .inner
            .readers
            .iter()
            .map(|reader| {
                let conn = super::lock(reader);
                [queries::SESSION_BY_ACCESS_HASH, queries::SESSION_BY_ID]
                    .iter()
                    .map(|sql| {
                        conn.prepare_cached(sql)
                            .unwrap()
                            .get_status(rusqlite::StatementStatus::Run)
                    })
                    .sum::<i32>()
            })
            .sum()
    }

    #[tokio::test]
    async fn a_session_seen_before_is_served_from_memory_and_capacity_zero_reads_every_time() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let alice = user("alice");
        store.create_user(&alice).await.unwrap();
        let (id, hash) = opaque_session(&store, &alice, 1).await;
        let first = store.session_by_access_hash(&hash).await.unwrap().unwrap();
        let by_id = store.session_by_id(&id).await.unwrap().unwrap();
        assert_eq!(lookups_run(&store), 2);
        for _ in 0..5 {
            assert_eq!(
                store.session_by_access_hash(&hash).await.unwrap(),
                Some(first.clone())
            );
            assert_eq!(store.session_by_id(&id).await.unwrap(), Some(by_id.clone()));
        }
        assert_eq!(lookups_run(&store), 2, "served from memory");
        // A miss is never remembered.
        let unknown = TokenHash::from_bytes([9; 32]);
        assert_eq!(store.session_by_access_hash(&unknown).await.unwrap(), None);
        assert_eq!(store.session_by_access_hash(&unknown).await.unwrap(), None);
        assert_eq!(lookups_run(&store), 4);

        let uncached = SqliteStore::open_with_cache(&dir.db(), 0).unwrap();
        for _ in 0..3 {
            assert_eq!(
                uncached.session_by_access_hash(&hash).await.unwrap(),
                Some(first.clone())
            );
        }
        assert_eq!(lookups_run(&uncached), 3);
    }

    /// `other` (as another process would) revokes the session `store` has cached; `store` must
    /// see it at once, whatever happened to the change-counters file (issue 11 #9).
    async fn revoked_elsewhere_is_seen(
        dir: &TempDir,
        store: &SqliteStore,
        session: (&str, &TokenHash),
        other: &SqliteStore,
    ) {
        let (id, hash) = session;
        assert!(
            other
                .revoke_session(&SessionId::from(id), 1_700_000_100)
                .await
                .unwrap()
        );
        let by_hash = store.session_by_access_hash(hash).await.unwrap().unwrap();
        let by_id = store
            .session_by_id(&SessionId::from(id))
            .await
            .unwrap()
            .unwrap();
        for record in [by_hash, by_id] {
            assert_eq!(
                record.session.times.revoked_at,
                Some(1_700_000_100),
                "the revocation made elsewhere is seen, not the cached record"
            );
        }
        let truth = SqliteStore::open_with_cache(&dir.db(), 0).unwrap();
        assert_eq!(
            truth
                .session_by_id(&SessionId::from(id))
                .await
                .unwrap()
                .unwrap()
                .session
                .times
                .revoked_at,
            Some(1_700_000_100)
        );
    }

    /// `store` with alice's session looked up twice by hash and by id (cached).
    async fn cached_session(store: &SqliteStore) -> (String, TokenHash) {
        let alice = user("alice");
        store.create_user(&alice).await.unwrap();
        let (id, hash) = opaque_session(store, &alice, 1).await;
        for _ in 0..2 {
            assert!(store.session_by_access_hash(&hash).await.unwrap().is_some());
            assert!(store.session_by_id(&id).await.unwrap().is_some());
        }
        assert_eq!(lookups_run(store), 2, "served from memory");
        (id.to_string(), hash)
    }

    #[tokio::test]
    async fn a_removed_counters_file_turns_the_cache_off_and_the_next_process_sees_old_writes() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let (id, hash) = cached_session(&store).await;
        let counters = crate::changes::counters_path(&dir.db());
        std::fs::remove_file(&counters).unwrap();
        // A process started now creates a new counters file, which `store` never reads.
        let later = SqliteStore::open(&dir.db()).unwrap();
        assert!(counters.exists());
        revoked_elsewhere_is_seen(&dir, &store, (&id, &hash), &later).await;
        assert!(store.inner.counters.is_off(), "turned off and reported");
        assert!(!later.inner.counters.is_off());

        // The other way round: `later` caches a session, `store` (on the removed file) revokes
        // it, and `later` sees it, as `store` also updates the file now at the path.
        let bob = user("bob");
        store.create_user(&bob).await.unwrap();
        let (id, hash) = opaque_session(&store, &bob, 2).await;
        for _ in 0..2 {
            assert!(later.session_by_access_hash(&hash).await.unwrap().is_some());
        }
        let read = lookups_run(&later);
        assert!(later.session_by_access_hash(&hash).await.unwrap().is_some());
        assert_eq!(lookups_run(&later), read, "`later` caches");
        revoked_elsewhere_is_seen(&dir, &later, (&id, &hash), &store).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_database_opened_through_a_symlink_shares_the_counters_file() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let (id, hash) = cached_session(&store).await;
        let link = dir.0.join("link.db");
        std::os::unix::fs::symlink(dir.db(), &link).unwrap();
        let through_link = SqliteStore::open(&link).unwrap();
        revoked_elsewhere_is_seen(&dir, &store, (&id, &hash), &through_link).await;
        assert!(!store.inner.counters.is_off(), "one file, nothing wrong");
        assert!(!crate::changes::counters_path(&link).exists());
    }

    #[tokio::test]
    async fn a_truncated_counters_file_neither_crashes_nor_serves_a_revoked_session() {
        for length in [0, 20, 4096] {
            let dir = TempDir::new();
            let store = SqliteStore::open(&dir.db()).unwrap();
            let other = SqliteStore::open(&dir.db()).unwrap();
            let (id, hash) = cached_session(&store).await;
            std::fs::OpenOptions::new()
                .write(true)
                .open(crate::changes::counters_path(&dir.db()))
                .unwrap()
                .set_len(length)
                .unwrap();
            revoked_elsewhere_is_seen(&dir, &store, (&id, &hash), &other).await;
            assert!(store.inner.counters.is_off(), "truncated to {length}: off");
        }
    }

    #[tokio::test]
    async fn a_counters_file_of_another_database_is_not_trusted() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let (id, hash) = cached_session(&store).await;
        // Another database's counters file put in its place (a restore, say).
        let elsewhere = TempDir::new();
        drop(SqliteStore::open(&elsewhere.db()).unwrap());
        let counters = crate::changes::counters_path(&dir.db());
        std::fs::copy(crate::changes::counters_path(&elsewhere.db()), &counters).unwrap();
        let read = lookups_run(&store);
        assert!(store.session_by_access_hash(&hash).await.unwrap().is_some());
        assert_eq!(lookups_run(&store), read + 1, "not served from memory");
        assert!(store.inner.counters.is_off(), "turned off and reported");
        let later = SqliteStore::open(&dir.db()).unwrap();
        revoked_elsewhere_is_seen(&dir, &store, (&id, &hash), &later).await;
    }

    /// Every write that changes what a lookup returns, made through another store on the same
    /// file (as another process, the CLI say, would), is seen by the next lookup of a store
    /// that had the record cached. One case per change-counter bump in `queries.rs`: the test
    /// fails if any one of them is removed.
    #[tokio::test]
    async fn every_write_elsewhere_is_seen_at_once_through_the_cache() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let other = SqliteStore::open(&dir.db()).unwrap();
        let alice = user("alice");
        store.create_user(&alice).await.unwrap();

        // Looks a session up by hash and by id twice (the second from memory), and returns
        // what the uncached truth is after `change` ran elsewhere, next to what `store` says.
        async fn after<F, Fut>(
            store: &SqliteStore,
            dir: &TempDir,
            id: &str,
            hash: &TokenHash,
            change: F,
        ) where
            F: FnOnce() -> Fut,
            Fut: std::future::Future<Output = ()>,
        {
            for _ in 0..2 {
                assert!(store.session_by_access_hash(hash).await.unwrap().is_some());
                assert!(
                    store
                        .session_by_id(&SessionId::from(id))
                        .await
                        .unwrap()
                        .is_some()
                );
            }
            change().await;
            let truth = SqliteStore::open_with_cache(&dir.db(), 0).unwrap();
            assert_eq!(
                store.session_by_access_hash(hash).await.unwrap(),
                truth.session_by_access_hash(hash).await.unwrap()
            );
            assert_eq!(
                store.session_by_id(&SessionId::from(id)).await.unwrap(),
                truth.session_by_id(&SessionId::from(id)).await.unwrap()
            );
        }

        // The times of the session `hash` finds, as `store` answers.
        async fn times(store: &SqliteStore, hash: &TokenHash) -> SessionTimes {
            store
                .session_by_access_hash(hash)
                .await
                .unwrap()
                .unwrap()
                .session
                .times
        }

        // The rotation of the refresh token `opaque_session(_, _, tag)` issued, at 10.
        fn rotation(tag: u8) -> Rotation {
            Rotation {
                presented: TokenHash::from_bytes([tag + 100; 32]),
                successor: TokenHash::from_bytes([tag + 200; 32]),
                sealed_successor: vec![1, 2, 3],
                new_access_hash: Some(TokenHash::from_bytes([tag + 30; 32])),
                grace: 10,
                idle_timeout: 500,
                now: 10,
            }
        }

        let (id, hash) = opaque_session(&store, &alice, 1).await;
        after(&store, &dir, &id, &hash, || async {
            assert!(other.revoke_session(&id, 50).await.unwrap());
        })
        .await;
        assert_eq!(
            store
                .session_by_id(&id)
                .await
                .unwrap()
                .unwrap()
                .session
                .times
                .revoked_at,
            Some(50)
        );

        let (id, hash) = opaque_session(&store, &alice, 2).await;
        after(&store, &dir, &id, &hash, || async {
            other
                .touch_session(
                    &id,
                    Touch {
                        last_seen_at: 5,
                        idle_expires_at: 1005,
                    },
                )
                .await
                .unwrap();
        })
        .await;
        assert_eq!(times(&store, &hash).await.idle_expires_at, 1005);

        after(&store, &dir, &id, &hash, || async {
            let mut changed = alice.clone();
            changed.roles = vec!["viewer".to_owned()];
            changed.disabled = true;
            assert!(other.update_user(&changed).await.unwrap());
        })
        .await;
        let user_now = store.session_by_id(&id).await.unwrap().unwrap().user;
        assert!(user_now.disabled && user_now.roles == ["viewer"]);

        after(&store, &dir, &id, &hash, || async {
            assert_eq!(
                other
                    .revoke_user_sessions(&alice.id, None, 60)
                    .await
                    .unwrap(),
                vec![id.clone()]
            );
        })
        .await;

        // Refresh rotation moves the access hash: the old one must stop finding the session.
        let (id, hash) = opaque_session(&store, &alice, 3).await;
        after(&store, &dir, &id, &hash, || async {
            let outcome = other.rotate_refresh(&rotation(3)).await.unwrap();
            assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
        })
        .await;
        assert_eq!(store.session_by_access_hash(&hash).await.unwrap(), None);

        let (id, hash) = opaque_session(&store, &alice, 4).await;
        after(&store, &dir, &id, &hash, || async {
            assert_eq!(other.purge_sessions(5000).await.unwrap(), 4);
        })
        .await;
        assert_eq!(store.session_by_id(&id).await.unwrap(), None);

        let (id, hash) = opaque_session(&store, &alice, 5).await;
        after(&store, &dir, &id, &hash, || async {
            assert!(other.delete_user(&alice.id).await.unwrap());
        })
        .await;
        assert_eq!(store.session_by_access_hash(&hash).await.unwrap(), None);

        // A refresh token presented again after the grace window revokes its session.
        let bob = user("bob");
        store.create_user(&bob).await.unwrap();
        let (id, _) = opaque_session(&store, &bob, 6).await;
        let outcome = store.rotate_refresh(&rotation(6)).await.unwrap();
        assert!(matches!(outcome, RefreshOutcome::Rotated(_)), "{outcome:?}");
        let hash = TokenHash::from_bytes([36; 32]);
        after(&store, &dir, &id, &hash, || async {
            let replay = Rotation {
                successor: TokenHash::from_bytes([216; 32]),
                now: 30,
                ..rotation(6)
            };
            let outcome = other.rotate_refresh(&replay).await.unwrap();
            assert!(
                matches!(outcome, RefreshOutcome::ReuseDetected { .. }),
                "{outcome:?}"
            );
        })
        .await;
        assert_eq!(times(&store, &hash).await.revoked_at, Some(30));
    }

    /// The guard of test builds: a write whose SQL changes a session without naming it to
    /// the change counters fails, so a new write that forgets its bump cannot pass the tests.
    #[tokio::test]
    async fn a_write_that_changes_a_session_without_naming_it_fails_in_tests() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let alice = user("alice");
        store.create_user(&alice).await.unwrap();
        let (id, _) = opaque_session(&store, &alice, 1).await;
        let unnamed = store
            .write({
                let id = id.clone();
                move |c, _| {
                    Ok(c.execute(
                        "UPDATE sessions SET revoked_at = 1 WHERE id = ?1",
                        [id.as_str()],
                    )?)
                }
            })
            .await;
        assert!(
            matches!(unnamed, Err(StoreError::Unavailable(_))),
            "{unnamed:?}"
        );
        // The guard fails tests; it does not undo the unnamed write's commit, so this named
        // one finds the session revoked already.
        let named = store
            .write(move |c, w| queries::revoke_session(c, w.session(&id), 1))
            .await;
        assert!(matches!(named, Ok(false)), "{named:?}");
    }

    fn busy() -> Failure {
        Failure::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ))
    }

    fn busy_timeout(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "busy_timeout", |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn inline_lookups_never_wait_on_a_lock_and_restore_the_busy_timeout() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let conn = super::lock(&store.inner.readers[0]);
        let during = super::inline(&conn, &|c| Ok(busy_timeout(c)))
            .unwrap()
            .unwrap();
        assert_eq!(during, 0);
        assert_eq!(busy_timeout(&conn), 1000);
        assert!(super::inline(&conn, &|_| Err::<(), _>(busy())).is_none());
        assert_eq!(busy_timeout(&conn), 1000);
        let other = super::inline(&conn, &|_| Err::<(), _>(Failure::Corrupt("x".into())));
        assert!(matches!(other, Some(Err(Failure::Corrupt(_)))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lookups_run_inline_and_retry_a_busy_database_on_the_blocking_pool() {
        use std::sync::Mutex as StdMutex;
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let here = std::thread::current().id();

        // A free reader: no thread hop.
        let ran_on = store
            .lookup(|_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, here);

        // Busy inline: retried off the async worker, with the busy handler back on.
        let calls = std::sync::Arc::new(StdMutex::new(Vec::new()));
        let seen = calls.clone();
        let result = store
            .lookup(move |c| {
                let mut calls = seen.lock().unwrap();
                calls.push((std::thread::current().id(), busy_timeout(c)));
                if calls.len() == 1 { Err(busy()) } else { Ok(7) }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (here, 0));
        assert_ne!(calls[1].0, here);
        assert_eq!(calls[1].1, 1000);

        // Every reader taken: the lookup waits on the blocking pool, not here.
        let guards: Vec<_> = store.inner.readers.iter().map(super::lock).collect();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.lookup(|_| Ok(std::thread::current().id())).await }
        });
        // On this current-thread runtime, yielding runs the spawned task until it awaits: it
        // found no free reader and handed the lookup to the blocking pool (no fixed sleep).
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits for a reader");
        drop(guards);
        assert_ne!(waiting.await.unwrap().unwrap(), here);
    }

    #[tokio::test]
    async fn opens_in_wal_with_full_sync_and_foreign_keys() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.path(), dir.db());
        let conn = super::lock(&store.inner.writer);
        let get = |name: &str| -> String {
            conn.pragma_query_value(None, name, |row| {
                row.get::<_, rusqlite::types::Value>(0)
                    .map(|v| format!("{v:?}"))
            })
            .unwrap()
        };
        assert_eq!(get("journal_mode"), "Text(\"wal\")");
        assert_eq!(get("synchronous"), "Integer(2)", "FULL");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(
            get("user_version"),
            format!("Integer({})", MIGRATIONS.len())
        );
        for reader in &store.inner.readers {
            let reader = super::lock(reader);
            let fk: i64 = reader
                .pragma_query_value(None, "foreign_keys", |row| row.get(0))
                .unwrap();
            assert_eq!(fk, 1);
            assert!(
                reader.execute_batch("DELETE FROM users").is_err(),
                "query_only"
            );
            let mmap: i64 = reader
                .pragma_query_value(None, "mmap_size", |row| row.get(0))
                .unwrap();
            assert_eq!(
                mmap,
                1 << 36,
                "readers map the file (64 GiB: .cargo/config.toml)"
            );
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_file_and_new_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let _store = SqliteStore::open(&dir.db()).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.db()), 0o600);
        assert_eq!(mode(dir.db().parent().unwrap()), 0o700);
    }

    #[tokio::test]
    async fn data_survives_reopening_and_migrations_run_once() {
        let dir = TempDir::new();
        let alice = user("alice");
        {
            let store = SqliteStore::open(&dir.db()).unwrap();
            store.create_user(&alice).await.unwrap();
        }
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.user_by_name("alice").await.unwrap(), Some(alice));
        // A second store on the same file (another process, say) sees the same data.
        let other = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(other.count_users().await.unwrap(), 1);
    }

    #[test]
    fn migrate_reports_versions_and_applies_each_step_once() {
        let dir = TempDir::new();
        let latest = SqliteStore::latest_version();
        let first = SqliteStore::migrate(&dir.db()).unwrap();
        assert_eq!((first.from, first.to), (0, latest));
        let again = SqliteStore::migrate(&dir.db()).unwrap();
        assert_eq!((again.from, again.to), (latest, latest));
        assert!(SqliteStore::open(&dir.db()).is_ok());
    }

    /// Sessions stored before their `amr` was (all of them password logins) read back as
    /// PASSWORD after the migration, and unbound to any DPoP key (`jkt`, a later step); a
    /// stored value that is not a byte is corrupt.
    #[tokio::test]
    async fn sessions_from_before_amr_was_stored_were_password_logins() {
        use tessera_core::assurance::Method;
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
        let amr_step = MIGRATIONS
            .iter()
            .position(|step| step.contains("ADD COLUMN amr"))
            .unwrap();
        {
            let conn = Connection::open(dir.db()).unwrap();
            for step in &MIGRATIONS[..amr_step] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", amr_step as i64)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO users (id, username, password_hash, roles, permissions, disabled,
                     created_at) VALUES ('u1', 'old', 'x', '[]', '[]', 0, 1);
                 INSERT INTO sessions (id, user_id, created_at, last_seen_at, idle_expires_at,
                     absolute_expires_at) VALUES ('s1', 'u1', 1, 1, 1000, 2000),
                     ('s2', 'u1', 1, 1, 1000, 2000);",
            )
            .unwrap();
        }
        let store = SqliteStore::open_with_cache(&dir.db(), 0).unwrap();
        let record = store.session_by_id(&"s1".into()).await.unwrap().unwrap();
        assert_eq!(record.session.amr, Methods::PASSWORD);
        assert_eq!(
            record.session.jkt, None,
            "sessions from before DPoP are unbound"
        );
        let listed = store.list_sessions(None, 10).await.unwrap();
        assert!(
            listed.iter().all(|s| s.amr == Methods::PASSWORD),
            "{listed:?}"
        );
        assert_eq!(listed.len(), 2);

        let raw = Connection::open(dir.db()).unwrap();
        raw.execute("UPDATE sessions SET amr = 3 WHERE id = 's2'", [])
            .unwrap();
        let record = store.session_by_id(&"s2".into()).await.unwrap().unwrap();
        assert_eq!(
            record.session.amr,
            Methods::PASSWORD.with(Method::OneTimeCode)
        );
        for bad in [256, -1] {
            raw.execute("UPDATE sessions SET amr = ?1 WHERE id = 's2'", [bad])
                .unwrap();
            let read = store.session_by_id(&"s2".into()).await;
            assert!(
                matches!(read, Err(StoreError::Corrupt(_))),
                "{bad}: {read:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.db()).unwrap());
        Connection::open(dir.db())
            .unwrap()
            .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        let error = SqliteStore::open(&dir.db()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
        std::fs::write(dir.db(), vec![0x5a; 8192]).unwrap();
        assert!(SqliteStore::open(&dir.db()).is_err());
    }

    #[tokio::test]
    async fn a_lock_held_elsewhere_fails_closed_within_about_a_second() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let elsewhere = Connection::open(dir.db()).unwrap();
        elsewhere.execute_batch("BEGIN IMMEDIATE").unwrap();

        let started = Instant::now();
        let result = store.create_user(&user("bob")).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // Reads carry on while the write lock is held (WAL).
        assert_eq!(store.count_users().await.unwrap(), 0);

        elsewhere.execute_batch("ROLLBACK").unwrap();
        store.create_user(&user("bob")).await.unwrap();
        assert_eq!(store.count_users().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn unreadable_stored_data_is_corrupt() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let carol = user("carol");
        store.create_user(&carol).await.unwrap();
        Connection::open(dir.db())
            .unwrap()
            .execute(
                "UPDATE users SET roles = 'not json' WHERE id = ?1",
                [&carol.id],
            )
            .unwrap();
        let result = store.user_by_id(&carol.id).await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        // Other operations still work.
        store.ping().await.unwrap();
    }
}
