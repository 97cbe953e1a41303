//! Following tessera's revocation feed: the sessions revoked since the verifier started, kept
//! until their tokens have expired.
//!
//! The verifier asks `GET {tessera}/v1/revocations` in a loop. tessera holds each request until
//! something is revoked or `wait` passes, so a revocation reaches the verifier within a round
//! trip, and every answer — news or not — proves the feed is alive. A verifier that has not
//! had an answer for `max_staleness` no longer knows what was revoked: it refuses every token
//! (503) or asks tessera about each one, as [`WhenStale`] says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tessera_token::UnixTime;

use crate::body::read_bounded;
use crate::clock::Clock;

/// What a verifier does with tokens while its view of revocations is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenStale {
    /// Refuse every token with 503 `not_ready` until the feed answers again: no token is
    /// accepted that tessera may have revoked. The default.
    #[default]
    FailClosed,
    /// Ask tessera about each token (`POST /v1/introspect`; needs
    /// [`VerifierBuilder::introspection`](crate::VerifierBuilder::introspection)): slower,
    /// but available as long as tessera answers at all.
    Introspect,
}

/// How the verifier follows the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedOptions {
    /// Longest time without an answer from the feed before the verifier stops trusting what
    /// it holds (default 30 s). Must exceed `wait`.
    pub max_staleness: Duration,
    /// How long tessera may hold each request when nothing is new (default 10 s, at most 25).
    pub wait: Duration,
    /// What happens to tokens while the feed is stale.
    pub when_stale: WhenStale,
    /// Most revoked sessions held at once (default 1,000,000, ~100 MB at worst). A feed that
    /// would exceed it leaves the verifier stale (a list it cannot hold whole is not trusted).
    pub max_entries: usize,
    /// The timeout of one request, on top of `wait` (default 5 s).
    pub timeout: Duration,
}

