//! DPoP (RFC 9449) in the service: which key new tokens are bound to, and the checks on every
//! use of a bound token.
//!
//! The proof itself is checked by [`tessera_core::dpop::check_proof`] (signature, `htm`,
//! `htu`, `iat`, `ath`, nonce); this module adds what needs state: the `jti` seen once on any
//! instance, the server's nonces, and the comparison with the key a session is bound to.
//!
//! # Security
//! - A binding is set when a session starts and never changes: refreshes and step-ups keep it,
//!   and every refresh of a bound session needs a proof by the same key. A bound token is
//!   refused without a proof whatever `dpop` says, so turning DPoP off never turns bound tokens
//!   into bearer tokens.
//! - `jti`s are remembered for as long as a proof is accepted: in this instance's memory
//!   (bounded; full, it refuses rather than forgets), and, where instances on other hosts share
//!   the store, in its shared counters, so a proof replayed on another instance is refused too;
//!   the store drops them when their window ends. An embedded store serves one instance: its
//!   memory is the whole cache, and a first sight costs no write.
//! - Nonces are a MAC of a two-minute window under the master key: every instance issues and
//!   accepts the same ones, nothing is stored, and nobody without the master key can make one.

use tessera_core::at_rest::Purpose;
use tessera_core::dpop::{self, DpopError, Proof, ProofCheck, Replay};
use tessera_core::{UnixTime, b64};

use super::{Actor, ClientInfo, Delivery, EventKind, Identity, ServiceError, Tessera, audit};
use crate::config::DpopMode;

pub use tessera_core::dpop::PROOF_MAX_AGE;
/// How long one nonce is issued, in seconds; the one before stays accepted, so a nonce works
/// for two to four minutes.
const NONCE_WINDOW: i64 = 120;

/// DPoP settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct DpopSettings {
    /// Whether new bearer tokens are bound.
    pub mode: DpopMode,
    /// Whether proofs must carry the server's nonce.
    pub nonce: bool,
    /// Most proofs remembered in memory.
    pub replay_cache_capacity: usize,
}

/// A DPoP proof a request carries, with what it must name: the request's method and URL.
#[derive(Debug, Clone, Copy)]
pub struct PresentedProof<'a> {
    /// The `DPoP` header.
    pub proof: &'a str,
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's URL as the client addressed it (`htu`).
    pub url: &'a str,
}

/// Why a request was refused for its DPoP proof, or for lacking one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopRefusal {
    /// The proof fails a check of RFC 9449 §4.3 (or lacks the current nonce).
    #[error(transparent)]
    Proof(#[from] DpopError),
    /// The proof's `jti` was seen before, on this instance or another.
    #[error("this DPoP proof was used before")]
    Replayed,
    /// The proof is signed by another key than the one the token is bound to.
    #[error("the DPoP proof is signed by another key than the one the token is bound to")]
    WrongKey,
    /// The token is bound and came without a proof, or as a plain `Bearer` token.
    #[error("the token is DPoP-bound: send it as `Authorization: DPoP` with a DPoP proof")]
    Missing,
    /// `Authorization: DPoP` with a token that is not bound.
    #[error("the token is not DPoP-bound: send it as `Authorization: Bearer`")]
    NotBound,
    /// `dpop = "required"` and a bearer login or refresh came without a proof.
    #[error("bearer tokens are issued only with a DPoP proof here")]
    Required,
    /// A proof with a login that asked for cookie delivery: DPoP binds bearer tokens.
    #[error("DPoP binds bearer tokens: ask for `delivery: \"bearer\"`")]
    NotBearer,
    /// An instance alone (embedded store) holds as many live proofs as it may remember.
    #[error("too many DPoP proofs in flight; retry in a minute")]
    Busy,
}

impl DpopRefusal {
    /// The OAuth error code (RFC 9449 §7.1, §8): `use_dpop_nonce` for a nonce,
    /// `invalid_token` for a token that is not bound, `invalid_dpop_proof` otherwise.
    pub fn error_code(&self) -> &'static str {
        match self {
            DpopRefusal::Proof(error) => error.error_code(),
            DpopRefusal::NotBound => "invalid_token",
            _ => "invalid_dpop_proof",
        }
    }

    /// The metric label and audit detail: a fixed word.
    pub fn reason(&self) -> &'static str {
        match self {
            DpopRefusal::Proof(DpopError::Nonce) => "nonce",
            DpopRefusal::Proof(_) => "invalid",
            DpopRefusal::Replayed => "replayed",
            DpopRefusal::WrongKey => "wrong_key",
            DpopRefusal::Missing => "missing",
            DpopRefusal::NotBound => "not_bound",
            DpopRefusal::Required | DpopRefusal::NotBearer => "required",
            DpopRefusal::Busy => "busy",
        }
    }

    /// True when the refusal suggests a stolen token: a valid bound token used without its
    /// key, or a proof used twice. Such refusals are audited.
    fn suggests_theft(&self) -> bool {
        matches!(
            self,
            DpopRefusal::Replayed | DpopRefusal::WrongKey | DpopRefusal::Missing
        )
    }
}

