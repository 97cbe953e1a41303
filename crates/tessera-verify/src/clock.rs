//! Where the verifier reads the time: the system clock, or one a test controls.

use std::time::{SystemTime, UNIX_EPOCH};

use tessera_token::UnixTime;

/// The current time, in Unix seconds. Every expiry and refresh decision reads it here, so a
/// test can move time forward instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> UnixTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                UnixTime::try_from(elapsed.as_secs()).unwrap_or(UnixTime::MAX)
            })
    }
}
