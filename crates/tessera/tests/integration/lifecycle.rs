//! SPEC §2, row by row, for each of the four combinations of format × delivery.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tessera_core::b64;
use tessera_server::config::TokenFormat;
use tessera_server::service::Actor;

use crate::support::*;

const COMBINATIONS: [(TokenFormat, Delivery); 4] = [
    (TokenFormat::Opaque, Delivery::Cookie),
    (TokenFormat::Jwt, Delivery::Cookie),
    (TokenFormat::Opaque, Delivery::Bearer),
    (TokenFormat::Jwt, Delivery::Bearer),
];

async fn server_for(format: TokenFormat) -> TestServer {
    TestServer::start_with(|c| {
        c.cookie_format = format;
        c.bearer_format = format;
    })
    .await
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&b64::decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn login_generates_and_delivers_the_configured_token() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let response = server.login("alice", PASSWORD, delivery.name()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let raw_cookie = raw_set_cookie(&response);
        let session = ClientSession::from_login(
            delivery,
            server.login("alice", PASSWORD, delivery.name()).await,
        )
        .await;
        match delivery {
            Delivery::Cookie => {
                let raw = raw_cookie.expect("Set-Cookie");
                for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
                    assert!(raw.split("; ").any(|a| a == attr), "{attr} in {raw}");
                }
                assert!(raw.contains("Max-Age="), "{raw}");
                // No token in the body of a cookie login.
                let body = server
                    .login("alice", PASSWORD, "cookie")
                    .await
                    .text()
                    .await
                    .unwrap();
                assert!(
                    !body.contains("tsr_") && !body.contains("access_token"),
                    "{body}"
                );
            }
            Delivery::Bearer => {
                assert!(raw_cookie.is_none());
                let body: Value = server
                    .login("alice", PASSWORD, "bearer")
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(body["token_type"], "Bearer");
                assert!(body["expires_in"].as_i64().unwrap() > 0);
                assert!(body["refresh_token"].as_str().unwrap().starts_with("tsrf_"));
                assert_eq!(body["refresh_expires_in"], 12 * 3600);
                assert!(body["session_id"].is_string());
            }
        }
        assert_eq!(
            format_of(&session.access),
            format,
            "{format:?}/{delivery:?}"
        );
        match format {
            TokenFormat::Opaque => {
                assert_eq!(session.access.len(), 47);
            }
            TokenFormat::Jwt => {
                let header = jwt_part(&session.access, 0);
                assert_eq!(header["alg"], "EdDSA");
                assert_eq!(header["typ"], "at+jwt");
                assert!(header["kid"].is_string());
                let claims = jwt_part(&session.access, 1);
                for claim in [
                    "iss", "aud", "sub", "sid", "name", "roles", "perms", "iat", "nbf", "exp",
                    "jti",
                ] {
                    assert!(!claims[claim].is_null(), "claim {claim} missing");
                }
                assert_eq!(claims["name"], "alice");
                assert_eq!(claims["sid"], session.session_id.as_str());
                assert_eq!(
                    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                    600
                );
                assert_eq!(
                    claims["perms"],
                    serde_json::json!(["docs:write", "reports:read"])
                );
            }
        }
    }
}

#[tokio::test]
async fn every_login_issues_a_fresh_unique_token() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let a = server.session("alice", delivery).await;
        let b = server.session("alice", delivery).await;
        assert_ne!(a.access, b.access);
        assert_ne!(a.session_id, b.session_id);
    }
}

#[tokio::test]
async fn presented_token_validates_on_session_endpoints_and_verify() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let session = server.session("alice", delivery).await;
        let response = server.send(Method::GET, "/v1/session", &session).await;
        assert_eq!(response.status(), StatusCode::OK, "{format:?}/{delivery:?}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["username"], "alice");
        assert_eq!(body["session_id"], session.session_id.as_str());
        assert_eq!(body["roles"], serde_json::json!(["editor"]));
        assert_eq!(
            body["permissions"],
            serde_json::json!(["docs:write", "reports:read"])
        );
        for field in ["created_at", "expires_at", "idle_expires_at"] {
            assert!(
                body[field].as_str().unwrap().ends_with('Z'),
                "{field}: {body}"
            );
        }

        let response = server.send(Method::GET, "/v1/verify", &session).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-tessera-user"], "alice");
        assert_eq!(response.headers()["x-tessera-roles"], "editor");
        assert_eq!(
            response.headers()["x-tessera-session"],
            session.session_id.as_str()
        );
        assert!(response.headers().contains_key("x-tessera-user-id"));
    }
}

