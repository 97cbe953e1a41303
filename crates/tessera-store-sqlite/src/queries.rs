//! The store's SQL, as blocking functions on a connection. Every statement is prepared through
//! the connection's statement cache.
//!
//! A function that changes a session or a user takes the [`SessionChange`], [`UserChange`] or
//! [`AnySessionChange`] of the write it runs in (made only by bumping that session's or user's
//! change counter, see `changes.rs`) and changes exactly the id it names: the session-record
//! cache trusts those counters. Writes that change no cached record (a new user, a new
//! session, second factors, keys, audit events, rate counters) take none.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tessera_core::UnixTime;
use tessera_core::assurance::Methods;
use tessera_core::ids::SessionId;
use tessera_core::keys::{Algorithm, KeyRecord};
use tessera_core::opaque::TokenHash;
use tessera_core::session::{SessionTimes, Touch};
use tessera_store::{
    AuditEvent, AuditQuery, Counter, EventKind, NewSession, PasskeyRecord, RefreshOutcome,
    RevocationEntry, RevocationPage, Rotation, RotationDecision, Session, SessionRecord,
    TotpFactor, User, UserSummary,
};

use crate::changes::{AnySessionChange, SessionChange, UserChange, Writing};
use crate::error::Failure;

/// A list of strings stored as a JSON array in a TEXT column.
struct StringList(Vec<String>);

impl FromSql for StringList {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(value.as_str()?)
            .map(StringList)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

fn json(list: &[String]) -> Result<String, Failure> {
    serde_json::to_string(list).map_err(|e| Failure::Corrupt(e.to_string()))
}

/// A signing algorithm stored by its JOSE name.
struct StoredAlgorithm(Algorithm);

impl FromSql for StoredAlgorithm {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map(StoredAlgorithm)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

fn hash(hash: &TokenHash) -> &[u8] {
    hash.as_bytes()
}

// ---- users ----

const USER_COLUMNS: &str = "id, username, password_hash, roles, permissions, disabled, created_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        roles: row.get::<_, StringList>(3)?.0,
        permissions: row.get::<_, StringList>(4)?.0,
        disabled: row.get(5)?,
        created_at: row.get(6)?,
    })
}

pub(crate) fn create_user(conn: &Connection, user: &User) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO users (id, username, password_hash, roles, permissions, disabled, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        user.id,
        user.username,
        user.password_hash,
        json(&user.roles)?,
        json(&user.permissions)?,
        user.disabled,
        user.created_at,
    ])?;
    Ok(())
}

pub(crate) fn user_by_name(conn: &Connection, username: &str) -> Result<Option<User>, Failure> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = ?1"
        ))?
        .query_row([username], user_from_row)
        .optional()?)
}

pub(crate) fn user_by_id(conn: &Connection, id: &str) -> Result<Option<User>, Failure> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], user_from_row)
        .optional()?)
}

pub(crate) fn list_users(conn: &Connection) -> Result<Vec<User>, Failure> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))?;
    let users = stmt
        .query_map([], user_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(users)
}

pub(crate) fn count_users(conn: &Connection) -> Result<u64, Failure> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM users")?
        .query_row([], |row| row.get(0))?;
    u64::try_from(count).map_err(|_| Failure::Corrupt(format!("negative user count {count}")))
}

/// Replaces the changeable fields of the user `target` names with those of `user`.
pub(crate) fn update_user(
    conn: &Connection,
    target: UserChange<'_>,
    user: &User,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE users SET password_hash = ?2, roles = ?3, permissions = ?4, disabled = ?5
             WHERE id = ?1",
        )?
        .execute(params![
            target.id(),
            user.password_hash,
            json(&user.roles)?,
            json(&user.permissions)?,
            user.disabled,
        ])?;
    Ok(changed > 0)
}

