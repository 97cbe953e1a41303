//! The JWKS client: the issuer's public keys, fetched, cached and refreshed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::header;
use tessera_token::jwks::MAX_JWKS_LEN;
use tessera_token::{JwksError, UnixTime, VerifyingKeys};

use crate::body::read_bounded;
use crate::clock::Clock;

/// How the JWKS client refreshes and for how long it trusts keys it could not refresh.
///
/// The defaults: refresh as the issuer's `Cache-Control: max-age` says, bounded to 30 s ..
/// 1 h; after a `kid` no held key has, fetch again at most once a second; keep the last good
/// keys through an outage for 1 h, then fail closed; give up on one fetch after 5 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// The shortest time between scheduled refreshes (also the retry delay after a failure).
    pub min_refresh: Duration,
    /// The longest time between scheduled refreshes, whatever `max-age` says.
    pub max_refresh: Duration,
    /// How long keys stay usable after the last successful fetch when refreshes fail. Past
    /// it every verification fails closed with 503 `not_ready`.
    pub max_stale: Duration,
    /// The timeout of one fetch.
    pub timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> JwksOptions {
        JwksOptions {
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            max_stale: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why fetching the issuer's JWKS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksFetchError {
    /// The request failed (connection, TLS, timeout).
    #[error("could not fetch the JWKS from {url}")]
    Request {
        /// The JWKS URL.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The issuer answered with another status than 200.
    #[error("the JWKS at {url} answered with status {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The document is larger than `tessera_token::jwks::MAX_JWKS_LEN`.
    #[error("the JWKS at {url} is too large")]
    TooLarge {
        /// The JWKS URL.
        url: String,
    },
    /// The document is not a usable JWKS.
    #[error("the JWKS at {url} is not usable")]
    Invalid {
        /// The JWKS URL.
        url: String,
        /// What is wrong with it.
        #[source]
        source: JwksError,
    },
}

/// What the client holds.
struct KeyState {
    keys: Arc<VerifyingKeys>,
    /// Counts successful fetches: what verified under one generation proves nothing under
    /// the next (the verified-token cache keys on it).
    generation: u64,
    /// When the held keys were last fetched successfully.
    fetched_at: UnixTime,
    /// When a scheduled refresh is due.
    refresh_at: UnixTime,
    /// When any fetch was last attempted (for the once-a-second unknown-`kid` limit).
    attempted_at: UnixTime,
}

/// Why a refresh is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The scheduled time has come.
    Due,
    /// A token names a `kid` the held keys lack (the issuer may have rotated).
    UnknownKid,
}

/// Fetches and holds the issuer's keys.
pub(crate) struct JwksClient {
    url: String,
    http: reqwest::Client,
    options: JwksOptions,
    clock: Arc<dyn Clock>,
    state: RwLock<KeyState>,
    /// One fetch at a time; a request arriving meanwhile waits and then sees its result.
    fetching: tokio::sync::Mutex<()>,
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

impl JwksClient {
    /// Fetches the keys at `url` once; fails if they cannot be had.
    pub(crate) async fn start(
        url: String,
        options: JwksOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<JwksClient, JwksFetchError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            // Security: keys come from the configured URL only, never from a redirect target.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| JwksFetchError::Request {
                url: url.clone(),
                source: Box::new(error),
            })?;
        let now = clock.now();
        let (keys, max_age) = fetch(&http, &url).await?;
        let refresh_at = now.saturating_add(clamp_max_age(max_age, &options));
        Ok(JwksClient {
            url,
            http,
            options,
            clock,
            state: RwLock::new(KeyState {
                keys: Arc::new(keys),
                generation: 0,
                fetched_at: now,
                refresh_at,
                attempted_at: now,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The keys to verify with now: refreshed first when a refresh is due; `None` once the
    /// last successful fetch is older than `max_stale` (fail closed).
    pub(crate) async fn current(&self) -> Option<(Arc<VerifyingKeys>, u64)> {
        let now = self.clock.now();
        if self.read(|state| now >= state.refresh_at) {
            self.refresh(Refresh::Due).await;
        }
        self.usable(now)
    }

    /// Fetches again for `reason`, unless another fetch made it pointless meanwhile or (for an
    /// unknown `kid`) one was attempted less than a second ago. Returns whether new keys came.
    pub(crate) async fn refresh(&self, reason: Refresh) -> bool {
        let _one_at_a_time = match reason {
            // A scheduled refresh already under way: carry on with the held keys meanwhile,
            // so only the request that started it waits for the fetch.
            Refresh::Due => match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return false,
            },
            // A token with a new `kid` waits for the fetch that may bring its key.
            Refresh::UnknownKid => self.fetching.lock().await,
        };
        let now = self.clock.now();
        let wanted = self.read(|state| match reason {
            Refresh::Due => now >= state.refresh_at,
            // Security: a stream of tokens with made-up `kid`s cannot make us hammer the
            // issuer: at most one fetch a second.
            Refresh::UnknownKid => now >= state.attempted_at.saturating_add(1),
        });
        if !wanted {
            return false;
        }
        self.write(|state| state.attempted_at = now);
        match fetch(&self.http, &self.url).await {
            Ok((keys, max_age)) => {
                let refresh_at = now.saturating_add(clamp_max_age(max_age, &self.options));
                self.write(|state| {
                    state.keys = Arc::new(keys);
                    state.generation += 1;
                    state.fetched_at = now;
                    state.refresh_at = refresh_at;
                });
                true
            }
            Err(error) => {
                tracing::warn!(error = %error, "JWKS refresh failed; keeping the last good keys");
                let retry_at = now.saturating_add(secs(self.options.min_refresh).max(1));
                self.write(|state| state.refresh_at = retry_at);
                false
            }
        }
    }

    /// The held keys, unless they are too old to trust at `now`.
    fn usable(&self, now: UnixTime) -> Option<(Arc<VerifyingKeys>, u64)> {
        let max_stale = secs(self.options.max_stale);
        self.read(|state| {
            (now <= state.fetched_at.saturating_add(max_stale))
                .then(|| (Arc::clone(&state.keys), state.generation))
        })
    }

    fn read<R>(&self, f: impl FnOnce(&KeyState) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update of plain values; the state
        // is still whole (each update is one assignment of complete values).
        match self.state.read() {
            Ok(state) => f(&state),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut KeyState)) {
        match self.state.write() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Seconds until the next scheduled refresh: `max-age` bounded by the options (the minimum
/// when the issuer sent none).
fn clamp_max_age(max_age: Option<u64>, options: &JwksOptions) -> i64 {
    let min = secs(options.min_refresh);
    let max = secs(options.max_refresh).max(min);
    max_age
        .map_or(min, |age| i64::try_from(age).unwrap_or(i64::MAX))
        .clamp(min, max)
}

/// `max-age` of a `Cache-Control` value; `Some(0)` for `no-store` and `no-cache`.
fn max_age(cache_control: &str) -> Option<u64> {
    let mut found = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            found = value.trim_matches('"').parse().ok();
        }
    }
    found
}

/// One GET of the JWKS: its keys and `max-age`.
async fn fetch(
    http: &reqwest::Client,
    url: &str,
) -> Result<(VerifyingKeys, Option<u64>), JwksFetchError> {
    let request_failed = |error: reqwest::Error| JwksFetchError::Request {
        url: url.to_owned(),
        source: Box::new(error),
    };
    let response = http.get(url).send().await.map_err(request_failed)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(JwksFetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let max_age = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|value| value.to_str().ok())
        .and_then(max_age);
    let body = read_bounded(response, MAX_JWKS_LEN)
        .await
        .map_err(request_failed)?
        .ok_or_else(|| JwksFetchError::TooLarge {
            url: url.to_owned(),
        })?;
    let keys = VerifyingKeys::from_jwks(&body).map_err(|source| JwksFetchError::Invalid {
        url: url.to_owned(),
        source,
    })?;
    Ok((keys, max_age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=60"), Some(60));
        assert_eq!(max_age("Max-Age=5"), Some(5));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[test]
    fn max_age_is_bounded_by_the_options() {
        let options = JwksOptions::default();
        assert_eq!(clamp_max_age(Some(60), &options), 60);
        assert_eq!(clamp_max_age(Some(0), &options), 30);
        assert_eq!(clamp_max_age(None, &options), 30);
        assert_eq!(clamp_max_age(Some(u64::MAX), &options), 3600);
    }
}
