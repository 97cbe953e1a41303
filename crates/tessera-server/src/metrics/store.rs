//! Store metrics for any backend: the [`StoreMetrics`] layer times every store operation and
//! counts its failures.

use std::time::Instant;

use tessera_store::{Layer, Layered, StoreError, StoreFuture, StoreResult};

use super::STORE_ERRORS;

/// The [`Layer`] that records every store operation's latency in [`super::STORE_DURATION`] and
/// its failure (if any) in [`STORE_ERRORS`], labelled by the operation's name. A layer sees
/// every operation of every ability, including ones added later, without naming them; it
/// cannot change what a store answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreMetrics;

/// A store whose operations are timed and counted.
pub type MeteredStore = Layered<StoreMetrics>;

/// The `kind` label of a store error.
fn kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict => "conflict",
        StoreError::Corrupt(_) => "corrupt",
        _ => "other",
    }
}

impl Layer for StoreMetrics {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: StoreFuture<'a, T>,
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use tessera_store::conformance::Fixture;
    use tessera_store::{Store, User};
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
            store: Layered::new(Arc::new(sqlite), StoreMetrics),
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
            id: tessera_core::random::id().unwrap().into(),
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
