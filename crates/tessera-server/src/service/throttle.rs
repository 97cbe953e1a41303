//! Password-guessing throttling (OWASP authentication and credential-stuffing guidance), with
//! counters in the store so every instance shares them. Logins and every check of a signed-in
//! user's current password ([`Tessera::verify_current_password`]) go through it, on the same
//! counters.
//!
//! **Counted before checked.** Every attempt hits its counters atomically *before* the password
//! is checked, and is decided on the counts those hits returned, so a burst of concurrent
//! attempts cannot all pass a check made before any of them was counted: of N attempts at a
//! threshold T, at most T reach the password check. A successful check clears the pair counter
//! and gives its hits on the address and global counters back ([`Store::release_counter`]), so
//! successful logins never use up those budgets; a refused attempt gives all its hits back, so
//! refusals neither lengthen a lockout nor count as failures.
//!
//! **Clients** are counted per network: an IPv4 address, or the IPv6 network of
//! `login_ipv6_prefix` bits (default /64, which one subscriber usually holds whole, so rotating
//! addresses inside it gains nothing); an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! Three limits:
//! - **account + client**: after `account_max_failures` failures of one username from one client
//!   within the window, that pair is locked for `lockout_base` seconds from the latest failure,
//!   doubling with every further failure up to `lockout_max`; once a lock has passed, one attempt
//!   is let through. Keying the lock on the pair means an attacker elsewhere cannot lock the real
//!   user out; the same lock applies to unknown usernames, so locking reveals nothing.
//! - **client**: at most `address_max_failures` failures from one client within the window,
//!   whatever the usernames (stops spraying one password over many accounts).
//! - **global ceiling**: past `global_max_failures` failures per minute over all clients, clients
//!   that have failures (or attempts under way) of their own in their window are refused; a client
//!   without any still gets its attempt. So one network tripping the ceiling cannot lock every user
//!   out, while a distributed attack gets at most one guess per fresh network while it holds.
//!
//! While a limit holds, every attempt gets the same 429, right password or not: no oracle.

use std::net::{IpAddr, Ipv6Addr};

use aws_lc_rs::digest;
use tessera_core::UnixTime;
use tessera_store::{Counter, Store};

use super::audit::{Actor, Details, EventKind};
use super::{ServiceError, Tessera};

/// Throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures of one username from one client before it locks (default 10).
    pub account_max_failures: u32,
    /// Failures from one client before it is refused (default 100).
    pub address_max_failures: u32,
    /// Failures per minute over all clients past which clients with failures of their own are
    /// refused (default 1000).
    pub global_max_failures: u32,
    /// Window in which failures are counted, seconds (default 900).
    pub window: i64,
    /// First lockout, seconds (default 30); doubles per further failure.
    pub lockout_base: i64,
    /// Longest lockout, seconds (default 900).
    pub lockout_max: i64,
    /// IPv6 clients are counted per network of this many leading bits (default 64).
    pub ipv6_prefix: u8,
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
            ipv6_prefix: 64,
        }
    }
}

impl ThrottlePolicy {
    /// How long a pair with `failures` failures stays locked after the latest (0 below the
    /// threshold).
    fn lockout(&self, failures: u32) -> i64 {
        if failures < self.account_max_failures {
            return 0;
        }
        let doublings = (failures - self.account_max_failures).min(30);
        self.lockout_base
            .saturating_mul(1 << doublings)
            .min(self.lockout_max)
    }

    /// Seconds left of the pair lock `counter` describes, if it is locked at `now`.
    fn locked_for(&self, counter: &Counter, now: UnixTime) -> Option<i64> {
        let until = counter.last_at.saturating_add(self.lockout(counter.count));
        (now < until).then_some(until - now)
    }
}

/// Window of the global ceiling, seconds.
const GLOBAL_WINDOW: i64 = 60;
/// Key of the global counter.
const GLOBAL_KEY: &str = "login:global";

