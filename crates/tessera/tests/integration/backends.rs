//! The endpoints for back-end services that verify tokens themselves: the revocation feed,
//! introspection and the issuer metadata — what they answer, to whom, and that every way a
//! session ends is in the feed.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_core::opaque::{self, OpaqueKind, TokenHash};
use tessera_server::service::{Actor, ClientInfo, UserPatch};

use crate::support::{Delivery, PASSWORD, TestServer, problem_code};

/// One feed answer.
async fn feed(server: &TestServer, query: &str) -> Value {
    let response = server
        .client
        .get(server.url(&format!("/v1/revocations{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

/// The session ids the feed lists from the start.
async fn listed(server: &TestServer) -> Vec<String> {
    let all = feed(server, "").await;
    assert_eq!(all["reset"], true);
    all["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["sid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_feed_lists_a_logout_with_how_long_it_matters_and_resumes_from_its_cursor() {
    let server = TestServer::start().await;
    let first = feed(&server, "").await;
    assert_eq!(
        (&first["reset"], &first["more"], &first["revoked"]),
        (&json!(true), &json!(false), &json!([]))
    );
    let cursor = first["cursor"].as_str().unwrap().to_owned();

    let session = server.session("alice", Delivery::Bearer).await;
    let response = server
        .send(reqwest::Method::POST, "/v1/logout", &session)
        .await;
    assert!(response.status().is_success());
    let next = feed(&server, &format!("?after={cursor}")).await;
    assert_eq!(next["reset"], false);
    let revoked = next["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{next}");
    assert_eq!(revoked[0]["sid"], session.session_id.as_str());
    // Until the last access token of the session has expired: lifetime (600) + leeway (30).
    let now = server.service.now();
    assert_eq!(revoked[0]["until"], now + 600 + 30);
    // From its own cursor: nothing new.
    let after = next["cursor"].as_str().unwrap();
    let quiet = feed(&server, &format!("?after={after}")).await;
    assert_eq!(quiet["revoked"], json!([]));
    assert_eq!(quiet["cursor"], after);
}

#[tokio::test]
async fn a_held_feed_request_answers_as_soon_as_a_session_is_revoked() {
    let server = TestServer::start().await;
    let cursor = feed(&server, "").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = server.session("alice", Delivery::Bearer).await;
    let held = {
        let client = server.client.clone();
        let url = server.url(&format!("/v1/revocations?after={cursor}&wait=20"));
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked_at = Instant::now();
    server
        .send(reqwest::Method::POST, "/v1/logout", &session)
        .await;
    let (waited, body) = held.await.unwrap();
    assert_eq!(body["revoked"][0]["sid"], session.session_id.as_str());
    assert!(
        waited >= Duration::from_millis(300),
        "answered before the logout"
    );
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2),
        "the held request was not woken by the revocation"
    );
    // A quiet wait ends by itself, empty.
    let started = Instant::now();
    let cursor = body["cursor"].as_str().unwrap();
    let quiet = feed(&server, &format!("?after={cursor}&wait=1")).await;
    assert_eq!(quiet["revoked"], json!([]));
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn the_feed_refuses_unreadable_cursors_and_resets_unknown_ones() {
    let server = TestServer::start().await;
    for query in [
        "?after=abc",
        "?after=-1",
        "?after=%2B1",
        "?after=99999999999999999999999",
        "?after=1&after=2",
        "?wait=soon",
        "?wait=1&wait=2",
    ] {
        let response = server
            .client
            .get(server.url(&format!("/v1/revocations{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(problem_code(response).await, "bad_request", "{query}");
    }
    // A cursor ahead of the log (another store): the whole log again, as a reset.
    let session = server.session("alice", Delivery::Bearer).await;
    server
        .send(reqwest::Method::POST, "/v1/logout", &session)
        .await;
    let reset = feed(&server, "?after=123456789").await;
    assert_eq!(reset["reset"], true);
    assert_eq!(reset["revoked"][0]["sid"], session.session_id.as_str());
}

/// Every way a session ends puts it in the feed before the request that ended it is
/// answered: an acknowledged revocation is never missing from it.
#[tokio::test]
async fn every_way_a_session_ends_is_in_the_feed() {
    let server = TestServer::start().await;
    let service = &server.service;
    let admin = Actor::cli();
    let mut expected = Vec::new();

    // Logout.
    let s = server.session("alice", Delivery::Bearer).await;
    server.send(reqwest::Method::POST, "/v1/logout", &s).await;
    expected.push(s.session_id);
    // One of one's own sessions, by id.
    let keep = server.session("alice", Delivery::Bearer).await;
    let s = server.session("alice", Delivery::Bearer).await;
    let response = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{}", s.session_id),
            &keep,
        )
        .await;
    assert!(response.status().is_success());
    expected.push(s.session_id);
    // The caller's other sessions.
    let s = server.session("alice", Delivery::Bearer).await;
    let response = server
        .send(reqwest::Method::DELETE, "/v1/sessions?scope=others", &keep)
        .await;
    assert!(response.status().is_success());
    expected.push(s.session_id);
    // A password change ends the other sessions, the one it was made from included.
    let s = server.session("alice", Delivery::Bearer).await;
    let response = server
        .client
        .post(server.url("/v1/password"))
        .bearer_auth(&keep.access)
        .json(&json!({ "current_password": PASSWORD, "new_password": "another password 1" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    expected.push(s.session_id);
    expected.push(keep.session_id.clone());
    service
        .update_user(
            &admin,
            "alice",
            UserPatch {
                password: Some(PASSWORD.into()),
                ..UserPatch::default()
            },
        )
        .await
        .unwrap();
    // An administrator: one session, all of a user's, a role change, disabling, deletion.
    let s = server.session("alice", Delivery::Bearer).await;
    service
        .revoke_session(&admin, s.session_id.as_str())
        .await
        .unwrap();
    expected.push(s.session_id);
    let s = server.session("alice", Delivery::Bearer).await;
    service.revoke_user(&admin, "alice").await.unwrap();
    expected.push(s.session_id);
    for patch in [
        UserPatch {
            roles: Some(vec!["viewer".into()]),
            ..UserPatch::default()
        },
        UserPatch {
            permissions: Some(vec!["reports:write".into()]),
            ..UserPatch::default()
        },
        UserPatch {
            disabled: Some(true),
            ..UserPatch::default()
        },
    ] {
        let s = server.session("alice", Delivery::Bearer).await;
        service.update_user(&admin, "alice", patch).await.unwrap();
        expected.push(s.session_id);
        service
            .update_user(
                &admin,
                "alice",
                UserPatch {
                    disabled: Some(false),
                    ..UserPatch::default()
                },
            )
            .await
            .unwrap();
    }
    // A replayed refresh token (theft detection).
    let s = server.session("alice", Delivery::Bearer).await;
    let refresh = s.refresh.clone().unwrap();
    for _ in 0..2 {
        service
            .refresh(&refresh, ClientInfo::default(), None)
            .await
            .ok();
        server.advance(120); // past the grace window: the second use is a replay
    }
    expected.push(s.session_id);
    // A deleted user.
    let s = server.session("alice", Delivery::Bearer).await;
    service.remove_user(&admin, "alice").await.unwrap();
    expected.push(s.session_id);

    let listed = listed(&server).await;
    let missing: Vec<_> = expected
        .iter()
        .filter(|sid| !listed.contains(sid))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the feed: {missing:?}; listed {listed:?}"
    );
}

/// The configured introspection secret of a test server, and the secret itself.
async fn with_introspection() -> (TestServer, String) {
    let secret = opaque::generate(OpaqueKind::Introspection).unwrap();
    let digest = secret.hash.to_hex();
    let server =
        TestServer::start_with(|config| config.introspection_secret_digests = vec![digest]).await;
    (server, secret.token)
}

async fn introspect(server: &TestServer, secret: Option<&str>, token: &str) -> reqwest::Response {
    let mut request = server
        .client
        .post(server.url("/v1/introspect"))
        .form(&[("token", token)]);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn introspection_answers_configured_services_only() {
    let (server, secret) = with_introspection().await;
    let session = server.session("alice", Delivery::Cookie).await;
    let other = opaque::generate(OpaqueKind::Introspection).unwrap().token;
    let not_a_secret = opaque::generate(OpaqueKind::Session).unwrap().token;
    let digest_itself = TokenHash::of(&secret).to_hex();
    for presented in [
        None,
        Some(other.as_str()),
        Some(&not_a_secret),
        Some(&digest_itself),
    ] {
        let response = introspect(&server, presented, &session.access).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        assert_eq!(
            response.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer"
        );
        assert_eq!(problem_code(response).await, "unauthenticated");
    }
    // No digest configured: nobody.
    let closed = TestServer::start().await;
    let response = introspect(&closed, Some(&secret), "tsr_x").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn introspection_says_whether_a_token_is_valid_now() {
    let (server, secret) = with_introspection().await;
    for delivery in [Delivery::Cookie, Delivery::Bearer] {
        let session = server.session("alice", delivery).await;
        let response = introspect(&server, Some(&secret), &session.access).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["sid"], session.session_id.as_str());
        assert_eq!(body["username"], "alice");
        assert_eq!(body["roles"], json!(["editor"]));
        assert_eq!(
            (&body["iss"], &body["aud"]),
            (&json!("tessera"), &json!("tessera"))
        );
        assert!(body["exp"].as_i64().unwrap() > server.service.now());
        // JSON bodies are accepted too.
        let json_body = server
            .client
            .post(server.url("/v1/introspect"))
            .bearer_auth(&secret)
            .json(&json!({ "token": session.access, "token_type_hint": "access_token" }))
            .send()
            .await
            .unwrap();
        let body: Value = json_body.json().await.unwrap();
        assert_eq!(body["active"], true);
        // Ended: inactive, and nothing else said.
        server
            .send(reqwest::Method::POST, "/v1/logout", &session)
            .await;
        let body: Value = introspect(&server, Some(&secret), &session.access)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body, json!({ "active": false }));
        if let Some(refresh) = &session.refresh {
            let body: Value = introspect(&server, Some(&secret), refresh)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(body, json!({ "active": false }), "a refresh token");
        }
    }
    for junk in ["", "tsr_short", "a.b.c", &"x".repeat(5000)] {
        let response = introspect(&server, Some(&secret), junk).await;
        assert_eq!(response.status(), StatusCode::OK, "{junk:.20}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({ "active": false }));
    }
}

#[tokio::test]
async fn issuer_metadata_names_the_keys_feed_and_introspection() {
    let server =
        TestServer::start_with(|config| config.public_url = Some("https://auth.example".into()))
            .await;
    let response = server
        .client
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=300"
    );
    assert!(response.headers().get("vary").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "issuer": "tessera",
            "jwks_uri": "https://auth.example/.well-known/jwks.json",
            "introspection_endpoint": "https://auth.example/v1/introspect",
            "revocation_feed_endpoint": "https://auth.example/v1/revocations",
            "token_signing_alg_values_supported": ["EdDSA", "ES256"],
        })
    );
    // Without public_url: the request's own origin, and a Vary for shared caches.
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("vary").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jwks_uri"], server.url("/.well-known/jwks.json"));
    // The keys it names are the ones tessera serves.
    let jwks = server
        .client
        .get(body["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), StatusCode::OK);
}

/// The feed is public, so anonymous traffic must not load the store (SPEC §7): requests are
/// answered from the instance's window, which one task keeps current. Cursors ahead of the
/// window make the instance catch up at most ten times a second, however many arrive.
#[tokio::test]
async fn feed_requests_do_not_read_the_store() {
    let (server, store) = TestServer::counting(|_| {}).await;
    let session = server.session("alice", Delivery::Bearer).await;
    server
        .send(reqwest::Method::POST, "/v1/logout", &session)
        .await;
    let head = feed(&server, "").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let reads = || store.layer().of(&["revocations_after"]);
    let started = Instant::now();
    let before = reads();
    for round in 0..300 {
        let query = match round % 3 {
            0 => String::new(),
            1 => "?after=0".to_owned(),
            _ => format!("?after={head}"),
        };
        feed(&server, &query).await;
    }
    feed(&server, &format!("?after={head}&wait=1")).await;
    // The task that follows the log reads it once a second on its own.
    let allowed = started.elapsed().as_secs() as usize + 2;
    assert!(reads() - before <= allowed, "{} reads", reads() - before);

    // Cursors from nowhere: answered with the whole window, at a bounded cost.
    let started = Instant::now();
    let before = reads();
    for _ in 0..300 {
        let reset = feed(&server, "?after=987654321").await;
        assert_eq!(reset["reset"], true);
        assert_eq!(reset["revoked"][0]["sid"], session.session_id.as_str());
    }
    let allowed =
        (started.elapsed().as_millis() / 100) as usize + 2 + started.elapsed().as_secs() as usize;
    assert!(
        reads() - before <= allowed,
        "{} reads for 300 requests",
        reads() - before
    );

    // A revocation still reaches a held request at once.
    let other = server.session("alice", Delivery::Bearer).await;
    let held = {
        let client = server.client.clone();
        let url = server.url(&format!("/v1/revocations?after={head}&wait=10"));
        tokio::spawn(async move { client.get(url).send().await.unwrap().json::<Value>().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    server
        .send(reqwest::Method::POST, "/v1/logout", &other)
        .await;
    let news = held.await.unwrap().unwrap();
    assert_eq!(news["revoked"][0]["sid"], other.session_id.as_str());
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
}
