//! A [`Store`] decorator that times every operation and counts failures, for any backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tessera_core::UnixTime;
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;
use tessera_store::{
    AuditEvent, AuditQuery, Counter, NewSession, RefreshOutcome, Rotation, Session, SessionRecord,
    Store, StoreError, StoreResult, User,
};

use super::STORE_ERRORS;

/// Wraps a store: every call is delegated unchanged, its latency recorded in
/// [`STORE_DURATION`] and its failure (if any) counted in [`STORE_ERRORS`]; a refresh rotation
/// that detects a replayed token is counted in [`super::REFRESH_REPLAYS`].
///
/// Being a decorator, it works on every backend and cannot change what a store answers.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> MeteredStore {
        MeteredStore { inner }
    }
}

/// The `kind` label of a store error.
fn kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict => "conflict",
        StoreError::Corrupt(_) => "corrupt",
        _ => "other",
    }
}

/// Runs one store operation, recording its latency and failure.
async fn timed<T>(
    operation: &'static str,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    super::store_duration(operation, started.elapsed());
    if let Err(error) = &result {
        metrics::counter!(STORE_ERRORS, "operation" => operation, "kind" => kind(error))
            .increment(1);
    }
    result
}

#[async_trait]
impl Store for MeteredStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        timed("create_user", self.inner.create_user(user)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        timed("user_by_name", self.inner.user_by_name(username)).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        timed("user_by_id", self.inner.user_by_id(id)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        timed("list_users", self.inner.list_users()).await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        timed("count_users", self.inner.count_users()).await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        timed("update_user", self.inner.update_user(user)).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        timed("delete_user", self.inner.delete_user(id)).await
    }

    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        timed("create_session", self.inner.create_session(new)).await
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        timed(
            "session_by_access_hash",
            self.inner.session_by_access_hash(hash),
        )
        .await
    }

    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        timed("session_by_id", self.inner.session_by_id(id)).await
    }

    async fn touch_session(&self, id: &str, touch: Touch) -> StoreResult<()> {
        timed("touch_session", self.inner.touch_session(id, touch)).await
    }

    async fn revoke_session(&self, id: &str, now: UnixTime) -> StoreResult<bool> {
        timed("revoke_session", self.inner.revoke_session(id, now)).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<u64> {
        timed(
            "revoke_user_sessions",
            self.inner.revoke_user_sessions(user_id, except, now),
        )
        .await
    }

    async fn list_sessions(
        &self,
        user_id: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        timed("list_sessions", self.inner.list_sessions(user_id, now)).await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        timed(
            "session_by_refresh_hash",
            self.inner.session_by_refresh_hash(hash),
        )
        .await
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        let outcome = timed("rotate_refresh", self.inner.rotate_refresh(rotation)).await;
        // The store is where a replay is decided, atomically, whatever the backend.
        if let Ok(RefreshOutcome::ReuseDetected { .. }) = &outcome {
            super::refresh_replay();
        }
        outcome
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        timed("purge_sessions", self.inner.purge_sessions(before)).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        timed("signing_keys", self.inner.signing_keys()).await
    }

    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()> {
        timed("add_signing_key", self.inner.add_signing_key(key, now)).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        timed("append_audit", self.inner.append_audit(event)).await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        timed("audit_events", self.inner.audit_events(query)).await
    }

    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        timed("hit_counter", self.inner.hit_counter(key, now, window)).await
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        timed("counter", self.inner.counter(key, now, window)).await
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        timed(
            "release_counter",
            self.inner.release_counter(key, window_start),
        )
        .await
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        timed("clear_counter", self.inner.clear_counter(key)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::PathBuf;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use tessera_store::conformance::Fixture;
    use tessera_store_sqlite::SqliteStore;

    use super::*;

    /// A SQLite store in its own temporary directory, seen through the decorator.
    struct Metered {
        store: MeteredStore,
        dir: PathBuf,
    }

    impl Fixture for Metered {
        fn store(&self) -> &dyn Store {
            &self.store
        }
    }

    impl Drop for Metered {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn fresh() -> Metered {
        let name = format!("tessera-metered-{}", tessera_core::random::id().unwrap());
        let dir = std::env::temp_dir().join(name);
        let sqlite = SqliteStore::open(&dir.join("tessera.db")).unwrap();
        Metered {
            store: MeteredStore::new(Arc::new(sqlite)),
            dir,
        }
    }

    // The decorator must not change a single answer: the whole suite runs through it.
    tessera_store::store_conformance_tests!(fresh);

    #[tokio::test]
    async fn latency_and_failures_are_recorded_per_operation() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let fixture = fresh().await;
        let store = fixture.store();
        let user = User {
            id: tessera_core::random::id().unwrap(),
            username: "metered".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: Vec::new(),
            permissions: Vec::new(),
            disabled: false,
            created_at: 1_700_000_000,
        };
        store.create_user(&user).await.unwrap();
        assert!(matches!(
            store.create_user(&user).await,
            Err(StoreError::Conflict)
        ));
        store.ping().await.unwrap();

        let text = handle.render();
        assert!(
            text.contains(
                "tessera_store_errors_total{operation=\"create_user\",kind=\"conflict\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tessera_store_operation_duration_seconds_count{operation=\"create_user\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("tessera_store_operation_duration_seconds_count{operation=\"ping\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("operation=\"ping\",kind"),
            "a success is not an error: {text}"
        );
        assert!(!text.contains("metered"), "no username in metrics: {text}");
    }
}
