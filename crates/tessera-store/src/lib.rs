//! tessera's storage interface.
//!
//! A [`Store`] keeps users, sessions, refresh-token families and signing keys. Backends live in
//! their own crates (`tessera-store-sqlite`, `tessera-store-postgres`, and `tessera-store-redis` for
//! sessions only, composed with a durable store by [`SplitStore`]) and all of them must
//! pass the same [`conformance`] suite.
//!
//! Stores never see a token: sessions are found by SHA-256 of the token ([`TokenHash`]), and a
//! refresh successor is kept only sealed under a key derived from its predecessor
//! ([`tessera_core::seal`]).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bounded;
pub mod conformance;
mod error;
pub mod events;
mod records;
mod sessions;

pub use error::StoreError;
pub use records::{
    AuditEvent, AuditQuery, Counter, NewSession, RefreshOutcome, Rotation, Session, SessionRecord,
    User, UserSummary,
};
pub use sessions::{SessionStore, SplitStore};

use async_trait::async_trait;
use tessera_core::UnixTime;
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;

/// Schema versions before and after applying migrations (`tessera migrate`, and every start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Schema version found.
    pub from: u32,
    /// Schema version now: the latest this build knows.
    pub to: u32,
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything tessera persists.
///
/// Every method is a single atomic operation: when it returns `Ok`, the change is durable and
/// visible to every instance sharing the store. Methods take the current time as `now` rather
/// than reading a clock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users ----

    /// Inserts a user. [`StoreError::Conflict`] when the username (or id) is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    /// The user with this username (exact, case-sensitive match).
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// The user with this id.
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    /// All users, ordered by username.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// How many users exist.
    async fn count_users(&self) -> StoreResult<u64>;
    /// Replaces the user's password hash, roles, permissions and disabled flag (matched by id).
    /// Returns false when no such user exists.
    async fn update_user(&self, user: &User) -> StoreResult<bool>;
    /// Deletes a user and every session, refresh token and record that belongs to it.
    /// Returns false when no such user exists.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;

    // ---- sessions ----

    /// Inserts a session with its current access-token hash (opaque format) and first refresh
    /// token hash (bearer delivery), if any.
    async fn create_session(&self, new: &NewSession) -> StoreResult<()>;
    /// The session whose current opaque access token hashes to `hash`, with its user.
    /// Revoked and expired sessions are returned too (the caller reports why they fail);
    /// sessions of deleted users are not.
    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>>;
    /// The session with this id, with its user (revoked and expired ones included).
    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// Writes activity: `last_seen_at` and the slid `idle_expires_at`.
    async fn touch_session(&self, id: &str, touch: Touch) -> StoreResult<()>;
    /// Revokes one session. Returns true when it was not revoked before.
    async fn revoke_session(&self, id: &str, now: UnixTime) -> StoreResult<bool>;
    /// Revokes every session of `user_id` except `except`. Returns how many were revoked.
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<u64>;
    /// Live sessions (not revoked, not expired at `now`), of one user or of all, newest first.
    async fn list_sessions(
        &self,
        user_id: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>>;
    /// The session that the refresh token hashing to `hash` belongs to (whether that token is
    /// current or already spent), with its user; `None` when no such refresh token exists.
    /// Used to mint a successor before [`Store::rotate_refresh`] decides atomically.
    async fn session_by_refresh_hash(&self, hash: &TokenHash)
    -> StoreResult<Option<SessionRecord>>;
    /// Rotates a refresh token atomically; see [`Rotation`] and [`RefreshOutcome`].
    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome>;
    /// Deletes sessions (and their refresh tokens) whose absolute expiry is before `before`.
    /// Returns how many sessions were deleted.
    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64>;

    // ---- signing keys ----

    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Adds `key` as the new current key and retires every key not yet retired, at `now`.
    /// Keys are stored as given: the caller encrypts private parts before they get here.
    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()>;

    // ---- audit ----

    /// Appends an event to the audit log (its `id` is assigned by the store).
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Events matching `query`, newest first.
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;

    // ---- throttling counters ----

    /// Counts one hit on `key` atomically and returns the counter. A counter whose window
    /// began `window` seconds or more before `now` starts over at 1.
    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter>;
    /// The counter of `key`, or `None` when it has none or its window has passed.
    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>>;
    /// Takes back one hit on `key` atomically, in the window that began at `window_start` (as
    /// [`Store::hit_counter`] returned it): the count drops by one, `last_at` stays. Does
    /// nothing when that window is gone (passed, cleared, restarted) or the count is 0.
    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()>;
    /// Forgets the counter of `key`.
    async fn clear_counter(&self, key: &str) -> StoreResult<()>;

    // ---- health ----

    /// Succeeds when the store answers.
    async fn ping(&self) -> StoreResult<()>;

    /// True when the store drops ended sessions by itself some time after they end (Redis TTLs),
    /// so [`Store::purge_sessions`] may find fewer of them than have ended.
    fn drops_expired_sessions(&self) -> bool {
        false
    }
}
