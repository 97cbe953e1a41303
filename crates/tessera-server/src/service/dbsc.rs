//! Device Bound Session Credentials (W3C DBSC draft) in the service: registration of a
//! browser's key for a cookie session, and the refreshes of its short-lived cookie.
//!
//! The JWTs and headers are checked and written by `tessera_core::dbsc` (the revision followed
//! is named there); this module adds the state: challenges, sealed under the master key for one
//! session and five minutes, each accepted once; the registered key, kept on a new session's
//! record (the registration starts a session bound to it and ends the unbound one); and the
//! cookie, a JWT living `access_token_lifetime`, never renewed on use.
//!
//! # Security
//! - A stolen bound cookie works until its JWT expires, at most `access_token_lifetime`; a
//!   refresh needs a signature by the browser's key over a fresh challenge.
//! - A challenge names the session it was issued for: a registration for another session, or
//!   a refresh answered for another session, is refused. Each is accepted once (the replay
//!   cache of DPoP proofs, shared the same way).
//! - Registration needs the session's own cookie, and a session bound once cannot be bound
//!   to another key.

use serde::{Deserialize, Serialize};
use tessera_core::at_rest::Purpose;
use tessera_core::dbsc;
use tessera_core::dpop::Replay;
use tessera_core::ids::SessionId;
use tessera_core::{TokenError, UnixTime};

use super::{
    Actor, ClientInfo, Credentials, Delivery, EventKind, Identity, ServiceError, SessionRef,
    Tessera, audit,
};

/// Where browsers register (the registration header's `path`).
pub(crate) const REGISTRATION_PATH: &str = "/v1/dbsc/registration";
/// Where browsers refresh (the session instructions' `refresh_url`).
pub const REFRESH_PATH: &str = "/v1/dbsc/refresh";
/// How long a challenge may be answered, seconds.
const CHALLENGE_LIFETIME: i64 = 300;

/// What a challenge holds, sealed.
#[derive(Serialize, Deserialize)]
struct Challenge {
    /// The session it was issued for.
    sid: String,
    /// Until when it may be answered.
    until: UnixTime,
    /// Makes every challenge unique.
    nonce: String,
}

/// Why a DBSC request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbscRefusal {
    /// DBSC is off.
    #[error("device-bound sessions are not offered here")]
    Off,
    /// The JWT fails a check, or signs a challenge that is not this session's, has expired or
    /// was answered before.
    #[error("the session response is not valid: {0}")]
    Response(String),
    /// The session is bound already, or bound to a DPoP key, or not a cookie session.
    #[error("this session cannot be bound to a browser key")]
    NotBindable,
    /// A refresh for a session that is not device-bound, or not live.
    #[error("no device-bound session by that id")]
    UnknownSession,
}

/// A refresh's answer: a challenge to sign, or the next cookie.
#[derive(Debug)]
pub enum DeviceRefresh {
    /// Sign this (`Secure-Session-Challenge`) and ask again.
    Challenge(String),
    /// The session's next cookie.
    Renewed(Credentials),
}

impl Tessera {
    /// Whether DBSC is offered.
    pub fn dbsc_enabled(&self) -> bool {
        self.settings.dbsc
    }

    /// The `Secure-Session-Registration` value offering the cookie session `credentials` were
    /// issued for a registration, when DBSC is on and the session is not bound yet.
    pub fn dbsc_offer(&self, credentials: &Credentials) -> Option<String> {
        if !self.settings.dbsc || credentials.device_bound || credentials.jkt.is_some() {
            return None;
        }
        let challenge = self.challenge_for(&credentials.session_id).ok()?;
        dbsc::registration_header(REGISTRATION_PATH, &challenge)
    }

    fn challenge_for(&self, sid: &str) -> Result<String, ServiceError> {
        let challenge = Challenge {
            sid: sid.to_owned(),
            until: self.now().saturating_add(CHALLENGE_LIFETIME),
            nonce: tessera_core::random::id()?,
        };
        self.sealed_json(Purpose::DbscChallenge, &challenge)
    }

    /// Accepts `challenge` once for session `sid`, now.
    async fn take_challenge(&self, challenge: &str, sid: &str) -> Result<(), ServiceError> {
        let refused = |why: &str| refused(DbscRefusal::Response(why.to_owned()));
        let opened: Challenge = self
            .opened_json(Purpose::DbscChallenge, challenge)
            .ok_or_else(|| refused("not a challenge of ours"))?;
        let now = self.now();
        if opened.sid != sid {
            return Err(refused("the challenge was issued for another session"));
        }
        if opened.until < now {
            return Err(refused("the challenge has expired"));
        }
        let key = tessera_core::dpop::replay_key("dbsc", challenge);
        match self
            .first_sight("dbsc", key, opened.until, CHALLENGE_LIFETIME)
            .await?
        {
            Ok(()) => Ok(()),
            Err(Replay::Seen) => Err(refused("the challenge was answered before")),
            Err(Replay::Full) => Err(refused("too many challenges in flight")),
        }
    }

