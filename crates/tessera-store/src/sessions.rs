//! Sessions kept apart from users: the [`SessionStore`] trait (what a session-only backend such
//! as Redis implements) and [`SplitStore`], which routes session, refresh and counter operations
//! to one and everything else to a durable [`Store`].
//!
//! # Why lookups go back to the durable store
//!
//! A session lookup must return the user's roles, permissions and disabled flag *as they are
//! now* ([`Store::session_by_access_hash`]). A [`SessionStore`] keeps only the user id, and
//! [`SplitStore`] reads the user from the durable store on every lookup. A snapshot of the user
//! in the session would save that read but could carry stale roles, and the durable read is also
//! what makes a deleted user's sessions vanish at once: ids are never reused, so a session whose
//! user is gone is reported as not found.

use std::sync::Arc;

use async_trait::async_trait;
use tessera_core::UnixTime;
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;

use crate::{
    AuditEvent, AuditQuery, Counter, NewSession, RefreshOutcome, Rotation, Session, SessionRecord,
    Store, StoreResult, User, UserSummary,
};

/// The session half of a [`Store`]: sessions, refresh-token families, throttling counters.
///
/// Methods mean what the [`Store`] methods of the same name mean, except that sessions come back
/// without their user ([`Session`] rather than [`SessionRecord`]) and that a backend may drop a
/// session on its own some time after it ended (revoked, idle or absolute expiry), as Redis does
/// with TTLs. Dropping is always safe: a session that is not found is refused.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// See [`Store::create_session`].
    async fn create_session(&self, new: &NewSession) -> StoreResult<()>;
    /// See [`Store::session_by_access_hash`].
    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<Session>>;
    /// See [`Store::session_by_id`].
    async fn session_by_id(&self, id: &str) -> StoreResult<Option<Session>>;
    /// See [`Store::touch_session`].
    async fn touch_session(&self, id: &str, touch: Touch) -> StoreResult<()>;
    /// See [`Store::revoke_session`].
    async fn revoke_session(&self, id: &str, now: UnixTime) -> StoreResult<bool>;
    /// See [`Store::revoke_user_sessions`].
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<u64>;
    /// Deletes every session and refresh token of a user (the user is being deleted).
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<()>;
    /// See [`Store::list_sessions`].
    async fn list_sessions(
        &self,
        user_id: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>>;
    /// See [`Store::session_by_refresh_hash`].
    async fn session_by_refresh_hash(&self, hash: &TokenHash) -> StoreResult<Option<Session>>;
    /// See [`Store::rotate_refresh`].
    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome<Session>>;
    /// See [`Store::purge_sessions`].
    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64>;
    /// See [`Store::hit_counter`].
    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter>;
    /// See [`Store::counter`].
    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>>;
    /// See [`Store::release_counter`].
    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()>;
    /// See [`Store::clear_counter`].
    async fn clear_counter(&self, key: &str) -> StoreResult<()>;
    /// Succeeds when the backend answers.
    async fn ping(&self) -> StoreResult<()>;
    /// True when ended sessions disappear by themselves (TTLs); see
    /// [`Store::drops_expired_sessions`].
    fn drops_expired_sessions(&self) -> bool {
        false
    }
}

/// A [`Store`] made of a durable store (users, keys, audit) and a [`SessionStore`] (sessions,
/// refresh tokens, counters). The durable store's own session tables stay unused.
#[derive(Clone)]
pub struct SplitStore {
    durable: Arc<dyn Store>,
    sessions: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for SplitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitStore").finish_non_exhaustive()
    }
}

impl SplitStore {
    /// Routes sessions to `sessions` and everything else to `durable`.
    pub fn new(durable: Arc<dyn Store>, sessions: Arc<dyn SessionStore>) -> SplitStore {
        SplitStore { durable, sessions }
    }

    /// The session with its user as the durable store has it now; `None` when the user is gone.
    async fn with_user(&self, session: Session) -> StoreResult<Option<SessionRecord>> {
        let Some(user) = self.durable.user_by_id(&session.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            session,
            user: summary(user),
        }))
    }

    async fn with_user_opt(&self, session: Option<Session>) -> StoreResult<Option<SessionRecord>> {
        match session {
            Some(session) => self.with_user(session).await,
            None => Ok(None),
        }
    }
}

fn summary(user: User) -> UserSummary {
    UserSummary {
        id: user.id,
        username: user.username,
        roles: user.roles,
        permissions: user.permissions,
        disabled: user.disabled,
    }
}

#[async_trait]
impl Store for SplitStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.durable.create_user(user).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.durable.user_by_name(username).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.durable.user_by_id(id).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.durable.list_users().await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.durable.count_users().await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        self.durable.update_user(user).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        // Sessions first: if the second step fails the user still exists and the call can be
        // repeated; the other order could leave sessions behind (harmless, as lookups need the
        // user, but untidy until their TTL ends them).
        self.sessions.delete_user_sessions(id).await?;
        self.durable.delete_user(id).await
    }

    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        self.sessions.create_session(new).await
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let session = self.sessions.session_by_access_hash(hash).await?;
        self.with_user_opt(session).await
    }

    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let session = self.sessions.session_by_id(id).await?;
        self.with_user_opt(session).await
    }

    async fn touch_session(&self, id: &str, touch: Touch) -> StoreResult<()> {
        self.sessions.touch_session(id, touch).await
    }

    async fn revoke_session(&self, id: &str, now: UnixTime) -> StoreResult<bool> {
        self.sessions.revoke_session(id, now).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<u64> {
        self.sessions
            .revoke_user_sessions(user_id, except, now)
            .await
    }

    async fn list_sessions(
        &self,
        user_id: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.sessions.list_sessions(user_id, now).await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        let session = self.sessions.session_by_refresh_hash(hash).await?;
        self.with_user_opt(session).await
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        let outcome = self.sessions.rotate_refresh(rotation).await?;
        let user = match outcome.record() {
            Some(session) => self.durable.user_by_id(&session.user_id).await?,
            None => None,
        };
        // A session whose user is gone is unknown, as in a single store where it was deleted.
        Ok(outcome.try_map(|session| {
            user.map(|user| SessionRecord {
                session,
                user: summary(user),
            })
        }))
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        self.sessions.purge_sessions(before).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.durable.signing_keys().await
    }

    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()> {
        self.durable.add_signing_key(key, now).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.durable.append_audit(event).await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.durable.audit_events(query).await
    }

    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        self.sessions.hit_counter(key, now, window).await
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        self.sessions.counter(key, now, window).await
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        self.sessions.release_counter(key, window_start).await
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        self.sessions.clear_counter(key).await
    }

    async fn ping(&self) -> StoreResult<()> {
        // Ready only when both halves answer: either one down fails requests closed.
        self.durable.ping().await?;
        self.sessions.ping().await
    }

    fn drops_expired_sessions(&self) -> bool {
        self.sessions.drops_expired_sessions()
    }
}
