//! The browser pages: login, account (the caller's sessions, the password form, second
//! factors), logged out, access denied, and the step-up page (`factors`).
//!
//! Plain server-rendered HTML (askama templates, compiled and HTML-escaped), one small
//! stylesheet served by the binary, and no script — except, when passkeys are on, one file of
//! the binary's own on the login, account and step-up pages (`passkeys`), for the browser's
//! WebAuthn API — so a strict Content-Security-Policy goes with every page. Forms can only GET
//! and POST, so the account page's buttons post to `/account/...` endpoints that redirect back
//! (303).

use askama::Template;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Authenticated, Body};
use super::openapi::{BodyProblems, FormAnswers, PageRedirect, PageUnavailable};
use super::problem::{Problem, ProblemCode};
use super::query::QueryParams;
use super::redirect::{DEFAULT_RETURN, RedirectPolicy};
use crate::clock::rfc3339;
use crate::service::{ClientInfo, Credentials, Delivery, ServiceError};

mod factors;
mod passkeys;

/// The stylesheet of every page.
const STYLESHEET: &str = include_str!("../../static/tessera.css");
/// The one script of the pages: passkeys on the login, account and step-up pages.
const PASSKEY_SCRIPT: &str = include_str!("../../static/passkeys.js");

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_page))
        .routes(routes!(account_page))
        .routes(routes!(password_page, password_form))
        .routes(routes!(access_denied_page))
        .routes(routes!(logged_out_page))
        .routes(routes!(logout_form))
        .routes(routes!(revoke_others_form))
        .routes(routes!(revoke_form))
        .routes(routes!(stylesheet))
        .routes(routes!(passkey_script))
        .merge(factors::routes())
        .merge(passkeys::routes())
}

/// The Content-Security-Policy of the pages; `script` for the pages that offer passkeys.
///
/// # Security
/// No script may run — on the pages that offer passkeys, only the one file this binary serves
/// (`script-src 'self'`: no inline script, no `eval`), which may call only this origin's API
/// (`connect-src 'self'`). Styles come only from this origin, nothing may frame the pages
/// (clickjacking), and forms may post only to this origin — or be redirected on to an allowed
/// `rd` origin, which `form-action` also governs.
pub(super) fn page_csp(redirects: &RedirectPolicy, script: bool) -> String {
    let mut form_action = vec!["'self'".to_owned()];
    form_action.extend(redirects.csp_sources());
    let script = if script {
        "script-src 'self'; connect-src 'self'; "
    } else {
        ""
    };
    format!(
        "default-src 'none'; {script}style-src 'self'; img-src 'self'; form-action {}; \
         frame-ancestors 'none'; base-uri 'none'",
        form_action.join(" ")
    )
}

// ---------------------------------------------------------------------------- templates

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    product: String,
    error: Option<&'static str>,
    rd: Option<String>,
    /// The name typed before a failed attempt, shown again in the field.
    username: Option<String>,
    /// The password was right and a code is needed: the code field is required.
    second_factor: bool,
    /// Passkeys are on: the page offers a passkey log-in (with the script).
    passkeys: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    product: String,
    username: String,
    roles: String,
    notice: Option<&'static str>,
    sessions: Vec<SessionRow>,
    /// The TOTP factor: `none`, `pending` or `confirmed`.
    totp: &'static str,
    recovery_codes_left: u32,
    /// Passkeys are on: the page lists them and offers to add one (with the script).
    passkeys_enabled: bool,
    passkeys: Vec<passkeys::PasskeyRow>,
}

struct SessionRow {
    id: String,
    device: String,
    user_agent: String,
    ip: String,
    created: String,
    created_iso: String,
    last_seen: String,
    last_seen_iso: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    product: String,
    title: &'static str,
    message: &'static str,
    alert: bool,
    link_href: &'static str,
    link_text: &'static str,
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    product: String,
    username: String,
    error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "denied.html")]
struct DeniedPage {
    product: String,
    username: String,
}

/// The product name the pages show (`product_name`).
fn product(state: &AppState) -> String {
    state.http.product_name.clone()
}

