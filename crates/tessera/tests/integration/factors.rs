//! Second factors and step-up over real HTTP: TOTP enrolment and logins with codes computed by
//! an independent implementation (PyPI `pyotp`), recovery codes, the second step of a login,
//! step-up answers of `/v1/verify` and `POST /v1/step-up`, and the attacks on each.
//!
//! Needs `python3` with pyotp (`.ci/run` installs the pinned version); without it the tests
//! fail, never skip. `TESSERA_TEST_PYTHON` names another interpreter.

use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_server::access::{AccessRule, AccessRules};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::*;

const TOTP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/totp_codes.py");

/// pyotp's codes for the URI at each time, with what it read from the URI.
pub async fn pyotp(uri: &str, times: &[i64]) -> Value {
    let python = std::env::var("TESSERA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .arg(TOTP_SCRIPT)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (this test needs pyotp: `pip install pyotp`)");
    let mut stdin = child.stdin.take().unwrap();
    let request = json!({ "uri": uri, "times": times });
    let _ = stdin.write_all(request.to_string().as_bytes()).await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("pyotp answered in time")
        .unwrap();
    assert!(
        out.status.success(),
        "pyotp failed (this test needs `pip install pyotp`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The code pyotp computes for `uri` at `time`.
pub async fn code_at(uri: &str, time: i64) -> String {
    pyotp(uri, &[time]).await["codes"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A user enrolled in TOTP: the URI (the secret) and the recovery codes.
pub struct Enrolled {
    pub uri: String,
    pub recovery_codes: Vec<String>,
}

/// Enrols `session`'s user in TOTP over HTTP, confirming with pyotp's code for now.
pub async fn enrol(server: &TestServer, session: &ClientSession) -> Enrolled {
    let response = server.send(Method::POST, "/v1/factors/totp", session).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let enrolment: Value = response.json().await.unwrap();
    let uri = enrolment["uri"].as_str().unwrap().to_owned();
    let code = code_at(&uri, server.service.now()).await;
    let response = session
        .authorize(server.client.post(server.url("/v1/factors/totp/confirm")))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let recovery_codes = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    Enrolled {
        uri,
        recovery_codes,
    }
}

async fn login_with(server: &TestServer, username: &str, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "username": username, "password": PASSWORD, "delivery": "bearer" });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    server
        .client
        .post(server.url("/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn second_step(server: &TestServer, ticket: &str, code: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v1/login/second-factor"))
        .json(&json!({ "ticket": ticket, "code": code, "delivery": "bearer" }))
        .send()
        .await
        .unwrap()
}

/// Logs in with the password only and returns the ticket of the `second_factor_required`
/// answer.
async fn ticket(server: &TestServer, username: &str) -> String {
    let response = login_with(server, username, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "second_factor_required", "{body}");
    body["ticket"].as_str().unwrap().to_owned()
}

/// `POST /v1/step-up` with `session` (from this site, as a browser's cookie request is).
async fn step_up(server: &TestServer, session: &ClientSession, body: Value) -> reqwest::Response {
    session
        .authorize(server.client.post(server.url("/v1/step-up")))
        .header("sec-fetch-site", "same-origin")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn session_info(server: &TestServer, session: &ClientSession) -> Value {
    let response = server.send(Method::GET, "/v1/session", session).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_totp_enrolment_read_by_pyotp_signs_in_with_its_codes_once_each() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let info = session_info(&server, &alice).await;
    assert_eq!(info["amr"], json!(["pwd"]));
    assert_eq!(info["acr"], "aal1");

    // The enrolment as an authenticator app reads it, and the QR code drawn here.
    let response = server.send(Method::POST, "/v1/factors/totp", &alice).await;
    let enrolment: Value = response.json().await.unwrap();
    let uri = enrolment["uri"].as_str().unwrap();
    let read = pyotp(uri, &[]).await;
    assert_eq!(read["issuer"], "tessera");
    assert_eq!(read["name"], "alice");
    assert_eq!(
        (read["digits"].as_i64(), read["interval"].as_i64()),
        (Some(6), Some(30))
    );
    let svg = enrolment["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && !svg.contains("<script"), "{svg}");
    // Unconfirmed, it changes nothing: the password alone still signs in.
    assert_eq!(
        login_with(&server, "alice", None).await.status(),
        StatusCode::OK
    );
    let status: Value = server
        .send(Method::GET, "/v1/factors", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["totp"], "pending");

    // A wrong confirmation code is refused and enrols nothing.
    let wrong = alice
        .authorize(server.client.post(server.url("/v1/factors/totp/confirm")))
        .json(&json!({ "code": "000000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(wrong).await, "invalid_code");

    let now = server.service.now();
    let code = code_at(uri, now).await;
    let confirm = alice
        .authorize(server.client.post(server.url("/v1/factors/totp/confirm")))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let recovery: Value = confirm.json().await.unwrap();
    assert_eq!(recovery["recovery_codes"].as_array().unwrap().len(), 10);

    // The password alone is no longer enough, and the code used to confirm is spent.
    let ticket_1 = ticket(&server, "alice").await;
    let replay = second_step(&server, &ticket_1, &code).await;
    assert_eq!(
        replay.status(),
        StatusCode::FORBIDDEN,
        "a code is accepted once"
    );
    assert_eq!(problem_code(replay).await, "invalid_code");

    // The next step's code signs in, with both methods recorded.
    server.advance(30);
    let code = code_at(uri, server.service.now()).await;
    let response = second_step(&server, &ticket_1, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    let strong = ClientSession::from_login(Delivery::Bearer, response).await;
    let info = session_info(&server, &strong).await;
    assert_eq!(info["amr"], json!(["pwd", "otp"]));
    assert_eq!(info["acr"], "aal2");
    // The same code again, even through the one-step login, is refused.
    let again = login_with(&server, "alice", Some(&code)).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(again).await, "invalid_code");
}

#[tokio::test]
async fn codes_one_step_either_side_are_accepted_and_older_or_farther_ones_are_not() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    let uri = &enrolled.uri;
    // Step the clock to the start of a fresh step, well past the one confirmation used.
    server.advance(300);
    let now = server.service.now();
    let codes = pyotp(uri, &[now - 60, now + 60, now + 30, now]).await["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let (two_back, two_ahead, one_ahead, current) = (&codes[0], &codes[1], &codes[2], &codes[3]);
    for far in [two_back, two_ahead] {
        if far != one_ahead && far != current {
            let response = login_with(&server, "alice", Some(far)).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "two steps off: {far}"
            );
        }
    }
    // A clock one step ahead is tolerated...
    assert_eq!(
        login_with(&server, "alice", Some(one_ahead)).await.status(),
        StatusCode::OK
    );
    // ...and then the current step's code is older than one accepted: refused (RFC 6238 §5.2).
    if current != one_ahead {
        let older = login_with(&server, "alice", Some(current)).await;
        assert_eq!(older.status(), StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn a_recovery_code_works_once_and_is_counted_down() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    let code = &enrolled.recovery_codes[3];
    // Typed in capitals with spaces: the same code.
    let typed = code.to_uppercase().replace('-', " ");
    let response = login_with(&server, "alice", Some(&typed)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let session = ClientSession::from_login(Delivery::Bearer, response).await;
    assert_eq!(session_info(&server, &session).await["acr"], "aal2");
    let again = login_with(&server, "alice", Some(code)).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN, "spent");
    let status: Value = server
        .send(Method::GET, "/v1/factors", &session)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recovery_codes_left"], 9);
    assert_eq!(status["totp"], "confirmed");
    // Another user's recovery code is not this user's.
    let admin = server.session("admin", Delivery::Bearer).await;
    let admins = enrol(&server, &admin).await;
    let crossed = login_with(&server, "alice", Some(&admins.recovery_codes[0])).await;
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN);
    // New codes replace the old ones.
    let renewed: Value = server
        .send(Method::POST, "/v1/factors/recovery-codes", &session)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renewed["recovery_codes"].as_array().unwrap().len(), 10);
    let old = login_with(&server, "alice", Some(&enrolled.recovery_codes[0])).await;
    assert_eq!(
        old.status(),
        StatusCode::FORBIDDEN,
        "replaced codes are gone"
    );
    let new = renewed["recovery_codes"][0].as_str().unwrap();
    assert_eq!(
        login_with(&server, "alice", Some(new)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn code_guessing_is_throttled_per_account_whatever_the_client_and_audited() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    server.advance(120);
    let right = code_at(&enrolled.uri, server.service.now()).await;
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let first = ticket(&server, "alice").await;
    // Five wrong codes at once, as concurrent guesses would come.
    let guesses = (0..5).map(|_| second_step(&server, &first, wrong));
    for response in futures_util::future::join_all(guesses).await {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // The sixth attempt is refused before it is checked: even the right code.
    let refused = second_step(&server, &first, &right).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let refused = login_with(&server, "alice", Some(&right)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // The window over, the right code signs in.
    server.advance(901);
    let right = code_at(&enrolled.uri, server.service.now()).await;
    let again = ticket(&server, "alice").await;
    assert_eq!(
        second_step(&server, &again, &right).await.status(),
        StatusCode::OK
    );
    let events = server
        .service
        .audit_events(tessera_store::AuditQuery {
            user: Some("alice".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.kind.as_str() == kind).count();
    assert_eq!(count("second_factor.failed"), 5);
    assert_eq!(count("second_factor.throttled"), 2);
    assert_eq!(count("factor.enrolled"), 1);
}

/// A code from a user without a factor has nothing to match, yet it is counted and audited like
/// any wrong code, with the same answer: no way to tell, or to probe faster, that there is none.
#[tokio::test]
async fn a_code_from_a_user_without_a_factor_is_counted_and_audited_like_a_wrong_one() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    for _ in 0..5 {
        let response = step_up(&server, &alice, json!({ "code": "123456" })).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem_code(response).await, "invalid_code");
    }
    let throttled = step_up(&server, &alice, json!({ "code": "123456" })).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let events = server
        .service
        .audit_events(tessera_store::AuditQuery {
            user: Some("alice".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind.as_str() == "second_factor.failed")
        .collect();
    assert_eq!(failed.len(), 5, "{events:?}");
    assert!(
        failed
            .iter()
            .all(|e| e.detail.as_deref() == Some("no second factor")),
        "{failed:?}"
    );
}

#[tokio::test]
async fn tickets_are_sealed_short_lived_and_name_one_user() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    let ticket = ticket(&server, "alice").await;
    server.advance(60);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    // One character changed: not a ticket.
    let mut forged = ticket.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "", "x", &"A".repeat(2000)] {
        let response = second_step(&server, bad, &code).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad:.20}");
        assert_eq!(problem_code(response).await, "invalid_credentials");
    }
    // Past five minutes the ticket is refused, right code or not.
    server.advance(241);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let late = second_step(&server, &ticket, &code).await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    // The TOTP secret is kept sealed: the stored bytes are not the secret the URI carries.
    let user = server.service.user("alice").await.unwrap();
    let stored = server
        .service
        .store()
        .totp_factor(&user.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.sealed_secret.starts_with(b"TOT1"));
    let secret = enrolled
        .uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let sealed_text = String::from_utf8_lossy(&stored.sealed_secret).to_string();
    assert!(!sealed_text.contains(secret));
}

#[tokio::test]
async fn changing_factors_needs_a_recent_sign_in() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    server.advance(601);
    let response = server.send(Method::POST, "/v1/factors/totp", &alice).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("insufficient_user_authentication") && challenge.contains("max_age=600"),
        "{challenge}"
    );
    assert_eq!(problem_code(response).await, "step_up_required");
    let status: Value = server
        .send(Method::GET, "/v1/factors", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["totp"], "none", "nothing was enrolled");
    // The session is not ended: it steps up with the password and may enrol then.
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &alice)
            .await
            .status(),
        StatusCode::OK
    );
    let stepped = step_up(&server, &alice, json!({ "password": PASSWORD })).await;
    assert_eq!(stepped.status(), StatusCode::OK);
    let fresh = ClientSession::from_login(Delivery::Bearer, stepped).await;
    assert_ne!(fresh.session_id, alice.session_id);
    let response = server.send(Method::POST, "/v1/factors/totp", &fresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The step-up ended the old session: its token no longer works.
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &alice)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A wrong password to the step-up keeps the session and says so with a 403.
    let wrong = step_up(&server, &fresh, json!({ "password": "not the password" })).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &fresh)
            .await
            .status(),
        StatusCode::OK
    );
}

/// A server with a rule that needs a second factor on `/admin` and a recent sign-in on
/// `/billing`, behind a trusted proxy on loopback.
async fn step_up_server() -> TestServer {
    TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_url = Some("https://auth.test/login".into());
        c.access_rules = AccessRules::new(vec![
            AccessRule {
                paths: vec!["/admin".into()],
                two_factor: true,
                ..AccessRule::default()
            },
            AccessRule {
                paths: vec!["/billing".into()],
                max_age: Some("10m".into()),
                ..AccessRule::default()
            },
            AccessRule::default(),
        ])
        .unwrap();
    })
    .await
}

async fn verify(
    server: &TestServer,
    session: &ClientSession,
    uri: &str,
    query: &str,
) -> reqwest::Response {
    session
        .authorize(server.client.get(server.url(&format!("/v1/verify{query}"))))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.test")
        .header("x-forwarded-uri", uri)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn verify_asks_a_password_only_session_to_step_up_and_the_stepped_up_one_passes() {
    let server = step_up_server().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    let before = session_info(&server, &alice).await;
    assert_eq!(
        verify(&server, &alice, "/home", "").await.status(),
        StatusCode::OK
    );
    let refused = verify(&server, &alice, "/admin/users", "").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(challenge.contains("acr_values=\"aal2\""), "{challenge}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["aal"].as_i64()),
        (Some("step_up_required"), Some(2))
    );
    // The same through the query, for proxies configured per location.
    let asked = verify(&server, &alice, "/home", "?aal=2").await;
    assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);
    for bad in [
        "?aal=3",
        "?aal=x",
        "?max_age=-1",
        "?max_age=1e3",
        "?max_age=2147483648",
        "?aal=1&aal=2",
    ] {
        let response = verify(&server, &alice, "/home", bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // A browser is sent to the login page, told what to ask for.
    let browser = alice
        .authorize(server.client.get(server.url("/v1/verify")))
        .header("accept", "text/html")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.test")
        .header("x-forwarded-uri", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), StatusCode::FOUND);
    let location = browser.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://auth.test/login?rd=https%3A%2F%2Fapp.test%2Fadmin%2Fusers"),
        "{location}"
    );
    assert!(location.ends_with("&aal=2"), "{location}");

    // Step up with a code: a new session, at AAL2, and the old one ends.
    server.advance(30);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let stepped = step_up(&server, &alice, json!({ "code": code })).await;
    assert_eq!(stepped.status(), StatusCode::OK);
    let strong = ClientSession::from_login(Delivery::Bearer, stepped).await;
    assert_eq!(
        verify(&server, &strong, "/admin/users", "").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        verify(&server, &alice, "/home", "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let claims = claims_of(&strong.access);
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["auth_time"], server.service.now());
    // A step-up with only a code keeps the old session's absolute end.
    let after = session_info(&server, &strong).await;
    assert_eq!(after["expires_at"], before["expires_at"]);
    assert_ne!(after["session_id"], before["session_id"]);
}

#[tokio::test]
async fn max_age_asks_for_a_fresh_sign_in_without_ending_the_session() {
    let server = step_up_server().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    assert_eq!(
        verify(&server, &alice, "/billing/x", "").await.status(),
        StatusCode::OK
    );
    server.advance(601);
    let stale = verify(&server, &alice, "/billing/x", "").await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["max_age"].as_i64()),
        (Some("step_up_required"), Some(600))
    );
    // Elsewhere the session still works: it was not ended.
    assert_eq!(
        verify(&server, &alice, "/home", "").await.status(),
        StatusCode::OK
    );
    // A code cannot stand in for a fresh password (no factor anyway), and nothing at all is 400.
    let nothing = step_up(&server, &alice, json!({})).await;
    assert_eq!(nothing.status(), StatusCode::BAD_REQUEST);
    let stepped = step_up(&server, &alice, json!({ "password": PASSWORD })).await;
    assert_eq!(stepped.status(), StatusCode::OK);
    let fresh = ClientSession::from_login(Delivery::Cookie, stepped).await;
    assert_eq!(
        verify(&server, &fresh, "/billing/x", "").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        verify(&server, &fresh, "/home", "?max_age=0")
            .await
            .status(),
        StatusCode::OK
    );
    server.advance(1);
    assert_eq!(
        verify(&server, &fresh, "/home", "?max_age=0")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_administrator_sees_and_resets_a_users_factors_and_her_sessions_end() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let factors = |session: &ClientSession| {
        let request = session.authorize(
            server
                .client
                .get(server.url("/v1/admin/users/alice/factors")),
        );
        async move { request.send().await.unwrap() }
    };
    let before: Value = factors(&admin).await.json().await.unwrap();
    assert_eq!(before["totp"], "none");
    let enrolled = enrol(&server, &alice).await;
    let after: Value = factors(&admin).await.json().await.unwrap();
    assert_eq!(
        (
            after["totp"].as_str(),
            after["recovery_codes_left"].as_u64()
        ),
        (Some("confirmed"), Some(10))
    );

    let reset = admin
        .authorize(
            server
                .client
                .delete(server.url("/v1/admin/users/alice/factors")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    // Every session of hers ended, and the password alone signs her in again.
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &alice)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_with(&server, "alice", None).await.status(),
        StatusCode::OK
    );
    // Her old recovery codes are gone with the factor.
    let status: Value = factors(&admin).await.json().await.unwrap();
    assert_eq!(
        (
            status["totp"].as_str(),
            status["recovery_codes_left"].as_u64()
        ),
        (Some("none"), Some(0))
    );
    let code = &enrolled.recovery_codes[0];
    let response = login_with(&server, "alice", Some(code)).await;
    let session = ClientSession::from_login(Delivery::Bearer, response).await;
    assert_eq!(
        session_info(&server, &session).await["acr"],
        "aal1",
        "a code with no factor adds nothing"
    );
    let unknown = admin
        .authorize(
            server
                .client
                .delete(server.url("/v1/admin/users/nobody/factors")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let events = server
        .service
        .audit_events(tessera_store::AuditQuery {
            user: Some("alice".into()),
            kind: Some(tessera_store::EventKind::FactorRemoved),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor.as_deref(), Some("admin"));
}

#[tokio::test]
async fn roles_that_need_a_second_factor_count_only_in_sessions_signed_in_with_one() {
    let server = TestServer::start_with(|c| c.second_factor_roles = vec!["admin".into()]).await;
    for delivery in [Delivery::Bearer, Delivery::Cookie] {
        let weak = server.session("admin", delivery).await;
        let info = session_info(&server, &weak).await;
        assert_eq!(info["roles"], json!([]), "{delivery:?}: {info}");
        let refused = server.send(Method::GET, "/v1/admin/users", &weak).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{delivery:?}");
    }
    // The password-only session is enough to enrol; a step-up with a code then holds the role.
    let weak = server.session("admin", Delivery::Bearer).await;
    assert_eq!(claims_of(&weak.access)["roles"], json!([]));
    let enrolled = enrol(&server, &weak).await;
    server.advance(30);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let stepped = step_up(&server, &weak, json!({ "code": code })).await;
    assert_eq!(stepped.status(), StatusCode::OK);
    let strong = ClientSession::from_login(Delivery::Bearer, stepped).await;
    assert_eq!(claims_of(&strong.access)["roles"], json!(["admin"]));
    assert_eq!(
        session_info(&server, &strong).await["roles"],
        json!(["admin"])
    );
    assert_eq!(
        server
            .send(Method::GET, "/v1/admin/users", &strong)
            .await
            .status(),
        StatusCode::OK
    );
    // Roles not named keep working without a second factor.
    let alice = server.session("alice", Delivery::Bearer).await;
    assert_eq!(
        session_info(&server, &alice).await["roles"],
        json!(["editor"])
    );
}

/// `second_factor_required`: enrolment enforced for every user. A password-only session holds
/// no role and forward auth asks it to step up, yet it can enrol; the stepped-up one passes.
#[tokio::test]
async fn a_deployment_can_require_a_second_factor_of_every_session() {
    let server = TestServer::start_with(|c| c.second_factor_required = true).await;
    let weak = server.session("alice", Delivery::Bearer).await;
    assert_eq!(session_info(&server, &weak).await["roles"], json!([]));
    assert_eq!(claims_of(&weak.access)["roles"], json!([]));
    let refused = verify(&server, &weak, "/anything", "").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "step_up_required", "{problem}");
    assert_eq!(problem["aal"], 2, "{problem}");

    let enrolled = enrol(&server, &weak).await;
    server.advance(30);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let stepped = step_up(&server, &weak, json!({ "code": code })).await;
    assert_eq!(stepped.status(), StatusCode::OK);
    let strong = ClientSession::from_login(Delivery::Bearer, stepped).await;
    let passed = verify(&server, &strong, "/anything", "").await;
    assert_eq!(passed.status(), StatusCode::OK);
    assert_eq!(passed.headers()["x-tessera-roles"], "editor");
    assert_eq!(claims_of(&strong.access)["roles"], json!(["editor"]));
}

#[tokio::test]
async fn revoking_other_sessions_and_admin_changes_need_a_recent_sign_in() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let alice_elsewhere = server.session("alice", Delivery::Bearer).await;
    server.advance(601);
    // An old session reads, but must step up to change anything.
    let revoke = server
        .send(Method::DELETE, "/v1/sessions?scope=others", &alice)
        .await;
    assert_eq!(revoke.status(), StatusCode::UNAUTHORIZED);
    assert!(
        revoke.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("max_age=600")
    );
    assert_eq!(problem_code(revoke).await, "step_up_required");
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &alice_elsewhere)
            .await
            .status(),
        StatusCode::OK,
        "the other session was not revoked"
    );
    assert_eq!(
        server
            .send(Method::GET, "/v1/admin/users", &admin)
            .await
            .status(),
        StatusCode::OK
    );
    let patch = admin
        .authorize(server.client.patch(server.url("/v1/admin/users/alice")))
        .json(&json!({ "roles": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(patch).await, "step_up_required");
    assert_eq!(
        server.service.user("alice").await.unwrap().roles,
        ["editor"],
        "nothing changed"
    );
    // After a step-up with the password, both go through.
    let alice = ClientSession::from_login(
        Delivery::Bearer,
        step_up(&server, &alice, json!({ "password": PASSWORD })).await,
    )
    .await;
    let revoke = server
        .send(Method::DELETE, "/v1/sessions?scope=others", &alice)
        .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &alice_elsewhere)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let admin = ClientSession::from_login(
        Delivery::Bearer,
        step_up(&server, &admin, json!({ "password": PASSWORD })).await,
    )
    .await;
    let patch = admin
        .authorize(server.client.patch(server.url("/v1/admin/users/alice")))
        .json(&json!({ "roles": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_step_up_that_carries_a_factor_over_keeps_the_sessions_absolute_end() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = enrol(&server, &alice).await;
    server.advance(30);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let strong = ClientSession::from_login(
        Delivery::Bearer,
        login_with(&server, "alice", Some(&code)).await,
    )
    .await;
    let first = session_info(&server, &strong).await;
    server.advance(601);
    // The password alone: the code entered earlier is carried over, within the old end.
    let response = step_up(&server, &strong, json!({ "password": PASSWORD })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let carried = ClientSession::from_login(Delivery::Bearer, response).await;
    let info = session_info(&server, &carried).await;
    assert_eq!(info["amr"], json!(["pwd", "otp"]));
    assert_eq!(
        info["expires_at"], first["expires_at"],
        "no later end than the code's session"
    );
    assert_ne!(info["auth_time"], first["auth_time"]);
    // Both factors again: a fresh session, with a fresh absolute end.
    server.advance(30);
    let code = code_at(&enrolled.uri, server.service.now()).await;
    let response = step_up(
        &server,
        &carried,
        json!({ "password": PASSWORD, "code": code }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = ClientSession::from_login(Delivery::Bearer, response).await;
    let info = session_info(&server, &fresh).await;
    assert_ne!(info["expires_at"], first["expires_at"]);
    assert_eq!(info["created_at"], info["auth_time"]);
}
