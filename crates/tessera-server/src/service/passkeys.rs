//! Passkeys (WebAuthn Level 3): registration, username-less sign-in, step-up with a passkey,
//! and the caller's list of passkeys.
//!
//! The ceremonies run in `webauthn-rs`. Their state never leaves the server: it is kept in the
//! store ([`tessera_store::PasskeyStore::put_ceremony`]) under SHA-256 of a random id handed to
//! the client, taken once (of concurrent finishes exactly one gets it) and only before it
//! expires, so a challenge is answered at most once, on any instance.
//!
//! A user's WebAuthn user handle is derived from the tessera user id (see [`user_handle`]), so
//! no store keeps it: a username-less sign-in finds the credential by its id, and the handle the
//! authenticator returns must be the one of the credential's owner.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_core::UnixTime;
use tessera_core::assurance::{Method, Methods};
use tessera_core::ids::UserId;
use tessera_core::opaque::TokenHash;
use tessera_core::{b64, names, random};
use tessera_store::{PasskeyRecord, StoreError, User};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Passkey, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use webauthn_rs_proto::ResidentKeyRequirement;

use super::audit::{self, Actor, EventKind};
use super::{ClientInfo, Credentials, Delivery, Identity, ServiceError, Tessera};

/// How long a ceremony (options handed out, answer pending) stays good, seconds.
pub(super) const CEREMONY_LIFETIME: i64 = 300;
/// Longest passkey name, in characters.
pub const MAX_PASSKEY_NAME_CHARS: usize = 64;
/// Most passkeys one user may register.
pub const MAX_PASSKEYS_PER_USER: usize = 32;

/// Where passkeys are registered: the relying party, from configuration.
#[derive(Debug, Clone)]
pub struct PasskeySettings {
    /// The relying-party id (a domain).
    pub rp_id: String,
    /// The origins ceremonies may run from.
    pub origins: Vec<Url>,
    /// The name authenticators show.
    pub rp_name: String,
}

impl PasskeySettings {
    /// From the configuration: `webauthn_rp_id` (else `public_url`'s host) and
    /// `webauthn_origins` (else `public_url`'s origin). `None` (passkeys off) when either
    /// cannot be named.
    pub fn from_config(config: &crate::config::Config) -> Option<PasskeySettings> {
        let public = config
            .public_url
            .as_deref()
            .and_then(|u| Url::parse(u).ok());
        let rp_id = config
            .webauthn_rp_id
            .clone()
            .or_else(|| public.as_ref().and_then(|u| u.domain().map(str::to_owned)))?;
        let origins: Vec<Url> = if config.webauthn_origins.is_empty() {
            public
                .map(|u| Url::parse(&u.origin().ascii_serialization()))
                .into_iter()
                .flatten()
                .collect()
        } else {
            config
                .webauthn_origins
                .iter()
                .filter_map(|o| Url::parse(o).ok())
                .collect()
        };
        if origins.is_empty() {
            return None;
        }
        Some(PasskeySettings {
            rp_id,
            origins,
            rp_name: config.product_name.clone(),
        })
    }

    /// The relying party these settings describe.
    pub(super) fn build(&self) -> Result<Webauthn, ServiceError> {
        let (first, rest) = self
            .origins
            .split_first()
            .ok_or_else(|| ServiceError::internal("passkeys configured without an origin"))?;
        let mut builder = WebauthnBuilder::new(&self.rp_id, first)
            .map_err(|e| ServiceError::internal_from("webauthn_rp_id and webauthn_origins", e))?
            .rp_name(&self.rp_name);
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        builder
            .build()
            .map_err(|e| ServiceError::internal_from("the WebAuthn relying party", e))
    }
}

