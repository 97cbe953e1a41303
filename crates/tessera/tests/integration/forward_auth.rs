//! `/v1/verify` as a proxy calls it: access rules on the forwarded request, the login redirect
//! for browsers, and distrust of forwarding headers from anyone but a trusted proxy.

use reqwest::{RequestBuilder, StatusCode};
use tessera_server::access::{AccessRule, AccessRules, Policy};

use crate::support::*;

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

fn rules() -> Vec<AccessRule> {
    vec![
        AccessRule {
            hosts: vec!["app.example.com".into()],
            paths: vec!["/public".into()],
            policy: Policy::Bypass,
            ..AccessRule::default()
        },
        AccessRule {
            paths: vec!["/admin".into()],
            roles: vec!["admin".into()],
            ..AccessRule::default()
        },
        AccessRule {
            hosts: vec!["*.example.com".into()],
            methods: vec!["DELETE".into()],
            permissions: vec!["docs:delete".into()],
            ..AccessRule::default()
        },
        AccessRule {
            hosts: vec!["internal.example.com".into()],
            policy: Policy::Deny,
            ..AccessRule::default()
        },
        AccessRule {
            hosts: vec!["*.example.com".into()],
            policy: Policy::Authenticated,
            ..AccessRule::default()
        },
    ]
}

async fn proxied() -> TestServer {
    TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_url = Some("https://auth.example.com/login".into());
        c.access_rules = AccessRules::new(rules()).unwrap();
    })
    .await
}

/// A verify request naming the protected request as Caddy/Traefik do.
fn ask(server: &TestServer, method: &str, host: &str, uri: &str) -> RequestBuilder {
    ask_at(server, "/v1/verify", method, host, uri)
}

fn ask_at(
    server: &TestServer,
    verify: &str,
    method: &str,
    host: &str,
    uri: &str,
) -> RequestBuilder {
    server
        .client
        .get(server.url(verify))
        .header("x-forwarded-method", method)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", uri)
}

