//! The HTTP API (SPEC §4) on axum.

// Items only this crate uses are `pub(crate)` or narrower: what stays `pub` is the API.
#![warn(unreachable_pub)]

mod admin;
mod backends;
pub mod cookie;
mod extract;
mod forward_auth;
mod observe;
mod openapi;
mod ops;
mod pages;
mod problem;
mod query;
pub(crate) mod redirect;
mod routes;

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use cookie::COOKIE_NAME;
pub use extract::{Via, parse_body, presented_token};
pub use problem::{Problem, ProblemCode};
pub use routes::{LoginBody, RefreshBody};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::access::AccessPolicy;
use crate::config::Config;
use crate::metrics::Exporter;
use crate::service::Tessera;
use cookie::SessionCookie;
use redirect::RedirectPolicy;
use tessera_core::opaque::TokenHash;

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
    pub allowed_origins: Vec<url::Origin>,
    /// The session cookie's name and domain.
    pub cookie: SessionCookie,
    /// Where the login page may send a browser back to.
    pub redirects: RedirectPolicy,
    /// Where `/v1/verify` sends browsers without a session.
    pub login_url: Option<String>,
    /// Forward-auth access rules.
    pub access: AccessPolicy,
    /// The Content-Security-Policy of the HTML pages.
    pub page_csp: String,
    /// Longest wait for a request body (then 408).
    pub body_read_timeout: Duration,
    /// The product name the pages show.
    pub product_name: String,
    /// The configured public URL, named as the server in `/openapi.json`.
    pub public_url: Option<String>,
    /// SHA-256 of each back-end service's introspection secret.
    pub introspection_secrets: Vec<TokenHash>,
}

impl HttpSettings {
    /// Derives the HTTP settings from the configuration.
    pub fn from_config(config: &Config) -> HttpSettings {
        // `Config::validate` has checked them; should they still fail, fail closed.
        let redirects = RedirectPolicy::new(&config.redirect_origins).unwrap_or_default();
        // Compiled once, when the configuration was read.
        let access = config.access_rules.policy().clone();
        HttpSettings {
            cookie: SessionCookie::new(config.cookie_domain.as_deref()),
            page_csp: pages::page_csp(&redirects),
            redirects,
            login_url: config.login_url.clone(),
            access,
            tls: config.serves_tls(),
            behind_proxy: config.behind_proxy,
            trusted_proxies: config.trusted_proxies.clone(),
            // `Config::validate` has checked them; an entry that still fails allows nothing.
            allowed_origins: config
                .allowed_origins
                .iter()
                .filter_map(|o| redirect::exact_origin(o).ok())
                .collect(),
            body_read_timeout: config.body_read_timeout,
            product_name: config.product_name.clone(),
            public_url: config
                .public_url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            // `Config::validate` has checked them; one that still fails admits nobody.
            introspection_secrets: config
                .introspection_secret_digests
                .iter()
                .filter_map(|digest| TokenHash::from_hex(digest))
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
    /// The Prometheus exporter behind `/metrics`.
    pub metrics: Arc<Exporter>,
}

/// Builds the router with every route and the protective middleware.
pub fn router(service: Arc<Tessera>, http: HttpSettings) -> Router {
    router_with(service, http, Arc::new(Exporter::new()))
}

/// [`router`] with a given exporter (the runner shares it with its upkeep task).
pub fn router_with(service: Arc<Tessera>, http: HttpSettings, metrics: Arc<Exporter>) -> Router {
    let http = Arc::new(http);
    let state = AppState {
        service,
        http: Arc::clone(&http),
        metrics,
    };
    let (app, _document) = api().split_for_parts();
    let app = app
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_cross_site,
        ))
        .with_state(state);
    protect(app, http)
}

/// Every route with its documentation: each module's handlers, registered from their
/// `#[utoipa::path]` attributes, over the document's common parts ([`openapi::Base`]).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::Base::openapi())
        .merge(routes::routes())
        .merge(forward_auth::routes())
        .merge(admin::routes())
        .merge(pages::routes())
        .merge(ops::routes())
        .merge(backends::routes())
}

/// The OpenAPI 3.1 document of the whole HTTP API, as `GET /openapi.json` serves it: generated
/// from the same declarations the router is built from.
pub fn openapi_json() -> &'static str {
    openapi::json()
}

