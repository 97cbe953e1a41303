//! Verify tessera access tokens inside any axum or tower service.
//!
//! A [`Verifier`] holds tessera's public keys (fetched from its JWKS and kept fresh) and the
//! claim rules (issuer, audience, leeway). Put its [`VerifyLayer`] in front of routes, take
//! the [`Session`] extractor in handlers, and guard routes by role or permission. Refusals
//! are problem+json answers with the tessera server's own codes: 401 `unauthenticated`,
//! `invalid_token` or `token_expired` (with `WWW-Authenticate: Bearer` as the server sends
//! it), 403 `forbidden`, and 503 `not_ready` when keys could not be had for too long.
//!
//! Every rule about the token itself — strict JWS parsing, pinned algorithms, the `at+jwt`
//! type, `iss`/`aud`/`nbf`/`exp` — lives in `tessera_token`, the crate the server verifies
//! with too: this crate adds I/O (the JWKS), HTTP (where a token comes from, how a refusal
//! is answered) and guards, never a rule of its own.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tessera_verify::{Session, Verifier};
//!
//! async fn me(session: Session) -> String {
//!     format!("{} has roles {:?}", session.name(), session.roles())
//! }
//!
//! async fn report(session: Session) -> Result<&'static str, tessera_verify::Rejection> {
//!     session.require_permission("reports:read")?;
//!     Ok("the report")
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Fetches https://auth.example/.well-known/jwks.json now, and keeps it fresh.
//! let verifier = Verifier::builder("https://auth.example")
//!     .issuer("https://auth.example")
//!     .audience("apps")
//!     .build()
//!     .await?;
//!
//! let admin = Router::new()
//!     .route("/admin", get(|| async { "admins only" }))
//!     .layer(verifier.layer().require_role("admin"));
//! let app = Router::new()
//!     .route("/me", get(me))
//!     .route("/report", get(report))
//!     .merge(admin)
//!     // The extractors find the verifier in the state (`Verifier: FromRef<S>`).
//!     .with_state(verifier);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! With a state of its own, the application implements `FromRef` for the verifier:
//!
//! ```
//! use axum::extract::FromRef;
//! use tessera_verify::Verifier;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     verifier: Verifier,
//!     greeting: String,
//! }
//!
//! impl FromRef<AppState> for Verifier {
//!     fn from_ref(state: &AppState) -> Verifier {
//!         state.verifier.clone()
//!     }
//! }
//! ```
//!
//! # Where the token comes from
//! `Authorization: Bearer <token>` first, then the session cookie: `__Host-tessera`, or
//! `__Secure-tessera` after [`VerifierBuilder::shared_cookie`] (one name only, as the server
//! reads it). Never from the URL.
//!
//! Only JWT access tokens can be verified here. An opaque `tsr_` token (tessera's default
//! for cookies) is refused with 401 `invalid_token` and a detail saying it needs
//! introspection ([`RejectionKind::OpaqueToken`]). [`OpaqueTokenCheck`] is where an
//! introspection client plugs in ([`VerifierBuilder::opaque_tokens`]). For browser sessions a
//! service verifies itself, configure tessera with `cookie_format = "jwt"`.
//!
//! # Keys
//! The keys come from `GET {tessera_url}/.well-known/jwks.json`: once at
//! [`VerifierBuilder::build`] (which fails if they cannot be had), again when the response's
//! `Cache-Control: max-age` runs out (bounded by [`JwksOptions`]), and again when a token
//! names a `kid` the held keys lack, at most once a second. When refreshes fail the last
//! good keys stay in use for [`JwksOptions::max_stale`]; after that every request is
//! answered 503 until a fetch succeeds. A scheduled refresh is made by the request that
//! finds it due (bounded by [`JwksOptions::timeout`]); requests meanwhile use the held keys.
//!
//! A token verified once is remembered (bounded, [`VerifierBuilder::verified_cache`]): seen
//! again under the same keys it skips the signature check, never the claim checks.
//!
//! # Revocation: what a local verifier sees today
//! **None until `exp`.** A token verified here stays accepted after the user logs out, is
//! deleted, or has the session revoked, until its `exp` (tessera's access-token lifetime,
//! 10 minutes by default) — the same as PyJWT, `jose` or any other local JWT verifier. Only
//! tessera itself (`GET /v1/verify`, forward auth) sees a revocation at once. Keep the
//! access-token lifetime short where that matters, or ask tessera for the requests that
//! cannot wait. A revocation feed that closes this gap is planned, not built.
//!
//! Likewise, roles and permissions are those held when the token was issued: a change
//! reaches this service with the next token.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(unreachable_pub)]

mod cache;
mod clock;
mod extract;
mod jwks;
mod layer;
mod rejection;
mod session;
mod verifier;

pub use clock::{Clock, SystemClock};
pub use jwks::{JwksFetchError, JwksOptions};
pub use layer::{VerifyLayer, VerifyService};
pub use rejection::{Rejection, RejectionKind};
pub use session::Session;
pub use verifier::{
    HOST_COOKIE_NAME, OPAQUE_TOKEN_PREFIX, OpaqueTokenCheck, SHARED_COOKIE_NAME, Verifier,
    VerifierBuilder,
};

/// The token crate this one verifies with, for its types ([`tessera_token::AccessClaims`],
/// [`tessera_token::VerifyingKeys`], [`tessera_token::TokenError`]).
pub use tessera_token;
