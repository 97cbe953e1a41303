//! The service layer: the whole token life cycle, with no HTTP in it.
//!
//! The HTTP API and the CLI both call [`Tessera`]; it owns the store, the keys, the password
//! hasher and the clock.

mod admin;
mod audit;
mod dbsc;
mod dpop;
mod error;
mod factors;
mod hash_pool;
mod keyring;
mod passkeys;
mod revocations;
mod throttle;
mod token_cache;
mod watch;
mod webhook;

use std::sync::Arc;

use hash_pool::HashPool;
use serde::{Deserialize, Serialize};
use tessera_core::assurance::{Methods, Requirement as Assurance};
use tessera_core::at_rest::{MasterKey, Purpose};
use tessera_core::authz::RolePermissions;
use tessera_core::claims::{self, AccessClaims, ClaimRules};
use tessera_core::ids::{SessionId, UserId};
use tessera_core::keys::Algorithm;
use tessera_core::names;
use tessera_core::opaque::{self, OpaqueKind, TokenHash};
use tessera_core::password::{MAX_PASSWORD_BYTES, PasswordHasher, PasswordParams};
use tessera_core::session::{SessionPolicy, SessionTimes};
use tessera_core::{MAX_TOKEN_LEN, TokenError, UnixTime, b64, random, seal};
use tessera_store::{
    Layered, NewSession, RefreshOutcome, Rotation, Session, SessionRecord, Store, User, UserSummary,
};
use token_cache::TokenCache;

pub use admin::UserPatch;
pub use audit::{Actor, EventKind, event_json};
pub use dbsc::{DbscRefusal, DeviceRefresh, REFRESH_PATH as DBSC_REFRESH_PATH};
pub use dpop::{DpopRefusal, DpopSettings, PROOF_MAX_AGE, PresentedProof};
pub use error::{BoxError, ServiceError};
pub use factors::{FactorStatus, SecondFactor, TotpEnrolment};
pub use keyring::{KeyRing, Keys};
pub use passkeys::{
    Begun, MAX_PASSKEY_NAME_CHARS, MAX_PASSKEYS_PER_USER, PasskeyInfo, PasskeySettings,
    user_handle as passkey_user_handle,
};
pub use revocations::{FEED_MAX_WAIT, FEED_PAGE, RevocationBatch};
use throttle::PasswordCheck;
pub use throttle::ThrottlePolicy;
pub use watch::UNKNOWN_KID_RELOAD_INTERVAL;
pub use webhook::{
    WebhookSettings, Webhooks, check_destination as check_webhook_destination,
    signature as webhook_signature,
};

use crate::clock::Clock;
use crate::config::{Config, TokenFormat, whole_seconds};
use crate::metrics::StoreMetrics;
use crate::shutdown::FlushHooks;

/// Longest username accepted, in bytes (SPEC §6).
pub const MAX_USERNAME_BYTES: usize = tessera_core::names::MAX_USERNAME_BYTES;
/// Shortest password accepted when one is set (OWASP ASVS 5.0 §6.2.1).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest user agent kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

/// How the client wants its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// An `HttpOnly` cookie; nothing in the body.
    Cookie,
    /// Tokens in the JSON body, presented as `Authorization: Bearer`.
    Bearer,
}

/// Where a request came from, kept with the session for the caller's device list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client address.
    pub ip: Option<String>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// The DPoP key (its RFC 7638 thumbprint) this request proved the client holds, which
    /// the tokens of a session it starts are bound to (set by the caller from
    /// [`Tessera::binding_for_login`], or from the session being stepped up).
    pub dpop_jkt: Option<String>,
    /// The public key (a JWK as JSON) a browser registered with DBSC, which a cookie session it
    /// starts is bound to (set by [`Tessera::register_device`] only).
    pub device_key: Option<String>,
}

/// Tokens handed to a client after login, refresh or password change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The session these tokens belong to.
    pub session_id: SessionId,
    /// Format of `access_token`.
    pub format: TokenFormat,
    /// The access token.
    pub access_token: String,
    /// When the access token stops being accepted.
    pub access_expires_at: UnixTime,
    /// The refresh token (bearer delivery only).
    pub refresh_token: Option<String>,
    /// The session's absolute end: refresh tokens and opaque tokens never outlive it.
    pub session_expires_at: UnixTime,
    /// The DPoP key the tokens are bound to (`token_type: "DPoP"`), if any.
    #[serde(default)]
    pub jkt: Option<String>,
    /// The session is bound to a browser's key (DBSC): its cookie lives only as long as the
    /// access token and is re-issued against a signature by that key.
    #[serde(default)]
    pub device_bound: bool,
}