/// A rendered page with the page security headers.
fn page(state: &AppState, status: StatusCode, template: &impl Template) -> Response {
    render(status, template, &state.http.page_csp)
}

/// A rendered page that loads the passkey script (`/static/passkeys.js`), when passkeys are on;
/// else the same as [`page`] (the template leaves the script out too).
fn page_with_passkeys(state: &AppState, status: StatusCode, template: &impl Template) -> Response {
    let csp = if state.service.passkeys_enabled() {
        &state.http.page_csp_scripted
    } else {
        &state.http.page_csp
    };
    render(status, template, csp)
}

fn render(status: StatusCode, template: &impl Template, csp: &str) -> Response {
    let body = match template.render() {
        Ok(body) => body,
        Err(error) => {
            let error = ServiceError::internal_from("rendering a page", error);
            return Problem::from(error).into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    // For browsers without CSP frame-ancestors.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show session data: never stored by any cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `303 See Other` to `location` (after a form post, the browser then GETs it).
fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The value of a single-valued page parameter. A repeated key is refused by the query rule
/// ([`QueryParams::single`]); a page treats it like any other unusable value — as absent — so
/// the page still renders (the default return address, no message).
fn page_param(query: &QueryParams, key: &str) -> Option<String> {
    query.single(key).ok().flatten().map(str::to_owned)
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// An authenticated page request, or where to send the browser instead.
/// The caller of an account page: signed in, or the request is answered with the way to the
/// login page (no session) or the "something went wrong" page (the store is unavailable).
struct SignedIn(Authenticated);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Authenticated::from_request_parts(parts, state).await {
            Ok(auth) => Ok(SignedIn(auth)),
            Err(problem) if problem.status() == StatusCode::UNAUTHORIZED => {
                Err(see_other(&format!("/login?rd={}", encode(DEFAULT_RETURN))))
            }
            Err(problem) => Err(unavailable(state, &problem)),
        }
    }
}

fn unavailable(state: &AppState, problem: &Problem) -> Response {
    let mut response = page(
        state,
        problem.status(),
        &MessagePage {
            product: product(state),
            title: "Something went wrong",
            message: "Your request could not be completed right now. Please try again in a moment.",
            alert: true,
            link_href: "/account",
            link_text: "Back to your account",
        },
    );
    if problem.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}

// ---------------------------------------------------------------------------- login

/// Why the last form login failed; the text never says which part was wrong.
fn login_error(code: &str) -> Option<&'static str> {
    match code {
        "credentials" => Some("Log-in failed: the username or password is not correct."),
        "second_factor" => Some(
            "This account has a second factor: enter your password again with the code from \
             your authenticator app (or a recovery code).",
        ),
        "code" => Some("Log-in failed: the code is not correct, or was used already."),
        "rate_limited" => Some("Too many log-in attempts. Please wait a little and try again."),
        "unavailable" => Some("Log-in is unavailable right now. Please try again in a moment."),
        _ => None,
    }
}

/// The log-in form (posts to `/v1/login`, then returns to a safe `rd`), or the step-up page
///
/// With `aal` or `max_age` (as `/v1/verify` sends a browser that must step up) and a valid
/// session, the page asks only for what the session lacks (the code, the password, or both;
/// posting to `/account/step-up`), says so when a second factor is asked of an account without
/// one, and redirects to `rd` when the session meets the request already. Otherwise (no
/// session, neither parameter, or an unusable value) it is the log-in form.
#[utoipa::path(
    get, path = "/login", operation_id = "loginPage", tag = "pages",
    params(
        ("rd" = Option<String>, Query,
            description = "Where to return after signing in (local path or an allowed origin)."),
        ("error" = Option<String>, Query,
            description = "Set after a failed attempt; the page announces it."),
        ("username" = Option<String>, Query,
            description = "Set after a failed attempt: the name typed, shown again in the field."),
        ("aal" = Option<String>, Query,
            description = "With a session: the level asked for (`2`: a second factor). A \
                value the page cannot use shows the plain login form."),
        ("max_age" = Option<String>, Query,
            description = "With a session: how recent, in seconds, the sign-in must be. A \
                value the page cannot use shows the plain login form."),
    ),
    responses(
        (status = 200, body = String, content_type = "text/html",
            description = "The log-in form, or the step-up page."),
        (status = 303, description = "A session that meets `aal` and `max_age` already: \
            to `rd` (`Location`).",
            headers(("Location" = String))),
        (status = 503, response = PageUnavailable),
    ),
)]
async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryParams,
) -> Response {
    let rd = page_param(&query, "rd").and_then(|rd| state.http.redirects.check(&rd));
    // A step-up only with what `/v1/verify` asks for; a plain `/login` never reads the session
    // (nor touches the store).
    let asked = super::forward_auth::asked_assurance(&query)
        .ok()
        .filter(|asked| !asked.is_none());
    if let Some(asked) = asked {
        match super::extract::authenticate(&headers, &state, None).await {
            Ok(auth) => return factors::step_up_page(&state, &auth, asked, rd, &query).await,
            Err(problem) if problem.status().is_server_error() => {
                return unavailable(&state, &problem);
            }
            // No valid session: the log-in form, which asks for everything.
            Err(_) => {}
        }
    }
    let error = page_param(&query, "error").and_then(|code| login_error(&code));
    // Only with an error: the name is shown again after a failed attempt, never pre-filled
    // by a bare link. Whatever it holds is only ever an HTML-escaped field value.
    let username = error
        .and(page_param(&query, "username"))
        .filter(|name| shown_again(name));
    let second_factor = page_param(&query, "error").as_deref() == Some("second_factor");
    let page_body = LoginPage {
        product: product(&state),
        error,
        rd,
        username,
        second_factor,
        passkeys: state.service.passkeys_enabled(),
    };
    page_with_passkeys(&state, StatusCode::OK, &page_body)
}

