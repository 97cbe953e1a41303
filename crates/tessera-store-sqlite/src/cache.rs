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
    by_hash: BoundedMap<TokenHash, Entry>,
    by_id: BoundedMap<Box<str>, Entry>,
}

impl RecordCache {
    /// A cache of at most `capacity` records per key kind (none when 0).
    pub(crate) fn new(capacity: u64) -> RecordCache {
        RecordCache {
            by_hash: BoundedMap::new(capacity),
            by_id: BoundedMap::new(capacity),
        }
    }

    /// A ticket to cache the next read, when the cache is on and no write is in flight.
    pub(crate) fn ticket(&self, counters: &ChangeCounters) -> Option<Ticket> {
        if self.by_hash.is_off() {
            return None;
        }
        counters.ticket()
    }

    /// The record of the session whose access token hashes to `hash`, if cached and current.
    pub(crate) fn by_hash(
        &self,
        counters: &ChangeCounters,
        hash: &TokenHash,
    ) -> Option<SessionRecord> {
        self.by_hash.get(hash, |entry| current(counters, entry))
    }

    /// The record of session `id`, if cached and current.
    pub(crate) fn by_id(&self, counters: &ChangeCounters, id: &str) -> Option<SessionRecord> {
        self.by_id.get(id, |entry| current(counters, entry))
    }

    /// Keeps `record`, found by `hash` under `ticket`, unless a write began since.
    pub(crate) fn keep_by_hash(
        &self,
        counters: &ChangeCounters,
        ticket: Ticket,
        hash: TokenHash,
        record: &SessionRecord,
    ) {
        if let Some(entry) = entry(counters, ticket, record) {
            self.by_hash
                .insert(hash, entry, |e| is_current(counters, e));
        }
    }

    /// Keeps `record`, found by its id under `ticket`, unless a write began since.
    pub(crate) fn keep_by_id(
        &self,
        counters: &ChangeCounters,
        ticket: Ticket,
        record: &SessionRecord,
    ) {
        if let Some(entry) = entry(counters, ticket, record) {
            self.by_id
                .insert(record.session.id.as_str().into(), entry, |e| {
                    is_current(counters, e)
                });
        }
    }
}

fn entry(counters: &ChangeCounters, ticket: Ticket, record: &SessionRecord) -> Option<Entry> {
    let version = counters.version(ticket, &record.session.id, &record.session.user_id)?;
    Some(Entry {
        record: record.clone(),
        version,
    })
}

/// True while nothing the entry's record depends on has changed since it was read.
fn is_current(counters: &ChangeCounters, entry: &Entry) -> bool {
    counters.current(&entry.record.session.id, &entry.record.session.user_id) == entry.version
}

/// A copy of the entry's record if it is current.
fn current(counters: &ChangeCounters, entry: &Entry) -> Option<SessionRecord> {
    is_current(counters, entry).then(|| entry.record.clone())
}
