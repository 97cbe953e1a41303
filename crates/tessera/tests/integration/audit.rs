//! Audit events (issue 7): one test per kind, and signed webhooks.

use std::sync::{Arc, Mutex};

use hmac::{KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera_server::service::Actor;
use tessera_store::{AuditEvent, AuditQuery};

use crate::support::*;

const AGENT: &str = "audit-test/1.0";

/// The newest event of `kind`.
async fn latest(server: &TestServer, kind: &str) -> AuditEvent {
    let query = AuditQuery {
        kind: Some(kind.to_owned()),
        limit: 1,
        ..AuditQuery::default()
    };
    let mut events = server.service.audit_events(query).await.unwrap();
    assert_eq!(events.len(), 1, "an event of kind {kind}");
    events.remove(0)
}

async fn login_as(server: &TestServer, username: &str, password: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v1/login"))
        .header("user-agent", AGENT)
        .json(&json!({ "username": username, "password": password, "delivery": "bearer" }))
        .send()
        .await
        .unwrap()
}

fn assert_from_client(event: &AuditEvent) {
    assert_eq!(event.ip.as_deref(), Some("127.0.0.1"), "{event:?}");
}

#[tokio::test]
async fn login_succeeded_is_recorded_with_session_address_and_agent() {
    let server = TestServer::start().await;
    let session =
        ClientSession::from_login(Delivery::Bearer, login_as(&server, "alice", PASSWORD).await)
            .await;
    let event = latest(&server, "login.succeeded").await;
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert_eq!(
        event.session_id.as_deref(),
        Some(session.session_id.as_str())
    );
    assert_eq!(event.user_agent.as_deref(), Some(AGENT));
    assert_from_client(&event);
    assert!(event.at > 0);
}

#[tokio::test]
async fn login_failed_is_recorded_without_the_password() {
    let server = TestServer::start().await;
    login_as(&server, "alice", "my secret guess").await;
    let event = latest(&server, "login.failed").await;
    assert_eq!(event.actor, None);
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert_eq!(event.session_id, None);
    assert!(!format!("{event:?}").contains("my secret guess"));
    assert_from_client(&event);
}

#[tokio::test]
async fn login_throttled_is_recorded() {
    let server = TestServer::start().await;
    for _ in 0..11 {
        login_as(&server, "alice", "wrong password").await;
    }
    let event = latest(&server, "login.throttled").await;
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert_from_client(&event);
}

#[tokio::test]
async fn logout_is_recorded() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Cookie).await;
    server.send(Method::POST, "/v1/logout", &session).await;
    let event = latest(&server, "logout").await;
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(
        event.session_id.as_deref(),
        Some(session.session_id.as_str())
    );
    assert_from_client(&event);
}

