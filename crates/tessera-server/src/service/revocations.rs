//! The revocation log and its feed: how verifiers outside tessera see a revocation at once.
//!
//! A service that verifies JWTs itself (tessera-verify) cannot ask the store whether a session
//! still stands. Instead every revocation is appended to the store's revocation log (shared by
//! every instance), and `GET /v1/revocations` hands the log out from a cursor, holding the
//! request open until something new arrives (long polling). A verifier keeps the revoked
//! session ids until every token of those sessions has expired.
//!
//! # What the log promises
//! - **An acknowledged revocation is in the log.** One session is logged *before* it is
//!   revoked; a user's sessions are listed and logged before they are revoked, and any that
//!   appeared meanwhile are logged right after, before the caller is answered. A failure to log
//!   fails the operation (the caller can repeat it).
//! - **Cursors never skip.** The store hands out sequence numbers in commit order, and the
//!   cursor given back is the last entry actually read, never the store's counter (which may be
//!   ahead of what is visible).
//! - **Entries are kept as long as they matter**: until every access token of the session has
//!   expired ([`Tessera::revocation_retention`]). A verifier that was away longer than that
//!   misses only entries whose tokens are all expired.
//! - **A cursor the log does not know** (ahead of its counter: the store was replaced) is
//!   answered with `reset`: the whole log, to replace what the verifier holds.

use std::slice;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::UnixTime;
use tessera_core::ids::{SessionId, UserId};
use tessera_store::RevocationPage;
use tokio::sync::{Semaphore, watch};

use super::{ServiceError, Tessera};

/// Most entries one feed answer carries; `more` tells the verifier to ask again at once.
pub const FEED_PAGE: usize = 1000;

/// Longest a feed request may be held open waiting for news.
pub const FEED_MAX_WAIT: Duration = Duration::from_secs(25);

/// Feed requests held open at once per instance. Past it a request is answered at once (the
/// verifier asks again, as when nothing is new): an idle connection costs memory, and a flood
/// of them must not hold every connection slot.
const FEED_MAX_WAITERS: usize = 4096;

/// Entries stay in the log this long after the last token they concern has expired, so a
/// verifier that reconnects after a short outage still finds them.
const RETENTION_MARGIN: i64 = 300;

/// The feed's in-memory side: the highest sequence number seen in the log (kept current by
/// [`Tessera::watch_revocations`]) and the bound on held requests.
#[derive(Debug)]
pub(crate) struct Feed {
    latest: watch::Sender<u64>,
    waiters: Semaphore,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            latest: watch::Sender::new(0),
            waiters: Semaphore::new(FEED_MAX_WAITERS),
        }
    }
}

/// One answer of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationBatch {
    /// The verifier must drop every revocation it holds and take these instead (first request,
    /// or a cursor the log does not know).
    pub reset: bool,
    /// Where the next request continues.
    pub cursor: u64,
    /// More entries are waiting: ask again at once.
    pub more: bool,
    /// Revoked sessions, each with the time after which no token of it can verify any more.
    pub revoked: Vec<(SessionId, UnixTime)>,
}

impl Tessera {
    /// Revokes one session, logging it first (see the module docs). Returns true when it was
    /// not revoked before.
    pub(crate) async fn revoke_logged(&self, id: &SessionId) -> Result<bool, ServiceError> {
        let now = self.now();
        self.store.log_revocations(slice::from_ref(id), now).await?;
        Ok(self.store.revoke_session(id, now).await?)
    }

    /// Revokes every session of `user_id` except `except`, logging them (see the module docs).
    /// Returns how many were revoked.
    pub(crate) async fn revoke_user_logged(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
    ) -> Result<u64, ServiceError> {
        let now = self.now();
        let live: Vec<SessionId> = self
            .store
            .list_sessions(Some(user_id), now)
            .await?
            .into_iter()
            .map(|session| session.id)
            .filter(|id| Some(id) != except)
            .collect();
        if !live.is_empty() {
            self.store.log_revocations(&live, now).await?;
        }
        let revoked = self
            .store
            .revoke_user_sessions(user_id, except, now)
            .await?;
        // Sessions started between the listing and the revocation.
        let late: Vec<SessionId> = revoked
            .iter()
            .filter(|id| !live.contains(id))
            .cloned()
            .collect();
        if !late.is_empty() {
            self.store.log_revocations(&late, self.now()).await?;
        }
        Ok(revoked.len() as u64)
    }

