//! The browser pages of second factors: the account page's TOTP forms (set up, confirm,
//! remove, new recovery codes) and the step-up page that `/login` shows a signed-in browser
//! asked for more (`aal`, `max_age`), with its form.
//!
//! Like the other pages: no script (a passkey button aside), forms that post and get a 303 (or, where a secret is
//! shown once, the page itself, never stored by a cache), the cross-site check of every
//! cookie-authenticated POST (`super::super::protect`) and the same service calls as the API
//! (`/v1/factors/...`, `POST /v1/step-up`), so the same throttling, audit and recent-sign-in
//! rule apply.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tessera_core::assurance::{Aal, Requirement, StepUp};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::super::AppState;
use super::super::extract::{Authenticated, Body};
use super::super::forward_auth::step_up_query;
use super::super::openapi::{BodyProblems, FormAnswers, PageRedirect, PageUnavailable};
use super::super::problem::Problem;
use super::super::query::QueryParams;
use super::super::redirect::DEFAULT_RETURN;
use super::{
    MessagePage, SignedIn, encode, page, page_param, page_with_passkeys, product, see_other,
    unavailable,
};
use crate::service::{ClientInfo, Delivery, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(begin_totp_form))
        .routes(routes!(confirm_totp_page, confirm_totp_form))
        .routes(routes!(remove_totp_form))
        .routes(routes!(recovery_codes_form))
        .routes(routes!(step_up_form))
}

// ---------------------------------------------------------------------------- templates

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage {
    product: String,
    username: String,
    /// The new secret, shown once; `None` on the confirmation form alone (after a wrong code).
    enrolment: Option<ShownSecret>,
    error: Option<&'static str>,
}

/// A TOTP secret as the page shows it.
struct ShownSecret {
    /// The QR code: SVG markup drawn by tessera (`qrcode`), embedded as is.
    qr_svg: String,
    /// The base32 secret in groups of four, for typing in.
    secret: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    product: String,
    username: String,
    /// Shown right after the factor was confirmed (else: new codes replacing old ones).
    enrolled: bool,
    codes: Vec<String>,
}

#[derive(Template)]
#[template(path = "step_up.html")]
struct StepUpPage {
    product: String,
    username: String,
    reason: String,
    rd: Option<String>,
    aal: Option<u8>,
    max_age: Option<i64>,
    ask_password: bool,
    ask_code: bool,
    /// The user has a passkey (and passkeys are on): the page offers it, with the script.
    passkey: bool,
    error: Option<&'static str>,
    /// The plain login form, for another account (a login there ends this session).
    other_login: String,
}

/// The QR code's markup, ready to sit inside the page: the SVG element without the XML
/// declaration that starts a standalone SVG document.
///
/// # Security
/// The markup is embedded unescaped. It comes from tessera's own QR renderer (rectangles and a
/// path; the only variable input, the `otpauth://` URI, is encoded as modules, never as text)
/// and is checked to be one `<svg>` element with no script or event attribute; anything else
/// is left out and the page shows the key as text only. Its colours are SVG presentation
/// attributes (`fill`), which `style-src` does not govern, so the page's CSP stays as strict.
fn inline_svg(svg: &str) -> Option<String> {
    let start = svg.find("<svg")?;
    let element = svg[start..].trim_end();
    let lower = element.to_ascii_lowercase();
    let clean = element.ends_with("</svg>")
        && !lower.contains("<script")
        && !lower.contains(" on")
        && !lower.contains("style")
        && !lower.contains("href");
    clean.then(|| element.to_owned())
}

/// `JBSWY3DPEHPK3PXP` as `JBSW Y3DP EHPK 3PXP`: apps ignore the spaces.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------- outcomes

/// Where a factor change goes when the service refuses it.
///
/// - a sign-in older than `recent_authentication`: to the step-up page, asking for the
///   password, and back to the account page;
/// - state changed meanwhile (nothing to confirm or remove, set up already): the account page,
///   which shows the state as it is;
/// - the session ended: the login page;
/// - with a code `form` to go back to: too many wrong codes (`?error=rate_limited`), a wrong
///   code (`?error=code`);
/// - anything else (the store down): the "something went wrong" page.
pub(super) fn change_refused(
    state: &AppState,
    error: ServiceError,
    form: Option<&str>,
) -> Response {
    match error {
        ServiceError::StepUpRequired(step_up) => to_step_up(&step_up),
        ServiceError::Conflict(_) | ServiceError::NotFound(_) => see_other(DEFAULT_RETURN),
        other => {
            let problem = Problem::from(other);
            match (problem.status(), form) {
                (StatusCode::UNAUTHORIZED, _) => {
                    see_other(&format!("/login?rd={}", encode(DEFAULT_RETURN)))
                }
                (StatusCode::TOO_MANY_REQUESTS, Some(form)) => {
                    see_other(&format!("{form}?error=rate_limited"))
                }
                (StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST, Some(form)) => {
                    see_other(&format!("{form}?error=code"))
                }
                _ => unavailable(state, &problem),
            }
        }
    }
}

