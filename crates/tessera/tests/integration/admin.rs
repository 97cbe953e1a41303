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
    let admin = server.session("admin", Delivery::Bearer).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let new_user = json!({ "username": "mallory", "password": "a long password" });
    let patch = json!({ "roles": ["admin"] });
    // Every route and method of the admin API.
    let calls = [
        (Method::GET, "/v1/admin/users".to_owned(), None),
        (Method::POST, "/v1/admin/users".to_owned(), Some(new_user)),
        (Method::GET, "/v1/admin/users/admin".to_owned(), None),
        (
            Method::PATCH,
            "/v1/admin/users/alice".to_owned(),
            Some(patch),
        ),
        (Method::DELETE, "/v1/admin/users/admin".to_owned(), None),
        (
            Method::GET,
            "/v1/admin/users/admin/sessions".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/admin/users/admin/sessions".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/admin/sessions/{}", admin.session_id),
            None,
        ),
        (Method::GET, "/v1/admin/keys".to_owned(), None),
        (Method::POST, "/v1/admin/keys/rotate".to_owned(), None),
        (Method::GET, "/v1/admin/audit".to_owned(), None),
        (
            Method::GET,
            "/v1/admin/users/admin/factors".to_owned(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/admin/users/admin/factors".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in calls {
        let response = admin_call(&server, &alice, method.clone(), &path, body).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(problem_code(response).await, "forbidden");
    }
    // Nothing the refused calls asked for happened.
    let users: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/users", None)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice"], "admin kept, mallory not created");
    let alice_user: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/users/alice", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alice_user["roles"], json!(["editor"]));
    let keys: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "no key rotated");
    assert_eq!(
        server
            .send(Method::GET, "/v1/session", &admin)
            .await
            .status(),
        StatusCode::OK,
        "the admin's session was not revoked"
    );
}

/// POSTs a new user; returns the status and, for a problem, its code.
async fn create(server: &TestServer, admin: &ClientSession, body: Value) -> (StatusCode, String) {
    let response = admin_call(server, admin, Method::POST, "/v1/admin/users", Some(body)).await;
    let status = response.status();
    if status.is_success() {
        let user: Value = response.json().await.unwrap();
        (status, user["username"].as_str().unwrap().to_owned())
    } else {
        (status, problem_code(response).await)
    }
}

/// Issue 11 defect 7: roles and permissions outside the documented charset are refused by the
/// admin API at creation and update, and nothing is changed.
#[tokio::test]
async fn roles_and_permissions_outside_the_charset_are_refused() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let bad = [
        "editor,admin",
        "editor\r\nX-Tessera-User: admin",
        "a\nb",
        "two words",
        "",
        "émoji",
        "a;b",
        &"r".repeat(65),
    ];
    for name in bad {
        for field in ["roles", "permissions"] {
            let body = json!({ "username": "eve", "password": "a long password", field: [name] });
            assert_eq!(
                create(&server, &admin, body).await,
                (StatusCode::BAD_REQUEST, "bad_request".to_owned()),
                "{field}: {name:?}"
            );
            let response = admin_call(
                &server,
                &admin,
                Method::PATCH,
                "/v1/admin/users/alice",
                Some(json!({ field: ["viewer", name] })),
            )
            .await;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{field}: {name:?}"
            );
            assert_eq!(problem_code(response).await, "bad_request");
        }
    }
    let response = admin_call(&server, &admin, Method::GET, "/v1/admin/users/eve", None).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "eve was never created"
    );
    let shown: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/users/alice", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["roles"], json!(["editor"]));
    assert_eq!(shown["permissions"], json!(["reports:read"]));
    assert_eq!(
        server
            .send(Method::GET, "/v1/verify", &alice)
            .await
            .status(),
        StatusCode::OK,
        "a refused update revokes nothing"
    );
    // The whole charset is accepted.
    let body = json!({
        "username": "eve",
        "password": "a long password",
        "roles": ["team/a.b_c-D9"],
        "permissions": ["docs:write"],
    });
    assert_eq!(
        create(&server, &admin, body).await,
        (StatusCode::CREATED, "eve".to_owned())
    );
}

