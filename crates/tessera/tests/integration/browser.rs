//! A real browser — Debian's headless Chromium, driven over the DevTools protocol — using the
//! pages through real nginx (`docs/examples/nginx.conf`), as a person would: sign in on the
//! form, land where they wanted to go, see their sessions, sign out. Screenshots of the pages
//! are left in the test-artifacts directory (see `external::artifacts_dir`).

use serde_json::{Value, json};

use crate::cdp::Browser;
use crate::external::{Nginx, artifacts_dir, start_attacker_page, start_echo_app};
use crate::factors::{code_at, pyotp};
use crate::proxies::{spare_ports, tessera_behind_proxy};
use crate::support::{PASSWORD, TestServer, set_cookie};

const OTHER_DEVICE: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn session_cookie(cookies: &[Value]) -> Option<&Value> {
    cookies.iter().find(|c| c["name"] == "__Host-tessera")
}

#[tokio::test]
async fn a_browser_signs_in_through_nginx_sees_its_sessions_and_signs_out() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let _server = tessera_behind_proxy(ports).await;
    let _nginx = Nginx::start(ports).await;
    let base = format!("http://127.0.0.1:{}", ports.proxy);
    let artifacts = artifacts_dir();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // alice is also signed in on another device.
    let response = http
        .post(format!("{base}/v1/login"))
        .header("user-agent", OTHER_DEVICE)
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let other_device = set_cookie(&response).expect("a cookie for the other device");

    let mut browser = Browser::launch().await;

    // A protected page sends the browser to the login form, which remembers where it was going.
    let wanted = format!("{base}/private/report?q=1&r=2");
    browser.navigate(&wanted).await;
    let url = browser.url().await;
    assert!(url.starts_with(&format!("{base}/login?rd=")), "{url}");
    assert_eq!(
        browser
            .text("document.querySelector('input[name=rd]').value")
            .await,
        wanted
    );

    // The form is accessible: labelled fields, focus on the first, no script needed.
    assert_eq!(
        browser
            .text("document.getElementById('username').labels[0].textContent")
            .await,
        "Username"
    );
    assert_eq!(
        browser
            .text("document.getElementById('password').labels[0].textContent")
            .await,
        "Password"
    );
    assert_eq!(browser.text("document.activeElement.id").await, "username");
    assert_eq!(browser.eval("document.scripts.length").await, json!(0));
    // The stylesheet applies under the page's Content-Security-Policy.
    assert_eq!(
        browser
            .text("getComputedStyle(document.querySelector('button')).backgroundColor")
            .await,
        "rgb(11, 92, 173)"
    );
    browser.screenshot(&artifacts.join("login.png")).await;

    // A wrong password: back on the form, the error announced, no hint which part was wrong.
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", "not the password").await;
    browser.click_and_wait("button[type=submit]").await;
    assert!(
        browser
            .url()
            .await
            .starts_with(&format!("{base}/login?error=credentials"))
    );
    let alert = browser
        .text("document.querySelector('[role=alert]').textContent")
        .await;
    assert!(
        alert.contains("username or password is not correct"),
        "{alert}"
    );
    assert_eq!(
        browser
            .text("document.getElementById('password').getAttribute('aria-invalid')")
            .await,
        "true"
    );
    assert_eq!(
        browser
            .text("document.querySelector('input[name=rd]').value")
            .await,
        wanted
    );
    // The name typed is kept; only the password is to be typed again, and it has the focus.
    assert_eq!(
        browser
            .text("document.getElementById('username').value")
            .await,
        "alice"
    );
    assert_eq!(browser.text("document.activeElement.id").await, "password");
    browser.screenshot(&artifacts.join("login-error.png")).await;

    // The right one: the browser lands on the page it wanted, and the app knows who it is.
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, wanted);
    let page = browser.body_text().await;
    assert!(page.contains("x-tessera-user: alice"), "{page}");

    // The session cookie is the browser's, out of reach of scripts.
    let cookies = browser.cookies(&base).await;
    let cookie = session_cookie(&cookies).expect("the session cookie is stored");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["sameSite"], "Lax");
    assert_eq!(cookie["path"], "/");
    let visible = browser.text("document.cookie").await;
    assert!(
        !visible.contains("tessera"),
        "document.cookie shows {visible:?}"
    );

    // The account page lists both sessions, this one marked.
    browser.navigate(&format!("{base}/account")).await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(2)
    );
    let this_row = browser
        .text("document.querySelector('#sessions tr.current').innerText")
        .await;
    assert!(this_row.contains("this device"), "{this_row}");
    assert!(this_row.contains("Headless Chrome on Linux"), "{this_row}");
    let other_row = browser
        .text("document.querySelector('#sessions tbody tr:not(.current)').innerText")
        .await;
    assert!(other_row.contains("Firefox on Windows"), "{other_row}");
    assert!(other_row.contains("127.0.0.1"), "{other_row}");
    browser.screenshot(&artifacts.join("account.png")).await;

    // A page on another origin of the same site posts the logout form: refused by tessera
    // (SameSite=Lax alone would have let the cookie through).
    let attacker = start_attacker_page(format!("{base}/account/logout")).await;
    browser
        .navigate(&format!("http://127.0.0.1:{}/", attacker.port()))
        .await;
    browser.click_and_wait("#go").await;
    let refused = browser.body_text().await;
    assert!(refused.contains("cross_site_request"), "{refused}");
    // And from another site (localhost is not 127.0.0.1): the cookie is not even sent.
    let attacker = start_attacker_page(format!("{base}/account/sessions/revoke-others")).await;
    browser
        .navigate(&format!("http://localhost:{}/", attacker.port()))
        .await;
    browser.click_and_wait("#go").await;
    // Neither did anything: both sessions are still there.
    browser.navigate(&format!("{base}/account")).await;
    assert_eq!(browser.url().await, format!("{base}/account"));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(2)
    );

    // Revoke the other device from the page.
    browser
        .click_and_wait("#sessions tbody tr:not(.current) button")
        .await;
    assert_eq!(browser.url().await, format!("{base}/account?done=revoked"));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(1)
    );
    let notice = browser
        .text("document.querySelector('[role=status]').textContent")
        .await;
    assert!(notice.contains("logged out"), "{notice}");
    let response = http
        .get(format!("{base}/private/report"))
        .header("cookie", format!("__Host-tessera={other_device}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the other device's session is over");

    // A page alice's role may not open: tessera's "access denied" page through nginx (not
    // nginx's bare 403), naming the account, with a way out.
    browser.navigate(&format!("{base}/admin/settings")).await;
    assert_eq!(
        browser.text("document.title").await,
        "Access denied · tessera"
    );
    let denied = browser.body_text().await;
    assert!(denied.contains("logged in as alice"), "{denied}");
    assert!(!denied.contains("nginx"), "{denied}");
    browser
        .screenshot(&artifacts.join("access-denied.png"))
        .await;
    browser.navigate(&format!("{base}/account")).await;

    // Log out: the cookie is gone and the protected page asks for a login again.
    browser.click_and_wait("#logout").await;
    assert_eq!(browser.url().await, format!("{base}/logged-out"));
    assert!(browser.body_text().await.contains("You have logged out"));
    browser.screenshot(&artifacts.join("logged-out.png")).await;
    assert!(
        session_cookie(&browser.cookies(&base).await).is_none(),
        "cookie cleared"
    );
    browser.navigate(&wanted).await;
    assert!(
        browser
            .url()
            .await
            .starts_with(&format!("{base}/login?rd="))
    );

    // No page broke its own Content-Security-Policy...
    let violations = |log: &[String]| {
        log.iter()
            .filter(|l| l.contains("Content Security Policy"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        violations(&browser.log).is_empty(),
        "{:?}",
        violations(&browser.log)
    );
    // ...and the policy is enforced: an inline style injected into a page is refused (which
    // also shows that violations would have been seen above).
    browser
        .eval("document.head.insertAdjacentHTML('beforeend', '<style>body{color:red}</style>')")
        .await;
    for _ in 0..40 {
        if !violations(&browser.log).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        browser.eval("1").await;
    }
    assert!(
        !violations(&browser.log).is_empty(),
        "no CSP report in {:?}",
        browser.log
    );
    assert_ne!(
        browser.text("getComputedStyle(document.body).color").await,
        "rgb(255, 0, 0)"
    );
    browser.close().await;
}

/// A phone-sized window: 390 CSS pixels wide, as an iPhone 12 to 15 shows pages.
const PHONE_WIDTH: u32 = 390;

#[tokio::test]
async fn the_account_page_fits_a_phone_screen() {
    let server = TestServer::start().await;
    let base = server.base.clone();
    // Several other devices, with the long user agents real browsers send.
    for agent in [
        OTHER_DEVICE,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
         (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
    ] {
        let response = server
            .client
            .post(server.url("/v1/login"))
            .header("user-agent", agent)
            .json(&json!({ "username": "alice", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let mut browser = Browser::launch().await;
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser.navigate(&format!("{base}/login")).await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, format!("{base}/account"));
    assert_eq!(
        browser.eval("window.innerWidth").await,
        json!(PHONE_WIDTH),
        "the phone-sized window"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(4)
    );

    // Nothing is wider than the screen: no sideways scrolling of the page...
    let widths = browser
        .eval(
            "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]",
        )
        .await;
    let width = |i: usize| widths[i].as_f64().unwrap();
    assert!(width(0) <= width(2) && width(1) <= width(2), "{widths}");
    // ...nor inside it: every cell, label and button lies within the screen and is not cut
    // off by its container (the table's own scroll box included).
    let outside = browser
        .eval(
            "(() => { const w = window.innerWidth; const out = []; \
             const boxes = document.querySelectorAll('#sessions td, #sessions button, \
               .actions button, .actions a'); \
             for (const e of boxes) { const r = e.getBoundingClientRect(); \
               if (r.left < 0 || r.right > w + 0.5 || r.width === 0) \
                 out.push(e.tagName + ' ' + e.textContent.trim().slice(0, 40) + ' ' + \
                   r.left + '..' + r.right); } \
             for (const e of document.querySelectorAll('.table-wrap')) \
               if (e.scrollWidth > e.clientWidth) out.push('table scrolls: ' + e.scrollWidth); \
             return out; })()",
        )
        .await;
    assert_eq!(outside, json!([]), "outside the {PHONE_WIDTH} px screen");
    // Every other session has its revoke button, and "Last seen" is shown for each.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions button.revoke').length")
            .await,
        json!(3)
    );
    let last_seen = browser
        .eval(
            "[...document.querySelectorAll('#sessions td[data-label=\"Last seen\"]')]\
             .map(e => getComputedStyle(e, '::before').content + ' ' + e.innerText)",
        )
        .await;
    let last_seen = last_seen.as_array().unwrap();
    assert_eq!(last_seen.len(), 4);
    for cell in last_seen {
        let cell = cell.as_str().unwrap();
        assert!(cell.contains("Last seen") && cell.contains("UTC"), "{cell}");
    }
    // One Log out button on the page, and the password form is one tap away.
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('button')].filter(b => b.textContent.trim() === 'Log out').length")
            .await,
        json!(1)
    );
    browser
        .screenshot(&artifacts_dir().join("account-390.png"))
        .await;

    // The revoke button works at this size too.
    browser.click_and_wait("#sessions button.revoke").await;
    assert_eq!(browser.url().await, format!("{base}/account?done=revoked"));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(3)
    );

    // The password form fits as well, and works in a real browser (CSP, SameSite, redirects).
    browser.click_and_wait("#change-password").await;
    assert_eq!(browser.url().await, format!("{base}/account/password"));
    let widths = browser
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(widths[0].as_f64() <= widths[1].as_f64(), "{widths}");
    browser
        .screenshot(&artifacts_dir().join("password-390.png"))
        .await;
    let new_password = "a brand new secret";
    browser.type_into("#current_password", PASSWORD).await;
    browser.type_into("#new_password", new_password).await;
    browser.type_into("#confirm_password", new_password).await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, format!("{base}/account?done=password"));
    let notice = browser
        .text("document.querySelector('[role=status]').textContent")
        .await;
    assert!(notice.contains("password was changed"), "{notice}");
    // Only this browser's new session is left.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions tbody tr').length")
            .await,
        json!(1)
    );
    let response = server.login("alice", new_password, "cookie").await;
    assert_eq!(response.status(), 200);
    browser.close().await;
}

