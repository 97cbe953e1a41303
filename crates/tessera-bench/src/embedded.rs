//! The embedded verifier over HTTP: one axum handler served twice on the same runtime, so the
//! load runs can state what tessera-verify's [`VerifyLayer`](tessera_verify::VerifyLayer)
//! costs a service as a ratio measured in the same run.
//!
//! Routes:
//! - `GET /plain`: the handler alone.
//! - `GET /verified`: the same handler behind `verifier.layer()`, as docs/api-backends.md
//!   applies it: the token of every request is verified (a token seen before is a hit in the
//!   verifier's cache) and its session attached to the request; a refused one is answered 401.

use tessera_verify::Verifier;

use axum::Router;
use axum::routing::get;

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
