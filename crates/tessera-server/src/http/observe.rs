//! What is recorded of every request: metrics by outcome and a debug access log (called by
//! the protective layer, [`super::protect`]).

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;

use super::problem::ProblemCode;
use crate::metrics;

/// The target of the access-log events, named so that `RUST_LOG=tessera::access=debug` selects
/// them alone (and `info,tessera::access=debug` adds them to the usual log) whatever module
/// writes them.
pub(crate) const ACCESS_LOG_TARGET: &str = "tessera::access";

/// The route label of a request whose path matches no route.
pub(super) const UNMATCHED: &str = "unmatched";

/// Records one answered request (`route` its template or [`UNMATCHED`], `method` its
/// [`method_label`], `elapsed` the time to its response) in [`metrics::HTTP_REQUESTS`], logins in
/// [`metrics::LOGINS`] and verifies in [`metrics::VERIFY`] / [`metrics::VERIFY_DURATION`], and
/// writes one `debug` access-log event with target [`ACCESS_LOG_TARGET`].
///
/// # Security
/// Only the route template (`/v1/sessions/{id}`), never the request URI, is recorded or logged:
/// a URI can carry what a client should not have put there (a token in a query string), and
/// templates keep the label set bounded.
pub(super) fn record(route: &str, method: &'static str, elapsed: Duration, response: &Response) {
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
}

/// The `method` label: a fixed set, so arbitrary methods cannot grow the series count.
pub(super) fn method_label(method: &Method) -> &'static str {
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
