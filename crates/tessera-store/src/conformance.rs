//! The store conformance suite: the behaviour every [`Store`] backend must show.
//!
//! Each check is a `pub async fn name(store: &dyn Store)` that asserts what a caller of the
//! store would observe. Every check creates its own users, sessions, tokens and keys with random
//! ids, so the checks can run concurrently against one shared database. Two checks touch global
//! state and are written to tolerate neighbours: [`purge_deletes_sessions_past_their_absolute_expiry`]
//! only uses absolute expiries far before any other check's, and
//! [`adding_a_signing_key_retires_the_previous_ones`] only relies on the keys it adds itself.
//! The revocation log is one sequence per store: its checks start from where the log stands
//! (so they run after one another on one store, `sequential`), but they assert exact numbers,
//! so they must not run at the same time as each other on one store.
//!
//! Times are anchored at the wall clock when a check starts (`T0`), so backends that also expire
//! data by TTL (Redis) see realistic times. No other check creates a session whose absolute expiry
//! is more than [`EXPIRED_MARGIN`] seconds before its `T0`.
//!
//! A backend runs the whole suite with [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```ignore
//! async fn fresh_store() -> MyStore { MyStore::connect_to_a_fresh_database().await }
//!
//! #[cfg(test)]
//! mod tests {
//!     tessera_store::store_conformance_tests!(super::fresh_store);
//! }
//! ```
//!
//! The factory may return any [`Fixture`]: every [`Store`] is one, and a backend that must clean
//! up after a test (a temporary file, a schema) returns a wrapper that implements [`Fixture`] and
//! cleans up in `Drop`.

// Test support: a failed expectation is a failed test, so unwrapping here is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use tessera_core::UnixTime;
use tessera_core::assurance::{Method, Methods};
use tessera_core::keys::{Algorithm, KeyRecord};
use tessera_core::opaque::TokenHash;
use tessera_core::random;
use tessera_core::session::{SessionPolicy, SessionTimes, Touch};

use tessera_core::ids::{SessionId, UserId};

use crate::{
    AuditEvent, AuditQuery, EventKind, NewSession, PasskeyRecord, RefreshOutcome, RevocationEntry,
    RevocationPage, Rotation, Session, SessionRecord, Store, StoreError, TotpFactor, User,
    UserSummary,
};

/// What a backend's test factory hands the suite: a store, together with whatever must live as
/// long as the store does (a temporary database file, a schema to drop afterwards).
///
/// Every [`Store`] is a fixture of itself.
pub trait Fixture: Send + Sync {
    /// The store under test.
    fn store(&self) -> &dyn Store;
}

impl<S: Store> Fixture for S {
    fn store(&self) -> &dyn Store {
        self
    }
}

/// Expands to one `#[tokio::test]` per conformance check.
///
/// `$make` is called with no arguments and awaited once per test; it must produce a
/// [`Fixture`](crate::conformance::Fixture), e.g. a path to `async fn() -> impl Fixture`, or a
/// closure `|| async { ... }`. Each test gets its own fixture, dropped when the test ends.
///
/// `store_conformance_tests!(sequential name, $make)` is like `optional` but expands to one test
/// `name` running every check in turn on one fixture, for fixtures that are costly to set up
/// (a Redis Cluster of several processes).
///
/// `store_conformance_tests!(optional $make)` is for backends that need an outside server:
/// `$make` then yields an `Option` of a fixture, and `None` (see [`test_service_url`]) skips.
///
/// The expansion uses `#[tokio::test(flavor = "multi_thread")]`, so the crate invoking the macro
/// needs `tokio` with the `macros` and `rt-multi-thread` features as a (dev-)dependency.
#[macro_export]
macro_rules! store_conformance_tests {
    (optional $make:expr) => {
        $crate::store_conformance_tests!(@list [optional] $make);
    };
    (sequential $test:ident, $make:expr) => {
        $crate::store_conformance_tests!(@list [sequential $test] $make);
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(@list [required] $make);
    };
    (@list [$($mode:tt)*] $make:expr) => {
        $crate::store_conformance_tests!(@each [$($mode)*] $make;
            users_are_found_by_name_and_by_id,
            a_taken_username_or_id_is_a_conflict,
            users_are_listed_by_username_and_counted,
            update_user_replaces_password_roles_permissions_and_disabled,
            delete_user_removes_the_user_and_its_sessions,
            delete_user_sessions_removes_only_that_users_sessions,
            a_session_created_from_a_stale_read_shows_the_user_as_stored,
            a_session_for_a_missing_user_is_refused,
            sessions_are_found_by_access_hash_and_by_id,
            revoked_and_expired_sessions_are_still_found,
            touch_session_slides_the_idle_expiry,
            revoke_session_reports_only_the_first_revocation,
            revoke_user_sessions_spares_the_exception,
            list_sessions_returns_live_sessions_of_one_user_newest_first,
            list_sessions_without_a_user_returns_every_users_live_sessions,
            session_by_refresh_hash_finds_the_session_of_current_and_spent_tokens,
            first_rotation_makes_the_successor_current,
            the_successor_can_be_rotated_in_turn,
            a_repeat_inside_the_grace_window_returns_the_same_successor,
            a_repeat_after_the_grace_window_revokes_the_session,
            an_unknown_refresh_token_is_unknown,
            refreshing_a_revoked_session_ends_it,
            refreshing_an_expired_session_ends_it,
            concurrent_rotations_of_one_token_agree_on_one_successor,
            rotation_outcomes_follow_the_decision_rule,
            a_sessions_methods_come_back_from_every_lookup,
            purge_deletes_sessions_past_their_absolute_expiry,
            revocations_are_numbered_in_the_order_they_are_logged,
            revocations_after_pages_by_sequence_number_and_limit,
            purging_revocations_keeps_last_seq_and_never_reuses_a_number,
            concurrent_logging_never_fills_a_gap_behind_a_reader,
            totp_factors_round_trip_and_a_put_replaces_the_factor,
            factors_of_an_unknown_user_are_refused_and_not_stored,
            accepting_a_totp_step_only_moves_forward,
            concurrent_acceptances_of_one_totp_step_accept_it_once,
            recovery_codes_are_used_once_each_and_a_put_replaces_them,
            concurrent_uses_of_one_recovery_code_succeed_once,
            deleting_a_user_removes_its_factors,
            passkeys_round_trip_are_renamed_used_and_removed,
            a_passkey_of_an_unknown_user_is_refused_and_not_stored,
            a_credential_id_is_registered_once_across_users,
            deleting_a_user_removes_its_passkeys,
            a_passkey_use_is_recorded_only_when_its_counter_went_up,
            concurrent_uses_with_one_counter_are_recorded_once,
            a_ceremony_is_taken_once_and_not_after_it_expires,
            concurrent_takes_of_one_ceremony_get_it_once,
            adding_a_signing_key_retires_the_previous_ones,
            audit_events_are_appended_and_queried_newest_first,
            counters_count_within_their_window_and_start_over_after_it,
            concurrent_counter_hits_are_all_counted,
            a_released_hit_is_taken_back_only_in_its_window,
            concurrent_hits_and_releases_are_all_counted,
            ping_answers,
        );
    };
    (@each [required] $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = ($make)().await;
                $crate::conformance::$name($crate::conformance::Fixture::store(&fixture)).await;
            }
        )*
    };
    (@each [sequential $test:ident] $make:expr; $($name:ident),* $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let Some(fixture) = ($make)().await else {
                return;
            };
            $(
                eprintln!("conformance check {}", stringify!($name));
                $crate::conformance::$name($crate::conformance::Fixture::store(&fixture)).await;
            )*
        }
    };
    (@each [optional] $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = ($make)().await else {
                    return;
                };
                $crate::conformance::$name($crate::conformance::Fixture::store(&fixture)).await;
            }
        )*
    };
}

/// The value of the test-service variable `name` (e.g. `TESSERA_TEST_DATABASE_URL`), for tests
/// that need a real PostgreSQL or Redis.
///
/// Unset or empty: on a developer machine the test is skipped with a notice on stderr (`None`);
/// under CI (`CI` set) that would hide missing coverage, so it panics instead.
pub fn test_service_url(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} must be set when CI is set: these tests never skip in CI")
        }
        _ => {
            eprintln!("note: {name} is not set; skipping a test that needs it");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Idle timeout used throughout (seconds).
const IDLE: i64 = 1800;
/// Absolute timeout used throughout (seconds).
const ABSOLUTE: i64 = 12 * 3600;
/// Refresh grace window used throughout (seconds).
const GRACE: i64 = 10;
/// The session policy the fixtures are built with.
const POLICY: SessionPolicy = SessionPolicy {
    idle_timeout: IDLE,
    absolute_timeout: ABSOLUTE,
    activity_write_interval: 60,
};

/// No check except the purge check creates a session whose absolute expiry is more than this many
/// seconds before the check's start time.
pub const EXPIRED_MARGIN: i64 = 100;

/// The wall clock, in Unix seconds: the `T0` of a check.
fn clock() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("the clock fits an i64")
}

fn rid<T: From<String>>() -> T {
    T::from(random::id().expect("the OS random source works"))
}

fn access_hash() -> TokenHash {
    TokenHash::of(&format!("tsr_{}{}", rid::<String>(), rid::<String>()))
}

fn refresh_hash() -> TokenHash {
    TokenHash::of(&format!("tsrf_{}{}", rid::<String>(), rid::<String>()))
}

fn user_named(username: String, t0: UnixTime) -> User {
    User {
        id: rid(),
        username,
        password_hash: format!(
            "$argon2id$v=19$m=19456,t=2,p=1${}${}",
            rid::<String>(),
            rid::<String>()
        ),
        roles: vec!["admin".to_owned(), "auditor".to_owned()],
        permissions: vec!["sessions:revoke".to_owned()],
        disabled: false,
        created_at: t0,
    }
}

fn new_user(t0: UnixTime) -> User {
    user_named(format!("user-{}", rid::<String>()), t0)
}

async fn add_user(store: &dyn Store, t0: UnixTime) -> User {
    let user = new_user(t0);
    store.create_user(&user).await.expect("create_user");
    user
}

fn summary(user: &User) -> UserSummary {
    UserSummary {
        id: user.id.clone(),
        username: user.username.clone(),
        roles: user.roles.clone(),
        permissions: user.permissions.clone(),
        disabled: user.disabled,
    }
}

/// A session with explicit times, an opaque access token and a refresh token.
fn session_with(user: &User, times: SessionTimes) -> NewSession {
    NewSession {
        session: Session {
            id: rid(),
            user_id: user.id.clone(),
            times,
            ip: Some("192.0.2.7".to_owned()),
            user_agent: Some("conformance/1.0 (tessera)".to_owned()),
            amr: Methods::PASSWORD,
            jkt: None,
            device_key: None,
        },
        user: summary(user),
        access_hash: Some(access_hash()),
        refresh_hash: Some(refresh_hash()),
    }
}

/// A session that started at `created_at` under [`POLICY`] and was never used since.
fn session_at(user: &User, created_at: UnixTime) -> NewSession {
    session_with(user, POLICY.start(created_at))
}

async fn add(store: &dyn Store, new: NewSession) -> NewSession {
    store.create_session(&new).await.expect("create_session");
    new
}

fn expected(new: &NewSession, user: &User) -> SessionRecord {
    SessionRecord {
        session: new.session.clone(),
        user: summary(user),
    }
}

fn refresh_of(new: &NewSession) -> TokenHash {
    new.refresh_hash
        .expect("fixture sessions have a refresh token")
}

fn access_of(new: &NewSession) -> TokenHash {
    new.access_hash
        .expect("fixture sessions have an access token")
}

/// A rotation of `presented` at `now`, with a fresh successor, access token and sealed pair.
fn rotation(presented: TokenHash, now: UnixTime) -> Rotation {
    Rotation {
        presented,
        successor: refresh_hash(),
        sealed_successor: format!("sealed successor pair {}", rid::<String>()).into_bytes(),
        new_access_hash: Some(access_hash()),
        grace: GRACE,
        idle_timeout: IDLE,
        now,
    }
}

fn new_access_of(rotation: &Rotation) -> TokenHash {
    rotation
        .new_access_hash
        .expect("fixture rotations carry an access token")
}

async fn by_id(store: &dyn Store, id: &SessionId) -> SessionRecord {
    store
        .session_by_id(id)
        .await
        .expect("session_by_id")
        .unwrap_or_else(|| panic!("session {id} should be found by id"))
}

async fn by_access(store: &dyn Store, hash: &TokenHash) -> Option<SessionRecord> {
    store
        .session_by_access_hash(hash)
        .await
        .expect("session_by_access_hash")
}

async fn by_refresh(store: &dyn Store, hash: &TokenHash) -> Option<SessionRecord> {
    store
        .session_by_refresh_hash(hash)
        .await
        .expect("session_by_refresh_hash")
}

async fn rotate(store: &dyn Store, rotation: &Rotation) -> RefreshOutcome {
    store
        .rotate_refresh(rotation)
        .await
        .expect("rotate_refresh")
}