async fn refresh(server: &TestServer, token: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/v1/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn refresh_is_recorded() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    assert_eq!(
        refresh(&server, session.refresh.as_deref().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    let event = latest(&server, "refresh").await;
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(
        event.session_id.as_deref(),
        Some(session.session_id.as_str())
    );
}

#[tokio::test]
async fn refresh_replay_is_recorded() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    let token = session.refresh.clone().unwrap();
    refresh(&server, &token).await;
    server.advance(60);
    assert_eq!(
        refresh(&server, &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let event = latest(&server, "refresh.replayed").await;
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert_eq!(
        event.session_id.as_deref(),
        Some(session.session_id.as_str())
    );
}

#[tokio::test]
async fn session_revocation_is_recorded_with_who_revoked_it() {
    let server = TestServer::start().await;
    let phone = server.session("alice", Delivery::Bearer).await;
    let laptop = server.session("alice", Delivery::Bearer).await;
    server
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", phone.session_id),
            &laptop,
        )
        .await;
    let event = latest(&server, "session.revoked").await;
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(event.session_id.as_deref(), Some(phone.session_id.as_str()));

    server
        .service
        .revoke_session(&Actor::cli(), &laptop.session_id)
        .await
        .unwrap();
    let event = latest(&server, "session.revoked").await;
    assert_eq!(event.actor.as_deref(), Some("cli"));
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert_eq!(
        event.session_id.as_deref(),
        Some(laptop.session_id.as_str())
    );
}

#[tokio::test]
async fn password_change_is_recorded() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    let response = session
        .authorize(server.client.post(server.url("/v1/password")))
        .json(&json!({ "current_password": PASSWORD, "new_password": "an even better secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let event = latest(&server, "password.changed").await;
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(event.subject.as_deref(), Some("alice"));
    assert!(!format!("{event:?}").contains("an even better secret"));
}

async fn as_admin(
    server: &TestServer,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> StatusCode {
    let admin = server.session("admin", Delivery::Bearer).await;
    admin
        .authorize(server.client.request(method, server.url(path)))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn user_creation_is_recorded() {
    let server = TestServer::start().await;
    let body = json!({ "username": "newbie", "password": "a long password", "roles": ["viewer"] });
    assert_eq!(
        as_admin(&server, Method::POST, "/v1/admin/users", body).await,
        StatusCode::CREATED
    );
    let event = latest(&server, "user.created").await;
    assert_eq!(
        (event.actor.as_deref(), event.subject.as_deref()),
        (Some("admin"), Some("newbie"))
    );
}

#[tokio::test]
async fn user_update_is_recorded() {
    let server = TestServer::start().await;
    let status = as_admin(
        &server,
        Method::PATCH,
        "/v1/admin/users/alice",
        json!({ "roles": ["auditor"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let event = latest(&server, "user.updated").await;
    assert_eq!(
        (event.actor.as_deref(), event.subject.as_deref()),
        (Some("admin"), Some("alice"))
    );
    assert!(event.detail.unwrap().contains("roles=auditor"));
}

#[tokio::test]
async fn user_disable_is_recorded() {
    let server = TestServer::start().await;
    let status = as_admin(
        &server,
        Method::PATCH,
        "/v1/admin/users/alice",
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let event = latest(&server, "user.disabled").await;
    assert_eq!(
        (event.actor.as_deref(), event.subject.as_deref()),
        (Some("admin"), Some("alice"))
    );
    assert_eq!(event.detail.as_deref(), Some("disabled"));
}

#[tokio::test]
async fn user_deletion_is_recorded() {
    let server = TestServer::start().await;
    assert_eq!(
        as_admin(&server, Method::DELETE, "/v1/admin/users/alice", json!({})).await,
        StatusCode::NO_CONTENT
    );
    let event = latest(&server, "user.deleted").await;
    assert_eq!(
        (event.actor.as_deref(), event.subject.as_deref()),
        (Some("admin"), Some("alice"))
    );
}

#[tokio::test]
async fn key_rotation_is_recorded() {
    let server = TestServer::start().await;
    assert_eq!(
        as_admin(&server, Method::POST, "/v1/admin/keys/rotate", json!({})).await,
        StatusCode::OK
    );
    let event = latest(&server, "key.rotated").await;
    assert_eq!(event.actor.as_deref(), Some("admin"));
    assert!(event.detail.unwrap().starts_with("new key "));
}

/// A webhook receiver on a loopback port that records what it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let signature = headers
                    .get("tessera-signature")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                store.lock().unwrap().push((signature, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn webhook_receives_a_correctly_signed_revocation_event() {
    const SECRET: &str = "a webhook secret of some length";
    let (url, seen) = receiver().await;
    let server = TestServer::start_with(|c| {
        c.webhook_url = Some(url);
        c.webhook_secret = Some(toml::Value::String(SECRET.into()).try_into().unwrap());
    })
    .await;
    let victim = server.session("alice", Delivery::Bearer).await;
    server
        .service
        .revoke_session(&Actor::cli(), &victim.session_id)
        .await
        .unwrap();

    let mut delivery = None;
    for _ in 0..100 {
        delivery = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, body)| body.contains("session.revoked"))
            .cloned();
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (signature, body) = delivery.expect("the receiver got the revocation");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["kind"], "session.revoked");
    assert_eq!(event["session_id"], victim.session_id.as_str());
    assert_eq!(event["subject"], "alice");

    // Verify the signature independently (RustCrypto's HMAC, not the server's aws-lc).
    let (t, v1) = signature.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected);
    let mut wrong = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"another secret").unwrap();
    wrong.update(format!("{t}.{body}").as_bytes());
    let wrong: String = wrong
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(v1, wrong);
}
