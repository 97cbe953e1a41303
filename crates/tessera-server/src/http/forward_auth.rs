//! Forward auth, `/v1/verify`: the one endpoint nginx `auth_request`, Caddy `forward_auth` and
//! Traefik `forwardAuth` call before passing a request on.
//!
//! The proxy names the protected request in `X-Forwarded-Method`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `X-Forwarded-Uri` (nginx: `X-Original-URI`); these are believed only
//! from a trusted proxy. The answer is 200 with the `X-Tessera-*` identity headers, 401 when no
//! valid session was presented, or 403 when an access rule or `?role=`/`?permission=` refuses.
//!
//! Browsers without a session can be sent to the login page (`login_url`), with the protected
//! URL as `rd`: Caddy and Traefik relay tessera's answer, so they get a 302; nginx's
//! `auth_request` turns anything but 2xx/401/403 into a 500, so requests that carry nginx's
//! `X-Original-URI` get a 401 with the same `Location`, which nginx's `error_page` follows.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tessera_core::assurance::{Aal, Requirement as Assurance};
use tessera_core::authz::Requirement;
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{
    Authenticated, ProofContext, authenticate, client_info, forwarding_trusted, peer_ip,
};
use super::openapi::SessionProblems;
use super::problem::{Problem, ProblemBody};
use super::query::QueryParams;
use crate::access::{Decision, Target};
use crate::service::ServiceError;

/// What the proxy says about the request it protects.
///
/// Borrowed from the request's headers: reading it copies nothing.
#[derive(Debug, Default)]
struct Forwarded<'a> {
    method: &'a str,
    proto: Option<&'a str>,
    host: Option<&'a str>,
    uri: Option<&'a str>,
    /// The request comes from nginx's `auth_request` (it carries `X-Original-URI`).
    nginx: bool,
}

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// nginx's `auth_request` names the protected path here (and keeps its method).
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// Headers some back ends (IIS, Symfony, Zend) route on instead of the request line. tessera
/// never reads them and the documented proxies never set them, so on a verify request they
/// come from the client: the back end could serve another path than the one authorised.
const ROUTING_OVERRIDES: [HeaderName; 2] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Headers with which a client can ask a back end to act as if the method were another one.
const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

impl<'a> Forwarded<'a> {
    /// Reads what a trusted proxy says about the protected request, or why it does not name
    /// one request.
    ///
    /// # Security
    /// `X-Forwarded-*` are read only from a trusted proxy: anyone else could pick the host and
    /// path the access rules are matched against. Even from a trusted proxy, a header the
    /// proxy does not set is passed on from the client, so two sources that name different
    /// targets (`X-Forwarded-Uri` and `X-Original-URI`, or one header sent twice) are refused,
    /// never settled by preferring one of them.
    fn read(parts: &'a Parts, state: &AppState) -> Result<Forwarded<'a>, &'static str> {
        let nginx = parts.headers.contains_key(X_ORIGINAL_URI);
        if ROUTING_OVERRIDES
            .iter()
            .any(|name| parts.headers.contains_key(name))
        {
            return Err(
                "X-Original-URL and X-Rewrite-URL are refused: the application could \
                        route on them instead of the request authorised",
            );
        }
        let mut forwarded = Forwarded {
            // nginx's auth_request keeps the original method and sends no X-Forwarded-Method.
            method: parts.method.as_str(),
            nginx,
            ..Forwarded::default()
        };
        // Nothing to read without a trusted proxy, and most requests carry none of these.
        if !forwarding_trusted(peer_ip(&parts.extensions), &state.http) {
            return Ok(forwarded);
        }
        let header = |name: HeaderName| -> Result<Option<&'a str>, &'static str> {
            let mut values = parts.headers.get_all(name).iter();
            let Some(value) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err("a header naming the protected request is repeated");
            }
            let value = value
                .to_str()
                .map_err(|_| "a header naming the protected request is not visible ASCII")?
                .trim();
            Ok(Some(value).filter(|v| !v.is_empty()))
        };
        if let Some(method) = header(X_FORWARDED_METHOD)? {
            forwarded.method = method;
        }
        forwarded.proto = header(X_FORWARDED_PROTO)?;
        forwarded.host = header(X_FORWARDED_HOST)?;
        forwarded.uri = match (header(X_FORWARDED_URI)?, header(X_ORIGINAL_URI)?) {
            (Some(a), Some(b)) if a != b => {
                return Err("X-Forwarded-Uri and X-Original-URI name different requests");
            }
            (a, b) => a.or(b),
        };
        Ok(forwarded)
    }

    fn target<'t>(&'t self, method_overrides: &'t [&'t str]) -> Option<Target<'t>> {
        Some(Target {
            method: self.method,
            method_overrides,
            host: self.host?,
            uri: self.uri?,
        })
    }

    /// The protected URL, rebuilt for the login page's `rd`.
    fn original_url(&self) -> Option<String> {
        let proto = self.proto?.to_ascii_lowercase();
        let (host, uri) = (self.host?, self.uri?);
        if !matches!(proto.as_str(), "http" | "https") || !uri.starts_with('/') {
            return None;
        }
        let url = Url::parse(&format!("{proto}://{host}{uri}")).ok()?;
        // A host value smuggling a path, user info or another authority is not a host.
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_owned(),
        };
        let with_port = format!("{}:{}", url.host_str()?, url.port_or_known_default()?);
        (authority.eq_ignore_ascii_case(host) || with_port.eq_ignore_ascii_case(host))
            .then(|| url.to_string())
    }
}

