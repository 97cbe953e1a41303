//! Second factors and step-up: TOTP enrolment, recovery codes, the second step of a login, and
//! stepping an existing session up to a stronger or fresher authentication.
//!
//! A session never changes how it was authenticated: a login's second step and every step-up
//! start a new session (and end the one presented), as a login does. So a token stolen before
//! a step-up never gains the stronger authentication, and `auth_time` is the session's
//! creation time.

use serde::{Deserialize, Serialize};
use tessera_core::assurance::{Aal, Method, Methods, Requirement};
use tessera_core::at_rest::Purpose;
use tessera_core::ids::UserId;
use tessera_core::{UnixTime, totp};
use tessera_store::{TotpFactor, User};

use super::audit::{self, Actor, EventKind};
use super::passkeys::PasskeyInfo;
use super::{ClientInfo, Credentials, Delivery, Identity, ServiceError, Tessera};

/// How long a login ticket (password checked, second factor pending) stays good.
pub(super) const TICKET_LIFETIME: i64 = 300;

/// Settings of second factors.
#[derive(Debug, Clone)]
pub struct FactorSettings {
    /// The issuer authenticator apps show beside the account name.
    pub totp_issuer: String,
    /// Seconds since sign-in within which a session may enrol or remove a factor, or get new
    /// recovery codes.
    pub recent_authentication: i64,
    /// Wrong codes per account in one window before codes are refused.
    pub max_code_failures: u32,
    /// The window of that count, seconds.
    pub code_failure_window: i64,
    /// Roles that count only in sessions signed in with a second factor (AAL2).
    pub second_factor_roles: Vec<String>,
    /// Every session needs a second factor: below AAL2 it holds no role, and forward auth
    /// asks it to step up.
    pub second_factor_required: bool,
}

/// A user's second factors, as the account page and `GET /v1/factors` show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FactorStatus {
    /// `none`, `pending` (enrolment begun, not confirmed) or `confirmed`.
    pub totp: &'static str,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Registered passkeys, oldest first.
    pub passkeys: Vec<PasskeyInfo>,
}

/// What an enrolment shows once: the secret, as text, URI and QR code.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    /// The secret as base32, for typing in.
    pub secret: String,
    /// The `otpauth://` URI.
    pub uri: String,
    /// The URI as an SVG QR code.
    pub qr_svg: String,
}

