//! A bounded cache of verified tokens, keyed by the exact token string.
//!
//! A hit skips the signature check only: the claims are checked again by `tessera_token`'s
//! [`ClaimRules::check`] at the time of the hit, so an expired token is refused as before.

use std::collections::HashMap;
use std::sync::Mutex;

use tessera_token::{ClaimRules, TokenError, UnixTime};

use crate::session::Session;

/// Verified tokens, each with the key generation it verified under.
pub(crate) struct VerifiedCache {
    state: Mutex<State>,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Hashed with a seeded foldhash rather than SipHash: a first-seen token is hashed twice
    /// (lookup, insertion) and SipHash over its ~450 bytes was a visible share of a verify.
    /// Flooding is no concern: only tokens whose signature verified are ever inserted.
    entries: HashMap<Box<str>, (u64, Session), foldhash::fast::RandomState>,
    /// The token bytes held: the bound.
    bytes: usize,
}

impl VerifiedCache {
    /// A cache holding at most `max_bytes` of token text (0: none at all).
    pub(crate) fn new(max_bytes: usize) -> VerifiedCache {
        VerifiedCache {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }

    /// The session of `token` if it verified under key `generation`, its claims checked again
    /// at `now`; `None` when not cached.
    pub(crate) fn get(
        &self,
        token: &str,
        generation: u64,
        rules: &ClaimRules,
        now: UnixTime,
    ) -> Option<Result<Session, TokenError>> {
        let session = self.with(|state| match state.entries.get(token) {
            // Security: an entry from other keys is no proof under the current ones (a key
            // may have been withdrawn).
            Some((held, session)) if *held == generation => Some(session.clone()),
            _ => None,
        })?;
        Some(rules.check(session.claims(), now).map(|()| session))
    }

    /// Remembers that `token` verified under key `generation`.
    pub(crate) fn insert(&self, token: &str, generation: u64, session: &Session) {
        if token.len() > self.max_bytes {
            return;
        }
        self.with(|state| {
            // Bounded: when full, start over (cheap, and a verify is only ~tens of µs).
            if state.bytes + token.len() > self.max_bytes {
                state.entries.clear();
                state.bytes = 0;
            }
            if state
                .entries
                .insert(token.into(), (generation, session.clone()))
                .is_none()
            {
                state.bytes += token.len();
            }
        });
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic while holding the lock cannot leave an entry half-written (each change is
        // one map operation); carry on with the state as it is.
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}