pub(crate) fn delete_user(conn: &Connection, user: UserChange<'_>) -> Result<bool, Failure> {
    // Sessions and their refresh tokens go by ON DELETE CASCADE.
    let deleted = conn
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([user.id()])?;
    Ok(deleted > 0)
}

// ---- sessions ----

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_expires_at, \
     s.absolute_expires_at, s.revoked_at, s.ip, s.user_agent, s.amr, s.jkt, s.device_key";

/// A session with its user; the optional literal is appended (a compile-time string, so the
/// hot lookups build no SQL text per call).
macro_rules! record_select {
    ($($tail:literal)?) => {
        concat!(
            "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_expires_at, \
             s.absolute_expires_at, s.revoked_at, s.ip, s.user_agent, s.amr, s.jkt, \
             s.device_key, u.username, u.roles, u.permissions, u.disabled \
             FROM sessions s JOIN users u ON u.id = s.user_id"
            $(, " ", $tail)?
        )
    };
}

const RECORD_SELECT: &str = record_select!();
/// The verify path's lookup of an opaque token.
pub(crate) const SESSION_BY_ACCESS_HASH: &str = record_select!("WHERE s.access_hash = ?1");
/// The verify path's lookup of a JWT's `sid`.
pub(crate) const SESSION_BY_ID: &str = record_select!("WHERE s.id = ?1");

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(1)?,
        times: SessionTimes {
            created_at: row.get(2)?,
            last_seen_at: row.get(3)?,
            idle_expires_at: row.get(4)?,
            absolute_expires_at: row.get(5)?,
            revoked_at: row.get(6)?,
        },
        ip: row.get(7)?,
        user_agent: row.get(8)?,
        // Out of 0..=255 fails the conversion: corrupt.
        amr: Methods::from_bits(row.get(9)?),
        jkt: row.get(10)?,
        device_key: row.get(11)?,
    })
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let session = session_from_row(row)?;
    let user = UserSummary {
        id: session.user_id.clone(),
        username: row.get(12)?,
        roles: row.get::<_, StringList>(13)?.0,
        permissions: row.get::<_, StringList>(14)?.0,
        disabled: row.get(15)?,
    };
    Ok(SessionRecord { session, user })
}

pub(crate) fn create_session(conn: &mut Connection, new: &NewSession) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let s = &new.session;
    tx.prepare_cached(
        "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at,
             idle_expires_at, absolute_expires_at, revoked_at, ip, user_agent, amr, jkt,
             device_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        s.id,
        s.user_id,
        new.access_hash.as_ref().map(hash),
        s.times.created_at,
        s.times.last_seen_at,
        s.times.idle_expires_at,
        s.times.absolute_expires_at,
        s.times.revoked_at,
        s.ip,
        s.user_agent,
        s.amr.bits(),
        s.jkt,
        s.device_key,
    ])?;
    if let Some(refresh) = &new.refresh_hash {
        insert_refresh(&tx, refresh, &s.id, s.times.created_at)?;
    }
    tx.commit()?;
    Ok(())
}

fn insert_refresh(
    conn: &Connection,
    refresh: &TokenHash,
    session_id: &str,
    issued_at: UnixTime,
) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![hash(refresh), session_id, issued_at])?;
    Ok(())
}

pub(crate) fn session_by_access_hash(
    conn: &Connection,
    access: &TokenHash,
) -> Result<Option<SessionRecord>, Failure> {
    Ok(conn
        .prepare_cached(SESSION_BY_ACCESS_HASH)?
        .query_row([hash(access)], record_from_row)
        .optional()?)
}

pub(crate) fn session_by_id(conn: &Connection, id: &str) -> Result<Option<SessionRecord>, Failure> {
    Ok(conn
        .prepare_cached(SESSION_BY_ID)?
        .query_row([id], record_from_row)
        .optional()?)
}

