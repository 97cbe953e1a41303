//! Connection settings and the versioned schema.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use crate::error::Failure;

/// How long a statement waits for another process's lock before failing with `SQLITE_BUSY`
/// (reported as unavailable). Short on purpose: a store outage must fail closed within a second.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Bytes of the database file each reader maps into memory: address space, not memory (the
/// pages are the OS page cache's). SQLite caps this at its compile-time SQLITE_MAX_MMAP_SIZE,
/// 2 GiB by default and 64 GiB as this repository builds it (`.cargo/config.toml`); pages past
/// the cap are read with read().
const READER_MMAP_BYTES: i64 = 1 << 36;

/// Prepared statements kept per connection; more than the store has distinct queries.
const STATEMENT_CACHE: usize = 64;

/// The schema, one step per entry. Entry `i` takes the database from `user_version = i` to
/// `i + 1`. Append new steps; never edit a released one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: users, sessions, refresh tokens, signing keys.
    r#"
    CREATE TABLE users (
        id            TEXT    NOT NULL PRIMARY KEY,
        username      TEXT    NOT NULL UNIQUE,
        password_hash TEXT    NOT NULL,
        roles         TEXT    NOT NULL,  -- JSON array of strings
        permissions   TEXT    NOT NULL,  -- JSON array of strings
        disabled      INTEGER NOT NULL CHECK (disabled IN (0, 1)),
        created_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE sessions (
        id                  TEXT    NOT NULL PRIMARY KEY,
        user_id             TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        -- SHA-256 of the current opaque access token; NULL when access tokens are JWTs.
        access_hash         BLOB    UNIQUE CHECK (access_hash IS NULL OR length(access_hash) = 32),
        created_at          INTEGER NOT NULL,
        last_seen_at        INTEGER NOT NULL,
        idle_expires_at     INTEGER NOT NULL,
        absolute_expires_at INTEGER NOT NULL,
        revoked_at          INTEGER,
        ip                  TEXT,
        user_agent          TEXT
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_by_created ON sessions (created_at);
    CREATE INDEX sessions_by_absolute_expiry ON sessions (absolute_expires_at);

    -- Every refresh token a session was issued, spent or not: a spent one presented again is
    -- how theft is detected, so they live as long as their session.
    CREATE TABLE refresh_tokens (
        hash             BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
        session_id       TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        issued_at        INTEGER NOT NULL,
        used_at          INTEGER,
        -- The successor pair sealed under this token, set when it is spent.
        sealed_successor BLOB,
        CHECK ((used_at IS NULL) = (sealed_successor IS NULL))
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

    CREATE TABLE signing_keys (
        seq         INTEGER NOT NULL PRIMARY KEY,  -- insertion order, breaks created_at ties
        kid         TEXT    NOT NULL UNIQUE,
        algorithm   TEXT    NOT NULL,
        private_key BLOB    NOT NULL,
        public_key  BLOB    NOT NULL,
        created_at  INTEGER NOT NULL,
        retired_at  INTEGER
    ) STRICT;
    "#,
    // 2: the audit log and the throttling counters.
    r#"
    CREATE TABLE audit_events (
        id         INTEGER NOT NULL PRIMARY KEY,
        at         INTEGER NOT NULL,
        kind       TEXT    NOT NULL,
        actor      TEXT,
        subject    TEXT,
        session_id TEXT,
        ip         TEXT,
        user_agent TEXT,
        detail     TEXT
    ) STRICT;
    CREATE INDEX audit_by_at ON audit_events (at);
    CREATE INDEX audit_by_actor ON audit_events (actor, id);
    CREATE INDEX audit_by_subject ON audit_events (subject, id);

    CREATE TABLE counters (
        key          TEXT    NOT NULL PRIMARY KEY,
        count        INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        last_at      INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX counters_by_expiry ON counters (expires_at);
    "#,
    // 3: no change to the tables. From this version on every writer bumps the shared change
    // counters (`<database>-changes`, see `changes.rs`) that the session-record cache trusts;
    // builds from before would write without bumping them, and must refuse this database,
    // which they do because its version is newer than theirs.
    "-- change counters in use",
    // 4: the database's random identity, which its change-counters file (`changes.rs`) carries
    // in its header, so a counters file is trusted only for the database it was made for.
    // Builds from before use the counters file's previous layout and must refuse this database.
    r#"
    CREATE TABLE database_identity (id BLOB NOT NULL CHECK (length(id) = 16)) STRICT;
    INSERT INTO database_identity (id) VALUES (randomblob(16));
    "#,
    // 5: the revocation log. AUTOINCREMENT so a number is never handed out again, even after
    // the entry that had it (the highest, say) was purged; `sqlite_sequence` keeps the highest
    // number handed out, which is the log's `last_seq`.
    r#"
    CREATE TABLE revocations (
        seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        session_id TEXT    NOT NULL,
        revoked_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX revocations_by_time ON revocations (revoked_at);
    "#,
    // 6: how each session's user signed in (`Session::amr`, `Methods::bits`). Every session
    // before it was a password login: PASSWORD is 1. No CHECK: with one, ADD COLUMN would read
    // every session; a read refuses a value outside 0..=255 as corrupt instead.
    "ALTER TABLE sessions ADD COLUMN amr INTEGER NOT NULL DEFAULT 1;",
    // 7: second factors, deleted with their user (ON DELETE CASCADE): a TOTP factor per user
    // (its secret sealed by the caller) and single-use recovery codes, kept as SHA-256.
    r#"
    CREATE TABLE totp_factors (
        user_id       TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        sealed_secret BLOB    NOT NULL,
        confirmed     INTEGER NOT NULL CHECK (confirmed IN (0, 1)),
        created_at    INTEGER NOT NULL,
        -- The highest time step whose code was accepted (0: none).
        last_step     INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        hash    BLOB NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (user_id, hash)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 8: passkeys, deleted with their user, found by credential id (unique across users); and
    // the state of WebAuthn ceremonies under way, single-use, under SHA-256 of the id handed to
    // the client, until they expire.
    r#"
    CREATE TABLE passkeys (
        credential_id BLOB    NOT NULL PRIMARY KEY CHECK (length(credential_id) BETWEEN 1 AND 1023),
        user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name          TEXT    NOT NULL,
        passkey       BLOB    NOT NULL,
        sign_count    INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        last_used_at  INTEGER
    ) STRICT;
    CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

    CREATE TABLE passkey_ceremonies (
        id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 32),
        state      BLOB    NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
    "#,
    // 9: the DPoP key a session's tokens are bound to (`Session::jkt`, an RFC 7638 thumbprint);
    // NULL for every session before it, and for bearer and cookie sessions.
    "ALTER TABLE sessions ADD COLUMN jkt TEXT;",
    // 10: the key a browser registered for a device-bound session (`Session::device_key`, a
    // public JWK); NULL for every session before it and every other session.
    "ALTER TABLE sessions ADD COLUMN device_key TEXT;",
];

/// The database's identity (schema 4).
pub(crate) fn identity(conn: &Connection) -> Result<[u8; crate::changes::ID_BYTES], Failure> {
    let id: Vec<u8> = conn.query_row("SELECT id FROM database_identity", [], |row| row.get(0))?;
    id.try_into()
        .map_err(|_| Failure::Corrupt("the database identity is not 16 bytes".to_owned()))
}

/// Opens one connection to `path` with the settings every connection gets.
///
/// The writer also switches the file to WAL, which is persistent, so readers opened afterwards
/// find it in place.
pub(crate) fn connect(path: &Path, writer: bool) -> Result<Connection, Failure> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Query planner stability: plans never depend on bound values. Without it SQLite (built
    // with STAT4, as rusqlite's bundled build is) marks the parameters of our joins as
    // plan-relevant and re-prepares the cached statement on every new binding — a full parse
    // and plan (~10 µs) on each session lookup, for a plan that is always the same index probe.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if writer {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::Corrupt(format!(
                "the database could not be switched to WAL journal mode (it is {mode:?})"
            )));
        }
    }
    // In WAL mode, NORMAL only syncs at checkpoints, so a power loss can drop the last commits:
    // an acknowledged logout or revocation could come back. FULL syncs the WAL on every commit.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !writer {
        // Readers never write, even by mistake.
        conn.pragma_update(None, "query_only", "ON")?;
        // Lookups read pages straight from the OS page cache instead of copying them in with
        // a read() each: every commit by the writer empties each reader's own page cache (WAL),
        // and four readers would each hold a copy of the hot pages besides. This halved verify
        // latency with a million sessions. The mapping is read-only; the price is that an I/O
        // error on the file kills the process (SIGBUS) rather than failing one lookup, which
        // still fails closed.
        conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    }
    Ok(conn)
}

/// Brings the schema up to date: applies every step of [`MIGRATIONS`] past the stored
/// `user_version`, all in one IMMEDIATE transaction (so two processes opening the same file do
/// not both migrate, and a failed step leaves the database as it was).
pub(crate) fn migrate(conn: &mut Connection) -> Result<tessera_store::Migrated, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            Failure::Corrupt(format!(
                "database schema version {version} is not one this build knows (1..={known}); \
                 was it written by a newer tessera?"
            ))
        })?;
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        let reached = i64::try_from(step + 1)
            .map_err(|_| Failure::Corrupt("too many migrations".to_owned()))?;
        tx.pragma_update(None, "user_version", reached)?;
        tracing::info!(version = reached, "applied database migration");
    }
    tx.commit()?;
    let version = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(tessera_store::Migrated {
        from: version(applied),
        to: version(known),
    })
}
