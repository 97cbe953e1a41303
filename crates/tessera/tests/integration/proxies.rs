//! Forward auth end to end through real reverse proxies — nginx (`auth_request`), Caddy
//! (`forward_auth`) and Traefik (`forwardAuth`) — each running the configuration shipped in
//! `docs/examples/`, in front of a small app that echoes the identity headers it receives.

use reqwest::{StatusCode, Url};
use tessera_server::Config;

use crate::external::{
    Caddy, Nginx, PROBE_HEADER, Ports, RecordingApp, Traefik, example, raw_exchange, raw_request,
    spare_port, start_echo_app,
};
use crate::support::{PASSWORD, TestServer, set_cookie, test_config};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// tessera with `docs/examples/tessera.toml`, on the port the proxy example expects.
pub async fn tessera_behind_proxy(ports: Ports) -> TestServer {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/tessera.toml");
    let mut config = Config::load(Some(&path), []).unwrap();
    let fast = test_config();
    config.listen = format!("127.0.0.1:{}", ports.tessera);
    config.argon2_memory_kib = fast.argon2_memory_kib;
    config.argon2_iterations = fast.argon2_iterations;
    config.redirect_origins = vec![format!("http://127.0.0.1:{}", ports.proxy)];
    assert!(example("tessera.toml").contains("redirect_origins = [\"http://127.0.0.1:8000\"]"));
    TestServer::start_config(config).await
}

