//! What must be refused, and how: every answer a clear 4xx problem, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_server::config::TokenFormat;

use crate::support::*;

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let server = TestServer::start().await;
    let wrong = server.login("alice", "not the password", "bearer").await;
    let unknown = server.login("mallory", "not the password", "bearer").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), wrong.status());
    let headers = |r: &reqwest::Response| {
        let mut h: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&wrong), headers(&unknown));
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["code"], "invalid_credentials");
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    for format in [TokenFormat::Opaque, TokenFormat::Jwt] {
        let server = TestServer::start_with(|c| {
            c.cookie_format = format;
            c.bearer_format = format;
        })
        .await;
        let session = server.session("alice", Delivery::Bearer).await;
        let mut tampered = session.clone();
        // Change one character in the middle of the token (stays in the base64url alphabet).
        let mut chars: Vec<char> = session.access.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        tampered.access = chars.into_iter().collect();
        let response = server.send(Method::GET, "/v1/session", &tampered).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{format:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(problem_code(response).await, "invalid_token");
    }
}

#[tokio::test]
async fn garbage_oversized_and_misplaced_tokens_are_refused() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    let cases = [
        "".to_owned(),
        "not-a-token".to_owned(),
        "tsr_short".to_owned(),
        "a.b.c".to_owned(),
        "x".repeat(9 * 1024),
        session.refresh.clone().unwrap(), // a refresh token is not an access token
    ];
    for token in cases {
        let response = server
            .client
            .get(server.url("/v1/verify"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{:.40}", token);
        assert_eq!(problem_code(response).await, "invalid_token");
    }
    // An access token is not a refresh token.
    let response = server
        .client
        .post(server.url("/v1/refresh"))
        .json(&json!({ "refresh_token": session.access }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Tokens in the URL are never read.
    let response = server
        .client
        .get(server.url(&format!("/v1/verify?access_token={}", session.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(problem_code(response).await, "unauthenticated");
}

#[tokio::test]
async fn a_token_from_another_deployment_is_refused() {
    let ours = TestServer::start().await;
    let theirs = TestServer::start().await;
    let session = theirs.session("alice", Delivery::Bearer).await;
    let response = ours.send(Method::GET, "/v1/verify", &session).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_token");
}

#[tokio::test]
async fn bodies_that_are_too_large_malformed_or_of_the_wrong_type_are_refused() {
    let server = TestServer::start().await;
    let url = server.url("/v1/login");
    let big = json!({ "username": "alice", "password": "x".repeat(20 * 1024) });
    let response = server.client.post(&url).json(&big).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_code(response).await, "payload_too_large");

    let response = server
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"username\": \"alice\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(response).await, "bad_request");

    let response = server
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    problem_code(response).await;

    let long_name = json!({ "username": "a".repeat(257), "password": PASSWORD });
    let response = server
        .client
        .post(&url)
        .json(&long_name)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let long_password = json!({ "username": "alice", "password": "p".repeat(1025) });
    let response = server
        .client
        .post(&url)
        .json(&long_password)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = server
        .client
        .post(server.url("/v1/refresh"))
        .json(&json!({ "refresh": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn form_encoded_login_is_accepted() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/v1/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(set_cookie(&response).unwrap().starts_with("tsr_"));
}

#[tokio::test]
async fn state_changing_routes_refuse_get_and_unknown_routes_are_404() {
    let server = TestServer::start().await;
    for path in ["/v1/login", "/v1/refresh", "/v1/logout", "/v1/password"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(problem_code(response).await, "method_not_allowed");
    }
    let response = server
        .client
        .get(server.url("/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(response).await, "not_found");
}

#[tokio::test]
async fn requests_without_a_token_get_401_with_a_challenge() {
    let server = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/v1/session"),
        (Method::GET, "/v1/sessions"),
        (Method::GET, "/v1/verify"),
        (Method::POST, "/v1/logout"),
        (Method::DELETE, "/v1/sessions?scope=others"),
    ] {
        let response = server
            .client
            .request(method, server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(response.headers().contains_key("www-authenticate"));
        assert_eq!(problem_code(response).await, "unauthenticated");
    }
}

/// True while `session` still authenticates.
async fn alive(server: &TestServer, session: &ClientSession) -> bool {
    let status = server
        .send(Method::GET, "/v1/session", session)
        .await
        .status();
    assert!(
        matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED),
        "{status}"
    );
    status == StatusCode::OK
}

#[tokio::test]
async fn cross_site_cookie_requests_are_refused_but_bearer_and_same_origin_pass() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Cookie).await;
    let own_origin = server.base.clone();
    let cases: [(&str, &str, StatusCode); 5] = [
        ("sec-fetch-site", "cross-site", StatusCode::FORBIDDEN),
        ("sec-fetch-site", "same-site", StatusCode::FORBIDDEN),
        ("origin", "https://evil.example", StatusCode::FORBIDDEN),
        ("origin", "null", StatusCode::FORBIDDEN),
        ("sec-fetch-site", "same-origin", StatusCode::NO_CONTENT),
    ];
    for (header, value, status) in cases {
        let victim = server.session("alice", Delivery::Cookie).await;
        let response = victim
            .authorize(
                server
                    .client
                    .delete(server.url(&format!("/v1/sessions/{}", session.session_id))),
            )
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{header}: {value}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(problem_code(response).await, "cross_site_request");
            // Refused means nothing happened: the target session lives on.
            assert!(alive(&server, &session).await, "{header}: {value}");
        }
    }
    assert!(
        !alive(&server, &session).await,
        "the same-origin revoke took effect"
    );
    let victim = server.session("alice", Delivery::Cookie).await;
    let response = victim
        .authorize(server.client.post(server.url("/v1/logout")))
        .header("origin", own_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "same origin passes"
    );
    assert!(!alive(&server, &victim).await);

    // Login CSRF: a cross-site login form post is refused and sets no cookie.
    let response = server
        .client
        .post(server.url("/v1/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(raw_set_cookie(&response), None);
    assert_eq!(problem_code(response).await, "cross_site_request");
    // So is every other step of a login that sets a cookie, before any of it is read.
    for path in [
        "/v1/login/second-factor",
        "/v1/login/passkey/options",
        "/v1/login/passkey",
    ] {
        let response = server
            .client
            .post(server.url(path))
            .header("sec-fetch-site", "cross-site")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(raw_set_cookie(&response), None, "{path}");
        assert_eq!(problem_code(response).await, "cross_site_request", "{path}");
    }

    // Bearer requests carry no ambient authority: exempt.
    let bearer = server.session("alice", Delivery::Bearer).await;
    let response = bearer
        .authorize(server.client.post(server.url("/v1/logout")))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!alive(&server, &bearer).await);
}

/// Issue 11 defect 3: an `Authorization` header that is not a bearer token leaves the cookie
/// in charge, so it must not exempt the request from the cross-site check.
#[tokio::test]
async fn a_non_bearer_authorization_header_does_not_exempt_a_cookie_request() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Cookie).await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let keys = || async {
        let response = server.send(Method::GET, "/v1/admin/keys", &admin).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["keys"].as_array().unwrap().len()
    };
    let keys_before = keys().await;
    for authorization in [
        "Basic YWRtaW46eA==",
        "Digest x",
        "Token abc",
        "Negotiate YWJj",
    ] {
        for (method, path) in [
            (Method::POST, "/v1/admin/keys/rotate"),
            (Method::DELETE, "/v1/admin/users/alice/sessions"),
            (Method::POST, "/account/logout"),
        ] {
            let response = admin
                .authorize(server.client.request(method.clone(), server.url(path)))
                .header("authorization", authorization)
                .header("origin", "https://evil.example")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} with Authorization: {authorization}"
            );
            assert_eq!(problem_code(response).await, "cross_site_request");
        }
        assert_eq!(keys().await, keys_before, "no key was rotated");
        assert!(
            alive(&server, &alice).await,
            "alice's sessions were not revoked"
        );
        assert!(alive(&server, &admin).await, "the admin was not logged out");
    }

    // Control: the same requests from our own origin go through.
    let response = admin
        .authorize(server.client.post(server.url("/v1/admin/keys/rotate")))
        .header("authorization", "Basic YWRtaW46eA==")
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(keys().await, keys_before + 1);

    // A real bearer token is exempt even next to the cookie: it is what authenticates, and a
    // browser cannot attach it to a forged request.
    let bearer = server.session("admin", Delivery::Bearer).await;
    let response = bearer
        .authorize(
            admin.authorize(
                server
                    .client
                    .delete(server.url("/v1/admin/users/alice/sessions")),
            ),
        )
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!alive(&server, &alice).await);
}

/// Issue 11 defect 3: origins compare as scheme, host and port; `http://host` is not the
/// HTTPS server at `host`.
#[tokio::test]
async fn origins_must_match_in_scheme_host_and_port() {
    // A plain-HTTP server on loopback: its origin is http://127.0.0.1:PORT.
    let server = TestServer::start().await;
    let port = server.addr.port();
    let foreign = [
        ("origin", format!("https://127.0.0.1:{port}")),
        (
            "origin",
            format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        ),
        ("origin", format!("http://127.0.0.1.evil.example:{port}")),
        ("origin", "file://".to_owned()),
        ("referer", format!("https://127.0.0.1:{port}/account")),
        ("referer", "not a url".to_owned()),
    ];
    let session = server.session("alice", Delivery::Cookie).await;
    for (header, value) in &foreign {
        let response = session
            .authorize(server.client.post(server.url("/v1/logout")))
            .header(*header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{header}: {value}"
        );
        assert!(alive(&server, &session).await, "{header}: {value}");
    }
    let response = session
        .authorize(server.client.post(server.url("/v1/logout")))
        .header("referer", format!("http://127.0.0.1:{port}/account?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "our own referer");

    // Behind a TLS-terminating proxy the server is https://app.example.com: the http origin
    // of the same host is another origin.
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for (proto, origin, expected) in [
        (
            Some("https"),
            "http://app.example.com",
            StatusCode::FORBIDDEN,
        ),
        (None, "http://app.example.com", StatusCode::FORBIDDEN),
        (
            Some("http"),
            "https://app.example.com",
            StatusCode::FORBIDDEN,
        ),
        (
            Some("gopher"),
            "https://app.example.com",
            StatusCode::FORBIDDEN,
        ),
        (
            Some("https"),
            "https://app.example.com:8443",
            StatusCode::FORBIDDEN,
        ),
        (
            Some("https"),
            "https://APP.example.com:443",
            StatusCode::NO_CONTENT,
        ),
        (None, "https://app.example.com", StatusCode::NO_CONTENT),
        (
            Some("http"),
            "http://app.example.com",
            StatusCode::NO_CONTENT,
        ),
    ] {
        let session = server.session("alice", Delivery::Cookie).await;
        let mut request = session
            .authorize(server.client.post(server.url("/v1/logout")))
            .header("origin", origin)
            .header("x-forwarded-host", "app.example.com");
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{proto:?} {origin}");
        assert_eq!(
            alive(&server, &session).await,
            expected == StatusCode::FORBIDDEN,
            "{proto:?} {origin}"
        );
    }
}

/// Issue 11 defect 7: an `X-Forwarded-For` hop that does not parse as a bare address is read
/// (`ip:port`, `[v6]:port`) or stops the walk; the client-chosen hop left of it never becomes
/// the session's address.
#[tokio::test]
async fn unreadable_forwarded_for_hops_never_promote_a_client_chosen_address() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for (forwarded_for, expected) in [
        ("198.51.100.1, 203.0.113.5:4711", json!("203.0.113.5")),
        ("198.51.100.1, [2001:db8::5]:443", json!("2001:db8::5")),
        ("198.51.100.1, [2001:db8::6]", json!("2001:db8::6")),
        ("198.51.100.1, unknown", Value::Null),
        ("198.51.100.1, _hidden", Value::Null),
        ("198.51.100.1,", Value::Null),
        ("198.51.100.1, 203.0.113.9:99999", Value::Null),
        // Controls: a trusted proxy hop is skipped; an unreadable hop further left is never
        // reached.
        ("198.51.100.1, 127.0.0.1", json!("198.51.100.1")),
        ("unknown, 203.0.113.7", json!("203.0.113.7")),
    ] {
        let response = server
            .client
            .post(server.url("/v1/login"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "username": "alice", "password": PASSWORD, "delivery": "bearer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{forwarded_for}");
        let session = ClientSession::from_login(Delivery::Bearer, response).await;
        let response = server.send(Method::GET, "/v1/sessions", &session).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let sessions = body["sessions"].as_array().unwrap();
        let current = sessions
            .iter()
            .find(|s| s["id"] == session.session_id.as_str())
            .unwrap();
        assert_eq!(current["ip"], expected, "X-Forwarded-For: {forwarded_for}");
    }
}

#[tokio::test]
async fn disabled_user_cannot_log_in_and_loses_sessions() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    let mut alice = server.service.user("alice").await.unwrap();
    alice.disabled = true;
    server.service.store().update_user(&alice).await.unwrap();
    let response = server.send(Method::GET, "/v1/verify", &session).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let disabled = server.login("alice", PASSWORD, "bearer").await;
    assert_eq!(disabled.status(), StatusCode::UNAUTHORIZED);
    let body: Value = disabled.json().await.unwrap();
    let unknown: Value = server
        .login("nobody", PASSWORD, "bearer")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, unknown);
}

#[tokio::test]
async fn revoking_an_unknown_or_malformed_session_id_is_404() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    for id in ["nope", &"x".repeat(300), "..%2F..%2Fetc"] {
        let response = server
            .send(Method::DELETE, &format!("/v1/sessions/{id}"), &session)
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id:.20}");
    }
    let response = server.send(Method::DELETE, "/v1/sessions", &session).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "scope=others is required"
    );
}