/// Asserts that `gone` is found neither by id nor by its access or refresh token, and that a
/// rotation of its refresh token at `now` finds no token.
async fn assert_gone(store: &dyn Store, gone: &NewSession, now: UnixTime, why: &str) {
    let id = &gone.session.id;
    assert_eq!(store.session_by_id(id).await.unwrap(), None, "{why}: by id");
    let access = by_access(store, &access_of(gone)).await;
    assert_eq!(access, None, "{why}: by access token");
    let refresh = by_refresh(store, &refresh_of(gone)).await;
    assert_eq!(refresh, None, "{why}: by refresh token");
    let outcome = rotate(store, &rotation(refresh_of(gone), now)).await;
    assert_eq!(outcome, RefreshOutcome::Unknown, "{why}: refresh");
}

async fn rotated(store: &dyn Store, rotation: &Rotation) -> SessionRecord {
    match rotate(store, rotation).await {
        RefreshOutcome::Rotated(record) => record,
        other => panic!("expected Rotated, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// A created user is found, field for field, by its exact username and by its id; lookups of a
/// differently cased name or unknown values find nothing.
pub async fn users_are_found_by_name_and_by_id(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    assert_eq!(
        store.user_by_name(&user.username).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(user.clone())
    );

    assert_eq!(
        store
            .user_by_name(&user.username.to_uppercase())
            .await
            .unwrap(),
        None,
        "username lookups are case-sensitive"
    );
    assert_eq!(
        store
            .user_by_name(&format!("user-{}", rid::<String>()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.user_by_id(&rid()).await.unwrap(), None);
    assert_eq!(
        store.user_by_name(&user.id).await.unwrap(),
        None,
        "an id is not a username"
    );

    // Empty role and permission lists and the disabled flag round-trip too.
    let bare = User {
        roles: Vec::new(),
        permissions: Vec::new(),
        disabled: true,
        ..new_user(t0 - 5)
    };
    store.create_user(&bare).await.unwrap();
    assert_eq!(
        store.user_by_id(&bare.id).await.unwrap(),
        Some(bare.clone())
    );
    assert_eq!(
        store.user_by_name(&bare.username).await.unwrap(),
        Some(bare)
    );
}

/// Creating a user whose username or id is already taken fails with [`StoreError::Conflict`] and
/// leaves the existing user as it was.
pub async fn a_taken_username_or_id_is_a_conflict(store: &dyn Store) {
    let t0 = clock();
    let first = add_user(store, t0).await;

    let same_name = User {
        roles: vec!["intruder".to_owned()],
        ..user_named(first.username.clone(), t0)
    };
    let result = store.create_user(&same_name).await;
    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "duplicate username: {result:?}"
    );
    assert_eq!(
        store.user_by_name(&first.username).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.user_by_id(&same_name.id).await.unwrap(), None);

    let same_id = User {
        id: first.id.clone(),
        ..new_user(t0)
    };
    let result = store.create_user(&same_id).await;
    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "duplicate id: {result:?}"
    );
    assert_eq!(store.user_by_id(&first.id).await.unwrap(), Some(first));
    assert_eq!(store.user_by_name(&same_id.username).await.unwrap(), None);
}

/// `list_users` returns every user ordered by username and `count_users` agrees with it.
pub async fn users_are_listed_by_username_and_counted(store: &dyn Store) {
    let t0 = clock();
    // Same random stem, so the order of the two is the same under any collation.
    let stem = format!("list-{}", rid::<String>());
    let b = user_named(format!("{stem}-b"), t0);
    let a = user_named(format!("{stem}-a"), t0);
    store.create_user(&b).await.unwrap();
    store.create_user(&a).await.unwrap();

    let listed = store.list_users().await.unwrap();
    let ours: Vec<&User> = listed
        .iter()
        .filter(|u| u.username.starts_with(&stem))
        .collect();
    assert_eq!(ours, vec![&a, &b], "ordered by username, complete records");

    // Other checks may add or delete users concurrently in a shared database: compare only when
    // the count did not move around the listing.
    let mut compared = false;
    for _ in 0..20 {
        let before = store.count_users().await.unwrap();
        let listed = store.list_users().await.unwrap();
        let after = store.count_users().await.unwrap();
        if before == after {
            assert_eq!(
                listed.len() as u64,
                before,
                "count_users matches list_users"
            );
            compared = true;
            break;
        }
    }
    assert!(compared, "the user count never held still");
    assert!(store.count_users().await.unwrap() >= 2);
}

/// `update_user` replaces the password hash, roles, permissions and disabled flag (and nothing
/// else); an unknown id is reported and not created. A session of the user shows the user as
/// it was or as it is now (a backend may keep a snapshot, see [`crate::SessionStore`]) and,
/// once the user's sessions are revoked — as the service does after every such change — it is
/// revoked; a session created after the change shows the new user.
pub async fn update_user_replaces_password_roles_permissions_and_disabled(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0)).await;

    let changed = User {
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${}$new", rid::<String>()),
        roles: vec!["viewer".to_owned()],
        permissions: vec!["reports:read".to_owned(), "reports:export".to_owned()],
        disabled: true,
        ..user.clone()
    };
    assert!(store.update_user(&changed).await.unwrap());
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        store.user_by_name(&user.username).await.unwrap(),
        Some(changed.clone())
    );
    let before_revocation = by_id(store, &session.session.id).await.user;
    assert!(
        [summary(&user), summary(&changed)].contains(&before_revocation),
        "{before_revocation:?}"
    );
    let revoked = store
        .revoke_user_sessions(&user.id, None, t0)
        .await
        .unwrap();
    assert_eq!(revoked, vec![session.session.id.clone()]);
    let record = by_access(store, &access_of(&session)).await.unwrap();
    assert_eq!(record.session.times.revoked_at, Some(t0));
    let later = add(store, session_with(&changed, POLICY.start(t0))).await;
    assert_eq!(
        by_id(store, &later.session.id).await,
        expected(&later, &changed)
    );
    assert_eq!(
        by_access(store, &access_of(&later)).await,
        Some(expected(&later, &changed))
    );

    // Re-enabling with no roles at all.
    let bare = User {
        roles: Vec::new(),
        permissions: Vec::new(),
        disabled: false,
        ..changed.clone()
    };
    assert!(store.update_user(&bare).await.unwrap());
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(bare.clone())
    );

    // The username and creation time are not part of an update.
    let renamed = User {
        username: format!("renamed-{}", rid::<String>()),
        created_at: t0 + 999,
        ..bare.clone()
    };
    assert!(store.update_user(&renamed).await.unwrap());
    assert_eq!(store.user_by_id(&user.id).await.unwrap(), Some(bare));
    assert_eq!(store.user_by_name(&renamed.username).await.unwrap(), None);

    let ghost = new_user(t0);
    assert!(!store.update_user(&ghost).await.unwrap());
    assert_eq!(store.user_by_id(&ghost.id).await.unwrap(), None);
}

/// Deleting a user removes it and every session and refresh token it had; other users keep
/// theirs; the username can be taken again; a second delete reports that nothing was there.
pub async fn delete_user_removes_the_user_and_its_sessions(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let first = add(store, session_at(&user, t0 - 60)).await;
    let second = add(store, session_at(&user, t0 - 30)).await;
    let kept = add(store, session_at(&other, t0 - 30)).await;

    assert!(store.delete_user(&user.id).await.unwrap());

    assert_eq!(store.user_by_id(&user.id).await.unwrap(), None);
    assert_eq!(store.user_by_name(&user.username).await.unwrap(), None);
    for gone in [&first, &second] {
        assert_gone(store, gone, t0, "a session of a deleted user").await;
    }
    assert!(
        store
            .list_sessions(Some(&user.id), t0)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        by_id(store, &kept.session.id).await,
        expected(&kept, &other)
    );
    assert_eq!(
        by_access(store, &access_of(&kept)).await,
        Some(expected(&kept, &other))
    );
    assert_eq!(store.user_by_id(&other.id).await.unwrap(), Some(other));

    assert!(!store.delete_user(&user.id).await.unwrap());

    let again = User {
        username: user.username.clone(),
        ..new_user(t0)
    };
    store.create_user(&again).await.unwrap();
    assert_eq!(
        store.user_by_name(&user.username).await.unwrap(),
        Some(again)
    );
}

/// `delete_user_sessions` deletes every session and refresh token of one user (the first step
/// of deleting the user where sessions live apart) and leaves the user and other users'
/// sessions alone; a user without sessions is no error.
pub async fn delete_user_sessions_removes_only_that_users_sessions(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let gone = add(store, session_at(&user, t0 - 30)).await;
    let kept = add(store, session_at(&other, t0 - 30)).await;

    store.delete_user_sessions(&user.id).await.unwrap();

    assert_gone(store, &gone, t0, "a deleted session").await;
    let listed = store.list_sessions(Some(&user.id), t0).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let found = store.user_by_id(&user.id).await.unwrap();
    assert_eq!(found, Some(user.clone()), "the user stays");
    let other_session = by_id(store, &kept.session.id).await;
    assert_eq!(
        other_session,
        expected(&kept, &other),
        "others' sessions stay"
    );
    store.delete_user_sessions(&user.id).await.unwrap();
}

/// A session created from a read of its user that a change has overtaken (a login that read
/// the user before an administrator changed it) shows the user as stored, never the stale
/// read: by id, by access and refresh token, and after a rotation. A backend that keeps a
/// snapshot must confirm it when it creates the session; otherwise the change's revocation,
/// which ran before the session existed, would leave it serving the old roles.
pub async fn a_session_created_from_a_stale_read_shows_the_user_as_stored(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let changed = User {
        roles: vec!["viewer".to_owned()],
        permissions: Vec::new(),
        disabled: true,
        ..user.clone()
    };
    assert!(store.update_user(&changed).await.unwrap());
    // Minted from the read before the change.
    let session = add(store, session_at(&user, t0)).await;
    let want = expected(&session, &changed);
    assert_eq!(by_id(store, &session.session.id).await, want);
    assert_eq!(
        by_access(store, &access_of(&session)).await,
        Some(want.clone())
    );
    assert_eq!(by_refresh(store, &refresh_of(&session)).await, Some(want));
    let record = rotated(store, &rotation(refresh_of(&session), t0 + 1)).await;
    assert_eq!(record.user, summary(&changed));
}

/// A session for a user that does not exist (never created, or deleted while a login was
/// under way) is refused as corrupt and cannot be found afterwards.
pub async fn a_session_for_a_missing_user_is_refused(store: &dyn Store) {
    let t0 = clock();
    let deleted = add_user(store, t0).await;
    assert!(store.delete_user(&deleted.id).await.unwrap());
    for user in [new_user(t0), deleted] {
        let session = session_at(&user, t0);
        let outcome = store.create_session(&session).await;
        assert!(
            matches!(outcome, Err(StoreError::Corrupt(_))),
            "{outcome:?}"
        );
        assert_gone(store, &session, t0, "a session of a missing user").await;
        let listed = store.list_sessions(Some(&user.id), t0).await.unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// A created session is found by its access-token hash and by its id, together with its user;
/// a refresh-token hash is not an access-token hash; unknown values find nothing.
pub async fn sessions_are_found_by_access_hash_and_by_id(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0)).await;

    assert_eq!(
        by_access(store, &access_of(&session)).await,
        Some(expected(&session, &user))
    );
    assert_eq!(
        by_id(store, &session.session.id).await,
        expected(&session, &user)
    );

    assert_eq!(by_access(store, &refresh_of(&session)).await, None);
    assert_eq!(by_access(store, &access_hash()).await, None);
    assert_eq!(store.session_by_id(&rid()).await.unwrap(), None);
    assert_eq!(
        store
            .session_by_id(&SessionId::from(user.id.as_str()))
            .await
            .unwrap(),
        None,
        "a user id is not a session id"
    );

    // A session without opaque tokens (JWT access, cookie delivery) and without client details.
    let bare = NewSession {
        session: Session {
            ip: None,
            user_agent: None,
            ..session_at(&user, t0 - 10).session
        },
        access_hash: None,
        refresh_hash: None,
        user: summary(&user),
    };
    store.create_session(&bare).await.unwrap();
    assert_eq!(by_id(store, &bare.session.id).await, expected(&bare, &user));

    // A session whose tokens are bound to a DPoP key keeps the key's thumbprint, and one a
    // browser registered a key for keeps that key, found by its access token, its id and its
    // refresh token alike.
    let mut bound = session_at(&user, t0 - 5);
    bound.session.jkt = Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".to_owned());
    bound.session.device_key = Some(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#.to_owned());
    store.create_session(&bound).await.unwrap();
    assert_eq!(
        by_id(store, &bound.session.id).await,
        expected(&bound, &user)
    );
    assert_eq!(
        by_access(store, &access_of(&bound)).await,
        Some(expected(&bound, &user))
    );
    assert_eq!(
        by_refresh(store, &refresh_of(&bound)).await,
        Some(expected(&bound, &user))
    );
    // The first session is unaffected by the second.
    assert_eq!(
        by_access(store, &access_of(&session)).await,
        Some(expected(&session, &user))
    );
}

/// Lookups return revoked sessions (with `revoked_at` set) and expired ones too, so the caller
/// can tell why they fail.
pub async fn revoked_and_expired_sessions_are_still_found(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;

    let revoked = add(store, session_at(&user, t0 - 60)).await;
    assert!(
        store
            .revoke_session(&revoked.session.id, t0 - 5)
            .await
            .unwrap()
    );
    let mut want = expected(&revoked, &user);
    want.session.times.revoked_at = Some(t0 - 5);
    assert_eq!(by_id(store, &revoked.session.id).await, want);
    assert_eq!(by_access(store, &access_of(&revoked)).await, Some(want));

    // Idle-expired: never used since it started 2000 s ago.
    let idle = add(store, session_at(&user, t0 - 2000)).await;
    assert!(idle.session.times.idle_expires_at < t0);
    assert_eq!(by_id(store, &idle.session.id).await, expected(&idle, &user));
    assert_eq!(
        by_access(store, &access_of(&idle)).await,
        Some(expected(&idle, &user))
    );

    // Past its absolute expiry (by a little, see EXPIRED_MARGIN).
    let ended = add(
        store,
        session_with(
            &user,
            SessionTimes {
                created_at: t0 - ABSOLUTE - 10,
                last_seen_at: t0 - 20,
                idle_expires_at: t0 - 10,
                absolute_expires_at: t0 - 10,
                revoked_at: None,
            },
        ),
    )
    .await;
    assert_eq!(
        by_id(store, &ended.session.id).await,
        expected(&ended, &user)
    );
    assert_eq!(
        by_access(store, &access_of(&ended)).await,
        Some(expected(&ended, &user))
    );
}

/// `touch_session` writes `last_seen_at` and the slid idle expiry and nothing else; touching an
/// unknown session is not an error.
pub async fn touch_session_slides_the_idle_expiry(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;
    let neighbour = add(store, session_at(&user, t0 - 600)).await;

    let touch = POLICY
        .touch(&session.session.times, t0)
        .expect("an activity write is due after 600 s");
    store
        .touch_session(&session.session.id, touch)
        .await
        .unwrap();

    let mut want = expected(&session, &user);
    want.session.times.last_seen_at = t0;
    want.session.times.idle_expires_at = t0 + IDLE;
    assert_eq!(by_id(store, &session.session.id).await, want);
    assert_eq!(by_access(store, &access_of(&session)).await, Some(want));
    assert_eq!(
        by_id(store, &neighbour.session.id).await,
        expected(&neighbour, &user)
    );

    store
        .touch_session(
            &rid(),
            Touch {
                last_seen_at: t0,
                idle_expires_at: t0 + IDLE,
            },
        )
        .await
        .unwrap();
}

/// `revoke_session` returns true the first time and false afterwards, keeps the first revocation
/// time, and touches no other session.
pub async fn revoke_session_reports_only_the_first_revocation(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 60)).await;
    let neighbour = add(store, session_at(&user, t0 - 60)).await;

    assert!(store.revoke_session(&session.session.id, t0).await.unwrap());
    assert!(
        !store
            .revoke_session(&session.session.id, t0 + 10)
            .await
            .unwrap()
    );
    assert_eq!(
        by_id(store, &session.session.id)
            .await
            .session
            .times
            .revoked_at,
        Some(t0),
        "a second revocation does not move the first"
    );
    assert_eq!(
        by_id(store, &neighbour.session.id).await,
        expected(&neighbour, &user)
    );
    assert!(!store.revoke_session(&rid(), t0).await.unwrap());
}