/// Logs `username` in at tessera directly: its session token.
pub async fn session_token(tessera_base: &str, username: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{tessera_base}/v1/login"))
        .json(&serde_json::json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    set_cookie(&response).unwrap_or_else(|| panic!("{username} logged in"))
}

pub fn spare_ports() -> Ports {
    Ports {
        proxy: spare_port(),
        tessera: spare_port(),
        app: spare_port(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn cookie(token: &str) -> String {
    format!("__Host-tessera={token}")
}

/// The same scenario for every proxy.
async fn guards_an_app(base: &str, proxy_port: u16) {
    let client = client();
    let wanted = format!("{base}/private/page?x=1&y=2");

    // An anonymous browser is sent to the login page, with where it wanted to go as `rd`.
    let response = client
        .get(&wanted)
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = Url::parse(base)
        .unwrap()
        .join(response.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(location.path(), "/login");
    let rd = location
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    assert_eq!(rd.as_deref(), Some(wanted.as_str()));

    // An anonymous API client gets a 401.
    let response = client
        .get(&wanted)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The login page, through the proxy, carries `rd` in its form.
    let response = client
        .get(location.as_str())
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<form method=\"post\" action=\"/v1/login\""),
        "{page}"
    );
    assert!(page.contains("name=\"rd\""), "{page}");

    // The form login lands on `rd` with a cookie.
    let response = client
        .post(format!("{base}/v1/login"))
        .header("accept", BROWSER_ACCEPT)
        .header("origin", base)
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", &wanted),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], wanted.as_str());
    let alice = set_cookie(&response).expect("a session cookie");

    // The app sees who it is — and never what the client claims.
    let response = client
        .get(&wanted)
        .header("cookie", cookie(&alice))
        .header("x-tessera-user", "admin")
        .header("x-tessera-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(body.contains("path: /private/page?x=1&y=2\n"), "{body}");
    assert!(body.contains("x-tessera-user: alice\n"), "{body}");
    assert!(body.contains("x-tessera-roles: editor\n"), "{body}");
    assert!(!body.contains("admin"), "{body}");

    // The /admin rule wants the admin role: alice is refused, admin passes.
    let response = client
        .get(format!("{base}/admin/settings"))
        .header("cookie", cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({ "username": "admin", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let admin = set_cookie(&response).expect("admin's cookie");
    let response = client
        .get(format!("{base}/admin/settings"))
        .header("cookie", cookie(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("x-tessera-user: admin\n")
    );

    // A detour through /public does not skip /admin's rule: dot segments, which back ends read
    // differently, are refused outright, signed in or not (sent raw: HTTP clients would tidy
    // the path up first).
    for path in ["/public/../admin/settings", "/public/%2e%2e/admin/settings"] {
        let (status, text) = raw_request(
            proxy_port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{proxy_port}\r\n\
                 Cookie: {}\r\nConnection: close\r\n\r\n",
                cookie(&alice)
            ),
        )
        .await;
        assert_eq!(status, 403, "{path}: {text}");
        let (status, text) = raw_request(
            proxy_port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{proxy_port}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        // Traefik resolves the dot segments itself and asks about /admin/settings (401 without
        // a session); nginx and Caddy pass them on raw and tessera refuses them (403).
        assert!(matches!(status, 401 | 403), "{path}: {text}");
    }

    // The bypass rule lets anyone read /public, still without forged identity headers.
    let response = client
        .get(format!("{base}/public/info"))
        .header("x-tessera-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(body.contains("x-tessera-user: \n"), "{body}");

    // The account page, through the proxy, lists the session.
    let response = client
        .get(format!("{base}/account"))
        .header("cookie", cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("this device"), "{page}");

    // After logout the cookie opens nothing.
    let response = client
        .post(format!("{base}/v1/logout"))
        .header("cookie", cookie(&alice))
        .header("origin", base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client
        .get(&wanted)
        .header("cookie", cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .get(&wanted)
        .header("cookie", cookie(&alice))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "browsers go to the login page again"
    );
}

/// A client's own header naming another target than its request line (issue 11, defect 1:
/// nginx once let a client's `X-Forwarded-Uri` through, and tessera preferred it): refused,
/// and the app receives nothing; the same request from admin still reaches the app as itself.
async fn spoofed_targets_are_refused(proxy_port: u16, app: &RecordingApp, tessera_base: &str) {
    let alice = session_token(tessera_base, "alice").await;
    let admin = session_token(tessera_base, "admin").await;
    let send = |method: &str, cookie: Option<&str>, header: &str, value: &str, probe: &str| {
        let cookie = cookie
            .map(|token| format!("Cookie: {}\r\n", self::cookie(token)))
            .unwrap_or_default();
        let request = format!(
            "{method} /admin/secret HTTP/1.1\r\nHost: 127.0.0.1:{proxy_port}\r\n{cookie}\
             {header}: {value}\r\n{PROBE_HEADER}: {probe}\r\nConnection: close\r\n\r\n"
        );
        async move { raw_exchange(proxy_port, request.as_bytes()).await.unwrap() }
    };
    for header in ["X-Forwarded-Uri", "X-Original-URI"] {
        for method in ["GET", "DELETE"] {
            for (who, cookie, value) in [
                ("anonymous", None, "/public/x"),
                ("alice", Some(alice.as_str()), "/home"),
                ("alice", Some(alice.as_str()), "/public/x"),
            ] {
                let probe = format!("{header} {method} {who} {value}");
                let (status, text) = send(method, cookie, header, value, &probe).await;
                let wanted = if cookie.is_some() { 403 } else { 401 };
                assert_eq!(status, wanted, "{probe}: {text}");
                assert!(app.received(&probe).is_empty(), "{probe} reached the app");
            }
            let probe = format!("{header} {method} admin");
            let (status, text) = send(method, Some(&admin), header, "/public/x", &probe).await;
            assert_eq!(status, 200, "{probe}: {text}");
            let received = app.received(&probe);
            assert_eq!(received.len(), 1, "{probe}");
            assert_eq!(received[0].target, b"/admin/secret");
            assert_eq!(received[0].header("x-tessera-user"), ["admin"], "{probe}");
        }
    }
}

#[tokio::test]
async fn nginx_refuses_spoofed_targets() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut nginx = Nginx::start(ports).await;
    spoofed_targets_are_refused(ports.proxy, &app, &tessera.base).await;
    nginx.daemon.assert_running();
}

#[tokio::test]
async fn caddy_refuses_spoofed_targets() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut caddy = Caddy::start(ports).await;
    spoofed_targets_are_refused(ports.proxy, &app, &tessera.base).await;
    caddy.daemon.assert_running();
}

#[tokio::test]
async fn traefik_refuses_spoofed_targets() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut traefik = Traefik::start(ports).await;
    spoofed_targets_are_refused(ports.proxy, &app, &tessera.base).await;
    traefik.daemon.assert_running();
}

#[tokio::test]
async fn nginx_auth_request_guards_an_app() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut nginx = Nginx::start(ports).await;
    guards_an_app(&nginx.base, ports.proxy).await;
    refusals_are_tesseras_own(&nginx.base, &server.base).await;
    nginx.daemon.assert_running();
}

/// Step-up through nginx with the documented configuration: `/billing` needs a second factor
/// and a sign-in within 10 minutes.
#[tokio::test]
async fn nginx_sends_a_password_only_session_to_step_up_and_back() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut nginx = Nginx::start(ports).await;
    let base = nginx.base.clone();
    let client = client();
    // Alice enrols a TOTP factor through the API, then signs in with her password alone.
    let bearer = server
        .session("alice", crate::support::Delivery::Bearer)
        .await;
    let enrolled = crate::factors::enrol(&server, &bearer).await;
    server.advance(30);
    let ticket_login = reqwest::Client::new()
        .post(format!("{}/v1/login", server.base))
        .json(&serde_json::json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ticket_login.status(),
        StatusCode::UNAUTHORIZED,
        "a code is needed now"
    );
    // A password-only session of the admin (no factor) meets /private but not /billing.
    let weak = session_token(&server.base, "admin").await;
    let wanted = format!("{base}/billing/invoice?n=7");
    let ok = client
        .get(format!("{base}/private/page"))
        .header("cookie", cookie(&weak))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let response = client
        .get(&wanted)
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", cookie(&weak))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "sent to sign in again"
    );
    let location = Url::parse(&base)
        .unwrap()
        .join(response.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(location.path(), "/login");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query.get("rd"), Some(&wanted));
    assert_eq!(query.get("aal").map(String::as_str), Some("2"));
    assert_eq!(query.get("max_age").map(String::as_str), Some("600"));
    // An API client gets the step-up problem, not a redirect.
    let api = client
        .get(&wanted)
        .header("accept", "application/json")
        .header("cookie", cookie(&weak))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["code"], "step_up_required");

    // Alice's browser: the login page through nginx has the code field, and signing in with
    // password and code lands on the page she wanted.
    let page = client
        .get(location.as_str())
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"code\""), "{page}");
    let code = crate::factors::code_at(&enrolled.uri, server.service.now()).await;
    let response = client
        .post(format!("{base}/v1/login"))
        .header("accept", BROWSER_ACCEPT)
        .header("origin", &base)
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("code", &code),
            ("rd", &wanted),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], wanted.as_str());
    let strong = set_cookie(&response).expect("a session cookie");
    let response = client
        .get(&wanted)
        .header("cookie", cookie(&strong))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.text().await.unwrap();
    assert!(echoed.contains("alice"), "{echoed}");

    // Ten minutes on, /billing asks her to sign in again; the session still works elsewhere.
    server.advance(601);
    let response = client
        .get(&wanted)
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", cookie(&strong))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("max_age=600"), "{location}");
    let response = client
        .get(format!("{base}/private/page"))
        .header("cookie", cookie(&strong))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "not ended by the step-up request"
    );
    nginx.daemon.assert_running();
}