/// Longest username shown again in the login form (the form's own `maxlength`).
const MAX_SHOWN_USERNAME: usize = 256;

/// Whether a typed username is shown again after a failed login: not empty, not longer than
/// the field takes, no control characters.
///
/// # Security
/// The name travels in the redirect's URL, so anyone can make a link with any value: all it
/// can do is fill the text field of the form (askama escapes it as an attribute value, and the
/// page runs no script). It cannot sign anyone in (the password is still needed, and a login
/// from another site is refused). The access log records paths without their query.
fn shown_again(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_SHOWN_USERNAME
        && !name.chars().any(char::is_control)
}

/// True when a login is a browser's form submission: form-encoded, and the browser wants HTML
/// back. It then gets redirects; API clients posting forms keep getting JSON.
pub(super) fn is_browser_form(headers: &HeaderMap) -> bool {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/html"));
    form && html
}

/// The answer to a browser's form login: the cookie and a 303 to the safe `rd`, or back to
/// the login page with an error.
pub(super) fn after_form_login(
    state: &AppState,
    rd: Option<&str>,
    username: &str,
    result: Result<Credentials, ServiceError>,
) -> Response {
    let safe_rd = rd.and_then(|rd| state.http.redirects.check(rd));
    match result {
        Ok(credentials) => {
            let mut response = see_other(safe_rd.as_deref().unwrap_or(DEFAULT_RETURN));
            super::dbsc::issue_cookie(state, response.headers_mut(), &credentials);
            response
        }
        Err(error) => {
            let problem = Problem::from(error);
            let code = match (problem.status(), problem.code()) {
                (StatusCode::TOO_MANY_REQUESTS, _) => "rate_limited",
                (s, _) if s.is_server_error() => "unavailable",
                // Only after the right password: the form asks again, with the code.
                (_, ProblemCode::SecondFactorRequired) => "second_factor",
                (_, ProblemCode::InvalidCode) => "code",
                // Unknown user, wrong password, malformed input: one answer for all.
                _ => "credentials",
            };
            let mut location = format!("/login?error={code}");
            if let Some(rd) = safe_rd {
                location.push_str(&format!("&rd={}", encode(&rd)));
            }
            // The name as typed, so the person only retypes the password.
            if shown_again(username) {
                location.push_str(&format!("&username={}", encode(username)));
            }
            see_other(&location)
        }
    }
}