/// A second factor presented: a TOTP code or a recovery code.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// Six digits from the authenticator app.
    Totp(&'a str),
    /// One of the recovery codes.
    RecoveryCode(&'a str),
}

impl<'a> SecondFactor<'a> {
    /// Six digits are a TOTP code; anything else is tried as a recovery code.
    pub fn parse(code: &'a str) -> SecondFactor<'a> {
        let trimmed = code.trim();
        if trimmed.len() == 6 && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            SecondFactor::Totp(trimmed)
        } else {
            SecondFactor::RecoveryCode(code)
        }
    }
}

/// What a login ticket holds, sealed under the master key.
#[derive(Serialize, Deserialize)]
struct Ticket {
    /// The user whose password was checked.
    user: String,
    /// The methods checked so far.
    amr: u8,
    /// Until when the ticket is good.
    until: UnixTime,
}

impl Tessera {
    // ------------------------------------------------------------- the second step of a login

    /// At login, after the password: the methods the session gets, or
    /// [`ServiceError::SecondFactorRequired`] when the user has a confirmed TOTP factor and no
    /// `code` was given.
    pub(super) async fn second_factor_at_login(
        &self,
        user: &User,
        code: Option<&str>,
        ctx: &Actor,
    ) -> Result<Methods, ServiceError> {
        let Some(factor) = self.confirmed_totp(&user.id).await? else {
            return Ok(Methods::PASSWORD);
        };
        match code {
            Some(code) => {
                self.check_code(user, Some(&factor), SecondFactor::parse(code), ctx)
                    .await?;
                Ok(Methods::PASSWORD.with(Method::OneTimeCode))
            }
            None => Err(ServiceError::SecondFactorRequired {
                ticket: self.ticket_for(user, Methods::PASSWORD)?,
            }),
        }
    }

    /// The second step of a login: a ticket from the first step and a code.
    pub async fn complete_login(
        &self,
        ticket: &str,
        code: &str,
        delivery: Delivery,
        client: ClientInfo,
        previous: Option<&str>,
    ) -> Result<Credentials, ServiceError> {
        let (user, amr) = self.open_ticket(ticket).await?;
        let ctx = Actor::user(&user.username, client);
        let factor = self.confirmed_totp(&user.id).await?;
        self.check_code(&user, factor.as_ref(), SecondFactor::parse(code), &ctx)
            .await?;
        if let Some(previous) = previous
            && let Ok(old) = self.authenticate(previous).await
        {
            self.revoke_logged(&old.session_id).await?;
        }
        let amr = amr.with(Method::OneTimeCode);
        let credentials = self
            .start_session(&user, amr, None, delivery, &ctx.client)
            .await?;
        let details = audit::Details::session(&user.username, &credentials.session_id);
        self.audit(EventKind::LoginSucceeded, &ctx, details).await;
        Ok(credentials)
    }

    fn ticket_for(&self, user: &User, amr: Methods) -> Result<String, ServiceError> {
        let ticket = Ticket {
            user: user.id.to_string(),
            amr: amr.bits(),
            until: self.now().saturating_add(TICKET_LIFETIME),
        };
        self.sealed_json(Purpose::LoginTicket, &ticket)
    }

    /// The user and methods of a ticket that is genuine, unexpired and whose user can still
    /// sign in; `InvalidCredentials` otherwise (the client starts the login again).
    async fn open_ticket(&self, ticket: &str) -> Result<(User, Methods), ServiceError> {
        let refused = || ServiceError::InvalidCredentials;
        if ticket.len() > 1024 {
            return Err(refused());
        }
        let ticket: Ticket = self
            .opened_json(Purpose::LoginTicket, ticket)
            .ok_or_else(refused)?;
        if ticket.until <= self.now() {
            return Err(refused());
        }
        let user = self
            .store
            .user_by_id(&UserId::from(ticket.user.as_str()))
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(refused)?;
        Ok((user, Methods::from_bits(ticket.amr)))
    }

    // ------------------------------------------------------------- step-up

    /// Steps the caller's session up: checks what is given (the password, a code, or both),
    /// starts a new session authenticated by the old session's methods and these, and ends the
    /// old one. When a method of the old session is not checked again, the new session keeps
    /// the old one's absolute end.
    pub async fn step_up(
        &self,
        identity: &Identity,
        password: Option<&str>,
        code: Option<&str>,
        delivery: Delivery,
        client: ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        if password.is_none() && code.is_none() {
            return Err(ServiceError::BadRequest(
                "give the password, a code, or both".into(),
            ));
        }
        let user = self.user_of(identity).await?;
        let ctx = Actor::user(&user.username, client);
        let mut checked = Methods::NONE;
        if let Some(password) = password {
            if password.len() > tessera_core::password::MAX_PASSWORD_BYTES {
                return Err(ServiceError::InvalidCredentials);
            }
            self.verify_current_password(&user, password, &ctx).await?;
            checked = checked.with(Method::Password);
        }
        if let Some(code) = code {
            let factor = self.confirmed_totp(&user.id).await?;
            self.check_code(&user, factor.as_ref(), SecondFactor::parse(code), &ctx)
                .await?;
            checked = checked.with(Method::OneTimeCode);
        }
        let credentials = self
            .stepped_up_session(identity, &user, checked, delivery, &ctx.client)
            .await?;
        let details = audit::Details::session(&user.username, &credentials.session_id);
        self.audit(EventKind::StepUp, &ctx, details).await;
        Ok(credentials)
    }

    // ------------------------------------------------------------- enrolment

    /// The caller's factors.
    pub async fn factors_of(&self, identity: &Identity) -> Result<FactorStatus, ServiceError> {
        self.factor_status(&identity.user_id).await
    }

    /// A user's factors, for an administrator.
    pub async fn user_factors(&self, username: &str) -> Result<FactorStatus, ServiceError> {
        let user = self.user(username).await?;
        self.factor_status(&user.id).await
    }

    async fn factor_status(&self, user_id: &UserId) -> Result<FactorStatus, ServiceError> {
        let totp = match self.store.totp_factor(user_id).await? {
            None => "none",
            Some(f) if f.confirmed => "confirmed",
            Some(_) => "pending",
        };
        Ok(FactorStatus {
            totp,
            recovery_codes_left: self.store.count_recovery_codes(user_id).await?,
            passkeys: self
                .store
                .passkeys(user_id)
                .await?
                .iter()
                .map(PasskeyInfo::of)
                .collect(),
        })
    }

    /// Removes every second factor of a user (a lost phone), passkeys included, and revokes all
    /// their sessions, so none keeps a sign-in made with the removed factor. Audited. Returns
    /// whether there was a factor to remove.
    pub async fn reset_factors(&self, ctx: &Actor, username: &str) -> Result<bool, ServiceError> {
        let user = self.user(username).await?;
        let mut removed = self.store.remove_totp_factor(&user.id).await?;
        self.store.put_recovery_codes(&user.id, &[]).await?;
        for passkey in self.store.passkeys(&user.id).await? {
            removed |= self
                .store
                .remove_passkey(&user.id, &passkey.credential_id)
                .await?;
        }
        self.revoke_user_logged(&user.id, None).await?;
        let details = audit::Details::about(&user.username, Some("all factors reset".into()));
        self.audit(EventKind::FactorRemoved, ctx, details).await;
        Ok(removed)
    }

    /// The roles a session signed in with `amr` holds: below AAL2, none when
    /// `second_factor_required`, else all but the `second_factor_roles`.
    pub(super) fn roles_at(&self, mut roles: Vec<String>, amr: Methods) -> Vec<String> {
        let settings = &self.settings.factors;
        if amr.level() < Aal::Aal2 {
            if settings.second_factor_required {
                roles.clear();
            } else {
                roles.retain(|role| !settings.second_factor_roles.contains(role));
            }
        }
        roles
    }

    /// What every session must meet, whatever it asks for: AAL2 when
    /// `second_factor_required`, else nothing.
    pub fn required_of_every_session(&self) -> Requirement {
        Requirement {
            aal: self
                .settings
                .factors
                .second_factor_required
                .then_some(Aal::Aal2),
            max_age: None,
        }
    }

    /// Begins TOTP enrolment: a new secret, shown once and kept sealed until a code confirms
    /// it. Replaces an unconfirmed one; a confirmed factor must be removed first.
    pub async fn begin_totp(&self, identity: &Identity) -> Result<TotpEnrolment, ServiceError> {
        self.require_recent_authentication(identity)?;
        if let Some(factor) = self.store.totp_factor(&identity.user_id).await?
            && factor.confirmed
        {
            return Err(ServiceError::Conflict(
                "a TOTP factor is enrolled already: remove it first".into(),
            ));
        }
        let secret = totp::new_secret()?;
        let generator = self.generator(&secret, &identity.username)?;
        let enrolment = TotpEnrolment {
            secret: generator.secret_base32(),
            uri: generator
                .uri()
                .map_err(|e| ServiceError::internal_from("a TOTP URI", e))?,
            qr_svg: generator
                .qr_svg()
                .map_err(|e| ServiceError::internal_from("a TOTP QR code", e))?,
        };
        let factor = TotpFactor {
            sealed_secret: self.seal_secret(&identity.user_id, &secret)?,
            confirmed: false,
            created_at: self.now(),
            last_step: 0,
        };
        if !self
            .store
            .put_totp_factor(&identity.user_id, &factor)
            .await?
        {
            return Err(tessera_core::TokenError::Revoked.into());
        }
        Ok(enrolment)
    }

    /// Confirms TOTP enrolment with a code from the app; returns the recovery codes, shown
    /// once.
    pub async fn confirm_totp(
        &self,
        identity: &Identity,
        code: &str,
        client: ClientInfo,
    ) -> Result<Vec<String>, ServiceError> {
        self.require_recent_authentication(identity)?;
        let user = self.user_of(identity).await?;
        let ctx = Actor::user(&user.username, client);
        let Some(factor) = self.store.totp_factor(&user.id).await? else {
            return Err(ServiceError::NotFound("no TOTP enrolment was begun".into()));
        };
        if factor.confirmed {
            return Err(ServiceError::Conflict(
                "the TOTP factor is confirmed already".into(),
            ));
        }
        self.check_totp(&user, &factor, code, true, &ctx).await?;
        let codes = self.replace_recovery_codes(&user).await?;
        let details = audit::Details::about(&user.username, Some("totp".into()));
        self.audit(EventKind::FactorEnrolled, &ctx, details).await;
        Ok(codes)
    }

    /// Removes the caller's TOTP factor and recovery codes.
    pub async fn remove_totp(
        &self,
        identity: &Identity,
        client: ClientInfo,
    ) -> Result<(), ServiceError> {
        self.require_recent_authentication(identity)?;
        let user = self.user_of(identity).await?;
        if !self.store.remove_totp_factor(&user.id).await? {
            return Err(ServiceError::NotFound("no TOTP factor is enrolled".into()));
        }
        self.store.put_recovery_codes(&user.id, &[]).await?;
        let ctx = Actor::user(&user.username, client);
        let details = audit::Details::about(&user.username, Some("totp".into()));
        self.audit(EventKind::FactorRemoved, &ctx, details).await;
        Ok(())
    }

    /// New recovery codes for the caller, replacing the old ones; shown once.
    pub async fn new_recovery_codes(
        &self,
        identity: &Identity,
        client: ClientInfo,
    ) -> Result<Vec<String>, ServiceError> {
        self.require_recent_authentication(identity)?;
        let user = self.user_of(identity).await?;
        if self.confirmed_totp(&user.id).await?.is_none() {
            return Err(ServiceError::Conflict(
                "recovery codes go with a second factor: enrol one first".into(),
            ));
        }
        let codes = self.replace_recovery_codes(&user).await?;
        let ctx = Actor::user(&user.username, client);
        let details = audit::Details::about(&user.username, Some("recovery codes".into()));
        self.audit(EventKind::FactorEnrolled, &ctx, details).await;
        Ok(codes)
    }

    // ------------------------------------------------------------- checking codes

    /// The user's TOTP factor when it is confirmed (an unconfirmed one signs nobody in).
    /// The session a step-up starts, having checked `checked` just now, and the end of the
    /// one presented (`identity`).
    ///
    /// A method of the old session not checked again is carried over, as NIST SP 800-63B §7.2
    /// allows a reauthentication with one factor within the session's lifetime; then the new
    /// session keeps the old one's absolute end, so no factor outlives the session it was
    /// entered in. Checking every method starts afresh.
    pub(super) async fn stepped_up_session(
        &self,
        identity: &Identity,
        user: &User,
        checked: Methods,
        delivery: Delivery,
        client: &ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        let carried = Methods::from_bits(identity.amr.bits() & !checked.bits());
        let amr = identity.amr.union(checked);
        let ends_by = (carried != Methods::NONE)
            .then(|| identity.times.map(|t| t.absolute_expires_at))
            .flatten();
        // The new session keeps the old one's DPoP key: the step-up was made with it.
        let client = ClientInfo {
            dpop_jkt: identity.jkt.clone(),
            ..client.clone()
        };
        let credentials = self
            .start_session(user, amr, ends_by, delivery, &client)
            .await?;
        self.revoke_logged(&identity.session_id).await?;
        Ok(credentials)
    }

    async fn confirmed_totp(&self, user_id: &UserId) -> Result<Option<TotpFactor>, ServiceError> {
        Ok(self
            .store
            .totp_factor(user_id)
            .await?
            .filter(|f| f.confirmed))
    }

    /// Checks a code for `user`, whose confirmed factor is `factor`, throttled per account on
    /// the shared counters and audited. A user without a factor has nothing to guess, but the
    /// code is counted and audited all the same, and refused with the same answer.
    async fn check_code(
        &self,
        user: &User,
        factor: Option<&TotpFactor>,
        code: SecondFactor<'_>,
        ctx: &Actor,
    ) -> Result<(), ServiceError> {
        let Some(factor) = factor else {
            let attempt = self.begin_code_attempt(user, ctx).await?;
            return self
                .settle_code_attempt(attempt, false, user, ctx, "no second factor")
                .await;
        };
        match code {
            SecondFactor::Totp(code) => self.check_totp(user, factor, code, false, ctx).await,
            SecondFactor::RecoveryCode(code) => self.check_recovery_code(user, code, ctx).await,
        }
    }

    async fn check_totp(
        &self,
        user: &User,
        factor: &TotpFactor,
        code: &str,
        confirm: bool,
        ctx: &Actor,
    ) -> Result<(), ServiceError> {
        let guard = self.begin_code_attempt(user, ctx).await?;
        let secret = self
            .keys
            .master_key()
            .open_bytes(
                Purpose::TotpSecret,
                user.id.as_bytes(),
                &factor.sealed_secret,
            )
            .ok_or_else(|| ServiceError::internal("a TOTP secret does not open"))?;
        let generator = self.generator(&secret, &user.username)?;
        let accepted = match generator.matching_step(code, self.now()) {
            // The store accepts each step once, on every instance (RFC 6238 §5.2).
            Some(step) => self.store.accept_totp_step(&user.id, step, confirm).await?,
            None => false,
        };
        self.settle_code_attempt(guard, accepted, user, ctx, "totp")
            .await
    }

    async fn check_recovery_code(
        &self,
        user: &User,
        code: &str,
        ctx: &Actor,
    ) -> Result<(), ServiceError> {
        let guard = self.begin_code_attempt(user, ctx).await?;
        let used = match totp::recovery_code_hash(code) {
            Some(hash) => self.store.use_recovery_code(&user.id, &hash).await?,
            None => false,
        };
        if used {
            let details = audit::Details::about(&user.username, Some("recovery code".into()));
            self.audit(EventKind::RecoveryCodeUsed, ctx, details).await;
        }
        self.settle_code_attempt(guard, used, user, ctx, "recovery code")
            .await
    }

    /// Counts a code attempt for the account before it is checked, so concurrent guesses on
    /// any number of instances cannot outrun the count; refuses once the window's failures
    /// reach the limit.
    async fn begin_code_attempt(
        &self,
        user: &User,
        ctx: &Actor,
    ) -> Result<CodeAttempt, ServiceError> {
        let policy = &self.settings.factors;
        let key = format!("otp:{}", user.id);
        let now = self.now();
        let hit = self
            .store
            .hit_counter(&key, now, policy.code_failure_window)
            .await?;
        if hit.count > policy.max_code_failures {
            self.store.release_counter(&key, hit.window_start).await?;
            let details = audit::Details::about(&user.username, None);
            self.audit(EventKind::SecondFactorThrottled, ctx, details)
                .await;
            return Err(ServiceError::RateLimited {
                retry_after: (hit.window_start + policy.code_failure_window - now).max(1),
            });
        }
        Ok(CodeAttempt { key, hit })
    }

    /// A right code gives its hit back; a wrong one stays counted and is audited.
    async fn settle_code_attempt(
        &self,
        attempt: CodeAttempt,
        accepted: bool,
        user: &User,
        ctx: &Actor,
        kind: &str,
    ) -> Result<(), ServiceError> {
        if accepted {
            self.store
                .release_counter(&attempt.key, attempt.hit.window_start)
                .await?;
            return Ok(());
        }
        crate::metrics::second_factor_failure();
        let details = audit::Details::about(&user.username, Some(kind.to_owned()));
        self.audit(EventKind::SecondFactorFailed, ctx, details)
            .await;
        Err(ServiceError::InvalidCode)
    }

    // ------------------------------------------------------------- helpers

    /// Refuses a session signed in longer than `recent_authentication` ago with a step-up:
    /// what sensitive operations (factor changes, revoking other sessions, the admin API's
    /// changes) ask of the session that makes them.
    pub fn require_recent_authentication(&self, identity: &Identity) -> Result<(), ServiceError> {
        let required = tessera_core::assurance::Requirement {
            aal: None,
            max_age: Some(self.settings.factors.recent_authentication),
        };
        identity.check_assurance(&required, self.now())
    }

    async fn user_of(&self, identity: &Identity) -> Result<User, ServiceError> {
        Ok(self
            .store
            .user_by_id(&identity.user_id)
            .await?
            .ok_or(tessera_core::TokenError::Revoked)?)
    }

    fn generator(&self, secret: &[u8], username: &str) -> Result<totp::Generator, ServiceError> {
        totp::Generator::new(secret, &self.settings.factors.totp_issuer, username)
            .map_err(|e| ServiceError::internal_from("a TOTP generator", e))
    }

    fn seal_secret(&self, user_id: &UserId, secret: &[u8]) -> Result<Vec<u8>, ServiceError> {
        // Bound to the user: a sealed secret copied to another user's row does not open.
        self.keys
            .master_key()
            .seal_bytes(Purpose::TotpSecret, user_id.as_bytes(), secret)
            .map_err(|e| ServiceError::internal_from("sealing a TOTP secret", e))
    }

    async fn replace_recovery_codes(&self, user: &User) -> Result<Vec<String>, ServiceError> {
        let codes = totp::new_recovery_codes()?;
        let hashes: Vec<_> = codes.iter().map(|(_, hash)| *hash).collect();
        self.store.put_recovery_codes(&user.id, &hashes).await?;
        Ok(codes.into_iter().map(|(shown, _)| shown).collect())
    }
}

/// A code attempt counted on the account's shared counter.
struct CodeAttempt {
    key: String,
    hit: tessera_store::Counter,
}