pub(crate) fn touch_session(
    conn: &Connection,
    session: SessionChange<'_>,
    touch: Touch,
) -> Result<(), Failure> {
    conn.prepare_cached(
        "UPDATE sessions SET last_seen_at = ?2, idle_expires_at = ?3 WHERE id = ?1",
    )?
    .execute(params![
        session.id(),
        touch.last_seen_at,
        touch.idle_expires_at
    ])?;
    Ok(())
}

pub(crate) fn revoke_session(
    conn: &Connection,
    session: SessionChange<'_>,
    now: UnixTime,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached("UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![session.id(), now])?;
    Ok(changed > 0)
}

/// Revokes the user's live sessions but `except`, in one statement; returns their ids.
pub(crate) fn revoke_user_sessions(
    conn: &Connection,
    user: UserChange<'_>,
    except: Option<&str>,
    now: UnixTime,
) -> Result<Vec<SessionId>, Failure> {
    let revoked = conn
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?3
             WHERE user_id = ?1 AND revoked_at IS NULL AND (?2 IS NULL OR id <> ?2)
             RETURNING id",
        )?
        .query_map(params![user.id(), except, now], |row| {
            row.get::<_, String>(0).map(SessionId::from)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(revoked)
}

pub(crate) fn delete_user_sessions(conn: &Connection, user: UserChange<'_>) -> Result<(), Failure> {
    // Refresh tokens go by ON DELETE CASCADE.
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user.id()])?;
    Ok(())
}

pub(crate) fn list_sessions(
    conn: &Connection,
    user_id: Option<&str>,
    now: UnixTime,
) -> Result<Vec<Session>, Failure> {
    // Live means what SessionPolicy::check accepts: now < idle expiry and now < absolute expiry.
    const LIVE: &str =
        "s.revoked_at IS NULL AND s.idle_expires_at > ?1 AND s.absolute_expires_at > ?1";
    let sessions = match user_id {
        Some(user_id) => conn
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ?2 AND {LIVE}
                 ORDER BY s.created_at DESC, s.rowid DESC"
            ))?
            .query_map(params![now, user_id], session_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE {LIVE}
                 ORDER BY s.created_at DESC, s.rowid DESC"
            ))?
            .query_map(params![now], session_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(sessions)
}

pub(crate) fn session_by_refresh_hash(
    conn: &Connection,
    refresh: &TokenHash,
) -> Result<Option<SessionRecord>, Failure> {
    Ok(conn
        .prepare_cached(&format!(
            "{RECORD_SELECT} JOIN refresh_tokens r ON r.session_id = s.id WHERE r.hash = ?1"
        ))?
        .query_row([hash(refresh)], record_from_row)
        .optional()?)
}

