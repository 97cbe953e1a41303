//! The versioned schema and its migration.

use deadpool_postgres::Client;

use crate::error::{Failure, pg};

/// The schema, one step per entry. Entry `i` takes the database from version `i` to `i + 1`.
/// Append new steps; never edit a released one. The same steps as SQLite's, in PostgreSQL types.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: users, sessions, refresh tokens, signing keys.
    r#"
    CREATE TABLE users (
        id            TEXT    NOT NULL PRIMARY KEY,
        username      TEXT    NOT NULL UNIQUE,
        password_hash TEXT    NOT NULL,
        roles         TEXT[]  NOT NULL,
        permissions   TEXT[]  NOT NULL,
        disabled      BOOLEAN NOT NULL,
        created_at    BIGINT  NOT NULL
    );

    CREATE TABLE sessions (
        seq                 BIGSERIAL NOT NULL UNIQUE,  -- insertion order, breaks created_at ties
        id                  TEXT    NOT NULL PRIMARY KEY,
        user_id             TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        -- SHA-256 of the current opaque access token; NULL when access tokens are JWTs.
        access_hash         BYTEA   UNIQUE CHECK (access_hash IS NULL OR length(access_hash) = 32),
        created_at          BIGINT  NOT NULL,
        last_seen_at        BIGINT  NOT NULL,
        idle_expires_at     BIGINT  NOT NULL,
        absolute_expires_at BIGINT  NOT NULL,
        revoked_at          BIGINT,
        ip                  TEXT,
        user_agent          TEXT
    );
    CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_by_created ON sessions (created_at);
    CREATE INDEX sessions_by_absolute_expiry ON sessions (absolute_expires_at);

    -- Every refresh token a session was issued, spent or not: a spent one presented again is
    -- how theft is detected, so they live as long as their session.
    CREATE TABLE refresh_tokens (
        hash             BYTEA  NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
        session_id       TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        issued_at        BIGINT NOT NULL,
        used_at          BIGINT,
        -- The successor pair sealed under this token, set when it is spent.
        sealed_successor BYTEA,
        CHECK ((used_at IS NULL) = (sealed_successor IS NULL))
    );
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

    CREATE TABLE signing_keys (
        seq         BIGSERIAL NOT NULL PRIMARY KEY,  -- insertion order, breaks created_at ties
        kid         TEXT   NOT NULL UNIQUE,
        algorithm   TEXT   NOT NULL,
        private_key BYTEA  NOT NULL,
        public_key  BYTEA  NOT NULL,
        created_at  BIGINT NOT NULL,
        retired_at  BIGINT
    );
    "#,
    // 2: the audit log and the throttling counters.
    r#"
    CREATE TABLE audit_events (
        id         BIGSERIAL NOT NULL PRIMARY KEY,
        at         BIGINT NOT NULL,
        kind       TEXT   NOT NULL,
        actor      TEXT,
        subject    TEXT,
        session_id TEXT,
        ip         TEXT,
        user_agent TEXT,
        detail     TEXT
    );
    CREATE INDEX audit_by_at ON audit_events (at);
    CREATE INDEX audit_by_actor ON audit_events (actor, id);
    CREATE INDEX audit_by_subject ON audit_events (subject, id);

    CREATE TABLE counters (
        key          TEXT    NOT NULL PRIMARY KEY,
        count        INTEGER NOT NULL,
        window_start BIGINT  NOT NULL,
        last_at      BIGINT  NOT NULL,
        expires_at   BIGINT  NOT NULL
    );
    CREATE INDEX counters_by_expiry ON counters (expires_at);
    "#,
    // 3: the revocation log. Numbers come from the column's sequence, which never hands one
    // out twice and is the log's `last_seq` (entries may have been purged, so not max(seq));
    // writers append under an advisory lock so that numbers become visible in order (see
    // `PgStore::log_revocations`). SQLite's schema 3 and 4 change nothing here.
    r#"
    CREATE TABLE revocations (
        seq        BIGSERIAL NOT NULL PRIMARY KEY,
        session_id TEXT   NOT NULL,
        revoked_at BIGINT NOT NULL
    );
    CREATE INDEX revocations_by_time ON revocations (revoked_at);
    "#,
    // 4: how each session's user signed in (`Session::amr`, `Methods::bits`; SQLite's 6).
    // Every session before it was a password login: PASSWORD is 1. A constant default adds the
    // column without rewriting the table, and NOT VALID checks new rows only, so the step reads
    // no session (the old ones all hold 1).
    r#"
    ALTER TABLE sessions ADD COLUMN amr SMALLINT NOT NULL DEFAULT 1;
    ALTER TABLE sessions ADD CONSTRAINT sessions_amr_bits CHECK (amr BETWEEN 0 AND 255) NOT VALID;
    "#,
    // 5: second factors, deleted with their user (ON DELETE CASCADE): a TOTP factor per user
    // (its secret sealed by the caller) and single-use recovery codes, kept as SHA-256
    // (SQLite's 7).
    r#"
    CREATE TABLE totp_factors (
        user_id       TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        sealed_secret BYTEA   NOT NULL,
        confirmed     BOOLEAN NOT NULL,
        created_at    BIGINT  NOT NULL,
        -- The highest time step whose code was accepted (0: none).
        last_step     BIGINT  NOT NULL
    );

    CREATE TABLE recovery_codes (
        user_id TEXT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        hash    BYTEA NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (user_id, hash)
    );
    "#,
    // 6: passkeys, deleted with their user, found by credential id (unique across users); and
    // the state of WebAuthn ceremonies under way, single-use, under SHA-256 of the id handed to
    // the client, until they expire (SQLite's 8).
    r#"
    CREATE TABLE passkeys (
        credential_id BYTEA  NOT NULL PRIMARY KEY
            CHECK (length(credential_id) BETWEEN 1 AND 1023),
        user_id       TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name          TEXT   NOT NULL,
        passkey       BYTEA  NOT NULL,
        sign_count    BIGINT NOT NULL DEFAULT 0,
        created_at    BIGINT NOT NULL,
        last_used_at  BIGINT
    );
    CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

    CREATE TABLE passkey_ceremonies (
        id         BYTEA  NOT NULL PRIMARY KEY CHECK (length(id) = 32),
        state      BYTEA  NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
    "#,
    // 7: the DPoP key a session's tokens are bound to (`Session::jkt`, an RFC 7638 thumbprint;
    // SQLite's 9). NULL for every session before it, and for bearer and cookie sessions; a
    // nullable column without a default is added without rewriting the table.
    "ALTER TABLE sessions ADD COLUMN jkt TEXT;",
    // 8: the key a browser registered for a device-bound session (`Session::device_key`, a
    // public JWK; SQLite's 10). NULL for every session before it and every other session.
    "ALTER TABLE sessions ADD COLUMN device_key TEXT;",
];

