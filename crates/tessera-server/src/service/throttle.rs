//! Login throttling (OWASP authentication and credential-stuffing guidance), with counters in
//! the store so every instance shares them.
//!
//! Three limits, checked before any password work:
//! - **account + client address**: after `account_max_failures` failures of one username from
//!   one address within the window, that pair is locked for `lockout_base` seconds, doubling
//!   with every further failure up to `lockout_max`. Keying the lock on the pair means an
//!   attacker elsewhere cannot lock the real user out (the user's own address is unaffected);
//!   the same lock applies to unknown usernames, so locking reveals nothing.
//! - **client address**: at most `address_max_failures` failures from one address within the
//!   window, whatever the usernames (stops spraying one password over many accounts).
//! - **global ceiling**: at most `global_max_failures` failures per minute over all clients
//!   (bounds a distributed attack; legitimate logins are refused too while it lasts, which is
//!   the price of the ceiling — set it well above normal failure rates).
//!
//! While a limit holds, every attempt gets the same 429, right password or not: no oracle.

use aws_lc_rs::digest;
use tessera_core::UnixTime;

use super::{ServiceError, Tessera};

/// Throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures of one username from one address before it locks (default 10).
    pub account_max_failures: u32,
    /// Failures from one address before it is refused (default 100).
    pub address_max_failures: u32,
    /// Failures per minute over all clients before every login is refused (default 1000).
    pub global_max_failures: u32,
    /// Window in which failures are counted, seconds (default 900).
    pub window: i64,
    /// First lockout, seconds (default 30); doubles per further failure.
    pub lockout_base: i64,
    /// Longest lockout, seconds (default 900).
    pub lockout_max: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            account_max_failures: 10,
            address_max_failures: 100,
            global_max_failures: 1000,
            window: 900,
            lockout_base: 30,
            lockout_max: 900,
        }
    }
}

/// Window of the global ceiling, seconds.
const GLOBAL_WINDOW: i64 = 60;

struct Keys {
    pair: String,
    address: String,
}

fn keys(username: &str, ip: Option<&str>) -> Keys {
    // Usernames are hashed so counter keys stay short and carry no personal data.
    let name = digest::digest(&digest::SHA256, username.as_bytes());
    let name: String = name
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let ip = ip.unwrap_or("unknown");
    Keys {
        pair: format!("login:pair:{name}:{ip}"),
        address: format!("login:addr:{ip}"),
    }
}

impl Tessera {
    /// Refuses the attempt with `RateLimited` while any limit holds. Otherwise returns whether
    /// this username and address have failures on record (to be cleared on success).
    pub(crate) async fn check_throttle(
        &self,
        username: &str,
        ip: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, ServiceError> {
        let policy = &self.settings.throttle;
        let keys = keys(username, ip);
        let store = self.store.as_ref();
        let pair = store.counter(&keys.pair, now, policy.window).await?;
        if let Some(c) = pair
            && c.count >= policy.account_max_failures
        {
            let doublings = (c.count - policy.account_max_failures).min(30);
            let lockout = policy
                .lockout_base
                .saturating_mul(1 << doublings)
                .min(policy.lockout_max);
            let until = c.last_at.saturating_add(lockout);
            if now < until {
                return Err(ServiceError::RateLimited {
                    retry_after: until - now,
                });
            }
        }
        if let Some(c) = store.counter(&keys.address, now, policy.window).await?
            && c.count >= policy.address_max_failures
        {
            return Err(ServiceError::RateLimited {
                retry_after: c.window_start + policy.window - now,
            });
        }
        if let Some(c) = store.counter("login:global", now, GLOBAL_WINDOW).await?
            && c.count >= policy.global_max_failures
        {
            return Err(ServiceError::RateLimited {
                retry_after: c.window_start + GLOBAL_WINDOW - now,
            });
        }
        Ok(pair.is_some())
    }

    /// Counts a failed attempt against every limit.
    pub(crate) async fn record_failure(
        &self,
        username: &str,
        ip: Option<&str>,
        now: UnixTime,
    ) -> Result<(), ServiceError> {
        let policy = &self.settings.throttle;
        let keys = keys(username, ip);
        let store = self.store.as_ref();
        store.hit_counter(&keys.pair, now, policy.window).await?;
        store.hit_counter(&keys.address, now, policy.window).await?;
        store
            .hit_counter("login:global", now, GLOBAL_WINDOW)
            .await?;
        Ok(())
    }

    /// Forgets the failures of a username from an address after a successful login.
    pub(crate) async fn record_success(
        &self,
        username: &str,
        ip: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.store.clear_counter(&keys(username, ip).pair).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_hide_the_username_and_separate_addresses() {
        let a = super::keys("alice", Some("192.0.2.1"));
        let b = super::keys("alice", Some("192.0.2.2"));
        assert!(!a.pair.contains("alice"));
        assert_ne!(a.pair, b.pair);
        assert_ne!(a.address, b.address);
        assert_eq!(super::keys("alice", Some("192.0.2.1")).pair, a.pair);
    }
}