#[tokio::test]
async fn authorization_by_role_and_permission() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let session = server.session("alice", delivery).await;
        for (query, status) in [
            ("?role=editor", StatusCode::OK),
            ("?permission=docs:write", StatusCode::OK),
            ("?permission=reports:read&role=editor", StatusCode::OK),
            ("?role=admin", StatusCode::FORBIDDEN),
            ("?permission=keys:rotate", StatusCode::FORBIDDEN),
            ("?role=editor&role=admin", StatusCode::FORBIDDEN),
        ] {
            let response = server
                .send(Method::GET, &format!("/v1/verify{query}"), &session)
                .await;
            assert_eq!(response.status(), status, "{format:?}/{delivery:?} {query}");
            if status == StatusCode::FORBIDDEN {
                assert_eq!(problem_code(response).await, "forbidden");
            }
        }
    }
}

#[tokio::test]
async fn idle_timeout_slides_on_use_but_absolute_timeout_never_moves() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let mut session = server.session("alice", delivery).await;
        // Use the session every 5 minutes for 11 h 55 min: idle (30 min) never strikes.
        for _ in 0..(12 * 12 - 1) {
            server.advance(300);
            keep_alive(&server, &mut session).await;
        }
        // Past 12 h the session ends whatever the activity.
        server.advance(300);
        let response = server.send(Method::GET, "/v1/session", &session).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{format:?}/{delivery:?}"
        );
        assert_eq!(problem_code(response).await, "token_expired");
    }
}

/// Uses the session the way its client would: bearer clients refresh before the access token
/// expires; cookie clients just make requests (JWT cookies are renewed by the server).
async fn keep_alive(server: &TestServer, session: &mut ClientSession) {
    if session.delivery == Delivery::Bearer {
        let response = server
            .client
            .post(server.url("/v1/refresh"))
            .json(&serde_json::json!({ "refresh_token": session.refresh }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "refresh");
        *session = ClientSession::from_login(Delivery::Bearer, response).await;
    }
    let response = server.send(Method::GET, "/v1/session", session).await;
    assert_eq!(response.status(), StatusCode::OK);
    session.absorb(&response);
}

#[tokio::test]
async fn unused_session_expires_at_the_idle_timeout() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let session = server.session("alice", delivery).await;
        server.advance(31 * 60);
        let response = server.send(Method::GET, "/v1/session", &session).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "token_expired");
        if let Some(refresh) = &session.refresh {
            let response = server
                .client
                .post(server.url("/v1/refresh"))
                .json(&serde_json::json!({ "refresh_token": refresh }))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "refresh after idle timeout"
            );
        }
    }
}

#[tokio::test]
async fn jwt_access_token_expires_after_its_lifetime_with_leeway() {
    let server = server_for(TokenFormat::Jwt).await;
    let session = server.session("alice", Delivery::Bearer).await;
    server.advance(600 + 29);
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &session)
            .await
            .status(),
        StatusCode::OK
    );
    server.advance(1);
    let response = server.send(Method::GET, "/v1/verify", &session).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(problem_code(response).await, "token_expired");
}