/// `revoke_user_sessions` revokes every not-yet-revoked session of the user except `except`,
/// returns the ids of exactly those it revoked, and leaves other users alone.
pub async fn revoke_user_sessions_spares_the_exception(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let a = add(store, session_at(&user, t0 - 30)).await;
    let keep = add(store, session_at(&user, t0 - 20)).await;
    let c = add(store, session_at(&user, t0 - 10)).await;
    let theirs = add(store, session_at(&other, t0 - 10)).await;

    let earlier = add(store, session_at(&user, t0 - 40)).await;
    assert!(
        store
            .revoke_session(&earlier.session.id, t0 - 5)
            .await
            .unwrap()
    );

    assert_eq!(
        sorted(
            store
                .revoke_user_sessions(&user.id, Some(&keep.session.id), t0)
                .await
                .unwrap()
        ),
        sorted(vec![a.session.id.clone(), c.session.id.clone()]),
        "the ids of the sessions this call revoked: not the exception, not one revoked before"
    );
    assert_eq!(
        by_id(store, &earlier.session.id)
            .await
            .session
            .times
            .revoked_at,
        Some(t0 - 5),
        "an earlier revocation stays put"
    );
    for revoked in [&a, &c] {
        assert_eq!(
            by_id(store, &revoked.session.id)
                .await
                .session
                .times
                .revoked_at,
            Some(t0)
        );
    }
    assert_eq!(by_id(store, &keep.session.id).await, expected(&keep, &user));
    assert_eq!(
        by_id(store, &theirs.session.id).await,
        expected(&theirs, &other)
    );

    // Without an exception: only the one still live is returned; earlier revocations stay put.
    assert_eq!(
        store
            .revoke_user_sessions(&user.id, None, t0 + 10)
            .await
            .unwrap(),
        vec![keep.session.id.clone()]
    );
    assert_eq!(
        by_id(store, &keep.session.id)
            .await
            .session
            .times
            .revoked_at,
        Some(t0 + 10)
    );
    assert_eq!(
        by_id(store, &a.session.id).await.session.times.revoked_at,
        Some(t0)
    );
    assert_eq!(
        by_id(store, &theirs.session.id).await,
        expected(&theirs, &other)
    );

    assert_eq!(
        store
            .revoke_user_sessions(&user.id, None, t0 + 20)
            .await
            .unwrap(),
        Vec::<SessionId>::new(),
        "a second call finds nothing left to revoke"
    );
    assert_eq!(
        store.revoke_user_sessions(&rid(), None, t0).await.unwrap(),
        Vec::<SessionId>::new()
    );
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<SessionId> {
    ids.sort();
    ids
}

/// `list_sessions(Some(user), now)` returns exactly that user's live sessions, newest first:
/// not revoked, and `now` before both the idle and the absolute expiry (a session whose idle
/// expiry equals `now` has expired, as in [`SessionPolicy::check`]).
pub async fn list_sessions_returns_live_sessions_of_one_user_newest_first(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;

    let oldest = add(store, session_at(&user, t0 - 300)).await;
    let newest = add(store, session_at(&user, t0 - 100)).await;
    let middle = add(store, session_at(&user, t0 - 200)).await;

    let revoked = add(store, session_at(&user, t0 - 50)).await;
    store
        .revoke_session(&revoked.session.id, t0 - 40)
        .await
        .unwrap();
    // Idle-expired: started 2000 s ago, never used.
    add(store, session_at(&user, t0 - 2000)).await;
    // Idle expiry exactly now.
    add(store, session_at(&user, t0 - IDLE)).await;
    // Past the absolute expiry although the idle expiry is still ahead.
    add(
        store,
        session_with(
            &user,
            SessionTimes {
                created_at: t0 - ABSOLUTE - 10,
                last_seen_at: t0 - 20,
                idle_expires_at: t0 + 1000,
                absolute_expires_at: t0 - 10,
                revoked_at: None,
            },
        ),
    )
    .await;
    // Another user's live session.
    add(store, session_at(&other, t0 - 150)).await;

    let listed = store.list_sessions(Some(&user.id), t0).await.unwrap();
    assert_eq!(
        listed,
        vec![
            newest.session.clone(),
            middle.session.clone(),
            oldest.session.clone()
        ]
    );

    // At a later `now`, the oldest one has gone idle (it ends at t0 - 300 + IDLE).
    let later = t0 - 300 + IDLE;
    assert_eq!(
        store.list_sessions(Some(&user.id), later).await.unwrap(),
        vec![newest.session, middle.session]
    );

    assert!(
        store
            .list_sessions(Some(&rid()), t0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `list_sessions(None, now)` returns the live sessions of every user, newest first.
pub async fn list_sessions_without_a_user_returns_every_users_live_sessions(store: &dyn Store) {
    let t0 = clock();
    let alice = add_user(store, t0).await;
    let bob = add_user(store, t0).await;
    let older = add(store, session_at(&alice, t0 - 100)).await;
    let newer = add(store, session_at(&bob, t0 - 50)).await;
    let revoked = add(store, session_at(&bob, t0 - 40)).await;
    store
        .revoke_session(&revoked.session.id, t0 - 30)
        .await
        .unwrap();
    let idle = add(store, session_at(&alice, t0 - 2000)).await;

    let listed = store.list_sessions(None, t0).await.unwrap();
    let ours: Vec<&Session> = listed
        .iter()
        .filter(|s| s.user_id == alice.id || s.user_id == bob.id)
        .collect();
    assert_eq!(ours, vec![&newer.session, &older.session]);
    assert!(
        !listed
            .iter()
            .any(|s| s.id == revoked.session.id || s.id == idle.session.id)
    );

    // Whatever else is in the store: only live sessions, newest first.
    for s in &listed {
        assert_eq!(s.times.revoked_at, None, "{s:?}");
        assert!(s.times.idle_expires_at > t0, "{s:?}");
        assert!(s.times.absolute_expires_at > t0, "{s:?}");
    }
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].times.created_at >= w[1].times.created_at),
        "newest first"
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh rotation
// ---------------------------------------------------------------------------------------------

/// `session_by_refresh_hash` finds the session a refresh token belongs to, whether the token is
/// current or spent, and whether the session is live or revoked; access-token hashes and
/// unknown hashes find nothing.
pub async fn session_by_refresh_hash_finds_the_session_of_current_and_spent_tokens(
    store: &dyn Store,
) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;
    let neighbour = add(store, session_at(&user, t0 - 600)).await;

    assert_eq!(
        by_refresh(store, &refresh_of(&session)).await,
        Some(expected(&session, &user))
    );
    assert_eq!(by_refresh(store, &access_of(&session)).await, None);
    assert_eq!(by_refresh(store, &refresh_hash()).await, None);

    let first = rotation(refresh_of(&session), t0);
    let record = rotated(store, &first).await;
    assert_eq!(
        by_refresh(store, &refresh_of(&session)).await,
        Some(record.clone()),
        "a spent token still leads to its session"
    );
    assert_eq!(by_refresh(store, &first.successor).await, Some(record));

    store
        .revoke_session(&session.session.id, t0 + 5)
        .await
        .unwrap();
    let revoked = by_refresh(store, &first.successor)
        .await
        .expect("revoked sessions are found too");
    assert_eq!(revoked.session.id, session.session.id);
    assert_eq!(revoked.session.times.revoked_at, Some(t0 + 5));

    assert_eq!(
        by_refresh(store, &refresh_of(&neighbour)).await,
        Some(expected(&neighbour, &user))
    );
}

/// The first use of a refresh token rotates: the returned record has the idle expiry slid by
/// [`Rotation::touch`] (absolute expiry unchanged), the old access hash no longer finds the
/// session and the new one does.
pub async fn first_rotation_makes_the_successor_current(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;

    let rot = rotation(refresh_of(&session), t0);
    let record = rotated(store, &rot).await;

    let mut want = expected(&session, &user);
    let touch = rot.touch(session.session.times.absolute_expires_at);
    want.session.times.last_seen_at = touch.last_seen_at;
    want.session.times.idle_expires_at = touch.idle_expires_at;
    assert_eq!(want.session.times.idle_expires_at, t0 + IDLE);
    assert_eq!(record, want);

    assert_eq!(by_id(store, &session.session.id).await, want);
    assert_eq!(by_access(store, &access_of(&session)).await, None);
    assert_eq!(by_access(store, &new_access_of(&rot)).await, Some(want));
}

/// The successor of a rotation is itself a refresh token that rotates, and so on; a session
/// without opaque access tokens rotates without gaining one.
pub async fn the_successor_can_be_rotated_in_turn(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 900)).await;
    let absolute = session.session.times.absolute_expires_at;

    let first = rotation(refresh_of(&session), t0 - 600);
    rotated(store, &first).await;
    let second = rotation(first.successor, t0 - 300);
    let record = rotated(store, &second).await;
    assert_eq!(record.session.times.idle_expires_at, t0 - 300 + IDLE);
    let third = rotation(second.successor, t0);
    let record = rotated(store, &third).await;
    assert_eq!(record.session.times.last_seen_at, t0);
    assert_eq!(record.session.times.idle_expires_at, t0 + IDLE);
    assert_eq!(record.session.times.absolute_expires_at, absolute);
    assert_eq!(record.session.times.revoked_at, None);

    for old in [&first, &second] {
        assert_eq!(by_access(store, &new_access_of(old)).await, None);
    }
    assert_eq!(by_access(store, &new_access_of(&third)).await, Some(record));

    // Bearer session with JWT access tokens: no access hash before or after.
    let bearer = NewSession {
        access_hash: None,
        ..session_at(&user, t0 - 900)
    };
    store.create_session(&bearer).await.unwrap();
    let plain = Rotation {
        new_access_hash: None,
        ..rotation(refresh_of(&bearer), t0)
    };
    let record = rotated(store, &plain).await;
    let mut want = expected(&bearer, &user);
    want.session.times.last_seen_at = t0;
    want.session.times.idle_expires_at = t0 + IDLE;
    assert_eq!(record, want);
    assert_eq!(by_id(store, &bearer.session.id).await, want);
    let next = Rotation {
        new_access_hash: None,
        ..rotation(plain.successor, t0 + 60)
    };
    assert_eq!(
        rotated(store, &next).await.session.times.idle_expires_at,
        t0 + 60 + IDLE
    );
}

