//! The session-record cache of the verify path.
//!
//! Every `/v1/verify` looks its session up (by the opaque token's hash, or by a JWT's `sid`)
//! so that a revocation is seen at once. On SQLite each lookup is a read transaction: ~3 µs and
//! two `fcntl` system calls, more than a third of a verify answer (`docs/performance.md`). The
//! cache keeps records read before, and serves one only while the shared change counters
//! ([`crate::changes`]) of its session, its user and `all` are what they were when it was
//! read: any write by any process to that session or user (revocation, logout, refresh,
//! activity, role change, disabling, deletion) bumps one of them before it commits.
//!
//! Only records that exist are kept (a miss always asks the database), and the caller still
//! checks expiry and revocation times on every answer, cached or not.

use std::borrow::Borrow;
use std::hash::Hash;

use tessera_core::opaque::TokenHash;
use tessera_store::SessionRecord;
use tessera_store::bounded::BoundedMap;

use crate::changes::{ChangeCounters, Ticket, Version};

struct Entry {
    record: SessionRecord,
    version: Version,
}

/// Records by access-token hash and by session id. Capacity 0 turns it off.
pub(crate) struct RecordCache {
    /// Records found by the hash of their opaque access token.
    pub(crate) by_hash: Records<TokenHash>,
    /// Records found by their session id (a JWT's `sid`).
    pub(crate) by_id: Records<Box<str>>,
}

impl RecordCache {
    /// A cache of at most `capacity` records per key kind (none when 0).
    pub(crate) fn new(capacity: u64) -> RecordCache {
        RecordCache {
            by_hash: Records::new(capacity),
            by_id: Records::new(capacity),
        }
    }
}

/// The records found by one kind of key.
pub(crate) struct Records<K> {
    map: BoundedMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Records<K> {
    fn new(capacity: u64) -> Records<K> {
        Records {
            map: BoundedMap::new(capacity),
        }
    }

    /// A ticket to cache the next read, when the cache is on and no write is in flight.
    pub(crate) fn ticket(&self, counters: &ChangeCounters) -> Option<Ticket> {
        if self.map.is_off() {
            return None;
        }
        counters.ticket()
    }

    /// The record found by `key`, if cached and current.
    pub(crate) fn get<Q>(&self, counters: &ChangeCounters, key: &Q) -> Option<SessionRecord>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key, |entry| {
            is_current(counters, entry).then(|| entry.record.clone())
        })
    }

    /// Keeps `record`, found by `key` under `ticket`, unless a write began since.
    pub(crate) fn keep(
        &self,
        counters: &ChangeCounters,
        ticket: Ticket,
        key: K,
        record: &SessionRecord,
    ) {
        let session = &record.session;
        let Some(version) = counters.version(ticket, &session.id, &session.user_id) else {
            return;
        };
        let entry = Entry {
            record: record.clone(),
            version,
        };
        self.map.insert(key, entry, |e| is_current(counters, e));
    }
}

/// True while nothing the entry's record depends on has changed since it was read.
fn is_current(counters: &ChangeCounters, entry: &Entry) -> bool {
    let session = &entry.record.session;
    counters.is_current(&entry.version, &session.id, &session.user_id)
}