// ---------------------------------------------------------------------------- account

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "revoked" => Some("The session was logged out."),
        "others" => Some("All your other sessions were logged out."),
        "gone" => Some("That session had already ended."),
        "password" => Some("Your password was changed. Your other sessions were logged out."),
        "totp_removed" => Some(
            "The authenticator app was removed, with its recovery codes: logging in needs only \
             your password now.",
        ),
        "reauthenticated" => Some("Thank you for logging in again. You can make the change now."),
        "passkey_added" => Some("The passkey was added: you can log in with it now."),
        "passkey_renamed" => Some("The passkey was renamed."),
        "passkey_removed" => Some("The passkey was removed: it no longer logs you in."),
        "passkey_name" => {
            Some("The passkey was not renamed: a name is 1 to 64 characters, not only spaces.")
        }
        _ => None,
    }
}

/// The caller's sessions with revoke and logout buttons
#[utoipa::path(
    get, path = "/account", operation_id = "accountPage", tag = "pages",
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The page."),
        (status = 303, response = PageRedirect),
        (status = 503, response = PageUnavailable),
    ),
)]
async fn account_page(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    query: QueryParams,
) -> Response {
    let id = &auth.identity;
    let sessions = match state.service.sessions_of(&id.user_id).await {
        Ok(sessions) => sessions,
        Err(error) => return unavailable(&state, &Problem::from(error)),
    };
    let factors = match state.service.factors_of(id).await {
        Ok(factors) => factors,
        Err(error) => return unavailable(&state, &Problem::from(error)),
    };
    let mut rows: Vec<SessionRow> = sessions
        .into_iter()
        .map(|s| {
            let user_agent = s.user_agent.unwrap_or_default();
            SessionRow {
                current: s.id == id.session_id,
                device: device_label(&user_agent),
                user_agent,
                ip: s.ip.unwrap_or_else(|| "unknown".into()),
                created: human_time(s.times.created_at),
                created_iso: rfc3339(s.times.created_at),
                last_seen: human_time(s.times.last_seen_at),
                last_seen_iso: rfc3339(s.times.last_seen_at),
                id: s.id.to_string(),
            }
        })
        .collect();
    // This device first, then the most recently seen.
    rows.sort_by(|a, b| {
        b.current
            .cmp(&a.current)
            .then(b.last_seen_iso.cmp(&a.last_seen_iso))
    });
    let template = AccountPage {
        product: product(&state),
        username: id.username.clone(),
        roles: id.roles.join(", "),
        notice: page_param(&query, "done").and_then(|c| notice(&c)),
        sessions: rows,
        totp: factors.totp,
        recovery_codes_left: factors.recovery_codes_left,
        passkeys_enabled: state.service.passkeys_enabled(),
        passkeys: factors
            .passkeys
            .into_iter()
            .map(passkeys::PasskeyRow::from)
            .collect(),
    };
    let mut response = page_with_passkeys(&state, StatusCode::OK, &template);
    if let Err(problem) = auth.renew_cookie_jwt(&state, &mut response) {
        return problem.into_response();
    }
    response
}

/// Log out (form button)
#[utoipa::path(
    post,
    path = "/account/logout",
    operation_id = "accountLogout",
    tag = "pages",
    responses(FormAnswers)
)]
async fn logout_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
) -> Response {
    if let Err(error) = state.service.logout(&auth.identity, client).await {
        return unavailable(&state, &Problem::from(error));
    }
    logged_out_redirect(&state)
}

fn logged_out_redirect(state: &AppState) -> Response {
    let mut response = see_other("/logged-out");
    state.http.cookie.clear(response.headers_mut());
    response
}