/// `/v1/verify`: documented for the methods its document lists, served for any (see
/// [`verify_unless_trace`]).
pub(super) fn routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, _documented_methods) = routes!(verify_unless_trace);
    OpenApiRouter::new().routes((schemas, paths, any(verify_unless_trace)))
}

/// The `Allow` of `/v1/verify`'s 405: the methods its API document lists.
const VERIFY_ALLOW: &str = "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS";

/// `/v1/verify` on the methods its API document lists, and on any other but `TRACE` and
/// `CONNECT` when nginx's `auth_request` asks (it carries `X-Original-URI`): nginx keeps the
/// protected request's method, WebDAV's `PROPFIND` included, so verify must answer them.
///
/// # Security
/// `TRACE` and `CONNECT` always get 405, as on every other route: no proxy passes them on for
/// a decision, and `TRACE`, which echoes the request, is how cross-site tracing reads
/// credentials.
#[utoipa::path(
    method(get, head, post, put, patch, delete, options), path = "/v1/verify",
    operation_id = "verify", tag = "forward auth",
    summary = "Forward auth for reverse proxies",
    description = "Answers any method (nginx's `auth_request` reuses the original one) and \
        changes nothing. 200 with identity headers when the presented session is valid and \
        holds every `role` and `permission` asked for.",
    security(("bearerAuth" = []), ("cookieAuth" = [])),
    params(
        ("role" = Option<Vec<String>>, Query, style = Form, explode = true,
            description = "Roles the user must hold (repeatable, or comma-separated)."),
        ("permission" = Option<Vec<String>>, Query, style = Form, explode = true,
            description = "Permissions the user must hold (repeatable, or comma-separated)."),
        ("aal" = Option<u8>, Query, minimum = 1, maximum = 2,
            description = "Least assurance level of the sign-in: 2 needs a second factor."),
        ("max_age" = Option<u32>, Query, maximum = 2147483647,
            description = "Longest age of the sign-in, in seconds."),
    ),
    responses(
        (status = 200, description = "Allowed.",
            headers(
                ("X-Tessera-User" = String, description = "Username."),
                ("X-Tessera-User-Id" = String, description = "User id."),
                ("X-Tessera-Roles" = String, description = "Roles, comma-separated."),
                ("X-Tessera-Session" = String, description = "Session id."),
                ("Set-Cookie" = String, description = "A renewed JWT cookie, when \
                    `cookie_format = \"jwt\"` and less than half its lifetime is left."),
            )),
        SessionProblems,
        (status = 400, body = ProblemBody, content_type = "application/problem+json",
            description = "`aal` or `max_age` is not valid. Problem codes: `bad_request`."),
        (status = 403, body = ProblemBody, content_type = "application/problem+json",
            description = "A required role or permission is missing. Problem codes: \
                `forbidden`. Also when the session's stored roles or permissions break the \
                naming rules (fail closed, never 500)."),
    ),
)]
pub(super) async fn verify_unless_trace(state: State<AppState>, request: Request) -> Response {
    let method = request.method();
    let documented = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method);
    let from_nginx = request.headers().contains_key(X_ORIGINAL_URI);
    let never = *method == Method::TRACE || *method == Method::CONNECT;
    if never || !(documented || from_nginx) {
        let mut response = Problem::method_not_allowed().into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(VERIFY_ALLOW));
        return response;
    }
    verify(state, request).await
}