/// Rotation, in one IMMEDIATE transaction: the write lock is taken before the presented token
/// is read, so concurrent rotations of one token (from this process or another sharing the
/// file) run one after the other and all but the first see it spent.
///
/// The session is named to `writing` before anything is written (see `changes.rs`).
pub(crate) fn rotate_refresh(
    conn: &mut Connection,
    rotation: &Rotation,
    writing: &Writing<'_>,
) -> Result<RefreshOutcome, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let presented: Option<(String, Option<UnixTime>, Option<Vec<u8>>)> = tx
        .prepare_cached(
            "SELECT session_id, used_at, sealed_successor FROM refresh_tokens WHERE hash = ?1",
        )?
        .query_row([hash(&rotation.presented)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((session_id, used_at, sealed)) = presented else {
        return Ok(RefreshOutcome::Unknown);
    };
    let Some(mut record) = session_by_id(&tx, &session_id)? else {
        // The foreign key makes this impossible short of a hand-edited database.
        return Ok(RefreshOutcome::Unknown);
    };

    let now = rotation.now;
    let times = record.session.times;
    match rotation.decide(&times, used_at) {
        RotationDecision::Ended { revoked } => return Ok(RefreshOutcome::SessionEnded { revoked }),
        RotationDecision::Repeat => {
            let sealed_successor = sealed.ok_or_else(|| {
                Failure::Corrupt("a spent refresh token has no sealed successor".to_owned())
            })?;
            return Ok(RefreshOutcome::Repeated {
                sealed_successor,
                record,
            });
        }
        RotationDecision::Revoke => {
            revoke_session(&tx, writing.session(&session_id), now)?;
            tx.commit()?;
            return Ok(RefreshOutcome::ReuseDetected {
                session_id: session_id.into(),
            });
        }
        RotationDecision::Rotate => {}
    }

    let session = writing.session(&session_id);
    tx.prepare_cached(
        "UPDATE refresh_tokens SET used_at = ?2, sealed_successor = ?3 WHERE hash = ?1",
    )?
    .execute(params![
        hash(&rotation.presented),
        now,
        rotation.sealed_successor
    ])?;
    insert_refresh(&tx, &rotation.successor, session.id(), now)?;
    let touch = rotation.touch(times.absolute_expires_at);
    tx.prepare_cached(
        "UPDATE sessions SET access_hash = coalesce(?2, access_hash), last_seen_at = ?3,
             idle_expires_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![
        session.id(),
        rotation.new_access_hash.as_ref().map(hash),
        touch.last_seen_at,
        touch.idle_expires_at,
    ])?;
    tx.commit()?;

    record.session.times.last_seen_at = touch.last_seen_at;
    record.session.times.idle_expires_at = touch.idle_expires_at;
    Ok(RefreshOutcome::Rotated(record))
}

pub(crate) fn purge_sessions(
    conn: &Connection,
    _every_session: AnySessionChange,
    before: UnixTime,
) -> Result<u64, Failure> {
    // Refresh tokens go by ON DELETE CASCADE.
    let deleted = conn
        .prepare_cached("DELETE FROM sessions WHERE absolute_expires_at < ?1")?
        .execute([before])?;
    Ok(deleted as u64)
}

// ---- second factors ----
//
// Factors are no part of a session record, so their writes name nothing to the change
// counters (and nothing caches them); a user's deletion removes them by ON DELETE CASCADE.

pub(crate) fn totp_factor(conn: &Connection, user_id: &str) -> Result<Option<TotpFactor>, Failure> {
    Ok(conn
        .prepare_cached(
            "SELECT sealed_secret, confirmed, created_at, last_step FROM totp_factors
             WHERE user_id = ?1",
        )?
        .query_row([user_id], |row| {
            Ok(TotpFactor {
                sealed_secret: row.get(0)?,
                confirmed: row.get(1)?,
                created_at: row.get(2)?,
                last_step: row.get(3)?,
            })
        })
        .optional()?)
}

/// Inserts or replaces the factor in one statement, only when the user exists.
pub(crate) fn put_totp_factor(
    conn: &Connection,
    user_id: &str,
    factor: &TotpFactor,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO totp_factors (user_id, sealed_secret, confirmed, created_at, last_step)
             SELECT id, ?2, ?3, ?4, ?5 FROM users WHERE id = ?1
             ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                 confirmed = excluded.confirmed, created_at = excluded.created_at,
                 last_step = excluded.last_step",
        )?
        .execute(params![
            user_id,
            factor.sealed_secret,
            factor.confirmed,
            factor.created_at,
            factor.last_step,
        ])?;
    Ok(changed > 0)
}

pub(crate) fn remove_totp_factor(conn: &Connection, user_id: &str) -> Result<bool, Failure> {
    let removed = conn
        .prepare_cached("DELETE FROM totp_factors WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(removed > 0)
}

/// One statement: the step check and the write are one atomic compare-and-set.
pub(crate) fn accept_totp_step(
    conn: &Connection,
    user_id: &str,
    step: i64,
    confirm: bool,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE totp_factors SET last_step = ?2, confirmed = (confirmed OR ?3)
             WHERE user_id = ?1 AND last_step < ?2",
        )?
        .execute(params![user_id, step, confirm])?;
    Ok(changed > 0)
}

