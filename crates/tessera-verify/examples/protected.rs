//! A service protected by tessera-verify.
//!
//! ```text
//! TESSERA_URL=https://auth.example TESSERA_ISSUER=https://auth.example TESSERA_AUDIENCE=apps \
//!     cargo run -p tessera-verify --example protected
//! ```
//!
//! `GET /me` needs any valid token, `GET /reports` the permission `reports:read`,
//! `GET /admin` the role `admin`; `GET /hello` works without a token too.

use axum::Router;
use axum::routing::get;
use tessera_verify::{Rejection, Session, Verifier};

/// The service's routes, protected by `verifier`.
pub fn app(verifier: Verifier) -> Router {
    // A guard for a group of routes: the layer answers 401/403 before the handler runs.
    let admin = Router::new()
        .route("/admin", get(admin))
        .layer(verifier.layer().require_role("admin"));
    Router::new()
        .route("/me", get(me))
        .route("/reports", get(reports))
        .route("/hello", get(hello))
        .merge(admin)
        .with_state(verifier)
}

/// Who is calling.
async fn me(session: Session) -> String {
    format!("{} {}", session.user_id(), session.name())
}

/// A guard inside a handler.
async fn reports(session: Session) -> Result<String, Rejection> {
    session.require_permission("reports:read")?;
    Ok(format!("reports for {}", session.name()))
}

/// Reached only through the `require_role("admin")` layer.
async fn admin(session: Session) -> String {
    format!("admin area, {}", session.name())
}

/// Anyone; a caller with a valid token is greeted by name.
async fn hello(session: Option<Session>) -> String {
    match session {
        Some(session) => format!("hello, {}", session.name()),
        None => "hello, stranger".to_owned(),
    }
}

#[allow(dead_code)] // The tests use `app` only.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let verifier = Verifier::builder(env("TESSERA_URL", "http://127.0.0.1:8080"))
        .issuer(env("TESSERA_ISSUER", "tessera"))
        .audience(env("TESSERA_AUDIENCE", "tessera"))
        .build()
        .await?;
    let listener = tokio::net::TcpListener::bind(env("LISTEN", "127.0.0.1:3000")).await?;
    axum::serve(listener, app(verifier)).await?;
    Ok(())
}