/// What a request named by the proxy requires, from the rules and the query.
enum Required<'a> {
    /// A bypass rule and nothing asked: no session needed.
    Nothing,
    /// A session that meets this, for the request `forwarded` names.
    Session(Requirement, Forwarded<'a>),
    /// Refused before any session is looked at (denied, or not decidable): this answer.
    Refused(Response),
}

/// What the protected request `parts` names (through a trusted proxy's headers) requires of a
/// session: the access rules' decision with `?role=`, `?permission=`, `?aal=` and `?max_age=`
/// added, or the refusal to answer with when it cannot be decided or is denied.
fn required_for<'a>(parts: &'a Parts, state: &AppState) -> Required<'a> {
    let forwarded = match Forwarded::read(parts, state) {
        Ok(forwarded) => forwarded,
        Err(reason) => {
            tracing::warn!(
                reason,
                "forward auth: refused a request naming its target ambiguously"
            );
            return Required::Refused(forbidden(reason));
        }
    };
    let query = QueryParams::parse(parts.uri.query());
    let assurance = match asked_assurance(&query) {
        Ok(assurance) => assurance,
        Err(problem) => return Required::Refused(problem.into_response()),
    };
    let asked = Requirement {
        roles: query.list("role"),
        permissions: query.list("permission"),
        assurance,
    };
    let mut required = asked.clone();
    if !state.http.access.is_empty() {
        let Some(overrides) = method_overrides(&parts.headers) else {
            return Required::Refused(forbidden("a method-override header is not visible ASCII"));
        };
        let Some(target) = forwarded.target(&overrides) else {
            tracing::warn!(
                "forward auth: access rules are configured, but the request does not name the \
                 request it protects (X-Forwarded-Host and X-Forwarded-Uri or X-Original-URI \
                 from a trusted proxy with behind_proxy on)"
            );
            return Required::Refused(forbidden(
                "the protected request is unknown: a trusted proxy must send X-Forwarded-Host \
                 and X-Forwarded-Uri (or X-Original-URI)",
            ));
        };
        match state.http.access.decide(&target) {
            // Nothing to check: answer without touching the store.
            Decision::Bypass if asked == Requirement::default() => return Required::Nothing,
            Decision::Bypass => {}
            Decision::Deny { rule } => {
                tracing::debug!(?rule, host = target.host, uri = target.uri, "access denied");
                return Required::Refused(forbidden("an access rule denies this request"));
            }
            Decision::Require(rule) => {
                required.roles.extend(rule.roles);
                required.permissions.extend(rule.permissions);
                required.assurance = required.assurance.and(rule.assurance);
            }
        }
    }
    // `second_factor_required`: whatever a rule says, a session must be AAL2.
    required.assurance = required
        .assurance
        .and(state.service.required_of_every_session());
    Required::Session(required, forwarded)
}

/// The step-up a signed-in request needs for the protected request its proxy names, if any:
/// for a refusal page that nginx shows instead of `/v1/verify`'s own answer.
pub(super) fn step_up_needed(
    parts: &Parts,
    state: &AppState,
    auth: &Authenticated,
) -> Option<Problem> {
    let Required::Session(required, _) = required_for(parts, state) else {
        return None;
    };
    let id = &auth.identity;
    if !required.is_met_by(&id.roles, &id.permissions) {
        return None;
    }
    id.check_assurance(&required.assurance, state.service.now())
        .err()
        .map(|step_up| auth.problem(step_up))
}