impl Default for FeedOptions {
    fn default() -> FeedOptions {
        FeedOptions {
            max_staleness: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            when_stale: WhenStale::FailClosed,
            max_entries: 1_000_000,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why the revocation feed could not be read when the verifier was built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The request failed (connection, TLS, timeout).
    #[error("could not reach the revocation feed at {url}")]
    Request {
        /// The feed URL.
        url: String,
        /// The transport's error.
        #[source]
        source: reqwest::Error,
    },
    /// tessera answered with another status than 200.
    #[error("the revocation feed at {url} answered with status {status}")]
    Status {
        /// The feed URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer is not the feed's JSON.
    #[error("the revocation feed at {url} sent an answer that is not the feed's")]
    Invalid {
        /// The feed URL.
        url: String,
    },
    /// The answer holds more revoked sessions than `max_entries`.
    #[error("the revocation feed at {url} lists more sessions than max_entries allows")]
    TooMany {
        /// The feed URL.
        url: String,
    },
}

/// One answer of the feed.
#[derive(Debug, Deserialize)]
struct Batch {
    reset: bool,
    cursor: String,
    more: bool,
    revoked: Vec<Revoked>,
}

#[derive(Debug, Deserialize)]
struct Revoked {
    sid: String,
    until: UnixTime,
}

/// The revoked sessions a verifier holds, and whether it can trust them.
pub(crate) struct Denylist {
    revoked: RwLock<HashMap<String, UnixTime>>,
    /// Milliseconds from `started` to the last answer of the feed.
    heard_at: AtomicU64,
    started: Instant,
    /// The feed listed more than `max_entries`: the list is not whole.
    overflowed: AtomicBool,
    max_staleness: Duration,
    max_entries: usize,
}

impl Denylist {
    fn new(options: &FeedOptions) -> Denylist {
        Denylist {
            revoked: RwLock::new(HashMap::new()),
            heard_at: AtomicU64::new(0),
            started: Instant::now(),
            overflowed: AtomicBool::new(false),
            max_staleness: options.max_staleness,
            max_entries: options.max_entries,
        }
    }

    /// True when the feed answered within `max_staleness` and the list is whole.
    pub(crate) fn fresh(&self) -> bool {
        let heard = Duration::from_millis(self.heard_at.load(Ordering::Acquire));
        !self.overflowed.load(Ordering::Acquire)
            && self.started.elapsed().saturating_sub(heard) <= self.max_staleness
    }

    /// True when the session `sid` was revoked (and its tokens may not have expired yet).
    pub(crate) fn is_revoked(&self, sid: &str) -> bool {
        match self.revoked.read() {
            Ok(revoked) => revoked.contains_key(sid),
            // A panic mid-update: the list may be partial, so refuse rather than guess.
            Err(_) => true,
        }
    }

    /// How many revoked sessions are held.
    pub(crate) fn len(&self) -> usize {
        self.revoked.read().map_or(0, |revoked| revoked.len())
    }

    fn heard(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_at.store(elapsed, Ordering::Release);
    }

    /// Takes in one answer; false when it would hold more than `max_entries`.
    fn apply(&self, batch: Vec<Revoked>, now: UnixTime) -> bool {
        let Ok(mut revoked) = self.revoked.write() else {
            return false;
        };
        // A reset (a cursor tessera did not know) is taken in like any answer, adding rather
        // than replacing: an entry held only ever refuses a session that was revoked, so
        // keeping it is always safe, and an instance behind the one that gave the cursor may
        // not have every entry yet.
        // Entries whose tokens have all expired are of no use any more.
        revoked.retain(|_, until| *until >= now);
        for entry in batch {
            if entry.until >= now {
                revoked.insert(entry.sid, entry.until);
            }
        }
        let whole = revoked.len() <= self.max_entries;
        self.overflowed.store(!whole, Ordering::Release);
        whole
    }
}

/// The feed's client: reads it once at start, then follows it in a task of its own.
pub(crate) struct FeedClient {
    url: String,
    http: reqwest::Client,
    options: FeedOptions,
    clock: Arc<dyn Clock>,
    cursor: Option<String>,
}

impl FeedClient {
    /// Reads the whole feed once (failing if it cannot), then follows it in a spawned task
    /// that ends when the returned list is dropped.
    pub(crate) async fn start(
        tessera_url: &str,
        http: reqwest::Client,
        options: FeedOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Denylist>, FeedError> {
        let denylist = Arc::new(Denylist::new(&options));
        let mut client = FeedClient {
            url: format!("{}/v1/revocations", tessera_url.trim_end_matches('/')),
            http,
            options,
            clock,
            cursor: None,
        };
        // Everything revoked so far, every page of it, before the first token is accepted.
        while client.poll(&denylist, Duration::ZERO).await? {}
        tokio::spawn(client.follow(Arc::downgrade(&denylist)));
        Ok(denylist)
    }

    /// Asks once; returns whether more is waiting.
    async fn poll(&mut self, denylist: &Denylist, wait: Duration) -> Result<bool, FeedError> {
        let url = &self.url;
        let wait = wait.min(MAX_WAIT);
        // The cursor is checked to be URL-safe when it arrives, so it goes in as it is.
        let target = match &self.cursor {
            Some(cursor) => format!("{url}?wait={}&after={cursor}", wait.as_secs()),
            None => format!("{url}?wait={}", wait.as_secs()),
        };
        let request = self.http.get(target).timeout(wait + self.options.timeout);
        let response = request.send().await.map_err(|source| FeedError::Request {
            url: url.clone(),
            source,
        })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FeedError::Status {
                url: url.clone(),
                status: response.status().as_u16(),
            });
        }
        let body = read_bounded(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|source| FeedError::Request {
                url: url.clone(),
                source,
            })?;
        let batch: Batch = body
            .and_then(|body| serde_json::from_slice(&body).ok())
            .filter(|batch: &Batch| {
                (1..=64).contains(&batch.cursor.len())
                    && batch.cursor.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .ok_or_else(|| FeedError::Invalid { url: url.clone() })?;
        if batch.reset && self.cursor.is_some() {
            tracing::info!("revocation feed: tessera did not know the cursor; took the whole log");
        }
        if !denylist.apply(batch.revoked, self.clock.now()) {
            return Err(FeedError::TooMany { url: url.clone() });
        }
        self.cursor = Some(batch.cursor);
        denylist.heard();
        Ok(batch.more)
    }

    async fn follow(mut self, denylist: Weak<Denylist>) {
        let mut backoff = RETRY_MIN;
        loop {
            let Some(list) = denylist.upgrade() else {
                return; // the verifier is gone
            };
            let wait = if list.fresh() || self.cursor.is_none() {
                self.options.wait
            } else {
                // Stale: no holding, catch up as fast as tessera answers.
                Duration::ZERO
            };
            match self.poll(&list, wait).await {
                Ok(_) => backoff = RETRY_MIN,
                Err(error) => {
                    tracing::warn!(%error, "revocation feed: no answer; retrying");
                    drop(list);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// The largest feed answer read: a page of 1000 entries is ~100 KB.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The longest wait tessera grants one feed request.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(25);

/// The first retry after a failed request, doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn revoked(sid: &str, until: UnixTime) -> Revoked {
        Revoked {
            sid: sid.to_owned(),
            until,
        }
    }

    #[test]
    fn every_answer_adds_and_entries_are_kept_until_their_tokens_expire() {
        let list = Denylist::new(&FeedOptions::default());
        assert!(list.apply(vec![revoked("a", 100), revoked("b", 200)], 50));
        assert!(list.is_revoked("a") && list.is_revoked("b"));
        assert!(!list.is_revoked("c"));
        // Later answers add; entries past `until` go.
        assert!(list.apply(vec![revoked("c", 300)], 150));
        assert!(!list.is_revoked("a"));
        assert!(list.is_revoked("b") && list.is_revoked("c"));
        // An entry already useless is not taken.
        assert!(list.apply(vec![revoked("d", 10)], 150));
        assert!(!list.is_revoked("d"));
        // Any answer (a reset too) adds: what was held stays until its own `until`.
        assert!(list.apply(vec![revoked("e", 400)], 150));
        assert!(list.is_revoked("b") && list.is_revoked("c") && list.is_revoked("e"));
    }

    #[test]
    fn a_list_that_outgrows_its_bound_is_not_trusted() {
        let options = FeedOptions {
            max_entries: 2,
            ..FeedOptions::default()
        };
        let list = Denylist::new(&options);
        list.heard();
        assert!(list.fresh());
        assert!(!list.apply(
            vec![revoked("a", 100), revoked("b", 100), revoked("c", 100)],
            0
        ));
        assert!(!list.fresh(), "an incomplete list must not count as fresh");
        // Once the entries expire the list is whole again.
        assert!(list.apply(vec![], 101));
        assert!(list.fresh());
    }

    #[test]
    fn a_list_not_heard_from_for_max_staleness_is_stale() {
        let options = FeedOptions {
            max_staleness: Duration::from_millis(50),
            ..FeedOptions::default()
        };
        let list = Denylist::new(&options);
        list.heard();
        assert!(list.fresh());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!list.fresh());
        list.heard();
        assert!(list.fresh());
    }
}