#[tokio::test]
async fn cookie_jwt_is_renewed_on_use_after_half_its_lifetime() {
    let server = server_for(TokenFormat::Jwt).await;
    let mut session = server.session("alice", Delivery::Cookie).await;
    let first = session.access.clone();
    server.advance(200);
    let response = server.send(Method::GET, "/v1/session", &session).await;
    assert!(
        set_cookie(&response).is_none(),
        "no renewal before half-life"
    );
    server.advance(200);
    let response = server.send(Method::GET, "/v1/session", &session).await;
    session.absorb(&response);
    assert_ne!(session.access, first, "renewed after half-life");
    server.advance(500);
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &session)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn refresh_rotates_and_each_refresh_token_is_single_use() {
    for format in [TokenFormat::Opaque, TokenFormat::Jwt] {
        let server = server_for(format).await;
        let session = server.session("alice", Delivery::Bearer).await;
        let old_refresh = session.refresh.clone().unwrap();
        let refresh = |token: String| {
            let server = &server;
            async move {
                server
                    .client
                    .post(server.url("/v1/refresh"))
                    .json(&serde_json::json!({ "refresh_token": token }))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let response = refresh(old_refresh.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let next = ClientSession::from_login(Delivery::Bearer, response).await;
        assert_ne!(next.refresh.as_deref(), Some(old_refresh.as_str()));
        assert_ne!(next.access, session.access);
        assert_eq!(next.session_id, session.session_id);
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &next)
                .await
                .status(),
            StatusCode::OK
        );

        // Inside the grace window the same token gives the same successor pair, no fork.
        server.advance(5);
        let again =
            ClientSession::from_login(Delivery::Bearer, refresh(old_refresh.clone()).await).await;
        assert_eq!(again.access, next.access);
        assert_eq!(again.refresh, next.refresh);

        // After the grace window a replay is theft: 401 and the whole session is revoked.
        server.advance(6);
        let response = refresh(old_refresh.clone()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "token_revoked");
        let response = server.send(Method::GET, "/v1/session", &next).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{format:?}: the successor dies too"
        );
        assert_eq!(problem_code(response).await, "token_revoked");
        assert_eq!(
            refresh(next.refresh.clone().unwrap()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_all_get_the_same_pair() {
    let server = server_for(TokenFormat::Jwt).await;
    let session = server.session("alice", Delivery::Bearer).await;
    let token = session.refresh.clone().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = server.client.clone();
        let url = server.url("/v1/refresh");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&serde_json::json!({ "refresh_token": token }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let body: Value = r.json().await.unwrap();
            (
                body["access_token"].as_str().unwrap().to_owned(),
                body["refresh_token"].as_str().unwrap().to_owned(),
            )
        }));
    }
    let mut pairs = Vec::new();
    for task in tasks {
        pairs.push(task.await.unwrap());
    }
    assert!(
        pairs.windows(2).all(|w| w[0] == w[1]),
        "all tabs got one successor: {pairs:?}"
    );
}

#[tokio::test]
async fn logout_revokes_at_once_and_clears_the_cookie() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let session = server.session("alice", delivery).await;
        let response = server.send(Method::POST, "/v1/logout", &session).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()["clear-site-data"], "\"cookies\"");
        let cleared = raw_set_cookie(&response).unwrap();
        assert!(
            cleared.starts_with("__Host-tessera=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        for path in ["/v1/session", "/v1/verify"] {
            let response = server.send(Method::GET, path, &session).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{format:?}/{delivery:?} {path}"
            );
            assert_eq!(problem_code(response).await, "token_revoked");
        }
    }
}