/// Replaces the user's codes in one IMMEDIATE transaction; nothing when the user is unknown.
pub(crate) fn put_recovery_codes(
    conn: &mut Connection,
    user_id: &str,
    hashes: &[TokenHash],
) -> Result<bool, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .query_row([user_id], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Ok(false);
    }
    tx.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([user_id])?;
    {
        // A hash given twice is one code.
        let mut insert = tx.prepare_cached(
            "INSERT INTO recovery_codes (user_id, hash) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?;
        for code in hashes {
            insert.execute(params![user_id, hash(code)])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

/// One DELETE: of concurrent uses of a code, exactly one removes it.
pub(crate) fn use_recovery_code(
    conn: &Connection,
    user_id: &str,
    code: &TokenHash,
) -> Result<bool, Failure> {
    let used = conn
        .prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1 AND hash = ?2")?
        .execute(params![user_id, hash(code)])?;
    Ok(used > 0)
}

pub(crate) fn count_recovery_codes(conn: &Connection, user_id: &str) -> Result<u32, Failure> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM recovery_codes WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))?;
    u32::try_from(count)
        .map_err(|_| Failure::Corrupt(format!("recovery code count {count} out of range")))
}

// ---- passkeys ----
//
// Like factors, no part of a session record: their writes name nothing to the change counters,
// and a user's deletion removes them by ON DELETE CASCADE.

const PASSKEY_COLUMNS: &str = "credential_id, user_id, name, passkey, created_at, last_used_at";

fn passkey_from_row(row: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        credential_id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        passkey: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
    })
}

/// Inserts only when the user exists; a credential id taken is a UNIQUE violation (Conflict).
pub(crate) fn add_passkey(conn: &Connection, passkey: &PasskeyRecord) -> Result<bool, Failure> {
    let added = conn
        .prepare_cached(
            "INSERT INTO passkeys (credential_id, user_id, name, passkey, created_at, last_used_at)
             SELECT ?1, id, ?3, ?4, ?5, ?6 FROM users WHERE id = ?2",
        )?
        .execute(params![
            passkey.credential_id,
            passkey.user_id,
            passkey.name,
            passkey.passkey,
            passkey.created_at,
            passkey.last_used_at,
        ])?;
    Ok(added > 0)
}

pub(crate) fn passkeys(conn: &Connection, user_id: &str) -> Result<Vec<PasskeyRecord>, Failure> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1
         ORDER BY created_at, credential_id"
    ))?;
    let rows = st.query_map([user_id], passkey_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn passkey_by_credential(
    conn: &Connection,
    credential_id: &[u8],
) -> Result<Option<PasskeyRecord>, Failure> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"
        ))?
        .query_row([credential_id], passkey_from_row)
        .optional()?)
}

pub(crate) fn rename_passkey(
    conn: &Connection,
    user_id: &str,
    credential_id: &[u8],
    name: &str,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached("UPDATE passkeys SET name = ?3 WHERE user_id = ?1 AND credential_id = ?2")?
        .execute(params![user_id, credential_id, name])?;
    Ok(changed > 0)
}

pub(crate) fn passkey_used(
    conn: &Connection,
    user_id: &str,
    credential_id: &[u8],
    passkey: Option<&[u8]>,
    sign_count: u32,
    at: UnixTime,
) -> Result<bool, Failure> {
    let changed = conn
        .prepare_cached(
            "UPDATE passkeys SET passkey = coalesce(?3, passkey), sign_count = ?4,
                 last_used_at = ?5
             WHERE user_id = ?1 AND credential_id = ?2
               AND (sign_count < ?4 OR (sign_count = 0 AND ?4 = 0))",
        )?
        .execute(params![user_id, credential_id, passkey, sign_count, at])?;
    Ok(changed > 0)
}