/// The WebAuthn user handle of a tessera user: the first 16 bytes of
/// SHA-256(`"tessera webauthn user handle\0"` ‖ user id), as a UUID (version 8, RFC 9562
/// §5.8). Stable for the user's life, never reused (user ids are not), and it names no
/// username or other personal data, as WebAuthn §14.6.1 asks.
pub fn user_handle(user_id: &UserId) -> Uuid {
    let digest = TokenHash::of(&format!("tessera webauthn user handle\0{user_id}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    uuid_v8(bytes)
}

fn uuid_v8(mut bytes: [u8; 16]) -> Uuid {
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// A passkey as the caller's list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyInfo {
    /// The credential id, base64url: how the API names the passkey.
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    /// When it was registered.
    pub created_at: UnixTime,
    /// When it last signed in or stepped up.
    pub last_used_at: Option<UnixTime>,
}

impl PasskeyInfo {
    pub(super) fn of(record: &PasskeyRecord) -> PasskeyInfo {
        PasskeyInfo {
            id: b64::encode(&record.credential_id),
            name: record.name.clone(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
        }
    }
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    Register,
    Login,
    StepUp,
}

/// A ceremony under way, kept in the store until it is finished or expires.
#[derive(Serialize, Deserialize)]
struct Ceremony {
    purpose: Purpose,
    /// The user it was begun for (registration, step-up); none for a username-less sign-in.
    user: Option<String>,
    /// The session it was begun by (registration, step-up).
    session: Option<String>,
    /// webauthn-rs's state of the ceremony.
    state: serde_json::Value,
}

/// Options handed to the browser, with the id of the ceremony they begin.
#[derive(Debug, Clone)]
pub struct Begun<T> {
    /// Give it back with the answer.
    pub ceremony: String,
    /// For `navigator.credentials.create`/`get` (`publicKey` inside).
    pub options: T,
}

impl Tessera {
    fn webauthn(&self) -> Result<&Webauthn, ServiceError> {
        self.webauthn.as_ref().ok_or_else(|| {
            ServiceError::Forbidden(
                "passkeys are off: set webauthn_rp_id and webauthn_origins (or public_url)".into(),
            )
        })
    }

    /// Whether passkeys are configured.
    pub fn passkeys_enabled(&self) -> bool {
        self.webauthn.is_some()
    }

    async fn put_ceremony(&self, ceremony: &Ceremony) -> Result<String, ServiceError> {
        let id = random::id()?;
        let state = serde_json::to_vec(ceremony)
            .map_err(|e| ServiceError::internal_from("encoding a WebAuthn ceremony", e))?;
        let now = self.now();
        self.store
            .put_ceremony(
                &TokenHash::of(&id),
                &state,
                now.saturating_add(CEREMONY_LIFETIME),
                now,
            )
            .await?;
        Ok(id)
    }

    /// Takes the ceremony `id` for `purpose`, once. An unknown, spent, expired or other
    /// ceremony is refused with `refused`.
    async fn take_ceremony(
        &self,
        id: &str,
        purpose: Purpose,
        refused: fn() -> ServiceError,
    ) -> Result<Ceremony, ServiceError> {
        if id.is_empty() || id.len() > 256 {
            return Err(refused());
        }
        let Some(state) = self
            .store
            .take_ceremony(&TokenHash::of(id), self.now())
            .await?
        else {
            return Err(refused());
        };
        let ceremony: Ceremony = serde_json::from_slice(&state)
            .map_err(|e| ServiceError::internal_from("a stored WebAuthn ceremony", e))?;
        if ceremony.purpose != purpose {
            return Err(refused());
        }
        Ok(ceremony)
    }

    /// [`Tessera::take_ceremony`] for a ceremony that only the user and session that began it
    /// may finish (registration, step-up): another's is refused with `refused`, and spent.
    async fn take_own_ceremony(
        &self,
        identity: &Identity,
        id: &str,
        purpose: Purpose,
        refused: fn() -> ServiceError,
    ) -> Result<Ceremony, ServiceError> {
        let taken = self.take_ceremony(id, purpose, refused).await?;
        if taken.user.as_deref() != Some(identity.user_id.as_str())
            || taken.session.as_deref() != Some(identity.session_id.as_str())
        {
            return Err(refused());
        }
        Ok(taken)
    }

    // ------------------------------------------------------------- registration

    /// Begins registering a passkey for the caller: options for
    /// `navigator.credentials.create` asking for a discoverable credential with user
    /// verification, excluding the caller's passkeys. Needs a recent sign-in.
    pub async fn begin_passkey_registration(
        &self,
        identity: &Identity,
    ) -> Result<Begun<CreationChallengeResponse>, ServiceError> {
        self.require_recent_authentication(identity)?;
        let webauthn = self.webauthn()?;
        let user = self.passkey_user(&identity.user_id).await?;
        let existing = self.store.passkeys(&user.id).await?;
        if existing.len() >= MAX_PASSKEYS_PER_USER {
            return Err(ServiceError::Conflict(format!(
                "at most {MAX_PASSKEYS_PER_USER} passkeys per user: remove one first"
            )));
        }
        let exclude = existing.iter().map(|p| p.credential_id.clone()).collect();
        let (mut options, state) = webauthn
            .start_passkey_registration(
                user_handle(&user.id),
                &user.username,
                &user.username,
                Some(exclude),
            )
            .map_err(|e| ServiceError::internal_from("starting a passkey registration", e))?;
        // A passkey signs in without a username: the credential must be discoverable.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
        }
        let ceremony = self
            .put_ceremony(&Ceremony {
                purpose: Purpose::Register,
                user: Some(user.id.to_string()),
                session: Some(identity.session_id.to_string()),
                state: to_value(&state)?,
            })
            .await?;
        Ok(Begun { ceremony, options })
    }

    /// Finishes a registration begun by the same session: checks the authenticator's answer
    /// and stores the passkey under `name`. Audited as `factor.enrolled` (`passkey`).
    pub async fn finish_passkey_registration(
        &self,
        identity: &Identity,
        ceremony: &str,
        name: &str,
        credential: &serde_json::Value,
        client: ClientInfo,
    ) -> Result<PasskeyInfo, ServiceError> {
        self.require_recent_authentication(identity)?;
        let name = passkey_name(name)?;
        let webauthn = self.webauthn()?;
        // One answer for every refusal: no such registration, another session's, or an
        // answer that does not verify; the session stays as it was.
        let refused = || ServiceError::InvalidCode;
        let taken = self
            .take_own_ceremony(identity, ceremony, Purpose::Register, refused)
            .await?;
        let state = serde_json::from_value(taken.state)
            .map_err(|e| ServiceError::internal_from("a stored passkey registration", e))?;
        let credential: RegisterPublicKeyCredential = answer(credential).ok_or_else(refused)?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|_| refused())?;
        let user = self.passkey_user(&identity.user_id).await?;
        let record = PasskeyRecord {
            credential_id: passkey.cred_id().to_vec(),
            user_id: user.id.clone(),
            name,
            passkey: serde_json::to_vec(&passkey)
                .map_err(|e| ServiceError::internal_from("encoding a passkey", e))?,
            created_at: self.now(),
            last_used_at: None,
        };
        match self.store.add_passkey(&record).await {
            Ok(true) => {}
            Ok(false) => return Err(tessera_core::TokenError::Revoked.into()),
            Err(StoreError::Conflict) => {
                return Err(ServiceError::Conflict(
                    "this credential is registered already".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let ctx = Actor::user(&user.username, client);
        let details = audit::Details::about(
            &user.username,
            Some(format!("passkey {}", b64::encode(&record.credential_id))),
        );
        self.audit(EventKind::FactorEnrolled, &ctx, details).await;
        Ok(PasskeyInfo::of(&record))
    }

    // ------------------------------------------------------------- the caller's passkeys

    /// The caller's passkeys, oldest first.
    pub async fn passkeys_of(&self, identity: &Identity) -> Result<Vec<PasskeyInfo>, ServiceError> {
        Ok(self
            .store
            .passkeys(&identity.user_id)
            .await?
            .iter()
            .map(PasskeyInfo::of)
            .collect())
    }

    /// Renames one of the caller's passkeys (`id`: its credential id, base64url).
    pub async fn rename_passkey(
        &self,
        identity: &Identity,
        id: &str,
        name: &str,
    ) -> Result<(), ServiceError> {
        let name = passkey_name(name)?;
        let credential_id = credential_id(id)?;
        if !self
            .store
            .rename_passkey(&identity.user_id, &credential_id, &name)
            .await?
        {
            return Err(no_such_passkey());
        }
        Ok(())
    }

    /// Removes one of the caller's passkeys. Needs a recent sign-in. Audited as
    /// `factor.removed` (`passkey`).
    pub async fn remove_passkey(
        &self,
        identity: &Identity,
        id: &str,
        client: ClientInfo,
    ) -> Result<(), ServiceError> {
        self.require_recent_authentication(identity)?;
        let credential_id = credential_id(id)?;
        if !self
            .store
            .remove_passkey(&identity.user_id, &credential_id)
            .await?
        {
            return Err(no_such_passkey());
        }
        let ctx = Actor::user(&identity.username, client);
        let details = audit::Details::about(&identity.username, Some(format!("passkey {id}")));
        self.audit(EventKind::FactorRemoved, &ctx, details).await;
        Ok(())
    }

    // ------------------------------------------------------------- signing in

    /// Begins a username-less sign-in: options for `navigator.credentials.get` with no
    /// credential listed (the authenticator offers the user's discoverable ones) and user
    /// verification required.
    pub async fn begin_passkey_login(
        &self,
    ) -> Result<Begun<RequestChallengeResponse>, ServiceError> {
        let webauthn = self.webauthn()?;
        let (mut options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| ServiceError::internal_from("starting a passkey sign-in", e))?;
        // A button starts this sign-in, not the autofill of a username field.
        options.mediation = None;
        let ceremony = self
            .put_ceremony(&Ceremony {
                purpose: Purpose::Login,
                user: None,
                session: None,
                state: to_value(&state)?,
            })
            .await?;
        Ok(Begun { ceremony, options })
    }

    /// Finishes a sign-in: the credential names its user, whose passkey must verify the
    /// assertion — and, when the person typed a `username` first, be that user's. Starts a
    /// session signed in with the passkey (`hwk` or `swk`, and `user`: AAL2). `previous` is
    /// ended, as at login.
    pub async fn finish_passkey_login(
        &self,
        ceremony: &str,
        credential: &serde_json::Value,
        username: Option<&str>,
        delivery: Delivery,
        client: ClientInfo,
        previous: Option<&str>,
    ) -> Result<Credentials, ServiceError> {
        let webauthn = self.webauthn()?;
        let taken = self
            .take_ceremony(ceremony, Purpose::Login, || {
                ServiceError::InvalidCredentials
            })
            .await?;
        let state = serde_json::from_value(taken.state)
            .map_err(|e| ServiceError::internal_from("a stored passkey sign-in", e))?;
        let anonymous = Actor {
            actor: None,
            client,
        };
        let Some(credential) = answer::<PublicKeyCredential>(credential) else {
            let detail = "a malformed answer".to_owned();
            return Err(self.passkey_failed(&anonymous, None, detail).await);
        };
        let credential = &credential;
        let (handle, credential_id) =
            match webauthn.identify_discoverable_authentication(credential) {
                Ok(found) => found,
                Err(e) => return Err(self.passkey_refused(&anonymous, None, &e).await),
            };
        let record = self.store.passkey_by_credential(credential_id).await?;
        let user = match &record {
            Some(record) => self.store.user_by_id(&record.user_id).await?,
            None => None,
        };
        let (Some(record), Some(user)) = (record, user.filter(|u| !u.disabled)) else {
            let detail = format!("unknown credential {}", b64::encode(credential_id));
            return Err(self.passkey_failed(&anonymous, None, detail).await);
        };
        let ctx = Actor {
            actor: Some(user.username.clone()),
            ..anonymous
        };
        if user_handle(&user.id) != handle {
            let detail = format!(
                "credential {} answered with another user's handle",
                b64::encode(&record.credential_id)
            );
            return Err(self.passkey_failed(&ctx, Some(&user), detail).await);
        }
        // The options named no user (they never depend on a username, so they tell nobody
        // whether an account exists); a name typed first must be the credential's owner.
        if let Some(named) = username
            && !names::login_username(named).is_ok_and(|n| n == user.username)
        {
            let detail = format!(
                "credential {} is not the named user's",
                b64::encode(&record.credential_id)
            );
            return Err(self.passkey_failed(&ctx, Some(&user), detail).await);
        }
        let mut passkey = stored_passkey(&record)?;
        let result =
            match webauthn.finish_discoverable_authentication_v2(credential, state, &passkey) {
                Ok(result) => result,
                Err(e) => return Err(self.passkey_refused(&ctx, Some((&user, &record)), &e).await),
            };
        if !self.passkey_used(&record, &mut passkey, &result).await? {
            let raced = WebauthnError::CredentialPossibleCompromise;
            return Err(self
                .passkey_refused(&ctx, Some((&user, &record)), &raced)
                .await);
        }
        if let Some(previous) = previous
            && let Ok(old) = self.authenticate(previous).await
        {
            self.revoke_logged(&old.session_id).await?;
        }
        let credentials = self
            .start_session(&user, methods_of(&result), None, delivery, &ctx.client)
            .await?;
        let details = audit::Details {
            subject: Some(&user.username),
            session_id: Some(&credentials.session_id),
            detail: Some(format!("passkey {}", b64::encode(&record.credential_id))),
        };
        self.audit(EventKind::LoginSucceeded, &ctx, details).await;
        Ok(credentials)
    }

    // ------------------------------------------------------------- step-up

    /// Begins a step-up with one of the caller's passkeys: options for
    /// `navigator.credentials.get` listing them.
    pub async fn begin_passkey_step_up(
        &self,
        identity: &Identity,
    ) -> Result<Begun<RequestChallengeResponse>, ServiceError> {
        let webauthn = self.webauthn()?;
        let records = self.store.passkeys(&identity.user_id).await?;
        if records.is_empty() {
            return Err(ServiceError::NotFound("the user has no passkey".into()));
        }
        let passkeys = records
            .iter()
            .map(stored_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| ServiceError::internal_from("starting a passkey step-up", e))?;
        let ceremony = self
            .put_ceremony(&Ceremony {
                purpose: Purpose::StepUp,
                user: Some(identity.user_id.to_string()),
                session: Some(identity.session_id.to_string()),
                state: to_value(&state)?,
            })
            .await?;
        Ok(Begun { ceremony, options })
    }

    /// Finishes a step-up with a passkey, begun by the same session: a new session with the
    /// old one's methods and the passkey's, and the old one ends (as
    /// [`Tessera::step_up`]). The passkey is a fresh sign-in on its own, so the new session
    /// keeps the old one's absolute end only when it carries a method the passkey did not
    /// check again.
    pub async fn finish_passkey_step_up(
        &self,
        identity: &Identity,
        ceremony: &str,
        credential: &serde_json::Value,
        delivery: Delivery,
        client: ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        let webauthn = self.webauthn()?;
        let refused = || ServiceError::InvalidCode;
        let taken = self
            .take_own_ceremony(identity, ceremony, Purpose::StepUp, refused)
            .await?;
        let state = serde_json::from_value(taken.state)
            .map_err(|e| ServiceError::internal_from("a stored passkey step-up", e))?;
        let user = self.passkey_user(&identity.user_id).await?;
        let ctx = Actor::user(&user.username, client);
        let Some(credential) = answer::<PublicKeyCredential>(credential) else {
            let detail = "a malformed answer".to_owned();
            self.passkey_failed(&ctx, Some(&user), detail).await;
            return Err(refused());
        };
        let credential = &credential;
        let record = self
            .store
            .passkey_by_credential(credential.get_credential_id())
            .await?
            .filter(|r| r.user_id == user.id);
        let Some(record) = record else {
            let detail = format!(
                "step-up with unknown credential {}",
                b64::encode(credential.get_credential_id())
            );
            self.passkey_failed(&ctx, Some(&user), detail).await;
            return Err(refused());
        };
        let mut passkey = stored_passkey(&record)?;
        let result = match webauthn.finish_passkey_authentication(credential, &state) {
            Ok(result) => result,
            Err(e) => {
                self.passkey_refused(&ctx, Some((&user, &record)), &e).await;
                return Err(refused());
            }
        };
        if !self.passkey_used(&record, &mut passkey, &result).await? {
            let raced = WebauthnError::CredentialPossibleCompromise;
            self.passkey_refused(&ctx, Some((&user, &record)), &raced)
                .await;
            return Err(refused());
        }
        let credentials = self
            .stepped_up_session(identity, &user, methods_of(&result), delivery, &ctx.client)
            .await?;
        let details = audit::Details {
            subject: Some(&user.username),
            session_id: Some(&credentials.session_id),
            detail: Some(format!("passkey {}", b64::encode(&record.credential_id))),
        };
        self.audit(EventKind::StepUp, &ctx, details).await;
        Ok(credentials)
    }

    // ------------------------------------------------------------- helpers

    async fn passkey_user(&self, user_id: &UserId) -> Result<User, ServiceError> {
        Ok(self
            .store
            .user_by_id(user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(tessera_core::TokenError::Revoked)?)
    }

    /// After a verified assertion: stores the updated counter and backup state, and the time.
    /// False when the store has recorded a use with this counter or a later one meanwhile.
    async fn passkey_used(
        &self,
        record: &PasskeyRecord,
        passkey: &mut Passkey,
        result: &AuthenticationResult,
    ) -> Result<bool, ServiceError> {
        let updated = if result.needs_update() && passkey.update_credential(result) == Some(true) {
            Some(
                serde_json::to_vec(&*passkey)
                    .map_err(|e| ServiceError::internal_from("encoding a passkey", e))?,
            )
        } else {
            None
        };
        // The counter webauthn-rs checked against the stored credential is checked again by
        // the store's compare-and-set: of two uses with one counter (a clone racing the real
        // authenticator, on this instance or another), only one is recorded.
        Ok(self
            .store
            .passkey_used(
                &record.user_id,
                &record.credential_id,
                updated.as_deref(),
                result.counter(),
                self.now(),
            )
            .await?)
    }

    /// Audits an assertion webauthn-rs refused: a counter that went backwards as a possible
    /// clone, anything else as a failure. The answer is `InvalidCredentials`.
    async fn passkey_refused(
        &self,
        ctx: &Actor,
        whose: Option<(&User, &PasskeyRecord)>,
        error: &WebauthnError,
    ) -> ServiceError {
        let credential = whose
            .map(|(_, r)| format!("credential {}", b64::encode(&r.credential_id)))
            .unwrap_or_else(|| "a credential".to_owned());
        if matches!(error, WebauthnError::CredentialPossibleCompromise) {
            crate::metrics::second_factor_failure();
            let details = audit::Details {
                subject: whose.map(|(u, _)| u.username.as_str()),
                session_id: None,
                detail: Some(format!(
                    "{credential}: the signature counter went backwards (cloned authenticator?)"
                )),
            };
            self.audit(EventKind::PasskeyPossiblyCloned, ctx, details)
                .await;
            return ServiceError::InvalidCredentials;
        }
        self.passkey_failed(ctx, whose.map(|(u, _)| u), format!("{credential}: {error}"))
            .await
    }

    async fn passkey_failed(
        &self,
        ctx: &Actor,
        user: Option<&User>,
        detail: String,
    ) -> ServiceError {
        crate::metrics::second_factor_failure();
        let details = audit::Details {
            subject: user.map(|u| u.username.as_str()),
            session_id: None,
            detail: Some(detail),
        };
        self.audit(EventKind::PasskeyFailed, ctx, details).await;
        ServiceError::InvalidCredentials
    }
}

/// The methods a verified assertion proves: `swk` for a key that may be synced (backup
/// eligible), else `hwk`; and `user` when the authenticator verified the user.
fn methods_of(result: &AuthenticationResult) -> Methods {
    let key = if result.backup_eligible() {
        Method::SoftwareKey
    } else {
        Method::HardwareKey
    };
    let methods = Methods::NONE.with(key);
    if result.user_verified() {
        methods.with(Method::UserVerified)
    } else {
        methods
    }
}

/// An authenticator's answer (`credential.toJSON()`) as webauthn-rs reads it; `None` when it
/// is not one. Parsed here rather than by the request body, so a malformed answer is refused
/// like one that does not verify (the same status, audited alike).
fn answer<T: DeserializeOwned>(credential: &serde_json::Value) -> Option<T> {
    T::deserialize(credential).ok()
}

fn stored_passkey(record: &PasskeyRecord) -> Result<Passkey, ServiceError> {
    serde_json::from_slice(&record.passkey)
        .map_err(|e| ServiceError::internal_from("a stored passkey", e))
}

fn to_value<T: Serialize>(state: &T) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(state)
        .map_err(|e| ServiceError::internal_from("encoding a WebAuthn ceremony", e))
}

fn passkey_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_PASSKEY_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ServiceError::BadRequest(format!(
            "a passkey name is 1 to {MAX_PASSKEY_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_owned())
}

fn credential_id(id: &str) -> Result<Vec<u8>, ServiceError> {
    b64::decode(id)
        .filter(|bytes| (1..=1023).contains(&bytes.len()))
        .ok_or_else(no_such_passkey)
}

fn no_such_passkey() -> ServiceError {
    ServiceError::NotFound("no such passkey".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_handle_is_a_stable_version_8_uuid_of_the_user_id() {
        let alice = UserId::from("alice-id");
        let handle = user_handle(&alice);
        assert_eq!(handle, user_handle(&UserId::from("alice-id")));
        assert_ne!(handle, user_handle(&UserId::from("bob-id")));
        assert_eq!(handle.get_version_num(), 8);
        assert_eq!(handle.as_bytes()[8] & 0xc0, 0x80, "the RFC 9562 variant");
    }
}