#[tokio::test]
async fn sessions_can_be_listed_and_revoked_one_by_one_or_all_others() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let phone = server.session("alice", delivery).await;
        let laptop = server.session("alice", delivery).await;
        let tablet = server.session("alice", delivery).await;
        let admin = server.session("admin", delivery).await;

        let list: Value = server
            .send(Method::GET, "/v1/sessions", &laptop)
            .await
            .json()
            .await
            .unwrap();
        let sessions = list["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
        let current = sessions.iter().find(|s| s["current"] == true).unwrap();
        assert_eq!(current["id"], laptop.session_id.as_str());
        assert_eq!(current["ip"], "127.0.0.1");

        // Someone else's session is "not found", and stays alive.
        let response = server
            .send(
                Method::DELETE,
                &format!("/v1/sessions/{}", admin.session_id),
                &laptop,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &admin)
                .await
                .status(),
            StatusCode::OK
        );

        let response = server
            .send(
                Method::DELETE,
                &format!("/v1/sessions/{}", phone.session_id),
                &laptop,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &phone)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );

        let response = server
            .send(Method::DELETE, "/v1/sessions?scope=others", &laptop)
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &tablet)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &laptop)
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &admin)
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn password_change_renews_the_callers_token_and_revokes_the_others() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let other = server.session("alice", delivery).await;
        let me = server.session("alice", delivery).await;
        let response = me
            .authorize(server.client.post(server.url("/v1/password")))
            .json(&serde_json::json!({ "current_password": PASSWORD, "new_password": "a much newer secret" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{format:?}/{delivery:?}");
        let renewed = ClientSession::from_login(delivery, response).await;
        assert_ne!(renewed.access, me.access);
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &renewed)
                .await
                .status(),
            StatusCode::OK
        );
        for old in [&me, &other] {
            assert_eq!(
                server.send(Method::GET, "/v1/session", old).await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            server.login("alice", PASSWORD, "bearer").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            server
                .login("alice", "a much newer secret", "bearer")
                .await
                .status(),
            StatusCode::OK
        );

        // A wrong current password changes nothing and does not end the session.
        let response = renewed
            .authorize(server.client.post(server.url("/v1/password")))
            .json(&serde_json::json!({ "current_password": "wrong", "new_password": "another secret!" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem_code(response).await, "invalid_credentials");
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &renewed)
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn login_with_a_live_session_cookie_ends_that_session() {
    for format in [TokenFormat::Opaque, TokenFormat::Jwt] {
        let server = server_for(format).await;
        let old = server.session("alice", Delivery::Cookie).await;
        let response = server
            .client
            .post(server.url("/v1/login"))
            .header("cookie", format!("__Host-tessera={}", old.access))
            .json(&serde_json::json!({ "username": "alice", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let new = ClientSession::from_login(Delivery::Cookie, response).await;
        assert_ne!(new.access, old.access);
        assert_eq!(
            server.send(Method::GET, "/v1/session", &old).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            server.send(Method::GET, "/v1/session", &new).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn admin_revocation_and_user_removal_end_sessions_at_once() {
    for (format, delivery) in COMBINATIONS {
        let server = server_for(format).await;
        let session = server.session("alice", delivery).await;
        server
            .service
            .revoke_user(&Actor::cli(), "alice")
            .await
            .unwrap();
        assert_eq!(
            server
                .send(Method::GET, "/v1/verify", &session)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        let session = server.session("alice", delivery).await;
        server
            .service
            .remove_user(&Actor::cli(), "alice")
            .await
            .unwrap();
        assert_eq!(
            server
                .send(Method::GET, "/v1/verify", &session)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            server
                .login("alice", PASSWORD, delivery.name())
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn stateless_mode_skips_the_revocation_lookup_until_exp() {
    let server = TestServer::start_with(|c| c.stateless = true).await;
    let session = server.session("alice", Delivery::Bearer).await;
    server.send(Method::POST, "/v1/logout", &session).await;
    // Documented trade-off: the JWT stays valid until it expires.
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &session)
            .await
            .status(),
        StatusCode::OK
    );
    server.advance(600 + 30);
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &session)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn jwks_publishes_the_public_signing_key() {
    for alg in ["EdDSA", "ES256"] {
        let server = TestServer::start_with(|c| c.jwt_algorithm = alg.parse().unwrap()).await;
        let jwks: Value = server
            .client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["alg"], alg);
        assert!(keys[0].get("d").is_none(), "no private part");
        let session = server.session("alice", Delivery::Bearer).await;
        let header = jwt_part(&session.access, 0);
        assert_eq!(header["kid"], keys[0]["kid"]);
        assert_eq!(header["alg"], alg);
    }
    let server =
        TestServer::start_with(|c| c.jwt_algorithm = tessera_core::keys::Algorithm::Hs256).await;
    let jwks: Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        0,
        "HS256 secrets are never published"
    );
    let session = server.session("alice", Delivery::Bearer).await;
    assert_eq!(jwt_part(&session.access, 0)["alg"], "HS256");
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &session)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let server = TestServer::start().await;
    let before = server.session("alice", Delivery::Bearer).await;
    let new_key = server.service.rotate_key(&Actor::cli()).await.unwrap();
    let after = server.session("alice", Delivery::Bearer).await;
    assert_eq!(jwt_part(&after.access, 0)["kid"], new_key.kid.as_str());
    assert_ne!(jwt_part(&before.access, 0)["kid"], new_key.kid.as_str());
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &before)
            .await
            .status(),
        StatusCode::OK
    );
    let jwks: Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}