/// Which check an attempt is, for its audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordCheck {
    /// A login.
    Login,
    /// A signed-in user's current password (password change, re-authentication).
    Reauth,
}

impl PasswordCheck {
    fn failed(self) -> EventKind {
        match self {
            PasswordCheck::Login => EventKind::LoginFailed,
            PasswordCheck::Reauth => EventKind::ReauthFailed,
        }
    }

    fn throttled(self) -> EventKind {
        match self {
            PasswordCheck::Login => EventKind::LoginThrottled,
            PasswordCheck::Reauth => EventKind::ReauthThrottled,
        }
    }
}

struct Keys {
    pair: String,
    address: String,
}

/// The network a client is counted as: an IPv4 address, or the IPv6 network of `ipv6_prefix`
/// bits (as `addr/len`). IPv4-mapped IPv6 is IPv4, so one client cannot count twice.
fn client_network(ip: Option<&str>, ipv6_prefix: u8) -> String {
    match ip
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
    {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            format!("{}/{bits}", Ipv6Addr::from(u128::from(v6) & mask))
        }
        None => "unknown".to_owned(),
    }
}

fn keys(username: &str, ip: Option<&str>, ipv6_prefix: u8) -> Keys {
    // Usernames are hashed so counter keys stay short and carry no personal data.
    let name = digest::digest(&digest::SHA256, username.as_bytes());
    let name: String = name
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let network = client_network(ip, ipv6_prefix);
    Keys {
        pair: format!("login:pair:{name}:{network}"),
        address: format!("login:addr:{network}"),
    }
}

/// An attempt counted and let through to the password check; settle it with
/// [`Tessera::settle_attempt`].
pub(crate) struct Attempt {
    check: PasswordCheck,
    keys: Keys,
    address: Counter,
    global: Counter,
}

impl Tessera {
    /// Counts an attempt to check `username`'s password from `ctx`'s client and lets it through,
    /// or refuses it with `RateLimited` (audited, and not counted) while a limit holds.
    pub(crate) async fn begin_attempt(
        &self,
        check: PasswordCheck,
        username: &str,
        ctx: &Actor,
    ) -> Result<Attempt, ServiceError> {
        let result = self.count_attempt(check, username, ctx).await;
        if let Err(ServiceError::RateLimited { .. }) = &result {
            let details = Details::about(username, None);
            self.audit(check.throttled(), ctx, details).await;
        }
        result
    }

    async fn count_attempt(
        &self,
        check: PasswordCheck,
        username: &str,
        ctx: &Actor,
    ) -> Result<Attempt, ServiceError> {
        let policy = &self.settings.throttle;
        let store = self.store.as_ref();
        let now = self.now();
        let keys = keys(username, ctx.client.ip.as_deref(), policy.ipv6_prefix);
        // A pair inside its lockout is refused without a hit: refusals must not lengthen it.
        let before = store.counter(&keys.pair, now, policy.window).await?;
        if let Some(retry_after) = before.and_then(|c| policy.locked_for(&c, now)) {
            return Err(ServiceError::RateLimited { retry_after });
        }
        let before = before.map_or(0, |c| c.count);
        let pair = store.hit_counter(&keys.pair, now, policy.window).await?;
        let address = store.hit_counter(&keys.address, now, policy.window).await?;
        let global = store.hit_counter(GLOBAL_KEY, now, GLOBAL_WINDOW).await?;

        let refusal = if pair.count > policy.account_max_failures && pair.count != before + 1 {
            // Past the threshold only the one attempt whose hit directly followed the lock's end
            // goes through; any other hit since means that attempt is already under way.
            Some(policy.lockout(pair.count - 1).max(1))
        } else if address.count > policy.address_max_failures {
            Some(address.window_start + policy.window - now)
        } else if global.count > policy.global_max_failures && address.count > 1 {
            // The ceiling refuses only clients with failures (or attempts) of their own, so a
            // client that has none, such as the real user elsewhere, still gets through.
            Some(global.window_start + GLOBAL_WINDOW - now)
        } else {
            None
        };
        if let Some(retry_after) = refusal {
            release(store, &keys.pair, &pair).await?;
            release(store, &keys.address, &address).await?;
            release(store, GLOBAL_KEY, &global).await?;
            return Err(ServiceError::RateLimited {
                retry_after: retry_after.max(1),
            });
        }
        Ok(Attempt {
            check,
            keys,
            address,
            global,
        })
    }

