//! The session model: timeouts, sliding, and throttled activity writes.

use crate::{TokenError, UnixTime};

/// The time fields of a session record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// When the session was created (login).
    pub created_at: UnixTime,
    /// Last activity written to the store (throttled; see [`SessionPolicy::touch`]).
    pub last_seen_at: UnixTime,
    /// When the session ends unless used again; slides on use, never past `absolute_expires_at`.
    pub idle_expires_at: UnixTime,
    /// When the session ends whatever happens; never moves.
    pub absolute_expires_at: UnixTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
}

/// How long sessions live and how often their activity is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle timeout in seconds (default 30 min, ASVS level 2).
    pub idle_timeout: i64,
    /// Absolute timeout in seconds (default 12 h, ASVS level 2).
    pub absolute_timeout: i64,
    /// Minimum seconds between two activity writes for one session.
    pub activity_write_interval: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: 30 * 60,
            absolute_timeout: 12 * 3600,
            activity_write_interval: 60,
        }
    }
}

/// An activity write that is due: the new `last_seen_at` and `idle_expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// New last-seen time.
    pub last_seen_at: UnixTime,
    /// New idle expiry.
    pub idle_expires_at: UnixTime,
}

impl SessionPolicy {
    /// The times of a session created at `now`.
    pub fn start(&self, now: UnixTime) -> SessionTimes {
        let absolute_expires_at = now.saturating_add(self.absolute_timeout);
        SessionTimes {
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now
                .saturating_add(self.idle_timeout)
                .min(absolute_expires_at),
            absolute_expires_at,
            revoked_at: None,
        }
    }

    /// Whether a session is usable at `now`: not revoked, not idle, not past its absolute end.
    pub fn check(&self, times: &SessionTimes, now: UnixTime) -> Result<(), TokenError> {
        if times.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if now >= times.absolute_expires_at || now >= times.idle_expires_at {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// The activity write due at `now`, if any.
    ///
    /// Writes happen at most once per `activity_write_interval`, so verifying a session is a
    /// read, not a write. The idle expiry therefore slides in steps: a session can end up to
    /// one interval earlier than an exact slide would give, never later.
    pub fn touch(&self, times: &SessionTimes, now: UnixTime) -> Option<Touch> {
        if now.saturating_sub(times.last_seen_at) < self.activity_write_interval {
            return None;
        }
        Some(Touch {
            last_seen_at: now,
            idle_expires_at: now
                .saturating_add(self.idle_timeout)
                .min(times.absolute_expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SessionPolicy = SessionPolicy {
        idle_timeout: 1800,
        absolute_timeout: 43200,
        activity_write_interval: 60,
    };

    #[test]
    fn idle_timeout_ends_an_unused_session() {
        let t = P.start(0);
        assert_eq!(P.check(&t, 1799), Ok(()));
        assert_eq!(P.check(&t, 1800), Err(TokenError::Expired));
    }

    #[test]
    fn use_slides_idle_but_never_absolute() {
        let mut t = P.start(0);
        let mut now = 0;
        while now < 43200 + 3600 {
            now += 1000;
            if P.check(&t, now).is_err() {
                break;
            }
            if let Some(touch) = P.touch(&t, now) {
                t.last_seen_at = touch.last_seen_at;
                t.idle_expires_at = touch.idle_expires_at;
            }
        }
        assert_eq!(
            now,
            43000 + 1000,
            "ends at the first check past the absolute timeout"
        );
        assert_eq!(t.absolute_expires_at, 43200);
        assert!(t.idle_expires_at <= 43200);
    }

    #[test]
    fn activity_writes_are_throttled() {
        let t = P.start(0);
        assert_eq!(P.touch(&t, 59), None);
        assert_eq!(
            P.touch(&t, 60),
            Some(Touch {
                last_seen_at: 60,
                idle_expires_at: 1860
            })
        );
    }

    #[test]
    fn revoked_sessions_fail_as_revoked() {
        let mut t = P.start(0);
        t.revoked_at = Some(5);
        assert_eq!(P.check(&t, 6), Err(TokenError::Revoked));
    }
}
