//! Work that must finish before the process exits, run by the runner after the last in-flight
//! request has been answered.
//!
//! The shutdown sequence ([`crate::serve::run`]): stop accepting connections, let in-flight
//! requests finish (bounded by [`crate::serve::DRAIN_TIMEOUT`]), then run every registered
//! [`FlushHooks`] hook (bounded by [`crate::serve::FLUSH_TIMEOUT`]). Code that buffers
//! something it must not lose — an asynchronous audit queue, webhook deliveries — registers a
//! hook on the service's [`FlushHooks`] (`Tessera::flush_hooks`) when it starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Hooks run once, in registration order, when the server shuts down.
#[derive(Clone, Default)]
pub struct FlushHooks {
    hooks: Arc<Mutex<Vec<(&'static str, Hook)>>>,
}

impl FlushHooks {
    /// No hooks yet.
    pub fn new() -> FlushHooks {
        FlushHooks::default()
    }

    /// Registers `hook` under `name` (for the log). It runs at shutdown, after the drain.
    pub fn register<F, Fut>(&self, name: &'static str, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let boxed: Hook = Box::new(move || Box::pin(hook()));
        self.lock().push((name, boxed));
    }

    /// How many hooks wait to run.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no hook waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs (and removes) every hook in registration order, all within `within`. Returns
    /// false when time ran out before the last one finished (what was left is logged).
    pub async fn flush(&self, within: Duration) -> bool {
        let hooks = std::mem::take(&mut *self.lock());
        let names: Vec<&'static str> = hooks.iter().map(|(name, _)| *name).collect();
        let mut done = 0usize;
        let run_all = async {
            for (name, hook) in hooks {
                hook().await;
                tracing::info!(hook = name, "flushed");
                done += 1;
            }
        };
        if tokio::time::timeout(within, run_all).await.is_ok() {
            return true;
        }
        let unfinished = names.get(done..).unwrap_or_default();
        tracing::error!(?unfinished, "shutdown flush ran out of time");
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Hook)>> {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for FlushHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushHooks")
            .field("pending", &self.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn hooks_run_once_in_order() {
        let hooks = FlushHooks::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["audit", "webhooks"] {
            let order = Arc::clone(&order);
            hooks.register(name, move || async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                order.lock().unwrap().push(name);
            });
        }
        assert_eq!(hooks.len(), 2);
        assert!(hooks.flush(Duration::from_secs(5)).await);
        assert_eq!(*order.lock().unwrap(), ["audit", "webhooks"]);
        assert!(hooks.is_empty());
        assert!(hooks.flush(Duration::from_secs(5)).await);
        assert_eq!(order.lock().unwrap().len(), 2, "a hook runs only once");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_cut_off_at_the_deadline() {
        let hooks = FlushHooks::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        hooks.register("stuck", std::future::pending::<()>);
        hooks.register("after", move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let started = std::time::Instant::now();
        assert!(!hooks.flush(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
