//! The records a store keeps.

use tessera_core::UnixTime;
use tessera_core::assurance::Methods;
use tessera_core::ids::{SessionId, UserId};
use tessera_core::opaque::TokenHash;
use tessera_core::session::{SessionTimes, Touch};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id (random, never reused).
    pub id: UserId,
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

/// A user's TOTP factor (RFC 6238).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// The shared secret, sealed under the master key by the caller (stores keep it as given).
    pub sealed_secret: Vec<u8>,
    /// False between enrolment and the first code that confirms it: an unconfirmed factor
    /// signs nobody in.
    pub confirmed: bool,
    /// When it was enrolled.
    pub created_at: UnixTime,
    /// The highest time step whose code was accepted (0: none): a code is accepted at most
    /// once, and never one older than the last accepted.
    pub last_step: i64,
}

/// A user's passkey (a WebAuthn credential).
///
/// The store keeps the credential as the caller serialised it (the relying-party library's
/// JSON), and knows only its id: unique across every user, so a username-less sign-in finds
/// the one user a credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// The credential id the authenticator chose (at most 1023 bytes, WebAuthn §5.8.3).
    pub credential_id: Vec<u8>,
    /// Whose it is.
    pub user_id: UserId,
    /// The name the user gave it.
    pub name: String,
    /// The credential (public key, counter, flags) as the caller serialised it.
    pub passkey: Vec<u8>,
    /// When it was registered.
    pub created_at: UnixTime,
    /// When it last signed in or stepped up (`None`: never).
    pub last_used_at: Option<UnixTime>,
}

/// The parts of a user a session check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User id.
    pub id: UserId,
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
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Lifetimes and revocation.
    pub times: SessionTimes,
    /// Client address at login.
    pub ip: Option<String>,
    /// Client user agent at login (truncated).
    pub user_agent: Option<String>,
    /// How the user signed in (`amr`). Set at creation and never changed: a step-up starts a
    /// new session, so the authentication time is `times.created_at`.
    pub amr: Methods,
    /// The JWK SHA-256 thumbprint (RFC 7638, base64url) of the client key the session's
    /// tokens are bound to by DPoP (RFC 9449), or `None` for plain bearer or cookie tokens.
    /// Set at creation and never changed: every refresh must prove possession of that key.
    pub jkt: Option<String>,
    /// The public key (a JWK, as JSON text) a browser registered for this session with Device
    /// Bound Session Credentials (W3C DBSC draft): its short-lived cookie is re-issued only
    /// against a signature by it. `None` for every other session. Set at creation.
    pub device_key: Option<String>,
}

/// A session together with its user, as lookups return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: UserSummary,
}

/// What [`crate::SessionStore::create_session`] inserts.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session.
    pub session: Session,
    /// Its user as the caller read it to mint the session's tokens. A backend that keeps
    /// sessions apart from users (Redis) stores it with the session, so a lookup needs no read
    /// of the durable store; it confirms it against the durable store when creating the session
    /// (see [`crate::SessionStore`]). Backends that join sessions with their users ignore it.
    pub user: UserSummary,
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
    /// Hash of the successor's opaque access token, when access tokens are opaque. `None`
    /// leaves the session's access hash as it is.
    pub new_access_hash: Option<TokenHash>,
    /// Seconds after first use during which a repeat returns the same successor: a repeat is
    /// inside the window when `now - used_at <= grace` (a `now` before `used_at`, from clock
    /// skew between instances, counts as inside). An ended session (revoked or expired) is
    /// reported as [`RefreshOutcome::SessionEnded`] before any reuse check.
    pub grace: i64,
    /// Idle-timeout slide to apply, computed by the caller from the session policy.
    pub idle_timeout: i64,
    /// Now.
    pub now: UnixTime,
}

/// What a rotation did.
///
/// `R` is what the store returns of the session: a [`SessionRecord`] from a
/// [`crate::SessionStore`]; a session backend that keeps no users may work with bare
/// [`Session`]s inside and add the user at the end ([`RefreshOutcome::try_map`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome<R = SessionRecord> {
    /// First use: the successor is now current, the presented token is spent.
    Rotated(R),
    /// A repeat inside the grace window: here is the sealed successor from the first use.
    /// Nothing changed.
    Repeated {
        /// The sealed successor pair.
        sealed_successor: Vec<u8>,
        /// The session (after the first rotation).
        record: R,
    },
    /// A spent token presented after the grace window: theft is assumed and the whole session
    /// has been revoked.
    ReuseDetected {
        /// The revoked session's id.
        session_id: SessionId,
    },
    /// The session is revoked or past its idle/absolute expiry; nothing changed.
    SessionEnded {
        /// True when revoked (rather than expired).
        revoked: bool,
    },
    /// No refresh token with this hash exists.
    Unknown,
}

