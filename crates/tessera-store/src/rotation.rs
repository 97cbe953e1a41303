//! The refresh-rotation rule, once: what a store does with a presented refresh token, decided
//! from what it holds.
//!
//! The SQL backends read the token and its session inside their transaction, call
//! [`Rotation::decide`] and write what it says. Redis decides inside a Lua script (the only way
//! to make read, decide and write atomic there without a lock); the conformance check
//! [`crate::conformance::rotation_outcomes_follow_the_decision_rule`] runs a table of session
//! states and times through every backend, Redis's script included, and compares each outcome
//! with this function.

use tessera_core::UnixTime;
use tessera_core::session::SessionTimes;

use crate::{RefreshOutcome, Rotation};

/// What a rotation must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDecision {
    /// The session is revoked (`revoked`) or past its idle or absolute expiry: nothing changes.
    Ended {
        /// True when revoked (rather than expired).
        revoked: bool,
    },
    /// First use of a current token: the successor becomes current, the presented token is
    /// spent (at `now`, with the sealed successor) and the idle expiry slides.
    Rotate,
    /// A spent token again inside the grace window: answer with the sealed successor of its
    /// first use; nothing changes.
    Repeat,
    /// A spent token after the grace window: theft is assumed and the whole session is revoked
    /// at `now`.
    Revoke,
}

impl Rotation {
    /// The decision for a presented token of a session with these `times`, spent at `used_at`
    /// (`None` while it is current).
    ///
    /// An ended session is reported before any reuse check: a revoked session stays revoked
    /// (revocation first), and a session at or past its idle or absolute expiry has ended. A
    /// repeat is inside the grace window when `now - used_at <= grace`, inclusive; a `now`
    /// before `used_at` (clock skew between instances) counts as inside.
    pub fn decide(&self, times: &SessionTimes, used_at: Option<UnixTime>) -> RotationDecision {
        let now = self.now;
        if times.revoked_at.is_some() {
            return RotationDecision::Ended { revoked: true };
        }
        if now >= times.absolute_expires_at || now >= times.idle_expires_at {
            return RotationDecision::Ended { revoked: false };
        }
        match used_at {
            None => RotationDecision::Rotate,
            Some(used_at) if now.saturating_sub(used_at) <= self.grace => RotationDecision::Repeat,
            Some(_) => RotationDecision::Revoke,
        }
    }
}

impl<R> RefreshOutcome<R> {
    /// The decision this outcome reports; `None` for [`RefreshOutcome::Unknown`] (no token,
    /// nothing to decide).
    pub fn decision(&self) -> Option<RotationDecision> {
        Some(match self {
            RefreshOutcome::Rotated(_) => RotationDecision::Rotate,
            RefreshOutcome::Repeated { .. } => RotationDecision::Repeat,
            RefreshOutcome::ReuseDetected { .. } => RotationDecision::Revoke,
            RefreshOutcome::SessionEnded { revoked } => {
                RotationDecision::Ended { revoked: *revoked }
            }
            RefreshOutcome::Unknown => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::opaque::TokenHash;

    const NOW: UnixTime = 1_800_000_000;

    fn rotation(now: UnixTime) -> Rotation {
        Rotation {
            presented: TokenHash::of("a"),
            successor: TokenHash::of("b"),
            sealed_successor: Vec::new(),
            new_access_hash: None,
            grace: 10,
            idle_timeout: 1800,
            now,
        }
    }

    fn live() -> SessionTimes {
        SessionTimes {
            created_at: NOW - 100,
            last_seen_at: NOW - 100,
            idle_expires_at: NOW + 1000,
            absolute_expires_at: NOW + 5000,
            revoked_at: None,
        }
    }

    #[test]
    fn the_rule_in_order_ended_then_first_use_then_grace_then_theft() {
        use RotationDecision::*;
        let decide = |times: SessionTimes, used_at, now| rotation(now).decide(&times, used_at);
        assert_eq!(decide(live(), None, NOW), Rotate);
        assert_eq!(decide(live(), Some(NOW), NOW + 10), Repeat);
        assert_eq!(decide(live(), Some(NOW), NOW + 11), Revoke);
        assert_eq!(decide(live(), Some(NOW), NOW - 50), Repeat, "clock skew");
        let revoked = SessionTimes {
            revoked_at: Some(NOW - 1),
            ..live()
        };
        assert_eq!(
            decide(revoked, Some(NOW - 500), NOW),
            Ended { revoked: true }
        );
        let idle = live().idle_expires_at;
        assert_eq!(decide(live(), None, idle), Ended { revoked: false });
        assert_eq!(decide(live(), None, idle - 1), Rotate);
        let absolute = SessionTimes {
            idle_expires_at: NOW + 5000,
            ..live()
        };
        assert_eq!(
            decide(absolute, Some(NOW - 500), NOW + 5000),
            Ended { revoked: false }
        );
    }
}