/// Revoke one of the caller's sessions (form button)
#[utoipa::path(
    post, path = "/account/sessions/{id}/revoke",
    operation_id = "accountRevokeSession", tag = "pages",
    params(("id" = String, Path)),
    responses(FormAnswers),
)]
async fn revoke_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
    Path(session_id): Path<String>,
) -> Response {
    if session_id == auth.identity.session_id {
        return match state.service.logout(&auth.identity, client).await {
            Ok(()) => logged_out_redirect(&state),
            Err(error) => unavailable(&state, &Problem::from(error)),
        };
    }
    match state
        .service
        .revoke_own_session(&auth.identity, &session_id, client)
        .await
    {
        Ok(()) => see_other("/account?done=revoked"),
        Err(ServiceError::NotFound(_)) => see_other("/account?done=gone"),
        Err(error) => unavailable(&state, &Problem::from(error)),
    }
}

/// Log out all other sessions (form button)
#[utoipa::path(
    post,
    path = "/account/sessions/revoke-others",
    operation_id = "accountRevokeOthers",
    tag = "pages",
    responses(FormAnswers)
)]
async fn revoke_others_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
) -> Response {
    match state
        .service
        .revoke_other_sessions(&auth.identity, client)
        .await
    {
        Ok(_) => see_other("/account?done=others"),
        // An old sign-in signs in again first (a stolen session must not end every other).
        Err(ServiceError::StepUpRequired(step_up)) => factors::to_step_up(&step_up),
        Err(error) => unavailable(&state, &Problem::from(error)),
    }
}

/// Shown after logout
#[utoipa::path(
    get, path = "/logged-out", operation_id = "loggedOutPage", tag = "pages",
    responses((status = 200, body = String, content_type = "text/html", description = "The page.")),
)]
async fn logged_out_page(State(state): State<AppState>) -> Response {
    page(
        &state,
        StatusCode::OK,
        &MessagePage {
            product: product(&state),
            title: "Logged out",
            message: "You have logged out. Your session has ended on this device.",
            alert: false,
            link_href: "/login",
            link_text: "Log in again",
        },
    )
}

// ---------------------------------------------------------------------------- password

/// Why the last password change failed.
fn password_error(code: &str) -> Option<&'static str> {
    match code {
        "current" => Some("The current password is not correct."),
        "weak" => Some("The new password must be 8 to 1024 characters long."),
        "mismatch" => Some("The two new passwords are not the same."),
        "rate_limited" => Some("Too many attempts. Please wait a little and try again."),
        _ => None,
    }
}

/// The password change form
#[utoipa::path(
    get, path = "/account/password", operation_id = "passwordPage", tag = "pages",
    params(("error" = Option<String>, Query,
        description = "Set after a failed attempt; the page announces it.")),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The form."),
        (status = 303, response = PageRedirect),
        (status = 503, response = PageUnavailable),
    ),
)]
async fn password_page(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    query: QueryParams,
) -> Response {
    let template = PasswordPage {
        product: product(&state),
        username: auth.identity.username.clone(),
        error: page_param(&query, "error").and_then(|c| password_error(&c)),
    };
    page(&state, StatusCode::OK, &template)
}

/// The body of the password form.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PasswordForm)]
struct PasswordForm {
    #[schema(format = Password)]
    current_password: String,
    #[schema(format = Password)]
    new_password: String,
    /// The new password again; when given, it must be the same.
    #[schema(format = Password)]
    confirm_password: Option<String>,
}