pub(crate) fn remove_passkey(
    conn: &Connection,
    user_id: &str,
    credential_id: &[u8],
) -> Result<bool, Failure> {
    let removed = conn
        .prepare_cached("DELETE FROM passkeys WHERE user_id = ?1 AND credential_id = ?2")?
        .execute(params![user_id, credential_id])?;
    Ok(removed > 0)
}

pub(crate) fn put_ceremony(
    conn: &Connection,
    id: &TokenHash,
    state: &[u8],
    expires_at: UnixTime,
    now: UnixTime,
) -> Result<(), Failure> {
    conn.prepare_cached("DELETE FROM passkey_ceremonies WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.prepare_cached(
        "INSERT INTO passkey_ceremonies (id, state, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
    )?
    .execute(params![hash(id), state, expires_at])?;
    Ok(())
}

/// One DELETE … RETURNING on the single writer: of concurrent takers exactly one gets the row.
pub(crate) fn take_ceremony(
    conn: &Connection,
    id: &TokenHash,
    now: UnixTime,
) -> Result<Option<Vec<u8>>, Failure> {
    let taken: Option<(Vec<u8>, UnixTime)> = conn
        .prepare_cached("DELETE FROM passkey_ceremonies WHERE id = ?1 RETURNING state, expires_at")?
        .query_row([hash(id)], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(taken.and_then(|(state, expires_at)| (expires_at > now).then_some(state)))
}

// ---- signing keys ----

pub(crate) fn signing_keys(conn: &Connection) -> Result<Vec<KeyRecord>, Failure> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, algorithm, private_key, public_key, created_at, retired_at
         FROM signing_keys ORDER BY created_at, seq",
    )?;
    let keys = stmt
        .query_map([], |row| {
            Ok(KeyRecord {
                kid: row.get(0)?,
                algorithm: row.get::<_, StoredAlgorithm>(1)?.0,
                private: row.get(2)?,
                public: row.get(3)?,
                created_at: row.get(4)?,
                retired_at: row.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keys)
}

pub(crate) fn add_signing_key(
    conn: &mut Connection,
    key: &KeyRecord,
    now: UnixTime,
) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")?
        .execute([now])?;
    tx.prepare_cached(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at, retired_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.kid,
        key.algorithm.jose_name(),
        key.private,
        key.public,
        key.created_at,
        key.retired_at,
    ])?;
    tx.commit()?;
    Ok(())
}

// ---- revocation log ----

