//! The verified-token cache: JWT access tokens whose signature and claims were checked before.
//!
//! Verifying an EdDSA signature costs ~50 µs, most of a `/v1/verify` answer; a client presents
//! the same access token on every request for its whole lifetime. The cache maps the exact token
//! string to the claims it verified to, so a token seen before skips signature verification
//! and claim parsing.
//!
//! # Security
//! - The key is the exact token string: a token that differs in any byte is a miss and is
//!   verified in full. Only tokens that passed verification *and* the session check are stored.
//! - The cache answers "is this signature good", never "is this session alive": the caller
//!   still looks the session up by `sid` on every request (unless `stateless`), so a revocation
//!   made on any instance takes effect on the very next request. Entries of a session found
//!   revoked, expired or missing are dropped then.
//! - `iss`/`aud`/`nbf`/`exp` are re-checked against the clock on every hit, and an entry is
//!   evicted once `exp` plus the leeway has passed, so it never outlives the token.
//! - Bounded by entry count; keys are hashed with SipHash (std's `RandomState`), so an attacker
//!   cannot aim tokens at one bucket. Failed tokens are never inserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use tessera_core::UnixTime;
use tessera_core::claims::AccessClaims;

/// One verified token.
#[derive(Clone)]
struct Entry {
    claims: Arc<AccessClaims>,
    /// How long the entry may live: until the token stops being accepted.
    ttl: Duration,
}

/// Evicts each entry when its token expires.
struct UntilExpiry;

impl Expiry<String, Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A bounded map from verified JWT strings to their claims. Capacity 0 turns it off.
pub(crate) struct TokenCache {
    entries: Option<Cache<String, Entry>>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (none when 0).
    pub(crate) fn new(capacity: u64) -> TokenCache {
        let entries = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build()
        });
        TokenCache { entries }
    }

    /// The claims `token` verified to before, if it is cached.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<AccessClaims>> {
        self.entries
            .as_ref()?
            .get(token)
            .map(|entry| Arc::clone(&entry.claims))
    }

    /// Remembers that `token` verified to `claims`, until `accept_until` (Unix seconds: `exp`
    /// plus the leeway) as read at `now`.
    pub(crate) fn insert(
        &self,
        token: &str,
        claims: Arc<AccessClaims>,
        accept_until: UnixTime,
        now: UnixTime,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let Ok(secs) = u64::try_from(accept_until.saturating_sub(now)) else {
            return;
        };
        if secs == 0 {
            return;
        }
        let ttl = Duration::from_secs(secs);
        entries.insert(token.to_owned(), Entry { claims, ttl });
    }

    /// Forgets `token`.
    pub(crate) fn remove(&self, token: &str) {
        if let Some(entries) = &self.entries {
            entries.invalidate(token);
        }
    }

    /// How many tokens are held (approximate until pending maintenance has run).
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.entry_count()
        })
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
        })
    }

    #[test]
    fn hits_only_the_exact_token() {
        let cache = TokenCache::new(10);
        cache.insert("aaa.bbb.ccc", claims("s1"), 630, 0);
        assert_eq!(cache.get("aaa.bbb.ccc").unwrap().sid, "s1");
        assert!(cache.get("aaa.bbb.ccd").is_none());
        assert!(cache.get("aaa.bbb.cc").is_none());
        assert!(cache.get("aaa.bbb.ccc ").is_none());
    }

    #[test]
    fn removed_and_already_expired_tokens_are_not_held() {
        let cache = TokenCache::new(10);
        cache.insert("t1", claims("s1"), 630, 0);
        cache.remove("t1");
        assert!(cache.get("t1").is_none());
        cache.insert("t2", claims("s2"), 630, 630);
        cache.insert("t3", claims("s3"), 600, 700);
        assert!(cache.get("t2").is_none());
        assert!(cache.get("t3").is_none());
    }

    #[test]
    fn every_token_is_kept_while_under_capacity() {
        let cache = TokenCache::new(20_000);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), claims("s"), 630, 0);
        }
        let hits = (0..10_000)
            .filter(|i| cache.get(&format!("token-{i}")).is_some())
            .count();
        assert_eq!(hits, 10_000);
    }

    #[test]
    fn capacity_bounds_the_entries_and_zero_disables() {
        let cache = TokenCache::new(100);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), claims("s"), 630, 0);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        let off = TokenCache::new(0);
        off.insert("t", claims("s"), 630, 0);
        assert!(off.get("t").is_none());
        assert_eq!(off.len(), 0);
    }
}