pub use tessera_store::Migrated;

/// Brings the schema in the connection's `search_path` schema up to date, in one transaction
/// under a transaction-scoped advisory lock: several instances starting at once queue on the
/// lock, and all but the first find nothing left to do. A failed step leaves the database as it
/// was (PostgreSQL DDL is transactional). A database from a newer build is refused.
/// Whether tessera's schema exists in the connection's schema (any version): what
/// administration commands check so that they never create one.
pub(crate) async fn exists(client: &Client) -> Result<bool, Failure> {
    client
        .query_one("SELECT to_regclass('tessera_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)
}

pub(crate) async fn migrate(client: &mut Client) -> Result<Migrated, Failure> {
    let tx = client.transaction().await.map_err(pg)?;
    // The lock key is per schema, so tests in separate schemas of one database do not queue.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tessera-migrations:' || current_schema()))",
        &[],
    )
    .await
    .map_err(pg)?;
    // `IF NOT EXISTS` would otherwise log a NOTICE at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tessera_migrations (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg)?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tessera_migrations",
            &[],
        )
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    let known = MIGRATIONS.len();
    let from = usize::try_from(found)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            Failure::Corrupt(format!(
                "database schema version {found} is not one this build knows (1..={known}); \
                 was it written by a newer tessera?"
            ))
        })?;
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(sql).await.map_err(pg)?;
        let reached = i32::try_from(step + 1)
            .map_err(|_| Failure::Corrupt("too many migrations".to_owned()))?;
        tx.execute(
            "INSERT INTO tessera_migrations (version) VALUES ($1)",
            &[&reached],
        )
        .await
        .map_err(pg)?;
        tracing::info!(version = reached, "applied database migration");
    }
    tx.commit().await.map_err(pg)?;
    let version = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Migrated {
        from: version(from),
        to: version(known),
    })
}