/// What a refused client meets through the proxy is tessera's answer, not the proxy's bare
/// page: the "access denied" page for a signed-in browser, problem+json for API clients.
async fn refusals_are_tesseras_own(base: &str, tessera_base: &str) {
    let client = client();
    let alice = session_token(tessera_base, "alice").await;
    let denied = format!("{base}/admin/settings");

    // A signed-in browser whose role is refused: tessera's page, status 403.
    let response = client
        .get(&denied)
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<h1 id=\"title\">Access denied</h1>"),
        "{page}"
    );
    assert!(
        page.contains("<strong id=\"username\">alice</strong>"),
        "{page}"
    );
    assert!(!page.contains("nginx"), "{page}");

    // The same refusal for API clients, by Accept or by a bearer token: problem+json 403.
    for request in [
        client
            .get(&denied)
            .header("accept", "application/json")
            .header("cookie", cookie(&alice)),
        client
            .post(&denied)
            .header("accept", BROWSER_ACCEPT)
            .bearer_auth(&alice),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "forbidden", "{body}");
    }

    // An API client without a valid session: tessera's 401 problem, saying why.
    let response = client
        .get(format!("{base}/private/page"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = client
        .get(format!("{base}/private/page"))
        .bearer_auth("tsr_not_a_real_token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token", "{body}");
}

#[tokio::test]
async fn caddy_forward_auth_guards_an_app() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut caddy = Caddy::start(ports).await;
    guards_an_app(&caddy.base, ports.proxy).await;
    refusals_are_tesseras_own(&caddy.base, &server.base).await;
    caddy.daemon.assert_running();
}