/// Applies the layers every tessera router gets, whatever its routes: the body size limit,
/// panic containment, response hygiene headers, and metrics plus an access log.
///
/// # Security
/// A panic in a handler is caught and answered with a generic 500 problem: the connection,
/// the other requests and the process carry on, and no panic message reaches the client.
pub fn protect(router: Router, http: Arc<HttpSettings>) -> Router {
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(http, response_hygiene))
        .layer(middleware::from_fn(observe::observe))
}

/// The answer to a request whose handler panicked. The panic itself was already reported by
/// the panic hook (the log); the payload is dropped here, never sent.
fn panic_response(_payload: Box<dyn Any + Send + 'static>) -> Response {
    crate::metrics::http_panic();
    tracing::error!("a request handler panicked; answered 500");
    Problem::internal_error().into_response()
}

/// Adds the headers every response needs.
///
/// # Security
/// `Cache-Control: no-store` keeps tokens and session data out of shared and browser caches;
/// HSTS (one year) pins browsers to HTTPS once they have seen it.
async fn response_hygiene(
    State(http): State<Arc<HttpSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    // API answers are data, never documents: nothing may run in or frame them.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if http.tls {
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
/// authority, so they pass. A request is exempt only when it authenticates with a bearer
/// token: [`extract::presented_token_with`], the one place that decides which token a request
/// presents, picks the bearer token and then never falls back to the cookie. Any other
/// `Authorization` scheme (`Basic`…) leaves the cookie in charge, so the check applies.
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
    let by_cookie = matches!(
        extract::presented_token_with(request.headers(), &state.http.cookie),
        Some((_, Via::Cookie))
    );
    let guarded = path == "/v1/login" || (path != "/v1/verify" && by_cookie);
    let peer = extract::peer_ip(request.extensions());
    if unsafe_method && guarded && is_cross_site(request.headers(), peer, &state) {
        return Problem::cross_site().into_response();
    }
    next.run(request).await
}

fn is_cross_site(headers: &HeaderMap, peer: Option<IpAddr>, state: &AppState) -> bool {
    let allowed = |origin: &url::Origin| state.http.allowed_origins.contains(origin);
    if let Some(site) = headers.get("sec-fetch-site") {
        if matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
        // Another origin is fine only when it is explicitly allowed.
        return !request_origin(headers).is_some_and(|origin| origin.is_some_and(|o| allowed(&o)));
    }
    match request_origin(headers) {
        // Neither header: not a browser, no ambient authority.
        None => false,
        // Present but not an http(s) origin (`null`, garbage): refused.
        Some(None) => true,
        Some(Some(origin)) => {
            !(allowed(&origin) || own_origin(headers, peer, state).is_some_and(|o| o == origin))
        }
    }
}

/// The origin a browser request names: `Origin`, else the origin of `Referer`. `None` when
/// neither header is present; `Some(None)` when the one present is not an http(s) origin.
fn request_origin(headers: &HeaderMap) -> Option<Option<url::Origin>> {
    let value = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))?;
    Some(value.to_str().ok().and_then(redirect::web_origin))
}

/// The origin the browser sees this server at: scheme, host and port.
///
/// # Security
/// The scheme is ours (`https` when serving TLS) unless a trusted proxy says otherwise
/// (`X-Forwarded-Proto`; `https` when it says nothing, as `behind_proxy` means it terminates
/// TLS); the host is `Host`, or a trusted proxy's `X-Forwarded-Host`. No client can name either
/// through a proxy it is not.
fn own_origin(headers: &HeaderMap, peer: Option<IpAddr>, state: &AppState) -> Option<url::Origin> {
    let trusted = extract::forwarding_trusted(peer, state);
    let forwarded = |name: &str| {
        headers
            .get(name)
            .filter(|_| trusted)
            .and_then(|v| v.to_str().ok())
            // A chain of proxies lists the first hop's value first.
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        Some(proto) if proto.eq_ignore_ascii_case("http") => "http",
        Some(_) => return None,
        None if trusted || state.http.tls => "https",
        None => "http",
    };
    let host = forwarded("x-forwarded-host").or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })?;
    // A host with URL syntax in it would let the parser find another host than the header
    // names; no real Host header has any.
    if host.is_empty() || host.contains(['/', '\\', '@', '?', '#']) {
        return None;
    }
    redirect::web_origin(&format!("{scheme}://{host}/"))
}