/// A repeated rotation of the same token inside the grace window answers `Repeated` with the
/// sealed successor of the first use and the current record, and changes nothing: the second
/// request's successor and access token never become valid. A `now` slightly before the first
/// use (clock skew between instances) counts as inside the window.
pub async fn a_repeat_inside_the_grace_window_returns_the_same_successor(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;

    let first = rotation(refresh_of(&session), t0);
    let record = rotated(store, &first).await;

    // Another instance whose clock is a little behind (`now` before the first use) is inside
    // the window too: concurrent tabs must never look like theft.
    for (i, at) in [t0 - 2, t0, t0 + 1, t0 + GRACE - 1].into_iter().enumerate() {
        let repeat = rotation(refresh_of(&session), at);
        assert_eq!(
            rotate(store, &repeat).await,
            RefreshOutcome::Repeated {
                sealed_successor: first.sealed_successor.clone(),
                record: record.clone(),
            },
            "repeat {i} at t0+{}",
            at - t0
        );
        // Nothing changed: no idle slide, no new access token, no new refresh token.
        assert_eq!(by_id(store, &session.session.id).await, record);
        assert_eq!(by_access(store, &new_access_of(&repeat)).await, None);
        assert_eq!(
            by_access(store, &new_access_of(&first)).await,
            Some(record.clone())
        );
        assert_eq!(
            rotate(store, &rotation(repeat.successor, at)).await,
            RefreshOutcome::Unknown,
            "a repeat's successor is never stored"
        );
    }

    // The first use's successor is still good.
    rotated(store, &rotation(first.successor, t0 + GRACE - 1)).await;
}

/// Presenting a spent refresh token after the grace window is taken as theft: the answer is
/// `ReuseDetected` and the whole session is revoked (its current refresh token ends too), while
/// the user's other sessions are untouched.
pub async fn a_repeat_after_the_grace_window_revokes_the_session(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;
    let neighbour = add(store, session_at(&user, t0 - 600)).await;

    let first = rotation(refresh_of(&session), t0);
    rotated(store, &first).await;

    let late = t0 + GRACE + 1;
    assert_eq!(
        rotate(store, &rotation(refresh_of(&session), late)).await,
        RefreshOutcome::ReuseDetected {
            session_id: session.session.id.clone()
        }
    );

    let record = by_id(store, &session.session.id).await;
    assert_eq!(record.session.times.revoked_at, Some(late));
    assert_eq!(
        by_access(store, &new_access_of(&first))
            .await
            .map(|r| r.session.times.revoked_at),
        Some(Some(late))
    );
    assert_eq!(
        rotate(store, &rotation(first.successor, late + 1)).await,
        RefreshOutcome::SessionEnded { revoked: true },
        "the thief's (or victim's) successor dies with the session"
    );
    assert!(
        !store
            .list_sessions(Some(&user.id), late + 1)
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == session.session.id)
    );
    assert_eq!(
        by_id(store, &neighbour.session.id).await,
        expected(&neighbour, &user)
    );
}

/// A refresh token the store never saw is `Unknown`, and so is an access-token hash presented as
/// a refresh token; neither changes anything.
pub async fn an_unknown_refresh_token_is_unknown(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;

    assert_eq!(
        rotate(store, &rotation(refresh_hash(), t0)).await,
        RefreshOutcome::Unknown
    );
    assert_eq!(
        rotate(store, &rotation(access_of(&session), t0)).await,
        RefreshOutcome::Unknown,
        "access and refresh tokens are not interchangeable"
    );
    assert_eq!(
        by_id(store, &session.session.id).await,
        expected(&session, &user)
    );
    // The real refresh token still works afterwards.
    rotated(store, &rotation(refresh_of(&session), t0)).await;
}

/// Refreshing a revoked session answers `SessionEnded { revoked: true }` and changes nothing.
pub async fn refreshing_a_revoked_session_ends_it(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;
    store
        .revoke_session(&session.session.id, t0 - 5)
        .await
        .unwrap();
    let before = by_id(store, &session.session.id).await;

    let rot = rotation(refresh_of(&session), t0);
    assert_eq!(
        rotate(store, &rot).await,
        RefreshOutcome::SessionEnded { revoked: true }
    );
    assert_eq!(by_id(store, &session.session.id).await, before);
    assert_eq!(by_access(store, &new_access_of(&rot)).await, None);
    assert_eq!(
        rotate(store, &rotation(rot.successor, t0)).await,
        RefreshOutcome::Unknown
    );

    // Revoked after a rotation: the current refresh token ends too.
    let other = add(store, session_at(&user, t0 - 600)).await;
    let first = rotation(refresh_of(&other), t0 - 100);
    rotated(store, &first).await;
    store
        .revoke_session(&other.session.id, t0 - 50)
        .await
        .unwrap();
    assert_eq!(
        rotate(store, &rotation(first.successor, t0)).await,
        RefreshOutcome::SessionEnded { revoked: true }
    );
}

/// Refreshing a session past its idle or absolute expiry (at the rotation's `now`) answers
/// `SessionEnded { revoked: false }` and changes nothing.
pub async fn refreshing_an_expired_session_ends_it(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;

    let idle = add(store, session_at(&user, t0 - 2000)).await;
    let at_idle_end = add(store, session_at(&user, t0 - IDLE)).await;
    let past_absolute = add(
        store,
        session_with(
            &user,
            SessionTimes {
                created_at: t0 - ABSOLUTE - 10,
                last_seen_at: t0 - 20,
                idle_expires_at: t0 + 1000,
                absolute_expires_at: t0 - 10,
                revoked_at: None,
            },
        ),
    )
    .await;

    for ended in [&idle, &at_idle_end, &past_absolute] {
        let rot = rotation(refresh_of(ended), t0);
        assert_eq!(
            rotate(store, &rot).await,
            RefreshOutcome::SessionEnded { revoked: false },
            "{:?}",
            ended.session.times
        );
        assert_eq!(
            by_id(store, &ended.session.id).await,
            expected(ended, &user)
        );
        assert_eq!(by_access(store, &new_access_of(&rot)).await, None);
        assert_eq!(
            rotate(store, &rotation(rot.successor, t0)).await,
            RefreshOutcome::Unknown
        );
    }

    // The same idle-expired session's token rotated at a time it was still live works.
    let live_then = idle.session.times.idle_expires_at - 1;
    rotated(store, &rotation(refresh_of(&idle), live_then)).await;
}

/// Eight concurrent rotations of one refresh token (instances whose clocks differ by up to two
/// seconds, all inside the grace window) yield exactly one `Rotated`; every other answer is
/// `Repeated` with the winner's sealed successor. Never a second branch, never `ReuseDetected`.
pub async fn concurrent_rotations_of_one_token_agree_on_one_successor(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let session = add(store, session_at(&user, t0 - 600)).await;
    let presented = refresh_of(&session);
    let rots: Vec<Rotation> = (0..8_i64)
        .map(|i| rotation(presented, t0 + i % 3))
        .collect();

    let (o0, o1, o2, o3, o4, o5, o6, o7) = tokio::join!(
        store.rotate_refresh(&rots[0]),
        store.rotate_refresh(&rots[1]),
        store.rotate_refresh(&rots[2]),
        store.rotate_refresh(&rots[3]),
        store.rotate_refresh(&rots[4]),
        store.rotate_refresh(&rots[5]),
        store.rotate_refresh(&rots[6]),
        store.rotate_refresh(&rots[7]),
    );
    let outcomes: Vec<RefreshOutcome> = [o0, o1, o2, o3, o4, o5, o6, o7]
        .into_iter()
        .map(|o| o.expect("rotate_refresh"))
        .collect();

    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, RefreshOutcome::Rotated(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one rotation wins: {outcomes:?}");
    let winner = &rots[winners[0]];
    let RefreshOutcome::Rotated(record) = &outcomes[winners[0]] else {
        unreachable!("filtered above");
    };
    for (i, outcome) in outcomes.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(
                outcome,
                &RefreshOutcome::Repeated {
                    sealed_successor: winner.sealed_successor.clone(),
                    record: record.clone(),
                },
                "loser {i}"
            );
        }
    }

    assert_eq!(by_id(store, &session.session.id).await, *record);
    assert_eq!(
        by_access(store, &new_access_of(winner)).await,
        Some(record.clone())
    );
    for (i, rot) in rots.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(by_access(store, &new_access_of(rot)).await, None);
            assert_eq!(
                rotate(store, &rotation(rot.successor, t0 + 3)).await,
                RefreshOutcome::Unknown
            );
        }
    }
    rotated(store, &rotation(winner.successor, t0 + 3)).await;
}

/// A row of [`rotation_outcomes_follow_the_decision_rule`]: a session's times relative to `T0`,
/// whether its token was spent (at `T0`) and the session revoked (at `T0 + 1`) before it is
/// presented again at `T0 + now`.
struct RotationCase {
    name: &'static str,
    idle_expires_in: i64,
    absolute_expires_in: i64,
    spent: bool,
    revoked: bool,
    now: i64,
}

/// Every backend's rotation follows [`Rotation::decide`], the one rotation rule: a table of
/// session states (live, revoked, idle- and absolute-expired, token current or spent) and
/// times (at and around the grace window and the expiries, with clock skew) is run through the
/// store, Redis's Lua script included, and each outcome compared with the rule applied to the
/// state the store holds just before.
pub async fn rotation_outcomes_follow_the_decision_rule(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let case = |name, idle_expires_in, absolute_expires_in, spent, revoked, now| RotationCase {
        name,
        idle_expires_in,
        absolute_expires_in,
        spent,
        revoked,
        now,
    };
    let table = [
        case("first use", IDLE, ABSOLUTE, false, false, 0),
        case("first use, skewed early", IDLE, ABSOLUTE, false, false, -5),
        case(
            "first use just before idle expiry",
            5,
            ABSOLUTE,
            false,
            false,
            4,
        ),
        case("first use at idle expiry", 5, ABSOLUTE, false, false, 5),
        case("first use at absolute expiry", IDLE, 3, false, false, 3),
        case("first use after idle expiry", 5, ABSOLUTE, false, false, 50),
        case("repeat at once", IDLE, ABSOLUTE, true, false, 0),
        case(
            "repeat at the grace end",
            IDLE,
            ABSOLUTE,
            true,
            false,
            GRACE,
        ),
        case(
            "repeat past the grace end",
            IDLE,
            ABSOLUTE,
            true,
            false,
            GRACE + 1,
        ),
        case("repeat long after", IDLE, ABSOLUTE, true, false, 20 * GRACE),
        case(
            "repeat skewed before first use",
            IDLE,
            ABSOLUTE,
            true,
            false,
            -5,
        ),
        case(
            "repeat at absolute expiry",
            IDLE,
            GRACE / 2,
            true,
            false,
            GRACE / 2,
        ),
        case(
            "replay after absolute expiry",
            IDLE,
            GRACE + 2,
            true,
            false,
            GRACE + 3,
        ),
        case(
            "first use of a revoked session",
            IDLE,
            ABSOLUTE,
            false,
            true,
            2,
        ),
        case("repeat of a revoked session", IDLE, ABSOLUTE, true, true, 2),
        case(
            "replay of a revoked session",
            IDLE,
            ABSOLUTE,
            true,
            true,
            GRACE + 5,
        ),
    ];
    for row in table {
        let times = SessionTimes {
            created_at: t0 - 60,
            last_seen_at: t0 - 60,
            idle_expires_at: t0 + row.idle_expires_in,
            absolute_expires_at: t0 + row.absolute_expires_in,
            revoked_at: None,
        };
        let new = add(store, session_with(&user, times)).await;
        let id = &new.session.id;
        let used_at = if row.spent {
            rotated(store, &rotation(refresh_of(&new), t0)).await;
            Some(t0)
        } else {
            None
        };
        if row.revoked {
            assert!(
                store.revoke_session(id, t0 + 1).await.unwrap(),
                "{}",
                row.name
            );
        }
        let held = by_id(store, id).await.session.times;
        let presented = rotation(refresh_of(&new), t0 + row.now);
        let rule = presented.decide(&held, used_at);
        let outcome = rotate(store, &presented).await;
        assert_eq!(
            outcome.decision(),
            Some(rule),
            "{}: the store answered {outcome:?}",
            row.name
        );
    }
}

