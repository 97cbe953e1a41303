//! The embedded verifier over HTTP: one axum handler served twice on the same runtime, so the
//! load runs can state what tessera-verify's [`VerifyLayer`](tessera_verify::VerifyLayer)
//! costs a service as a ratio measured in the same run.
//!
//! Routes:
//! - `GET /plain`: the handler alone.
//! - `GET /verified`: the same handler behind `verifier.layer()`, as docs/api-backends.md
//!   applies it: the token of every request is verified (a token seen before is a hit in the
//!   verifier's cache) and its session attached to the request; a refused one is answered 401.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use axum::Router;
use axum::routing::get;
use tessera_core::{UnixTime, b64};
use tessera_server::service::{Actor, ClientInfo, Delivery};
use tessera_verify::Verifier;
use tessera_verify::tessera_token::{ClaimRules, VerifyingKeys};

use crate::{Issuer, PASSWORD, add_bench_user, sample_claims, unix_now};

/// The router: `/plain` and `/verified`, the latter behind `verifier`'s layer.
pub fn router(verifier: &Verifier) -> Router {
    let verified = Router::new()
        .route("/verified", get(handler))
        .layer(verifier.layer());
    Router::new().route("/plain", get(handler)).merge(verified)
}

/// A verifier of the tokens the tessera at `tessera_url` issues (issuer and audience at
/// tessera's defaults), its keys fetched from that tessera's JWKS and kept fresh.
pub async fn verifier(tessera_url: &str) -> anyhow::Result<Verifier> {
    Ok(Verifier::builder(tessera_url).build().await?)
}

async fn handler() -> &'static str {
    "ok"
}

/// What the in-process verifier benchmarks compare (`benches/verifier.rs`,
/// `examples/verifier_paired.rs`): a real issuer, its Ed25519 public key for the raw
/// primitive, and three verifiers of its tokens.
pub struct VerifierBench {
    /// The issuer: a real tessera served in-process.
    pub issuer: Issuer,
    /// The issuer's public key, parsed once, for aws-lc's raw `verify_sig`.
    pub public: ParsedPublicKey,
    /// The issuer's keys as `tessera_token` reads them.
    pub keys: VerifyingKeys,
    /// The issuer's claim rules (tessera's defaults).
    pub rules: ClaimRules,
    /// Fixed keys, no feed, the default verified-token cache.
    pub verifier: Verifier,
    /// The same with the verified-token cache off.
    pub uncached: Verifier,
    /// As a service builds it by default: keys from the JWKS, the revocation feed followed.
    pub following: Verifier,
    /// When the tokens were issued (they are valid for ten minutes from then).
    pub now: UnixTime,
}

impl VerifierBench {
    /// Starts the issuer, builds the verifiers, and checks that the feed-following one refuses
    /// a session revoked at the issuer (a user logs in, an administrator revokes the session).
    pub async fn start() -> Result<VerifierBench> {
        let issuer = Issuer::start().await?;
        let jwks = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url))
            .await?
            .text()
            .await?;
        let jwk: serde_json::Value = serde_json::from_str(&jwks)?;
        let jwk = &jwk["keys"][0];
        ensure!(
            jwk["crv"] == "Ed25519",
            "the issuer signs with EdDSA by default"
        );
        let x = b64::decode(jwk["x"].as_str().context("no x in the JWK")?)
            .context("the JWK's x is not base64url")?;
        let public = ParsedPublicKey::new(&ED25519, x)?;
        // `None`: the builder's default cache.
        let fixed = |cache_bytes: Option<usize>| -> Result<Verifier> {
            let builder = Verifier::builder(&issuer.url);
            let builder = match cache_bytes {
                Some(bytes) => builder.verified_cache(bytes),
                None => builder,
            };
            Ok(builder.build_with_keys(VerifyingKeys::from_jwks(&jwks)?))
        };
        let verifier = fixed(None)?;
        let uncached = fixed(Some(0))?;
        let following = Verifier::builder(&issuer.url).build().await?;

        let service = &issuer.service;
        add_bench_user(service).await?;
        let login = service
            .login(
                "bench",
                PASSWORD,
                None,
                Delivery::Bearer,
                ClientInfo::default(),
                None,
            )
            .await?;
        let session = following.verify(&login.access_token).await?;
        service
            .revoke_session(&Actor::cli(), session.session_id())
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while following.verify(&login.access_token).await.is_ok() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the revocation feed is not followed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(VerifierBench {
            keys: VerifyingKeys::from_jwks(&jwks)?,
            public,
            rules: ClaimRules {
                issuer: "tessera".into(),
                audience: "tessera".into(),
                leeway: 30,
            },
            verifier,
            uncached,
            following,
            now: unix_now(),
            issuer,
        })
    }

    /// A token never presented before: its own random `sub`, `sid` and `jti`.
    pub fn mint(&self) -> Result<String> {
        self.issuer.sign(&sample_claims(self.now)?)
    }
}

/// A token's signing input and decoded signature: what the raw primitive verifies.
pub fn split(token: &str) -> Result<(&str, Vec<u8>)> {
    let (signed, signature) = token.rsplit_once('.').context("not a JWS")?;
    Ok((
        signed,
        b64::decode(signature).context("the signature is not base64url")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::claims;
    use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
    use tessera_verify::tessera_token::VerifyingKeys;

    #[tokio::test]
    async fn only_the_verified_route_wants_a_valid_token() {
        let record = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
        let jwks = serde_json::json!({ "keys": [record.public_jwk().unwrap()] }).to_string();
        let verifier = Verifier::builder("http://unused.invalid")
            .build_with_keys(VerifyingKeys::from_jwks(&jwks).unwrap());
        let signing = KeySet::new(&record, &[]).unwrap();
        let token =
            claims::issue(&signing, &crate::sample_claims(crate::unix_now()).unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(&verifier);
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = reqwest::Client::new();
        let status = |path: &str, token: Option<&str>| {
            let mut request = client.get(format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status("/plain", None).await, 200);
        assert_eq!(status("/verified", Some(&token)).await, 200);
        assert_eq!(status("/verified", Some(&token)).await, 200);
        assert_eq!(status("/verified", None).await, 401);
        // Another last character (each of these keeps the base64url canonical).
        let last = if token.ends_with('A') { "E" } else { "A" };
        let tampered = format!("{}{last}", &token[..token.len() - 1]);
        assert_eq!(status("/verified", Some(&tampered)).await, 401);
    }
}