impl<R> RefreshOutcome<R> {
    /// The same outcome with the session turned into something else by `f`; `None` from `f`
    /// (the session's user is gone) makes the outcome [`RefreshOutcome::Unknown`].
    pub fn try_map<T>(self, f: impl FnOnce(R) -> Option<T>) -> RefreshOutcome<T> {
        match self {
            RefreshOutcome::Rotated(r) => {
                f(r).map_or(RefreshOutcome::Unknown, RefreshOutcome::Rotated)
            }
            RefreshOutcome::Repeated {
                sealed_successor,
                record,
            } => f(record).map_or(RefreshOutcome::Unknown, |record| RefreshOutcome::Repeated {
                sealed_successor,
                record,
            }),
            RefreshOutcome::ReuseDetected { session_id } => {
                RefreshOutcome::ReuseDetected { session_id }
            }
            RefreshOutcome::SessionEnded { revoked } => RefreshOutcome::SessionEnded { revoked },
            RefreshOutcome::Unknown => RefreshOutcome::Unknown,
        }
    }

    /// The session a `Rotated` or `Repeated` outcome carries.
    pub fn record(&self) -> Option<&R> {
        match self {
            RefreshOutcome::Rotated(r) | RefreshOutcome::Repeated { record: r, .. } => Some(r),
            _ => None,
        }
    }
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

/// What happened. The string form (`login.succeeded`, …) is what is stored, queried and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A login succeeded.
    LoginSucceeded,
    /// A login failed (wrong password, unknown or disabled user).
    LoginFailed,
    /// A login was refused by throttling.
    LoginThrottled,
    /// A signed-in user's current password was wrong (password change, re-authentication).
    ReauthFailed,
    /// A current-password check was refused by throttling.
    ReauthThrottled,
    /// A session ended by logout.
    Logout,
    /// A refresh token was exchanged.
    Refresh,
    /// A spent refresh token was replayed: theft assumed, session revoked.
    RefreshReplayed,
    /// A session was revoked (by its owner, an admin or the CLI).
    SessionRevoked,
    /// A password was changed (by its owner) or reset (by an admin).
    PasswordChanged,
    /// A user was created.
    UserCreated,
    /// A user's roles or permissions changed.
    UserUpdated,
    /// A user was disabled (or enabled again: see the event's detail).
    UserDisabled,
    /// A user was deleted.
    UserDeleted,
    /// The signing key was rotated.
    KeyRotated,
    /// A session was stepped up to a stronger or fresher authentication (a new session).
    StepUp,
    /// A second factor was enrolled (or recovery codes renewed: see the detail).
    FactorEnrolled,
    /// A second factor was removed.
    FactorRemoved,
    /// A one-time or recovery code was wrong, replayed, or given for no factor.
    SecondFactorFailed,
    /// A code check was refused by throttling.
    SecondFactorThrottled,
    /// A recovery code was used (it is now spent).
    RecoveryCodeUsed,
    /// A passkey assertion was refused: an unknown credential, one of another user, a bad
    /// signature or challenge.
    PasskeyFailed,
    /// A passkey's signature counter went backwards: the authenticator may have been cloned.
    /// The sign-in was refused.
    PasskeyPossiblyCloned,
    /// A DPoP-bound token was presented without a proof, with a replayed one, or with one
    /// signed by another key (the detail says which): the token may have been stolen.
    DpopRefused,
    /// A browser registered a key for a cookie session (DBSC): a session bound to it replaced
    /// the session (the detail names the key's thumbprint).
    DeviceBound,
    /// A DBSC registration or refresh was refused: a bad signature (another key), or a
    /// challenge of another session, expired or answered before (the detail says which).
    DeviceRefused,
}