/// A session's `amr` is stored as created and comes back, unchanged, from every lookup: by
/// access token, by id, in both listings, by refresh token (current and spent) and in the
/// records of a rotation and of its repeat. Several sets are tried, so a backend that dropped
/// the field or kept only some bits fails.
pub async fn a_sessions_methods_come_back_from_every_lookup(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let sets = [
        Methods::PASSWORD,
        Methods::PASSWORD.with(Method::OneTimeCode),
        Methods::NONE
            .with(Method::HardwareKey)
            .with(Method::UserVerified),
        Methods::NONE,
    ];
    assert_eq!(sets[1].bits(), 3);
    for (i, amr) in sets.into_iter().enumerate() {
        let mut new = session_at(&user, t0 - 600 + i as i64);
        new.session.amr = amr;
        let session = add(store, new).await;
        let want = expected(&session, &user);
        let why = format!("amr {:?} (bits {})", amr, amr.bits());

        let found = by_access(store, &access_of(&session)).await;
        assert_eq!(found.as_ref().map(|r| r.session.amr), Some(amr), "{why}");
        assert_eq!(found, Some(want.clone()), "{why}: by access token");
        let found = by_id(store, &session.session.id).await;
        assert_eq!(found.session.amr, amr, "{why}: by id");
        assert_eq!(found, want, "{why}: by id");
        let found = by_refresh(store, &refresh_of(&session)).await;
        assert_eq!(found, Some(want.clone()), "{why}: by refresh token");
        for listed in [
            store.list_sessions(Some(&user.id), t0).await.unwrap(),
            store.list_sessions(None, t0).await.unwrap(),
        ] {
            let ours = listed.iter().find(|s| s.id == session.session.id);
            assert_eq!(ours.map(|s| s.amr), Some(amr), "{why}: listed");
            assert_eq!(ours, Some(&session.session), "{why}: listed");
        }

        let first = rotation(refresh_of(&session), t0);
        let record = rotated(store, &first).await;
        assert_eq!(record.session.amr, amr, "{why}: rotated");
        let repeat = rotate(store, &rotation(refresh_of(&session), t0 + 1)).await;
        let repeated = match repeat {
            RefreshOutcome::Repeated { record, .. } => record,
            other => panic!("{why}: expected Repeated, got {other:?}"),
        };
        assert_eq!(repeated.session.amr, amr, "{why}: repeated");
        assert_eq!(repeated, record, "{why}: repeated");
        for found in [
            by_access(store, &new_access_of(&first)).await,
            by_refresh(store, &first.successor).await,
            by_refresh(store, &refresh_of(&session)).await,
        ] {
            assert_eq!(
                found.map(|r| r.session.amr),
                Some(amr),
                "{why}: after rotation"
            );
        }
        assert_eq!(
            by_id(store, &session.session.id).await.session.amr,
            amr,
            "{why}: by id after rotation"
        );
    }
}

/// `purge_sessions(before)` deletes exactly the sessions whose absolute expiry is before
/// `before` (revoked or not), with their refresh tokens, and counts them.
pub async fn purge_deletes_sessions_past_their_absolute_expiry(store: &dyn Store) {
    let t0 = clock();
    let cutoff = t0 - 10 * EXPIRED_MARGIN;
    // Clear leftovers of earlier runs sharing this database; concurrent checks never create
    // sessions this old (see EXPIRED_MARGIN).
    store.purge_sessions(cutoff).await.unwrap();

    let user = add_user(store, t0).await;
    let ended_at = |absolute: UnixTime| SessionTimes {
        created_at: absolute - ABSOLUTE,
        last_seen_at: absolute - IDLE,
        idle_expires_at: absolute,
        absolute_expires_at: absolute,
        revoked_at: None,
    };
    let old = add(store, session_with(&user, ended_at(cutoff - 2000))).await;
    let old_revoked = add(store, session_with(&user, ended_at(cutoff - 1000))).await;
    store
        .revoke_session(&old_revoked.session.id, cutoff - 1500)
        .await
        .unwrap();
    let at_cutoff = add(store, session_with(&user, ended_at(cutoff))).await;
    let live = add(store, session_at(&user, t0)).await;

    let purged = store.purge_sessions(cutoff).await.unwrap();
    if store.drops_expired_sessions() {
        // Sessions that ended long ago may be gone already (TTL), never counted twice.
        assert!(purged <= 2, "purged {purged}");
    } else {
        assert_eq!(purged, 2);
    }

    for gone in [&old, &old_revoked] {
        assert_gone(store, gone, t0, "a purged session, with its refresh tokens").await;
    }
    // A store that drops ended sessions by itself may have dropped this one, long ended, too;
    // it must not be reported as anything else.
    let kept = store.session_by_id(&at_cutoff.session.id).await.unwrap();
    if !store.drops_expired_sessions() || kept.is_some() {
        assert_eq!(
            kept,
            Some(expected(&at_cutoff, &user)),
            "an absolute expiry equal to the cutoff is not before it"
        );
    }
    assert_eq!(by_id(store, &live.session.id).await, expected(&live, &user));
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(user),
        "purging sessions keeps users"
    );
}

// ---------------------------------------------------------------------------------------------
// Revocation log
// ---------------------------------------------------------------------------------------------
//
// The log is one sequence per store, so these checks start from where it stands when they
// begin (`last_seq`) rather than from 0: a fixture shared by checks run in turn (`sequential`)
// carries the entries of earlier ones. No other check logs revocations, and only
// `purging_revocations_keeps_last_seq_and_never_reuses_a_number` logs them with times more than
// `EXPIRED_MARGIN` seconds before its `T0`.

async fn page(store: &dyn Store, after: u64, limit: usize) -> RevocationPage {
    store
        .revocations_after(after, limit)
        .await
        .expect("revocations_after")
}

async fn last_seq(store: &dyn Store) -> u64 {
    page(store, 0, 0).await.last_seq
}

fn sids(n: usize) -> Vec<SessionId> {
    (0..n).map(|_| rid()).collect()
}

/// Every entry after `after`, read in pages of `limit`.
async fn entries_after(store: &dyn Store, mut after: u64, limit: usize) -> Vec<RevocationEntry> {
    let mut all = Vec::new();
    loop {
        let page = page(store, after, limit).await;
        let Some(last) = page.entries.last() else {
            return all;
        };
        after = last.seq;
        all.extend(page.entries);
    }
}

fn entries(first_seq: u64, ids: &[SessionId], revoked_at: UnixTime) -> Vec<RevocationEntry> {
    ids.iter()
        .zip(first_seq..)
        .map(|(session_id, seq)| RevocationEntry {
            seq,
            session_id: session_id.clone(),
            revoked_at,
        })
        .collect()
}

/// Each logged id gets the next number, in the order given, with the time it was logged at;
/// logging nothing takes no number; `last_seq` is the highest number handed out (0 for a log
/// that never had an entry).
pub async fn revocations_are_numbered_in_the_order_they_are_logged(store: &dyn Store) {
    let t0 = clock();
    let fresh = page(store, 0, 10).await;
    if fresh.last_seq == 0 {
        assert_eq!(fresh.entries, Vec::new(), "a log that never had an entry");
    }
    let base = fresh.last_seq;

    let first = sids(3);
    store.log_revocations(&first, t0).await.unwrap();
    let second = sids(1);
    store.log_revocations(&second, t0 + 1).await.unwrap();
    store.log_revocations(&[], t0 + 2).await.unwrap();
    // The same session twice is two entries (the log records revocations, not sessions).
    let again = vec![first[0].clone()];
    store.log_revocations(&again, t0 + 3).await.unwrap();

    let mut want = entries(base + 1, &first, t0);
    want.extend(entries(base + 4, &second, t0 + 1));
    want.extend(entries(base + 5, &again, t0 + 3));
    let got = page(store, base, 100).await;
    assert_eq!(got.entries, want);
    assert_eq!(got.last_seq, base + 5);
    assert_eq!(last_seq(store).await, base + 5);
}

/// `revocations_after(after, limit)` returns the entries numbered above `after`, ascending, at
/// most `limit` of them, and always where the log stands; a limit of 0 returns only that.
pub async fn revocations_after_pages_by_sequence_number_and_limit(store: &dyn Store) {
    let t0 = clock();
    let base = last_seq(store).await;
    let ids = sids(5);
    store.log_revocations(&ids, t0).await.unwrap();
    let all = entries(base + 1, &ids, t0);
    let last = base + 5;

    for (after, limit, want) in [
        (base, 2, &all[0..2]),
        (base + 2, 2, &all[2..4]),
        (base + 4, 2, &all[4..5]),
        (base + 5, 2, &all[5..5]),
        (base + 1, 10, &all[1..5]),
        (base + 3, 1, &all[3..4]),
        (base + 100, 10, &all[5..5]),
        (base, 0, &all[0..0]),
        (base + 2, 0, &all[0..0]),
        (base, usize::MAX, &all[..]),
    ] {
        let got = page(store, after, limit).await;
        assert_eq!(got.entries, want, "after {after}, limit {limit}");
        assert_eq!(got.last_seq, last, "after {after}, limit {limit}");
    }
    assert_eq!(entries_after(store, base, 2).await, all, "paging through");
    assert_eq!(
        page(store, u64::MAX, 10).await,
        RevocationPage {
            entries: Vec::new(),
            last_seq: last
        }
    );
}

/// `purge_revocations(before)` drops exactly the entries revoked before `before`, whatever
/// their numbers, and counts them; `last_seq` stays where it was, the entries kept keep their
/// numbers, and a number is never handed out again, even that of a purged last entry.
pub async fn purging_revocations_keeps_last_seq_and_never_reuses_a_number(store: &dyn Store) {
    let t0 = clock();
    let cutoff = t0 - 10 * EXPIRED_MARGIN;
    // Clear leftovers of earlier runs sharing this store; other checks log nothing this old.
    store.purge_revocations(cutoff).await.unwrap();
    let base = last_seq(store).await;

    let (old, at_cutoff, older, recent, last) = (sids(2), sids(1), sids(1), sids(1), sids(1));
    store.log_revocations(&old, cutoff - 2000).await.unwrap();
    store.log_revocations(&at_cutoff, cutoff).await.unwrap();
    store.log_revocations(&recent, t0).await.unwrap();
    // The highest number so far, out of time order: purged, its number must not come back.
    store.log_revocations(&older, cutoff - 1000).await.unwrap();
    assert_eq!(last_seq(store).await, base + 5);

    assert_eq!(store.purge_revocations(cutoff).await.unwrap(), 3);
    let mut kept = entries(base + 3, &at_cutoff, cutoff);
    kept.extend(entries(base + 4, &recent, t0));
    assert_eq!(
        page(store, base, 100).await,
        RevocationPage {
            entries: kept.clone(),
            last_seq: base + 5
        },
        "a time equal to the cutoff is not before it; purging leaves last_seq alone"
    );
    assert_eq!(store.purge_revocations(cutoff).await.unwrap(), 0);

    store.log_revocations(&last, t0 + 1).await.unwrap();
    kept.extend(entries(base + 6, &last, t0 + 1));
    assert_eq!(
        page(store, base, 100).await,
        RevocationPage {
            entries: kept,
            last_seq: base + 6
        },
        "the number after the purged last entry"
    );
}

