//! The records a store keeps.

use tessera_core::UnixTime;
use tessera_core::opaque::TokenHash;
use tessera_core::session::{SessionTimes, Touch};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id (random, never reused).
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Roles held.
    pub roles: Vec<String>,
    /// Permissions granted directly (roles grant more through configuration).
    pub permissions: Vec<String>,
    /// A disabled user cannot log in and has no live sessions.
    pub disabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
}

/// The parts of a user a session check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Roles held now.
    pub roles: Vec<String>,
    /// Directly granted permissions now.
    pub permissions: Vec<String>,
    /// Whether the account is disabled.
    pub disabled: bool,
}

/// A session: one login on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id (`sid`): public, not a credential.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Lifetimes and revocation.
    pub times: SessionTimes,
    /// Client address at login.
    pub ip: Option<String>,
    /// Client user agent at login (truncated).
    pub user_agent: Option<String>,
}

/// A session together with its user, as lookups return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: UserSummary,
}

/// What [`crate::Store::create_session`] inserts.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session.
    pub session: Session,
    /// Hash of the opaque access token, when the session's access token is opaque.
    pub access_hash: Option<TokenHash>,
    /// Hash of the first refresh token, for bearer delivery.
    pub refresh_hash: Option<TokenHash>,
}

/// A refresh-token rotation request.
///
/// The caller has already minted the successor pair; the store decides, atomically, whether
/// it takes effect.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Hash of the refresh token presented.
    pub presented: TokenHash,
    /// Hash of the successor refresh token.
    pub successor: TokenHash,
    /// The successor pair sealed under the presented token ([`tessera_core::seal`]), kept so a
    /// repeat inside the grace window can be answered with the same pair.
    pub sealed_successor: Vec<u8>,
    /// Hash of the successor's opaque access token, when access tokens are opaque.
    pub new_access_hash: Option<TokenHash>,
    /// Seconds after first use during which a repeat returns the same successor.
    pub grace: i64,
    /// Idle-timeout slide to apply, computed by the caller from the session policy.
    pub idle_timeout: i64,
    /// Now.
    pub now: UnixTime,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// First use: the successor is now current, the presented token is spent.
    Rotated(SessionRecord),
    /// A repeat inside the grace window: here is the sealed successor from the first use.
    /// Nothing changed.
    Repeated {
        /// The sealed successor pair.
        sealed_successor: Vec<u8>,
        /// The session (after the first rotation).
        record: SessionRecord,
    },
    /// A spent token presented after the grace window: theft is assumed and the whole session
    /// has been revoked.
    ReuseDetected {
        /// The revoked session's id.
        session_id: String,
    },
    /// The session is revoked or past its idle/absolute expiry; nothing changed.
    SessionEnded {
        /// True when revoked (rather than expired).
        revoked: bool,
    },
    /// No refresh token with this hash exists.
    Unknown,
}

impl Rotation {
    /// The idle slide this rotation applies to a session whose absolute end is `absolute`.
    pub fn touch(&self, absolute: UnixTime) -> Touch {
        Touch {
            last_seen_at: self.now,
            idle_expires_at: self.now.saturating_add(self.idle_timeout).min(absolute),
        }
    }
}
