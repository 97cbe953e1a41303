//! The verified-token cache: JWT access tokens whose signature and claims were checked before.
//!
//! Verifying an EdDSA signature costs ~50 µs, most of a `/v1/verify` answer; a client presents
//! the same access token on every request for its whole lifetime. The cache maps the exact token
//! string to the claims it verified to, so a token seen before skips signature verification
//! and claim parsing.
//!
//! The map is a [`BoundedMap`] (see there for why no cache crate); eviction only happens when
//! it is full: expired entries first, then arbitrary ones.
//!
//! # Security
//! - The key is the exact token string: a token that differs in any byte is a miss and is
//!   verified in full. Only tokens that passed verification *and* the session check are stored.
//! - The cache answers "is this signature good", never "is this session alive": the caller
//!   still looks the session up by `sid` on every request (unless `stateless`), so a revocation
//!   made on any instance takes effect on the very next request. Entries of a session found
//!   revoked, expired or missing are dropped then.
//! - An entry is never returned once `exp` plus the leeway has passed (and `iss`/`aud`/`nbf`/`exp`
//!   are re-checked by the caller on every hit), so it never outlives the token.
//! - Bounded by entry count; keys are hashed with SipHash under a per-process random key (std's
//!   `RandomState`), so nobody can aim tokens at one bucket. Failed tokens are never inserted.
//! - A hit skips the key lookup too. That is sound because a retired key keeps verifying until
//!   every token it signed has expired (key rotation), so no entry outlives its key; a future
//!   "withdraw this key now" must clear this cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_core::UnixTime;
use tessera_core::claims::AccessClaims;
use tessera_store::bounded::BoundedMap;

/// One verified token.
struct Entry {
    claims: Arc<AccessClaims>,
    /// The last second the token is accepted: `exp` plus the leeway.
    accept_until: UnixTime,
}

/// A bounded map from verified JWT strings to their claims. Capacity 0 turns it off.
pub(crate) struct TokenCache {
    entries: BoundedMap<Box<str>, Entry>,
    /// Tokens answered from the cache, ever: what shows the cache engaged.
    hits: AtomicU64,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (none when 0).
    pub(crate) fn new(capacity: u64) -> TokenCache {
        TokenCache {
            entries: BoundedMap::new(capacity),
            hits: AtomicU64::new(0),
        }
    }

    /// The claims `token` verified to before, if it is cached and still accepted at `now`.
    pub(crate) fn get(&self, token: &str, now: UnixTime) -> Option<Arc<AccessClaims>> {
        let found = self.entries.get(token, |entry| {
            (entry.accept_until >= now).then(|| Arc::clone(&entry.claims))
        });
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// How many lookups the cache has answered since the service started.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Remembers that `token` verified to `claims`, accepted until `accept_until` (Unix
    /// seconds: `exp` plus the leeway). Nothing is stored for a token no longer accepted at
    /// `now`.
    pub(crate) fn insert(
        &self,
        token: &str,
        claims: Arc<AccessClaims>,
        accept_until: UnixTime,
        now: UnixTime,
    ) {
        if accept_until < now {
            return;
        }
        let entry = Entry {
            claims,
            accept_until,
        };
        self.entries
            .insert(token.into(), entry, |entry| entry.accept_until >= now);
    }

    /// Forgets `token`.
    pub(crate) fn remove(&self, token: &str) {
        self.entries.remove(token);
    }

    /// How many tokens are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sid: &str) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "tessera".into(),
            aud: "tessera".into(),
            sub: "u1".into(),
            sid: sid.into(),
            name: "alice".into(),
            roles: vec![],
            perms: vec![],
            iat: 0,
            nbf: 0,
            exp: 600,
            jti: "j".into(),
            amr: tessera_core::assurance::Methods::PASSWORD,
            acr: None,
            auth_time: None,
            cnf: None,
        })
    }

    #[test]
    fn hits_only_the_exact_token() {
        let cache = TokenCache::new(10);
        cache.insert("aaa.bbb.ccc", claims("s1"), 630, 0);
        assert_eq!(cache.get("aaa.bbb.ccc", 0).unwrap().sid, "s1");
        assert!(cache.get("aaa.bbb.ccd", 0).is_none());
        assert!(cache.get("aaa.bbb.cc", 0).is_none());
        assert!(cache.get("aaa.bbb.ccc ", 0).is_none());
    }

    #[test]
    fn entries_are_dropped_at_exp_plus_leeway_and_on_removal() {
        let cache = TokenCache::new(10);
        cache.insert("t1", claims("s1"), 630, 0);
        assert!(cache.get("t1", 630).is_some());
        assert!(cache.get("t1", 631).is_none());
        assert_eq!(cache.len(), 0, "dropped when found expired");
        cache.insert("t2", claims("s2"), 630, 0);
        cache.remove("t2");
        assert!(cache.get("t2", 0).is_none());
        cache.insert("t3", claims("s3"), 600, 700);
        assert!(cache.get("t3", 0).is_none(), "already expired: not stored");
    }

    #[test]
    fn capacity_bounds_the_entries_expired_go_first_and_zero_disables() {
        let cache = TokenCache::new(100);
        for i in 0..50 {
            cache.insert(&format!("old-{i}"), claims("s"), 100, 0);
        }
        for i in 0..50 {
            cache.insert(&format!("new-{i}"), claims("s"), 630, 0);
        }
        // Full; at time 200 the old ones have expired and make room.
        cache.insert("newest", claims("s"), 630, 200);
        assert_eq!(cache.len(), 51);
        assert!((0..50).all(|i| cache.get(&format!("new-{i}"), 200).is_some()));
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), claims("s"), 630, 200);
            assert!(cache.len() <= 100);
        }
        assert!(cache.get("token-999", 200).is_some(), "the newest is kept");

        let off = TokenCache::new(0);
        off.insert("t", claims("s"), 630, 0);
        assert!(off.get("t", 0).is_none());
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn every_token_is_kept_while_under_capacity() {
        let cache = TokenCache::new(20_000);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), claims("s"), 630, 0);
        }
        let hits = (0..10_000)
            .filter(|i| cache.get(&format!("token-{i}"), 0).is_some())
            .count();
        assert_eq!(hits, 10_000);
    }
}