/// Writers logging at once while a reader pages through: each call's entries get consecutive
/// numbers, and the reader never sees an entry numbered below one it has already seen (a gap
/// filled later), even when it resumes from `last_seq` after a short page; in the end it has
/// seen every entry, once.
pub async fn concurrent_logging_never_fills_a_gap_behind_a_reader(store: &dyn Store) {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WRITERS: usize = 8;
    const CALLS: usize = 20;
    const PER_CALL: usize = 3;
    const LIMIT: usize = 7;

    let t0 = clock();
    let base = last_seq(store).await;
    let done = AtomicUsize::new(0);
    let batches: Vec<Vec<Vec<SessionId>>> = (0..WRITERS)
        .map(|_| (0..CALLS).map(|_| sids(PER_CALL)).collect())
        .collect();

    async fn writer(
        store: &dyn Store,
        calls: &[Vec<SessionId>],
        now: UnixTime,
        done: &AtomicUsize,
    ) {
        for ids in calls {
            store.log_revocations(ids, now).await.unwrap();
            tokio::task::yield_now().await;
        }
        done.fetch_add(1, Ordering::SeqCst);
    }

    // What the reader has seen, by number, and where it stands.
    let reader = async {
        let mut seen: BTreeMap<u64, SessionId> = BTreeMap::new();
        let mut cursor = base;
        let mut finished = false;
        loop {
            // Writers are all done before this read: it must find everything that is left.
            let last_round = finished;
            let got = page(store, cursor, LIMIT).await;
            assert!(got.entries.len() <= LIMIT);
            for entry in &got.entries {
                assert!(entry.seq > cursor, "{} after {cursor}", entry.seq);
                assert!(entry.seq <= got.last_seq, "{} above last_seq", entry.seq);
                if let Some((&highest, _)) = seen.last_key_value() {
                    assert!(
                        entry.seq > highest,
                        "entry {} appeared after {highest} had been seen: a gap was filled",
                        entry.seq
                    );
                }
                assert_eq!(entry.revoked_at, t0);
                seen.insert(entry.seq, entry.session_id.clone());
                cursor = entry.seq;
            }
            if got.entries.len() < LIMIT {
                // Everything up to last_seq that will ever be visible is: resume after it.
                assert!(got.last_seq >= cursor);
                cursor = got.last_seq;
                if last_round {
                    return seen;
                }
            }
            // Nothing up to `cursor` may turn up later: look again from the start.
            let behind = entries_after(store, base, 1000).await;
            let below: Vec<u64> = behind
                .iter()
                .map(|e| e.seq)
                .filter(|seq| *seq <= cursor && !seen.contains_key(seq))
                .collect();
            assert_eq!(
                below,
                Vec::<u64>::new(),
                "entries at or below {cursor} not seen"
            );
            finished = done.load(Ordering::SeqCst) == WRITERS;
            tokio::task::yield_now().await;
        }
    };

    let (_, _, _, _, _, _, _, _, seen) = tokio::join!(
        writer(store, &batches[0], t0, &done),
        writer(store, &batches[1], t0, &done),
        writer(store, &batches[2], t0, &done),
        writer(store, &batches[3], t0, &done),
        writer(store, &batches[4], t0, &done),
        writer(store, &batches[5], t0, &done),
        writer(store, &batches[6], t0, &done),
        writer(store, &batches[7], t0, &done),
        reader,
    );

    let total = WRITERS * CALLS * PER_CALL;
    assert_eq!(seen.len(), total, "every entry seen once");
    assert_eq!(
        seen.keys().copied().collect::<Vec<u64>>(),
        (base + 1..=base + total as u64).collect::<Vec<u64>>(),
        "numbered without gaps"
    );
    assert_eq!(last_seq(store).await, base + total as u64);
    let number_of: std::collections::HashMap<&SessionId, u64> =
        seen.iter().map(|(seq, id)| (id, *seq)).collect();
    for ids in batches.iter().flatten() {
        let seqs: Vec<u64> = ids
            .iter()
            .map(|id| *number_of.get(id).expect("every logged id was seen"))
            .collect();
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + PER_CALL as u64).collect::<Vec<u64>>(),
            "one call's entries are consecutive, in order"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Second factors
// ---------------------------------------------------------------------------------------------

/// A TOTP factor as enrolment stores it: unconfirmed, no step accepted. The sealed secret holds
/// random text and the bytes 0 and 255, so it must be kept as bytes.
fn totp_factor(t0: UnixTime) -> TotpFactor {
    let mut sealed_secret = vec![0, 255, 1];
    sealed_secret.extend(format!("sealed secret {}", rid::<String>()).into_bytes());
    TotpFactor {
        sealed_secret,
        confirmed: false,
        created_at: t0,
        last_step: 0,
    }
}

fn recovery_hash() -> TokenHash {
    TokenHash::of(&format!("rc_{}", rid::<String>()))
}

async fn factor_of(store: &dyn Store, user_id: &UserId) -> Option<TotpFactor> {
    store.totp_factor(user_id).await.expect("totp_factor")
}

async fn codes_of(store: &dyn Store, user_id: &UserId) -> u32 {
    store
        .count_recovery_codes(user_id)
        .await
        .expect("count_recovery_codes")
}

/// Runs `calls` at the same time (polled together on this task, like `tokio::join!` for a
/// number known only at run time) and returns their results in order.
async fn all_at_once<F: std::future::Future>(calls: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut calls: Vec<std::pin::Pin<Box<F>>> = calls.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (call, output) in calls.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every call finished"))
        .collect()
}

/// A user has no TOTP factor until one is put; the factor comes back field for field (the
/// sealed secret as the very bytes given); a second put replaces the whole factor; removing it
/// reports whether there was one. Other users' factors are their own.
pub async fn totp_factors_round_trip_and_a_put_replaces_the_factor(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    assert_eq!(factor_of(store, &user.id).await, None);

    let first = totp_factor(t0);
    assert!(store.put_totp_factor(&user.id, &first).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, Some(first.clone()));
    assert_eq!(factor_of(store, &other.id).await, None, "only the user's");

    let second = TotpFactor {
        confirmed: true,
        created_at: t0 + 5,
        last_step: t0 / 30,
        ..totp_factor(t0)
    };
    assert_ne!(second.sealed_secret, first.sealed_secret);
    assert!(store.put_totp_factor(&user.id, &second).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, Some(second.clone()));
    // Back to unconfirmed with no step accepted: enrolment starting over.
    let again = totp_factor(t0 + 10);
    assert!(store.put_totp_factor(&user.id, &again).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, Some(again.clone()));

    let theirs = totp_factor(t0);
    assert!(store.put_totp_factor(&other.id, &theirs).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, Some(again));

    assert!(store.remove_totp_factor(&user.id).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, None);
    assert!(
        !store.remove_totp_factor(&user.id).await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(
        factor_of(store, &other.id).await,
        Some(theirs),
        "another user's factor stays"
    );
    assert!(!store.remove_totp_factor(&rid()).await.unwrap());
}

/// Putting a TOTP factor or recovery codes for a user that does not exist returns false and
/// stores nothing: a user created later with that id has neither.
pub async fn factors_of_an_unknown_user_are_refused_and_not_stored(store: &dyn Store) {
    let t0 = clock();
    let ghost = new_user(t0);
    let code = recovery_hash();
    assert!(
        !store
            .put_totp_factor(&ghost.id, &totp_factor(t0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_recovery_codes(&ghost.id, &[code, recovery_hash()])
            .await
            .unwrap()
    );
    assert_eq!(factor_of(store, &ghost.id).await, None);
    assert_eq!(codes_of(store, &ghost.id).await, 0);
    assert!(!store.accept_totp_step(&ghost.id, 1, true).await.unwrap());
    assert!(!store.use_recovery_code(&ghost.id, &code).await.unwrap());

    // Nothing was kept aside for the id either.
    store.create_user(&ghost).await.unwrap();
    assert_eq!(factor_of(store, &ghost.id).await, None);
    assert_eq!(codes_of(store, &ghost.id).await, 0);
    assert!(!store.use_recovery_code(&ghost.id, &code).await.unwrap());
    // And the user, now there, can have them.
    assert!(store.put_recovery_codes(&ghost.id, &[code]).await.unwrap());
    assert_eq!(codes_of(store, &ghost.id).await, 1);
}

/// `accept_totp_step` accepts a step only above the last accepted one: the same step twice, or
/// an older one, is refused and changes nothing (not even `confirmed`); a higher one moves
/// `last_step` up and confirms the factor when asked, and a later acceptance without `confirm`
/// leaves it confirmed. Without a factor nothing is accepted (and none is created).
pub async fn accepting_a_totp_step_only_moves_forward(store: &dyn Store) {
    let t0 = clock();
    let step = t0 / 30;
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    assert!(!store.accept_totp_step(&user.id, step, true).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, None, "no factor created");

    let enrolled = totp_factor(t0);
    store.put_totp_factor(&user.id, &enrolled).await.unwrap();
    let theirs = totp_factor(t0);
    store.put_totp_factor(&other.id, &theirs).await.unwrap();
    let now = |last_step, confirmed| TotpFactor {
        last_step,
        confirmed,
        ..enrolled.clone()
    };

    assert!(store.accept_totp_step(&user.id, step, false).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, Some(now(step, false)));
    assert!(
        !store.accept_totp_step(&user.id, step, true).await.unwrap(),
        "the same step again"
    );
    assert!(
        !store
            .accept_totp_step(&user.id, step - 1, true)
            .await
            .unwrap(),
        "an older step"
    );
    assert_eq!(
        factor_of(store, &user.id).await,
        Some(now(step, false)),
        "a refused step changes nothing, not even confirmed"
    );

    assert!(
        store
            .accept_totp_step(&user.id, step + 1, true)
            .await
            .unwrap()
    );
    assert_eq!(factor_of(store, &user.id).await, Some(now(step + 1, true)));
    assert!(
        store
            .accept_totp_step(&user.id, step + 3, false)
            .await
            .unwrap()
    );
    assert_eq!(
        factor_of(store, &user.id).await,
        Some(now(step + 3, true)),
        "confirmed stays confirmed"
    );
    assert!(
        !store
            .accept_totp_step(&user.id, step + 2, false)
            .await
            .unwrap()
    );
    assert_eq!(factor_of(store, &user.id).await, Some(now(step + 3, true)));

    assert_eq!(
        factor_of(store, &other.id).await,
        Some(theirs.clone()),
        "another user's factor is untouched"
    );
    assert!(store.accept_totp_step(&other.id, step, true).await.unwrap());

    // A factor put with a last step refuses that step and takes the next.
    let resumed = TotpFactor {
        last_step: step + 10,
        ..totp_factor(t0)
    };
    store.put_totp_factor(&user.id, &resumed).await.unwrap();
    assert!(
        !store
            .accept_totp_step(&user.id, step + 10, true)
            .await
            .unwrap()
    );
    assert!(
        store
            .accept_totp_step(&user.id, step + 11, true)
            .await
            .unwrap()
    );
    // Removed: nothing to accept.
    store.remove_totp_factor(&user.id).await.unwrap();
    assert!(
        !store
            .accept_totp_step(&user.id, step + 20, true)
            .await
            .unwrap()
    );
    assert_eq!(factor_of(store, &user.id).await, None);
}

/// Sixteen acceptances of one step at the same time (a code replayed at once on every
/// instance) accept it exactly once. Sixteen acceptances of as many steps at once leave the
/// highest as `last_step`, and the highest is always among those accepted.
pub async fn concurrent_acceptances_of_one_totp_step_accept_it_once(store: &dyn Store) {
    let t0 = clock();
    let step = t0 / 30;
    let user = add_user(store, t0).await;
    store
        .put_totp_factor(&user.id, &totp_factor(t0))
        .await
        .unwrap();

    let same = (0..16)
        .map(|_| store.accept_totp_step(&user.id, step, true))
        .collect();
    let accepted: Vec<bool> = all_at_once(same)
        .await
        .into_iter()
        .map(|r| r.expect("accept_totp_step"))
        .collect();
    assert_eq!(
        accepted.iter().filter(|a| **a).count(),
        1,
        "exactly one acceptance: {accepted:?}"
    );
    let factor = factor_of(store, &user.id).await.unwrap();
    assert_eq!((factor.last_step, factor.confirmed), (step, true));

    // Steps step+1..=step+16, started in a shuffled order.
    let steps: Vec<i64> = (1..=16_i64).map(|i| step + (i * 7) % 16 + 1).collect();
    let calls = steps
        .iter()
        .map(|s| store.accept_totp_step(&user.id, *s, false))
        .collect();
    let accepted: Vec<bool> = all_at_once(calls)
        .await
        .into_iter()
        .map(|r| r.expect("accept_totp_step"))
        .collect();
    let highest = steps.iter().position(|s| *s == step + 16).unwrap();
    assert!(accepted[highest], "the highest step: {accepted:?}");
    let factor = factor_of(store, &user.id).await.unwrap();
    assert_eq!((factor.last_step, factor.confirmed), (step + 16, true));
}

/// Each recovery code is used once: a use removes it, a second use of it, an unknown hash and
/// another user's code are refused; the count follows. A put replaces the whole set (the old
/// codes stop working), an empty put leaves none.
pub async fn recovery_codes_are_used_once_each_and_a_put_replaces_them(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    assert_eq!(codes_of(store, &user.id).await, 0);
    assert!(
        !store
            .use_recovery_code(&user.id, &recovery_hash())
            .await
            .unwrap()
    );

    let [a, b, c] = [recovery_hash(), recovery_hash(), recovery_hash()];
    assert!(
        store
            .put_recovery_codes(&user.id, &[a, b, c])
            .await
            .unwrap()
    );
    assert_eq!(codes_of(store, &user.id).await, 3);
    let theirs = recovery_hash();
    assert!(
        store
            .put_recovery_codes(&other.id, &[theirs])
            .await
            .unwrap()
    );

    assert!(store.use_recovery_code(&user.id, &a).await.unwrap());
    assert!(
        !store.use_recovery_code(&user.id, &a).await.unwrap(),
        "used once"
    );
    assert_eq!(codes_of(store, &user.id).await, 2);
    assert!(
        !store
            .use_recovery_code(&user.id, &recovery_hash())
            .await
            .unwrap()
    );
    assert!(
        !store.use_recovery_code(&user.id, &theirs).await.unwrap(),
        "another user's code"
    );
    assert!(
        !store.use_recovery_code(&other.id, &b).await.unwrap(),
        "this user's code, for another"
    );
    assert_eq!(codes_of(store, &user.id).await, 2);
    assert_eq!(codes_of(store, &other.id).await, 1);

    let [d, e] = [recovery_hash(), recovery_hash()];
    assert!(store.put_recovery_codes(&user.id, &[d, e]).await.unwrap());
    assert_eq!(codes_of(store, &user.id).await, 2);
    for old in [a, b, c] {
        assert!(
            !store.use_recovery_code(&user.id, &old).await.unwrap(),
            "a replaced code"
        );
    }
    assert!(store.use_recovery_code(&user.id, &e).await.unwrap());
    assert_eq!(codes_of(store, &user.id).await, 1);

    assert!(store.put_recovery_codes(&user.id, &[]).await.unwrap());
    assert_eq!(codes_of(store, &user.id).await, 0);
    assert!(!store.use_recovery_code(&user.id, &d).await.unwrap());

    assert_eq!(codes_of(store, &other.id).await, 1, "the other user's stay");
    assert!(store.use_recovery_code(&other.id, &theirs).await.unwrap());
    assert_eq!(codes_of(store, &other.id).await, 0);
}

/// Sixteen uses of one recovery code at the same time succeed exactly once; the user's other
/// codes are untouched.
pub async fn concurrent_uses_of_one_recovery_code_succeed_once(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let (code, spare) = (recovery_hash(), recovery_hash());
    store
        .put_recovery_codes(&user.id, &[code, spare])
        .await
        .unwrap();
    let uses = (0..16)
        .map(|_| store.use_recovery_code(&user.id, &code))
        .collect();
    let used: Vec<bool> = all_at_once(uses)
        .await
        .into_iter()
        .map(|r| r.expect("use_recovery_code"))
        .collect();
    assert_eq!(
        used.iter().filter(|u| **u).count(),
        1,
        "exactly one use: {used:?}"
    );
    assert_eq!(codes_of(store, &user.id).await, 1);
    assert!(store.use_recovery_code(&user.id, &spare).await.unwrap());
    assert_eq!(codes_of(store, &user.id).await, 0);
}

/// Deleting a user removes its TOTP factor and recovery codes: none is found, counted or
/// usable, and a user created afterwards with the same id starts without any. Other users keep
/// theirs.
pub async fn deleting_a_user_removes_its_factors(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let code = recovery_hash();
    let factor = totp_factor(t0);
    assert!(store.put_totp_factor(&user.id, &factor).await.unwrap());
    assert!(
        store
            .put_recovery_codes(&user.id, &[code, recovery_hash()])
            .await
            .unwrap()
    );
    let (their_factor, their_code) = (totp_factor(t0), recovery_hash());
    store
        .put_totp_factor(&other.id, &their_factor)
        .await
        .unwrap();
    store
        .put_recovery_codes(&other.id, &[their_code])
        .await
        .unwrap();
    assert_eq!(factor_of(store, &user.id).await, Some(factor));
    assert_eq!(codes_of(store, &user.id).await, 2);

    assert!(store.delete_user(&user.id).await.unwrap());
    assert_eq!(factor_of(store, &user.id).await, None);
    assert_eq!(codes_of(store, &user.id).await, 0);
    assert!(!store.use_recovery_code(&user.id, &code).await.unwrap());
    assert!(
        !store
            .accept_totp_step(&user.id, t0 / 30, true)
            .await
            .unwrap()
    );
    assert!(!store.remove_totp_factor(&user.id).await.unwrap());

    // Gone, not hidden: the same id again has nothing.
    let again = User {
        id: user.id.clone(),
        ..new_user(t0)
    };
    store.create_user(&again).await.unwrap();
    assert_eq!(factor_of(store, &again.id).await, None);
    assert_eq!(codes_of(store, &again.id).await, 0);
    assert!(!store.use_recovery_code(&again.id, &code).await.unwrap());

    assert_eq!(factor_of(store, &other.id).await, Some(their_factor));
    assert_eq!(codes_of(store, &other.id).await, 1);
    assert!(
        store
            .use_recovery_code(&other.id, &their_code)
            .await
            .unwrap()
    );
}

// Passkeys
// ---------------------------------------------------------------------------------------------

/// A passkey as registration stores it. The credential id and the serialised credential hold
/// the bytes 0 and 255, so they must be kept as bytes.
fn passkey_of(user: &User, t0: UnixTime) -> PasskeyRecord {
    let mut credential_id = vec![0, 255, 7];
    credential_id.extend(rid::<String>().into_bytes());
    let mut passkey = vec![255, 0];
    passkey.extend(format!("{{\"cred\":\"{}\"}}", rid::<String>()).into_bytes());
    PasskeyRecord {
        credential_id,
        user_id: user.id.clone(),
        name: format!("key {}", rid::<String>()),
        passkey,
        created_at: t0,
        last_used_at: None,
    }
}

async fn passkeys_of(store: &dyn Store, user_id: &UserId) -> Vec<PasskeyRecord> {
    store.passkeys(user_id).await.expect("passkeys")
}

async fn by_credential(store: &dyn Store, credential_id: &[u8]) -> Option<PasskeyRecord> {
    store
        .passkey_by_credential(credential_id)
        .await
        .expect("passkey_by_credential")
}

/// A user has no passkeys until one is added; they come back field for field, oldest first,
/// and by credential id; renaming and a use (with or without a new credential) change only
/// what they name; removing reports whether there was one. Nothing reaches another user's.
pub async fn passkeys_round_trip_are_renamed_used_and_removed(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    assert_eq!(passkeys_of(store, &user.id).await, vec![]);

    let first = passkey_of(&user, t0);
    let second = passkey_of(&user, t0 + 5);
    let theirs = passkey_of(&other, t0);
    // Added newest first: listed oldest first.
    assert!(store.add_passkey(&second).await.unwrap());
    assert!(store.add_passkey(&first).await.unwrap());
    assert!(store.add_passkey(&theirs).await.unwrap());
    assert_eq!(
        passkeys_of(store, &user.id).await,
        vec![first.clone(), second.clone()]
    );
    assert_eq!(passkeys_of(store, &other.id).await, vec![theirs.clone()]);
    assert_eq!(
        by_credential(store, &first.credential_id).await,
        Some(first.clone())
    );
    assert_eq!(by_credential(store, b"no such credential").await, None);

    // Rename: only the user's own passkey.
    assert!(
        store
            .rename_passkey(&user.id, &first.credential_id, "laptop")
            .await
            .unwrap()
    );
    assert!(
        !store
            .rename_passkey(&other.id, &first.credential_id, "mine")
            .await
            .unwrap(),
        "another user's passkey is not theirs to rename"
    );
    let renamed = PasskeyRecord {
        name: "laptop".to_owned(),
        ..first.clone()
    };
    assert_eq!(
        by_credential(store, &first.credential_id).await,
        Some(renamed.clone())
    );

    // A use without a new credential sets last_used_at alone; with one, replaces it.
    assert!(
        store
            .passkey_used(&user.id, &first.credential_id, None, 0, t0 + 60)
            .await
            .unwrap()
    );
    let used = PasskeyRecord {
        last_used_at: Some(t0 + 60),
        ..renamed
    };
    assert_eq!(
        by_credential(store, &first.credential_id).await,
        Some(used.clone())
    );
    let updated_credential = vec![1, 2, 3, 0, 255];
    assert!(
        store
            .passkey_used(
                &user.id,
                &first.credential_id,
                Some(&updated_credential),
                3,
                t0 + 90
            )
            .await
            .unwrap()
    );
    let updated = PasskeyRecord {
        passkey: updated_credential,
        last_used_at: Some(t0 + 90),
        ..used
    };
    assert_eq!(
        by_credential(store, &first.credential_id).await,
        Some(updated.clone())
    );
    assert!(
        !store
            .passkey_used(&other.id, &first.credential_id, None, 4, t0 + 99)
            .await
            .unwrap(),
        "another user's passkey is not theirs to use"
    );
    assert_eq!(
        by_credential(store, &first.credential_id).await,
        Some(updated)
    );

    // Remove: only the user's own, once.
    assert!(
        !store
            .remove_passkey(&other.id, &first.credential_id)
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_passkey(&user.id, &first.credential_id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_passkey(&user.id, &first.credential_id)
            .await
            .unwrap()
    );
    assert_eq!(by_credential(store, &first.credential_id).await, None);
    assert_eq!(passkeys_of(store, &user.id).await, vec![second]);
    assert_eq!(passkeys_of(store, &other.id).await, vec![theirs]);
}

/// A passkey for a user that does not exist is refused (false) and not stored.
pub async fn a_passkey_of_an_unknown_user_is_refused_and_not_stored(store: &dyn Store) {
    let t0 = clock();
    let ghost = new_user(t0);
    let passkey = passkey_of(&ghost, t0);
    assert!(!store.add_passkey(&passkey).await.unwrap());
    assert_eq!(by_credential(store, &passkey.credential_id).await, None);
    assert_eq!(passkeys_of(store, &ghost.id).await, vec![]);
}

/// A credential id is registered once, whoever registers it again: the second add is a
/// conflict and the first registration is left as it was. Concurrent adds of one id: one wins.
pub async fn a_credential_id_is_registered_once_across_users(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let passkey = passkey_of(&user, t0);
    assert!(store.add_passkey(&passkey).await.unwrap());
    for again in [passkey_of(&user, t0 + 1), passkey_of(&other, t0 + 1)] {
        let again = PasskeyRecord {
            credential_id: passkey.credential_id.clone(),
            ..again
        };
        assert!(
            matches!(store.add_passkey(&again).await, Err(StoreError::Conflict)),
            "a credential id registered already is a conflict"
        );
    }
    assert_eq!(
        by_credential(store, &passkey.credential_id).await,
        Some(passkey.clone())
    );
    assert_eq!(passkeys_of(store, &other.id).await, vec![]);

    let contested = passkey_of(&user, t0);
    let adds: Vec<PasskeyRecord> = (0..8)
        .map(|i| PasskeyRecord {
            credential_id: contested.credential_id.clone(),
            ..passkey_of(if i % 2 == 0 { &user } else { &other }, t0)
        })
        .collect();
    let outcomes = all_at_once(adds.iter().map(|p| store.add_passkey(p)).collect()).await;
    let won: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Ok(true) => Some(i),
            Err(StoreError::Conflict) => None,
            other => panic!("an add is stored or a conflict: {other:?}"),
        })
        .collect();
    assert_eq!(won.len(), 1, "exactly one add of a credential id wins");
    assert_eq!(
        by_credential(store, &contested.credential_id).await,
        Some(adds[won[0]].clone())
    );
}

/// Deleting a user removes its passkeys: none is listed, found by credential id, renamed,
/// used or removed, and a user created afterwards with the same id starts without any. The
/// credential id is free again. Other users keep theirs.
pub async fn deleting_a_user_removes_its_passkeys(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let other = add_user(store, t0).await;
    let passkey = passkey_of(&user, t0);
    let theirs = passkey_of(&other, t0);
    assert!(store.add_passkey(&passkey).await.unwrap());
    assert!(store.add_passkey(&theirs).await.unwrap());

    assert!(store.delete_user(&user.id).await.unwrap());
    assert_eq!(passkeys_of(store, &user.id).await, vec![]);
    assert_eq!(by_credential(store, &passkey.credential_id).await, None);
    let id = &passkey.credential_id;
    assert!(!store.rename_passkey(&user.id, id, "x").await.unwrap());
    assert!(!store.passkey_used(&user.id, id, None, 1, t0).await.unwrap());
    assert!(!store.remove_passkey(&user.id, id).await.unwrap());

    let again = User {
        id: user.id.clone(),
        ..new_user(t0)
    };
    store.create_user(&again).await.unwrap();
    assert_eq!(passkeys_of(store, &again.id).await, vec![]);
    // The credential id is free: its owner is gone.
    let reused = PasskeyRecord {
        credential_id: passkey.credential_id.clone(),
        ..passkey_of(&again, t0)
    };
    assert!(store.add_passkey(&reused).await.unwrap());
    assert_eq!(passkeys_of(store, &other.id).await, vec![theirs]);
}

fn ceremony_id() -> TokenHash {
    TokenHash::of(&format!("wac_{}", rid::<String>()))
}

/// A ceremony's state comes back once, as the bytes put, and not again; one that expired is
/// not returned (and is gone); a put replaces the state under the same id; a put drops the
/// states that expired, and leaves the others.
pub async fn a_ceremony_is_taken_once_and_not_after_it_expires(store: &dyn Store) {
    let t0 = clock();
    let (id, other) = (ceremony_id(), ceremony_id());
    let state = vec![0, 255, 1, 2, 3];
    assert_eq!(store.take_ceremony(&id, t0).await.unwrap(), None);

    store.put_ceremony(&id, &state, t0 + 300, t0).await.unwrap();
    store
        .put_ceremony(&other, b"other", t0 + 300, t0)
        .await
        .unwrap();
    assert_eq!(
        store.take_ceremony(&id, t0 + 299).await.unwrap(),
        Some(state.clone())
    );
    assert_eq!(
        store.take_ceremony(&id, t0 + 1).await.unwrap(),
        None,
        "taken once"
    );
    assert_eq!(
        store.take_ceremony(&other, t0 + 1).await.unwrap(),
        Some(b"other".to_vec()),
        "another ceremony is its own"
    );

    // Expired at its expiry time: not returned, and gone even for an earlier clock.
    store.put_ceremony(&id, &state, t0 + 300, t0).await.unwrap();
    assert_eq!(store.take_ceremony(&id, t0 + 300).await.unwrap(), None);
    assert_eq!(store.take_ceremony(&id, t0).await.unwrap(), None);

    // A put under the same id replaces the state and its expiry.
    store
        .put_ceremony(&id, b"first", t0 + 10, t0)
        .await
        .unwrap();
    store
        .put_ceremony(&id, b"second", t0 + 600, t0)
        .await
        .unwrap();
    assert_eq!(
        store.take_ceremony(&id, t0 + 300).await.unwrap(),
        Some(b"second".to_vec())
    );

    // A put drops the states expired at its `now`, not the live ones.
    let (stale, live) = (ceremony_id(), ceremony_id());
    store
        .put_ceremony(&stale, b"stale", t0 + 10, t0)
        .await
        .unwrap();
    store
        .put_ceremony(&live, b"live", t0 + 600, t0)
        .await
        .unwrap();
    store
        .put_ceremony(&ceremony_id(), b"x", t0 + 700, t0 + 20)
        .await
        .unwrap();
    assert_eq!(
        store.take_ceremony(&stale, t0).await.unwrap(),
        None,
        "dropped by the later put"
    );
    assert_eq!(
        store.take_ceremony(&live, t0 + 20).await.unwrap(),
        Some(b"live".to_vec())
    );
}

/// Of 16 concurrent takers of one ceremony, exactly one gets its state.
pub async fn concurrent_takes_of_one_ceremony_get_it_once(store: &dyn Store) {
    let t0 = clock();
    let id = ceremony_id();
    store
        .put_ceremony(&id, b"state", t0 + 300, t0)
        .await
        .unwrap();
    let takes = (0..16).map(|_| store.take_ceremony(&id, t0)).collect();
    let taken: Vec<Option<Vec<u8>>> = all_at_once(takes)
        .await
        .into_iter()
        .map(|r| r.expect("take_ceremony"))
        .collect();
    assert_eq!(
        taken.iter().flatten().collect::<Vec<_>>(),
        vec![&b"state".to_vec()],
        "exactly one taker gets the state: {taken:?}"
    );
}

/// A use is recorded only when its signature counter is above the last one recorded (a clone
/// replaying an older counter, or the same one, is not), or when both are 0 (an authenticator
/// without a counter); a use not recorded changes nothing.
pub async fn a_passkey_use_is_recorded_only_when_its_counter_went_up(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let counted = passkey_of(&user, t0);
    let uncounted = passkey_of(&user, t0);
    assert!(store.add_passkey(&counted).await.unwrap());
    assert!(store.add_passkey(&uncounted).await.unwrap());
    let id = &counted.credential_id;
    let used = |count: u32, at: UnixTime| store.passkey_used(&user.id, id, None, count, at);

    assert!(used(5, t0 + 1).await.unwrap());
    assert!(!used(5, t0 + 2).await.unwrap(), "the same counter again");
    assert!(!used(4, t0 + 3).await.unwrap(), "a counter gone back");
    assert!(!used(0, t0 + 4).await.unwrap(), "a counter gone back to 0");
    assert_eq!(
        by_credential(store, id).await.unwrap().last_used_at,
        Some(t0 + 1),
        "a use not recorded changes nothing"
    );
    assert!(used(6, t0 + 5).await.unwrap());

    // An authenticator without a counter answers 0 every time.
    let id = &uncounted.credential_id;
    for at in [t0 + 1, t0 + 2] {
        assert!(store.passkey_used(&user.id, id, None, 0, at).await.unwrap());
    }
}

/// Of concurrent uses with one counter (a clone racing the real authenticator), one is
/// recorded.
pub async fn concurrent_uses_with_one_counter_are_recorded_once(store: &dyn Store) {
    let t0 = clock();
    let user = add_user(store, t0).await;
    let passkey = passkey_of(&user, t0);
    assert!(store.add_passkey(&passkey).await.unwrap());
    let uses = (0..16)
        .map(|_| store.passkey_used(&user.id, &passkey.credential_id, None, 7, t0 + 1))
        .collect();
    let recorded: Vec<bool> = all_at_once(uses)
        .await
        .into_iter()
        .map(|r| r.expect("passkey_used"))
        .collect();
    assert_eq!(
        recorded.iter().filter(|r| **r).count(),
        1,
        "exactly one use is recorded: {recorded:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Signing keys and health
// ---------------------------------------------------------------------------------------------

/// `add_signing_key` makes the new key current and retires, at `now`, every key not yet retired
/// (earlier retirements stay); `signing_keys` returns them oldest first with their key material
/// intact, so they still sign and verify.
pub async fn adding_a_signing_key_retires_the_previous_ones(store: &dyn Store) {
    let t0 = clock();
    let keys = [
        KeyRecord::generate(Algorithm::EdDsa, t0 - 200).unwrap(),
        KeyRecord::generate(Algorithm::Es256, t0 - 100).unwrap(),
        KeyRecord::generate(Algorithm::Hs256, t0).unwrap(),
    ];
    for key in &keys {
        store.add_signing_key(key, key.created_at).await.unwrap();
    }
    let retired = [Some(t0 - 100), Some(t0), None];

    let stored = store.signing_keys().await.unwrap();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            stored
                .iter()
                .position(|s| s.kid == k.kid)
                .unwrap_or_else(|| panic!("key {} is listed", k.kid))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {positions:?}"
    );
    for ((key, at), want_retired) in keys.iter().zip(&positions).zip(retired) {
        let got = &stored[*at];
        assert_eq!(got.algorithm, key.algorithm, "{}", key.kid);
        assert_eq!(got.private, key.private, "{}", key.kid);
        assert_eq!(got.public, key.public, "{}", key.kid);
        assert_eq!(got.created_at, key.created_at, "{}", key.kid);
        assert_eq!(got.retired_at, want_retired, "{}", key.kid);

        let signature = got.signing_key().unwrap().sign(b"conformance").unwrap();
        assert!(
            key.verifying_key()
                .unwrap()
                .verify(b"conformance", &signature)
        );
        assert!(
            got.verifying_key()
                .unwrap()
                .verify(b"conformance", &signature)
        );
    }

    let current: Vec<&KeyRecord> = stored.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(current.len(), 1, "exactly one key is current");
    assert_eq!(current[0].kid, keys[2].kid);
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );
}

fn audit_event(at: UnixTime, kind: EventKind, actor: &str, subject: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at,
        kind,
        actor: Some(actor.to_owned()),
        subject: Some(subject.to_owned()),
        session_id: Some(random::id().unwrap()),
        ip: Some("192.0.2.7".to_owned()),
        user_agent: Some("conformance".to_owned()),
        detail: None,
    }
}

/// Audit events come back newest first, filtered by user (actor or subject), kind and time,
/// limited, and pageable by id.
pub async fn audit_events_are_appended_and_queried_newest_first(store: &dyn Store) {
    let t0 = clock();
    let alice = format!("alice-{}", random::id().unwrap());
    let bob = format!("bob-{}", random::id().unwrap());
    let events = [
        audit_event(t0, EventKind::LoginSucceeded, &alice, &alice),
        audit_event(t0 + 1, EventKind::LoginFailed, &bob, &bob),
        audit_event(t0 + 2, EventKind::SessionRevoked, &bob, &alice),
        audit_event(t0 + 3, EventKind::Logout, &alice, &alice),
    ];
    for event in &events {
        store.append_audit(event).await.unwrap();
    }
    let all = |user: &str| AuditQuery {
        user: Some(user.to_owned()),
        limit: 100,
        ..AuditQuery::default()
    };

    let of_alice = store.audit_events(&all(&alice)).await.unwrap();
    let kinds: Vec<EventKind> = of_alice.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Logout,
            EventKind::SessionRevoked,
            EventKind::LoginSucceeded
        ],
        "actor or subject, newest first"
    );
    assert!(
        of_alice.windows(2).all(|w| w[0].id > w[1].id),
        "ids grow with appends"
    );
    let stored = &of_alice[2];
    assert_eq!(
        (stored.at, stored.ip.as_deref(), stored.session_id.as_ref()),
        (t0, Some("192.0.2.7"), events[0].session_id.as_ref())
    );

    let by_kind = AuditQuery {
        kind: Some(EventKind::SessionRevoked),
        ..all(&bob)
    };
    assert_eq!(store.audit_events(&by_kind).await.unwrap().len(), 1);
    let in_time = AuditQuery {
        since: Some(t0 + 1),
        until: Some(t0 + 3),
        ..all(&alice)
    };
    let in_time: Vec<EventKind> = store
        .audit_events(&in_time)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(in_time, [EventKind::SessionRevoked]);
    let first_page = store
        .audit_events(&AuditQuery {
            limit: 2,
            ..all(&alice)
        })
        .await
        .unwrap();
    assert_eq!(first_page.len(), 2);
    let next = AuditQuery {
        before_id: Some(first_page[1].id),
        ..all(&alice)
    };
    let next: Vec<EventKind> = store
        .audit_events(&next)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(next, [EventKind::LoginSucceeded]);
}