/// Where the account page's changes return after the password was asked again.
const AFTER_STEP_UP: &str = "/account?done=reauthenticated";

/// The step-up page for an account change: what the service asked for, then the account page.
pub(super) fn to_step_up(step_up: &StepUp) -> Response {
    see_other(&format!(
        "/login?rd={}&{}",
        encode(AFTER_STEP_UP),
        step_up_query(&step_up.required)
    ))
}

/// Why the last confirmation failed.
fn confirm_error(code: &str) -> Option<&'static str> {
    match code {
        "code" => Some(
            "That code is not correct. Enter the code the app shows now (it changes every 30 \
             seconds).",
        ),
        "rate_limited" => Some("Too many wrong codes. Please wait a little and try again."),
        _ => None,
    }
}

// ---------------------------------------------------------------------------- account forms

/// Begin setting up an authenticator app (form button)
///
/// The same service call as `POST /v1/factors/totp`. The answer is a page (not a redirect):
/// the new secret as a QR code and as text, shown once, and the form that confirms it with a
/// code. A sign-in older than `recent_authentication` is sent to the step-up page first.
#[utoipa::path(
    post, path = "/account/totp", operation_id = "accountBeginTotp", tag = "pages",
    responses(
        (status = 200, body = String, content_type = "text/html",
            description = "The secret (QR code and text) and the confirmation form.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the page carries a secret."))),
        FormAnswers,
    ),
)]
async fn begin_totp_form(State(state): State<AppState>, SignedIn(auth): SignedIn) -> Response {
    let enrolment = match state.service.begin_totp(&auth.identity).await {
        Ok(enrolment) => enrolment,
        Err(error) => return change_refused(&state, error, None),
    };
    let template = TotpPage {
        product: product(&state),
        username: auth.identity.username.clone(),
        enrolment: Some(ShownSecret {
            qr_svg: inline_svg(&enrolment.qr_svg).unwrap_or_default(),
            secret: grouped(&enrolment.secret),
        }),
        error: None,
    };
    page(&state, StatusCode::OK, &template)
}

const CONFIRM_PATH: &str = "/account/totp/confirm";

/// The confirmation form of a begun set-up (where a wrong code comes back to)
#[utoipa::path(
    get, path = "/account/totp/confirm", operation_id = "accountTotpConfirmPage", tag = "pages",
    params(("error" = Option<String>, Query,
        description = "Set after a failed attempt; the page announces it.")),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The form."),
        (status = 303, response = PageRedirect),
        (status = 503, response = PageUnavailable),
    ),
)]
async fn confirm_totp_page(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    query: QueryParams,
) -> Response {
    match state.service.factors_of(&auth.identity).await {
        Ok(status) if status.totp == "pending" => {}
        // Nothing to confirm: the account page shows how things are.
        Ok(_) => return see_other(DEFAULT_RETURN),
        Err(error) => return unavailable(&state, &Problem::from(error)),
    }
    let template = TotpPage {
        product: product(&state),
        username: auth.identity.username.clone(),
        enrolment: None,
        error: page_param(&query, "error").and_then(|c| confirm_error(&c)),
    };
    page(&state, StatusCode::OK, &template)
}

/// The body of the confirmation form.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TotpConfirmForm)]
struct ConfirmForm {
    /// The code the app shows (a form answers any value: one that is too long, over 64
    /// characters, is a wrong code).
    code: String,
}

/// Confirm the authenticator app with a code (form)
///
/// The same service call as `POST /v1/factors/totp/confirm`. The answer is a page with the
/// ten recovery codes, shown once; a wrong code goes back to the form with an error.
#[utoipa::path(
    post, path = "/account/totp/confirm", operation_id = "accountConfirmTotp", tag = "pages",
    request_body(content((ConfirmForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, body = String, content_type = "text/html",
            description = "Confirmed: the recovery codes, shown once.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the page carries secrets."))),
        FormAnswers,
        BodyProblems,
    ),
)]
async fn confirm_totp_form(
    State(state): State<AppState>,
    signed_in: Result<SignedIn, Response>,
    client: ClientInfo,
    Body(form): Body<ConfirmForm, true>,
) -> Response {
    // Taken after the body, so a malformed request is refused as such (4xx) before a missing
    // session sends the browser to the login page.
    let auth = match signed_in {
        Ok(SignedIn(auth)) => auth,
        Err(response) => return response,
    };
    match state
        .service
        .confirm_totp(&auth.identity, form.code.trim(), client)
        .await
    {
        Ok(codes) => recovery_codes_page(&state, &auth, true, codes),
        Err(error) => change_refused(&state, error, Some(CONFIRM_PATH)),
    }
}

