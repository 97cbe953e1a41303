//! The observing middleware: metrics by outcome and a debug access log, for every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::problem::ProblemCode;
use crate::metrics;

/// Records the response of every request in [`metrics::HTTP_REQUESTS`], logins in
/// [`metrics::LOGINS`] and verifies in [`metrics::VERIFY`] / [`metrics::VERIFY_DURATION`], and
/// writes one `debug` access-log event with target [`ACCESS_LOG_TARGET`].
///
/// # Security
/// Only the route template (`/v1/sessions/{id}`), never the request URI, is recorded or logged:
/// a URI can carry what a client should not have put there (a token in a query string), and
/// templates keep the label set bounded.
/// The target of the access-log events, named so that `RUST_LOG=tessera::access=debug` selects
/// them alone (and `info,tessera::access=debug` adds them to the usual log) whatever module
/// writes them.
pub(crate) const ACCESS_LOG_TARGET: &str = "tessera::access";

pub(super) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A clone of the matched path shares its string (an `Arc`): no copy per request.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = method_label(request.method());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let code = response
        .extensions()
        .get::<ProblemCode>()
        .map(|c| c.as_str());
    let outcome = |success: &'static str| {
        if status.is_success() {
            success
        } else {
            code.unwrap_or("other")
        }
    };
    metrics::http_response(route, method, status.as_u16());
    match route {
        "/v1/login" => metrics::login(outcome("success")),
        "/v1/verify" => metrics::verify(outcome("allowed"), elapsed),
        _ => {}
    }
    tracing::debug!(
        target: ACCESS_LOG_TARGET,
        method,
        route,
        status = status.as_u16(),
        code,
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// The `method` label: a fixed set, so arbitrary methods cannot grow the series count.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
