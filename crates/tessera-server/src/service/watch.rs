//! Keeping an instance's in-memory signing keys in step with the shared store.
//!
//! Three paths lead to a reload, so a rotation made anywhere (another instance, the CLI) is
//! picked up here:
//!
//! 1. a [`StoreEvent::KeysChanged`] notice (or a [`Notice::Resync`]) from the event bus, within
//!    milliseconds;
//! 2. a timer, every `key_poll_interval` seconds, for notices that were lost (the bounded
//!    fallback);
//! 3. a JWT whose `kid` is unknown here: the keys are reloaded once before the token is refused,
//!    at most once per [`UNKNOWN_KID_RELOAD_INTERVAL`] (a flood of made-up `kid`s costs one
//!    store read per interval, not one per request).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tessera_store::events::{Notice, StoreEvent};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use super::{ServiceError, Tessera};

/// Shortest time between two reloads caused by unknown `kid`s.
pub const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Rate limit of reloads caused by unknown `kid`s; concurrent callers share one reload.
#[derive(Debug, Default)]
pub(crate) struct KidReloads {
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Tessera {
    /// Reloads the keys because a token names a `kid` this instance does not hold, unless that
    /// was done within [`UNKNOWN_KID_RELOAD_INTERVAL`]. Returns whether the caller should verify
    /// again (the key set may have changed since it first looked).
    pub(crate) async fn reload_for_unknown_kid(&self) -> Result<bool, ServiceError> {
        let mut last = self.kid_reloads.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD_INTERVAL) {
            // Someone reloaded just now (perhaps while we waited for the lock): use that.
            return Ok(true);
        }
        *last = Some(Instant::now());
        self.keys.reload(self.store()).await?;
        Ok(true)
    }

    /// Starts the task that reloads the signing keys on every key-change notice and resync
    /// from `notices`, and every `poll` in any case. The task ends when the service is dropped.
    pub fn watch_keys(
        self: &Arc<Self>,
        notices: broadcast::Receiver<Notice>,
        poll: Duration,
    ) -> JoinHandle<()> {
        follow(self, notices, poll, Cached::SigningKeys)
    }
}

/// What an instance holds from the store and keeps in step with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The signing keys (loaded when the service was built).
    SigningKeys,
    /// The revocation log's counter, which wakes held feed requests.
    RevocationLog,
}

impl Cached {
    fn affected_by(self, event: &StoreEvent) -> bool {
        match self {
            Cached::SigningKeys => *event == StoreEvent::KeysChanged,
            Cached::RevocationLog => *event == StoreEvent::RevocationsLogged,
        }
    }

    async fn reload(self, service: &Tessera) {
        let result = match self {
            Cached::SigningKeys => service.keys.reload(service.store()).await,
            Cached::RevocationLog => service.refresh_revocation_watch().await,
        };
        match result {
            Ok(()) => tracing::debug!(cached = ?self, "reloaded"),
            Err(error) => tracing::warn!(%error, cached = ?self, "could not reload"),
        }
    }
}

/// Spawns the task that reloads `cached` on every notice that affects it, on every resync,
/// and every `poll` in any case. The task ends when the service is dropped.
pub(crate) fn follow(
    service: &Arc<Tessera>,
    notices: broadcast::Receiver<Notice>,
    poll: Duration,
    cached: Cached,
) -> JoinHandle<()> {
    tokio::spawn(watch(Arc::downgrade(service), notices, poll, cached))
}