    /// Logs a session the store revoked by itself (refresh-token reuse).
    pub(crate) async fn log_revoked(&self, id: &SessionId) -> Result<(), ServiceError> {
        Ok(self
            .store
            .log_revocations(slice::from_ref(id), self.now())
            .await?)
    }

    /// How long a log entry matters: until the last access token of its session has expired
    /// (the lifetime plus the verifiers' leeway).
    pub fn revocation_retention(&self) -> i64 {
        self.settings
            .access_lifetime
            .saturating_add(self.settings.rules.leeway)
    }

    /// Drops log entries that no longer matter (with a margin for verifiers catching up).
    pub async fn purge_revocation_log(&self) -> Result<u64, ServiceError> {
        let horizon = self.revocation_retention().saturating_add(RETENTION_MARGIN);
        Ok(self
            .store
            .purge_revocations(self.now().saturating_sub(horizon))
            .await?)
    }

    /// The feed from `after` (none: from the start, as a reset), waiting up to `wait` for
    /// news when there is none (see the module docs).
    pub async fn revocations(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<RevocationBatch, ServiceError> {
        // A follower already at the last entry this instance knows of (the common case: every
        // verifier between revocations) waits without reading the store; the watch wakes it.
        // The watch follows the log within a notice, or one poll interval at worst.
        let known = *self.feed.latest.borrow();
        if known != 0 && after == Some(known) {
            let page = if wait.is_zero() {
                RevocationPage {
                    entries: Vec::new(),
                    last_seq: known,
                }
            } else {
                self.wait_for_news(known, wait.min(FEED_MAX_WAIT)).await?
            };
            return Ok(self.batch(page, false, known));
        }
        let mut page = self
            .store
            .revocations_after(after.unwrap_or(0), FEED_PAGE)
            .await?;
        let reset = match after {
            None => true,
            Some(cursor) if cursor > page.last_seq => {
                page = self.store.revocations_after(0, FEED_PAGE).await?;
                true
            }
            Some(_) => false,
        };
        let from = if reset { 0 } else { after.unwrap_or(0) };
        if page.entries.is_empty() && !reset && !wait.is_zero() {
            page = self.wait_for_news(from, wait.min(FEED_MAX_WAIT)).await?;
        }
        Ok(self.batch(page, reset, from))
    }

    /// Holds the request until the log grows past `from` or `wait` passes, then reads it
    /// (only if it grew: a quiet wait costs no store read).
    async fn wait_for_news(
        &self,
        from: u64,
        wait: Duration,
    ) -> Result<RevocationPage, ServiceError> {
        if let Ok(_held) = self.feed.waiters.try_acquire() {
            let mut latest = self.feed.latest.subscribe();
            // Timing out is the ordinary end of a quiet wait.
            let grew = tokio::time::timeout(wait, latest.wait_for(|seq| *seq > from))
                .await
                .is_ok();
            if !grew && *self.feed.latest.borrow() == from {
                return Ok(RevocationPage {
                    entries: Vec::new(),
                    last_seq: from,
                });
            }
        }
        Ok(self.store.revocations_after(from, FEED_PAGE).await?)
    }

    fn batch(&self, page: RevocationPage, reset: bool, from: u64) -> RevocationBatch {
        let retention = self.revocation_retention();
        RevocationBatch {
            reset,
            // The last entry read, never `page.last_seq` (which may be ahead of what is
            // visible yet): the next request cannot skip an entry still committing.
            cursor: page.entries.last().map_or(from, |entry| entry.seq),
            more: page.entries.len() >= FEED_PAGE,
            revoked: page
                .entries
                .into_iter()
                .map(|entry| (entry.session_id, entry.revoked_at.saturating_add(retention)))
                .collect(),
        }
    }

    /// Reads the log's counter into the feed's watch, waking held requests when it moved.
    pub(crate) async fn refresh_revocation_watch(&self) -> Result<(), ServiceError> {
        let last = self.store.revocations_after(0, 0).await?.last_seq;
        self.feed.latest.send_if_modified(|seen| {
            let moved = *seen != last;
            *seen = last;
            moved
        });
        Ok(())
    }

    /// The task that keeps the feed's watch current; see [`Tessera::watch_keys`] for how
    /// notices and the poll interval work.
    pub fn watch_revocations(
        self: &Arc<Self>,
        notices: tokio::sync::broadcast::Receiver<tessera_store::events::Notice>,
        poll: Duration,
    ) -> tokio::task::JoinHandle<()> {
        super::watch::follow(self, notices, poll, super::watch::Cached::RevocationLog)
    }
}