/// A request's authenticated session.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Session id.
    pub session_id: SessionId,
    /// User id.
    pub user_id: UserId,
    /// Username.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Effective permissions.
    pub permissions: Vec<String>,
    /// Format of the token presented.
    pub format: TokenFormat,
    /// Session times, when the session record was read (always, except in stateless mode).
    pub times: Option<SessionTimes>,
    /// `exp` of a JWT access token.
    pub token_expires_at: Option<UnixTime>,
    /// How the user signed in.
    pub amr: Methods,
    /// When: the session's creation (`None` for a JWT from before tessera recorded it).
    pub auth_time: Option<UnixTime>,
    /// The DPoP key the token is bound to: every use needs a proof by it.
    pub jkt: Option<String>,
    /// The session is bound to a browser's key (DBSC): its cookie is never renewed on use.
    pub device_bound: bool,
}

impl Identity {
    /// Checks how this session was authenticated against `required` at `now`: the step-up
    /// to ask for when it falls short. A session of unknown authentication time meets no
    /// `max_age`.
    pub fn check_assurance(&self, required: &Assurance, now: UnixTime) -> Result<(), ServiceError> {
        required
            .check(self.amr, self.auth_time.unwrap_or(UnixTime::MIN), now)
            .map_err(ServiceError::StepUpRequired)
    }
}

/// Settings of the service, derived from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timeouts and activity throttling.
    pub policy: SessionPolicy,
    /// `iss`/`aud`/leeway.
    pub rules: ClaimRules,
    /// JWT access-token lifetime, seconds.
    pub access_lifetime: i64,
    /// Refresh grace window, seconds.
    pub refresh_grace: i64,
    /// Format for cookie delivery.
    pub cookie_format: TokenFormat,
    /// Format for bearer delivery.
    pub bearer_format: TokenFormat,
    /// Skip the revocation lookup for JWT access tokens.
    pub stateless: bool,
    /// Most JWTs kept in the verified-token cache (0: no cache).
    pub jwt_cache_capacity: u64,
    /// Algorithm of new signing keys.
    pub algorithm: Algorithm,
    /// Role → permissions.
    pub roles: RolePermissions,
    /// Argon2id parameters.
    pub password: PasswordParams,
    /// Threads that hash passwords, at a lower priority than request handling.
    pub hashing_threads: usize,
    /// Login throttling limits.
    pub throttle: ThrottlePolicy,
    /// Where audit events are sent, if anywhere.
    pub webhook: Option<WebhookSettings>,
    /// Second factors: the TOTP label and how recent a sign-in factor changes need.
    pub factors: factors::FactorSettings,
    /// Passkeys: the WebAuthn relying party, or `None` when passkeys are off.
    pub passkeys: Option<PasskeySettings>,
    /// DPoP-bound bearer tokens.
    pub dpop: DpopSettings,
    /// Device Bound Session Credentials offered on cookie logins.
    pub dbsc: bool,
}

impl Settings {
    /// Derives the service settings from the configuration.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            policy: SessionPolicy {
                idle_timeout: whole_seconds(config.idle_timeout),
                absolute_timeout: whole_seconds(config.absolute_timeout),
                activity_write_interval: whole_seconds(config.activity_write_interval),
            },
            rules: ClaimRules {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: whole_seconds(config.leeway),
            },
            access_lifetime: whole_seconds(config.access_token_lifetime),
            refresh_grace: whole_seconds(config.refresh_grace),
            cookie_format: config.cookie_format,
            bearer_format: config.bearer_format,
            stateless: config.stateless,
            jwt_cache_capacity: config.jwt_cache_capacity,
            algorithm: config.jwt_algorithm,
            roles: RolePermissions::new(config.role_permissions.clone()),
            password: PasswordParams {
                memory_kib: config.argon2_memory_kib,
                iterations: config.argon2_iterations,
                parallelism: config.argon2_parallelism,
            },
            hashing_threads: config.hashing_threads(),
            throttle: ThrottlePolicy {
                account_max_failures: config.login_max_failures,
                address_max_failures: config.login_max_failures_per_address,
                global_max_failures: config.login_max_failures_global,
                window: whole_seconds(config.login_failure_window),
                lockout_base: whole_seconds(config.login_lockout),
                lockout_max: whole_seconds(config.login_lockout_max),
                ipv6_prefix: config.login_ipv6_prefix,
            },
            factors: factors::FactorSettings {
                totp_issuer: config.totp_issuer.clone(),
                recent_authentication: whole_seconds(config.recent_authentication),
                max_code_failures: config.second_factor_max_failures,
                code_failure_window: whole_seconds(config.login_failure_window),
                second_factor_roles: config.second_factor_roles.clone(),
                second_factor_required: config.second_factor_required,
            },
            passkeys: PasskeySettings::from_config(config),
            dbsc: config.dbsc,
            dpop: DpopSettings {
                mode: config.dpop,
                nonce: config.dpop_nonce,
                replay_cache_capacity: usize::try_from(config.dpop_replay_cache_capacity)
                    .unwrap_or(usize::MAX),
            },
            webhook: config.webhook_url.as_ref().map(|url| WebhookSettings {
                url: url.clone(),
                secret: config
                    .webhook_secret
                    .as_ref()
                    .map(|s| s.expose().as_bytes().to_vec())
                    .unwrap_or_default(),
                allow_private: config.webhook_allow_private,
            }),
        }
    }
}

