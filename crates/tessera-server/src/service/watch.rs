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
        self.keys.reload(self.store(), self.now()).await?;
        Ok(true)
    }

    /// Starts the task that reloads the signing keys on every key-change notice and resync
    /// from `notices`, and every `poll` in any case. The task ends when the service is dropped.
    pub fn watch_keys(
        self: &Arc<Self>,
        notices: broadcast::Receiver<Notice>,
        poll: Duration,
    ) -> JoinHandle<()> {
        let service = Arc::downgrade(self);
        tokio::spawn(watch(service, notices, poll))
    }
}

async fn watch(service: Weak<Tessera>, mut notices: broadcast::Receiver<Notice>, poll: Duration) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the keys were just loaded
    let mut listening = true;
    loop {
        let reload = tokio::select! {
            notice = notices.recv(), if listening => match notice {
                Ok(Notice::Event(StoreEvent::KeysChanged) | Notice::Resync) => true,
                Ok(Notice::Event(_)) => false,
                // Fell behind: some notices were lost.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    tracing::warn!("store event bus closed; key reloads fall back to polling");
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
        match service.keys.reload(service.store(), service.now()).await {
            Ok(()) => tracing::debug!("signing keys reloaded"),
            Err(error) => tracing::warn!(%error, "could not reload signing keys"),
        }
    }
}
