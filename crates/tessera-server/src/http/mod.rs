//! The HTTP API (SPEC §4) on axum.

// Items only this crate uses are `pub(crate)` or narrower: what stays `pub` is the API.
#![warn(unreachable_pub)]

mod admin;
mod backends;
pub mod cookie;
mod dbsc;
mod dpop_nonce;
mod extract;
mod factors;
mod forward_auth;
mod observe;
mod openapi;
mod ops;
mod pages;
mod passkeys;
mod problem;
mod protect;
mod query;
pub(crate) mod redirect;
mod routes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use cookie::COOKIE_NAME;
pub use extract::{Via, parse_body, presented_token};
pub use problem::{Problem, ProblemCode};
pub use protect::protect;
pub use routes::{LoginBody, RefreshBody};
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
    /// The same, for the pages that load the passkey script.
    pub page_csp_scripted: String,
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
            page_csp: pages::page_csp(&redirects, false),
            page_csp_scripted: pages::page_csp(&redirects, true),
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

/// [`router`] with a given exporter.
pub fn router_with(service: Arc<Tessera>, http: HttpSettings, metrics: Arc<Exporter>) -> Router {
    let http = Arc::new(http);
    let state = AppState {
        service,
        http: Arc::clone(&http),
        metrics,
    };
    let (app, templates) = routes_with(state);
    protect(app, http, templates.iter().map(String::as_str))
}

/// What [`router_with`] routes, as the service the server serves directly (the runner shares
/// the exporter with its upkeep task).
pub(crate) fn served_with(
    service: Arc<Tessera>,
    http: HttpSettings,
    metrics: Arc<Exporter>,
) -> impl crate::connection::Answers<hyper::body::Incoming> {
    let http = Arc::new(http);
    let state = AppState {
        service,
        http: Arc::clone(&http),
        metrics,
    };
    let (app, templates) = routes_with(state.clone());
    let routes = protect::route_labels(templates.iter().map(String::as_str));
    protect::protected(app, http, routes, HotRoutes::for_state(state))
}

/// The paths asked most often — `/v1/verify`, once for every request a proxy lets through,
/// `GET /v1/session`, by every page of an app that shows who is signed in, and `/healthz`, by
/// every probe — which the protective service answers with the router's own handlers, without
/// routing: axum's routing, its request extensions and boxed services cost about as much
/// again as a bare request (docs/performance.md, issue 14). The answer is the same; `HEAD`
/// (whose body the router strips) and every other path go through the router.
#[derive(Clone)]
pub(crate) struct HotRoutes {
    state: AppState,
}

/// A handler [`HotRoutes`] found for a request.
pub(crate) enum HotHandler<'a> {
    Verify(&'a AppState),
    Session(&'a AppState),
    Health,
}

impl HotRoutes {
    /// The hot routes, unless a layer around the whole router must see every request (the
    /// DPoP nonce offer): then none, and the router answers everything.
    fn for_state(state: AppState) -> Option<HotRoutes> {
        (!state.service.settings().dpop.nonce).then_some(HotRoutes { state })
    }

    /// The handler for a request to `route` (its template) with `method`, if a hot one.
    pub(crate) fn handler(
        &self,
        route: &str,
        method: &axum::http::Method,
    ) -> Option<HotHandler<'_>> {
        use axum::http::Method;
        match route {
            // Any method but HEAD, as the router's `any` route (the handler refuses the rest).
            "/v1/verify" if method != Method::HEAD => Some(HotHandler::Verify(&self.state)),
            "/v1/session" if method == Method::GET => Some(HotHandler::Session(&self.state)),
            "/healthz" if method == Method::GET => Some(HotHandler::Health),
            _ => None,
        }
    }
}

impl HotHandler<'_> {
    /// The answer, as the router's handler gives it.
    pub(crate) async fn answer(self, request: axum::extract::Request) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        match self {
            // Boxed: a verify's future is ~3 KB, which every future around it would otherwise
            // hold (and move) too; one allocation costs less than those copies.
            HotHandler::Verify(state) => {
                Box::pin(forward_auth::verify_unless_trace(
                    axum::extract::State(state.clone()),
                    request,
                ))
                .await
            }
            HotHandler::Session(state) => Box::pin(session(state, request)).await,
            HotHandler::Health => routes::healthz().await.into_response(),
        }
    }
}

/// `GET /v1/session` as the router calls it: the [`extract::Authenticated`] extractor, then
/// the handler.
async fn session(state: &AppState, request: axum::extract::Request) -> axum::response::Response {
    use axum::extract::FromRequestParts as _;
    use axum::response::IntoResponse as _;
    let (mut parts, _) = request.into_parts();
    match extract::Authenticated::from_request_parts(&mut parts, state).await {
        Ok(auth) => routes::session(axum::extract::State(state.clone()), auth)
            .await
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

/// Every route of the API without the protective layer ([`protect`]) that [`router`] wraps
/// around it: for reading the route table, or for serving under layers of one's own.
pub fn unprotected_router(service: Arc<Tessera>, http: HttpSettings) -> Router {
    routes_with(AppState {
        service,
        http: Arc::new(http),
        metrics: Arc::new(Exporter::new()),
    })
    .0
}

/// The routes with their state, and the template of each (every route is declared with its
/// documentation, so the document lists every template).
fn routes_with(state: AppState) -> (Router, Vec<String>) {
    let (app, document) = api().split_for_parts();
    let mut app = app
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() });
    // Only when nonces are on: a layer costs every request an allocation.
    if state.service.settings().dpop.nonce {
        app = app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            dpop_nonce::offer,
        ));
    }
    let app = app.with_state(state);
    (app, document.paths.paths.into_keys().collect())
}

/// Every route with its documentation: each module's handlers, registered from their
/// `#[utoipa::path]` attributes, over the document's common parts ([`openapi::Base`]).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::Base::openapi())
        .merge(routes::routes())
        .merge(factors::routes())
        .merge(passkeys::routes())
        .merge(forward_auth::routes())
        .merge(admin::routes())
        .merge(pages::routes())
        .merge(ops::routes())
        .merge(backends::routes())
        .merge(dbsc::routes())
}

/// The OpenAPI 3.1 document of the whole HTTP API, as `GET /openapi.json` serves it: generated
/// from the same declarations the router is built from.
pub fn openapi_json() -> &'static str {
    openapi::json()
}