/// The session a token is minted for.
#[derive(Clone, Copy)]
struct SessionRef<'a> {
    id: &'a str,
    times: &'a SessionTimes,
    amr: Methods,
    /// The DPoP key the session's tokens are bound to.
    jkt: Option<&'a str>,
    /// Whether a browser registered a key for the session (DBSC).
    device_bound: bool,
}

impl<'a> SessionRef<'a> {
    /// The session as its tokens describe it.
    fn of(session: &'a Session) -> SessionRef<'a> {
        SessionRef {
            id: &session.id,
            times: &session.times,
            amr: session.amr,
            jkt: session.jkt.as_deref(),
            device_bound: session.device_key.is_some(),
        }
    }
}

/// The successor pair sealed for a refresh repeated inside the grace window.
#[derive(Serialize, Deserialize)]
struct SealedPair {
    credentials: Credentials,
}

/// The tessera service.
pub struct Tessera {
    store: Arc<dyn Store>,
    keys: KeyRing,
    hasher: Arc<PasswordHasher>,
    /// Where Argon2id runs: its own threads, at a lower priority than request handling, one
    /// job per thread at a time.
    hash_pool: HashPool,
    settings: Settings,
    clock: Arc<dyn Clock>,
    webhooks: Webhooks,
    flush_hooks: FlushHooks,
    kid_reloads: watch::KidReloads,
    /// The revocation feed's watch and bounds.
    feed: revocations::Feed,
    /// JWTs verified before; never consulted for revocation (see `token_cache`).
    verified: TokenCache,
    /// The WebAuthn relying party, when passkeys are on.
    webauthn: Option<webauthn_rs::Webauthn>,
    /// DPoP proofs this instance has seen (see `dpop`).
    replays: tessera_core::dpop::ReplayCache,
}

impl Tessera {
    /// Builds the service: loads (or creates) the signing keys, whose private parts the store
    /// keeps encrypted under `master_key`.
    ///
    /// Fails with [`ServiceError::SigningKeys`] when a stored key does not decrypt with
    /// `master_key`.
    pub async fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Tessera, ServiceError> {
        // Every store operation is timed and its failures counted, whatever the backend.
        let store: Arc<dyn Store> = Arc::new(Layered::new(store, StoreMetrics));
        let params = settings.password;
        let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(params))
            .await
            .map_err(|e| ServiceError::internal_from("starting the password hasher", e))?
            .map_err(|e| ServiceError::internal_from("starting the password hasher", e))?;
        let verify_window = settings
            .access_lifetime
            .saturating_add(settings.rules.leeway);
        let keys = KeyRing::load(
            store.as_ref(),
            settings.algorithm,
            verify_window,
            master_key,
            Arc::clone(&clock),
        )
        .await?;
        let hash_pool = HashPool::start(settings.hashing_threads)
            .map_err(|e| ServiceError::internal_from("starting the password hashing threads", e))?;
        let webhooks = match &settings.webhook {
            Some(webhook) => Webhooks::start(webhook.clone()),
            None => Webhooks::disabled(),
        };
        let webauthn = settings
            .passkeys
            .as_ref()
            .map(PasskeySettings::build)
            .transpose()?;
        let flush_hooks = FlushHooks::new();
        // At shutdown, audit events still queued for the webhook are sent before exit.
        let drained = webhooks.drained();
        flush_hooks.register("webhooks", move || drained);
        Ok(Tessera {
            store,
            keys,
            hasher: Arc::new(hasher),
            hash_pool,
            verified: TokenCache::new(settings.jwt_cache_capacity),
            replays: tessera_core::dpop::ReplayCache::new(settings.dpop.replay_cache_capacity),
            settings,
            clock,
            webhooks,
            flush_hooks,
            kid_reloads: watch::KidReloads::default(),
            feed: revocations::Feed::default(),
            webauthn,
        })
    }