fn recovery_codes_page(
    state: &AppState,
    auth: &Authenticated,
    enrolled: bool,
    codes: Vec<String>,
) -> Response {
    let template = RecoveryCodesPage {
        product: product(state),
        username: auth.identity.username.clone(),
        enrolled,
        codes,
    };
    page(state, StatusCode::OK, &template)
}

/// Remove the authenticator app and its recovery codes (form button)
#[utoipa::path(
    post,
    path = "/account/totp/remove",
    operation_id = "accountRemoveTotp",
    tag = "pages",
    responses(FormAnswers)
)]
async fn remove_totp_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
) -> Response {
    match state.service.remove_totp(&auth.identity, client).await {
        Ok(()) => see_other("/account?done=totp_removed"),
        Err(error) => change_refused(&state, error, None),
    }
}

/// Replace the recovery codes (form button)
///
/// The answer is a page with the ten new codes, shown once; the old ones stop working.
#[utoipa::path(
    post, path = "/account/recovery-codes", operation_id = "accountNewRecoveryCodes",
    tag = "pages",
    responses(
        (status = 200, body = String, content_type = "text/html",
            description = "The new recovery codes, shown once.",
            headers(("Cache-Control" = String,
                description = "`no-store`: the page carries secrets."))),
        FormAnswers,
    ),
)]
async fn recovery_codes_form(
    State(state): State<AppState>,
    SignedIn(auth): SignedIn,
    client: ClientInfo,
) -> Response {
    match state
        .service
        .new_recovery_codes(&auth.identity, client)
        .await
    {
        Ok(codes) => recovery_codes_page(&state, &auth, false, codes),
        Err(error) => change_refused(&state, error, None),
    }
}

// ---------------------------------------------------------------------------- step-up

/// Why the last step-up failed.
fn step_up_error(code: &str) -> Option<&'static str> {
    match code {
        "password" => Some("The password is not correct."),
        "code" => Some("The code is not correct, or was used already."),
        "missing" => Some("Please fill in every field."),
        "rate_limited" => Some("Too many attempts. Please wait a little and try again."),
        _ => None,
    }
}