/// `GET` (or any method) `/v1/verify`.
async fn verify(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let (required, forwarded) = match required_for(&parts, &state) {
        Required::Session(required, forwarded) => (required, forwarded),
        Required::Nothing => return identity_response(["", "", "", ""]),
        Required::Refused(refusal) => return refusal,
    };
    // A DPoP proof names the protected request, as the proxy forwards it.
    let context = || ProofContext {
        method: forwarded.method.to_owned(),
        url: forwarded.original_url(),
        client: client_info(&parts, &state),
    };
    let auth = match authenticate(&parts.headers, &state, Some(&context)).await {
        Ok(auth) => auth,
        Err(problem) => return unauthenticated(problem, &forwarded, &parts.headers, &state),
    };
    let id = &auth.identity;
    if !required.is_met_by(&id.roles, &id.permissions) {
        return forbidden("a required role or permission is missing");
    }
    if let Err(step_up) = id.check_assurance(&required.assurance, state.service.now()) {
        // Like a missing session: the browser goes to the login page, which signs in again
        // (a login there ends this session and starts one with what is asked for).
        let problem = auth.problem(step_up);
        return unauthenticated(problem, &forwarded, &parts.headers, &state);
    }
    let roles = id.roles.join(",");
    let mut response = identity_response([&id.username, &id.user_id, &roles, &id.session_id]);
    if let Err(problem) = auth.renew_cookie_jwt(&state, &mut response) {
        return problem.into_response();
    }
    response
}

/// Every method-override value the client sent (each possibly a list), for the access rules;
/// `None` when one cannot be read as text.
fn method_overrides(headers: &HeaderMap) -> Option<Vec<&str>> {
    METHOD_OVERRIDES
        .iter()
        .flat_map(|name| headers.get_all(name))
        .map(|value| value.to_str().ok())
        .collect()
}

/// Names of the identity headers, in the order [`identity_response`] takes their values
/// (constants: no name is parsed per request).
const IDENTITY_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-tessera-user"),
    HeaderName::from_static("x-tessera-user-id"),
    HeaderName::from_static("x-tessera-roles"),
    HeaderName::from_static("x-tessera-session"),
];

/// Headers an identity answer ends up with: the four above and the five every response
/// gets (`super::protect`), allocated once instead of grown.
const IDENTITY_RESPONSE_HEADERS: usize = 12;

/// 200 with the identity headers: user name, user id, roles (comma-separated), session id.
///
/// Every header is always present, empty when there is no identity (a bypass rule): a proxy
/// that copies them then overwrites whatever the client sent, and Caddy 2.6's `copy_headers`
/// would otherwise pass its unreplaced placeholder text on for a missing one.
///
/// # Security
/// Names are checked where they come in (`tessera_core::names`), and a session whose stored
/// roles break the charset is refused before it gets here (`super::extract::authenticate`),
/// so every value is a valid header. Should one still not be (a username stored with CR/LF
/// before the rules), the answer is 403 `forbidden`: the identity cannot be passed on
/// faithfully, so the request must not go through unnamed; 403 rather than 401 because a
/// fresh login would carry the same name (no login loop), and never 500.
fn identity_response(values: [&str; 4]) -> Response {
    let mut headers = HeaderMap::with_capacity(IDENTITY_RESPONSE_HEADERS);
    for (name, value) in IDENTITY_HEADERS.into_iter().zip(values) {
        // UTF-8 names pass as raw bytes.
        let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) else {
            return forbidden(&format!(
                "the session's {name} cannot be passed on; an administrator must rename it"
            ));
        };
        headers.insert(name, value);
    }
    let mut response = StatusCode::OK.into_response();
    *response.headers_mut() = headers;
    response
}

fn forbidden(detail: &str) -> Response {
    Problem::from(ServiceError::Forbidden(detail.to_owned())).into_response()
}