    /// Work to finish at shutdown, after the last request (see [`crate::shutdown`]).
    pub fn flush_hooks(&self) -> &FlushHooks {
        &self.flush_hooks
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current time by the service's clock.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// How many sessions are live (not revoked, not expired) now, over all users.
    pub async fn count_live_sessions(&self) -> Result<usize, ServiceError> {
        // The store has no count method yet: listing every live session costs O(sessions)
        // (the metrics exporter calls this at most once a second). A count query should
        // replace it.
        Ok(self.store.list_sessions(None, self.now()).await?.len())
    }

    /// How many JWT checks the verified-token cache has answered (a signature not verified
    /// again) since the service started; for diagnostics and the tests that the cache engages.
    pub fn verified_token_hits(&self) -> u64 {
        self.verified.hits()
    }

    /// `value` as JSON sealed under the master key for `purpose`, in base64url: what tessera
    /// hands a client to bring back unchanged (login tickets, DBSC challenges).
    fn sealed_json<T: Serialize>(
        &self,
        purpose: Purpose,
        value: &T,
    ) -> Result<String, ServiceError> {
        let plain = serde_json::to_vec(value)
            .map_err(|e| ServiceError::internal_from("encoding a sealed value", e))?;
        let sealed = self
            .keys
            .master_key()
            .seal_bytes(purpose, b"", &plain)
            .map_err(|e| ServiceError::internal_from("sealing a value", e))?;
        Ok(b64::encode(&sealed))
    }

    /// What [`Tessera::sealed_json`] sealed for `purpose`, when `text` is that; `None` for
    /// anything else (another purpose or key, altered, not ours).
    fn opened_json<T: serde::de::DeserializeOwned>(
        &self,
        purpose: Purpose,
        text: &str,
    ) -> Option<T> {
        let sealed = b64::decode(text)?;
        let plain = self.keys.master_key().open_bytes(purpose, b"", &sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// The key ring.
    pub fn key_ring(&self) -> &KeyRing {
        &self.keys
    }

    // ---------------------------------------------------------------- login and sessions

    /// Checks a username and password and starts a session.
    ///
    /// `previous` is a session token the client already presented (e.g. its cookie): that
    /// session is ended, so a login always yields a fresh token (no session fixation).
    ///
    /// A user with a second factor must also give a `code` (TOTP or recovery code); without
    /// one the answer is [`ServiceError::SecondFactorRequired`] with a ticket for
    /// [`Tessera::complete_login`].
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
        delivery: Delivery,
        client: ClientInfo,
        previous: Option<&str>,
    ) -> Result<Credentials, ServiceError> {
        // The same normalisation as at creation: a decomposed `é` logs in to the composed name.
        let username = names::login_username(username)?;
        let username = username.as_str();
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(ServiceError::BadRequest(format!(
                "password is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let ctx = Actor {
            actor: None,
            client,
        };
        // Counted before the password is checked, so concurrent guesses cannot outrun the count.
        let attempt = self
            .begin_attempt(PasswordCheck::Login, username, &ctx)
            .await?;
        let user = self.store.user_by_name(username).await?;
        // A disabled user is checked against the dummy hash, like an unknown one.
        let stored = user
            .as_ref()
            .filter(|u| !u.disabled)
            .map(|u| u.password_hash.clone());
        let verified = self.verify_password(password, stored).await?;
        self.settle_attempt(attempt, verified, username, &ctx)
            .await?;
        let Some(mut user) = user.filter(|_| verified) else {
            return Err(ServiceError::InvalidCredentials);
        };
        if self.hasher.needs_rehash(&user.password_hash) {
            user.password_hash = self.hash_password(password).await?;
            self.store.update_user(&user).await?;
        }
        let ctx = Actor {
            actor: Some(user.username.clone()),
            ..ctx
        };
        let amr = self.second_factor_at_login(&user, code, &ctx).await?;
        if let Some(previous) = previous
            && let Ok(old) = self.authenticate(previous).await
        {
            self.revoke_logged(&old.session_id).await?;
        }
        let credentials = self
            .start_session(&user, amr, None, delivery, &ctx.client)
            .await?;
        let details = audit::Details::session(&user.username, &credentials.session_id);
        self.audit(EventKind::LoginSucceeded, &ctx, details).await;
        Ok(credentials)
    }

    /// Starts a session for `user` authenticated by `amr` now. `ends_by` caps its absolute
    /// end (a step-up that did not check the password keeps the old session's end).
    async fn start_session(
        &self,
        user: &User,
        amr: Methods,
        ends_by: Option<UnixTime>,
        delivery: Delivery,
        client: &ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        // A device-bound cookie holds a JWT, so that it expires where it is checked too.
        let format = if client.device_key.is_some() {
            TokenFormat::Jwt
        } else {
            self.format_for(delivery)
        };
        if format == TokenFormat::Jwt {
            self.sync_keys_before_minting().await;
        }
        let now = self.now();
        let mut times = self.settings.policy.start(now);
        if let Some(end) = ends_by {
            times.absolute_expires_at = times.absolute_expires_at.min(end);
            times.idle_expires_at = times.idle_expires_at.min(end);
        }
        let session = Session {
            id: random::id()?.into(),
            user_id: user.id.clone(),
            times,
            ip: client.ip.clone(),
            user_agent: client
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            amr,
            // Only bearer tokens are bound: a cookie carries no proof.
            jkt: client
                .dpop_jkt
                .clone()
                .filter(|_| delivery == Delivery::Bearer),
            // And only cookies are bound to a browser's key.
            device_key: client
                .device_key
                .clone()
                .filter(|_| delivery == Delivery::Cookie),
        };
        let summary = summary_of(user);
        let (credentials, access_hash, refresh_hash) = self.mint(
            format,
            delivery == Delivery::Bearer,
            &summary,
            SessionRef::of(&session),
            now,
        )?;
        self.store
            .create_session(&NewSession {
                session,
                // The user the tokens were minted from: a session backend apart from the users
                // (Redis) keeps it, so verifying never reads the durable store.
                user: summary,
                access_hash,
                refresh_hash,
            })
            .await?;
        Ok(credentials)
    }

    fn format_for(&self, delivery: Delivery) -> TokenFormat {
        match delivery {
            Delivery::Cookie => self.settings.cookie_format,
            Delivery::Bearer => self.settings.bearer_format,
        }
    }

    /// Mints an access token (and a refresh token when `with_refresh`) for a session.
    fn mint(
        &self,
        format: TokenFormat,
        with_refresh: bool,
        user: &UserSummary,
        session: SessionRef<'_>,
        now: UnixTime,
    ) -> Result<(Credentials, Option<TokenHash>, Option<TokenHash>), ServiceError> {
        let SessionRef {
            id: session_id,
            times,
            amr,
            jkt,
            device_bound,
        } = session;
        let (access_token, access_expires_at, access_hash) = match format {
            TokenFormat::Opaque => {
                let token = opaque::generate(OpaqueKind::Session)?;
                (token.token, times.absolute_expires_at, Some(token.hash))
            }
            TokenFormat::Jwt => {
                let exp = now
                    .saturating_add(self.settings.access_lifetime)
                    .min(times.absolute_expires_at);
                // Roles that need a second factor are not in a token signed in without one.
                let roles = self.roles_at(user.roles.clone(), amr);
                let claims = AccessClaims {
                    iss: self.settings.rules.issuer.clone(),
                    aud: self.settings.rules.audience.clone(),
                    sub: user.id.to_string(),
                    sid: session_id.to_owned(),
                    name: user.username.clone(),
                    perms: self.settings.roles.effective(&roles, &user.permissions),
                    roles,
                    iat: now,
                    nbf: now,
                    exp,
                    jti: random::id()?,
                    amr,
                    acr: Some(amr.level().acr().to_owned()),
                    // A session is created by one authentication (a step-up starts another).
                    auth_time: Some(times.created_at),
                    cnf: jkt.map(|jkt| claims::Confirmation {
                        jkt: jkt.to_owned(),
                    }),
                };
                (claims::issue(&self.keys.keys().set, &claims)?, exp, None)
            }
        };
        let refresh = if with_refresh {
            Some(opaque::generate(OpaqueKind::Refresh)?)
        } else {
            None
        };
        let refresh_hash = refresh.as_ref().map(|r| r.hash);
        let credentials = Credentials {
            session_id: session_id.to_owned().into(),
            format,
            access_token,
            access_expires_at,
            refresh_token: refresh.map(|r| r.token),
            session_expires_at: times.absolute_expires_at,
            jkt: jkt.map(str::to_owned),
            device_bound,
        };
        Ok((credentials, access_hash, refresh_hash))
    }

    /// Validates a presented access token (opaque or JWT) and returns whose session it is.
    ///
    /// Opaque tokens are looked up by hash. JWTs are verified by signature and claims, then —
    /// unless `stateless` — their `sid` is looked up so that revocation is immediate. In both
    /// cases the idle and absolute timeouts are enforced and activity is written at most once
    /// per `activity_write_interval`.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, ServiceError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized.into());
        }
        if opaque::looks_like(token, OpaqueKind::Refresh) {
            // A refresh token is never an access token.
            return Err(TokenError::WrongType.into());
        }
        let now = self.now();
        if opaque::looks_like(token, OpaqueKind::Session) {
            let hash = opaque::parse(token, OpaqueKind::Session)?;
            let record = self
                .store
                .session_by_access_hash(&hash)
                .await?
                .ok_or(TokenError::Unknown)?;
            self.check_session(&record, now).await?;
            // Roles that need a second factor count only in a session signed in with one.
            let roles = self.roles_at(record.user.roles, record.session.amr);
            let permissions = self
                .settings
                .roles
                .effective(&roles, &record.user.permissions);
            return Ok(Identity {
                session_id: record.session.id,
                user_id: record.user.id,
                username: record.user.username,
                roles,
                permissions,
                format: TokenFormat::Opaque,
                times: Some(record.session.times),
                token_expires_at: None,
                amr: record.session.amr,
                auth_time: Some(record.session.times.created_at),
                device_bound: record.session.device_key.is_some(),
                jkt: record.session.jkt,
            });
        }
        let (claims, cached) = match self.verified.get(token, now) {
            // The signature of these exact bytes was verified before; the time, issuer and
            // audience rules are re-checked on every use.
            Some(claims) => {
                self.settings.rules.check(&claims, now)?;
                (claims, true)
            }
            None => {
                let claims = self.verify_jwt(token, now).await?;
                (Arc::new(claims), false)
            }
        };
        // Stateless mode reads no session: it cannot be combined with DBSC (`Config::validate`).
        let (times, device_bound) = if self.settings.stateless {
            (None, false)
        } else {
            // Revocation is checked on every request, cached token or not: the cache only
            // spares the signature. A session that no longer exists (user deleted, purged)
            // counts as revoked.
            match self.live_session(&claims.sid, now).await {
                Ok(session) => (Some(session.times), session.device_key.is_some()),
                Err(error) => {
                    self.verified.remove(token);
                    return Err(error);
                }
            }
        };
        if !cached {
            let accept_until = claims.exp.saturating_add(self.settings.rules.leeway);
            self.verified
                .insert(token, Arc::clone(&claims), accept_until, now);
        }
        Ok(Identity {
            session_id: claims.sid.clone().into(),
            user_id: claims.sub.clone().into(),
            username: claims.name.clone(),
            roles: claims.roles.clone(),
            permissions: claims.perms.clone(),
            format: TokenFormat::Jwt,
            times,
            token_expires_at: Some(claims.exp),
            amr: claims.amr,
            auth_time: claims.auth_time,
            jkt: claims.cnf.as_ref().map(|cnf| cnf.jkt.clone()),
            device_bound,
        })
    }

    /// Session `id` when it is live at `now` (activity written when due).
    async fn live_session(&self, id: &str, now: UnixTime) -> Result<Session, ServiceError> {
        let record = self
            .store
            .session_by_id(&SessionId::from(id))
            .await?
            .ok_or(TokenError::Revoked)?;
        self.check_session(&record, now).await?;
        Ok(record.session)
    }

    async fn check_session(
        &self,
        record: &SessionRecord,
        now: UnixTime,
    ) -> Result<(), ServiceError> {
        if record.user.disabled {
            return Err(TokenError::Revoked.into());
        }
        self.settings.policy.check(&record.session.times, now)?;
        if let Some(touch) = self.settings.policy.touch(&record.session.times, now) {
            self.store.touch_session(&record.session.id, touch).await?;
        }
        Ok(())
    }

    /// Re-issues a JWT access token for a cookie session when less than half of its lifetime
    /// is left (cookie clients cannot call the refresh endpoint).
    pub fn renew_jwt_if_due(
        &self,
        identity: &Identity,
    ) -> Result<Option<Credentials>, ServiceError> {
        let (Some(exp), Some(times)) = (identity.token_expires_at, identity.times) else {
            return Ok(None);
        };
        // A device-bound cookie is re-issued only against a signature by the browser's key.
        if identity.device_bound {
            return Ok(None);
        }
        let now = self.now();
        if exp.saturating_sub(now) > self.settings.access_lifetime / 2
            || exp >= times.absolute_expires_at
        {
            return Ok(None);
        }
        let user = UserSummary {
            id: identity.user_id.clone(),
            username: identity.username.clone(),
            roles: identity.roles.clone(),
            permissions: identity.permissions.clone(),
            disabled: false,
        };
        let (credentials, _, _) = self.mint(
            TokenFormat::Jwt,
            false,
            &user,
            SessionRef {
                id: &identity.session_id,
                times: &times,
                amr: identity.amr,
                jkt: identity.jkt.as_deref(),
                device_bound: false,
            },
            now,
        )?;
        Ok(Some(credentials))
    }

    /// Exchanges a refresh token for a new access + refresh pair (rotation).
    ///
    /// Each refresh token works once. Repeating it inside the grace window returns the same
    /// successor pair (concurrent tabs, retries); repeating it later revokes the session.
    ///
    /// The refresh token of a DPoP-bound session needs `proof`, by the session's key; a
    /// refusal leaves the token unspent, so its rightful holder can still use it.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: ClientInfo,
        proof: Option<&PresentedProof<'_>>,
    ) -> Result<Credentials, ServiceError> {
        if refresh_token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized.into());
        }
        let presented = opaque::parse(refresh_token, OpaqueKind::Refresh)?;
        let now = self.now();
        let record = self
            .store
            .session_by_refresh_hash(&presented)
            .await?
            .ok_or(TokenError::Unknown)?;
        if record.user.disabled {
            return Err(TokenError::Revoked.into());
        }
        let ctx = Actor::user(&record.user.username, client);
        let details = || audit::Details::session(&record.user.username, &record.session.id);
        self.check_refresh_binding(record.session.jkt.as_deref(), proof, &ctx, details)
            .await?;
        let format = self.settings.bearer_format;
        if format == TokenFormat::Jwt {
            self.sync_keys_before_minting().await;
        }
        let (successor, new_access_hash, successor_hash) = self.mint(
            format,
            true,
            &record.user,
            SessionRef::of(&record.session),
            now,
        )?;
        let successor_hash =
            successor_hash.ok_or_else(|| ServiceError::internal("no refresh token minted"))?;
        let sealed = serde_json::to_vec(&SealedPair {
            credentials: successor.clone(),
        })
        .map_err(|e| ServiceError::internal_from("encoding the refresh successor", e))?;
        let rotation = Rotation {
            presented,
            successor: successor_hash,
            sealed_successor: seal::seal(refresh_token, &sealed)?,
            new_access_hash,
            grace: self.settings.refresh_grace,
            idle_timeout: self.settings.policy.idle_timeout,
            now,
        };
        match self.store.rotate_refresh(&rotation).await? {
            RefreshOutcome::Rotated(_) => {
                self.audit(EventKind::Refresh, &ctx, details()).await;
                Ok(successor)
            }
            RefreshOutcome::Repeated {
                sealed_successor, ..
            } => {
                let plain = seal::open(refresh_token, &sealed_successor)
                    .ok_or_else(|| ServiceError::internal("sealed successor unreadable"))?;
                let pair: SealedPair = serde_json::from_slice(&plain).map_err(|e| {
                    ServiceError::internal_from("decoding the sealed refresh successor", e)
                })?;
                Ok(pair.credentials)
            }
            RefreshOutcome::ReuseDetected { session_id } => {
                // The store decided it, atomically, whatever the backend.
                crate::metrics::refresh_replay();
                self.log_revoked(&session_id).await?;
                tracing::warn!(session = %session_id, "refresh token reuse: session revoked");
                self.audit(EventKind::RefreshReplayed, &ctx, details())
                    .await;
                Err(ServiceError::RefreshReuse)
            }
            RefreshOutcome::SessionEnded { revoked: true } => Err(TokenError::Revoked.into()),
            RefreshOutcome::SessionEnded { revoked: false } => Err(TokenError::Expired.into()),
            RefreshOutcome::Unknown => Err(TokenError::Unknown.into()),
        }
    }

    /// Ends the caller's session.
    pub async fn logout(
        &self,
        identity: &Identity,
        client: ClientInfo,
    ) -> Result<(), ServiceError> {
        self.revoke_logged(&identity.session_id).await?;
        let ctx = Actor::user(&identity.username, client);
        let details = audit::Details::session(&identity.username, &identity.session_id);
        self.audit(EventKind::Logout, &ctx, details).await;
        Ok(())
    }

    /// The caller's live sessions.
    pub async fn sessions_of(&self, user_id: &UserId) -> Result<Vec<Session>, ServiceError> {
        Ok(self.store.list_sessions(Some(user_id), self.now()).await?)
    }

    /// Revokes one of the caller's sessions; another user's session is "not found".
    pub async fn revoke_own_session(
        &self,
        identity: &Identity,
        id: &str,
        client: ClientInfo,
    ) -> Result<(), ServiceError> {
        let not_found = || ServiceError::NotFound("no such session".into());
        if id.len() > 64 {
            return Err(not_found());
        }
        let id = SessionId::from(id);
        let record = self.store.session_by_id(&id).await?.ok_or_else(not_found)?;
        if record.session.user_id != identity.user_id {
            return Err(not_found());
        }
        if self.revoke_logged(&id).await? {
            let ctx = Actor::user(&identity.username, client);
            self.audit_revocation(&ctx, &identity.username, &id).await;
        }
        Ok(())
    }

    /// Revokes every session of the caller except the current one. Returns how many.
    pub async fn revoke_other_sessions(
        &self,
        identity: &Identity,
        client: ClientInfo,
    ) -> Result<u64, ServiceError> {
        // A stolen session must not be able to lock the owner out of every other device.
        self.require_recent_authentication(identity)?;
        let count = self
            .revoke_user_logged(&identity.user_id, Some(&identity.session_id))
            .await?;
        let ctx = Actor::user(&identity.username, client);
        let details = audit::Details::about(
            &identity.username,
            Some(format!("{count} other session(s)")),
        );
        self.audit(EventKind::SessionRevoked, &ctx, details).await;
        Ok(count)
    }

    /// Records the revocation of one session.
    async fn audit_revocation(&self, ctx: &Actor, subject: &str, session_id: &str) {
        let details = audit::Details::session(subject, session_id);
        self.audit(EventKind::SessionRevoked, ctx, details).await;
    }

    /// Changes the caller's password after checking the current one, starts a fresh session
    /// for the caller and revokes all the user's other sessions (the old one included).
    pub async fn change_password(
        &self,
        identity: &Identity,
        current: &str,
        new: &str,
        delivery: Delivery,
        client: ClientInfo,
    ) -> Result<Credentials, ServiceError> {
        check_new_password(new)?;
        let mut user = self
            .store
            .user_by_id(&identity.user_id)
            .await?
            .ok_or(TokenError::Revoked)?;
        // The new session keeps the old one's DPoP key: the change was made with it.
        let client = ClientInfo {
            dpop_jkt: identity.jkt.clone(),
            ..client
        };
        let ctx = Actor::user(&user.username, client);
        self.verify_current_password(&user, current, &ctx).await?;
        user.password_hash = self.hash_password(new).await?;
        self.store.update_user(&user).await?;
        // The new session is authenticated by what was just checked: the password. A second
        // factor entered earlier is not carried over into a fresh `auth_time`.
        let credentials = self
            .start_session(&user, Methods::PASSWORD, None, delivery, &ctx.client)
            .await?;
        self.revoke_user_logged(&user.id, Some(&credentials.session_id))
            .await?;
        let details = audit::Details::session(&user.username, &credentials.session_id);
        self.audit(EventKind::PasswordChanged, &ctx, details).await;
        Ok(credentials)
    }

    // ---------------------------------------------------------------- passwords

    async fn verify_password(
        &self,
        password: &str,
        stored: Option<String>,
    ) -> Result<bool, ServiceError> {
        let hasher = Arc::clone(&self.hasher);
        let password = password.to_owned();
        self.hash_pool
            .run(move || hasher.verify(&password, stored.as_deref()))
            .await
            .map_err(|e| ServiceError::internal_from("a password check", e))
    }

    async fn hash_password(&self, password: &str) -> Result<String, ServiceError> {
        let hasher = Arc::clone(&self.hasher);
        let password = password.to_owned();
        self.hash_pool
            .run(move || hasher.hash(&password))
            .await
            .map_err(|e| ServiceError::internal_from("a password hash", e))?
            .map_err(|e| ServiceError::BadRequest(e.to_string()))
    }

    /// Picks up signing keys rotated by another instance or by `tessera key rotate`.
    /// Returns whether the keys changed.
    pub async fn sync_keys(&self) -> Result<bool, ServiceError> {
        self.keys.sync(self.store.as_ref()).await
    }

    /// Before minting: a rotation made elsewhere takes effect for new tokens at once. A failed
    /// read is logged and the keys in memory are used (they are valid, at worst not newest).
    async fn sync_keys_before_minting(&self) {
        if let Err(error) = self.sync_keys().await {
            tracing::warn!(%error, "re-reading signing keys failed; signing with the keys in memory");
        }
    }

    /// Verifies a JWT access token. A `kid` we do not hold may come from a rotation made
    /// elsewhere: the keys are reloaded once (rate-limited, see `watch.rs`) and the token tried
    /// again.
    async fn verify_jwt(&self, token: &str, now: UnixTime) -> Result<AccessClaims, ServiceError> {
        let rules = &self.settings.rules;
        match claims::verify(token, &self.keys.keys().set, rules, now) {
            Err(TokenError::UnknownKey) if self.reload_for_unknown_kid().await? => {
                Ok(claims::verify(token, &self.keys.keys().set, rules, now)?)
            }
            other => Ok(other?),
        }
    }

    /// Decodes and verifies a token for an operator: the JWT claims or the session record.
    pub async fn inspect(&self, token: &str) -> Result<Inspection, ServiceError> {
        let claims = if opaque::looks_like(token, OpaqueKind::Session) {
            None
        } else {
            Some(self.verify_jwt(token, self.now()).await?)
        };
        let record = match &claims {
            Some(c) => {
                self.store
                    .session_by_id(&SessionId::from(c.sid.as_str()))
                    .await?
            }
            None => {
                let hash = opaque::parse(token, OpaqueKind::Session)?;
                self.store.session_by_access_hash(&hash).await?
            }
        };
        let status = match &record {
            None => "unknown",
            Some(r) if r.user.disabled => "revoked",
            Some(r) => match self.settings.policy.check(&r.session.times, self.now()) {
                Ok(()) => "valid",
                Err(TokenError::Revoked) => "revoked",
                Err(_) => "expired",
            },
        };
        Ok(Inspection {
            claims,
            session: record,
            status,
        })
    }
}

