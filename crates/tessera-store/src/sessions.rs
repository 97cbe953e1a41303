//! Assembling a [`Store`] from several backends: [`ByAbility::split`] puts sessions and counters
//! in a session backend (Redis) and everything else in a durable store.
//!
//! The assembly is only a choice of backend per ability: [`ByAbility`] forwards each operation to
//! the backend of its ability (written by the `abilities!` list in the crate root). The one
//! operation that spans abilities, deleting a user, is written beside its method there.
//!
//! # Why session lookups do not go back to the durable store
//!
//! A session backend is given the durable store's [`crate::UserStore`] but reads it only when a
//! session is created (to confirm the user snapshot it stores with the session) and for
//! sessions written by an older version without a snapshot. A lookup — every `/v1/verify` —
//! reads the session backend alone: one store, and the durable store (PostgreSQL, which does
//! not scale out) stays off the per-request path. Why the snapshot is never stale for a live
//! session is written on [`SessionStore`]; deleting a user sweeps its sessions before and after
//! the user goes (the `delete_user` clause in the crate root).

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