    /// Settles an attempt once its password was checked: a failure stays counted and is audited;
    /// a success forgets the pair's failures and gives back the hits on the shared counters.
    pub(crate) async fn settle_attempt(
        &self,
        attempt: Attempt,
        verified: bool,
        username: &str,
        ctx: &Actor,
    ) -> Result<(), ServiceError> {
        if !verified {
            let details = Details::about(username, None);
            self.audit(attempt.check.failed(), ctx, details).await;
            return Ok(());
        }
        let store = self.store.as_ref();
        store.clear_counter(&attempt.keys.pair).await?;
        release(store, &attempt.keys.address, &attempt.address).await?;
        release(store, GLOBAL_KEY, &attempt.global).await?;
        Ok(())
    }

    /// Checks a signed-in user's current password (password change, and any re-authentication),
    /// throttled on the login counters and audited like a login: a stolen session must not be a
    /// way round the login throttle. `InvalidCredentials` when wrong, `RateLimited` when refused.
    pub(crate) async fn verify_current_password(
        &self,
        user: &tessera_store::User,
        password: &str,
        ctx: &Actor,
    ) -> Result<(), ServiceError> {
        let attempt = self
            .begin_attempt(PasswordCheck::Reauth, &user.username, ctx)
            .await?;
        let verified = self
            .verify_password(password, Some(user.password_hash.clone()))
            .await?;
        self.settle_attempt(attempt, verified, &user.username, ctx)
            .await?;
        if verified {
            Ok(())
        } else {
            Err(ServiceError::InvalidCredentials)
        }
    }
}

/// Gives back the hit that returned `hit` on `key`.
async fn release(store: &dyn Store, key: &str, hit: &Counter) -> Result<(), ServiceError> {
    store.release_counter(key, hit.window_start).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_the_username_and_separate_addresses() {
        let a = keys("alice", Some("192.0.2.1"), 64);
        let b = keys("alice", Some("192.0.2.2"), 64);
        assert!(!a.pair.contains("alice"));
        assert_ne!(a.pair, b.pair);
        assert_ne!(a.address, b.address);
        assert_eq!(keys("alice", Some("192.0.2.1"), 64).pair, a.pair);
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix_and_mapped_ipv4_as_ipv4() {
        let net = |ip: &str, prefix| client_network(Some(ip), prefix);
        assert_eq!(net("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2:ffff:1:2:3", 64), "2001:db8:1:2::/64");
        assert_ne!(net("2001:db8:1:3::1", 64), net("2001:db8:1:2::1", 64));
        assert_eq!(net("2001:db8:1:3::1", 48), net("2001:db8:1:2::1", 48));
        assert_eq!(net("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(net("::ffff:198.51.100.7", 64), "198.51.100.7");
        assert_eq!(net("198.51.100.7", 64), "198.51.100.7");
        assert_eq!(
            net("2001:db8::1", 0),
            "::/0",
            "no panic outside the validated range"
        );
        assert_eq!(client_network(Some("not an address"), 64), "unknown");
        assert_eq!(client_network(None, 64), "unknown");
    }

    #[test]
    fn lockouts_start_at_the_threshold_and_double_up_to_the_longest() {
        let policy = ThrottlePolicy::default();
        assert_eq!(policy.lockout(9), 0);
        assert_eq!(policy.lockout(10), 30);
        assert_eq!(policy.lockout(11), 60);
        assert_eq!(policy.lockout(14), 480);
        assert_eq!(policy.lockout(15), 900);
        assert_eq!(policy.lockout(u32::MAX), 900);
    }
}
