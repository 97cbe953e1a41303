//! The signing keys an instance holds in memory, loaded from and rotated through the store.

use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tessera_core::UnixTime;
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_store::Store;

use super::ServiceError;

/// A snapshot of the keys: the signer, the verifiers and the records they came from.
pub struct Keys {
    /// Signer and verifiers.
    pub set: KeySet,
    /// Records still needed for verification (current first).
    pub records: Vec<KeyRecord>,
}

/// The live key snapshot, swapped whole on rotation.
pub struct KeyRing {
    state: RwLock<Arc<Keys>>,
    /// How long a retired key keeps verifying: the longest lifetime of a token it signed.
    verify_window: i64,
}

impl KeyRing {
    /// Loads the keys from the store, creating a key for `algorithm` when there is no current
    /// key of that algorithm (first start, or the configured algorithm changed).
    pub async fn load(
        store: &dyn Store,
        algorithm: Algorithm,
        verify_window: i64,
        now: UnixTime,
    ) -> Result<KeyRing, ServiceError> {
        let mut records = store.signing_keys().await?;
        let needs_new = match records.iter().rev().find(|k| k.retired_at.is_none()) {
            Some(current) => current.algorithm != algorithm,
            None => true,
        };
        if needs_new {
            let key = KeyRecord::generate(algorithm, now)?;
            store.add_signing_key(&key, now).await?;
            records = store.signing_keys().await?;
        }
        let keys = build(records, verify_window, now)?;
        Ok(KeyRing {
            state: RwLock::new(Arc::new(keys)),
            verify_window,
        })
    }

    /// The current snapshot.
    pub fn keys(&self) -> Arc<Keys> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Creates a new current key; the previous ones keep verifying until their tokens expire.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        algorithm: Algorithm,
        now: UnixTime,
    ) -> Result<KeyRecord, ServiceError> {
        let key = KeyRecord::generate(algorithm, now)?;
        store.add_signing_key(&key, now).await?;
        self.reload(store, now).await?;
        Ok(key)
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, store: &dyn Store, now: UnixTime) -> Result<(), ServiceError> {
        let keys = build(store.signing_keys().await?, self.verify_window, now)?;
        match self.state.write() {
            Ok(mut guard) => *guard = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(())
    }

    /// True when the current key signs and its verifier accepts the signature: the keys are
    /// loaded and usable. Cheap (one signature), for readiness probes.
    pub fn self_check(&self) -> bool {
        let keys = self.keys();
        let signer = keys.set.current();
        let probe = b"tessera readiness probe";
        match (signer.sign(probe), keys.set.verifier(signer.kid())) {
            (Ok(signature), Some(verifier)) => verifier.verify(probe, &signature),
            _ => false,
        }
    }

    /// The JWKS document: public keys of the current key and of retired keys still verifying.
    /// HS256 keys are secret and never listed.
    pub fn jwks(&self) -> Value {
        let keys = self.keys();
        let list: Vec<Value> = keys
            .records
            .iter()
            .filter_map(KeyRecord::public_jwk)
            .collect();
        json!({ "keys": list })
    }
}

fn build(all: Vec<KeyRecord>, verify_window: i64, now: UnixTime) -> Result<Keys, ServiceError> {
    let current = all
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none())
        .cloned()
        .ok_or_else(|| ServiceError::Internal("no current signing key".into()))?;
    let mut records = vec![current.clone()];
    records.extend(
        all.into_iter()
            .rev()
            .filter(|k| k.kid != current.kid)
            .filter(|k| {
                k.retired_at
                    .is_some_and(|at| at.saturating_add(verify_window) > now)
            }),
    );
    let set = KeySet::new(&current, &records)?;
    Ok(Keys { set, records })
}
