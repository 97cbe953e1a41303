//! The browser pages over HTTP: headers, form login and its redirects, the account forms, the
//! cross-site refusal on them, and the cookie-domain option.

use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::support::*;

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Posts the login form as a browser would (same-origin fetch metadata).
async fn form_login(
    server: &TestServer,
    username: &str,
    password: &str,
    rd: Option<&str>,
) -> Response {
    let mut form = vec![("username", username), ("password", password)];
    if let Some(rd) = rd {
        form.push(("rd", rd));
    }
    server
        .client
        .post(server.url("/v1/login"))
        .header("accept", HTML)
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_carry_strict_security_headers_and_no_script() {
    let server =
        TestServer::start_with(|c| c.redirect_origins = vec!["https://app.example.com".into()])
            .await;
    let session = server.session("alice", Delivery::Cookie).await;
    for (path, with_session) in [
        ("/login", false),
        ("/account", true),
        ("/logged-out", false),
    ] {
        let mut request = server.client.get(server.url(path));
        if with_session {
            request = session.authorize(request);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
        let csp = header(&response, "content-security-policy").to_owned();
        for directive in [
            "default-src 'none'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self' https://app.example.com",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header(&response, "cache-control"), "no-store");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script"), "{path}");
        assert!(
            !html.contains(" style="),
            "{path}: inline styles would break the CSP"
        );
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/static/tessera.css\">"));
    }
    let css = server
        .client
        .get(server.url("/static/tessera.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    assert!(header(&css, "cache-control").starts_with("public"));
}

#[tokio::test]
async fn the_login_page_is_an_accessible_form_that_keeps_only_a_safe_rd() {
    let server =
        TestServer::start_with(|c| c.redirect_origins = vec!["https://app.example.com".into()])
            .await;
    let page = server
        .client
        .get(server.url("/login?rd=https%3A%2F%2Fapp.example.com%2Fdocs%3Fa%3D1%26b%3D%22%3E"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<form method=\"post\" action=\"/v1/login\""));
    assert!(page.contains("<label for=\"username\">Username</label>"));
    assert!(page.contains("<label for=\"password\">Password</label>"));
    assert!(page.contains("autocomplete=\"username\""));
    assert!(page.contains("autocomplete=\"current-password\""));
    assert!(
        !page.contains("role=\"alert\""),
        "no error before a failed attempt"
    );
    // The return address is kept (as the URL parser writes it).
    assert!(
        page.contains("name=\"rd\" value=\"https://app.example.com/docs?a=1&#38;b=%22%3E\""),
        "{page}"
    );
    // A local path is kept as given, and HTML-escaped.
    let page = server
        .client
        .get(server.url("/login?rd=%2Fdocs%3Fb%3D%22%3E%3Cb%3Ex"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"rd\" value=\"/docs?b=&#34;&#62;&#60;b&#62;x\""),
        "{page}"
    );
    // An unsafe one is dropped, and an unknown error code shows nothing.
    let page = server
        .client
        .get(server.url("/login?rd=https%3A%2F%2Fevil.example%2F&error=%3Cb%3Ehi"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("name=\"rd\""), "{page}");
    assert!(
        !page.contains("evil.example") && !page.contains("<b>hi"),
        "{page}"
    );
}

#[tokio::test]
async fn form_login_redirects_only_to_allowed_places() {
    let server = TestServer::start_with(|c| {
        c.redirect_origins = vec![
            "https://app.example.com".into(),
            "https://*.corp.example".into(),
        ]
    })
    .await;
    let cases = [
        (
            Some("https://app.example.com/docs?x=1"),
            "https://app.example.com/docs?x=1",
        ),
        (
            Some("https://wiki.corp.example/"),
            "https://wiki.corp.example/",
        ),
        (Some("/account?from=login"), "/account?from=login"),
        (None, "/account"),
        (Some("https://evil.example/"), "/account"),
        (Some("//evil.example/"), "/account"),
        (Some("/\\evil.example/"), "/account"),
        (Some("https://app.example.com.evil.example/"), "/account"),
        (Some("http://app.example.com/"), "/account"),
        (Some("javascript:alert(1)"), "/account"),
        (Some("https://app.example.com@evil.example/"), "/account"),
    ];
    for (rd, expected) in cases {
        let response = form_login(&server, "alice", PASSWORD, rd).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{rd:?}");
        assert_eq!(header(&response, "location"), expected, "{rd:?}");
        assert_eq!(header(&response, "cache-control"), "no-store");
        let cookie = raw_set_cookie(&response).expect("a session cookie");
        assert!(cookie.starts_with("__Host-tessera=tsr_"), "{cookie}");
        assert!(
            response.text().await.unwrap().is_empty(),
            "the token is never in the body"
        );
    }
    // API clients posting a form (no text/html in Accept) still get JSON.
    let response = server
        .client
        .post(server.url("/v1/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_failed_form_login_says_the_same_for_every_cause() {
    let server =
        TestServer::start_with(|c| c.redirect_origins = vec!["https://app.example.com".into()])
            .await;
    let rd = Some("https://app.example.com/x");
    let wrong = form_login(&server, "alice", "not the password", rd).await;
    let unknown = form_login(&server, "mallory", "not the password", rd).await;
    let malformed = form_login(&server, &"a".repeat(300), "x", rd).await;
    for response in [&wrong, &unknown, &malformed] {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert!(raw_set_cookie(response).is_none());
    }
    // The same error for every cause; only the name typed comes back (not one too long to be
    // a username), so the person retypes just the password.
    let same = "/login?error=credentials&rd=https%3A%2F%2Fapp.example.com%2Fx";
    let location = header(&wrong, "location").to_owned();
    assert_eq!(location, format!("{same}&username=alice"));
    assert_eq!(
        header(&unknown, "location"),
        format!("{same}&username=mallory")
    );
    assert_eq!(header(&malformed, "location"), same);
    // The login page then announces the error to assistive technology.
    let page = server
        .client
        .get(server.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("the username or password is not correct"));
    assert!(page.contains("aria-invalid=\"true\""));
    assert!(page.contains("name=\"rd\" value=\"https://app.example.com/x\""));
    // The username is kept in its field; the password field has the focus.
    assert!(page.contains("name=\"username\""), "{page}");
    assert!(page.contains("value=\"alice\""), "{page}");
}

#[tokio::test]
async fn a_kept_username_cannot_inject_markup_and_needs_an_error() {
    let server = TestServer::start().await;
    let server = &server;
    let get = |path: &'static str| async move {
        server
            .client
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Anyone can make such a link: the value is only ever an escaped field value.
    let page =
        get("/login?error=credentials&username=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("\"><script"), "{page}");
    assert!(
        page.contains("value=\"&#34;&#62;&#60;script&#62;")
            || page.contains("value=\"&quot;&gt;&lt;script&gt;"),
        "{page}"
    );
    // Without an error there is nothing to keep: a bare link pre-fills nothing.
    let page = get("/login?username=mallory").await;
    assert!(!page.contains("mallory"), "{page}");
    // Control characters are not shown back.
    let page = get("/login?error=credentials&username=a%0Ab").await;
    assert!(!page.contains("value=\"a"), "{page}");
}

/// Posts the password form as a browser would.
async fn password_form(
    server: &TestServer,
    session: &ClientSession,
    fields: &[(&str, &str)],
) -> Response {
    session
        .authorize(server.client.post(server.url("/account/password")))
        .header("accept", HTML)
        .header("sec-fetch-site", "same-origin")
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_password_form_changes_the_password_like_the_api() {
    let server = TestServer::start().await;
    let laptop = server.session("alice", Delivery::Cookie).await;
    let phone = server.session("alice", Delivery::Cookie).await;

    // The form: signed in only, labelled fields, posting to itself.
    let response = server
        .client
        .get(server.url("/account/password"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(header(&response, "location").starts_with("/login?rd="));
    let response = laptop
        .authorize(server.client.get(server.url("/account/password")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-security-policy").contains("default-src 'none'"));
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<form method=\"post\" action=\"/account/password\""),
        "{page}"
    );
    for field in ["current_password", "new_password", "confirm_password"] {
        assert!(page.contains(&format!("<label for=\"{field}\">")), "{page}");
    }
    // The account page links to it.
    let account = laptop
        .authorize(server.client.get(server.url("/account")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(account.contains("href=\"/account/password\""), "{account}");

    // Mistakes send the browser back to the form with the reason, the session untouched.
    let new = "a brand new secret";
    for (fields, error) in [
        (
            vec![
                ("current_password", "wrong"),
                ("new_password", new),
                ("confirm_password", new),
            ],
            "current",
        ),
        (
            vec![
                ("current_password", PASSWORD),
                ("new_password", new),
                ("confirm_password", "other"),
            ],
            "mismatch",
        ),
        (
            vec![
                ("current_password", PASSWORD),
                ("new_password", "short"),
                ("confirm_password", "short"),
            ],
            "weak",
        ),
    ] {
        let response = password_form(&server, &laptop, &fields).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{error}");
        assert_eq!(
            header(&response, "location"),
            format!("/account/password?error={error}")
        );
        assert!(raw_set_cookie(&response).is_none());
        let page = laptop
            .authorize(server.client.get(server.url(header(&response, "location"))))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("role=\"alert\""), "{page}");
    }
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &laptop)
            .await
            .status(),
        StatusCode::OK
    );

    // Sent cross-site, it is refused like every account form.
    let response = laptop
        .authorize(server.client.post(server.url("/account/password")))
        .header("accept", HTML)
        .header("sec-fetch-site", "cross-site")
        .form(&[("current_password", PASSWORD), ("new_password", new)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(response).await, "cross_site_request");

    // The change: a new cookie, back to the account page, every other session over.
    let response = password_form(
        &server,
        &laptop,
        &[
            ("current_password", PASSWORD),
            ("new_password", new),
            ("confirm_password", new),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/account?done=password");
    let mut renewed = ClientSession {
        delivery: Delivery::Cookie,
        access: String::new(),
        refresh: None,
        session_id: String::new(),
    };
    renewed.absorb(&response);
    assert!(!renewed.access.is_empty(), "a new session cookie");
    for old in [&laptop, &phone] {
        assert_eq!(
            server
                .send(reqwest::Method::GET, "/v1/session", old)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let page = renewed
        .authorize(server.client.get(server.url("/account?done=password")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Your password was changed"), "{page}");
    assert_eq!(
        server.login("alice", PASSWORD, "cookie").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.login("alice", new, "cookie").await.status(),
        StatusCode::OK
    );
    // The same audit event as the API's.
    let query = tessera_store::AuditQuery {
        user: Some("alice".into()),
        kind: Some("password.changed".parse().unwrap()),
        limit: 10,
        ..Default::default()
    };
    let events = server.service.store().audit_events(&query).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(!format!("{events:?}").contains(new));
}

#[tokio::test]
async fn the_password_form_is_throttled_on_the_login_counters() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Cookie).await;
    for i in 1..=10 {
        let guess = format!("guess {i}");
        let response = password_form(
            &server,
            &session,
            &[
                ("current_password", &guess),
                ("new_password", "a brand new secret"),
            ],
        )
        .await;
        assert_eq!(
            header(&response, "location"),
            "/account/password?error=current",
            "{i}"
        );
    }
    let response = password_form(
        &server,
        &session,
        &[
            ("current_password", PASSWORD),
            ("new_password", "a brand new secret"),
        ],
    )
    .await;
    assert_eq!(
        header(&response, "location"),
        "/account/password?error=rate_limited"
    );
    // The same counters as the API's and the logins'.
    let login = server.login("alice", PASSWORD, "cookie").await;
    assert_eq!(login.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_access_denied_answer_suits_browsers_and_api_clients() {
    let server = TestServer::start_with(|c| c.product_name = "Acme sign-on".into()).await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let bearer = server.session("alice", Delivery::Bearer).await;
    // A signed-in browser: tessera's page, 403, with who it is and a way out.
    let response = alice
        .authorize(server.client.get(server.url("/access-denied")))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("Access denied"), "{page}");
    assert!(
        page.contains("<strong id=\"username\">alice</strong>"),
        "{page}"
    );
    assert!(page.contains("Acme sign-on"), "{page}");
    assert!(page.contains("action=\"/account/logout\""), "{page}");
    // API clients: problem+json, 403 with a session, the token's own 401 without.
    for request in [
        alice
            .authorize(server.client.get(server.url("/access-denied")))
            .header("accept", "application/json"),
        bearer
            .authorize(server.client.get(server.url("/access-denied")))
            .header("accept", HTML),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
        assert_eq!(problem_code(response).await, "forbidden");
    }
    let response = server
        .client
        .get(server.url("/access-denied"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let response = server
        .client
        .get(server.url("/access-denied"))
        .bearer_auth("tsr_not_a_token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_token");
    // A browser without a session: a page pointing to the login form.
    let response = server
        .client
        .get(server.url("/access-denied"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("href=\"/login\""));
}

#[tokio::test]
async fn the_pages_show_the_configured_product_name_and_say_log_out() {
    let server = TestServer::start_with(|c| c.product_name = "Acme <Sign-on>".into()).await;
    let session = server.session("alice", Delivery::Cookie).await;
    for path in ["/login", "/account", "/account/password", "/logged-out"] {
        let page = session
            .authorize(server.client.get(server.url(path)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("Acme &#60;Sign-on&#62;") || page.contains("Acme &lt;Sign-on&gt;"),
            "{path}: {page}"
        );
        assert!(!page.contains("tessera</span>"), "{path}: {page}");
        assert!(
            !page.contains("Sign out") && !page.contains("Signed"),
            "{path}: {page}"
        );
    }
    let account = session
        .authorize(server.client.get(server.url("/account")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(account.matches(">Log out</button>").count(), 1, "{account}");
}

/// `GET /openapi.json` with `headers`: the `Vary` header and the document's first server URL.
async fn api_document_server(
    server: &TestServer,
    headers: &[(&str, &str)],
) -> (Option<String>, String) {
    let mut request = server.client.get(server.url("/openapi.json"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let vary = response
        .headers()
        .get("vary")
        .map(|v| v.to_str().unwrap().to_owned());
    let document: serde_json::Value = response.json().await.unwrap();
    let url = document["servers"][0]["url"].as_str().unwrap().to_owned();
    (vary, url)
}

#[tokio::test]
async fn the_api_document_names_the_server_it_was_asked_at() {
    let server = TestServer::start().await;
    let (vary, url) = api_document_server(&server, &[("host", "api.example.com:8443")]).await;
    assert!(vary.unwrap().contains("Host"));
    assert_eq!(url, "http://api.example.com:8443");
    // The default (as the test server sees its own address), never a fixed address.
    assert_eq!(api_document_server(&server, &[]).await.1, server.base);
    // An X-Forwarded-Host from a client that is not a trusted proxy is not believed.
    let forwarded = [("x-forwarded-host", "evil.example")];
    assert_eq!(
        api_document_server(&server, &forwarded).await.1,
        server.base
    );
    // A Host with URL syntax in it names nothing: the document falls back to `/`.
    let odd_host = [("host", "evil.example/@x")];
    assert_eq!(api_document_server(&server, &odd_host).await.1, "/");

    let server =
        TestServer::start_with(|c| c.public_url = Some("https://auth.example.com/".into())).await;
    let (vary, url) = api_document_server(&server, &[("host", "evil.example")]).await;
    assert_eq!(vary, None);
    assert_eq!(url, "https://auth.example.com");
}

#[tokio::test]
async fn the_account_page_lists_sessions_and_its_buttons_work() {
    let server = TestServer::start().await;
    // Without a session: to the login page, coming back here.
    let response = server
        .client
        .get(server.url("/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/login?rd=%2Faccount");

    let response = server
        .client
        .post(server.url("/v1/login"))
        .header(
            "user-agent",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Firefox/128.0",
        )
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let laptop = ClientSession::from_login(Delivery::Cookie, response).await;
    let phone = server.session("alice", Delivery::Cookie).await;
    let third = server.session("alice", Delivery::Bearer).await;
    // Someone else's session is never listed.
    let _admin = server.session("admin", Delivery::Cookie).await;

    let page = laptop
        .authorize(server.client.get(server.url("/account")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("data-session=").count(), 3, "{page}");
    assert!(page.contains("Firefox on macOS"));
    assert_eq!(page.matches("this device").count(), 1);
    assert!(page.contains(&format!(
        "action=\"/account/sessions/{}/revoke\"",
        phone.session_id
    )));
    assert!(
        !page.contains(&format!("/account/sessions/{}/revoke", laptop.session_id)),
        "this device has Log out instead"
    );

    let post = |path: &str, session: &ClientSession| {
        session
            .authorize(server.client.post(server.url(path)))
            .header("sec-fetch-site", "same-origin")
            .send()
    };
    // Revoke one other device.
    let response = post(
        &format!("/account/sessions/{}/revoke", phone.session_id),
        &laptop,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/account?done=revoked");
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &phone)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let page = laptop
        .authorize(server.client.get(server.url("/account?done=revoked")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("role=\"status\""));
    assert_eq!(page.matches("data-session=").count(), 2);
    // Revoking it again, or someone else's, changes nothing and says so.
    let response = post(
        &format!("/account/sessions/{}/revoke", _admin.session_id),
        &laptop,
    )
    .await
    .unwrap();
    assert_eq!(header(&response, "location"), "/account?done=gone");
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &_admin)
            .await
            .status(),
        StatusCode::OK
    );

    // Revoke all the others.
    let response = post("/account/sessions/revoke-others", &laptop)
        .await
        .unwrap();
    assert_eq!(header(&response, "location"), "/account?done=others");
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &third)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &laptop)
            .await
            .status(),
        StatusCode::OK
    );

    // Log out: cookie cleared, site data cleared, session over.
    let response = post("/account/logout", &laptop).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/logged-out");
    assert_eq!(header(&response, "clear-site-data"), "\"cookies\"");
    let cleared = raw_set_cookie(&response).unwrap();
    assert!(
        cleared.starts_with("__Host-tessera=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &laptop)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Forms answer only POST.
    let response = server
        .client
        .get(server.url("/account/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn account_forms_refuse_cross_site_posts() {
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example.com".into()])
            .await;
    let victim = server.session("alice", Delivery::Cookie).await;
    let other = server.session("alice", Delivery::Cookie).await;
    let paths = [
        "/account/logout".to_owned(),
        "/account/sessions/revoke-others".to_owned(),
        format!("/account/sessions/{}/revoke", other.session_id),
    ];
    let attacks = [
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "https://sibling.example.com"),
        ],
        vec![("origin", "https://evil.example")],
        vec![("referer", "https://evil.example/page")],
        vec![("origin", "null")],
    ];
    for path in &paths {
        for headers in &attacks {
            let mut request = victim.authorize(server.client.post(server.url(path)));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{path} {headers:?}"
            );
            assert_eq!(problem_code(response).await, "cross_site_request");
        }
    }
    for session in [&victim, &other] {
        assert_eq!(
            server
                .send(reqwest::Method::GET, "/v1/session", session)
                .await
                .status(),
            StatusCode::OK
        );
    }
    // An allowed origin may, even when the browser calls it same-site.
    let response = victim
        .authorize(
            server
                .client
                .post(server.url("/account/sessions/revoke-others")),
        )
        .header("sec-fetch-site", "same-site")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &other)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn x_forwarded_host_counts_for_the_origin_check_only_from_a_trusted_proxy() {
    for (trusted, expected) in [
        (true, StatusCode::NO_CONTENT),
        (false, StatusCode::FORBIDDEN),
    ] {
        let server = TestServer::start_with(|c| {
            c.behind_proxy = true;
            if !trusted {
                c.trusted_proxies = vec![];
            }
        })
        .await;
        let session = server.session("alice", Delivery::Cookie).await;
        let response = session
            .authorize(server.client.post(server.url("/v1/logout")))
            .header("origin", "https://app.example.com")
            .header("x-forwarded-host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "trusted proxy: {trusted}");
    }
}

#[tokio::test]
async fn a_cookie_domain_makes_a_secure_prefixed_domain_cookie() {
    let server = TestServer::start_with(|c| c.cookie_domain = Some("example.com".into())).await;
    let response = form_login(&server, "alice", PASSWORD, None).await;
    let set = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = set.split("; ").collect();
    assert!(attributes[0].starts_with("__Secure-tessera=tsr_"), "{set}");
    for a in [
        "Domain=example.com",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(attributes.contains(&a), "{a} missing from {set}");
    }
    let token = attributes[0].trim_start_matches("__Secure-tessera=");
    // Only the configured name is read.
    let with = |cookie: String| {
        server
            .client
            .get(server.url("/v1/session"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(
        with(format!("__Secure-tessera={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        with(format!("__Host-tessera={token}"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Logout clears it with the same Domain, or the browser would keep it.
    let response = server
        .client
        .post(server.url("/v1/logout"))
        .header("cookie", format!("__Secure-tessera={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = header(&response, "set-cookie");
    assert!(cleared.starts_with("__Secure-tessera=;"), "{cleared}");
    assert!(
        cleared.contains("Domain=example.com") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // And by default the host-only cookie ignores a planted __Secure- one.
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Cookie).await;
    let response = server
        .client
        .get(server.url("/v1/session"))
        .header("cookie", format!("__Secure-tessera={}", session.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A malformed form post is refused as such (4xx problem), whether or not its session is
/// still good; only a well-formed post without a session is sent to the login page.
#[tokio::test]
async fn a_password_form_without_a_body_is_refused_before_any_redirect() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Cookie).await;
    let revoked = server.session("alice", Delivery::Bearer).await;
    let logout = server
        .send(reqwest::Method::POST, "/v1/logout", &revoked)
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    for who in [&session, &revoked] {
        let response = who
            .authorize(server.client.post(server.url("/account/password")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = revoked
        .authorize(server.client.post(server.url("/account/password")))
        .form(&[
            ("current_password", "x"),
            ("new_password", "a new long password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(header(&response, "location").starts_with("/login"));
}

// ---------------------------------------------------------------------------- second factors

/// Posts a form of the pages as a browser would (same-origin fetch metadata).
async fn page_form(
    server: &TestServer,
    session: &ClientSession,
    path: &str,
    fields: &[(&str, &str)],
) -> Response {
    session
        .authorize(server.client.post(server.url(path)))
        .header("accept", HTML)
        .header("sec-fetch-site", "same-origin")
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn page_text(server: &TestServer, session: &ClientSession, path: &str) -> String {
    let response = session
        .authorize(server.client.get(server.url(path)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

async fn factors_of(server: &TestServer, session: &ClientSession) -> serde_json::Value {
    let response = server
        .send(reqwest::Method::GET, "/v1/factors", session)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn session_status(server: &TestServer, session: &ClientSession) -> StatusCode {
    server
        .send(reqwest::Method::GET, "/v1/session", session)
        .await
        .status()
}

/// The recovery codes a page shows.
fn codes_on(page: &str) -> Vec<String> {
    let code = regex::Regex::new("<li><code>([a-z2-7-]{19})</code></li>").unwrap();
    code.captures_iter(page).map(|c| c[1].to_owned()).collect()
}

#[tokio::test]
async fn the_account_page_sets_up_an_authenticator_app_and_shows_secrets_once() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let page = page_text(&server, &alice, "/account").await;
    assert!(page.contains("Two-factor authentication"), "{page}");
    assert!(page.contains("action=\"/account/totp\""), "{page}");
    assert!(!page.contains("action=\"/account/totp/remove\""), "{page}");

    // The set-up page: the QR code as inline SVG, the key, the confirmation form; never
    // cached, and within the pages' strict policy.
    let response = page_form(&server, &alice, "/account/totp", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let csp = header(&response, "content-security-policy").to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{page}"
    );
    assert!(!page.contains("<?xml") && !page.contains("<script") && !page.contains(" style="));
    assert!(page.contains("autocomplete=\"one-time-code\""));
    assert!(page.contains("<form method=\"post\" action=\"/account/totp/confirm\""));
    let secret = regex::Regex::new(r#"id="totp-secret">([A-Z2-7 ]+)</code>"#)
        .unwrap()
        .captures(&page)
        .expect("the key is shown")[1]
        .replace(' ', "");
    assert_eq!(factors_of(&server, &alice).await["totp"], "pending");
    let uri = format!("otpauth://totp/tessera:alice?secret={secret}&issuer=tessera");

    // A wrong code: back to the form, which says so; nothing confirmed.
    let now = server.service.now();
    let near = crate::factors::pyotp(&uri, &[now - 30, now, now + 30]).await;
    let wrong = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near["codes"].as_array().unwrap().contains(&json!(c)))
        .unwrap();
    let response = page_form(
        &server,
        &alice,
        "/account/totp/confirm",
        &[("code", &wrong)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&response, "location"),
        "/account/totp/confirm?error=code"
    );
    let page = page_text(&server, &alice, "/account/totp/confirm?error=code").await;
    assert!(
        page.contains("role=\"alert\"") && page.contains("not correct"),
        "{page}"
    );
    assert!(!page.contains("<svg"), "the key is not shown again");
    assert_eq!(factors_of(&server, &alice).await["totp"], "pending");

    // The right code: the ten recovery codes, once, never cached.
    let code = crate::factors::code_at(&uri, now).await;
    let response = page_form(&server, &alice, "/account/totp/confirm", &[("code", &code)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let first = codes_on(&response.text().await.unwrap());
    assert_eq!(first.len(), 10, "{first:?}");
    let factors = factors_of(&server, &alice).await;
    assert_eq!(factors["totp"], "confirmed");
    assert_eq!(factors["recovery_codes_left"], 10);
    // Nothing left to confirm: the confirmation form sends the browser to the account page,
    // which shows the factor on.
    let response = alice
        .authorize(server.client.get(server.url("/account/totp/confirm")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "location"), "/account");
    let page = page_text(&server, &alice, "/account").await;
    assert!(page.contains("10 recovery codes left"), "{page}");
    assert!(page.contains("action=\"/account/totp/remove\""));

    // New recovery codes replace the old ones.
    let response = page_form(&server, &alice, "/account/recovery-codes", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let second = codes_on(&response.text().await.unwrap());
    assert_eq!(second.len(), 10);
    assert!(first.iter().all(|c| !second.contains(c)));

    // Removing it: the password alone logs in again.
    let response = page_form(&server, &alice, "/account/totp/remove", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/account?done=totp_removed");
    assert_eq!(factors_of(&server, &alice).await["totp"], "none");
    assert_eq!(
        server.login("alice", PASSWORD, "cookie").await.status(),
        200
    );
}

#[tokio::test]
async fn factor_forms_refuse_cross_site_posts_and_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let bearer = server.session("alice", Delivery::Bearer).await;
    let enrolled = crate::factors::enrol(&server, &bearer).await;
    server.advance(30);
    let code = crate::factors::code_at(&enrolled.uri, server.service.now()).await;
    let fields = [
        ("code", code.as_str()),
        ("password", PASSWORD),
        ("rd", "/x"),
        ("aal", "2"),
    ];
    for path in [
        "/account/totp",
        "/account/totp/confirm",
        "/account/totp/remove",
        "/account/recovery-codes",
        "/account/step-up",
    ] {
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ] {
            let response = alice
                .authorize(server.client.post(server.url(path)))
                .header("accept", HTML)
                .header(name, value)
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {name}");
            assert!(raw_set_cookie(&response).is_none(), "{path}");
            assert_eq!(problem_code(response).await, "cross_site_request");
        }
    }
    // Nothing changed: the factor and its codes are there, the session was not stepped up or
    // ended, and the code was not spent.
    let factors = factors_of(&server, &alice).await;
    assert_eq!(factors["totp"], "confirmed");
    assert_eq!(factors["recovery_codes_left"], 10);
    let info: serde_json::Value = server
        .send(reqwest::Method::GET, "/v1/session", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["amr"], json!(["pwd"]), "{info}");
    assert_eq!(info["session_id"], alice.session_id.as_str());
    let response = page_form(&server, &alice, "/account/step-up", &[("code", &code)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        raw_set_cookie(&response).is_some(),
        "the same code still works here"
    );
}

#[tokio::test]
async fn the_step_up_page_asks_only_for_what_is_missing() {
    let server = TestServer::start().await;
    // A session opened with the password alone, before alice set up her app.
    let alice = server.session("alice", Delivery::Cookie).await;
    let bearer = server.session("alice", Delivery::Bearer).await;
    let enrolled = crate::factors::enrol(&server, &bearer).await;
    let fields_of = |page: &str| {
        let field = regex::Regex::new(r#"<input id="([a-z_]+)""#).unwrap();
        field
            .captures_iter(page)
            .map(|c| c[1].to_owned())
            .collect::<Vec<_>>()
    };

    // Recent enough, a second factor missing: the code alone.
    let page = page_text(
        &server,
        &alice,
        "/login?rd=%2Fbilling%2Fx&aal=2&max_age=600",
    )
    .await;
    assert_eq!(fields_of(&page), ["code"], "{page}");
    assert!(page.contains("action=\"/account/step-up\""));
    assert!(page.contains("name=\"rd\" value=\"/billing/x\""), "{page}");
    // Only a recent log-in asked, and it is: straight on to rd.
    let response = alice
        .authorize(
            server
                .client
                .get(server.url("/login?rd=%2Fbilling%2Fx&max_age=600")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/billing/x");

    // Too old: the password, and the code with it when a second factor is asked.
    server.advance(601);
    let page = page_text(
        &server,
        &alice,
        "/login?rd=%2Fbilling%2Fx&aal=2&max_age=600",
    )
    .await;
    assert_eq!(fields_of(&page), ["password", "code"], "{page}");
    let page = page_text(&server, &alice, "/login?rd=%2Fbilling%2Fx&max_age=600").await;
    assert_eq!(fields_of(&page), ["password"], "{page}");
    assert!(page.contains("within the last 10 minutes"), "{page}");

    // Without a session, or with unusable values: the log-in form.
    for (who, path) in [
        (None, "/login?rd=%2Fbilling%2Fx&aal=2&max_age=600"),
        (Some(&alice), "/login?rd=%2Fbilling%2Fx&aal=3"),
        (Some(&alice), "/login?rd=%2Fbilling%2Fx"),
    ] {
        let mut request = server.client.get(server.url(path));
        if let Some(who) = who {
            request = who.authorize(request);
        }
        let page = request.send().await.unwrap().text().await.unwrap();
        assert_eq!(fields_of(&page), ["username", "password", "code"], "{path}");
    }

    // An account without a second factor is told so, and where to set one up.
    let admin = server.session("admin", Delivery::Cookie).await;
    let page = page_text(&server, &admin, "/login?rd=%2Fbilling%2Fx&aal=2").await;
    assert!(page.contains("your account has none yet"), "{page}");
    assert!(page.contains("href=\"/account\""), "{page}");
    assert!(fields_of(&page).is_empty(), "{page}");

    // A wrong password: back to the page with the error; the session is as it was.
    let step_up = [("rd", "/billing/x"), ("aal", "2"), ("max_age", "600")];
    let code = crate::factors::code_at(&enrolled.uri, server.service.now()).await;
    let mut fields = step_up.to_vec();
    fields.extend([("password", "not the password"), ("code", code.as_str())]);
    let response = page_form(&server, &alice, "/account/step-up", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(raw_set_cookie(&response).is_none());
    let back = header(&response, "location").to_owned();
    assert_eq!(
        back,
        "/login?rd=%2Fbilling%2Fx&aal=2&max_age=600&error=password"
    );
    assert_eq!(session_status(&server, &alice).await, StatusCode::OK);
    let page = page_text(&server, &alice, &back).await;
    assert!(page.contains("role=\"alert\"") && page.contains("password is not correct"));
    assert_eq!(fields_of(&page), ["password", "code"]);

    // A wrong code: the same, with its own message.
    let mut fields = step_up.to_vec();
    fields.extend([("password", PASSWORD), ("code", "not-a-code")]);
    let response = page_form(&server, &alice, "/account/step-up", &fields).await;
    assert_eq!(
        header(&response, "location"),
        "/login?rd=%2Fbilling%2Fx&aal=2&max_age=600&error=code"
    );
    assert_eq!(session_status(&server, &alice).await, StatusCode::OK);

    // Both right: a new session with both factors, back to rd; the old one is over.
    let mut fields = step_up.to_vec();
    fields.extend([("password", PASSWORD), ("code", code.as_str())]);
    let response = page_form(&server, &alice, "/account/step-up", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/billing/x");
    let stepped = ClientSession {
        delivery: Delivery::Cookie,
        access: set_cookie(&response).expect("the new session's cookie"),
        refresh: None,
        session_id: String::new(),
    };
    assert_eq!(
        session_status(&server, &alice).await,
        StatusCode::UNAUTHORIZED
    );
    let info: serde_json::Value = server
        .send(reqwest::Method::GET, "/v1/session", &stepped)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["amr"], json!(["pwd", "otp"]), "{info}");
    // It meets the request now: the page goes straight on.
    let response = stepped
        .authorize(
            server
                .client
                .get(server.url("/login?rd=%2Fbilling%2Fx&aal=2&max_age=600")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "location"), "/billing/x");
}

#[tokio::test]
async fn factor_changes_after_an_old_log_in_ask_for_the_password_first() {
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    server.advance(601);
    for path in [
        "/account/totp",
        "/account/recovery-codes",
        "/account/totp/remove",
    ] {
        let response = page_form(&server, &alice, path, &[]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            header(&response, "location"),
            "/login?rd=%2Faccount%3Fdone%3Dreauthenticated&max_age=600",
            "{path}"
        );
    }
    assert_eq!(factors_of(&server, &alice).await["totp"], "none");
    let page = page_text(
        &server,
        &alice,
        "/login?rd=%2Faccount%3Fdone%3Dreauthenticated&max_age=600",
    )
    .await;
    assert!(
        page.contains("id=\"password\"") && !page.contains("id=\"code\""),
        "{page}"
    );
    let response = page_form(
        &server,
        &alice,
        "/account/step-up",
        &[
            ("rd", "/account?done=reauthenticated"),
            ("max_age", "600"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(
        header(&response, "location"),
        "/account?done=reauthenticated"
    );
    let fresh = ClientSession {
        delivery: Delivery::Cookie,
        access: set_cookie(&response).expect("the new session's cookie"),
        refresh: None,
        session_id: String::new(),
    };
    let page = page_text(&server, &fresh, "/account?done=reauthenticated").await;
    assert!(page.contains("role=\"status\""), "{page}");
    let response = page_form(&server, &fresh, "/account/totp", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Issue 16: "log out all other sessions" from a sign-in older than `recent_authentication`
/// asks for the password first, and ends nothing until then.
#[tokio::test]
async fn logging_out_other_sessions_from_an_old_sign_in_asks_for_the_password_first() {
    let server = TestServer::start().await;
    let laptop = server.session("alice", Delivery::Cookie).await;
    let phone = server.session("alice", Delivery::Cookie).await;
    server.advance(601);
    let response = laptop
        .authorize(
            server
                .client
                .post(server.url("/account/sessions/revoke-others")),
        )
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("/login?rd=%2Faccount"), "{location}");
    assert!(location.ends_with("max_age=600"), "{location}");
    assert_eq!(
        server
            .send(reqwest::Method::GET, "/v1/session", &phone)
            .await
            .status(),
        StatusCode::OK,
        "nothing was revoked"
    );
    // The page it is sent to asks for the password.
    let page = laptop
        .authorize(server.client.get(server.url(location)))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"password\""), "{page}");
}
