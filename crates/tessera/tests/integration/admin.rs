//! The admin API (issue 7): users, sessions, keys, audit — for the `admin` role only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_server::config::TokenFormat;

use crate::support::*;

async fn admin_call(
    server: &TestServer,
    admin: &ClientSession,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = admin.authorize(server.client.request(method, server.url(path)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn admin_api_requires_the_admin_role() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/v1/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let alice = server.session("alice", Delivery::Bearer).await;
    for (method, path) in [
        (Method::GET, "/v1/admin/users"),
        (Method::DELETE, "/v1/admin/users/admin"),
        (Method::POST, "/v1/admin/keys/rotate"),
        (Method::GET, "/v1/admin/audit"),
    ] {
        let response = server.send(method, path, &alice).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(problem_code(response).await, "forbidden");
    }
}

#[tokio::test]
async fn users_are_created_listed_paged_shown_updated_and_deleted() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    for name in ["carol", "bob", "dave"] {
        let body = json!({ "username": name, "password": "a long password", "roles": ["viewer"] });
        let response =
            admin_call(&server, &admin, Method::POST, "/v1/admin/users", Some(body)).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{name}");
    }
    let again = json!({ "username": "bob", "password": "a long password" });
    let response = admin_call(
        &server,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(again),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let short = json!({ "username": "eve", "password": "short" });
    let response = admin_call(
        &server,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(short),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let page: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/users?limit=2",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice"]);
    assert_eq!(page["next"], "alice");
    let page: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/users?limit=2&after=alice",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);

    let shown: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/users/bob", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["roles"], json!(["viewer"]));
    assert_eq!(shown["disabled"], false);
    assert!(
        shown.get("password_hash").is_none(),
        "hashes never leave the server"
    );

    let patch = json!({ "roles": ["editor", "viewer"], "permissions": ["reports:read"] });
    let updated: Value = admin_call(
        &server,
        &admin,
        Method::PATCH,
        "/v1/admin/users/bob",
        Some(patch),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(updated["roles"], json!(["editor", "viewer"]));
    assert_eq!(updated["permissions"], json!(["reports:read"]));
    let bob = server.login("bob", "a long password", "bearer").await;
    assert_eq!(bob.status(), StatusCode::OK);

    let response = admin_call(&server, &admin, Method::DELETE, "/v1/admin/users/bob", None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = admin_call(&server, &admin, Method::GET, "/v1/admin/users/bob", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .login("bob", "a long password", "bearer")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let response = admin_call(
        &server,
        &admin,
        Method::PATCH,
        "/v1/admin/users/nobody",
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = admin_call(
        &server,
        &admin,
        Method::PATCH,
        "/v1/admin/users/carol",
        Some(json!({ "colour": "red" })),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
}

#[tokio::test]
async fn disabling_a_user_kills_their_opaque_and_jwt_tokens_on_the_very_next_request() {
    for format in [TokenFormat::Opaque, TokenFormat::Jwt] {
        let server = TestServer::start_with(|c| {
            c.cookie_format = format;
            c.bearer_format = format;
        })
        .await;
        let admin = server.session("admin", Delivery::Bearer).await;
        let cookie = server.session("alice", Delivery::Cookie).await;
        let bearer = server.session("alice", Delivery::Bearer).await;
        for s in [&cookie, &bearer] {
            assert_eq!(
                server.send(Method::GET, "/v1/verify", s).await.status(),
                StatusCode::OK
            );
        }
        let response = admin_call(
            &server,
            &admin,
            Method::PATCH,
            "/v1/admin/users/alice",
            Some(json!({ "disabled": true })),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        for s in [&cookie, &bearer] {
            let response = server.send(Method::GET, "/v1/verify", s).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{format:?}");
            assert_eq!(problem_code(response).await, "token_revoked");
        }
        let refresh = server
            .client
            .post(server.url("/v1/refresh"))
            .json(&json!({ "refresh_token": bearer.refresh }))
            .send()
            .await
            .unwrap();
        assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            server.login("alice", PASSWORD, "bearer").await.status(),
            StatusCode::UNAUTHORIZED
        );
        // Enabling again lets the user log in, but the old tokens stay dead.
        admin_call(
            &server,
            &admin,
            Method::PATCH,
            "/v1/admin/users/alice",
            Some(json!({ "disabled": false })),
        )
        .await;
        assert_eq!(
            server.login("alice", PASSWORD, "bearer").await.status(),
            StatusCode::OK
        );
        assert_eq!(
            server
                .send(Method::GET, "/v1/verify", &bearer)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_the_admin() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let one = server.session("alice", Delivery::Bearer).await;
    let two = server.session("alice", Delivery::Cookie).await;
    let listed: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/users/alice/sessions",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&one.session_id.as_str()) && ids.contains(&two.session_id.as_str()));

    let path = format!("/v1/admin/sessions/{}", one.session_id);
    assert_eq!(
        admin_call(&server, &admin, Method::DELETE, &path, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.send(Method::GET, "/v1/session", &one).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin_call(&server, &admin, Method::DELETE, &path, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let revoked: Value = admin_call(
        &server,
        &admin,
        Method::DELETE,
        "/v1/admin/users/alice/sessions",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(revoked["revoked"], 1);
    assert_eq!(
        server.send(Method::GET, "/v1/session", &two).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &admin)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_are_listed_and_rotated_through_the_api() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let keys: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    let rotated: Value = admin_call(&server, &admin, Method::POST, "/v1/admin/keys/rotate", None)
        .await
        .json()
        .await
        .unwrap();
    let keys: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let current: Vec<&Value> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["kid"], rotated["kid"]);
    // The admin's token, signed by the previous key, still works.
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &admin)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn audit_log_is_queryable_by_user_kind_and_limit() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    server.login("alice", "wrong password", "bearer").await;
    server.session("alice", Delivery::Bearer).await;
    let all: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/audit?user=alice",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..2], ["login.succeeded", "login.failed"]);
    let failed: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/audit?user=alice&kind=login.failed",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(failed["events"].as_array().unwrap().len(), 1);
    let one: Value = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/audit?limit=1",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    let response = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/audit?kind=made.up",
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = admin_call(
        &server,
        &admin,
        Method::GET,
        "/v1/admin/audit?limit=many",
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
