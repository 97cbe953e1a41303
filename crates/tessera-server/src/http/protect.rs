//! The protective layer every tessera router gets: the cross-site check, the body size limit,
//! panic containment, response hygiene headers, and metrics plus the access log.
//!
//! It is one service wrapped once around the whole router, not a stack of `Router::layer`
//! calls: axum applies a router layer to every route separately, so each of five layers was
//! cloned and boxed again on every request (about 45 of a `/healthz` request's 78
//! allocations). Here a request pays one clone of the router (an `Arc`) and one boxed future.
//! The metric label is the route template, found with the same templates the router was
//! built from (`matchit`, the matcher axum itself uses), since a layer outside the router never
//! sees axum's `MatchedPath`.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::BoxError;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tower_layer::Layer as _;
use tower_service::Service;

use super::extract::{self, Via};
use super::{HotRoutes, HttpSettings, MAX_BODY_BYTES, Problem, observe, redirect};
use crate::connection::Answers;

/// Applies the protective layer to `router`, whose routes are `templates` (axum's syntax,
/// `/v1/sessions/{id}`: the metric labels; a path matching none is `unmatched`).
///
/// # Security
/// A panic in a handler is caught and answered with a generic 500 problem: the connection,
/// the other requests and the process carry on, and no panic message reaches the client.
/// Cookie-authenticated state-changing requests sent cross-site are refused before any
/// handler runs ([`cross_site_refusal`]).
pub fn protect<'t>(
    router: Router,
    http: Arc<HttpSettings>,
    templates: impl IntoIterator<Item = &'t str>,
) -> Router {
    Router::new().fallback_service(protected(router, http, route_labels(templates), None))
}

/// The metric label of each path: its route template, found by `matchit`.
pub(crate) fn route_labels<'t>(
    templates: impl IntoIterator<Item = &'t str>,
) -> matchit::Router<Box<str>> {
    let mut routes = matchit::Router::new();
    for template in templates {
        // axum accepted the same templates, so none conflicts; one that did would only go
        // unlabelled.
        let _ = routes.insert(template, Box::<str>::from(template));
    }
    routes
}

/// [`protect`] as a service of its own, for the server to serve directly (a router around it
/// would route every request once more, for nothing).
/// `hot`: routes it answers without the router (see [`HotRoutes`]).
pub(crate) fn protected(
    router: Router,
    http: Arc<HttpSettings>,
    routes: matchit::Router<Box<str>>,
    hot: Option<HotRoutes>,
) -> Protect<impl Answers<Body>> {
    Protect {
        inner: limited(router),
        shared: Arc::new(Shared { http, routes, hot }),
    }
}

/// What [`Protect`] wraps: the router under the body size limit.
fn limited(router: Router) -> impl Answers<Body> {
    DefaultBodyLimit::max(MAX_BODY_BYTES).layer(router)
}

/// The service [`protect`] wraps around a router.
#[derive(Clone)]
pub(crate) struct Protect<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    http: Arc<HttpSettings>,
    routes: matchit::Router<Box<str>>,
    hot: Option<HotRoutes>,
}

/// Any body a router takes: axum's own (embedded in a router) or hyper's (served directly),
/// boxed as axum's first, as a router does.
impl<S, B> Service<axum::http::Request<B>> for Protect<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is made ready in `call`, on its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        // `Body::new` does not box an axum body again.
        let request = request.map(Body::new);
        Box::pin(Shared::handle(shared, inner, request))
    }
}

impl Shared {
    async fn handle<S>(
        self: Arc<Self>,
        mut inner: S,
        request: Request,
    ) -> Result<Response, Infallible>
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let started = Instant::now();
        let path = request.uri().path();
        let route = self
            .routes
            .at(path)
            .map_or(observe::UNMATCHED, |found| &**found.value);
        let method = observe::method_label(request.method());
        let answered = AssertUnwindSafe(async {
            if let Some(refusal) = cross_site_refusal(&request, &self.http) {
                return refusal;
            }
            if let Some(handler) = self
                .hot
                .as_ref()
                .and_then(|hot| hot.handler(route, request.method()))
            {
                return handler.answer(request).await;
            }
            let Ok(()) = poll_fn(|cx| inner.poll_ready(cx)).await;
            let Ok(response) = inner.call(request).await;
            response
        })
        .catch_unwind()
        .await;
        let mut response = answered.unwrap_or_else(|_payload| panic_response());
        add_hygiene_headers(response.headers_mut(), &self.http);
        observe::record(route, method, started.elapsed(), &response);
        Ok(response)
    }
}

/// The answer to a request whose handler panicked. The panic itself was already reported by
/// the panic hook (the log); the payload is dropped, never sent.
fn panic_response() -> Response {
    crate::metrics::http_panic();
    tracing::error!("a request handler panicked; answered 500");
    Problem::internal_error().into_response()
}

/// Adds the headers every response needs.
///
/// # Security
/// `Cache-Control: no-store` keeps tokens and session data out of shared and browser caches;
/// HSTS (one year) pins browsers to HTTPS once they have seen it.
fn add_hygiene_headers(headers: &mut HeaderMap, http: &HttpSettings) {
    // Room for all five at once: one growth of the map instead of several.
    headers.reserve(5);
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
}

/// The refusal of a cookie-authenticated state-changing request (or any login) sent
/// cross-site; `None` for every other request.
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
fn cross_site_refusal(request: &Request, http: &HttpSettings) -> Option<Response> {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !unsafe_method {
        return None;
    }
    let path = request.uri().path();
    let by_cookie = matches!(
        extract::presented_token_with(request.headers(), &http.cookie),
        Some((_, Via::Cookie))
    );
    // Every step of a login (the password, the second factor, a passkey) may set a cookie:
    // login CSRF is refused on all of them, cookie or none.
    let login = path == "/v1/login" || path.starts_with("/v1/login/");
    let guarded = login || (path != "/v1/verify" && by_cookie);
    let peer = extract::peer_ip(request.extensions());
    (guarded && is_cross_site(request.headers(), peer, http))
        .then(|| Problem::cross_site().into_response())
}

fn is_cross_site(headers: &HeaderMap, peer: Option<IpAddr>, http: &HttpSettings) -> bool {
    let allowed = |origin: &url::Origin| http.allowed_origins.contains(origin);
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
            !(allowed(&origin) || own_origin(headers, peer, http).is_some_and(|o| o == origin))
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
pub(super) fn own_origin(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    http: &HttpSettings,
) -> Option<url::Origin> {
    let trusted = extract::forwarding_trusted(peer, http);
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
        None if trusted || http.tls => "https",
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