    /// Registers a browser's key for the cookie session `identity` (`response`: the
    /// `Secure-Session-Response` JWT): starts a session bound to that key, with the same
    /// sign-in, and ends the unbound one. The new session's cookie is a short-lived JWT.
    pub async fn register_device(
        &self,
        identity: &Identity,
        response: &str,
        client: ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        if !self.settings.dbsc {
            return Err(refused(DbscRefusal::Off));
        }
        if identity.device_bound || identity.jkt.is_some() {
            return Err(refused(DbscRefusal::NotBindable));
        }
        let checked = async {
            let registration = dbsc::check_registration(response)
                .map_err(|e| refused(DbscRefusal::Response(why(&e))))?;
            self.take_challenge(&registration.challenge, &identity.session_id)
                .await?;
            Ok(registration)
        }
        .await;
        let ctx = Actor::user(&identity.username, client.clone());
        let details = audit::Details::session(&identity.username, &identity.session_id);
        let registration = self
            .device_refusal_audited("registration", checked, &ctx, details)
            .await?;
        let user = self
            .store
            .user_by_id(&identity.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(TokenError::Revoked)?;
        let key = serde_json::Value::Object(registration.jwk).to_string();
        let client = ClientInfo {
            device_key: Some(key),
            dpop_jkt: None,
            ..client
        };
        // The bound session carries the sign-in of the one it replaces: how and when the user
        // authenticated did not change, and it ends when that one would have.
        let ends_by = identity.times.map(|t| t.absolute_expires_at);
        let credentials = self
            .start_session(&user, identity.amr, ends_by, Delivery::Cookie, &client)
            .await?;
        self.revoke_logged(&identity.session_id).await?;
        let ctx = Actor::user(&user.username, client);
        let details = audit::Details {
            subject: Some(&user.username),
            session_id: Some(&credentials.session_id),
            detail: Some(format!("device key {}", registration.jkt)),
        };
        self.audit(EventKind::DeviceBound, &ctx, details).await;
        Ok(credentials)
    }

    /// A refresh of device-bound session `sid`: without `response`, the challenge to sign; with
    /// a signature by the session's key over a challenge issued for it, the next cookie.
    pub async fn refresh_device(
        &self,
        sid: &str,
        response: Option<&str>,
        client: ClientInfo,
    ) -> Result<DeviceRefresh, ServiceError> {
        if !self.settings.dbsc {
            return Err(refused(DbscRefusal::Off));
        }
        let now = self.now();
        let record = self
            .store
            .session_by_id(&SessionId::from(sid))
            .await?
            .ok_or_else(|| refused(DbscRefusal::UnknownSession))?;
        let Some(key) = record.session.device_key.as_deref() else {
            return Err(refused(DbscRefusal::UnknownSession));
        };
        self.check_session(&record, now).await?;
        let Some(response) = response else {
            return Ok(DeviceRefresh::Challenge(self.challenge_for(sid)?));
        };
        let jwk: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key)
            .map_err(|e| ServiceError::internal_from("reading a session's device key", e))?;
        let checked = async {
            let challenge = dbsc::check_refresh(response, &jwk)
                .map_err(|e| refused(DbscRefusal::Response(why(&e))))?;
            self.take_challenge(&challenge, sid).await
        }
        .await;
        let ctx = Actor::user(&record.user.username, client);
        let details = audit::Details::session(&record.user.username, &record.session.id);
        self.device_refusal_audited("refresh", checked, &ctx, details)
            .await?;
        self.sync_keys_before_minting().await;
        let (credentials, _, _) = self.mint(
            crate::config::TokenFormat::Jwt,
            false,
            &record.user,
            SessionRef::of(&record.session),
            now,
        )?;
        Ok(DeviceRefresh::Renewed(credentials))
    }
}

impl Tessera {
    /// Counts and audits a refused registration or refresh response (`step`): a signature or
    /// challenge that does not check out for a real session may be a stolen cookie at work.
    async fn device_refusal_audited<T>(
        &self,
        step: &'static str,
        result: Result<T, ServiceError>,
        ctx: &Actor,
        mut details: audit::Details<'_>,
    ) -> Result<T, ServiceError> {
        if let Err(ServiceError::Dbsc(DbscRefusal::Response(why))) = &result {
            crate::metrics::dbsc_refused(step);
            details.detail = Some(format!("{step}: {why}"));
            self.audit(EventKind::DeviceRefused, ctx, details).await;
        }
        result
    }
}

/// Why a DBSC JWT was refused, in DBSC's words (the checks are shared with DPoP proofs).
fn why(error: &tessera_core::dpop::DpopError) -> String {
    use tessera_core::dpop::DpopError as E;
    match error {
        E::Malformed => "not a well-formed JWT".into(),
        E::Header(what) => format!("its header is refused ({what})"),
        E::Signature => "its signature does not verify".into(),
        E::Mismatch(claim) => format!("its {claim} is not valid"),
        E::Stale | E::Nonce => "it is not current".into(),
    }
}

/// A refusal as a service error.
fn refused(refusal: DbscRefusal) -> ServiceError {
    ServiceError::Dbsc(refusal)
}
