//! The signing keys an instance holds in memory, loaded from and rotated through the store.
//!
//! # Security
//! - Private keys are encrypted before they reach the store and decrypted after they leave it
//!   ([`MasterKey`]), so every store backend keeps them encrypted at rest.
//! - A retired key keeps verifying, and stays in the JWKS, for `verify_window` seconds (the
//!   longest a token it signed can be accepted), then is dropped from memory and the JWKS.
//! - Several instances share one store: each re-reads the keys when it mints a token, on a
//!   change notice or every `key_poll_interval` (see `watch.rs`), and (at most once a second)
//!   when a token names a `kid` it does not hold, so a rotation made elsewhere is picked up
//!   without a restart.

use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tessera_core::UnixTime;
use tessera_core::at_rest::MasterKey;
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_store::Store;

use super::ServiceError;
use crate::clock::Clock;

/// A snapshot of the keys: the signer, the verifiers and the records they came from.
pub struct Keys {
    /// Signer and verifiers.
    pub set: KeySet,
    /// Records still needed for verification (current first), private parts decrypted.
    pub records: Vec<KeyRecord>,
}

/// What one read of the store produced, and the keys built from it for some time.
struct Snapshot {
    /// `(kid, retired_at)` of every stored key, to tell whether the store changed.
    stored: Vec<(String, Option<UnixTime>)>,
    /// Decrypted records that were current or inside their verify window when read.
    usable: Vec<KeyRecord>,
    /// The keys in force.
    keys: Arc<Keys>,
    /// When the next retired key in `keys` leaves its verify window.
    next_drop: Option<UnixTime>,
}

/// The live key snapshot, swapped whole on rotation.
pub struct KeyRing {
    state: RwLock<Arc<Snapshot>>,
    /// How long a retired key keeps verifying: the longest lifetime of a token it signed.
    verify_window: i64,
    master: MasterKey,
    clock: Arc<dyn Clock>,
}