/// A counter counts hits inside its window, is reported until the window passes, then starts over;
/// clearing forgets it.
pub async fn counters_count_within_their_window_and_start_over_after_it(store: &dyn Store) {
    let t0 = clock();
    let key = format!("login:{}", random::id().unwrap());
    assert_eq!(store.counter(&key, t0, 60).await.unwrap(), None);
    assert_eq!(store.hit_counter(&key, t0, 60).await.unwrap().count, 1);
    assert_eq!(store.hit_counter(&key, t0 + 10, 60).await.unwrap().count, 2);
    let third = store.hit_counter(&key, t0 + 59, 60).await.unwrap();
    assert_eq!(
        (third.count, third.window_start, third.last_at),
        (3, t0, t0 + 59)
    );
    assert_eq!(store.counter(&key, t0 + 59, 60).await.unwrap(), Some(third));
    assert_eq!(
        store.counter(&key, t0 + 60, 60).await.unwrap(),
        None,
        "window over"
    );
    let fresh = store.hit_counter(&key, t0 + 60, 60).await.unwrap();
    assert_eq!(
        (fresh.count, fresh.window_start),
        (1, t0 + 60),
        "starts over"
    );
    store.clear_counter(&key).await.unwrap();
    assert_eq!(store.counter(&key, t0 + 61, 60).await.unwrap(), None);
    let other = format!("login:{}", random::id().unwrap());
    store.hit_counter(&other, t0, 60).await.unwrap();
    assert_eq!(
        store.counter(&key, t0 + 1, 60).await.unwrap(),
        None,
        "keys are independent"
    );
}

