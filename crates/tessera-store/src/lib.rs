//! tessera's storage interface.
//!
//! What tessera persists is split by ability, one trait each: [`UserStore`], [`SessionStore`]
//! (sessions and their refresh-token families), [`KeyStore`], [`AuditStore`], [`CounterStore`]
//! and [`Health`]. A [`Store`] is anything that has them all; the service holds an
//! `Arc<dyn Store>`. Backends live in their own crates: `tessera-store-sqlite` and
//! `tessera-store-postgres` have every ability, `tessera-store-redis` has sessions, counters and
//! health, and [`ByAbility`] assembles a [`Store`] from one backend per ability. All of them pass
//! the same [`conformance`] suite.
//!
//! The traits are declared once, in the `abilities!` list below, which also writes every
//! generic composition from it: [`Layered`] (one [`Layer`] around every operation: metrics,
//! change notifications, test probes) and [`ByAbility`] (each ability from its own backend). So a
//! new store method is written in its trait, in the backends and in the conformance suite, and
//! nowhere else.
//!
//! Stores never see a token: sessions are found by SHA-256 of the token ([`TokenHash`]), and a
//! refresh successor is kept only sealed under a key derived from its predecessor
//! ([`tessera_core::seal`]).

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bounded;
pub mod conformance;
mod error;
pub mod events;
mod layered;
mod records;
mod rotation;
mod sessions;

pub use error::StoreError;
pub use layered::{Layer, Layered, StoreFuture};
pub use records::{
    AuditEvent, AuditQuery, Counter, EventKind, NewSession, PasskeyRecord, RefreshOutcome,
    RevocationEntry, RevocationPage, Rotation, Session, SessionRecord, TotpFactor,
    UnknownEventKind, User, UserSummary,
};
pub use rotation::RotationDecision;
pub use sessions::EveryBackend;

/// Every ability trait, for calling store methods on a concrete backend type
/// (`use tessera_store::prelude::*;`); on `dyn Store` they are callable without it.
pub mod prelude {
    pub use crate::{
        AuditStore, CounterStore, FactorStore, Health, KeyStore, PasskeyStore, SessionStore, Store,
        UserStore,
    };
}

use std::sync::Arc;

use async_trait::async_trait;
use tessera_core::UnixTime;
use tessera_core::ids::{SessionId, UserId};
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;

use crate::events::StoreEvent;

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