/// Change the caller's password (form)
///
/// The same service call as `POST /v1/password` (so the same throttling on the login
/// counters, the same audit event, every other session revoked); the browser gets the new
/// session's cookie and a 303 back to the account page, or to the form with an error.
#[utoipa::path(
    post, path = "/account/password", operation_id = "accountChangePassword", tag = "pages",
    request_body(content((PasswordForm = "application/x-www-form-urlencoded"))),
    responses(FormAnswers, BodyProblems),
)]
async fn password_form(
    State(state): State<AppState>,
    signed_in: Result<SignedIn, Response>,
    client: ClientInfo,
    Body(form): Body<PasswordForm, true>,
) -> Response {
    // Taken after the body, so a malformed request is refused as such (4xx) before a missing
    // session sends the browser to the login page.
    let auth = match signed_in {
        Ok(SignedIn(auth)) => auth,
        Err(response) => return response,
    };
    if form
        .confirm_password
        .as_deref()
        .is_some_and(|confirm| confirm != form.new_password)
    {
        return see_other("/account/password?error=mismatch");
    }
    let result = state
        .service
        .change_password(
            &auth.identity,
            &form.current_password,
            &form.new_password,
            Delivery::Cookie,
            client,
        )
        .await;
    match result {
        Ok(credentials) => {
            let mut response = see_other("/account?done=password");
            super::dbsc::issue_cookie(&state, response.headers_mut(), &credentials);
            response
        }
        Err(ServiceError::InvalidCredentials) => see_other("/account/password?error=current"),
        Err(error) => {
            let problem = Problem::from(error);
            match problem.status() {
                StatusCode::TOO_MANY_REQUESTS => see_other("/account/password?error=rate_limited"),
                status if status.is_client_error() && status != StatusCode::UNAUTHORIZED => {
                    see_other("/account/password?error=weak")
                }
                StatusCode::UNAUTHORIZED => logged_out_redirect(&state),
                _ => unavailable(&state, &problem),
            }
        }
    }
}

// ---------------------------------------------------------------------------- access denied

/// True when the request is a browser's page load rather than an API client's: it accepts
/// HTML and presents no bearer token.
fn wants_html(headers: &HeaderMap) -> bool {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/html"));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        });
    html && !bearer
}

/// The answer for a request a proxy has refused (its `error_page`, `handle_response` or
/// error middleware asks this page for tessera's own answer)
///
/// A signed-in browser whose role is refused gets the "access denied" page (403); an API
/// client gets tessera's problem (`application/problem+json`): 401 with the token's problem
/// when it has no valid session, 403 `forbidden` when it has one. A browser without a session
/// gets a page pointing to the login form (401).
#[utoipa::path(
    get, path = "/access-denied", operation_id = "accessDeniedPage", tag = "pages",
    security((), ("bearerAuth" = []), ("cookieAuth" = [])),
    responses(
        (status = 401, description = "No valid session: the token's problem, or a page \
            pointing to the login form for browsers; or, to API clients, a session that must \
            step up for the request the proxy names: `step_up_required`.",
            content(
                (super::problem::ProblemBody = "application/problem+json"),
                (String = "text/html"),
            )),
        (status = 403, description = "Signed in, but refused: `forbidden`, or the access \
            denied page for browsers.",
            content(
                (super::problem::ProblemBody = "application/problem+json"),
                (String = "text/html"),
            )),
        (status = 503, description = "The store is unavailable.",
            content(
                (super::problem::ProblemBody = "application/problem+json"),
                (String = "text/html"),
            )),
    ),
)]
async fn access_denied_page(
    State(state): State<AppState>,
    parts: Parts,
    auth: Result<Authenticated, Problem>,
) -> Response {
    let headers = &parts.headers;
    let browser = wants_html(headers);
    // nginx shows this page in place of `/v1/verify`'s answer, which it cannot relay: a
    // session that must step up for the protected request is told so, not "forbidden".
    if let Ok(auth) = &auth
        && !browser
        && let Some(step_up) = super::forward_auth::step_up_needed(&parts, &state, auth)
    {
        return step_up.into_response();
    }
    match auth {
        Ok(auth) if browser => {
            let template = DeniedPage {
                product: product(&state),
                username: auth.identity.username.clone(),
            };
            page(&state, StatusCode::FORBIDDEN, &template)
        }
        Ok(_) => Problem::new(
            super::problem::ProblemCode::Forbidden,
            "the access rules refuse this request",
        )
        .into_response(),
        Err(problem) if browser && problem.status() == StatusCode::UNAUTHORIZED => page(
            &state,
            StatusCode::UNAUTHORIZED,
            &MessagePage {
                product: product(&state),
                title: "Log in required",
                message: "You need to log in to see this page.",
                alert: false,
                link_href: "/login",
                link_text: "Log in",
            },
        ),
        Err(problem) if browser => unavailable(&state, &problem),
        Err(problem) => problem.into_response(),
    }
}

