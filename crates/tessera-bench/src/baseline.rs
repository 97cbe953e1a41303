//! The baseline server: the least an axum service on the same runtime can do per request, so the
//! HTTP load runs can state tessera's cost as a ratio measured in the same run.
//!
//! Routes:
//! - `GET /bare`: answers 200 `ok` — bare axum.
//! - `GET /sha-map`: SHA-256 of the `__Host-tessera` cookie, looked up in an in-memory map —
//!   the least an opaque-token check can do, with no store and no revocation.
//! - `GET /ed25519`: verifies the Ed25519 signature of the `Authorization: Bearer` JWT with one
//!   public key and nothing else (no header or claim parsing, no session lookup) — the floor
//!   under any EdDSA JWT verifier.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tessera_core::b64;

use crate::sha256;

/// What the baseline routes check against.
pub struct Baseline {
    /// Ed25519 public key for `/ed25519`.
    pub ed25519: Option<ParsedPublicKey>,
    /// SHA-256 of known opaque tokens → a user name, for `/sha-map`.
    pub sessions: HashMap<[u8; 32], String>,
}

impl Baseline {
    /// Builds the state from a JWK `x` (base64url Ed25519 public key) and known opaque tokens.
    pub fn new(ed25519_x: Option<&str>, opaque_tokens: &[String]) -> Result<Baseline> {
        let ed25519 = match ed25519_x {
            Some(x) => {
                let raw = b64::decode(x).context("the Ed25519 key is not base64url")?;
                Some(
                    ParsedPublicKey::new(&ED25519, &raw)
                        .map_err(|_| anyhow::anyhow!("not an Ed25519 public key"))?,
                )
            }
            None => None,
        };
        let sessions = opaque_tokens
            .iter()
            .map(|t| (sha256(t.as_bytes()), "bench".to_owned()))
            .collect();
        Ok(Baseline { ed25519, sessions })
    }
}

/// The baseline router.
pub fn router(state: Baseline) -> Router {
    Router::new()
        .route("/bare", get(bare))
        .route("/sha-map", get(sha_map))
        .route("/ed25519", get(ed25519))
        .with_state(Arc::new(state))
}

/// Serves the baseline on `addr` until the process is stopped (see [`serve_router`]).
pub fn serve(addr: SocketAddr, state: Baseline) -> Result<()> {
    serve_router(addr, "baseline", async move { Ok(router(state)) })
}

/// Serves the router `app` resolves to on `addr` until the process is stopped, on a runtime
/// built like tessera's (`tokio` multi-thread, one worker per available core) and with
/// `axum::serve`: every server the load runs compare runs the same way. `name` labels the
/// start-up line.
pub fn serve_router(
    addr: SocketAddr,
    name: &str,
    app: impl Future<Output = Result<Router>>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = app.await?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("{name} listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn bare() -> &'static str {
    "ok"
}

async fn sha_map(State(state): State<Arc<Baseline>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == "__Host-tessera")
                .map(|(_, value)| value)
        });
    match token.and_then(|t| state.sessions.get(&sha256(t.as_bytes()))) {
        Some(user) => {
            let mut response = StatusCode::OK.into_response();
            if let Ok(value) = HeaderValue::from_str(user) {
                response.headers_mut().insert("x-tessera-user", value);
            }
            response
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn ed25519(State(state): State<Arc<Baseline>>, headers: HeaderMap) -> StatusCode {
    let verified = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|jwt| jwt.rsplit_once('.'))
        .and_then(|(signed, signature)| {
            let key = state.ed25519.as_ref()?;
            let signature = b64::decode(signature)?;
            key.verify_sig(signed.as_bytes(), &signature).ok()
        });
    match verified {
        Some(()) => StatusCode::OK,
        None => StatusCode::UNAUTHORIZED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    #[tokio::test]
    async fn each_route_accepts_the_right_credential_and_refuses_others() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = b64::encode(pair.public_key().as_ref());
        let signed = "eyJhbGciOiJFZERTQSJ9.e30";
        let jwt = format!(
            "{signed}.{}",
            b64::encode(pair.sign(signed.as_bytes()).as_ref())
        );
        let app = router(Baseline::new(Some(&x), &["tsr_known".to_owned()]).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = reqwest::Client::new();
        let status = |path: &str, header: Option<(&str, String)>| {
            let mut request = client.get(format!("{base}{path}"));
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status("/bare", None).await, 200);
        let bearer = |token: String| Some(("authorization", format!("Bearer {token}")));
        assert_eq!(status("/ed25519", bearer(jwt)).await, 200);
        let forged = format!("{signed}.{}", b64::encode(&[0u8; 64]));
        assert_eq!(status("/ed25519", bearer(forged)).await, 401);
        assert_eq!(status("/ed25519", None).await, 401);
        let cookie = |token: &str| Some(("cookie", format!("__Host-tessera={token}")));
        assert_eq!(status("/sha-map", cookie("tsr_known")).await, 200);
        assert_eq!(status("/sha-map", cookie("tsr_other")).await, 401);
    }
}