/// Hits made at the same time are each counted once (the increment is atomic).
pub async fn concurrent_counter_hits_are_all_counted(store: &dyn Store) {
    let t0 = clock();
    let key = format!("ip:{}", random::id().unwrap());
    let hit = || store.hit_counter(&key, t0, 300);
    let (h0, h1, h2, h3, h4, h5, h6, h7) =
        tokio::join!(hit(), hit(), hit(), hit(), hit(), hit(), hit(), hit());
    let mut counts: Vec<u32> = [h0, h1, h2, h3, h4, h5, h6, h7]
        .into_iter()
        .map(|r| r.unwrap().count)
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=8).collect::<Vec<u32>>());
    assert_eq!(
        store.counter(&key, t0, 300).await.unwrap().map(|c| c.count),
        Some(8)
    );
}

/// Releasing takes back one hit of the window it was made in, never below zero, and leaves a
/// restarted window alone.
pub async fn a_released_hit_is_taken_back_only_in_its_window(store: &dyn Store) {
    let t0 = clock();
    let key = format!("login:{}", random::id().unwrap());
    store.hit_counter(&key, t0, 60).await.unwrap();
    let second = store.hit_counter(&key, t0 + 5, 60).await.unwrap();
    store
        .release_counter(&key, second.window_start)
        .await
        .unwrap();
    let after = store.counter(&key, t0 + 6, 60).await.unwrap().unwrap();
    assert_eq!(
        (after.count, after.window_start, after.last_at),
        (1, t0, t0 + 5),
        "one hit taken back, the latest hit time kept"
    );
    store.release_counter(&key, t0 + 1).await.unwrap();
    assert_eq!(
        store
            .counter(&key, t0 + 6, 60)
            .await
            .unwrap()
            .map(|c| c.count),
        Some(1),
        "another window's release changes nothing"
    );
    store.release_counter(&key, t0).await.unwrap();
    store.release_counter(&key, t0).await.unwrap();
    assert_eq!(
        store
            .counter(&key, t0 + 6, 60)
            .await
            .unwrap()
            .map(|c| c.count),
        Some(0),
        "never below zero"
    );
    assert_eq!(store.hit_counter(&key, t0 + 7, 60).await.unwrap().count, 1);
    let restarted = store.hit_counter(&key, t0 + 60, 60).await.unwrap();
    assert_eq!((restarted.count, restarted.window_start), (1, t0 + 60));
    store.release_counter(&key, t0).await.unwrap();
    assert_eq!(
        store
            .counter(&key, t0 + 61, 60)
            .await
            .unwrap()
            .map(|c| c.count),
        Some(1),
        "a hit of a passed window is not taken from the new one"
    );
    let absent = format!("login:{}", random::id().unwrap());
    store.release_counter(&absent, t0).await.unwrap();
    assert_eq!(store.counter(&absent, t0, 60).await.unwrap(), None);
}

/// Hits and releases made at the same time each count once (both are atomic).
pub async fn concurrent_hits_and_releases_are_all_counted(store: &dyn Store) {
    let t0 = clock();
    let key = format!("ip:{}", random::id().unwrap());
    for _ in 0..8 {
        store.hit_counter(&key, t0, 300).await.unwrap();
    }
    // A hit and a release side by side; eight such pairs at once.
    let pair = || async {
        let (hit, release) = tokio::join!(
            store.hit_counter(&key, t0, 300),
            store.release_counter(&key, t0)
        );
        hit.map(|_| ()).and(release)
    };
    let (p0, p1, p2, p3, p4, p5, p6, p7) = tokio::join!(
        pair(),
        pair(),
        pair(),
        pair(),
        pair(),
        pair(),
        pair(),
        pair()
    );
    for result in [p0, p1, p2, p3, p4, p5, p6, p7] {
        result.unwrap();
    }
    assert_eq!(
        store.counter(&key, t0, 300).await.unwrap().map(|c| c.count),
        Some(8),
        "eight hits and eight releases cancel out"
    );
}

/// `ping` succeeds on a working store.
pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}