/// Issue 11 defect 7: roles stored before the charset (CR/LF, a comma) make `/v1/verify` deny
/// with 403, never 500 and never a header that reads as another role.
#[tokio::test]
async fn verify_fails_closed_on_stored_roles_it_cannot_pass_on() {
    for stored in ["ed\r\nitor", "editor,admin", "ed\u{0}itor"] {
        let server = TestServer::start().await;
        let mut alice = server.service.user("alice").await.unwrap();
        alice.roles = vec![stored.to_owned()];
        assert!(server.service.store().update_user(&alice).await.unwrap());
        for delivery in [Delivery::Bearer, Delivery::Cookie] {
            let session = server.session("alice", delivery).await;
            for path in ["/v1/verify", "/v1/verify?role=admin"] {
                let response = server.send(Method::GET, path, &session).await;
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{stored:?} {path}"
                );
                assert!(
                    !response.headers().contains_key("x-tessera-roles"),
                    "{stored:?}"
                );
                assert_eq!(problem_code(response).await, "forbidden");
            }
        }
    }
}

/// Issue 11 defect 7: usernames are stored in NFC, invisible characters and the audit log's
/// actor names are refused, and login applies the same normalisation.
#[tokio::test]
async fn usernames_are_normalised_and_invisible_or_reserved_ones_refused() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    for name in [
        "al\u{200B}ice2", // zero-width space
        "\u{200D}bob",    // zero-width joiner
        "bob\u{202E}",    // right-to-left override
        "bob\u{2066}x",   // left-to-right isolate
        "b\u{00AD}ob",    // soft hyphen
        "bob\u{FEFF}",    // byte order mark
        "b\u{3164}ob",    // Hangul filler
        "b\u{00A0}ob",    // no-break space
        "b\u{E000}ob",    // private use
        "b\tob",
        "cli",
        "CLI",
        "system",
        "System",
    ] {
        let body = json!({ "username": name, "password": "a long password" });
        assert_eq!(
            create(&server, &admin, body).await,
            (StatusCode::BAD_REQUEST, "bad_request".to_owned()),
            "{name:?}"
        );
    }
    let users: Value = admin_call(&server, &admin, Method::GET, "/v1/admin/users", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "{users}");

    // Created decomposed, stored composed; the composed spelling is the same account.
    let decomposed = "jose\u{301}";
    let composed = "jos\u{E9}";
    let body = json!({ "username": decomposed, "password": "a long password" });
    assert_eq!(
        create(&server, &admin, body).await,
        (StatusCode::CREATED, composed.to_owned())
    );
    let body = json!({ "username": composed, "password": "a long password" });
    assert_eq!(
        create(&server, &admin, body).await,
        (StatusCode::CONFLICT, "conflict".to_owned())
    );
    for typed in [decomposed, composed] {
        let response = server.login(typed, "a long password", "bearer").await;
        assert_eq!(response.status(), StatusCode::OK, "{typed:?}");
        let session = ClientSession::from_login(Delivery::Bearer, response).await;
        let me: Value = server
            .send(Method::GET, "/v1/session", &session)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["user"]["username"], composed);
        // Looked up by either spelling in the admin API too.
        let path = format!("/v1/admin/users/{}", urlencode(typed));
        let response = admin_call(&server, &admin, Method::GET, &path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{typed:?}");
    }
    // Login refuses invisible characters like creation does; a reserved name is just unknown.
    let response = server
        .login("jos\u{E9}\u{200B}", "a long password", "bearer")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(response).await, "bad_request");
    let response = server.login("cli", "a long password", "bearer").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_credentials");
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
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

/// Parameter pollution: a query key meant once that is repeated is refused, never resolved
/// by picking the first or the last value.
#[tokio::test]
async fn a_repeated_single_valued_query_key_is_refused() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    for path in [
        "/v1/admin/users?limit=1&limit=2",
        "/v1/admin/audit?user=alice&user=bob",
    ] {
        let response = admin_call(&server, &admin, Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}
