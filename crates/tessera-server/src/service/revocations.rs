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
//!   cursor given back is the last entry actually read, never the store's counter.
//! - **Entries are kept as long as they matter**: until every access token of the session has
//!   expired ([`Tessera::revocation_retention`]). A verifier that was away longer than that
//!   misses only entries whose tokens are all expired.
//! - **A cursor this instance does not know** (ahead of everything it has read, even after
//!   catching up: the store was replaced) is answered with `reset` and the whole window. A
//!   verifier adds it to what it holds; dropping nothing is always safe, as entries only ever
//!   refuse sessions that were revoked.
//!
//! # Requests never read the store
//! The feed is public, so it must not let anonymous traffic load the store (SPEC §7). Each
//! instance keeps the window of entries that still matter in memory, read from the store by
//! one task on every `RevocationsLogged` notice and once a second regardless; requests are
//! answered from it. A cursor ahead of the window (a verifier that moved from an instance
//! further ahead) makes the instance catch up first, at most once per
//! [`CATCH_UP_INTERVAL`] whatever the number of such requests.

use std::collections::VecDeque;
use std::slice;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tessera_core::UnixTime;
use tessera_core::ids::{SessionId, UserId};
use tessera_store::RevocationEntry;
use tokio::sync::{Mutex, Semaphore, watch};

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

/// Shortest time between two reads of the log caused by requests (cursors ahead of this
/// instance's window); the task that follows the log reads it on every notice regardless.
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(100);

/// The feed's in-memory side: the window of entries that still matter, the highest number in
/// it (a watch that held requests wait on), and the bound on held requests.
#[derive(Debug)]
pub(crate) struct Feed {
    latest: watch::Sender<u64>,
    window: RwLock<Window>,
    /// One read of the log at a time; when the last one caused by a request began.
    reading: Mutex<Option<Instant>>,
    waiters: Semaphore,
}

/// The entries an instance holds.
#[derive(Debug, Default)]
struct Window {
    /// Entries that still matter, ascending by number.
    entries: VecDeque<RevocationEntry>,
    /// Every entry numbered up to this one has been read.
    read_to: u64,
    /// False until the log was read once.
    loaded: bool,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            latest: watch::Sender::new(0),
            window: RwLock::new(Window::default()),
            reading: Mutex::new(None),
            waiters: Semaphore::new(FEED_MAX_WAITERS),
        }
    }
}

/// One answer of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationBatch {
    /// The whole window from the start (the first request, or a cursor this instance does
    /// not know): the verifier adds it to what it holds and continues from `cursor`.
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
    /// news when there is none (see the module docs). Answered from the instance's window.
    pub async fn revocations(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<RevocationBatch, ServiceError> {
        if !self.window(|window| window.loaded) {
            self.read_log(None).await?;
        }
        let reset = match after {
            None => true,
            Some(cursor) if cursor > self.window(|window| window.read_to) => {
                // Another instance may have read further: catch up, then judge.
                self.read_log(Some(CATCH_UP_INTERVAL)).await?;
                cursor > self.window(|window| window.read_to)
            }
            Some(_) => false,
        };
        let from = if reset { 0 } else { after.unwrap_or(0) };
        let mut batch = self.batch_from(from, reset);
        if batch.revoked.is_empty() && !reset && !wait.is_zero() {
            if let Ok(_held) = self.feed.waiters.try_acquire() {
                let mut latest = self.feed.latest.subscribe();
                // Timing out is the ordinary end of a quiet wait.
                let _ = tokio::time::timeout(
                    wait.min(FEED_MAX_WAIT),
                    latest.wait_for(|seq| *seq > from),
                )
                .await;
            }
            batch = self.batch_from(from, false);
        }
        Ok(batch)
    }

    /// The window's entries after `from`, at most [`FEED_PAGE`].
    fn batch_from(&self, from: u64, reset: bool) -> RevocationBatch {
        let retention = self.revocation_retention();
        self.window(|window| {
            let start = window.entries.partition_point(|entry| entry.seq <= from);
            let page: Vec<&RevocationEntry> =
                window.entries.range(start..).take(FEED_PAGE).collect();
            RevocationBatch {
                reset,
                // The last entry handed out: the next request continues after it.
                cursor: page.last().map_or(from, |entry| entry.seq),
                more: window.entries.len() - start > FEED_PAGE,
                revoked: page
                    .into_iter()
                    .map(|entry| {
                        (
                            entry.session_id.clone(),
                            entry.revoked_at.saturating_add(retention),
                        )
                    })
                    .collect(),
            }
        })
    }

    fn window<R>(&self, read: impl FnOnce(&Window) -> R) -> R {
        // A poisoned lock means a panic mid-update of plain values; what is there is whole.
        match self.feed.window.read() {
            Ok(window) => read(&window),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Reads what the log gained since the window's last entry into the window, drops what
    /// no longer matters, and wakes held requests. One read at a time; with `min_interval`,
    /// none if the last such read began less than that ago.
    async fn read_log(&self, min_interval: Option<Duration>) -> Result<(), ServiceError> {
        let mut last = self.feed.reading.lock().await;
        if let Some(interval) = min_interval {
            if last.is_some_and(|at| at.elapsed() < interval) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let mut read_to = self.window(|window| window.read_to);
        let mut fresh = Vec::new();
        let mut replaced = false;
        loop {
            let page = self.store.revocations_after(read_to, FEED_PAGE).await?;
            if page.last_seq < read_to && !replaced {
                // The log numbers below what was read: it is another log now. Start over.
                replaced = true;
                read_to = 0;
                continue;
            }
            let full = page.entries.len() >= FEED_PAGE;
            if let Some(entry) = page.entries.last() {
                read_to = entry.seq;
            }
            fresh.extend(page.entries);
            if !full {
                break;
            }
        }
        let horizon = self
            .now()
            .saturating_sub(self.revocation_retention().saturating_add(RETENTION_MARGIN));
        let mut window = match self.feed.window.write() {
            Ok(window) => window,
            Err(poisoned) => poisoned.into_inner(),
        };
        if replaced {
            window.entries.clear();
        }
        window.entries.extend(fresh);
        // Numbered in commit order, revoked at roughly increasing times: the oldest are first.
        while window
            .entries
            .front()
            .is_some_and(|entry| entry.revoked_at < horizon)
        {
            window.entries.pop_front();
        }
        window.read_to = read_to;
        window.loaded = true;
        drop(window);
        self.feed.latest.send_if_modified(|seen| {
            let moved = *seen != read_to;
            *seen = read_to;
            moved
        });
        Ok(())
    }

    /// Brings the window up to date with the log (the task that follows the log calls it).
    pub(crate) async fn refresh_revocation_watch(&self) -> Result<(), ServiceError> {
        self.read_log(None).await
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