impl EventKind {
    /// Every kind, for validation and documentation.
    pub const ALL: [EventKind; 26] = [
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::LoginThrottled,
        EventKind::ReauthFailed,
        EventKind::ReauthThrottled,
        EventKind::Logout,
        EventKind::Refresh,
        EventKind::RefreshReplayed,
        EventKind::SessionRevoked,
        EventKind::PasswordChanged,
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserDisabled,
        EventKind::UserDeleted,
        EventKind::KeyRotated,
        EventKind::StepUp,
        EventKind::FactorEnrolled,
        EventKind::FactorRemoved,
        EventKind::SecondFactorFailed,
        EventKind::SecondFactorThrottled,
        EventKind::RecoveryCodeUsed,
        EventKind::PasskeyFailed,
        EventKind::PasskeyPossiblyCloned,
        EventKind::DpopRefused,
        EventKind::DeviceBound,
        EventKind::DeviceRefused,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login.succeeded",
            EventKind::LoginFailed => "login.failed",
            EventKind::LoginThrottled => "login.throttled",
            EventKind::ReauthFailed => "reauth.failed",
            EventKind::ReauthThrottled => "reauth.throttled",
            EventKind::Logout => "logout",
            EventKind::Refresh => "refresh",
            EventKind::RefreshReplayed => "refresh.replayed",
            EventKind::SessionRevoked => "session.revoked",
            EventKind::PasswordChanged => "password.changed",
            EventKind::UserCreated => "user.created",
            EventKind::UserUpdated => "user.updated",
            EventKind::UserDisabled => "user.disabled",
            EventKind::UserDeleted => "user.deleted",
            EventKind::KeyRotated => "key.rotated",
            EventKind::StepUp => "session.stepped_up",
            EventKind::FactorEnrolled => "factor.enrolled",
            EventKind::FactorRemoved => "factor.removed",
            EventKind::SecondFactorFailed => "second_factor.failed",
            EventKind::SecondFactorThrottled => "second_factor.throttled",
            EventKind::RecoveryCodeUsed => "recovery_code.used",
            EventKind::PasskeyFailed => "passkey.failed",
            EventKind::PasskeyPossiblyCloned => "passkey.possible_clone",
            EventKind::DpopRefused => "dpop.refused",
            EventKind::DeviceBound => "session.device_bound",
            EventKind::DeviceRefused => "session.device_refused",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit event kind {0:?}")]
pub struct UnknownEventKind(pub String);

impl std::str::FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(name: &str) -> Result<EventKind, UnknownEventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownEventKind(name.to_owned()))
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One audit event: who did what to whom, when and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the log, assigned by the store on append (0 before that).
    pub id: i64,
    /// When it happened.
    pub at: UnixTime,
    /// What happened.
    pub kind: EventKind,
    /// Who acted: a username, `cli`, or `system`.
    pub actor: Option<String>,
    /// Whom it concerned: a username.
    pub subject: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Extra detail (never a token or a password).
    pub detail: Option<String>,
}

/// Which audit events to return, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Events where this username is the actor or the subject.
    pub user: Option<String>,
    /// Events of this kind.
    pub kind: Option<EventKind>,
    /// Events at or after this time.
    pub since: Option<UnixTime>,
    /// Events before this time.
    pub until: Option<UnixTime>,
    /// Events with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// One entry of the revocation log: a session that was revoked at `revoked_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEntry {
    /// Its number in the log: handed out in commit order, never reused.
    pub seq: u64,
    /// The revoked session.
    pub session_id: SessionId,
    /// When it was revoked.
    pub revoked_at: UnixTime,
}

/// Entries of the revocation log after a sequence number, and where the log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationPage {
    /// Entries with `seq > after`, ascending, at most `limit`.
    pub entries: Vec<RevocationEntry>,
    /// The highest sequence number the log has handed out (0 if none), whether or not its
    /// entry is still kept (purged or not). Every entry numbered up to it that will ever be
    /// visible already is: after a page shorter than `limit` (or, starting afresh, with
    /// `limit` 0) a reader may resume after `last_seq` without missing one.
    pub last_seq: u64,
}

/// A counter in a fixed window, used for login throttling across instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Hits in the current window.
    pub count: u32,
    /// When the current window began (the first hit).
    pub window_start: UnixTime,
    /// The latest hit.
    pub last_at: UnixTime,
}

#[cfg(test)]
mod event_kind_tests {
    use super::EventKind;

    #[test]
    fn every_kind_reads_back_from_its_stored_name_and_nothing_else_does() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for unknown in [
            "",
            "login",
            "LOGIN.FAILED",
            "login.failed ",
            "key.rotated\0",
        ] {
            assert!(unknown.parse::<EventKind>().is_err(), "{unknown:?}");
        }
    }
}