/// Declares the ability traits and writes, from the same list, everything that composes them:
///
/// - each trait (`#[async_trait]`, object safe);
/// - `impl<L: Layer> Trait for Layered<L>`: every operation runs through [`Layer::around`], and
///   a method with a `notify(result) => Option<StoreEvent>` clause hands the event it yields
///   after a successful call to [`Layer::changed`];
/// - the [`ByAbility`] struct, one `Arc<dyn Trait>` field per ability, and its impl of each trait
///   forwarding to that field, or running the method's `bundle(stores) => body` clause when it
///   has one (an operation that spans abilities);
/// - properties (`fn name(&self) -> T { default }`) are forwarded unchanged by both.
macro_rules! abilities {
    ($(
        $(#[$trait_doc:meta])*
        pub trait $ability:ident in $field:ident {
            $(
                $(#[$doc:meta])*
                async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
                $(notify($result:ident) => $event:expr;)?
                $(bundle($stores:ident) => $across:block)?
            )*
            $(properties {$(
                $(#[$prop_doc:meta])*
                fn $prop:ident(&self) -> $prop_ty:ty $default:block
            )*})?
        }
    )*) => {
        $(
            $(#[$trait_doc])*
            #[async_trait]
            pub trait $ability: Send + Sync + 'static {
                $(
                    $(#[$doc])*
                    async fn $name(&self $(, $arg: $ty)*) -> $ret;
                )*
                $($(
                    $(#[$prop_doc])*
                    fn $prop(&self) -> $prop_ty $default
                )*)?
            }

            #[async_trait]
            impl<L: Layer> $ability for Layered<L> {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        let outcome = self
                            .layer()
                            .around(stringify!($name), self.inner().$name($($arg),*))
                            .await;
                        $(
                            if let Ok($result) = &outcome {
                                let event: Option<StoreEvent> = $event;
                                if let Some(event) = event {
                                    self.layer().changed(event).await;
                                }
                            }
                        )?
                        outcome
                    }
                )*
                $($(
                    fn $prop(&self) -> $prop_ty {
                        self.inner().$prop()
                    }
                )*)?
            }

            #[async_trait]
            impl $ability for ByAbility {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        bundled!(self, $field, $name($($arg),*) $(, $stores => $across)?)
                    }
                )*
                $($(
                    fn $prop(&self) -> $prop_ty {
                        self.$field.$prop()
                    }
                )*)?
            }
        )*

        /// A [`Store`] assembled from one backend per ability (see [`ByAbility::split`]).
        ///
        /// Build one from a whole store with [`ByAbility::single`] and replace the abilities that
        /// come from elsewhere: `ByAbility { keys: probe, ..ByAbility::single(store) }`.
        #[derive(Clone)]
        pub struct ByAbility {
            $(
                #[doc = concat!("Where the [`", stringify!($ability), "`] operations go.")]
                pub $field: Arc<dyn $ability>,
            )*
        }

        impl ByAbility {
            /// Every ability from `store`.
            pub fn single(store: Arc<dyn Store>) -> ByAbility {
                ByAbility {
                    $($field: Arc::clone(&store) as Arc<dyn $ability>,)*
                }
            }
        }

        /// Everything tessera persists: a backend (or an assembly of backends) with every ability.
        ///
        /// Every method is a single atomic operation: when it returns `Ok`, the change is durable
        /// and visible to every instance sharing the store. Methods take the current time as
        /// `now` rather than reading a clock.
        pub trait Store: $($ability +)* {}

        impl<T: $($ability +)* ?Sized> Store for T {}
    };
}

/// The body of a [`ByAbility`] method: forwarded to the ability's backend, or the method's own
/// `bundle` clause.
macro_rules! bundled {
    ($self:ident, $field:ident, $name:ident($($arg:ident),*)) => {
        $self.$field.$name($($arg),*).await
    };
    ($self:ident, $field:ident, $name:ident($($arg:ident),*), $stores:ident => $across:block) => {{
        let $stores = $self;
        $across
    }};
}

abilities! {
    /// User accounts.
    pub trait UserStore in users {
        /// Inserts a user. [`StoreError::Conflict`] when the username (or id) is taken.
        async fn create_user(&self, user: &User) -> StoreResult<()>;
        /// The user with this username (exact, case-sensitive match).
        async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
        /// The user with this id.
        async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;
        /// All users, ordered by username.
        async fn list_users(&self) -> StoreResult<Vec<User>>;
        /// How many users exist.
        async fn count_users(&self) -> StoreResult<u64>;
        /// Replaces the user's password hash, roles, permissions and disabled flag (matched by
        /// id). Returns false when no such user exists.
        async fn update_user(&self, user: &User) -> StoreResult<bool>;
        notify(changed) => changed.then(|| StoreEvent::UserChanged {
            user_id: user.id.clone(),
        });
        /// Deletes a user and every session, refresh token and record that belongs to it.
        /// Returns false when no such user exists.
        async fn delete_user(&self, id: &UserId) -> StoreResult<bool>;
        notify(deleted) => deleted.then(|| StoreEvent::UserChanged {
            user_id: id.to_owned(),
        });
        bundle(stores) => {
            // Sessions first: if the second step fails the user still exists and the call can
            // be repeated. And again after the user is gone: a session that a concurrent login
            // created between the first sweep and the delete carries a snapshot of the user
            // (see `SessionStore`) and would otherwise outlive it. A login whose session
            // lands after the second sweep reads the user back, finds it gone and removes its
            // session (the session backend's `create_session`).
            stores.sessions.delete_user_sessions(id).await?;
            let deleted = stores.users.delete_user(id).await?;
            stores.sessions.delete_user_sessions(id).await?;
            Ok(deleted)
        }
    }

    /// Sessions and their refresh-token families.
    ///
    /// Lookups return the session with its user (username, roles, permissions, disabled flag).
    /// Backends that keep both in one database (SQLite, PostgreSQL) join the user as it is
    /// now. A backend that keeps sessions apart from the users (Redis) returns the user as
    /// [`NewSession::user`] gave it when the session was created, confirmed against the
    /// durable store right after the session became findable, so that a lookup makes no read
    /// of the durable store. The two agree for every session that is not revoked, because:
    ///
    /// - `create_session` writes the session (and its place in the user's index) first and
    ///   then reads the user back from the durable store, replacing the snapshot when it
    ///   differs and removing the session (an error) when the user is gone. A change committed
    ///   before that read is in the snapshot; a change committed after it is followed by a
    ///   revocation of the user's sessions (below), which finds this one in the index;
    /// - every change to what a lookup returns of a user is followed, in the same service
    ///   call, by revoking all the user's sessions: roles, permissions, disabled and password
    ///   in `Tessera::update_user` (the admin API and every `tessera user` command go through
    ///   it), a password change in `Tessera::change_password` (which keeps only the session
    ///   it starts, from the user it just wrote), and deletion in `Tessera::remove_user`
    ///   (and `delete_user` sweeps the sessions again once the user is gone). The one other
    ///   writer of users, the password rehash at login, changes only the hash, which no
    ///   lookup returns. The scale-out tests fail if a verify on another instance accepts a
    ///   session after any of these changes;
    /// - ids are never reused, so a session never meets another user of the same id.
    ///
    /// So a caller that changes a user through the store directly (not through the service)
    /// must revoke the user's sessions itself. [`UserStore::delete_user`] deletes the user's
    /// sessions too, so a session whose user is gone is not found. A
    /// backend may drop a session on its own some time after it ended (revoked, idle or
    /// absolute expiry), as Redis does with TTLs (see the `drops_expired_sessions` property).
    /// Dropping is always safe: a session that is not found is refused.
    pub trait SessionStore in sessions {
        /// Inserts a session with its current access-token hash (opaque format) and first
        /// refresh token hash (bearer delivery), if any. A session for a user that does not
        /// exist is refused ([`StoreError::Corrupt`]) and left unfindable.
        async fn create_session(&self, new: &NewSession) -> StoreResult<()>;
        /// The session whose current opaque access token hashes to `hash`, with its user.
        /// Revoked and expired sessions are returned too (the caller reports why they fail);
        /// sessions of deleted users are not.
        async fn session_by_access_hash(
            &self,
            hash: &TokenHash,
        ) -> StoreResult<Option<SessionRecord>>;
        /// The session with this id, with its user (revoked and expired ones included).
        async fn session_by_id(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
        /// Writes activity: `last_seen_at` and the slid `idle_expires_at`.
        async fn touch_session(&self, id: &SessionId, touch: Touch) -> StoreResult<()>;
        /// Revokes one session. Returns true when it was not revoked before.
        async fn revoke_session(&self, id: &SessionId, now: UnixTime) -> StoreResult<bool>;
        notify(revoked) => revoked.then(|| StoreEvent::SessionRevoked {
            session_id: id.to_owned(),
        });
        /// Revokes every session of `user_id` except `except`. Returns the ids of the sessions
        /// this call revoked (not those revoked before), determined atomically with the
        /// revocation.
        async fn revoke_user_sessions(
            &self,
            user_id: &UserId,
            except: Option<&SessionId>,
            now: UnixTime,
        ) -> StoreResult<Vec<SessionId>>;
        notify(revoked) => (!revoked.is_empty()).then(|| StoreEvent::UserSessionsRevoked {
            user_id: user_id.to_owned(),
        });
        /// Deletes every session and refresh token of a user (the user is being deleted).
        async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()>;
        /// Live sessions (not revoked, not expired at `now`), of one user or of all, newest
        /// first.
        async fn list_sessions(
            &self,
            user_id: Option<&UserId>,
            now: UnixTime,
        ) -> StoreResult<Vec<Session>>;
        /// The session that the refresh token hashing to `hash` belongs to (whether that token
        /// is current or already spent), with its user; `None` when no such refresh token
        /// exists. Used to mint a successor before [`SessionStore::rotate_refresh`] decides
        /// atomically.
        async fn session_by_refresh_hash(
            &self,
            hash: &TokenHash,
        ) -> StoreResult<Option<SessionRecord>>;
        /// Rotates a refresh token atomically, as [`Rotation::decide`] rules; see [`Rotation`]
        /// and [`RefreshOutcome`].
        async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome>;
        // Theft detection revoked the session.
        notify(outcome) => match outcome {
            RefreshOutcome::ReuseDetected { session_id } => Some(StoreEvent::SessionRevoked {
                session_id: session_id.clone(),
            }),
            _ => None,
        };
        /// Deletes sessions (and their refresh tokens) whose absolute expiry is before
        /// `before`. Returns how many sessions were deleted.
        async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64>;
        /// Appends `session_ids` to the revocation log, in order, each with the next sequence
        /// number. Numbers are handed out in commit order: once an entry is visible, no entry
        /// with a lower number becomes visible later (so a reader that has seen up to N never
        /// misses one below N).
        async fn log_revocations(
            &self,
            session_ids: &[SessionId],
            now: UnixTime,
        ) -> StoreResult<()>;
        notify(_logged) => Some(StoreEvent::RevocationsLogged);
        /// Entries with `seq > after`, ascending, at most `limit` (0 is allowed: only
        /// `last_seq` is wanted).
        async fn revocations_after(&self, after: u64, limit: usize) -> StoreResult<RevocationPage>;
        /// Drops entries revoked before `before`; returns how many.
        async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64>;

        properties {
            /// True when the store drops ended sessions by itself some time after they end
            /// (Redis TTLs), so [`SessionStore::purge_sessions`] may find fewer of them than
            /// have ended.
            fn drops_expired_sessions(&self) -> bool {
                false
            }
        }
    }

    /// A user's second factors: a TOTP secret and single-use recovery codes. They live with the
    /// users (SQLite, PostgreSQL) and go when the user is deleted.
    pub trait FactorStore in factors {
        /// The user's TOTP factor, confirmed or not.
        async fn totp_factor(&self, user_id: &UserId) -> StoreResult<Option<TotpFactor>>;
        /// Sets the user's TOTP factor, replacing any (enrolment starts over). Returns false,
        /// storing nothing, when no such user exists.
        async fn put_totp_factor(&self, user_id: &UserId, factor: &TotpFactor)
        -> StoreResult<bool>;
        /// Removes the user's TOTP factor. Returns false when there was none.
        async fn remove_totp_factor(&self, user_id: &UserId) -> StoreResult<bool>;
        /// Accepts the code of time step `step`, atomically: when the user has a TOTP factor
        /// whose `last_step` is below `step`, sets `last_step` to `step`, marks the factor
        /// confirmed when `confirm` and returns true; otherwise changes nothing and returns
        /// false (a code used once, or older than one used, is refused on every instance).
        async fn accept_totp_step(&self, user_id: &UserId, step: i64, confirm: bool)
        -> StoreResult<bool>;
        /// Replaces the user's recovery codes with these hashes. Returns false, storing
        /// nothing, when no such user exists.
        async fn put_recovery_codes(&self, user_id: &UserId, hashes: &[TokenHash])
        -> StoreResult<bool>;
        /// Uses one recovery code, atomically: removes the code with this hash and returns
        /// true, or returns false when the user has no such code (never issued, or used).
        async fn use_recovery_code(&self, user_id: &UserId, hash: &TokenHash) -> StoreResult<bool>;
        /// How many unused recovery codes the user has.
        async fn count_recovery_codes(&self, user_id: &UserId) -> StoreResult<u32>;
    }

    /// A user's passkeys (WebAuthn credentials) and the state of WebAuthn ceremonies under way.
    ///
    /// Apart from [`FactorStore`] because passkeys are found by credential id across every user
    /// (a username-less sign-in knows no user until the credential names one), a user has any
    /// number of them, and a ceremony's state belongs to no user yet. Passkeys live with the
    /// users (SQLite, PostgreSQL) and go when the user is deleted; a split store takes this
    /// ability from the durable store, so every instance sees one ceremony state.
    pub trait PasskeyStore in passkeys {
        /// Adds a passkey. Returns false, storing nothing, when no such user exists;
        /// [`StoreError::Conflict`] when the credential id is registered already (to anyone).
        async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<bool>;
        /// The user's passkeys, oldest first.
        async fn passkeys(&self, user_id: &UserId) -> StoreResult<Vec<PasskeyRecord>>;
        /// The passkey with this credential id, whoever's it is.
        async fn passkey_by_credential(
            &self,
            credential_id: &[u8],
        ) -> StoreResult<Option<PasskeyRecord>>;
        /// Renames one of the user's passkeys. Returns false when the user has no such passkey.
        async fn rename_passkey(
            &self,
            user_id: &UserId,
            credential_id: &[u8],
            name: &str,
        ) -> StoreResult<bool>;
        /// After a verified use whose signature counter was `sign_count`: replaces the stored
        /// credential (its counter, backup state) with `passkey` when given, and sets
        /// `last_used_at` — only if the counter went up since the last use recorded (or both
        /// are 0: an authenticator without a counter), in one compare-and-set. Returns false,
        /// changing nothing, when the user has no such passkey or a use with this counter or a
        /// later one was recorded first (a replayed or cloned authenticator racing the real
        /// one).
        async fn passkey_used(
            &self,
            user_id: &UserId,
            credential_id: &[u8],
            passkey: Option<&[u8]>,
            sign_count: u32,
            at: UnixTime,
        ) -> StoreResult<bool>;
        /// Removes one of the user's passkeys. Returns false when the user has no such passkey.
        async fn remove_passkey(&self, user_id: &UserId, credential_id: &[u8])
        -> StoreResult<bool>;
        /// Keeps the state of a ceremony under way until `expires_at`, under the hash of the
        /// random id handed to the client (replacing any under that hash), and drops every
        /// state that expired at `now` or before.
        async fn put_ceremony(
            &self,
            id: &TokenHash,
            state: &[u8],
            expires_at: UnixTime,
            now: UnixTime,
        ) -> StoreResult<()>;
        /// Takes a ceremony's state, once, atomically: of concurrent takers exactly one gets
        /// it, and it is gone afterwards. `None` when there is none under `id` or it expired at
        /// `now` or before (an expired one is dropped too).
        async fn take_ceremony(&self, id: &TokenHash, now: UnixTime)
        -> StoreResult<Option<Vec<u8>>>;
    }

    /// Signing keys.
    pub trait KeyStore in keys {
        /// Every signing key, oldest first.
        async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>>;
        /// Adds `key` as the new current key and retires every key not yet retired, at `now`.
        /// Keys are stored as given: the caller encrypts private parts before they get here.
        async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()>;
        notify(_added) => Some(StoreEvent::KeysChanged);
    }

    /// The audit log.
    pub trait AuditStore in audit {
        /// Appends an event to the audit log (its `id` is assigned by the store).
        async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;
        /// Events matching `query`, newest first.
        async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    }

    /// Throttling counters in fixed windows, shared by every instance.
    pub trait CounterStore in counters {
        /// Counts one hit on `key` atomically and returns the counter. A counter whose window
        /// began `window` seconds or more before `now` starts over at 1.
        async fn hit_counter(&self, key: &str, now: UnixTime, window: i64)
        -> StoreResult<Counter>;
        /// The counter of `key`, or `None` when it has none or its window has passed.
        async fn counter(
            &self,
            key: &str,
            now: UnixTime,
            window: i64,
        ) -> StoreResult<Option<Counter>>;
        /// Takes back one hit on `key` atomically, in the window that began at `window_start`
        /// (as [`CounterStore::hit_counter`] returned it): the count drops by one, `last_at`
        /// stays. Does nothing when that window is gone (passed, cleared, restarted) or the
        /// count is 0.
        async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()>;
        /// Forgets the counter of `key`.
        async fn clear_counter(&self, key: &str) -> StoreResult<()>;

        properties {
            /// True when instances on other hosts share these counters (PostgreSQL, Redis).
            /// False for an embedded database, which one instance serves (the other processes
            /// on its file are the command line): what every instance must see, such as the
            /// DPoP proofs seen, may then be kept in that instance's memory instead of written.
            fn counters_shared_across_hosts(&self) -> bool {
                true
            }
        }
    }

    /// Whether the store answers.
    pub trait Health in health {
        /// Succeeds when the store answers.
        async fn ping(&self) -> StoreResult<()>;
    }
}