impl KeyRing {
    /// The master key, which also seals TOTP secrets and login tickets.
    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// Loads the keys from the store, creating a key for `algorithm` when there is no current
    /// key of that algorithm (first start, or the configured algorithm changed).
    ///
    /// Fails when any stored key cannot be decrypted with `master` (another master key, an
    /// altered row, or a key stored unencrypted), naming the key.
    pub async fn load(
        store: &dyn Store,
        algorithm: Algorithm,
        verify_window: i64,
        master: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<KeyRing, ServiceError> {
        let now = clock.now();
        let mut stored = store.signing_keys().await?;
        // Every stored key must open, not only the ones still needed: a wrong master key is
        // reported at start-up, not when an old key would have been needed.
        for record in &stored {
            master.open(record).map_err(unusable)?;
        }
        let needs_new = match stored.iter().rev().find(|k| k.retired_at.is_none()) {
            Some(current) => current.algorithm != algorithm,
            None => true,
        };
        if needs_new {
            let key = KeyRecord::generate(algorithm, now)?;
            store
                .add_signing_key(&master.seal(&key).map_err(unusable)?, now)
                .await?;
            stored = store.signing_keys().await?;
        }
        let snapshot = snapshot(&master, stored, verify_window, now)?;
        Ok(KeyRing {
            state: RwLock::new(Arc::new(snapshot)),
            verify_window,
            master,
            clock,
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, snapshot: Snapshot) {
        match self.state.write() {
            Ok(mut guard) => *guard = Arc::new(snapshot),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(snapshot),
        }
    }

    /// Replaces `seen` only if no one replaced it meanwhile (a concurrent reload wins).
    fn replace_if_unchanged(&self, seen: &Arc<Snapshot>, snapshot: Snapshot) {
        let mut guard = match self.state.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if Arc::ptr_eq(&guard, seen) {
            *guard = Arc::new(snapshot);
        }
    }

    /// The keys in force now. Retired keys whose verify window has ended are dropped here,
    /// without a store read.
    pub fn keys(&self) -> Arc<Keys> {
        let now = self.clock.now();
        let current = self.snapshot();
        if current.next_drop.is_none_or(|at| at > now) {
            return Arc::clone(&current.keys);
        }
        match build(current.usable.clone(), self.verify_window, now) {
            Ok((keys, next_drop)) => {
                let keys = Arc::new(keys);
                self.replace_if_unchanged(
                    &current,
                    Snapshot {
                        stored: current.stored.clone(),
                        usable: current.usable.clone(),
                        keys: Arc::clone(&keys),
                        next_drop,
                    },
                );
                keys
            }
            Err(error) => {
                // Cannot happen (the same records built before); keep what we had.
                tracing::error!(%error, "rebuilding the key set failed");
                Arc::clone(&current.keys)
            }
        }
    }

    /// Creates a new current key; the previous ones keep verifying until their tokens expire.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        algorithm: Algorithm,
    ) -> Result<KeyRecord, ServiceError> {
        let now = self.clock.now();
        let key = KeyRecord::generate(algorithm, now)?;
        store
            .add_signing_key(&self.master.seal(&key).map_err(unusable)?, now)
            .await?;
        self.reload(store).await?;
        Ok(key)
    }

    /// Re-reads the keys from the store, unconditionally.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), ServiceError> {
        let stored = store.signing_keys().await?;
        let snapshot = snapshot(&self.master, stored, self.verify_window, self.clock.now())?;
        self.replace(snapshot);
        Ok(())
    }

    /// Re-reads the keys from the store and rebuilds them if the store's list changed
    /// (a rotation by another instance or by `tessera key rotate`). Returns whether it did.
    pub async fn sync(&self, store: &dyn Store) -> Result<bool, ServiceError> {
        let stored = store.signing_keys().await?;
        if fingerprint(&stored) == self.snapshot().stored {
            return Ok(false);
        }
        let snapshot = snapshot(&self.master, stored, self.verify_window, self.clock.now())?;
        self.replace(snapshot);
        Ok(true)
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

fn unusable(error: tessera_core::at_rest::AtRestError) -> ServiceError {
    ServiceError::SigningKeys(error.to_string())
}

fn fingerprint(stored: &[KeyRecord]) -> Vec<(String, Option<UnixTime>)> {
    stored
        .iter()
        .map(|k| (k.kid.clone(), k.retired_at))
        .collect()
}

/// Decrypts the keys still usable at `now` and builds the snapshot.
fn snapshot(
    master: &MasterKey,
    stored: Vec<KeyRecord>,
    verify_window: i64,
    now: UnixTime,
) -> Result<Snapshot, ServiceError> {
    let usable = stored
        .iter()
        .filter(|k| in_window(k, verify_window, now))
        .map(|k| master.open(k).map_err(unusable))
        .collect::<Result<Vec<_>, _>>()?;
    let (keys, next_drop) = build(usable.clone(), verify_window, now)?;
    Ok(Snapshot {
        stored: fingerprint(&stored),
        usable,
        keys: Arc::new(keys),
        next_drop,
    })
}

/// Current, or retired less than `verify_window` seconds ago.
fn in_window(key: &KeyRecord, verify_window: i64, now: UnixTime) -> bool {
    key.retired_at
        .is_none_or(|at| at.saturating_add(verify_window) > now)
}

/// Builds the key set from decrypted records (oldest first): the newest unretired key signs,
/// it and every retired key still in its window verify.
fn build(
    all: Vec<KeyRecord>,
    verify_window: i64,
    now: UnixTime,
) -> Result<(Keys, Option<UnixTime>), ServiceError> {
    let current = all
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none())
        .cloned()
        .ok_or_else(|| ServiceError::internal("no current signing key"))?;
    let mut records = vec![current.clone()];
    records.extend(
        all.into_iter()
            .rev()
            .filter(|k| k.kid != current.kid)
            .filter(|k| k.retired_at.is_some() && in_window(k, verify_window, now)),
    );
    let next_drop = records
        .iter()
        .filter_map(|k| k.retired_at)
        .map(|at| at.saturating_add(verify_window))
        .min();
    let set = KeySet::new(&current, &records)?;
    Ok((Keys { set, records }, next_drop))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn key(created_at: UnixTime, retired_at: Option<UnixTime>) -> KeyRecord {
        KeyRecord {
            retired_at,
            ..KeyRecord::generate(Algorithm::EdDsa, created_at).unwrap()
        }
    }

    #[test]
    fn retired_keys_verify_inside_their_window_only() {
        let old = key(0, Some(100));
        let recent = key(100, Some(500));
        let current = key(500, None);
        let all = vec![old.clone(), recent.clone(), current.clone()];
        // At 700 the window (630 s) of the key retired at 100 ends at 730: all three verify.
        let (keys, next_drop) = build(all.clone(), 630, 700).unwrap();
        let kids: Vec<&str> = keys.records.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [&current.kid, &recent.kid, &old.kid]);
        assert_eq!(next_drop, Some(730));
        assert_eq!(keys.set.current().kid(), current.kid);
        // At 730 it is gone; the next one leaves at 1130.
        let (keys, next_drop) = build(all.clone(), 630, 730).unwrap();
        assert!(keys.set.verifier(&old.kid).is_none());
        assert!(keys.set.verifier(&recent.kid).is_some());
        assert_eq!(next_drop, Some(1130));
        // Later only the current key is left, and nothing is due to leave.
        let (keys, next_drop) = build(all, 630, 1130).unwrap();
        assert_eq!(keys.records.len(), 1);
        assert_eq!(next_drop, None);
    }

    #[test]
    fn a_store_without_a_current_key_is_an_error() {
        assert!(build(vec![key(0, Some(1))], 630, 2).is_err());
    }
}