/// `600` as "10 minutes".
fn duration_text(seconds: i64) -> String {
    let (amount, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if amount == 1 {
        format!("1 {unit}")
    } else {
        format!("{amount} {unit}s")
    }
}

/// What `/login` shows a signed-in browser asked for `asked` (`aal`, `max_age`): a redirect to
/// `rd` when the session meets it already; otherwise a form asking only for what is missing —
///
/// - the code alone when a second factor is missing and the sign-in is recent enough;
/// - the password when the sign-in is older than `max_age`, with the code too when `aal=2` is
///   asked and the user has a second factor (a fresh sign-in at that level);
/// - with a passkey registered, the passkey as well (or alone, when a second factor is asked
///   and the user has no authenticator app): it is a fresh sign-in at AAL2 by itself;
///
/// or, when a second factor is asked of a user who has none, a page saying so, with the way
/// to the account page to set one up.
pub(super) async fn step_up_page(
    state: &AppState,
    auth: &Authenticated,
    asked: Requirement,
    rd: Option<String>,
    query: &QueryParams,
) -> Response {
    let id = &auth.identity;
    let step_up = match id.check_assurance(&asked, state.service.now()) {
        Ok(()) => return see_other(rd.as_deref().unwrap_or(DEFAULT_RETURN)),
        Err(ServiceError::StepUpRequired(step_up)) => step_up,
        Err(error) => return unavailable(state, &Problem::from(error)),
    };
    let wants_code = asked.aal == Some(Aal::Aal2);
    let status = match state.service.factors_of(id).await {
        Ok(status) => status,
        Err(error) => return unavailable(state, &Problem::from(error)),
    };
    let has_totp = status.totp == "confirmed";
    // A passkey is a fresh sign-in with a second factor: it meets any `aal` and `max_age`.
    let passkey = state.service.passkeys_enabled() && !status.passkeys.is_empty();
    if step_up.second_factor && !has_totp && !passkey {
        return page(
            state,
            StatusCode::OK,
            &MessagePage {
                product: product(state),
                title: "A second factor is needed",
                message: "This page needs a log-in with a second factor, and your account has \
                    none yet. Set up an authenticator app or a passkey on your account page, \
                    then open this page again.",
                alert: false,
                link_href: "/account",
                link_text: "Set up a second factor",
            },
        );
    }
    // A second factor asked of an account whose only one is a passkey: nothing else to ask.
    let passkey_only = wants_code && !has_totp && passkey;
    let ask_password = step_up.reauthenticate && !passkey_only;
    let ask_code = wants_code && has_totp && (step_up.second_factor || ask_password);
    let within = duration_text(asked.max_age.unwrap_or_default());
    let reason = match (ask_password, ask_code) {
        (false, false) if step_up.reauthenticate => format!(
            "This page needs a recent log-in with a second factor, within the last {within}: \
             please use your passkey."
        ),
        (false, false) => "This page needs a second factor: please use your passkey.".to_owned(),
        (false, true) => "This page needs a second factor: enter the code from your \
            authenticator app, or one of your recovery codes."
            .to_owned(),
        (true, false) => format!(
            "This needs a recent log-in, within the last {within}: please enter your password \
             again."
        ),
        (true, true) => format!(
            "This page needs a recent log-in with a second factor, within the last {within}: \
             please enter your password and the code from your authenticator app (or a \
             recovery code)."
        ),
    };
    let other_login = match &rd {
        Some(rd) => format!("/login?rd={}", encode(rd)),
        None => "/login".to_owned(),
    };
    let template = StepUpPage {
        product: product(state),
        username: id.username.clone(),
        reason,
        rd,
        aal: asked.aal.map(Aal::number),
        max_age: asked.max_age,
        ask_password,
        ask_code,
        passkey,
        error: page_param(query, "error").and_then(|c| step_up_error(&c)),
        other_login,
    };
    page_with_passkeys(state, StatusCode::OK, &template)
}

/// The body of the step-up form.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = StepUpForm)]
struct StepUpForm {
    /// The password, when the page asked for it.
    #[schema(format = Password, nullable = false)]
    password: Option<String>,
    /// A TOTP or recovery code, when the page asked for one (over 64 characters is a wrong
    /// code).
    #[schema(nullable = false)]
    code: Option<String>,
    /// Where to return afterwards (local path or an allowed origin).
    #[schema(nullable = false)]
    rd: Option<String>,
    /// The level asked for (`1` or `2`), to show the page again after a failure.
    #[schema(nullable = false)]
    aal: Option<String>,
    /// The age asked for, in seconds, to show the page again after a failure.
    #[schema(nullable = false)]
    max_age: Option<String>,
}

/// Step the browser's session up (the step-up page's form)
///
/// The same service call as `POST /v1/step-up`: checks the password, the code, or both, and
/// starts a new session (the old one ends) whose cookie this answer sets, with a 303 to the
/// safe `rd`. A wrong password or code leaves the session as it was and goes back to the
/// page with an error.
#[utoipa::path(
    post, path = "/account/step-up", operation_id = "accountStepUp", tag = "pages",
    request_body(content((StepUpForm = "application/x-www-form-urlencoded"))),
    responses(FormAnswers, BodyProblems),
)]
async fn step_up_form(
    State(state): State<AppState>,
    auth: Result<Authenticated, Problem>,
    client: ClientInfo,
    Body(form): Body<StepUpForm, true>,
) -> Response {
    let safe_rd = form
        .rd
        .as_deref()
        .and_then(|rd| state.http.redirects.check(rd));
    // The page's request, as numbers only: shown again after a failure.
    let asked = Requirement {
        aal: form
            .aal
            .as_deref()
            .and_then(|a| a.parse::<u8>().ok())
            .and_then(Aal::from_number),
        max_age: form
            .max_age
            .as_deref()
            .and_then(|m| m.parse::<u32>().ok())
            .map(i64::from),
    };
    let back = |error: Option<&str>| {
        let mut location = String::from("/login?");
        if let Some(rd) = &safe_rd {
            location.push_str(&format!("rd={}&", encode(rd)));
        }
        location.push_str(&step_up_query(&asked));
        if let Some(error) = error {
            location.push_str(&format!("&error={error}"));
        }
        see_other(&location)
    };
    let auth = match auth {
        Ok(auth) => auth,
        // No session (any more): the login page, which then asks for everything.
        Err(problem) if problem.status() == StatusCode::UNAUTHORIZED => return back(None),
        Err(problem) => return unavailable(&state, &problem),
    };
    let password = form.password.as_deref().filter(|p| !p.is_empty());
    let code = form
        .code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if password.is_none() && code.is_none() {
        return back(Some("missing"));
    }
    let result = state
        .service
        .step_up(&auth.identity, password, code, Delivery::Cookie, client)
        .await;
    match result {
        Ok(credentials) => {
            let mut response = see_other(safe_rd.as_deref().unwrap_or(DEFAULT_RETURN));
            state
                .http
                .cookie
                .issue(response.headers_mut(), &credentials, state.service.now());
            response
        }
        Err(ServiceError::InvalidCredentials) => back(Some("password")),
        Err(ServiceError::InvalidCode) => back(Some("code")),
        Err(error) => {
            let problem = Problem::from(error);
            match problem.status() {
                StatusCode::TOO_MANY_REQUESTS => back(Some("rate_limited")),
                StatusCode::UNAUTHORIZED => back(None),
                status if status.is_client_error() => back(Some("missing")),
                _ => unavailable(&state, &problem),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_embedded_only_as_a_plain_svg_element() {
        let svg = "<?xml version=\"1.0\" standalone=\"yes\"?><svg xmlns=\"http://www.w3.org/2000/svg\" \
                   width=\"200\" height=\"200\"><path fill=\"#000\" d=\"M0 0h1v1H0V0\"/></svg>";
        let inline = inline_svg(svg).unwrap();
        assert!(inline.starts_with("<svg ") && inline.ends_with("</svg>"));
        for bad in [
            "<svg><script>alert(1)</script></svg>",
            "<svg onload=\"alert(1)\"></svg>",
            "<svg style=\"x\"></svg>",
            "<svg><a href=\"javascript:x\"></a></svg>",
            "<svg>",
            "no svg",
        ] {
            assert_eq!(inline_svg(bad), None, "{bad}");
        }
        // What the service draws passes.
        let generator = tessera_core::totp::Generator::new(&[7; 20], "tessera", "alice").unwrap();
        let drawn = generator.qr_svg().unwrap();
        let inline = inline_svg(&drawn).unwrap();
        assert!(inline.len() > 1000 && !inline.contains("<?xml"));
    }

    #[test]
    fn secrets_codes_and_durations_read_well() {
        assert_eq!(grouped("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(grouped("ABCDEF"), "ABCD EF");
        assert_eq!(duration_text(600), "10 minutes");
        assert_eq!(duration_text(3600), "1 hour");
        assert_eq!(duration_text(90), "90 seconds");
        assert_eq!(duration_text(60), "1 minute");
        assert!(confirm_error("<b>").is_none() && step_up_error("x").is_none());
    }

    #[test]
    fn the_pages_render_and_escape() {
        let html = StepUpPage {
            product: "tessera".into(),
            username: "al\"ice".into(),
            reason: "r".into(),
            rd: Some("/x?\"><b>".into()),
            aal: Some(2),
            max_age: None,
            ask_password: false,
            ask_code: true,
            passkey: false,
            error: step_up_error("code"),
            other_login: "/login".into(),
        }
        .render()
        .unwrap();
        assert!(
            !html.contains("<script") && !html.contains("passkey"),
            "{html}"
        );
        assert!(html.contains("name=\"code\""), "{html}");
        assert!(!html.contains("name=\"password\""), "{html}");
        assert!(html.contains("role=\"alert\""));
        assert!(!html.contains("<b>") && !html.contains("al\"ice"));
        assert!(html.contains("name=\"aal\" value=\"2\"") && !html.contains("name=\"max_age\""));
        // An account whose second factor is a passkey: the passkey alone, no form.
        let html = StepUpPage {
            product: "tessera".into(),
            username: "alice".into(),
            reason: "r".into(),
            rd: Some("/x".into()),
            aal: Some(2),
            max_age: None,
            ask_password: false,
            ask_code: false,
            passkey: true,
            error: None,
            other_login: "/login".into(),
        }
        .render()
        .unwrap();
        assert!(
            html.contains("<title>Use your passkey · tessera</title>"),
            "{html}"
        );
        assert!(
            html.contains("id=\"passkey-step-up\" data-rd=\"/x\""),
            "{html}"
        );
        assert!(!html.contains("<form"), "{html}");
        let html = TotpPage {
            product: "tessera".into(),
            username: "alice".into(),
            enrolment: Some(ShownSecret {
                qr_svg: "<svg id=\"q\"></svg>".into(),
                secret: "JBSW Y3DP".into(),
            }),
            error: None,
        }
        .render()
        .unwrap();
        assert!(html.contains("<svg id=\"q\"></svg>"), "the SVG is markup");
        assert!(html.contains("autocomplete=\"one-time-code\""));
        assert!(html.contains("action=\"/account/totp/confirm\""));
    }
}
