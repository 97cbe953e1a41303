//! A bounded in-memory map for the caches on the verify path.
//!
//! A mutex around a `HashMap`, written here rather than taken from a cache crate: a hit must
//! cost next to nothing (one hash and one probe) and nothing else is needed. moka, tried
//! first for the verified-token cache, keeps an access-order queue, a frequency sketch and
//! expiry timers up to date behind every read, which measured ~1.5 µs per hit and a p99 of
//! 20–40 µs (`docs/performance.md`). Eviction happens only when the map is full: entries the
//! caller no longer wants first, then arbitrary ones.
//!
//! Keys are hashed with foldhash under a per-process random seed, so nobody can aim keys at one
//! bucket, and the arbitrary victims differ from process to process. Not SipHash (std's
//! default): a tenth of its cost on the 32-byte token hashes of the verify path, and these maps
//! only ever hold what the caller put there (records and tokens that exist), never keys a
//! client can pick by the million.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A map holding at most `capacity` entries; capacity 0 holds nothing.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: Mutex<HashMap<K, V, foldhash::quality::RandomState>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// A map holding at most `capacity` entries (none when 0).
    pub fn new(capacity: u64) -> BoundedMap<K, V> {
        BoundedMap {
            entries: Mutex::new(HashMap::default()),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    /// True when the map holds nothing, ever (capacity 0).
    pub fn is_off(&self) -> bool {
        self.capacity == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, V, foldhash::quality::RandomState>> {
        // Every operation is a single map call or a retain, so a panic while the lock was held
        // cannot leave an entry half-written: a poisoned map is still a valid map.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `read` makes of the entry under `key`; an entry for which `read` returns `None`
    /// is removed.
    pub fn get<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.is_off() {
            return None;
        }
        let mut entries = self.lock();
        let found = read(entries.get(key)?);
        if found.is_none() {
            entries.remove(key);
        }
        found
    }

    /// Stores `value` under `key`. When the map is full, entries for which `keep` returns
    /// false go first, then arbitrary ones, a tenth of the capacity at once so the scan runs
    /// once per many insertions rather than on each.
    pub fn insert(&self, key: K, value: V, mut keep: impl FnMut(&V) -> bool) {
        if self.is_off() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, value| keep(value));
            let excess = entries
                .len()
                .saturating_sub(self.capacity - self.capacity / 10 - 1);
            let victims: Vec<K> = entries.keys().take(excess).cloned().collect();
            for victim in victims {
                entries.remove(&victim);
            }
        }
        entries.insert(key, value);
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.is_off() {
            self.lock().remove(key);
        }
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::BoundedMap;

    #[test]
    fn a_full_map_drops_unwanted_entries_first_then_a_tenth() {
        let map = BoundedMap::new(100);
        for i in 0..100u32 {
            map.insert(i, i, |_| true);
        }
        assert_eq!(map.len(), 100);
        // Full: the odd values are no longer wanted, so they go and nothing else does.
        map.insert(1000, 1000, |v| v % 2 == 0);
        assert_eq!(map.len(), 51);
        assert_eq!(map.get(&1, |v| Some(*v)), None);
        assert_eq!(map.get(&2, |v| Some(*v)), Some(2));
        // Full of wanted entries: room for a tenth is made at once, never past the capacity.
        for i in 2000..2100u32 {
            map.insert(i, i, |_| true);
        }
        assert!(map.len() <= 100, "{}", map.len());
        assert!(map.len() >= 90, "{}", map.len());
        assert_eq!(map.get(&2099, |v| Some(*v)), Some(2099));
    }

    #[test]
    fn a_rejected_entry_is_removed_on_read() {
        let map = BoundedMap::new(10);
        map.insert("a".to_owned(), 1, |_| true);
        assert_eq!(map.get("a", |_| None::<u32>), None);
        assert!(map.is_empty());
        map.insert("b".to_owned(), 2, |_| true);
        map.remove("b");
        assert!(map.is_empty());
    }

    #[test]
    fn capacity_zero_holds_nothing() {
        let map = BoundedMap::new(0);
        map.insert(1u8, 1u8, |_| true);
        assert!(map.is_off());
        assert_eq!(map.get(&1, |v| Some(*v)), None);
        assert!(map.is_empty());
    }
}