#[tokio::test]
async fn access_rules_decide_in_order_and_deny_by_default() {
    let server = proxied().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let status = |request: RequestBuilder| async move { request.send().await.unwrap().status() };
    use StatusCode as S;
    let cases: [(&str, &str, &str, Option<&ClientSession>, StatusCode); 14] = [
        ("GET", "app.example.com", "/public/a.css", None, S::OK),
        ("GET", "app.example.com", "/", None, S::UNAUTHORIZED),
        ("GET", "app.example.com", "/", Some(&alice), S::OK),
        (
            "GET",
            "app.example.com",
            "/admin/users",
            Some(&alice),
            S::FORBIDDEN,
        ),
        (
            "GET",
            "app.example.com",
            "/admin/users",
            Some(&admin),
            S::OK,
        ),
        (
            "GET",
            "app.example.com",
            "/public/../admin",
            Some(&alice),
            S::FORBIDDEN,
        ),
        (
            "GET",
            "app.example.com",
            "/public/%2e%2e/admin",
            None,
            S::FORBIDDEN,
        ),
        (
            "GET",
            "app.example.com",
            "/public%2F..%2Fadmin",
            None,
            S::FORBIDDEN,
        ),
        (
            "DELETE",
            "docs.example.com",
            "/d/1",
            Some(&alice),
            S::FORBIDDEN,
        ),
        ("GET", "docs.example.com", "/d/1", Some(&alice), S::OK),
        (
            "GET",
            "internal.example.com",
            "/",
            Some(&admin),
            S::FORBIDDEN,
        ),
        ("GET", "internal.example.com", "/", None, S::FORBIDDEN),
        ("GET", "other.test", "/", Some(&admin), S::FORBIDDEN),
        ("GET", "other.test", "/public/x", None, S::FORBIDDEN),
    ];
    for (method, host, uri, session, expected) in cases {
        let mut request = ask(&server, method, host, uri);
        if let Some(session) = session {
            request = session.authorize(request);
        }
        assert_eq!(
            status(request).await,
            expected,
            "{method} {host}{uri} as {:?}",
            session.map(|s| &s.session_id)
        );
    }
    // The query's own requirement still applies on top of the rules.
    let response = alice
        .authorize(ask_at(
            &server,
            "/v1/verify?role=admin",
            "GET",
            "app.example.com",
            "/",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(response).await, "forbidden");
    // nginx names the path in X-Original-URI and keeps the method.
    let response = alice
        .authorize(
            server
                .client
                .delete(server.url("/v1/verify"))
                .header("x-forwarded-host", "docs.example.com")
                .header("x-original-uri", "/d/1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// The attack found through the documented nginx config: nginx names the target in
/// `X-Original-URI` and passed the client's own `X-Forwarded-Uri` on, which tessera preferred.
/// Two sources naming different targets are refused now, whichever is right.
#[tokio::test]
async fn target_headers_that_disagree_or_repeat_are_refused() {
    let server = proxied().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let admin = server.session("admin", Delivery::Cookie).await;
    let nginx = |method: reqwest::Method, spoofed: &str, real: &str| {
        server
            .client
            .request(method, server.url("/v1/verify"))
            .header("x-forwarded-host", "app.example.com")
            .header("x-forwarded-uri", spoofed)
            .header("x-original-uri", real)
    };
    use reqwest::Method as M;
    for (method, spoofed, real, session) in [
        (M::GET, "/public/x", "/admin/secret", None),
        (M::DELETE, "/public/x", "/admin/secret", None),
        (M::GET, "/public/x", "/private", None),
        (M::GET, "/home", "/admin/secret", Some(&alice)),
        (M::DELETE, "/home", "/admin/secret", Some(&alice)),
        // Refused even when the real target would be allowed: nothing is settled by preference.
        (M::GET, "/admin/x", "/public/x", Some(&admin)),
    ] {
        let mut request = nginx(method.clone(), spoofed, real);
        if let Some(session) = session {
            request = session.authorize(request);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{method} {real} claiming {spoofed}"
        );
        assert_eq!(problem_code(response).await, "forbidden");
    }
    // The same value in both is one target, decided as usual.
    let status = |request: RequestBuilder| async move { request.send().await.unwrap().status() };
    assert_eq!(
        status(nginx(M::GET, "/public/x", "/public/x")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(alice.authorize(nginx(M::GET, "/admin/x", "/admin/x"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(admin.authorize(nginx(M::GET, "/admin/x", "/admin/x"))).await,
        StatusCode::OK
    );

    // A header naming the target, sent twice (the proxy appended its own to the client's).
    for (name, first, second) in [
        ("x-forwarded-uri", "/admin/x", "/public/x"),
        ("x-forwarded-uri", "/public/x", "/public/x"),
        ("x-original-uri", "/public/x", "/admin/x"),
        (
            "x-forwarded-host",
            "app.example.com",
            "internal.example.com",
        ),
        ("x-forwarded-method", "GET", "DELETE"),
        ("x-forwarded-proto", "https", "http"),
    ] {
        let request = ask(&server, "GET", "app.example.com", "/public/x");
        let mut request = request.build().unwrap();
        let headers = request.headers_mut();
        headers.remove(name);
        headers.append(name, first.parse().unwrap());
        headers.append(name, second.parse().unwrap());
        let response = server.client.execute(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name} twice");
    }
    // A host that is not one plain host, and headers back ends route on instead of the path.
    for host in [
        "app.example.com, internal.example.com",
        "evil.test@app.example.com",
        "app.example.com/public",
    ] {
        assert_eq!(
            status(ask(&server, "GET", host, "/public/x")).await,
            StatusCode::FORBIDDEN,
            "{host}"
        );
    }
    for name in ["x-original-url", "x-rewrite-url"] {
        let request = admin.authorize(ask(&server, "GET", "app.example.com", "/public/x"));
        assert_eq!(
            status(request.header(name, "/admin/x")).await,
            StatusCode::FORBIDDEN,
            "{name}"
        );
    }
}

/// Paths that Tomcat, Jetty, Spring, Express or nginx read differently from each other are
/// refused, and the rules hold for every method the back end may be told to act on.
#[tokio::test]
async fn ambiguous_paths_and_method_overrides_never_widen_access() {
    let server = proxied().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let status = |request: RequestBuilder| async move { request.send().await.unwrap().status() };
    for (uri, session) in [
        ("/public/..;/admin/x", None),
        ("/public/%2e%2e;/admin", None),
        ("/public/..%3B/admin", None),
        ("/public/..%3b/admin/x", None),
        ("/public/x#/../../admin", None),
        ("/public/%252e%252e/admin", None),
        ("/public/%c0%ae%c0%ae/admin", None),
        ("/admin;x=1", Some(&alice)),
        ("/admin;/x", Some(&alice)),
        ("/ADMIN/x", Some(&alice)),
        ("/public/../admin", Some(&alice)),
    ] {
        let mut request = ask(&server, "GET", "app.example.com", uri);
        if let Some(session) = session {
            request = session.authorize(request);
        }
        assert_eq!(status(request).await, StatusCode::FORBIDDEN, "{uri}");
    }
    // Not a bypass when a back end could read the path as another than /public.
    assert_eq!(
        status(ask(&server, "GET", "app.example.com", "/pub%6cic/x")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(ask(&server, "GET", "app.example.com", "/public/x")).await,
        StatusCode::OK
    );
    // DELETE on docs.example.com needs docs:delete, however the client asks for it.
    assert_eq!(
        status(alice.authorize(ask(&server, "POST", "docs.example.com", "/d/1"))).await,
        StatusCode::OK
    );
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "delete"),
        ("x-method-override", "PUT, DELETE"),
    ] {
        let request = alice.authorize(ask(&server, "POST", "docs.example.com", "/d/1"));
        assert_eq!(
            status(request.header(name, value)).await,
            StatusCode::FORBIDDEN,
            "{name}: {value}"
        );
    }
    let request = alice.authorize(ask(
        &server,
        "POST",
        "docs.example.com",
        "/d/1?_method=DELETE",
    ));
    assert_eq!(status(request).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn identity_headers_are_set_on_success_and_empty_on_bypass() {
    let server = proxied().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let response = alice
        .authorize(ask(&server, "GET", "app.example.com", "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-tessera-user"], "alice");
    assert_eq!(response.headers()["x-tessera-roles"], "editor");
    assert_eq!(
        response.headers()["x-tessera-session"],
        alice.session_id.as_str()
    );
    // A bypass answers without looking at the session at all, and names nobody.
    let response = alice
        .authorize(ask(&server, "GET", "app.example.com", "/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for name in [
        "x-tessera-user",
        "x-tessera-user-id",
        "x-tessera-roles",
        "x-tessera-session",
    ] {
        assert_eq!(response.headers()[name], "", "{name}");
    }
}

#[tokio::test]
async fn browsers_without_a_session_are_sent_to_the_login_page() {
    let server = proxied().await;
    let rd = "https%3A%2F%2Fapp.example.com%2Fdocs%3Fa%3D1%26b%3D2";
    // Caddy / Traefik relay a redirect.
    let response = ask(&server, "GET", "app.example.com", "/docs?a=1&b=2")
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        format!("https://auth.example.com/login?rd={rd}").as_str()
    );
    // nginx cannot: a 401 carrying the same Location for its error_page.
    let response = server
        .client
        .get(server.url("/v1/verify"))
        .header("accept", HTML)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .header("x-original-uri", "/docs?a=1&b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["location"],
        format!("https://auth.example.com/login?rd={rd}").as_str()
    );
    // API clients, non-GET requests and a broken session's store errors get the plain 401.
    for (accept, method) in [("application/json", "GET"), ("*/*", "GET"), (HTML, "POST")] {
        let response = ask(&server, method, "app.example.com", "/docs")
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{accept} {method}"
        );
        assert!(response.headers().get("location").is_none());
        assert_eq!(problem_code(response).await, "unauthenticated");
    }
    // Without login_url there is no redirect.
    let plain = TestServer::start().await;
    let response = plain
        .client
        .get(plain.url("/v1/verify"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // behind_proxy off, or the peer not among trusted_proxies: the rules cannot be matched,
    // so the request is refused rather than judged on headers anyone could send.
    for tweak in [
        (|c: &mut tessera_server::Config| c.behind_proxy = false)
            as fn(&mut tessera_server::Config),
        |c| c.trusted_proxies = vec![],
    ] {
        let server = TestServer::start_with(|c| {
            c.behind_proxy = true;
            c.access_rules = AccessRules::new(rules()).unwrap();
            tweak(c);
        })
        .await;
        let response = ask(&server, "GET", "app.example.com", "/public/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem_code(response).await, "forbidden");
    }
    // Without rules, verify keeps answering on the session alone (as before rules existed).
    let server = TestServer::start().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let response = server
        .send(reqwest::Method::GET, "/v1/verify", &alice)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn rules_come_from_the_config_file() {
    let dir = TempDir::new();
    let file = dir.0.join("tessera.toml");
    std::fs::write(
        &file,
        "behind_proxy = true\n\
         [[access_rules]]\nhosts = [\"*.example.com\"]\npaths = [\"/admin\"]\nroles = [\"admin\"]\n\
         [[access_rules]]\npolicy = \"bypass\"\n",
    )
    .unwrap();
    let config = tessera_server::Config::load(Some(&file), []).unwrap();
    assert_eq!(config.access_rules.len(), 2);
    assert_eq!(config.access_rules[0].roles, vec!["admin"]);
    assert_eq!(config.access_rules[1].policy, Policy::Bypass);
    // A broken rule is a startup error naming it.
    std::fs::write(
        &file,
        "[[access_rules]]\npolicy = \"bypass\"\n[[access_rules]]\npath_regex = \"(\"\n",
    )
    .unwrap();
    let error = tessera_server::Config::load(Some(&file), [])
        .unwrap_err()
        .to_string();
    assert!(error.contains("access rule 2"), "{error}");
    std::fs::write(&file, "[[access_rules]]\npolicy = \"allow\"\n").unwrap();
    assert!(tessera_server::Config::load(Some(&file), []).is_err());
}

/// nginx keeps the protected request's method, so verify answers every method a client sends
/// (the API document lists the standard ones), but `TRACE`, which echoes the request back and which no proxy
/// forwards for a decision, is 405 with an `Allow` naming the documented methods, even with a
/// valid session.
#[tokio::test]
async fn verify_answers_the_documented_methods_and_refuses_trace() {
    let server = proxied().await;
    let alice = server.session("alice", Delivery::Cookie).await;
    let documented = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let verify = |method: &str| {
        let request = server
            .client
            .request(method.parse().unwrap(), server.url("/v1/verify"))
            .header("x-forwarded-host", "app.example.com")
            .header("x-original-uri", "/public/x");
        alice.authorize(request).send()
    };
    for method in documented {
        assert_eq!(
            verify(method).await.unwrap().status(),
            StatusCode::OK,
            "{method}"
        );
    }
    // Methods the document cannot list, such as WebDAV's, still reach verify through nginx
    // (which sends X-Original-URI); asked directly, they are 405 like on any route.
    let status = verify("PROPFIND").await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    let direct = server
        .client
        .request("PROPFIND".parse().unwrap(), server.url("/v1/verify"));
    let response = alice.authorize(direct).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = verify("TRACE").await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert_eq!(problem_code(response).await, "method_not_allowed");
    let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
    for method in documented {
        assert!(allowed.contains(&method), "{method} in {allow}");
    }
    assert!(!allowed.contains(&"TRACE"), "{allow}");
}

/// The runner answers `/v1/verify`, `GET /v1/session` and `GET /healthz` without routing them
/// (issue 14): the same service behind its embeddable router, which routes every request,
/// must answer the same requests the same way.
#[tokio::test]
async fn the_hot_routes_answer_as_the_router_does() {
    use std::sync::Arc;
    use tessera_server::http::{HttpSettings, router};

    let server = TestServer::start_with(|c| c.login_url = Some("/login".into())).await;
    let mut config = test_config();
    config.login_url = Some("/login".into());
    let routed = router(
        Arc::clone(&server.service),
        HttpSettings::from_config(&config),
    );
    let (routed, _stop) = serve_router(config, routed).await;
    let routed = format!("http://{routed}");
    let cookie = server.session("alice", Delivery::Cookie).await;
    let bearer = server.session("alice", Delivery::Bearer).await;
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
    ];
    let credentials: [(&str, Option<(&str, String)>); 4] = [
        ("none", None),
        (
            "cookie",
            Some(("cookie", format!("__Host-tessera={}", cookie.access))),
        ),
        (
            "bearer",
            Some(("authorization", format!("Bearer {}", bearer.access))),
        ),
        (
            "garbage",
            Some(("authorization", "Bearer tsr_garbage".to_owned())),
        ),
    ];
    let mut compared = 0;
    for path in [
        "/v1/verify",
        "/v1/verify?role=admin",
        "/v1/verify?aal=7",
        "/v1/session",
        "/v1/session?aal=2",
        "/healthz",
    ] {
        for method in methods {
            for (what, credential) in &credentials {
                for html in [false, true] {
                    let send = |base: &str| {
                        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                        let mut request = server.client.request(method, format!("{base}{path}"));
                        if let Some((name, value)) = credential {
                            request = request.header(*name, value);
                        }
                        if html {
                            request = request.header("accept", HTML);
                        }
                        request.send()
                    };
                    let (direct, through_router) = (
                        send(&server.base).await.unwrap(),
                        send(&routed).await.unwrap(),
                    );
                    let case = format!("{method} {path}, {what}, html {html}");
                    assert_eq!(direct.status(), through_router.status(), "{case}");
                    let headers = |response: &reqwest::Response| {
                        let mut seen: Vec<(String, String)> = response
                            .headers()
                            .iter()
                            .filter(|(name, _)| *name != "date")
                            .map(|(name, value)| {
                                (name.to_string(), value.to_str().unwrap_or("?").to_owned())
                            })
                            .collect();
                        seen.sort();
                        seen
                    };
                    assert_eq!(headers(&direct), headers(&through_router), "{case}");
                    let direct = direct.text().await.unwrap();
                    let through_router = through_router.text().await.unwrap();
                    // Problem bodies name the request's instance; the rest must be equal.
                    let without_instance = |body: &str| {
                        serde_json::from_str::<serde_json::Value>(body).map_or_else(
                            |_| body.to_owned(),
                            |mut v| {
                                if let Some(o) = v.as_object_mut() {
                                    o.remove("instance");
                                }
                                v.to_string()
                            },
                        )
                    };
                    assert_eq!(
                        without_instance(&direct),
                        without_instance(&through_router),
                        "{case}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 6 * 9 * 4 * 2);
}