async fn watch(
    service: Weak<Tessera>,
    mut notices: broadcast::Receiver<Notice>,
    poll: Duration,
    cached: Cached,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: one reload right after subscribing catches a change made
    // between the service's first load and the subscription (instances starting together
    // race to create the first key), which no notice will report.
    let mut listening = true;
    loop {
        let reload = tokio::select! {
            notice = notices.recv(), if listening => match notice {
                Ok(Notice::Event(event)) => cached.affected_by(&event),
                Ok(Notice::Resync) => true,
                // Fell behind: some notices were lost.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    // Closed because the server is shutting down (the service is gone):
                    // nothing is wrong, and nothing is left to reload.
                    if service.strong_count() == 0 {
                        return;
                    }
                    tracing::warn!(cached = ?cached, "store event bus closed; reloads fall back to polling");
                    listening = false;
                    false
                }
            },
            _ = tick.tick() => true,
        };
        if !reload {
            continue;
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        cached.reload(&service).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use crate::service::Actor;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use base64::Engine;
    use tessera_core::TokenError;
    use tessera_store::events::{EventBus, LocalBus, Notify};
    use tessera_store::{Layer, Layered, Store, StoreFuture, StoreResult};
    use tessera_store_sqlite::SqliteStore;

    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::service::{ClientInfo, Delivery, ServiceError, Settings, Tessera};

    /// Counts how often the signing keys are read, as a layer over a SQLite store.
    #[derive(Default)]
    struct KeyReads(AtomicUsize);

    impl Layer for KeyReads {
        fn around<'a, T: Send + 'a>(
            &'a self,
            operation: &'static str,
            call: StoreFuture<'a, T>,
        ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
            if operation == "signing_keys" {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            call
        }
    }

    /// A SQLite store whose key reads are counted.
    type Counting = Layered<KeyReads>;

    struct Setup {
        a: Arc<Tessera>,
        b: Arc<Tessera>,
        counting: Arc<Counting>,
        bus: LocalBus,
        dir: std::path::PathBuf,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Two instances sharing one store, as two processes would; `a` publishes on `bus`.
    async fn two_instances() -> Setup {
        let dir = std::env::temp_dir().join(format!(
            "tessera-watch-{}",
            tessera_core::random::id().unwrap()
        ));
        let sqlite = SqliteStore::open(&dir.join("tessera.db")).unwrap();
        let counting: Arc<Counting> = Arc::new(Layered::new(Arc::new(sqlite), KeyReads::default()));
        let bus = LocalBus::new();
        let settings = Settings::from_config(&Config {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..Config::default()
        });
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let published: Arc<dyn Store> = Arc::new(Layered::new(
            counting.clone(),
            Notify::new(Arc::new(bus.clone()) as Arc<dyn EventBus>),
        ));
        // Both instances share the store, so they share its master key too.
        let master = tessera_core::at_rest::MasterKey::generate().unwrap();
        let a = Tessera::new(published, settings.clone(), master.clone(), clock.clone())
            .await
            .unwrap();
        let b = Tessera::new(counting.clone(), settings, master, clock)
            .await
            .unwrap();
        a.create_user(&Actor::cli(), "alice", "correct horse", vec![], vec![])
            .await
            .unwrap();
        Setup {
            a: Arc::new(a),
            b: Arc::new(b),
            counting,
            bus,
            dir,
        }
    }

    async fn jwt(service: &Tessera) -> String {
        service
            .login(
                "alice",
                "correct horse",
                None,
                Delivery::Bearer,
                ClientInfo::default(),
                None,
            )
            .await
            .unwrap()
            .access_token
    }

    fn with_kid(token: &str, kid: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let header = parts.next().unwrap();
        let mut header: serde_json::Value =
            serde_json::from_slice(&engine.decode(header).unwrap()).unwrap();
        header["kid"] = kid.into();
        let header = engine.encode(serde_json::to_vec(&header).unwrap());
        format!(
            "{header}.{}.{}",
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    }

    #[tokio::test]
    async fn a_token_signed_with_a_key_new_elsewhere_verifies_after_one_reload() {
        let setup = two_instances().await;
        setup.a.rotate_key(&Actor::cli()).await.unwrap();
        let token = jwt(&setup.a).await;
        let before = setup.counting.layer().0.load(Ordering::SeqCst);
        let identity = setup.b.authenticate(&token).await.unwrap();
        assert_eq!(identity.username, "alice");
        assert_eq!(setup.counting.layer().0.load(Ordering::SeqCst), before + 1);
        // Now known: no further reload.
        setup.b.authenticate(&token).await.unwrap();
        assert_eq!(setup.counting.layer().0.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn made_up_kids_are_refused_and_reload_at_most_once_per_interval() {
        let setup = two_instances().await;
        let token = jwt(&setup.a).await;
        let before = setup.counting.layer().0.load(Ordering::SeqCst);
        for i in 0..50 {
            let forged = with_kid(&token, &format!("made-up-{i}"));
            let result = setup.b.authenticate(&forged).await;
            assert!(
                matches!(result, Err(ServiceError::Token(TokenError::UnknownKey))),
                "{result:?}"
            );
        }
        assert_eq!(
            setup.counting.layer().0.load(Ordering::SeqCst),
            before + 1,
            "one store read for a burst of unknown kids"
        );
    }

    #[tokio::test]
    async fn a_key_change_notice_reloads_the_keys_at_once() {
        let setup = two_instances().await;
        // A long poll interval: only the notice can make this pass in time.
        let _watch = setup
            .b
            .watch_keys(setup.bus.subscribe(), Duration::from_secs(3600));
        let key = setup.a.rotate_key(&Actor::cli()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !setup.b.key_ring().jwks().to_string().contains(&key.kid) {
            assert!(std::time::Instant::now() < deadline, "b never reloaded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // And b now signs with it.
        let token = jwt(&setup.b).await;
        let header = token.split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        assert!(String::from_utf8(header).unwrap().contains(&key.kid));
    }
}
