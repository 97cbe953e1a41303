//! The HTTP API (SPEC §4) on axum.

mod admin;
mod extract;
mod problem;
mod routes;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use extract::{COOKIE_NAME, Via, parse_body, presented_token, session_cookie};
pub use problem::Problem;
pub use routes::{LoginBody, RefreshBody};

use crate::config::Config;
use crate::service::Tessera;

/// Largest request body accepted (SPEC §6).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Responses are served over HTTPS (adds HSTS).
    pub tls: bool,
    /// A trusted proxy terminates TLS in front of us.
    pub behind_proxy: bool,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Extra origins allowed to send cookie-authenticated state-changing requests.
    pub allowed_origins: Vec<String>,
}

impl HttpSettings {
    /// Derives the HTTP settings from the configuration.
    pub fn from_config(config: &Config) -> HttpSettings {
        HttpSettings {
            tls: config.serves_tls(),
            behind_proxy: config.behind_proxy,
            trusted_proxies: config.trusted_proxies.clone(),
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The service.
    pub service: Arc<Tessera>,
    /// HTTP settings.
    pub http: Arc<HttpSettings>,
}

/// Builds the router with every route and the protective middleware.
pub fn router(service: Arc<Tessera>, http: HttpSettings) -> Router {
    let state = AppState {
        service,
        http: Arc::new(http),
    };
    routes::routes()
        .merge(admin::admin_routes())
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_cross_site,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            response_hygiene,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Adds the headers every response needs.
///
/// # Security
/// `Cache-Control: no-store` keeps tokens and session data out of shared and browser caches;
/// HSTS (one year) pins browsers to HTTPS once they have seen it.
async fn response_hygiene(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if state.http.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Refuses cookie-authenticated state-changing requests (and every login) sent cross-site.
///
/// # Security
/// Browsers attach cookies to cross-site requests; `SameSite=Lax` stops most but not all
/// (same-site subdomains, top-level POST on some browsers). Fetch metadata
/// (`Sec-Fetch-Site`) decides when present; otherwise `Origin`/`Referer` must be our own or an
/// allowed origin. Requests with neither header are not from a browser and carry no ambient
/// authority, so they pass. Bearer requests carry no ambient authority and are exempt.
async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let path = request.uri().path();
    let guarded = path == "/v1/login"
        || (path != "/v1/verify"
            && !request.headers().contains_key(header::AUTHORIZATION)
            && extract::session_cookie(request.headers()).is_some());
    if unsafe_method && guarded && is_cross_site(request.headers(), &state) {
        return Problem::cross_site().into_response();
    }
    next.run(request).await
}

fn is_cross_site(headers: &HeaderMap, state: &AppState) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(origin_of)
        });
    match origin {
        None => false,
        Some(origin) => !origin_is_ours(&origin, headers, state),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}"))
}

fn origin_is_ours(origin: &str, headers: &HeaderMap, state: &AppState) -> bool {
    let origin = origin.trim_end_matches('/');
    if state.http.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = headers
        .get("x-forwarded-host")
        .filter(|_| state.http.behind_proxy)
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok());
    host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
}