/// What `tessera token inspect` shows.
#[derive(Debug)]
pub struct Inspection {
    /// The verified claims, for a JWT.
    pub claims: Option<AccessClaims>,
    /// The session record behind the token.
    pub session: Option<SessionRecord>,
    /// `valid`, `revoked`, `expired` or `unknown`.
    pub status: &'static str,
}

pub(crate) fn summary_of(user: &User) -> UserSummary {
    UserSummary {
        id: user.id.clone(),
        username: user.username.clone(),
        roles: user.roles.clone(),
        permissions: user.permissions.clone(),
        disabled: user.disabled,
    }
}

pub(crate) fn dedup(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

/// A name refused by [`names`] is the caller's mistake: 400 with the rule it broke.
impl From<names::NameError> for ServiceError {
    fn from(error: names::NameError) -> ServiceError {
        ServiceError::BadRequest(error.to_string())
    }
}

/// Checks every role and permission name of a user against [`names`]' charset.
pub(crate) fn check_authz_names(
    roles: &[String],
    permissions: &[String],
) -> Result<(), ServiceError> {
    for role in roles {
        names::check_role(role)?;
    }
    for permission in permissions {
        names::check_permission(permission)?;
    }
    Ok(())
}

pub(crate) fn check_new_password(password: &str) -> Result<(), ServiceError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ServiceError::BadRequest(format!(
            "password must be {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}
