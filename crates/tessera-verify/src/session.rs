//! The verified session and its extractors.

use std::sync::Arc;

use tessera_token::{AccessClaims, Methods, Requirement, UnixTime};

use crate::rejection::Rejection;

/// A session whose access token verified: who the user is and what they may do.
///
/// As an extractor it answers 401 (problem+json) when no valid token came. It takes the
/// session the [`VerifyLayer`](crate::VerifyLayer) already verified for this request if there
/// is one, and otherwise verifies the request's token with the [`Verifier`](crate::Verifier) of the
/// application's state (`Verifier: FromRef<S>`). As `Option<Session>` it is `None` when the
/// request carries no token at all; a token that is present but refused is still a 401, never
/// an anonymous request.
///
/// # Examples
/// ```
/// use tessera_verify::Session;
///
/// async fn whoami(session: Session) -> String {
///     format!("{} ({})", session.name(), session.user_id())
/// }
///
/// async fn greeting(session: Option<Session>) -> String {
///     match session {
///         Some(session) => format!("hello, {}", session.name()),
///         None => "hello, stranger".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    claims: Arc<AccessClaims>,
}

impl Session {
    /// The session of verified `claims`: for an extension that verifies tokens some other way
    /// (an introspection client, later). Claims that were not verified must never get here.
    pub fn from_verified_claims(claims: AccessClaims) -> Session {
        Session {
            claims: Arc::new(claims),
        }
    }

    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.claims.sub
    }

    /// The user's name (`name`).
    pub fn name(&self) -> &str {
        &self.claims.name
    }

    /// The roles held when the token was issued (`roles`).
    pub fn roles(&self) -> &[String] {
        &self.claims.roles
    }

    /// The effective permissions when the token was issued (`perms`).
    pub fn permissions(&self) -> &[String] {
        &self.claims.perms
    }

    /// The session id (`sid`): what tessera revokes.
    pub fn session_id(&self) -> &str {
        &self.claims.sid
    }

    /// When the access token expires (`exp`, Unix seconds).
    pub fn expires_at(&self) -> UnixTime {
        self.claims.exp
    }

    /// Every verified claim.
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// How the user signed in (`amr`); empty for a token from a tessera that did not record
    /// it.
    pub fn methods(&self) -> Methods {
        self.claims.amr
    }

    /// When the user signed in (`auth_time`), if the token says.
    pub fn auth_time(&self) -> Option<UnixTime> {
        self.claims.auth_time
    }

    /// `Ok` when the session was signed in as `required` asks at `now` (a second factor, a
    /// recent sign-in), else a 401 `step_up_required` with RFC 9470's challenge: the client
    /// signs in again at tessera (`POST /v1/step-up`) and retries.
    pub fn require_assurance(
        &self,
        required: &Requirement,
        now: UnixTime,
    ) -> Result<(), Rejection> {
        let auth_time = self.claims.auth_time.unwrap_or(UnixTime::MIN);
        required
            .check(self.claims.amr, auth_time, now)
            .map_err(|step_up| crate::RejectionKind::StepUp(step_up).into())
    }

    /// Whether the session holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|held| held == role)
    }

    /// Whether the session holds `permission`.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.claims.perms.iter().any(|held| held == permission)
    }

    /// `Ok` when the session holds `role`, else a 403 `forbidden` to return from a handler.
    pub fn require_role(&self, role: &str) -> Result<(), Rejection> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Rejection::forbidden(format!(
                "this requires the role {role}"
            )))
        }
    }

    /// `Ok` when the session holds `permission`, else a 403 `forbidden`.
    pub fn require_permission(&self, permission: &str) -> Result<(), Rejection> {
        if self.has_permission(permission) {
            Ok(())
        } else {
            Err(Rejection::forbidden(format!(
                "this requires the permission {permission}"
            )))
        }
    }
}
