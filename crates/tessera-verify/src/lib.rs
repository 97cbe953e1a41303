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
//! JWT access tokens are verified here, with tessera's public keys. An opaque `tsr_` token
//! (tessera's default for cookies) can only be checked by tessera: with
//! [`VerifierBuilder::introspection`] the verifier asks tessera (`POST /v1/introspect`, with
//! this service's introspection secret) and keeps the answer a few seconds; without it such a
//! token is refused with 401 `invalid_token` and a detail saying it needs introspection
//! ([`RejectionKind::OpaqueToken`]). [`OpaqueTokenCheck`] is where a check of one's own plugs
//! in. For browser sessions a service verifies itself, `cookie_format = "jwt"` in tessera
//! avoids the round trip.
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
//! # Revocation
//! A verifier follows tessera's revocation feed (`GET /v1/revocations`, long polling): a
//! logout, an administrator's revocation, a password, role or permission change, or a
//! deleted user reaches it within one round trip, and from then on the tokens of those
//! sessions are refused with 401 `token_revoked` — with no request to tessera per token.
//! [`VerifierBuilder::build`] reads the whole feed before it returns.
//!
//! When the feed has not answered for [`FeedOptions::max_staleness`] (tessera down, the
//! network cut), the verifier no longer knows what was revoked and does as
//! [`FeedOptions::when_stale`] says: refuse every token with 503 `not_ready` (the default),
//! or ask tessera about each token through introspection. Both recover by themselves when
//! the feed answers again.
//!
//! [`VerifierBuilder::without_revocation_feed`] turns the feed off: a token then stays
//! accepted until its `exp` after its session ends, as with any JWT library.
//!
//! Roles and permissions are those held when the token was issued; tessera revokes a user's
//! sessions when they change, so through the feed a changed user's old tokens stop working
//! at once.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(unreachable_pub)]

mod body;
mod cache;
mod clock;
mod dpop;
mod extract;
mod feed;
mod introspect;
mod jwks;
mod layer;
mod rejection;
mod session;
mod verifier;

pub use clock::{Clock, SystemClock};
pub use dpop::{DpopOptions, ProofRequest};
pub use feed::{FeedError, FeedOptions, WhenStale};
pub use introspect::IntrospectionOptions;
pub use jwks::{JwksFetchError, JwksOptions};
pub use layer::{VerifyLayer, VerifyService};
pub use rejection::{Rejection, RejectionKind};
pub use session::Session;
pub use verifier::{
    BuildError, HOST_COOKIE_NAME, OPAQUE_TOKEN_PREFIX, OpaqueTokenCheck, SHARED_COOKIE_NAME,
    Verifier, VerifierBuilder,
};

/// The token crate this one verifies with, for its types ([`tessera_token::AccessClaims`],
/// [`tessera_token::VerifyingKeys`], [`tessera_token::TokenError`]).
pub use tessera_token;
