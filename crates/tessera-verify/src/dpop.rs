//! DPoP-bound tokens (RFC 9449) in the embedded verifier: the proof a request carries, checked
//! by `tessera_token::dpop` (the server's own checks), its key compared with the token's
//! `cnf.jkt`, and its `jti` remembered in memory so one proof is accepted once.
//!
//! The replay cache is this process's: a service run as several processes accepts a proof
//! once per process (the server, which shares its cache through its store, accepts it once
//! per deployment). It holds at most [`DpopOptions::max_proofs`] proofs, each for as long as
//! it could be accepted (its `iat` window); when it is full of proofs still in their window,
//! new proofs are refused rather than old ones forgotten (fail closed).

use tessera_token::UnixTime;
use tessera_token::dpop::{self, PROOF_MAX_AGE, ProofCheck, Replay, ReplayCache};

use crate::rejection::{Rejection, RejectionKind};

/// DPoP settings of a [`crate::Verifier`] (see [`crate::VerifierBuilder::dpop`]).
#[derive(Debug, Clone)]
pub struct DpopOptions {
    /// The URL clients reach this service at (`https://api.example`): a proof's `htu` is
    /// this followed by the request's path.
    pub public_url: String,
    /// Most proofs remembered at once (about 30 bytes each).
    pub max_proofs: usize,
}

impl DpopOptions {
    /// Proofs for requests to `public_url`, with room for 65 536 proofs (~2 MB).
    pub fn new(public_url: impl Into<String>) -> DpopOptions {
        DpopOptions {
            public_url: public_url.into(),
            max_proofs: 65_536,
        }
    }
}

/// The request a proof comes with: what it must name.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The `DPoP` header, if the request has exactly one.
    pub proof: Option<&'a str>,
    /// The request's method.
    pub method: &'a str,
    /// The request's path (any query is ignored).
    pub path: &'a str,
}

/// The verifier's DPoP checks: its public URL and its replay cache.
pub(crate) struct DpopCheck {
    base: String,
    replays: ReplayCache,
}

fn refused(why: impl Into<String>) -> Rejection {
    RejectionKind::Dpop(why.into()).into()
}

impl DpopCheck {
    pub(crate) fn new(options: DpopOptions) -> DpopCheck {
        DpopCheck {
            base: options.public_url.trim_end_matches('/').to_owned(),
            replays: ReplayCache::new(options.max_proofs),
        }
    }

    /// Checks `request`'s proof for `token`, bound to `jkt`, at `now`.
    pub(crate) fn check(
        &self,
        token: &str,
        jkt: &str,
        request: &ProofRequest<'_>,
        now: UnixTime,
        leeway: i64,
    ) -> Result<(), Rejection> {
        let proof = request
            .proof
            .ok_or_else(|| refused("the token is DPoP-bound: a DPoP proof is required"))?;
        let path = request.path.split(['?', '#']).next().unwrap_or("");
        let url = format!("{}{path}", self.base);
        let check = ProofCheck {
            method: request.method,
            url: &url,
            now,
            max_age: PROOF_MAX_AGE,
            leeway,
            access_token: Some(token),
            nonces: &[],
        };
        let proof = dpop::check_proof(proof, &check).map_err(|e| refused(e.to_string()))?;
        if proof.jkt != jkt {
            return Err(refused(
                "the DPoP proof is signed by another key than the one the token is bound to",
            ));
        }
        let until = proof
            .iat
            .saturating_add(PROOF_MAX_AGE)
            .saturating_add(leeway.saturating_mul(2));
        match self
            .replays
            .first_sight(dpop::replay_key(&proof.jkt, &proof.jti), until, now)
        {
            Ok(()) => Ok(()),
            Err(Replay::Seen) => Err(refused("this DPoP proof was used before")),
            Err(Replay::Full) => Err(refused("too many DPoP proofs in flight; retry in a minute")),
        }
    }

    /// Proofs remembered now.
    pub(crate) fn remembered(&self) -> usize {
        self.replays.len()
    }
}