/// The pages' stylesheet
#[utoipa::path(
    get, path = "/static/tessera.css", operation_id = "stylesheet", tag = "pages",
    responses((status = 200, body = String, content_type = "text/css", description = "CSS.")),
)]
async fn stylesheet() -> Response {
    static_file(STYLESHEET, "text/css; charset=utf-8")
}

/// The pages' passkey script
#[utoipa::path(
    get, path = "/static/passkeys.js", operation_id = "passkeyScript", tag = "pages",
    responses((status = 200, body = String, content_type = "text/javascript",
        description = "JavaScript.")),
)]
async fn passkey_script() -> Response {
    static_file(PASSKEY_SCRIPT, "text/javascript; charset=utf-8")
}

/// A file built into the binary, the same for everyone.
fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Public and identical for everyone: safe to cache.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

// ---------------------------------------------------------------------------- helpers

/// `2027-01-15 08:00 UTC`.
fn human_time(t: i64) -> String {
    let iso = rfc3339(t);
    match (iso.get(0..10), iso.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => iso,
    }
}

/// A short name for a device from its user agent ("Chrome on Linux"). A rough guess for
/// people to recognise their sessions by; the full user agent is shown beside it.
fn device_label(user_agent: &str) -> String {
    if user_agent.is_empty() {
        return "Unknown device".into();
    }
    let has = |needle: &str| user_agent.contains(needle);
    let browser = if has("Edg/") {
        "Edge"
    } else if has("HeadlessChrome/") {
        "Headless Chrome"
    } else if has("Chrome/") || has("Chromium/") {
        "Chrome"
    } else if has("Firefox/") {
        "Firefox"
    } else if has("Safari/") {
        "Safari"
    } else if has("curl/") {
        "curl"
    } else {
        return user_agent
            .split([' ', '/'])
            .next()
            .unwrap_or("Unknown")
            .chars()
            .take(40)
            .collect();
    };
    let os = if has("Android") {
        "Android"
    } else if has("iPhone") || has("iPad") {
        "iOS"
    } else if has("Windows") {
        "Windows"
    } else if has("Mac OS X") || has("Macintosh") {
        "macOS"
    } else if has("Linux") || has("X11") {
        "Linux"
    } else {
        return browser.to_owned();
    };
    format!("{browser} on {os}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_render_and_escape() {
        let html = LoginPage {
            product: "tessera".into(),
            error: login_error("credentials"),
            rd: Some("/x?a=\"><script>".into()),
            username: Some("al\"><script>ice".into()),
            second_factor: true,
            passkeys: false,
        }
        .render()
        .unwrap();
        assert!(html.contains("role=\"alert\""));
        assert!(html.contains("<label for=\"username\">"));
        assert!(html.contains("autocomplete=\"one-time-code\" inputmode=\"text\" autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"64\" required"));
        assert!(!html.contains("<script"));
        assert!(
            html.contains("&#34;&#62;&#60;script&#62;")
                || html.contains("&quot;&gt;&lt;script&gt;")
        );
        assert!(
            html.contains("value=\"al&#34;&#62;&#60;script&#62;ice\"")
                || html.contains("value=\"al&quot;&gt;&lt;script&gt;ice\"")
        );
        let html = LoginPage {
            product: "Acme <b>".into(),
            error: None,
            rd: None,
            username: None,
            second_factor: false,
            passkeys: false,
        }
        .render()
        .unwrap();
        assert!(!html.contains("role=\"alert\""));
        assert!(!html.contains("name=\"rd\""));
        assert!(html.contains("name=\"code\"") && !html.contains("maxlength=\"64\" required"));
        assert!(
            html.contains("Log in · Acme &#60;b&#62;") || html.contains("Log in · Acme &lt;b&gt;")
        );
        assert!(!html.contains("Acme <b>"));
    }

    #[test]
    fn the_login_page_offers_a_passkey_only_when_they_are_on() {
        let login = |passkeys| LoginPage {
            product: "tessera".into(),
            error: None,
            rd: Some("/x?\"><script>".into()),
            username: None,
            second_factor: false,
            passkeys,
        };
        let html = login(true).render().unwrap();
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(html.contains("<script src=\"/static/passkeys.js\" defer></script>"));
        assert!(html.contains("id=\"passkey-login\""));
        // The return address reaches the script as an escaped attribute only.
        assert!(
            html.contains("data-rd=\"/x?&#34;&#62;&#60;script&#62;\"")
                || html.contains("data-rd=\"/x?&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
        let html = login(false).render().unwrap();
        assert!(
            !html.contains("<script") && !html.contains("passkey"),
            "{html}"
        );
    }

    #[test]
    fn a_username_is_shown_again_only_when_plausible() {
        assert!(shown_again("alice"));
        assert!(!shown_again(""));
        assert!(!shown_again(&"a".repeat(257)));
        assert!(!shown_again("a\nb"));
    }

    #[test]
    fn the_pages_say_log_in_and_log_out_never_sign() {
        let pages = [
            include_str!("../../templates/base.html"),
            include_str!("../../templates/login.html"),
            include_str!("../../templates/account.html"),
            include_str!("../../templates/password.html"),
            include_str!("../../templates/denied.html"),
            include_str!("../../templates/message.html"),
            include_str!("../../templates/totp.html"),
            include_str!("../../templates/recovery_codes.html"),
            include_str!("../../templates/step_up.html"),
        ];
        for text in pages {
            assert!(!text.to_lowercase().contains("sign"), "{text}");
        }
        let account = include_str!("../../templates/account.html");
        assert_eq!(
            account.matches(">Log out<").count(),
            1,
            "one Log out button"
        );
        for code in [
            "revoked",
            "others",
            "gone",
            "password",
            "totp_removed",
            "reauthenticated",
        ] {
            assert!(
                !notice(code)
                    .unwrap_or("sign")
                    .to_lowercase()
                    .contains("sign")
            );
        }
        for code in ["credentials", "rate_limited", "unavailable"] {
            assert!(
                !login_error(code)
                    .unwrap_or("sign")
                    .to_lowercase()
                    .contains("sign")
            );
        }
    }

    #[test]
    fn api_clients_are_told_apart_from_browsers() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(wants_html(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!wants_html(&h));
        h.remove(header::AUTHORIZATION);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_html(&h));
    }

    #[test]
    fn login_errors_are_a_fixed_set() {
        assert!(login_error("credentials").is_some());
        assert!(login_error("<b>anything</b>").is_none());
        assert!(notice("x").is_none());
    }

    #[test]
    fn csp_allows_no_script_and_lists_redirect_origins() {
        let csp = page_csp(
            &RedirectPolicy::new(&["https://*.example.com".into()]).unwrap(),
            false,
        );
        assert!(csp.contains("default-src 'none'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("form-action 'self' https://*.example.com;"));
        assert!(!csp.contains("script-src"));
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn the_passkey_pages_allow_only_scripts_and_calls_of_their_own_origin() {
        let redirects = RedirectPolicy::new(&["https://*.example.com".into()]).unwrap();
        let csp = page_csp(&redirects, true);
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("connect-src 'self';"));
        assert!(csp.contains("default-src 'none'"));
        assert!(!csp.contains("unsafe"), "no inline script, no eval: {csp}");
        // Otherwise the same policy.
        assert_eq!(
            csp.replace("script-src 'self'; connect-src 'self'; ", ""),
            page_csp(&redirects, false)
        );
    }

    #[test]
    fn browser_form_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(!is_browser_form(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(is_browser_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_browser_form(&h));
    }

    #[test]
    fn devices_and_times_read_well() {
        assert_eq!(
            device_label(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0 Safari/537.36"
            ),
            "Chrome on Linux"
        );
        assert_eq!(device_label("curl/8.0"), "curl");
        assert_eq!(device_label(""), "Unknown device");
        assert_eq!(device_label("reqwest"), "reqwest");
        assert_eq!(human_time(0), "1970-01-01 00:00 UTC");
    }
}
