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
        kind: Some(kind.parse().unwrap()),
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
    let revoked = server
        .send(
            Method::DELETE,
            &format!("/v1/sessions/{}", phone.session_id),
            &laptop,
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
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

    // The receiver's check (RustCrypto's HMAC, not the server's aws-lc) accepts it...
    assert!(signature_valid(SECRET, &signature, &body), "{signature}");
    // ...and refuses a signature made with another secret, or over another body or timestamp.
    let (t, _) = signature.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let forged =
        tessera_server::service::webhook_signature(b"another secret!!", t, body.as_bytes());
    assert!(!signature_valid(SECRET, &forged, &body), "another secret");
    let tampered = body.replace("alice", "alicf");
    assert!(
        !signature_valid(SECRET, &signature, &tampered),
        "another body"
    );
    let shifted = signature.replacen(&format!("t={t}"), &format!("t={}", t + 1), 1);
    assert!(
        !signature_valid(SECRET, &shifted, &body),
        "another timestamp"
    );
    assert!(!signature_valid(SECRET, "t=1", &body), "no v1");
}

/// What a receiver does with `Tessera-Signature`: recompute the HMAC over `"<t>.<body>"` and
/// compare in constant time (RustCrypto's `verify_slice`).
fn signature_valid(secret: &str, header: &str, body: &str) -> bool {
    let Some((t, v1)) = header.split_once(',') else {
        return false;
    };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let Ok(tag) = (0..v1.len())
        .step_by(2)
        .map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())
        })
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&tag).is_ok()
}

/// A receiver that answers every POST with a 307 to `to`, counting the POSTs it got.
async fn redirector(to: &str) -> (String, Arc<Mutex<u32>>) {
    let hits: Arc<Mutex<u32>> = Arc::default();
    let count = hits.clone();
    let to = to.to_owned();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            let to = to.clone();
            async move {
                *count.lock().unwrap() += 1;
                (StatusCode::TEMPORARY_REDIRECT, [("location", to)])
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

/// Issue 11 #8: a webhook receiver that answers 307 must not get the signed events sent where
/// it points (an internal address, in the attack). Both listeners are on loopback: the second
/// receives nothing, and the delivery is given up at once (one attempt, no retries), so the
/// queue drains.
#[tokio::test]
async fn webhook_redirects_are_not_followed_and_fail_the_delivery() {
    let (target, seen) = receiver().await;
    let (url, redirected) = redirector(&target).await;
    let server = TestServer::start_with(|c| {
        c.webhook_url = Some(url);
        c.webhook_secret = Some(
            toml::Value::String("a webhook secret of some length".into())
                .try_into()
                .unwrap(),
        );
    })
    .await;
    let victim = server.session("alice", Delivery::Bearer).await;
    server
        .service
        .revoke_session(&Actor::cli(), &victim.session_id)
        .await
        .unwrap();
    // Every event so far (the login's and the revocation's) is delivered or given up on.
    let started = std::time::Instant::now();
    assert!(
        server
            .service
            .flush_hooks()
            .flush(std::time::Duration::from_secs(5))
            .await,
        "the deliveries were given up without retries"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let attempts = *redirected.lock().unwrap();
    assert!(
        attempts >= 1,
        "the first receiver got the events: {attempts}"
    );
    let followed = seen.lock().unwrap().len();
    assert_eq!(followed, 0, "the redirect target received {followed} POSTs");
}
