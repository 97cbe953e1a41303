//! Assembling a [`Store`] from several backends: [`ByAbility::split`] puts sessions and counters
//! in a session backend (Redis) and everything else in a durable store.
//!
//! The assembly is only a choice of backend per ability: [`ByAbility`] forwards each operation to
//! the backend of its ability (written by the `abilities!` list in the crate root). The one
//! operation that spans abilities, deleting a user, is written beside its method there.
//!
//! # Why session lookups go back to the durable store
//!
//! A session lookup must return the user's roles, permissions and disabled flag *as they are
//! now* ([`SessionStore::session_by_access_hash`]). A session backend keeps only the user id and
//! is given the durable store's [`UserStore`] to read the user on every lookup. A snapshot of
//! the user in the session would save that read but could carry stale roles, and the durable
//! read is also what makes a deleted user's sessions vanish at once: ids are never reused, so a
//! session whose user is gone is reported as not found.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ByAbility, CounterStore, Health, SessionStore, Store, StoreResult};

impl std::fmt::Debug for ByAbility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByAbility").finish_non_exhaustive()
    }
}

impl ByAbility {
    /// Sessions, refresh tokens and counters from `sessions`; users, keys and audit from
    /// `durable`. Ready only when both answer.
    pub fn split<S>(durable: Arc<dyn Store>, sessions: Arc<S>) -> ByAbility
    where
        S: SessionStore + CounterStore + Health,
    {
        let health: Vec<Arc<dyn Health>> = vec![durable.clone(), sessions.clone()];
        ByAbility {
            sessions: sessions.clone(),
            counters: sessions,
            health: Arc::new(EveryBackend(health)),
            ..ByAbility::single(durable)
        }
    }
}

/// The health of several backends: it answers when every one of them does (either one down
/// fails requests closed).
pub struct EveryBackend(pub Vec<Arc<dyn Health>>);

#[async_trait]
impl Health for EveryBackend {
    async fn ping(&self) -> StoreResult<()> {
        for backend in &self.0 {
            backend.ping().await?;
        }
        Ok(())
    }
}