/// A six-digit code the app does not show around `now` (one step either side).
async fn wrong_code(uri: &str, now: i64) -> String {
    let near = pyotp(uri, &[now - 30, now, now + 30]).await;
    let near: Vec<&str> = near["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(&c.as_str()))
        .unwrap()
}

/// The ids of the fields a person can fill in on the page.
async fn visible_fields(browser: &mut Browser) -> Value {
    browser
        .eval(
            "[...document.querySelectorAll('input')].filter(e => e.type !== 'hidden' && \
             !e.hidden && e.getClientRects().length > 0).map(e => e.id)",
        )
        .await
}

/// Through nginx with the documented configuration (whose `/billing` rule asks for a second
/// factor and a log-in within 10 minutes), as a person would: set up an authenticator app on
/// the account page (the key read off the page, the codes computed by pyotp as an app would),
/// then reach `/billing` by entering only the code the step-up page asks for, by logging in
/// with password and code, and, ten minutes on, by entering the password again.
#[tokio::test]
async fn a_browser_sets_up_an_authenticator_app_and_steps_up_through_nginx() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let _nginx = Nginx::start(ports).await;
    let base = format!("http://127.0.0.1:{}", ports.proxy);
    let artifacts = artifacts_dir();
    let mut browser = Browser::launch().await;

    // alice logs in with her password: no second factor yet.
    browser.navigate(&format!("{base}/login")).await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, format!("{base}/account"));
    let state = browser
        .text("document.getElementById('totp-state').innerText")
        .await;
    assert!(
        state.contains("Off") && state.contains("only your password"),
        "{state}"
    );

    // Setting up shows the QR code and the key to type in.
    browser.click_and_wait("#totp-setup").await;
    assert_eq!(browser.url().await, format!("{base}/account/totp"));
    assert_eq!(
        browser.text("document.title").await,
        "Set up an authenticator app · tessera"
    );
    let qr = browser
        .eval(
            "(() => { const r = document.querySelector('#totp-qr svg').getBoundingClientRect(); \
             return [r.width, r.height]; })()",
        )
        .await;
    assert_eq!(qr, json!([200, 200]), "a QR code is shown");
    assert_eq!(
        browser
            .text("document.querySelector('#totp-qr [role=img]').getAttribute('aria-label')")
            .await,
        "QR code of the key below, for an authenticator app"
    );
    browser.screenshot(&artifacts.join("totp-enrol.png")).await;
    let key = browser
        .text("document.getElementById('totp-secret').innerText")
        .await
        .replace(' ', "");
    assert_eq!(key.len(), 32, "a 160-bit key in base32: {key}");
    // The account as an app stores it when the key is typed in.
    let uri = format!("otpauth://totp/tessera:alice?secret={key}&issuer=tessera");

    // A wrong code: said so, and the form is there to try again.
    let wrong = wrong_code(&uri, server.service.now()).await;
    browser.type_into("#code", &wrong).await;
    browser.click_and_wait("#totp-confirm").await;
    assert_eq!(
        browser.url().await,
        format!("{base}/account/totp/confirm?error=code")
    );
    let alert = browser
        .text("document.querySelector('[role=alert]').textContent")
        .await;
    assert!(alert.contains("not correct"), "{alert}");
    assert_eq!(browser.text("document.activeElement.id").await, "code");

    // The app's code confirms it: ten recovery codes, shown once.
    let code = code_at(&uri, server.service.now()).await;
    browser.type_into("#code", &code).await;
    browser.click_and_wait("#totp-confirm").await;
    assert_eq!(browser.url().await, format!("{base}/account/totp/confirm"));
    assert_eq!(
        browser.text("document.title").await,
        "Your recovery codes · tessera"
    );
    let codes = browser
        .eval("[...document.querySelectorAll('#recovery-codes li')].map(e => e.innerText)")
        .await;
    let codes: Vec<&str> = codes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    let shape = regex::Regex::new("^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$").unwrap();
    assert!(codes.iter().all(|c| shape.is_match(c)), "{codes:?}");
    browser
        .screenshot(&artifacts.join("totp-recovery-codes.png"))
        .await;
    browser.click_and_wait("#back-to-account").await;
    assert_eq!(browser.url().await, format!("{base}/account"));
    let state = browser
        .text("document.getElementById('totp-state').innerText")
        .await;
    assert!(
        state.contains("On") && state.contains("10 recovery codes left"),
        "{state}"
    );

    // This browser's session was opened with the password alone: /billing asks for the code,
    // and only for it.
    server.advance(30);
    let wanted = format!("{base}/billing/x?n=1");
    browser.navigate(&wanted).await;
    let url = browser.url().await;
    assert!(url.starts_with(&format!("{base}/login?rd=")), "{url}");
    assert_eq!(
        browser.text("document.title").await,
        "Enter a code · tessera"
    );
    assert_eq!(visible_fields(&mut browser).await, json!(["code"]));
    assert_eq!(browser.text("document.activeElement.id").await, "code");
    let reason = browser
        .text("document.getElementById('step-up-reason').innerText")
        .await;
    assert!(reason.contains("second factor"), "{reason}");
    assert!(
        browser.body_text().await.contains("Logged in as alice"),
        "the page names the account"
    );
    browser.screenshot(&artifacts.join("step-up.png")).await;
    // A wrong code: said so, still logged in, asked for the code again.
    let wrong = wrong_code(&uri, server.service.now()).await;
    browser.type_into("#code", &wrong).await;
    browser.click_and_wait("#step-up-submit").await;
    let alert = browser
        .text("document.querySelector('[role=alert]').textContent")
        .await;
    assert!(alert.contains("code is not correct"), "{alert}");
    assert_eq!(visible_fields(&mut browser).await, json!(["code"]));
    // The right one: back on the page she wanted, which the app serves to alice.
    let code = code_at(&uri, server.service.now()).await;
    browser.type_into("#code", &code).await;
    browser.click_and_wait("#step-up-submit").await;
    assert_eq!(browser.url().await, wanted);
    let page = browser.body_text().await;
    assert!(page.contains("x-tessera-user: alice"), "{page}");

    // Logged out, /billing needs a log-in: the password and the code, and she lands there.
    browser.navigate(&format!("{base}/account")).await;
    browser.click_and_wait("#logout").await;
    assert_eq!(browser.url().await, format!("{base}/logged-out"));
    browser.navigate(&wanted).await;
    assert_eq!(browser.text("document.title").await, "Log in · tessera");
    assert_eq!(
        visible_fields(&mut browser).await,
        json!(["username", "password", "code"])
    );
    server.advance(30);
    let code = code_at(&uri, server.service.now()).await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.type_into("#code", &code).await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, wanted);
    let page = browser.body_text().await;
    assert!(page.contains("x-tessera-user: alice"), "{page}");

    // Ten minutes on, other pages still open, but /billing asks for the password again (with
    // the code: a fresh log-in with a second factor).
    server.advance(601);
    browser.navigate(&format!("{base}/private/y")).await;
    assert!(browser.body_text().await.contains("x-tessera-user: alice"));
    browser.navigate(&wanted).await;
    let url = browser.url().await;
    assert!(url.starts_with(&format!("{base}/login?rd=")), "{url}");
    assert_eq!(
        browser.text("document.title").await,
        "Confirm your password · tessera"
    );
    assert_eq!(
        visible_fields(&mut browser).await,
        json!(["password", "code"])
    );
    assert_eq!(browser.text("document.activeElement.id").await, "password");
    let reason = browser
        .text("document.getElementById('step-up-reason').innerText")
        .await;
    assert!(reason.contains("within the last 10 minutes"), "{reason}");
    browser
        .screenshot(&artifacts.join("step-up-password.png"))
        .await;
    let code = code_at(&uri, server.service.now()).await;
    browser.type_into("#password", PASSWORD).await;
    browser.type_into("#code", &code).await;
    browser.click_and_wait("#step-up-submit").await;
    assert_eq!(browser.url().await, wanted);
    assert!(browser.body_text().await.contains("x-tessera-user: alice"));

    // No page broke its Content-Security-Policy (the inline QR code included).
    let violations: Vec<&String> = browser
        .log
        .iter()
        .filter(|l| l.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
    browser.close().await;
}