/// A 401, or the way to the login page for a browser.
fn unauthenticated(
    problem: Problem,
    forwarded: &Forwarded<'_>,
    headers: &HeaderMap,
    state: &AppState,
) -> Response {
    let browser_navigation = problem.status() == StatusCode::UNAUTHORIZED
        && prefers_html(headers)
        && matches!(forwarded.method, "GET" | "HEAD");
    let Some(login_url) = state
        .http
        .login_url
        .as_deref()
        .filter(|_| browser_navigation)
    else {
        return problem.into_response();
    };
    let mut location = login_location(login_url, forwarded.original_url().as_deref());
    if let Some(step_up) = problem.step_up_asked() {
        // The login page is told what to ask for; numbers only.
        let separator = if location.contains('?') { '&' } else { '?' };
        location.push(separator);
        location.push_str(&step_up_query(&step_up.required));
    }
    let Ok(location) = HeaderValue::from_str(&location) else {
        return problem.into_response();
    };
    let mut response = if forwarded.nginx {
        problem.into_response()
    } else {
        StatusCode::FOUND.into_response()
    };
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// `?aal=` and `?max_age=` of `/v1/verify` (and of the login page, which ignores unusable
/// values): 400 when either is not a level (1, 2) or a whole number of seconds.
pub(super) fn asked_assurance(query: &QueryParams) -> Result<Assurance, Problem> {
    let aal = match query.single("aal")? {
        None => None,
        Some(text) => Some(
            text.parse::<u8>()
                .ok()
                .and_then(Aal::from_number)
                .ok_or_else(|| Problem::bad_request("aal must be 1 or 2"))?,
        ),
    };
    let max_age = match query.single("max_age")? {
        None => None,
        // At most i32::MAX, as the document's `int32` says (68 years).
        Some(text) => Some(
            text.parse::<i32>()
                .ok()
                .filter(|seconds| *seconds >= 0)
                .map(i64::from)
                .ok_or_else(|| Problem::bad_request("max_age must be a whole number of seconds"))?,
        ),
    };
    Ok(Assurance { aal, max_age })
}

/// The requirement as the login page reads it: `aal=2&max_age=600`.
pub(super) fn step_up_query(required: &Assurance) -> String {
    let mut parts = Vec::new();
    if let Some(aal) = required.aal {
        parts.push(format!("aal={}", aal.number()));
    }
    if let Some(max_age) = required.max_age {
        parts.push(format!("max_age={max_age}"));
    }
    parts.join("&")
}

/// `login_url` with the protected URL as `rd`.
fn login_location(login_url: &str, original: Option<&str>) -> String {
    match original {
        None => login_url.to_owned(),
        Some(original) => {
            let separator = if login_url.contains('?') { '&' } else { '?' };
            let rd: String = form_urlencoded::byte_serialize(original.as_bytes()).collect();
            format!("{login_url}{separator}rd={rd}")
        }
    }
}

/// The client would rather have HTML than JSON: a browser navigating.
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for item in accept.split(',') {
        let mut params = item.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" | "application/problem+json" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html >= json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn browsers_prefer_html_and_api_clients_do_not() {
        assert!(prefers_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
        )));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&accept("application/json, text/html;q=0.5")));
        assert!(!prefers_html(&accept("text/html;q=0")));
        assert!(!prefers_html(&HeaderMap::new()));
    }

    #[test]
    fn login_location_carries_the_encoded_original_url() {
        assert_eq!(
            login_location("/login", Some("https://app.test/a?b=1&c=2")),
            "/login?rd=https%3A%2F%2Fapp.test%2Fa%3Fb%3D1%26c%3D2"
        );
        assert_eq!(
            login_location("https://auth.test/login?x=1", Some("https://a.test/")),
            "https://auth.test/login?x=1&rd=https%3A%2F%2Fa.test%2F"
        );
        assert_eq!(login_location("/login", None), "/login");
    }

    #[test]
    fn original_url_refuses_hosts_that_are_not_hosts() {
        let f = |proto: &'static str, host: &'static str, uri: &'static str| Forwarded {
            proto: Some(proto),
            host: Some(host),
            uri: Some(uri),
            ..Forwarded::default()
        };
        assert_eq!(
            f("https", "app.test:8443", "/x?y=1")
                .original_url()
                .as_deref(),
            Some("https://app.test:8443/x?y=1")
        );
        assert_eq!(
            f("https", "app.test:443", "/").original_url().as_deref(),
            Some("https://app.test/")
        );
        assert_eq!(f("https", "evil.test/", "/x").original_url(), None);
        assert_eq!(f("https", "a@evil.test", "/x").original_url(), None);
        assert_eq!(f("javascript", "a.test", "/x").original_url(), None);
        assert_eq!(f("https", "a.test", "x").original_url(), None);
    }
}