/// Appends the entries in one IMMEDIATE transaction: the store's single writer numbers them in
/// commit order, and AUTOINCREMENT never hands a number out twice.
pub(crate) fn log_revocations(
    conn: &mut Connection,
    session_ids: &[SessionId],
    now: UnixTime,
) -> Result<(), Failure> {
    if session_ids.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO revocations (session_id, revoked_at) VALUES (?1, ?2)")?;
        for id in session_ids {
            insert.execute(params![id.as_str(), now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A page of the log, read in one transaction so `last_seq` and the entries agree.
pub(crate) fn revocations_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<RevocationPage, Failure> {
    let seq = |value: i64| {
        u64::try_from(value)
            .map_err(|_| Failure::Corrupt(format!("negative revocation number {value}")))
    };
    // A deferred read transaction: one snapshot for both statements.
    let tx = conn.unchecked_transaction()?;
    let last: i64 = tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'revocations'")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let mut entries = Vec::new();
    if limit > 0 {
        let rows = tx
            .prepare_cached(
                "SELECT seq, session_id, revoked_at FROM revocations
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(
                params![
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (number, session_id, revoked_at) in rows {
            entries.push(RevocationEntry {
                seq: seq(number)?,
                session_id: session_id.into(),
                revoked_at,
            });
        }
    }
    tx.finish()?;
    Ok(RevocationPage {
        entries,
        last_seq: seq(last)?,
    })
}

pub(crate) fn purge_revocations(conn: &Connection, before: UnixTime) -> Result<u64, Failure> {
    let purged = conn
        .prepare_cached("DELETE FROM revocations WHERE revoked_at < ?1")?
        .execute(params![before])?;
    Ok(purged as u64)
}

// ---- health ----

// ---- audit ----

pub(crate) fn append_audit(conn: &Connection, e: &AuditEvent) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO audit_events (at, kind, actor, subject, session_id, ip, user_agent, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.at,
        e.kind.as_str(),
        e.actor,
        e.subject,
        e.session_id,
        e.ip,
        e.user_agent,
        e.detail
    ])?;
    Ok(())
}

pub(crate) fn audit_events(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditEvent>, Failure> {
    // NULL parameters switch their condition off, so one cached statement serves every query.
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, kind, actor, subject, session_id, ip, user_agent, detail
         FROM audit_events
         WHERE (?1 IS NULL OR actor = ?1 OR subject = ?1)
           AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR at >= ?3)
           AND (?4 IS NULL OR at < ?4)
           AND (?5 IS NULL OR id < ?5)
         ORDER BY id DESC
         LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            q.user,
            q.kind.map(EventKind::as_str),
            q.since,
            q.until,
            q.before_id,
            q.limit
        ],
        |row| {
            Ok(AuditEvent {
                id: row.get(0)?,
                at: row.get(1)?,
                kind: row.get::<_, String>(2)?.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e))
                })?,
                actor: row.get(3)?,
                subject: row.get(4)?,
                session_id: row.get(5)?,
                ip: row.get(6)?,
                user_agent: row.get(7)?,
                detail: row.get(8)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

// ---- counters ----

pub(crate) fn hit_counter(
    conn: &mut Connection,
    key: &str,
    now: UnixTime,
    window: i64,
) -> Result<Counter, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Expired counters are dropped as we go, so the table stays as small as the live windows.
    tx.prepare_cached("DELETE FROM counters WHERE expires_at <= ?1")?
        .execute(params![now])?;
    let counter = tx
        .prepare_cached(
            "INSERT INTO counters (key, count, window_start, last_at, expires_at)
             VALUES (?1, 1, ?2, ?2, ?2 + ?3)
             ON CONFLICT (key) DO UPDATE SET count = count + 1, last_at = excluded.last_at
             RETURNING count, window_start, last_at",
        )?
        .query_row(params![key, now, window], |row| {
            Ok(Counter {
                count: row.get(0)?,
                window_start: row.get(1)?,
                last_at: row.get(2)?,
            })
        })?;
    tx.commit()?;
    Ok(counter)
}

pub(crate) fn counter(
    conn: &Connection,
    key: &str,
    now: UnixTime,
    window: i64,
) -> Result<Option<Counter>, Failure> {
    Ok(conn
        .prepare_cached(
            "SELECT count, window_start, last_at FROM counters
             WHERE key = ?1 AND window_start + ?3 > ?2",
        )?
        .query_row(params![key, now, window], |row| {
            Ok(Counter {
                count: row.get(0)?,
                window_start: row.get(1)?,
                last_at: row.get(2)?,
            })
        })
        .optional()?)
}

pub(crate) fn release_counter(
    conn: &Connection,
    key: &str,
    window_start: UnixTime,
) -> Result<(), Failure> {
    // One statement, so atomic; a restarted window has another start and is left alone.
    conn.prepare_cached(
        "UPDATE counters SET count = count - 1
         WHERE key = ?1 AND window_start = ?2 AND count > 0",
    )?
    .execute(params![key, window_start])?;
    Ok(())
}

pub(crate) fn clear_counter(conn: &Connection, key: &str) -> Result<(), Failure> {
    conn.prepare_cached("DELETE FROM counters WHERE key = ?1")?
        .execute(params![key])?;
    Ok(())
}

pub(crate) fn ping(conn: &Connection) -> Result<(), Failure> {
    // Reads the schema version from the database header: touches the file, not just memory.
    let _: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok(())
}