impl Tessera {
    /// Whether new bearer tokens are bound (`dpop`).
    pub fn dpop_mode(&self) -> DpopMode {
        self.settings.dpop.mode
    }

    /// How many DPoP proofs this instance remembers in memory now.
    pub fn dpop_proofs_remembered(&self) -> usize {
        self.replays.len()
    }

    /// The nonce proofs carry now, when nonces are on (`DPoP-Nonce`): the same on every
    /// instance that shares the master key.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.settings
            .dpop
            .nonce
            .then(|| self.nonce_for(self.now().div_euclid(NONCE_WINDOW)))
    }

    fn nonce_for(&self, window: i64) -> String {
        let mac = self
            .keys
            .master_key()
            .mac(Purpose::DpopNonce, &window.to_be_bytes());
        // 128 bits of the MAC: unforgeable, and short enough for a header on every response.
        b64::encode(&mac[..16])
    }

    /// Checks a proof a request carries (RFC 9449 §4.3, with the hash of `access_token` when
    /// it presents one) and that its `jti` was never seen before by any instance.
    pub async fn check_dpop_proof(
        &self,
        presented: &PresentedProof<'_>,
        access_token: Option<&str>,
    ) -> Result<Proof, ServiceError> {
        self.checked_proof(presented, access_token)
            .await?
            .map_err(refused)
    }

    /// [`Tessera::check_dpop_proof`], with a refusal apart from a failure of the store.
    async fn checked_proof(
        &self,
        presented: &PresentedProof<'_>,
        access_token: Option<&str>,
    ) -> Result<Result<Proof, DpopRefusal>, ServiceError> {
        let now = self.now();
        let nonces: Vec<String> = if self.settings.dpop.nonce {
            let window = now.div_euclid(NONCE_WINDOW);
            vec![self.nonce_for(window), self.nonce_for(window - 1)]
        } else {
            Vec::new()
        };
        let nonces: Vec<&str> = nonces.iter().map(String::as_str).collect();
        let check = ProofCheck {
            method: presented.method,
            url: presented.url,
            now,
            max_age: PROOF_MAX_AGE,
            leeway: self.settings.rules.leeway,
            access_token,
            nonces: &nonces,
        };
        let proof = match dpop::check_proof(presented.proof, &check) {
            Ok(proof) => proof,
            Err(error) => return Ok(Err(error.into())),
        };
        // Remembered for as long as a proof can be accepted: from `iat - leeway` (the latest
        // first sight) to `iat + max_age`, and a leeway more for clocks between instances.
        let window = PROOF_MAX_AGE.saturating_add(self.settings.rules.leeway.saturating_mul(2));
        let key = dpop::replay_key(&proof.jkt, &proof.jti);
        let until = proof.iat.saturating_add(window);
        Ok(match self.first_sight("dpop", key, until, window).await? {
            Ok(()) => Ok(proof),
            Err(Replay::Seen) => Err(DpopRefusal::Replayed),
            Err(Replay::Full) => Err(DpopRefusal::Busy),
        })
    }

    /// Records `key` (a [`dpop::replay_key`]) as seen now, for as long as it could be presented
    /// (`until`, at most `window` seconds from now): `Seen` when any instance saw it before,
    /// `Full` when this instance alone decides and holds as many as it may. What stops a DPoP
    /// proof or a DBSC challenge from being used twice; `namespace` keeps their store keys apart.
    pub(super) async fn first_sight(
        &self,
        namespace: &str,
        key: [u8; 32],
        until: UnixTime,
        window: i64,
    ) -> Result<Result<(), Replay>, ServiceError> {
        let now = self.now();
        let shared = self.store.counters_shared_across_hosts();
        // This instance's memory first: a replay it saw itself costs no store round trip. With
        // an embedded store (one instance) it is the whole cache; full, it refuses.
        match self.replays.first_sight(key, until, now) {
            Ok(()) => {}
            Err(Replay::Seen) => return Ok(Err(Replay::Seen)),
            // The shared store still decides; alone, memory must not forget a live key.
            Err(Replay::Full) if shared => {}
            Err(Replay::Full) => return Ok(Err(Replay::Full)),
        }
        if shared {
            // Counted where every instance counts: the first count wins, anywhere.
            let counter = format!("{namespace}:{}", b64::encode(&key));
            if self.store.hit_counter(&counter, now, window).await?.count > 1 {
                return Ok(Err(Replay::Seen));
            }
        }
        Ok(Ok(()))
    }

    /// The key the tokens of a new session are bound to: the checked proof's, when one came
    /// with a bearer login and `dpop` is not `off`; none without one (refused when `dpop` is
    /// `required`). The caller puts it in [`ClientInfo::dpop_jkt`].
    pub async fn binding_for_login(
        &self,
        proof: Option<&PresentedProof<'_>>,
        delivery: Delivery,
    ) -> Result<Option<String>, ServiceError> {
        let mode = self.settings.dpop.mode;
        match (mode, proof, delivery) {
            (DpopMode::Off, _, _) => Ok(None),
            (_, Some(_), Delivery::Cookie) => Err(refused(DpopRefusal::NotBearer)),
            (_, Some(proof), Delivery::Bearer) => {
                Ok(Some(self.check_dpop_proof(proof, None).await?.jkt))
            }
            (DpopMode::Required, None, Delivery::Bearer) => Err(refused(DpopRefusal::Required)),
            (_, None, _) => Ok(None),
        }
    }

    /// Checks that a session bound to `bound` (or to nothing) may be refreshed with `proof`:
    /// a bound session needs a proof by its key; an unbound one gets new tokens only while
    /// `dpop` is not `required`. A proof with an unbound session is not checked (its tokens
    /// stay unbound: the answer says `Bearer`).
    pub(super) async fn check_refresh_binding<'d>(
        &self,
        bound: Option<&str>,
        proof: Option<&PresentedProof<'_>>,
        ctx: &Actor,
        details: impl FnOnce() -> audit::Details<'d>,
    ) -> Result<(), ServiceError> {
        let result = match (bound, proof) {
            (Some(bound), Some(proof)) => match self.checked_proof(proof, None).await? {
                Ok(checked) if checked.jkt == bound => Ok(()),
                Ok(_) => Err(DpopRefusal::WrongKey),
                Err(refusal) => Err(refusal),
            },
            (Some(_), None) => Err(DpopRefusal::Missing),
            (None, _) if self.settings.dpop.mode == DpopMode::Required => {
                Err(DpopRefusal::Required)
            }
            (None, _) => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.refusal_audited(refusal, ctx, details()).await),
        }
    }

    /// Checks a request's use of `identity`'s token (presented as `token`): a bound token
    /// needs `Authorization: DPoP` (`dpop_scheme`) and a proof by its key for this request; an
    /// unbound one must not claim to be bound.
    pub async fn check_token_binding(
        &self,
        identity: &Identity,
        token: &str,
        dpop_scheme: bool,
        proof: Option<&PresentedProof<'_>>,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        let result = match (&identity.jkt, proof) {
            (None, _) if dpop_scheme => Err(DpopRefusal::NotBound),
            (None, _) => Ok(()),
            (Some(_), _) if !dpop_scheme => Err(DpopRefusal::Missing),
            (Some(_), None) => Err(DpopRefusal::Missing),
            (Some(bound), Some(proof)) => match self.checked_proof(proof, Some(token)).await? {
                Ok(checked) if checked.jkt == *bound => Ok(()),
                Ok(_) => Err(DpopRefusal::WrongKey),
                Err(refusal) => Err(refusal),
            },
        };
        match result {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let ctx = Actor::user(&identity.username, client.clone());
                let details = audit::Details::session(&identity.username, &identity.session_id);
                Err(self.refusal_audited(refusal, &ctx, details).await)
            }
        }
    }

    /// Counts a refusal, audits one that suggests a stolen token, and returns it as an error.
    async fn refusal_audited(
        &self,
        refusal: DpopRefusal,
        ctx: &Actor,
        mut details: audit::Details<'_>,
    ) -> ServiceError {
        if refusal.suggests_theft() {
            details.detail = Some(refusal.reason().to_owned());
            self.audit(EventKind::DpopRefused, ctx, details).await;
        }
        refused(refusal)
    }
}

/// A refusal as a service error, counted in the metrics.
fn refused(refusal: DpopRefusal) -> ServiceError {
    crate::metrics::dpop_refused(refusal.reason());
    ServiceError::Dpop(refusal)
}