#[tokio::test]
async fn traefik_forward_auth_guards_an_app() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut traefik = Traefik::start(ports).await;
    guards_an_app(&traefik.base, ports.proxy).await;
    refusals_are_tesseras_own(&traefik.base, &server.base).await;
    traefik.daemon.assert_running();
}

#[test]
fn the_docs_show_exactly_the_configurations_the_tests_run() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let read = |name: &str| std::fs::read_to_string(docs.join(name)).unwrap();
    for (page, files) in [
        ("nginx.md", ["nginx.conf", "tessera.toml"]),
        ("caddy.md", ["Caddyfile", "tessera.toml"]),
        ("traefik.md", ["traefik.yml", "traefik-dynamic.yml"]),
    ] {
        let text = read(page);
        for file in files {
            assert!(
                text.contains(&example(file)),
                "docs/{page} must show docs/examples/{file} verbatim"
            );
        }
    }
}

/// A DPoP-bound bearer token through the proxy, with the documented configuration: the proxy
/// passes `Authorization: DPoP` and the `DPoP` proof to tessera with the request it protects,
/// and tessera checks the proof against that request's URL as the client addressed it. A
/// replayed proof, one made for another page, and the token sent as a plain bearer token are
/// refused before the app sees anything.
async fn dpop_bound_tokens_pass_with_their_proof_only(base: &str, server: &TestServer) {
    use crate::dpop::ProofKey;
    let client = client();
    let key = ProofKey::p256();
    let now = server.service.now();
    let login = format!("{base}/v1/login");
    let response = client
        .post(&login)
        .header("DPoP", key.proof("POST", &login, now, None))
        .json(&serde_json::json!({
            "username": "alice", "password": PASSWORD, "delivery": "bearer",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a login through {base}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    let page = format!("{base}/private/page");
    let get = |scheme: &str, proof: &str| {
        client
            .get(format!("{page}?x=1"))
            .header("authorization", format!("{scheme} {token}"))
            .header("DPoP", proof)
            .header("accept", "application/json")
            .send()
    };
    let proof = key.proof("GET", &page, now, Some(token));
    let response = get("DPoP", &proof).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{base}");
    let seen = response.text().await.unwrap();
    assert!(seen.contains("x-tessera-user: alice\n"), "{seen}");
    for (what, scheme, proof) in [
        ("replayed", "DPoP", proof.clone()),
        (
            "for another page",
            "DPoP",
            key.proof("GET", &format!("{base}/private/other"), now, Some(token)),
        ),
        (
            "for tessera's own URL",
            "DPoP",
            key.proof("GET", &server.url("/v1/verify"), now, Some(token)),
        ),
        (
            "as a bearer token",
            "Bearer",
            key.proof("GET", &page, now, Some(token)),
        ),
    ] {
        let response = get(scheme, &proof).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{base}: {what}"
        );
    }
}

#[tokio::test]
async fn nginx_passes_dpop_bound_tokens_with_their_proof_only() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut nginx = Nginx::start(ports).await;
    dpop_bound_tokens_pass_with_their_proof_only(&nginx.base, &server).await;
    nginx.daemon.assert_running();
}

#[tokio::test]
async fn caddy_passes_dpop_bound_tokens_with_their_proof_only() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut caddy = Caddy::start(ports).await;
    dpop_bound_tokens_pass_with_their_proof_only(&caddy.base, &server).await;
    caddy.daemon.assert_running();
}

#[tokio::test]
async fn traefik_passes_dpop_bound_tokens_with_their_proof_only() {
    let ports = spare_ports();
    start_echo_app(ports.app).await;
    let server = tessera_behind_proxy(ports).await;
    let mut traefik = Traefik::start(ports).await;
    dpop_bound_tokens_pass_with_their_proof_only(&traefik.base, &server).await;
    traefik.daemon.assert_running();
}
